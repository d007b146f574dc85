"""Speed and memory of oeu_jax, printed as a Markdown table of ratios.

Every ratio is measured within one run, its two sides interleaved
(A, B, A, B, ...), as the median of ``--repeats`` repeats after
compilation; compile times are reported separately. Not part of the test
suite (no timing assertions there).

Usage::

    python benchmarks/bench.py             # full: ~10 min on 2 quiet cores
    python benchmarks/bench.py --quick     # shrunk budgets: a few minutes
    python benchmarks/bench.py --repeats 7 --only step_ratio,steps
    taskset -c 0 python benchmarks/bench.py --only quant_impl --json f.json

Sections (``--only``): ``step_ratio`` (OEU / FT step time, projection
share), ``rte`` (unlearning / Retrain wall time), ``seeds`` (N vmapped seeds
vs N sequential runs), ``steps`` (steps per second, float vs W4A8),
``memory`` (peak RSS of an unlearning run, in subprocesses),
``quant_impl`` (FT step at W4A8 through AQT's integer dot and through the
fake-quantized native convolutions, ``QuantSpec.impl``, against float; run
it pinned to one core, ``taskset -c 0``, so other jobs' load cancels).
``--json FILE`` writes the figures that have a name as a flat
``{name: number}`` object.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from oeu_jax import data
from oeu_jax import methods
from oeu_jax import models
from oeu_jax import quantization
from oeu_jax import seeds as seeds_lib
from oeu_jax import train
from oeu_jax import transforms
from oeu_jax import unlearn
from oeu_jax.runner import config as config_lib

SECTIONS = ("step_ratio", "rte", "seeds", "steps", "memory", "quant_impl")


# --------------------------------------------------------------------------
# Helpers


def median_interleaved(fns: dict, repeats: int) -> dict:
  """Median seconds of each no-argument function, run in turns."""
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t0)
  return {k: statistics.median(v) for k, v in times.items()}


def synthetic(shape, n: int, num_classes: int = 10, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.random((n,) + tuple(shape), dtype=np.float32)
  y = (np.arange(n) % num_classes).astype(np.int32)
  return x, y


class StepTimer:
  """A compiled unlearning step of ``method`` run ``k`` times per call."""

  def __init__(self, method, model, params, batch_stats, udata, config,
               num_classes, k):
    state, tx = unlearn.init_state(method, model, params, batch_stats, udata,
                                   config=config, num_classes=num_classes,
                                   seed=0)
    nf, nr = len(udata.forget_y), len(udata.retain_y)
    fi, ri = unlearn.step_indices(nf, nr, config, 0, 0)
    self.args = (*udata, jnp.asarray(fi), jnp.asarray(ri))
    t0 = time.perf_counter()
    self.step = jax.jit(unlearn.make_step(method, tx)).lower(
        state, *self.args).compile()
    self.compile_s = time.perf_counter() - t0
    self.state, self.k = state, k
    self()  # Warm-up.

  def __call__(self):
    s = self.state
    for _ in range(self.k):
      s, _ = self.step(s, *self.args)
    jax.block_until_ready(s)


def model_setup(name: str, bits: str, shape, *, n: int, forget: int,
                **kwargs):
  model = models.build_model(name, num_classes=10, bits=bits, **kwargs)
  params, stats = models.init_model(model, jax.random.PRNGKey(0), shape)
  x, y = synthetic(shape, n)
  udata = unlearn.make_data(x, y, np.arange(forget), np.arange(forget, n))
  return model, params, stats, udata


def fmt_s(s: float) -> str:
  return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


# --------------------------------------------------------------------------
# Sections


def bench_step_ratio(args, rows, notes):
  """OEU step vs FT step at the same batch; the projection's share."""
  cases = [("cnn", (8, 8, 1), 256, 5, {})]
  if not args.quick:
    cases.append(("resnet18", (32, 32, 3), 32, 1, {}))
  for name, shape, batch, k, kw in cases:
    model, params, stats, udata = model_setup(
        name, "w4a8", shape, n=4 * batch, forget=batch, **kw)
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
    tag = f"{name} w4a8, batch {batch}"
    rows.append((f"OEU step / FT step ({tag})",
                 f"{per['oeu'] / per['ft']:.2f} "
                 f"({fmt_s(per['oeu'])} / {fmt_s(per['ft'])})",
                 "<= 2.2", per["oeu"] / per["ft"] <= 2.2))
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
    tcfg = tcfg._replace(epochs=3)
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
  tcfg = tcfg._replace(epochs=2 if args.quick else 5)
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


def bench_quant_impl(args, rows, notes, figures):
  """W4A8 FT step, impl "fake" and "aqt", against the float step."""
  cases = [("cnn28", "cnn", (28, 28, 1), 256, 2, {}),
           ("resnet18", "resnet18", (32, 32, 3), 32, 1, {})]
  if args.quick:
    cases = [("cnn28", "cnn", (28, 28, 1), 64, 1, {}),
             ("resnet18", "resnet18", (32, 32, 3), 32, 1, {"width": 0.25})]
  specs = {"float": "float",
           "fake": quantization.preset("w4a8")._replace(impl="fake"),
           "aqt": quantization.preset("w4a8")._replace(impl="aqt")}
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
    notes.append(f"compile ({tag}): float {timers['float'].compile_s:.1f} s, "
                 f"fake {timers['fake'].compile_s:.1f} s, aqt "
                 f"{timers['aqt'].compile_s:.1f} s")


