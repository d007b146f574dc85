"""Speed and memory of oeu_jax, printed as a Markdown table of ratios.

Every ratio is measured within one run, its two sides interleaved
(A, B, A, B, ...), as the median of ``--repeats`` repeats after
compilation; compile times are reported separately. Not part of the test
suite (no timing assertions there).

Usage::

    python benchmarks/bench.py --json f.json  # the issue's keys (see below)
    python benchmarks/bench.py --quick --json f.json  # tiny shapes
    python benchmarks/bench.py --only torch --threads 1 --torch-cases \
        cnn28_w4a8_oeu --quick --json f.json
    python benchmarks/bench.py --only step_ratio,steps,rte,seeds,memory

Sections (``--only``; default ``step_ratio,quant_backend,torch,vmap_e2e,
mnist_rte,sequential``): ``step_ratio`` (OEU / FT step time, projection
share), ``rte`` (unlearning / Retrain wall time on digits), ``seeds`` (N vmapped
seeds vs N sequential, library calls), ``steps`` (steps per second, float
vs W4A8), ``memory`` (peak RSS, :mod:`memory`), ``quant_backend`` (W4A8 FT
step through each backend of ``QuantSpec.backend``: fake quantization with
native convolutions, AQT's integer dot, Qwix's quantized training, against
float), ``torch`` (PyTorch eager
against oeu_jax and both against the floor, :mod:`torch_side`), ``floor``
(the JAX side of ``torch`` alone, ResNet-18 float FT; skipped when
``torch`` runs), ``vmap_e2e`` and ``mnist_rte`` (whole runs,
:mod:`end_to_end`), ``sequential`` (an RL step, forget and retain kinds,
against an OEU step: ``sequential_over_paired_step_cnn28``).

Threads and pinning: ``torch`` and ``floor`` start one process per
``--threads`` setting (XLA fixes its thread pool at start-up). At 1 thread
the child pins itself to CPU 0 (as ``taskset -c 0``) and sets
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``, ``OMP_NUM_THREADS=1`` and
``torch.set_num_threads(1)`` before importing JAX and torch; at 2 threads
XLA keeps its default pool and torch uses 2. The other sections run in this
process with its own setting: for a 1-core figure run the whole command
under ``taskset -c 0``. W4A8 in ``step_ratio`` and ``sequential`` is
``--quant-backend`` (default ``fake``, the library default).

``--json FILE`` writes the named figures as a flat ``{name: number}``
object: ``oeu_over_ft_{cnn,resnet18}_w4a8``, ``w4a8_over_float_{cnn28,
resnet18}`` (fake backend; ``w4a8_aqt_over_float_*``, ``aqt_over_fake_*``,
``qwix_over_float_*``),
``torch_over_jax_{case}_{1core,2threads}``, ``{jax,torch}_over_floor_{case}
_{1core,2threads}``, ``jax_over_floor_resnet18_float_ft`` (1 core),
``vmap8_over_seq_end_to_end``, ``sequential_over_paired_step_cnn28``,
``unlearn_over_retrain_mnist_class`` and
``avg_gap_mnist_class`` (and ``..._stop`` with ``--mnist-stop-when``).
``--quick`` shrinks shapes (ResNet-18 at width 0.125-0.25, batches <= 64)
and budgets: its figures only check that everything runs. Duration: the
default sections took about an hour in all at ``--repeats 3`` on a 2-core
machine at load 7-10 (BENCHMARKS.md, 2026-12-06); a quick section 1.5-4
minutes there.
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

# This checkout's oeu_jax and experiments, whatever is installed.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import end_to_end  # noqa: E402
import jax  # noqa: E402
import memory  # noqa: E402
import torch_side  # noqa: E402
from timing import StepTimer  # noqa: E402
from timing import fmt_s  # noqa: E402
from timing import machine  # noqa: E402
from timing import median_interleaved  # noqa: E402
from timing import model_setup  # noqa: E402

from oeu_jax import data  # noqa: E402
from oeu_jax.algorithm import methods  # noqa: E402
from oeu_jax.algorithm import transforms  # noqa: E402
from oeu_jax.engine import seeds as seeds_lib  # noqa: E402
from oeu_jax.engine import train  # noqa: E402
from oeu_jax.engine import unlearn  # noqa: E402
from oeu_jax.nn import models  # noqa: E402
from oeu_jax.nn import quantization  # noqa: E402
from oeu_jax.runner import config as config_lib  # noqa: E402

SECTIONS = ("step_ratio", "rte", "seeds", "steps", "memory", "quant_backend",
            "torch", "floor", "vmap_e2e", "mnist_rte", "sequential")
# What a plain ``bench.py`` runs: every key of the issue, no duplicates.
DEFAULT = ("step_ratio", "quant_backend", "torch", "vmap_e2e", "mnist_rte",
           "sequential")


# --------------------------------------------------------------------------
# Sections


def bench_step_ratio(args, rows, notes, figures):
  """OEU step vs FT step at the same batch; the projection's share."""
  cases = [("cnn", (8, 8, 1), 256, 5, {}), ("resnet18", (32, 32, 3), 32, 1, {})]
  if args.quick:
    cases = [("cnn", (8, 8, 1), 32, 1, {}),
             ("resnet18", (32, 32, 3), 8, 1, {"width": 0.125})]
  w4a8 = dataclasses.replace(quantization.preset("w4a8"),
                             backend=args.quant_backend)
  for name, shape, batch, k, kw in cases:
    if name not in args.step_models:
      continue
    model, params, stats, udata = model_setup(
        name, w4a8, shape, n=4 * batch, forget=batch, **kw)
    cfg = unlearn.UnlearnConfig(batch_size=batch)
    timers = {m: StepTimer(methods.build_method(m, model), model, params,
                           stats, udata, cfg, 10, k)
              for m in ("oeu", "ft", "oeu_no_proj")}
    # The projection alone, on gradient-shaped pytrees.
    g = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(1),
                                                 p.shape, p.dtype), params)
    r = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(2),
                                                 p.shape, p.dtype), params)
    proj = jax.jit(transforms.project_pytree)
    jax.block_until_ready(proj(g, r))

    def proj_k():
      for _ in range(k):
        out = proj(g, r)
      jax.block_until_ready(out)

    t = median_interleaved({**timers, "proj": proj_k}, args.repeats)
    per = {m: v / k for m, v in t.items()}
    width = f" width {kw['width']}" if kw else ""
    tag = f"{name}{width} w4a8 {args.quant_backend}, batch {batch}"
    figures[f"oeu_over_ft_{name}_w4a8"] = per["oeu"] / per["ft"]
    figures[f"proj_share_{name}_w4a8"] = per["proj"] / per["oeu"]
    rows.append((f"OEU step / FT step ({tag})",
                 f"{per['oeu'] / per['ft']:.2f} "
                 f"({fmt_s(per['oeu'])} / {fmt_s(per['ft'])})",
                 "<= 2.1", per["oeu"] / per["ft"] <= 2.1))
    share_alone = per["proj"] / per["oeu"]
    share_diff = (per["oeu"] - per["oeu_no_proj"]) / per["oeu"]
    rows.append((f"projection share of the OEU step ({tag})",
                 f"{100 * share_alone:.2f}% alone; "
                 f"{100 * share_diff:+.1f}% (OEU - no-proj)",
                 "<= 5%", share_alone <= 0.05))
    notes.append(f"compile ({tag}): OEU {timers['oeu'].compile_s:.1f} s, "
                 f"FT {timers['ft'].compile_s:.1f} s")


