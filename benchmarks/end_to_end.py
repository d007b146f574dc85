"""Whole runs: vmapped seeds against sequential ones, unlearning against
Retrain. Sections ``vmap_e2e`` and ``mnist_rte`` of ``benchmarks/bench.py``.

* ``vmap_e2e``: ``python -m oeu_jax run`` on digits (W4A8 CNN, random 10%,
  OEU, 8 seeds) once with ``--vmap-seeds`` (every stage one vmapped program,
  :func:`oeu_jax.runner.pipeline.stage_runner`) and once without, each in a
  fresh process and work directory, in turns, ``max(1, repeats // 2)`` times
  each; the figure is the ratio of the median wall times of the whole
  command (import, data, compilation, Original, Retrain, OEU, evaluation):
  ``vmap8_over_seq_end_to_end`` = sequential wall / vmapped wall, the
  throughput of 8 vmapped seeds over 8 sequential runs. Budget: the first
  600 digits (quick: 300), 3 training and 3 unlearning epochs (quick: 1, 1).
* ``mnist_rte``: one :func:`oeu_jax.runner.pipeline.run` on MNIST t10k,
  class 3 forgotten, seed 0, W4A8 CNN, methods ``oeu`` (Original and
  Retrain are part of every run) at the CPU budget of the MNIST tables
  (``oeu_jax.runner.config.cpu_budget("mnist_idx")``: the first 4,000
  images, Retrain 8 epochs at batch 128, OEU 3 epochs at batch 256; quick:
  1,000 images, 1 + 1 epochs). ``unlearn_over_retrain_mnist_class`` =
  ``rte_s`` of the ``oeu`` record / ``rte_s`` of the ``retrain`` record
  (step time without compilation, as RESULTS.md reports it); with
  ``--mnist-stop-when RULE`` the same run again with OEU stopped by
  ``RULE``, checked every ``--mnist-stop-every`` steps (default 10;
  Original and Retrain reused from the work directory) gives
  ``unlearn_over_retrain_mnist_class_stop``. ``--mnist-results FILE``
  reads the two records from a ``results.json`` instead of running.
"""

import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child_env() -> dict:
  """os.environ for a child that imports this checkout's oeu_jax."""
  return dict(os.environ,
              JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
              PYTHONPATH=os.pathsep.join(
                  [str(REPO)] + [p for p in os.environ.get(
                      "PYTHONPATH", "").split(os.pathsep) if p]))


