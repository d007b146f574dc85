"""A run without budget flags: protocol picks, the cap and the auto rule."""

import dataclasses

import pytest

from oeu_jax import defaults
from oeu_jax.engine import budget
from oeu_jax.engine import train
from oeu_jax.engine import unlearn
from oeu_jax.evaluation import estimate
from oeu_jax.runner import budgets
from oeu_jax.runner import config
from oeu_jax.runner import pipeline

CFG = config.RunConfig(
    dataset="digits", scenario="class", forget_class=3, forget_ratio=None,
    methods=("oeu", "ft"), seeds=(0,), max_examples=400,
    train=train.TrainConfig(epochs=6, batch_size=64, lr=0.05))
# The protocol's budgets on a given base (batch 64: a few steps fit the cap
# of 400 images).
BASE64 = dataclasses.replace(CFG, budgets="protocol",
                             unlearn=unlearn.UnlearnConfig(batch_size=64))


def test_resolve_chooses_the_budgets():
  assert config.resolve(CFG).budgets == "protocol"
  assert config.resolve(CFG).unlearn == unlearn.UnlearnConfig()
  assert config.resolve(BASE64).unlearn.batch_size == 64
  given = config.resolve(dataclasses.replace(
      CFG, unlearn=unlearn.UnlearnConfig(epochs=2)))
  assert given.budgets == "given" and given.unlearn.epochs == 2
  harness = config.resolve(dataclasses.replace(CFG, budgets="harness"))
  assert harness.unlearn == config.default_unlearn("digits", "class")
  assert config.resolve(dataclasses.replace(CFG, stop_when="none")
                        ).stop_when is None
  for bad, match in ((dict(budgets="tuned"), "unknown budgets 'tuned'"),
                     (dict(budgets="given"), "needs an unlearn config"),
                     (dict(cost_cap=0.0), r"cost_cap must be in \(0, 1\]"),
                     (dict(cost_cap=True), r"cost_cap must be in \(0, 1\]"),
                     (dict(stop_when="ua>95"), "must read METRIC>=")):
    with pytest.raises(ValueError, match=match):
      config.resolve(dataclasses.replace(CFG, **bad))


def test_fill_gives_each_method_its_pick_under_the_cap():
  cfg = config.resolve(dataclasses.replace(CFG, methods=("oeu", "ft",
                                                         "scrub", "ssd")))
  nf, nr, n = 40, 280, 320
  filled = budgets.fill(cfg, num_forget=nf, num_retain=nr, num_train=n)
  per = dict(filled.config.method_unlearn)
  hps = {m: dict(v) for m, v in filled.config.method_hparams}
  cap = cfg.cost_cap * cfg.train.epochs * n
  for m in ("oeu", "ft", "scrub", "ssd"):
    lr, hp, _ = defaults.pick("digits", "class", m)
    if m != "ssd":
      assert per[m].lr == lr and hps.get(m, {}) == hp
    steps = unlearn.num_steps(nf, nr, per[m])
    assert budget.cost_of_steps(nf, nr, per[m], steps) <= cap or (
        per[m].max_steps == 1)
    assert per[m].stop_when == ("auto" if m in defaults.OPEN_ENDED
                                else None)
    assert "cap 0.15" in filled.sources[m]
  assert per["ssd"].epochs == 1
  # A sequential schedule is checked only where its epochs end.
  salun = budgets.fill(dataclasses.replace(cfg, methods=("salun",)),
                       num_forget=nf, num_retain=nr, num_train=n).config
  s_cfg = dict(salun.method_unlearn)["salun"]
  assert s_cfg.schedule == "sequential"
  assert s_cfg.stop_every == unlearn.steps_per_epoch(nf, nr, s_cfg)
  assert per["oeu"].stop_every == cfg.stop_every
  assert per["scrub"].forget_batch_size == 4  # 40 forgotten in 10 steps.
  assert per["oeu"].schedule == "paired" and per["ft"].schedule == (
      "retain_only")
  # The user's hyperparameters win over the pick's.
  mine = budgets.fill(dataclasses.replace(
      cfg, method_hparams=(("oeu", (("alpha", 0.25),)),)),
      num_forget=nf, num_retain=nr, num_train=n)
  assert dict(dict(mine.config.method_hparams)["oeu"])["alpha"] == 0.25
  # A given budget is left alone.
  given = config.resolve(dataclasses.replace(
      CFG, unlearn=unlearn.UnlearnConfig(epochs=1)))
  assert budgets.fill(given, num_forget=nf, num_retain=nr,
                      num_train=n).config is given


