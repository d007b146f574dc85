"""The corrective scenario ``mislabel``: D_f gets wrong labels before the
Original trains; Retrain trains on the clean rest (Goel et al., TMLR 2024).
"""

import dataclasses
import re

import numpy as np
import pytest

from oeu_jax import cli
from oeu_jax import data
from oeu_jax.engine import train
from oeu_jax.engine import unlearn
from oeu_jax.runner import config
from oeu_jax.runner import layout
from oeu_jax.runner import pipeline


@pytest.fixture(scope="module")
def digits():
  return data.load_dataset("digits")


def test_forget_labels_are_wrong_and_the_rest_are_true(digits):
  s = data.make_split(digits, "mislabel", forget_ratio=0.1, seed=3)
  f, r, y = s.forget_idx, s.retain_idx, digits.train_y
  assert len(f) == round(0.1 * len(y))
  assert np.all(s.train_y[f] != y[f])  # Every D_f label is wrong ...
  assert np.array_equal(s.train_y[r], y[r])  # ... and only those.
  assert np.array_equal(np.sort(np.concatenate([f, r])), np.arange(len(y)))
  # Wrong labels spread over the other classes (K - 1 = 9 of them).
  shifts = (s.train_y[f] - y[f]) % digits.num_classes
  assert set(shifts) <= set(range(1, 10)) and len(set(shifts)) >= 7
  assert np.array_equal(data.training_labels(digits, s), s.train_y)


def test_fixed_per_seed_and_different_across_seeds(digits):
  a = data.make_split(digits, "mislabel", forget_ratio=0.1, seed=3)
  b = data.make_split(digits, "mislabel", forget_ratio=0.1, seed=3)
  c = data.make_split(digits, "mislabel", forget_ratio=0.1, seed=4)
  assert np.array_equal(a.train_y, b.train_y)
  assert np.array_equal(a.forget_idx, b.forget_idx)
  assert not np.array_equal(a.forget_idx, c.forget_idx)
  plain = data.make_split(digits, "random", forget_ratio=0.1, seed=3)
  assert plain.train_y is None
  assert np.array_equal(data.training_labels(digits, plain), digits.train_y)


@pytest.mark.parametrize("kw,match", [
    (dict(forget_ratio=1.5), r"forget_ratio must be in \(0, 1\)"),
    (dict(forget_ratio=0.0), r"forget_ratio must be in \(0, 1\)"),
    (dict(forget_class=3), "is for scenario 'class'"),
    (dict(), "needs forget_ratio"),
])
def test_bad_input_is_one_clear_line(digits, kw, match):
  with pytest.raises(ValueError, match=match) as e:
    data.make_split(digits, "mislabel", seed=0, **kw)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("argv,pattern", [
    (["--forget-class", "3"], "--forget-class is for --scenario class; use "
     "--forget-ratio with --scenario mislabel"),
    (["--forget-ratio", "1.5"], r"--forget-ratio must be in \(0, 1\), got 1.5"),
    (["--forget-ratio", "0"], r"--forget-ratio must be in \(0, 1\), got 0.0"),
])
def test_cli_refuses_bad_flags_in_one_line(argv, pattern, tmp_path, capsys):
  status = cli.main(["run", "--dataset", "digits", "--scenario", "mislabel",
                     "--workdir", str(tmp_path / "w")] + argv)
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 2 and len(err) == 1
  assert re.search(pattern, err[0]), err


def test_the_pipeline_trains_the_original_on_the_wrong_labels(tmp_path):
  cfg = config.RunConfig(
      dataset="digits", scenario="mislabel", forget_ratio=0.1,
      methods=("oeu",), seeds=(0, 1), max_examples=200,
      # Long enough on 200 images to memorize wrong labels.
      train=train.TrainConfig(epochs=40, batch_size=20),
      unlearn=unlearn.UnlearnConfig(epochs=1, batch_size=32))
  recs = pipeline.run(cfg, tmp_path, vmap_seeds=True)
  by = {(r["method"], r["seed"]): r for r in recs}
  assert set(by) == {(m, s) for m in ("original", "retrain", "oeu")
                     for s in (0, 1)}
  for r in recs:
    assert r["scenario"] == "mislabel" and r["forget_ratio"] == 0.1
    assert 0.0 <= r["forget_true_acc"] <= 100.0
  lay = layout.Layout.of(config.resolve(cfg), tmp_path)
  # The Original of this scenario is its own model, not the clean one.
  assert lay.checkpoint_dir(0, "original").name == "original-mislabel0.1"
  clean = dataclasses.replace(cfg, scenario="random")
  assert layout.Layout.of(config.resolve(clean), tmp_path).checkpoint_dir(
      0, "original").name == "original"
  # The Original fits D_f's wrong labels better than Retrain, which never
  # saw them: its UA (error on the wrong labels) is lower.
  for s in (0, 1):
    assert by[("original", s)]["ua"] < by[("retrain", s)]["ua"]
