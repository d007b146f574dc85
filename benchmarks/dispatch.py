"""Per-step dispatch overhead: one dispatch per step against K per dispatch.

Times the same training steps of a small CNN on digits driven by
:class:`oeu_jax.engine.executors.StepExecutor` (one dispatch and one host
transfer per step) and by :class:`oeu_jax.engine.executors.ScanExecutor`
(``lax.scan`` over K steps, one transfer per chunk), interleaved, and prints the
medians per step after compilation. Not part of the test suite.

  python benchmarks/dispatch.py [--steps 200] [--repeats 5] [--chunk 100]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from oeu_jax import data
from oeu_jax.engine import executors as executors_lib
from oeu_jax.engine import loop
from oeu_jax.engine import train
from oeu_jax.nn import models


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--chunk", type=int, default=100)
  p.add_argument("--bits", default="w4a8")
  p.add_argument("--batch", type=int, default=16)
  args = p.parse_args()
  ds = data.load_dataset("digits")
  model = models.build_model("cnn", num_classes=10, bits=args.bits)
  n, total = len(ds.train_x), args.steps
  tx = train.make_optimizer(train.TrainConfig(batch_size=args.batch), total)
  step = train.make_train_step(model, tx)
  xy = (jnp.asarray(ds.train_x), jnp.asarray(ds.train_y))

  def indices(s):
    return (train.batch_indices(n, args.batch, 0, s),)

  executors = {
      "per step": executors_lib.StepExecutor(step, xy, indices),
      f"scan K={args.chunk}": executors_lib.ScanExecutor(step, xy, indices,
                                                    size=args.chunk),
  }
  chunks = {"per step": 1, f"scan K={args.chunk}": args.chunk}
  times = {k: [] for k in executors}
  for rep in range(args.repeats + 1):  # The first repeat compiles.
    for name, ex in executors.items():
      state = train.init_state(model, jax.random.PRNGKey(0),
                               ds.train_x.shape[1:], tx)
      out = loop.run(ex, state, starts=[0], totals=[total],
                     checkpoint_dirs=[None], checkpoint_every=total,
                     chunk=chunks[name])
      if rep:
        times[name].append(out.seconds / total)
  load = open("/proc/loadavg").read().split()[0]
  print(f"cnn {args.bits} batch {args.batch}, {total} steps, "
        f"load {load}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
  for name, t in times.items():
    print(f"{name}: {1e3 * statistics.median(t):.3f} ms/step (median of "
          f"{len(t)})")


if __name__ == "__main__":
  main()