_MEMORY_CHILD = """
import dataclasses, json, resource, sys
import jax, numpy as np
from oeu_jax import data, methods, models, unlearn
from oeu_jax.runner import config as config_lib
from oeu_jax import seeds as seeds_lib
mode, n, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ds = data.load_dataset("digits")
model = models.build_model("cnn", num_classes=10, bits="w4a8")
params, stats = models.init_model(model, jax.random.PRNGKey(0), (8, 8, 1))
cfg = config_lib.default_unlearn("digits", "random")
cfg = dataclasses.replace(cfg, epochs=epochs)
datas = []
for s in range(n):
  split = data.make_split(ds, "random", forget_ratio=0.1, seed=s)
  datas.append(unlearn.make_data(ds.train_x, ds.train_y, split.forget_idx,
                                 split.retain_idx))
oeu = methods.build_method("oeu", model)
if mode == "seq":
  for s in range(n):
    unlearn.unlearn(oeu, model, params, stats, datas[s], config=cfg,
                    num_classes=10, seed=s)
elif mode == "vmap":
  seeds_lib.unlearn_seeds(oeu, model, [params] * n, [stats] * n, datas,
                         config=cfg, num_classes=10, seeds=range(n))
stats_dev = jax.devices()[0].memory_stats()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a
# child would report at least its parent's peak.
with open("/proc/self/status") as f:
  hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
print("RESULT " + json.dumps({
    "maxrss_mb": hwm / 1024,
    "device_peak_mb": (stats_dev or {}).get("peak_bytes_in_use", 0) / 2**20
    if stats_dev else None}))
"""


def bench_memory(args, rows, notes):
  """Peak RSS (VmHWM) of an unlearning run, each in its own process."""
  epochs = 1 if args.quick else 10
  n = 4 if args.quick else 8
  out = {}
  for mode, seeds in (("baseline", 1), ("seq", 1), ("vmap", n)):
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, mode, str(seeds), str(epochs)],
        capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode:
      raise RuntimeError(proc.stderr[-2000:])
    line = next(s for s in proc.stdout.splitlines()
                if s.startswith("RESULT "))
    out[mode] = json.loads(line[len("RESULT "):])
  base = out["baseline"]["maxrss_mb"]
  rows.append(("peak RSS, OEU unlearning run (digits w4a8 CNN, "
               f"{epochs} ep)",
               f"{out['seq']['maxrss_mb']:.0f} MB "
               f"(+{out['seq']['maxrss_mb'] - base:.0f} MB over imports, data "
               f"and model: {base:.0f} MB)", "report", None))
  rows.append((f"peak RSS, {n} vmapped seeds",
               f"{out['vmap']['maxrss_mb']:.0f} MB "
               f"(+{out['vmap']['maxrss_mb'] - base:.0f} MB)", "report",
               None))
  dev = out["seq"]["device_peak_mb"]
  notes.append("device memory stats: " + (
      f"peak {dev:.0f} MB" if dev is not None
      else "not available on the CPU backend (memory_stats() is None)"))


# --------------------------------------------------------------------------


def machine() -> str:
  model = platform.processor() or "?"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else "?")
  return (f"{os.cpu_count()} CPUs ({cores} usable by this process), {model}; "
          f"jax {jax.__version__} "
          f"({jax.default_backend()}); load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="shrunk budgets")
  p.add_argument("--repeats", type=int, default=None,
                 help="repeats per measurement (default 5; --quick 3)")
  p.add_argument("--only", default=",".join(SECTIONS),
                 help=f"comma-separated subset of {','.join(SECTIONS)}")
  p.add_argument("--json", default=None, metavar="FILE",
                 help="also write the named figures as a flat JSON object")
  args = p.parse_args(argv)
  args.repeats = args.repeats or (3 if args.quick else 5)
  only = [s for s in args.only.split(",") if s]
  for s in only:
    if s not in SECTIONS:
      p.error(f"unknown section {s!r}; valid: {', '.join(SECTIONS)}")
  start = time.time()
  rows, notes, steps, figures = [], [], [], {}
  sections: dict[str, Callable] = {
      "step_ratio": lambda: bench_step_ratio(args, rows, notes),
      "rte": lambda: bench_rte(args, rows, notes),
      "seeds": lambda: bench_seeds(args, rows, notes),
      "steps": lambda: bench_steps(args, rows, notes, steps),
      "memory": lambda: bench_memory(args, rows, notes),
      "quant_impl": lambda: bench_quant_impl(args, rows, notes, figures),
  }
  if args.json and os.path.isdir(args.json):
    p.error(f"--json {args.json} is a directory")
  header = (f"oeu_jax benchmarks, {datetime.date.today()}, "
            f"{'quick' if args.quick else 'full'}, repeats {args.repeats}\n"
            f"machine: {machine()}")
  print(header, file=sys.stderr, flush=True)
  for s in only:
    t0 = time.time()
    sections[s]()
    print(f"[{s}: {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)
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
    with open(args.json, "w") as f:
      json.dump({k: round(float(v), 4) for k, v in figures.items()}, f,
                indent=1, sort_keys=True)
  load = os.getloadavg()
  print(f"\n<!-- total {time.time() - start:.0f} s; load average at end "
        f"{load[0]:.2f}; peak RSS of this process "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
        f"MB -->")
  return 0


if __name__ == "__main__":
  sys.exit(main())