def test_a_default_run_records_estimates_stops_and_costs(tmp_path):
  records = pipeline.run(BASE64, tmp_path)
  by = {r["method"]: r for r in records}
  target = by["original"]["est_targets"]
  assert target["ua"] == 100.0 and target["mia_efficacy"] == 100.0
  for r in records:
    assert r["est_targets"] == target
    assert r["est_avg_gap"] == pytest.approx(
        estimate.estimated_gap(r, target))
  oeu, ft = by["oeu"], by["ft"]
  assert oeu["stop_rule"] == (
      f"ua>={100 - defaults.CLASS_SLACK:g}&conf<=0.1"
      f"&ra>={by['original']['ra'] - defaults.RA_SLACK:.6g}")
  assert ft["stop_rule"] is None and ft["stop_step"] is None
  for r in (oeu, ft):
    assert 0 < r["cost_fraction"] <= CFG.cost_cap + 1e-9
    assert "protocol pick digits/class" in r["defaults"]
    assert r["unlearn_steps"] >= 1
  if oeu["stop_step"] is not None:  # Stopped: it met the rule.
    assert oeu["ua"] >= 100 - defaults.CLASS_SLACK
    assert oeu["unlearn_steps"] == oeu["stop_step"]
  # --stop-when none: the same budget runs to its end (another directory).
  plain = pipeline.run(dataclasses.replace(BASE64, methods=("oeu",),
                                           stop_when=None), tmp_path)
  p = plain[-1]
  assert p["stop_rule"] is None and p["stop_step"] is None
  assert p["unlearn_steps"] >= oeu["unlearn_steps"]


def test_an_auto_run_is_named_by_what_auto_resolves_to(monkeypatch):
  from oeu_jax.engine import stopping
  from oeu_jax.runner import layout
  cfg = config.resolve(CFG)
  filled = budgets.fill(cfg, num_forget=40, num_retain=280,
                        num_train=320).config
  before = layout.Layout.of(filled, "/w").checkpoint_dir(0, "oeu")
  ft = layout.Layout.of(filled, "/w").checkpoint_dir(0, "ft")
  monkeypatch.setattr(stopping, "AUTO_RULE_ID", "another resolution")
  assert layout.Layout.of(filled, "/w").checkpoint_dir(0, "oeu") != before
  assert layout.Layout.of(filled, "/w").checkpoint_dir(0, "ft") == ft


def test_cost_lines_and_the_demo_reading():
  from oeu_jax.runner import costs
  recs = [dict(method="original", rte_s=10.0, avg_gap=50.0),
          dict(method="retrain", rte_s=20.0, avg_gap=0.0),
          dict(method="oeu", rte_s=2.0, avg_gap=0.3, cost_fraction=0.05,
               stop_step=5, stop_rule="ua>=99", est_avg_gap=0.25),
          dict(method="qmul", rte_s=4.0, avg_gap=0.5, cost_fraction=0.1,
               stop_step=None, stop_rule="ua>=99", est_avg_gap=0.4),
          dict(method="ft", rte_s=3.0, avg_gap=9.0, cost_fraction=0.15,
               stop_step=None, stop_rule=None, est_avg_gap=9.0)]
  lines = costs.cost_lines(recs).splitlines()
  assert lines[0] == ("- oeu: wall time 0.100 x Retrain's, 0.050 of the "
                      "Original's training cost; stopped by ua>=99 in 1 of "
                      "1 seed(s); estimated gap 0.25 (no Retrain needed)")
  assert "never met ua>=99 within its budget" in lines[1]
  assert "ran its whole budget" in lines[2] and len(lines) == 3
  story = costs.demo_story(recs, "qmul")
  assert "OEU ends 0.30 gap points" in story and "0.10 of Retrain" in story
  assert "qmul" in story and "ends 0.50 in 0.20" in story
