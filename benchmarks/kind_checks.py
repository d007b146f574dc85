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

``executors``: seconds per RL step on the 28x28 W4A8 CNN (fake impl,
batch 256) through :class:`~oeu_jax.engine.executors.StepExecutor` (one
top-level program a step) and through a
:class:`~oeu_jax.engine.executors.ScanExecutor` of one step a dispatch (a
loop body of trip count 1): whether the two executors could be one::

    taskset -c 0 python benchmarks/kind_checks.py executors

Not part of the test suite (no timing assertions there).
"""

import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from oeu_jax import data
from oeu_jax.algorithm import methods
from oeu_jax.engine import executors as executors_lib
from oeu_jax.engine import train
from oeu_jax.engine import unlearn
from oeu_jax.nn import models
from oeu_jax.nn import quantization

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


def executors() -> None:
  bits = dataclasses.replace(quantization.preset("w4a8"), backend="fake")
  model = models.build_model("cnn", num_classes=10, bits=bits)
  params, stats = models.init_model(model, jax.random.PRNGKey(0),
                                    (28, 28, 1))
  x = np.random.default_rng(0).random((512, 28, 28, 1), np.float32)
  y = (np.arange(512) % 10).astype(np.int32)
  d = unlearn.make_data(x, y, np.arange(256), np.arange(256, 512))
  rl = methods.build_method("rl", model)
  cfg = unlearn.resolve(unlearn.UnlearnConfig(batch_size=256, epochs=3), rl)

  def per_step(kind: str) -> float:
    st, tx = unlearn.init_state(rl, model, params, stats, d, config=cfg,
                                num_classes=10, seed=0)
    args = (unlearn.make_steps(rl, tx), d,
            lambda g: unlearn.step_indices(256, 256, cfg, 0, g))
    kw = dict(kind_of=lambda g: unlearn.step_kind(256, 256, cfg, g))
    ex = (executors_lib.StepExecutor(*args, **kw) if kind == "step" else
          executors_lib.ScanExecutor(*args, size=1, **kw))
    one = np.ones((1, 1), bool)
    for g in range(2):  # Compiles both kinds.
      st, _ = ex(st, g, g + 1, one)
    jax.block_until_ready(st)
    t0 = time.perf_counter()
    for g in range(2, 6):
      st, _ = ex(st, g, g + 1, one)
    jax.block_until_ready(st)
    return (time.perf_counter() - t0) / 4

  for kind in ("step", "scan1", "step", "scan1"):
    print(f"{kind}: {per_step(kind):.3f} s per RL step", flush=True)


if __name__ == "__main__":
  commands = {"rte": (rte, 2), "params": (params, 2), "compare": (compare, 3),
              "executors": (executors, 0)}
  if len(sys.argv) < 2 or sys.argv[1] not in commands or (
      len(sys.argv) - 2 != commands[sys.argv[1]][1]):
    sys.exit(__doc__)
  commands[sys.argv[1]][0](*sys.argv[2:])
