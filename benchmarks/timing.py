"""What every benchmark module shares: interleaved medians, synthetic data,
oeu_jax's compiled unlearning step as a timer, the machine's description.

Not part of the test suite (no timing assertions there).
"""

import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from oeu_jax.engine import unlearn
from oeu_jax.nn import models


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
  """A compiled unlearning step of ``method`` run ``k`` times per call.

  ``kind`` is the step kind (:data:`oeu_jax.engine.unlearn.PAIRED`, ``FORGET``
  or ``RETAIN``). ``compiled`` is the executable (its ``cost_analysis()`` counts
  the FLOPs of one step); ``compile_s`` the seconds its compilation took.
  """

  def __init__(self, method, model, params, batch_stats, udata, config,
               num_classes, k, kind=unlearn.PAIRED):
    state, tx = unlearn.init_state(method, model, params, batch_stats, udata,
                                   config=config, num_classes=num_classes,
                                   seed=0)
    nf, nr = len(udata.forget_y), len(udata.retain_y)
    fi, ri = unlearn.step_indices(nf, nr, config, 0, 0)
    self.args = (*udata, jnp.asarray(fi), jnp.asarray(ri))
    t0 = time.perf_counter()
    self.compiled = jax.jit(unlearn.make_step(method, tx, kind=kind)).lower(
        state, *self.args).compile()
    self.compile_s = time.perf_counter() - t0
    self.state, self.k = state, k
    self()  # Warm-up.

  def __call__(self):
    s = self.state
    for _ in range(self.k):
      s, _ = self.compiled(s, *self.args)
    jax.block_until_ready(s)


def model_setup(name: str, bits, shape, *, n: int, forget: int, **kwargs):
  """A model at init and ``unlearn.make_data`` of ``n`` synthetic examples,
  the first ``forget`` of them forgotten."""
  model = models.build_model(name, num_classes=10, bits=bits, **kwargs)
  params, stats = models.init_model(model, jax.random.PRNGKey(0), shape)
  x, y = synthetic(shape, n)
  udata = unlearn.make_data(x, y, np.arange(forget), np.arange(forget, n))
  return model, params, stats, udata


def fmt_s(s: float) -> str:
  return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (``lscpu``'s "Model name")."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "?"


def machine() -> str:
  load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else "?")
  return (f"{os.cpu_count()} CPUs ({cores} usable by this process), "
          f"{cpu_model()}; jax {jax.__version__} "
          f"({jax.default_backend()}); load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