def bench_rte(args, rows, notes):
  """Unlearning wall time / Retrain wall time at the default budgets."""
  ds = data.load_dataset("digits")
  model = models.build_model("cnn", num_classes=10, bits="w4a8")
  tcfg = config_lib.default_train("digits")
  if args.quick:
    tcfg = dataclasses.replace(tcfg, epochs=3)
  original = train.fit(model, ds.train_x, ds.train_y, config=tcfg,
                       seed=0).state
  oeu = methods.build_method("oeu", model)
  for scenario in ("random", "class"):
    split = data.make_split(
        ds, scenario, forget_ratio=0.1 if scenario == "random" else None,
        forget_class=3 if scenario == "class" else None, seed=0)
    udata = unlearn.make_data(ds.train_x, ds.train_y, split.forget_idx,
                              split.retain_idx)
    ucfg = config_lib.default_unlearn("digits", scenario)
    variants = {"default": ucfg}
    if scenario == "random":
      variants["pairing=forget"] = dataclasses.replace(ucfg,
                                                       pairing="forget")
    if args.quick:
      variants = {k: dataclasses.replace(v, epochs=1)
                  for k, v in variants.items()}
    times = {k: [] for k in ["retrain", *variants]}
    for _ in range(max(1, args.repeats // 2)):
      r = train.fit(model, ds.train_x[split.retain_idx],
                    ds.train_y[split.retain_idx], config=tcfg, seed=0)
      times["retrain"].append((r.seconds, r.compile_seconds))
      for k, cfg in variants.items():
        u = unlearn.unlearn(oeu, model, original.params,
                            original.batch_stats, udata, config=cfg,
                            num_classes=10, seed=0)
        times[k].append((u.seconds, u.compile_seconds))
    rs = statistics.median(t for t, _ in times["retrain"])
    rc = statistics.median(c for _, c in times["retrain"])
    for k, cfg in variants.items():
      us = statistics.median(t for t, _ in times[k])
      uc = statistics.median(c for _, c in times[k])
      rows.append((f"unlearning / Retrain wall (digits {scenario}, OEU {k}: "
                   f"{cfg.epochs} ep, batch {cfg.batch_size}; Retrain "
                   f"{tcfg.epochs} ep, batch {tcfg.batch_size})",
                   f"{us / rs:.3f} ({us:.2f} s / {rs:.2f} s); with compile "
                   f"{(us + uc) / (rs + rc):.3f}", "<= 0.05",
                   us / rs <= 0.05))


def bench_seeds(args, rows, notes):
  """N vmapped seeds vs N sequential runs (unlearning and training)."""
  n = 4 if args.quick else 8
  ds = data.load_dataset("digits")
  model = models.build_model("cnn", num_classes=10, bits="w4a8")
  tcfg = config_lib.default_train("digits")
  tcfg = dataclasses.replace(tcfg, epochs=2 if args.quick else 5)
  ucfg = config_lib.default_unlearn("digits", "random")
  if args.quick:
    ucfg = dataclasses.replace(ucfg, epochs=2)
  seeds = list(range(n))
  originals = seeds_lib.fit_seeds(model, ds.train_x, ds.train_y, config=tcfg,
                                 seeds=seeds)
  datas = []
  for s in seeds:
    split = data.make_split(ds, "random", forget_ratio=0.1, seed=s)
    datas.append(unlearn.make_data(ds.train_x, ds.train_y, split.forget_idx,
                                   split.retain_idx))
  oeu = methods.build_method("oeu", model)

  def seq_unlearn():
    return [unlearn.unlearn(oeu, model, o.state.params, o.state.batch_stats,
                            d, config=ucfg, num_classes=10, seed=s)
            for o, d, s in zip(originals, datas, seeds)]

  def vm_unlearn():
    return seeds_lib.unlearn_seeds(
        oeu, model, [o.state.params for o in originals],
        [o.state.batch_stats for o in originals], datas, config=ucfg,
        num_classes=10, seeds=seeds)

  def seq_fit():
    return [train.fit(model, ds.train_x, ds.train_y, config=tcfg, seed=s)
            for s in seeds]

  def vm_fit():
    return seeds_lib.fit_seeds(model, ds.train_x, ds.train_y, config=tcfg,
                              seeds=seeds)

  for what, seq_fn, vm_fn in (("unlearning (OEU)", seq_unlearn, vm_unlearn),
                              ("training (Original)", seq_fit, vm_fit)):
    runs = {"seq": [], "vm": []}
    for _ in range(max(1, args.repeats // 2)):
      for key, fn in (("seq", seq_fn), ("vm", vm_fn)):
        res = fn()
        run_s = sum(r.seconds for r in res)
        comp_s = sum(r.compile_seconds for r in res)
        runs[key].append((run_s, comp_s))
    seq_run = statistics.median(r for r, _ in runs["seq"])
    vm_run = statistics.median(r for r, _ in runs["vm"])
    seq_all = statistics.median(r + c for r, c in runs["seq"])
    vm_all = statistics.median(r + c for r, c in runs["vm"])
    seq_c = statistics.median(c for _, c in runs["seq"])
    vm_c = statistics.median(c for _, c in runs["vm"])
    rows.append((f"{n} vmapped seeds / {n} sequential runs, throughput, "
                 f"{what}, digits w4a8",
                 f"{seq_all / vm_all:.2f}x end to end (sequential "
                 f"{seq_run:.1f} s run + {seq_c:.1f} s compile; vmapped "
                 f"{vm_run:.1f} s + {vm_c:.1f} s); "
                 f"{seq_run / vm_run:.2f}x without compile",
                 ">= 1.5x", seq_all / vm_all >= 1.5))


def bench_steps(args, rows, notes, table):
  """OEU steps per second, float vs W4A8."""
  cases = [("cnn", "digits 8x8x1", (8, 8, 1), 256, 5, {}),
           ("cnn", "mnist-shaped 28x28x1", (28, 28, 1), 256, 2, {}),
           ("resnet18", "cifar-shaped 32x32x3", (32, 32, 3), 32, 1, {})]
  if args.quick:
    cases = [c[:3] + (min(c[3], 64), 1,
                      {"width": 0.25} if c[0] == "resnet18" else {})
             for c in cases]
  for name, label, shape, batch, k, kw in cases:
    timers = {}
    for bits in ("float", "w4a8"):
      model, params, stats, udata = model_setup(
          name, bits, shape, n=2 * batch, forget=batch, **kw)
      cfg = unlearn.UnlearnConfig(batch_size=batch)
      timers[bits] = StepTimer(methods.build_method("oeu", model), model,
                               params, stats, udata, cfg, 10, k)
    t = median_interleaved(timers, args.repeats)
    f, q = t["float"] / k, t["w4a8"] / k
    width = f" width {kw['width']}" if kw else ""
    table.append((f"{name}{width} / {label}", batch, f"{1 / f:.2f}",
                  f"{1 / q:.2f}", f"{q / f:.2f}",
                  f"{timers['float'].compile_s:.1f} / "
                  f"{timers['w4a8'].compile_s:.1f}"))


def bench_sequential(args, rows, notes, figures):
  """An RL step (the sequential schedule: forget steps, then retain steps,
  each kind its own program) against an OEU step (paired) on the same
  shapes: 28x28 W4A8 CNN, batch 256. One gradient against two, so the
  ratio should sit near or below 1 (it was ~40 when the kind was chosen in
  a ``lax.switch``)."""
  batch, k = (64, 1) if args.quick else (256, 2)
  bits = dataclasses.replace(quantization.preset("w4a8"),
                             backend=args.quant_backend)
  model, params, stats, udata = model_setup(
      "cnn", bits, (28, 28, 1), n=2 * batch, forget=batch)
  cfg = unlearn.UnlearnConfig(batch_size=batch)
  rl = methods.build_method("rl", model)
  timers = {
      "oeu": StepTimer(methods.build_method("oeu", model), model, params,
                       stats, udata, cfg, 10, k),
      "rl_forget": StepTimer(rl, model, params, stats, udata, cfg, 10, k,
                             kind=unlearn.FORGET),
      "rl_retain": StepTimer(rl, model, params, stats, udata, cfg, 10, k,
                             kind=unlearn.RETAIN)}
  t = median_interleaved(timers, args.repeats)
  per = {m: v / k for m, v in t.items()}
  rl_step = (per["rl_forget"] + per["rl_retain"]) / 2
  ratio = rl_step / per["oeu"]
  figures["sequential_over_paired_step_cnn28"] = ratio
  tag = f"cnn 28x28 w4a8 {args.quant_backend}, batch {batch}"
  rows.append((f"RL step / OEU step ({tag})",
               f"{ratio:.2f} (forget {fmt_s(per['rl_forget'])}, retain "
               f"{fmt_s(per['rl_retain'])} / {fmt_s(per['oeu'])})",
               "<= 1.0", ratio <= 1.0))
  notes.append(f"compile ({tag}): OEU {timers['oeu'].compile_s:.1f} s, RL "
               f"forget {timers['rl_forget'].compile_s:.1f} s, retain "
               f"{timers['rl_retain'].compile_s:.1f} s")


def bench_quant_backend(args, rows, notes, figures):
  """W4A8 FT step through each backend (fake, aqt, qwix) against the float
  step."""
  cases = [("cnn28", "cnn", (28, 28, 1), 256, 2, {}),
           ("resnet18", "resnet18", (32, 32, 3), 32, 1, {})]
  if args.quick:
    cases = [("cnn28", "cnn", (28, 28, 1), 64, 1, {}),
             ("resnet18", "resnet18", (32, 32, 3), 32, 1, {"width": 0.25})]
  w4a8 = quantization.preset("w4a8")
  specs = {"float": "float",
           "fake": dataclasses.replace(w4a8, backend="fake"),
           "aqt": dataclasses.replace(w4a8, backend="aqt"),
           "qwix": dataclasses.replace(w4a8, backend="qwix")}
  for key, name, shape, batch, k, kw in cases:
    timers = {}
    for impl, bits in specs.items():
      model, params, stats, udata = model_setup(
          name, bits, shape, n=2 * batch, forget=batch, **kw)
      timers[impl] = StepTimer(methods.build_method("ft", model), model,
                               params, stats, udata,
                               unlearn.UnlearnConfig(batch_size=batch), 10, k)
    t = median_interleaved(timers, args.repeats)
    per = {impl: v / k for impl, v in t.items()}
    figures[f"w4a8_over_float_{key}"] = per["fake"] / per["float"]
    figures[f"w4a8_aqt_over_float_{key}"] = per["aqt"] / per["float"]
    figures[f"aqt_over_fake_{key}"] = per["aqt"] / per["fake"]
    figures[f"qwix_over_float_{key}"] = per["qwix"] / per["float"]
    width = f" width {kw['width']}" if kw else ""
    tag = f"{name}{width} {shape[0]}x{shape[1]}, FT, batch {batch}"
    rows.append((f"W4A8 fake / float step ({tag})",
                 f"{per['fake'] / per['float']:.2f} "
                 f"({fmt_s(per['fake'])} / {fmt_s(per['float'])})",
                 "<= 1.15", per["fake"] / per["float"] <= 1.15))
    rows.append((f"W4A8 aqt / float step ({tag})",
                 f"{per['aqt'] / per['float']:.2f} "
                 f"({fmt_s(per['aqt'])}); aqt / fake "
                 f"{per['aqt'] / per['fake']:.2f}", "report", None))
    rows.append((f"W4A8 qwix / float step ({tag})",
                 f"{per['qwix'] / per['float']:.2f} "
                 f"({fmt_s(per['qwix'])})", "report", None))
    notes.append(f"compile ({tag}): float {timers['float'].compile_s:.1f} s, "
                 f"fake {timers['fake'].compile_s:.1f} s, aqt "
                 f"{timers['aqt'].compile_s:.1f} s, qwix "
                 f"{timers['qwix'].compile_s:.1f} s")


# --------------------------------------------------------------------------


def _torch_missing() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return True
  return False


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="shrunk budgets")
  p.add_argument("--repeats", type=int, default=None,
                 help="repeats per measurement (default 5; --quick 3)")
  p.add_argument("--only", default=",".join(DEFAULT),
                 help=f"comma-separated subset of {','.join(SECTIONS)} "
                 f"(default {','.join(DEFAULT)})")
  p.add_argument("--json", default=None, metavar="FILE",
                 help="also write the named figures as a flat JSON object")
  p.add_argument("--threads", default="1,2",
                 help="thread settings of the torch and floor sections: 1 "
                 "(pinned to CPU 0), 2, or 1,2 (default)")
  p.add_argument("--torch-cases", default=",".join(torch_side.CASES),
                 help="steps of the torch section, from "
                 f"{','.join(torch_side.CASES)}")
  p.add_argument("--step-models", default="cnn,resnet18",
                 help="models of step_ratio (default cnn,resnet18)")
  p.add_argument("--quant-backend", choices=quantization.BACKENDS,
                 default="fake",
                 help="W4A8 backend of step_ratio and sequential (default "
                 "fake, the library default)")
  p.add_argument("--mnist-results", default=None, metavar="RESULTS_JSON",
                 help="mnist_rte: read the oeu and retrain records of a "
                 "results.json instead of running")
  p.add_argument("--mnist-dir", default=None,
                 help="mnist_rte: MNIST t10k IDX folder (default: "
                 "experiments.common.MNIST_T10K)")
  p.add_argument("--mnist-stop-when", default=None, metavar="RULE",
                 help="mnist_rte: also OEU with this --stop-when rule")
  p.add_argument("--mnist-stop-every", type=int, default=10, metavar="K",
                 help="mnist_rte: steps between checks of the rule")
  args = p.parse_args(argv)
  if args.repeats is None:
    args.repeats = 3 if args.quick else 5
  if args.repeats < 1:
    p.error(f"--repeats must be at least 1, got {args.repeats}")
  if args.mnist_stop_every < 1:
    p.error(f"--mnist-stop-every must be at least 1, got "
            f"{args.mnist_stop_every}")
  only = [s for s in args.only.split(",") if s]
  for s in only:
    if s not in SECTIONS:
      p.error(f"unknown section {s!r}; valid: {', '.join(SECTIONS)}")
  try:
    args.threads = sorted({int(t) for t in args.threads.split(",")})
  except ValueError:
    args.threads = [0]
  if not args.threads or any(t not in (1, 2) for t in args.threads):
    p.error("--threads must be 1, 2 or 1,2")
  args.step_models = [m for m in args.step_models.split(",") if m]
  if not args.step_models or any(m not in ("cnn", "resnet18")
                                 for m in args.step_models):
    p.error("--step-models must be cnn, resnet18 or cnn,resnet18")
  cases = [c for c in args.torch_cases.split(",") if c]
  for c in cases:
    if c not in torch_side.CASES:
      p.error(f"unknown --torch-cases entry {c!r}; valid: "
              f"{', '.join(torch_side.CASES)}")
  if "torch" in only and _torch_missing():
    p.error("section torch needs PyTorch: pip install -r "
            "benchmarks/requirements.txt (or leave torch out of --only)")
  if args.mnist_results and not os.path.isfile(args.mnist_results):
    p.error(f"--mnist-results {args.mnist_results}: no such file")
  if "torch" in only and "floor" in only:
    only.remove("floor")  # The torch section measures the floor too.
  start = time.time()
  rows, notes, steps, figures = [], [], [], {}
  sections: dict[str, Callable] = {
      "step_ratio": lambda: bench_step_ratio(args, rows, notes, figures),
      "rte": lambda: bench_rte(args, rows, notes),
      "seeds": lambda: bench_seeds(args, rows, notes),
      "steps": lambda: bench_steps(args, rows, notes, steps),
      "memory": lambda: memory.bench_memory(args, rows, notes),
      "quant_backend": lambda: bench_quant_backend(args, rows, notes,
                                                  figures),
      "sequential": lambda: bench_sequential(args, rows, notes, figures),
      "torch": lambda: torch_side.side_by_side(
          args, rows, notes, figures, cases=cases, with_torch=True),
      "floor": lambda: torch_side.side_by_side(
          args, rows, notes, figures, cases=["resnet18_float_ft"],
          with_torch=False),
      "vmap_e2e": lambda: end_to_end.bench_vmap_e2e(args, rows, notes,
                                                    figures),
      "mnist_rte": lambda: end_to_end.bench_mnist_rte(args, rows, notes,
                                                      figures),
  }
  if args.json and os.path.isdir(args.json):
    p.error(f"--json {args.json} is a directory")
  header = (f"oeu_jax benchmarks, {datetime.date.today()}, "
            f"{'quick' if args.quick else 'full'}, repeats {args.repeats}\n"
            f"machine: {machine()}")
  print(header, file=sys.stderr, flush=True)
  loads = [os.getloadavg()[0]]
  for s in only:
    t0 = time.time()
    sections[s]()
    loads.append(os.getloadavg()[0])
    print(f"[{s}: {time.time() - t0:.0f} s; load {loads[-1]:.2f}]",
          file=sys.stderr, flush=True)
  print(f"<!-- {header} -->\n")
  if rows:
    print("| measurement | result | goal | met |\n|---|---|---|---|")
    for name, result, goal, met in rows:
      mark = "" if met is None else ("yes" if met else "**no**")
      print(f"| {name} | {result} | {goal} | {mark} |")
  if steps:
    print("\nOEU unlearning steps per second (median; one step = forget and "
          "retain batch, forward + backward + update):\n")
    print("| model / input | batch | float steps/s | w4a8 steps/s | "
          "w4a8 / float time | compile s (float / w4a8) |\n"
          "|---|---|---|---|---|---|")
    for r in steps:
      print("| " + " | ".join(str(v) for v in r) + " |")
  if notes:
    print()
    for n in notes:
      print(f"- {n}")
  if args.json:
    bad = sorted(k for k, v in figures.items() if not math.isfinite(v))
    if bad:
      print(f"warning: non-finite figures {', '.join(bad)}", file=sys.stderr)
    with open(args.json, "w") as f:
      json.dump({k: round(float(v), 4) for k, v in figures.items()}, f,
                indent=1, sort_keys=True)
  print(f"\n<!-- total {time.time() - start:.0f} s; load average (1 min) "
        f"at start and after each section: "
        f"{' '.join(f'{x:.2f}' for x in loads)}; peak RSS of this process "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
        f"MB -->")
  return 0


if __name__ == "__main__":
  sys.exit(main())
