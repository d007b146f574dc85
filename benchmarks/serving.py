"""Integer serving: model size in bytes and prediction equality.

For each (model, bits) below, converts the model to AQT's integer serving
form (:func:`oeu_jax.nn.serving.convert`) and prints a Markdown table of sizes
(float parameters vs integer weights + scales, int4 packed two per byte
where the preset has 4-bit weights) and whether the serving logits equal the
training-mode (fake-quantized) forward pass on an evaluation set, batched
alike. The digits CNN is trained (QAT) first and compared on the real
digits test set; the others are compared at initialization on their input
shape (MNIST t10k images when available, else random ones).

Usage::

    python benchmarks/serving.py           # ~2 min on 2 cores
"""

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

from oeu_jax import data
from oeu_jax.engine import train
from oeu_jax.nn import inference
from oeu_jax.nn import models
from oeu_jax.nn import serving
from oeu_jax.runner import config as config_lib

MNIST = Path(__file__).resolve().parents[1].parent / "shared/data/mnist-t10k"

# (label, model, bits, input shape, model kwargs)
CASES = (
    ("cnn / digits (trained)", "cnn", "w4a8", (8, 8, 1), {}),
    ("cnn / digits (trained)", "cnn", "w8a8", (8, 8, 1), {}),
    ("cnn / 28x28", "cnn", "w4a8", (28, 28, 1), {}),
    ("resnet18 / 32x32x3", "resnet18", "w4a8", (32, 32, 3), {}),
    ("resnet18 / 32x32x3", "resnet18", "w8a8", (32, 32, 3), {}),
    ("mobilenetv2 / 32x32x3", "mobilenetv2", "w4a8", (32, 32, 3), {}),
)


def _eval_set(shape: tuple, digits: data.Dataset) -> np.ndarray:
  if shape == (8, 8, 1):
    return digits.test_x
  if shape == (28, 28, 1) and MNIST.exists():
    return data.load_dataset("mnist_idx", data_dir=str(MNIST)).test_x
  rng = np.random.default_rng(0)
  return rng.uniform(0.0, 1.0, (512,) + shape).astype(np.float32)


def measure(label, name, bits, shape, kwargs, digits) -> dict:
  model = models.build_model(name, num_classes=10, bits=bits, **kwargs)
  if label.endswith("(trained)"):
    res = train.fit(model, digits.train_x, digits.train_y, seed=0,
                    config=config_lib.default_train("digits"))
    params, stats = res.state.params, res.state.batch_stats
  else:
    params, stats = models.init_model(model, jax.random.PRNGKey(0), shape)
  variables, info = serving.convert(model, params, stats,
                                    input_shape=shape)
  x = _eval_set(shape, digits)
  fake = inference.predict(model, params, stats, x, batch_size=256)
  real = serving.predict(model, variables, x, batch_size=256)
  return dict(label=label, bits=bits, n=len(x), info=info,
              max_abs=float(np.max(np.abs(fake - real))),
              argmax_equal=bool(np.array_equal(fake.argmax(1),
                                               real.argmax(1))))


def main(argv=None) -> int:
  argparse.ArgumentParser(prog="python benchmarks/serving.py").parse_args(
      argv)
  digits = data.load_dataset("digits")
  print("| model | bits | float bytes | serving bytes | int4-packed bytes "
        "| float / serving | eval examples | max abs logit diff "
        "| argmax equal |")
  print("|---|---|---|---|---|---|---|---|---|")
  for case in CASES:
    r = measure(*case, digits)
    i = r["info"]
    best = min(i["serving_bytes"], i["serving_packed_bytes"])
    print(f"| {r['label']} | {r['bits']} ({i['weight_dtype']}) "
          f"| {i['float_bytes']:,} | {i['serving_bytes']:,} "
          f"| {i['serving_packed_bytes']:,} "
          f"| {i['float_bytes'] / best:.2f}x | {r['n']} "
          f"| {r['max_abs']:.2g} | {r['argmax_equal']} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
