"""Retrain-free targets, the compute budget and the ``auto`` stopping rule."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from oeu_jax import defaults
from oeu_jax.engine import budget
from oeu_jax.engine import schedule
from oeu_jax.engine import stopping
from oeu_jax.engine.unlearn import UnlearnConfig
from oeu_jax.evaluation import estimate
from oeu_jax.evaluation import metrics

ROOT = Path(__file__).resolve().parent.parent


def _logits(n, k, seed, correct=0.8):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, k, n)
  z = rng.normal(size=(n, k))
  hit = rng.random(n) < correct
  z[np.arange(n)[hit], y[hit]] += 4.0
  return z, y


def test_class_targets_are_a_model_that_never_saw_the_class():
  t = estimate.targets("class", ra=99.0, ta=97.5)
  assert t == {"ua": 100.0, "mia_efficacy": 100.0, "ra": 99.0, "ta": 97.5}


def test_random_targets_are_the_originals_view_of_a_heldout_slice():
  test_z, test_y = _logits(200, 10, 0, correct=0.9)
  mem_z, mem_y = _logits(300, 10, 1, correct=1.0)
  t = estimate.targets("random", ra=99.0, ta=90.0, test_logits=test_z,
                       test_labels=test_y, member_logits=mem_z,
                       member_labels=mem_y, seed=3)
  held, rest = estimate.heldout_split(200, 3)
  assert len(held) == 100 and not set(held) & set(rest)
  assert sorted(np.concatenate([held, rest])) == list(range(200))
  acc = 100.0 * np.mean(np.argmax(test_z[held], -1) == test_y[held])
  assert t["ua"] == pytest.approx(100.0 - acc)
  # The attack never saw H: fitted on members against the other half only.
  want = metrics.mia_efficacy(mem_z[:len(rest)], mem_y[:len(rest)],
                              test_z[rest], test_y[rest], test_z[held],
                              test_y[held])
  assert t["mia_efficacy"] == pytest.approx(want)
  assert (t["ra"], t["ta"]) == (99.0, 90.0)
  # Another seed holds out another half.
  assert not np.array_equal(estimate.heldout_split(200, 4)[0], held)


def test_mislabel_targets_carry_wrong_labels():
  test_z, test_y = _logits(300, 10, 2, correct=0.95)
  mem_z, mem_y = _logits(300, 10, 3, correct=1.0)
  wrong = estimate.wrong_labels(test_y, 10, 5)
  assert np.all(wrong != test_y) and wrong.min() >= 0 and wrong.max() < 10
  t = estimate.targets("mislabel", ra=99.0, ta=95.0, test_logits=test_z,
                       test_labels=test_y, member_logits=mem_z,
                       member_labels=mem_y, seed=5)
  # A clean model rarely predicts the wrong label: UA near 100.
  assert t["ua"] > 95.0
  r = estimate.targets("random", ra=99.0, ta=95.0, test_logits=test_z,
                       test_labels=test_y, member_logits=mem_z,
                       member_labels=mem_y, seed=5)
  assert r["ua"] < 20.0


def test_estimated_gap_is_the_avg_gap_to_the_targets():
  rec = {"ua": 90.0, "ra": 98.0, "ta": 96.0, "mia_efficacy": 80.0}
  t = {"ua": 100.0, "ra": 99.0, "ta": 97.0, "mia_efficacy": 100.0}
  assert estimate.estimated_gap(rec, t) == pytest.approx((10 + 1 + 1 + 20) / 4)


def test_bad_targets_input_is_named():
  with pytest.raises(ValueError, match="unknown scenario 'shuffle'"):
    estimate.targets("shuffle", ra=1, ta=1)
  with pytest.raises(ValueError, match="need the Original's test"):
    estimate.targets("random", ra=1, ta=1)
  with pytest.raises(ValueError, match=">= 2 test examples"):
    estimate.heldout_split(1, 0)


def _cfg(schedule_name, **kw):
  return dataclasses.replace(UnlearnConfig(batch_size=10, epochs=3),
                             schedule=schedule_name, **kw)


@pytest.mark.parametrize("name, per_epoch", [
    ("paired", 5 * (4 + 10)),      # max(1 forget, 5 retain batches) steps
    ("sequential", 4 + 5 * 10),    # one pass over each set (full batches)
    ("forget_only", 4),
    ("retain_only", 5 * 10),
])
def test_cost_per_epoch_counts_forward_backward_examples(name, per_epoch):
  cfg = _cfg(name)
  assert budget.cost_per_epoch(4, 45, cfg) == per_epoch
  steps = schedule.num_steps(4, 45, cfg)
  assert budget.cost_of_steps(4, 45, cfg, steps) == 3 * per_epoch


def test_capped_fits_whole_epochs_then_cuts_one_epoch_to_steps():
  cfg = _cfg("paired")  # 70 examples an epoch, 14 a step.
  assert budget.capped(4, 45, cfg, budget=150).epochs == 2
  assert budget.capped(4, 45, cfg, budget=150).max_steps is None
  one = budget.capped(4, 45, cfg, budget=50)
  assert (one.epochs, one.max_steps) == (1, 3)
  assert schedule.num_steps(4, 45, one) == 3
  assert budget.cost_of_steps(4, 45, one, 3) <= 50
  assert budget.capped(4, 45, cfg, budget=1).max_steps == 1  # At least one.
  assert budget.capped(4, 45, cfg, budget=1e6, max_epochs=1).epochs == 1
  with pytest.raises(ValueError, match="must be > 0 examples"):
    budget.capped(4, 45, cfg, budget=0)


def test_auto_rule_resolves_to_the_targets_ua():
  assert stopping.parse("auto").metric == stopping.AUTO
  t = {"ua": 2.5, "ra": 100.0, "ta": 97.5, "mia_efficacy": 3.0}
  assert stopping.rule_text(stopping.auto_rule(t, "random")) == (
      f"ua>=2.5&ra>={100 - defaults.RA_SLACK:g}")
  cls = stopping.auto_rule(t, "class", num_classes=10)
  assert stopping.rule_text(cls) == (
      f"ua>={100 - defaults.CLASS_SLACK:g}&conf<=0.1"
      f"&ra>={100 - defaults.RA_SLACK:g}")
  assert stopping.parse(stopping.rule_text(cls)) == cls
  both = stopping.parse("ua>=95&conf<=0.2&entropy>=0.5")
  assert [(c.metric, c.op, c.threshold) for c in stopping.clauses(both)] == [
      ("ua", ">=", 95.0), ("conf", "<=", 0.2), ("entropy", ">=", 0.5)]
  with pytest.raises(ValueError, match="a conf threshold must be in"):
    stopping.parse("ua>=95&conf<=2")
  assert stopping.rule_text(None) is None
  with pytest.raises(ValueError, match="'auto' needs the Retrain-free"):
    stopping.make_check(None, stopping.parse("auto"))


def test_default_picks_are_the_tuning_files_picks():
  """defaults.PICKS is a copy of experiments/tuning/*.json: kept equal."""
  seen = set()
  for path in sorted((ROOT / "experiments" / "tuning").glob("*.json")):
    (dataset, scenarios), = json.loads(path.read_text()).items()
    for scenario, entry in scenarios.items():
      key = (dataset, scenario)
      if (f"experiments/tuning/{path.name}"
          not in defaults.PICK_SOURCES.get(key, "")):
        continue  # Another tuning of the same pair (not the default).
      seen.add(key)
      want = {m: (r["pick"]["lr"], tuple(sorted(r["pick"]["hparams"].items())))
              for m, r in entry["methods"].items() if r.get("pick")}
      assert defaults.PICKS[key] == want, key
  assert seen == set(defaults.PICKS)


def test_pick_transfer_rule():
  lr, hp, src = defaults.pick("digits", "class", "oeu")
  assert (lr, hp) == defaults.PICKS[("digits", "class")]["oeu"][0:1] + (
      dict(defaults.PICKS[("digits", "class")]["oeu"][1]),)
  assert "digits-class.json" in src
  # MNIST-like data without its own pick: the 4,000-image MNIST pick.
  lr, _, src = defaults.pick("fashion_mnist", "random", "rl")
  assert lr == defaults.PICKS[("mnist_idx", "random")]["rl"][0]
  assert "transferred to fashion_mnist" in src
  # A scenario only digits tuned: the digits pick.
  assert defaults.pick("mnist_idx", "mislabel", "qmul")[0] == (
      defaults.PICKS[("digits", "mislabel")]["qmul"][0])
  # No pick anywhere: the reference lr; the fixed settings always.
  lr, hp, src = defaults.pick("digits", "class", "bad_teacher")
  assert lr == defaults.REFERENCE_LR["bad_teacher"]
  assert hp == {"reduction": "batchmean"} and "reference lr" in src
  assert defaults.pick("digits", "class", "ga")[1] == {"lr_scale": 1.0}


def test_a_stop_check_reads_an_evenly_spaced_sample_of_d_f(monkeypatch):
  import jax

  from oeu_jax.engine import unlearn as unlearn_lib
  from oeu_jax.nn import models
  model = models.build_model("cnn", num_classes=10, bits="float")
  params, bs = models.init_model(model, jax.random.key(0), (8, 8, 1))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(30, 8, 8, 1)).astype(np.float32)
  pred = np.argmax(np.asarray(models.apply_model(model, params, bs, x,
                                                 train=False)[0]), -1)
  # D_f = the first 10: wrong labels exactly on the sampled ones (0, 4, 9 =
  # linspace(0, 9, 3)), so the sample's UA is 100 and D_f's is 30.
  y = pred.copy()
  y[[0, 4, 9]] = (pred[[0, 4, 9]] + 1) % 10
  data = unlearn_lib.make_data(x, y, np.arange(10), np.arange(10, 30))
  state = unlearn_lib.UnlearnState(params, bs, None, None, 0, None)
  # The 'ra' clause reads a D_r sample (D_r's labels are the model's own
  # predictions: RA 100), and the rule without one is refused.
  for rule, want in (("ua>=0&ra>=100", True), ("ua>=0&ra<=99", False)):
    assert unlearn_lib.stop_check(model, UnlearnConfig(stop_when=rule),
                                  data, warm=state)(state, 0) is want
  with pytest.raises(ValueError, match="needs a D_r sample"):
    stopping.make_check(model, stopping.parse("ra>=50"))(
        params, bs, x[:3], y[:3])
  for sample, want in ((3, True), (1024, False)):
    monkeypatch.setattr(defaults, "STOP_SAMPLE", sample)
    check = unlearn_lib.stop_check(model, UnlearnConfig(stop_when="ua>=50"),
                                   data, warm=state)
    assert check(state, 0) is want