def bench_vmap_e2e(args, rows, notes, figures) -> None:
  """8 vmapped seeds / 8 sequential runs, whole ``run`` commands."""
  n, examples, epochs = (8, 300, 1) if args.quick else (8, 600, 3)
  base = [sys.executable, "-m", "oeu_jax", "run", "--dataset", "digits",
          "--scenario", "random", "--methods", "oeu", "--seeds",
          ",".join(map(str, range(n))), "--max-examples", str(examples),
          "--epochs", str(epochs), "--unlearn-epochs", str(epochs),
          "--no-progress"]
  walls = {"seq": [], "vmap": []}
  with tempfile.TemporaryDirectory(prefix="bench_vmap_") as tmp:
    for rep in range(max(1, args.repeats // 2)):
      for side in ("seq", "vmap"):
        cmd = base + ["--workdir", os.path.join(tmp, f"{side}{rep}")]
        cmd += ["--vmap-seeds"] if side == "vmap" else []
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=child_env(),
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        walls[side].append(time.perf_counter() - t0)
        if proc.returncode:
          raise RuntimeError(f"{' '.join(cmd[2:])} failed: "
                             f"{proc.stderr.strip()[-1000:]}")
  seq, vm = (statistics.median(walls[k]) for k in ("seq", "vmap"))
  figures[f"vmap{n}_over_seq_end_to_end"] = seq / vm
  rows.append((f"{n} vmapped seeds / {n} sequential runs, throughput end to "
               f"end (`run`, digits w4a8 OEU, {examples} examples, "
               f"{epochs} + {epochs} epochs)",
               f"{seq / vm:.2f}x (sequential {seq:.1f} s, vmapped "
               f"{vm:.1f} s; each {', '.join(f'{w:.0f}' for w in walls['seq'])}"
               f" / {', '.join(f'{w:.0f}' for w in walls['vmap'])} s)",
               ">= 1.5x", seq / vm >= 1.5))


def _rte_ratio(records, label, rows, figures, key) -> None:
  by = {r["method"]: r for r in records if r.get("seed", 0) == records[0].get(
      "seed", 0)}
  for m in ("oeu", "retrain"):
    if m not in by:
      raise ValueError(f"{label}: no {m!r} record")
  oeu, retrain = by["oeu"], by["retrain"]
  ratio = oeu["rte_s"] / retrain["rte_s"]
  figures[key] = ratio
  gap = oeu.get("avg_gap")
  figures[f"avg_gap_{key[len('unlearn_over_retrain_'):]}"] = gap
  stop = oeu.get("stop_step")
  rows.append((f"unlearning / Retrain wall, `rte_s` ({label})",
               f"{ratio:.3f} (OEU {oeu['rte_s']:.1f} s / Retrain "
               f"{retrain['rte_s']:.1f} s); OEU Avg. gap {gap:.2f}, UA "
               f"{oeu['ua']:.1f}, RA {oeu['ra']:.1f}"
               + (f", stopped at step {stop}" if stop is not None else ""),
               "<= 0.1 at Avg. gap <= 2", ratio <= 0.1 and gap <= 2))


def bench_mnist_rte(args, rows, notes, figures) -> None:
  """OEU's unlearning time / Retrain's on MNIST class-wise, one run."""
  from experiments import common
  from oeu_jax.runner import config as config_lib
  from oeu_jax.runner import pipeline
  from oeu_jax.runner import workdir as workdir_lib

  if args.mnist_results:
    records = [r for r in workdir_lib.read_results(args.mnist_results)
               if r.get("scenario") == "class"]
    _rte_ratio(records, f"records of {args.mnist_results}", rows, figures,
               "unlearn_over_retrain_mnist_class")
    return
  budget = config_lib.cpu_budget("mnist_idx")
  train, unlearn, examples = budget.train, budget.unlearn, budget.max_examples
  if args.quick:
    train, examples = dataclasses.replace(train, epochs=1), 1000
    unlearn = dataclasses.replace(unlearn, epochs=1)
  data_dir = args.mnist_dir or str(common.MNIST_T10K)
  cfg = common.make(dataset="mnist_idx", data_dir=data_dir, model="cnn",
                    methods=("oeu",), scenario="class", forget_class=3,
                    seeds=(0,), train=train, unlearn=unlearn,
                    max_examples=examples)
  label = (f"MNIST class 3, {examples} images, Retrain {train.epochs} ep, "
           f"OEU {unlearn.epochs} ep")
  with tempfile.TemporaryDirectory(prefix="bench_mnist_") as tmp:
    records = pipeline.run(cfg, tmp, log=lambda *_: None)
    _rte_ratio(records, label, rows, figures,
               "unlearn_over_retrain_mnist_class")
    if args.mnist_stop_when:
      stopped = dataclasses.replace(unlearn,
                                    stop_when=args.mnist_stop_when,
                                    stop_every=args.mnist_stop_every)
      cfg = common.make(dataset="mnist_idx", data_dir=data_dir, model="cnn",
                        methods=("oeu",), scenario="class", forget_class=3,
                        seeds=(0,), train=train, unlearn=stopped,
                        max_examples=examples)
      records = pipeline.run(cfg, tmp, log=lambda *_: None)
      _rte_ratio(records, f"{label}, OEU --stop-when "
                 f"{args.mnist_stop_when} every {args.mnist_stop_every} "
                 "steps", rows, figures,
                 "unlearn_over_retrain_mnist_class_stop")
