"""The paper-scale experiment configs run end to end on TFDS mock data.

CIFAR-10/100 and SVHN cannot be downloaded here; ``tfds.testing.mock_data``
serves random images of each dataset's real shapes and label ranges through
the same loading code. Each config's ``--quick`` variant is shrunk further
(OEU only, 48 images, batches of 20 and 24) so that the models, shapes and
budgets are exercised in seconds.
"""

import dataclasses
import math

import pytest
import tensorflow_datasets as tfds

from experiments import EXPERIMENTS
from experiments import run as run_lib
from oeu_jax.runner import config
from oeu_jax.runner import pipeline

# One per architecture (the ResNet-18 configs differ only by the dataset
# name; CIFAR-10's also runs in test_notebook.py, and every config resolves
# below).
# The method each runs: OEU through ResNet-18; FT through MobileNetV2, whose
# OEU step (two gradients of 53 layers) compiles for ~90 s on a CPU, the
# longest test of the suite, while OEU's step on a second large graph adds
# nothing the ResNet-18 case does not check.
CASES = [
    ("svhn_resnet18", "class0", "oeu"),
    ("mobilenetv2", "svhn", "ft"),
]
N = 32  # Mock images per split.


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_resolves(name):
  for quick in (False, True):
    configs = run_lib.load_configs(name, quick=quick)
    assert configs
    for cfg in configs.values():
      config.resolve(cfg)  # Unknown names, bad ratios or classes raise.
      assert cfg.seeds == ((0,) if quick else (0, 1, 2))


# A few steps of large graphs: XLA's optimization passes cost more than
# they save.
@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("name, variant, method", CASES)
def test_paper_config_runs_on_mock_data(name, variant, method, tmp_path):
  full = run_lib.load_configs(name, quick=False)[variant]
  cfg = run_lib.load_configs(name, quick=True)[variant]
  # The quick variant is the paper config shrunk, not another experiment.
  for k in ("dataset", "model", "bits", "scenario", "forget_ratio",
            "forget_class", "float_ends"):
    assert getattr(cfg, k) == getattr(full, k), k
  assert full.seeds == (0, 1, 2) and "oeu" in full.methods
  # 32 images, batches of 12 (the configs' 256 exceed them): the Original
  # (32 images) and Retrain (D_r: 24 to 31 of them) then both take 2 steps
  # of one shape, so Retrain reuses the Original's compiled step. The
  # unoptimized programs (fast_compile) run slowly: few images, few steps.
  cfg = dataclasses.replace(
      cfg, methods=(method,), max_examples=N, train=dataclasses.replace(
          cfg.train, epochs=1, batch_size=12),
      unlearn=dataclasses.replace(cfg.unlearn, batch_size=16),
      method_hparams=tuple(h for h in cfg.method_hparams if h[0] == method))
  with tfds.testing.mock_data(num_examples=N):
    records = pipeline.run(cfg, tmp_path)
  assert [r["method"] for r in records] == ["original", "retrain", method]
  for r in records:
    assert set(pipeline.RECORD_KEYS) <= set(r)
    for k in ("ua", "ra", "ta", "mia_efficacy", "forget_entropy"):
      assert math.isfinite(r[k]), (r["method"], k)
  assert not (tmp_path / "downloads").exists()
