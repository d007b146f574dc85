"""Peak resident memory of unlearning runs, each in its own process.

Section ``memory`` of ``benchmarks/bench.py``.
"""

import json
import subprocess
import sys

import end_to_end

_MEMORY_CHILD = """
import dataclasses, json, resource, sys
import jax, numpy as np
from oeu_jax import data
from oeu_jax.algorithm import methods
from oeu_jax.nn import models
from oeu_jax.engine import unlearn
from oeu_jax.runner import config as config_lib
from oeu_jax.engine import seeds as seeds_lib
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
        capture_output=True, text=True, env=end_to_end.child_env())
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
