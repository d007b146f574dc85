"""Checks of the step-kind dispatch, run from two checkouts to compare them
(whichever oeu_jax is first on ``sys.path``; one pinned core each).

``rte OUT.json METHODS``: seconds per unlearning step of the given methods
on MNIST-4000 (the t10k files, W4A8 CNN through AQT: the protocol tables'
path), forgetting class 3, 1 epoch::

    PYTHONPATH=/path/to/old taskset -c 1 python benchmarks/kind_checks.py \
        rte old.json rl,salun,qmul,scrub
    taskset -c 0 python benchmarks/kind_checks.py rte new.json
    rl,salun,qmul,scrub

``params PREFIX BITS``: final parameters and metric means of RL, SCRUB
(sequential and paired), Q-MUL and SalUn on digits, forgetting class 3
(``PREFIX-BITS-METHOD.npy``, ``PREFIX-BITS.json``); ``compare A B BITS``
prints their differences::

    PYTHONPATH=/path/to/old python benchmarks/kind_checks.py params old float
    python benchmarks/kind_checks.py params new float
    python benchmarks/kind_checks.py compare old new float

Not part of the test suite (no timing assertions there).
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

from oeu_jax import data
from oeu_jax.algorithm import methods
from oeu_jax.engine import train
from oeu_jax.engine import unlearn
from oeu_jax.nn import models

MNIST_T10K = Path(__file__).resolve().parents[2] / "shared/data/mnist-t10k"
RUNS = (("rl", {}), ("scrub", {}), ("scrub_paired", {"schedule": "paired"}),
        ("qmul", {}), ("salun", {}))


def _setup(ds, bits: str, train_cfg):
  """An Original trained on ``ds`` and D_f = class 3 of its training set."""
  model = models.build_model("cnn", num_classes=10, bits=bits)
  res = train.fit(model, ds.train_x, ds.train_y, config=train_cfg, seed=0)
  fi = np.where(ds.train_y == 3)[0]
  ri = np.where(ds.train_y != 3)[0]
  return model, res.state, unlearn.make_data(ds.train_x, ds.train_y, fi, ri)


def _unlearn(name, model, state, d, cfg):
  return unlearn.unlearn(methods.build_method(name, model), model,
                         state.params, state.batch_stats, d, config=cfg,
                         num_classes=10, seed=0)


def rte(out: str, names: str) -> None:
  ds = data.load_dataset("mnist_idx", data_dir=str(MNIST_T10K),
                         max_examples=4000)
  model, state, d = _setup(ds, "w4a8",
                           train.TrainConfig(epochs=1, batch_size=128))
  got = {}
  for name in names.split(","):
    r = _unlearn(name, model, state, d,
                 unlearn.UnlearnConfig(epochs=1, batch_size=256))
    steps = int(r.state.step)
    got[name] = {"seconds": r.seconds, "steps": steps,
                 "per_step": r.seconds / steps}
    print(name, got[name], flush=True)
  Path(out).write_text(json.dumps(got, indent=1))


def params(prefix: str, bits: str) -> None:
  model, state, d = _setup(data.load_dataset("digits"), bits,
                           train.TrainConfig(epochs=3, batch_size=64))
  out = {}
  for name, kw in RUNS:
    r = _unlearn(name.split("_")[0], model, state, d,
                 unlearn.UnlearnConfig(epochs=2, batch_size=64, **kw))
    np.save(f"{prefix}-{bits}-{name}.npy", np.concatenate(
        [np.ravel(a) for a in jax.tree.leaves(r.state.params)]))
    out[name] = {k: float(v) for k, v in r.metrics.items()} | {
        "seconds": r.seconds, "steps": int(r.state.step)}
  Path(f"{prefix}-{bits}.json").write_text(json.dumps(out, indent=1))


def compare(a: str, b: str, bits: str) -> None:
  with open(f"{a}-{bits}.json") as f:
    ma = json.load(f)
  with open(f"{b}-{bits}.json") as f:
    mb = json.load(f)
  for name in ma:
    pa = np.load(f"{a}-{bits}-{name}.npy")
    pb = np.load(f"{b}-{bits}-{name}.npy")
    d = np.abs(pa - pb)
    print(f"{bits} {name}: steps {ma[name]['steps']}/{mb[name]['steps']}, "
          f"max |dparam| {d.max():.2e} (rel {d.max() / np.abs(pa).max():.2e})"
          f", seconds {ma[name]['seconds']:.2f} -> {mb[name]['seconds']:.2f}")


if __name__ == "__main__":
  commands = {"rte": (rte, 2), "params": (params, 2), "compare": (compare, 3)}
  if len(sys.argv) < 2 or sys.argv[1] not in commands or (
      len(sys.argv) - 2 != commands[sys.argv[1]][1]):
    sys.exit(__doc__)
  commands[sys.argv[1]][0](*sys.argv[2:])
