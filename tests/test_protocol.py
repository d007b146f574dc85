"""The comparison protocol: compute cap, search space, tuner, flagged rows.

The tuner runs on real digits at a tiny budget (300 images, 4 training
epochs, class-wise forgetting of class 0 on tuning seed 100).
"""

import dataclasses
import functools
import json
import math

import numpy as np
import pytest

from experiments import protocol
from experiments import table
from experiments import tune
from oeu_jax import data
from oeu_jax.algorithm import methods
from oeu_jax.engine import unlearn
from oeu_jax.runner import config as config_lib
from oeu_jax.runner import pipeline
from oeu_jax.runner import workdir as workdir_lib


def test_cost_per_epoch_counts_each_schedule():
  base = unlearn.UnlearnConfig(batch_size=10)
  seq = unlearn.resolve(base, methods.build_method("rl", None))
  assert protocol.cost_per_epoch(25, 100, seq) == 30 + 100  # wraps to 3x10
  ga = unlearn.resolve(base, methods.build_method("ga", None))
  assert protocol.cost_per_epoch(25, 100, ga) == 30
  ft = unlearn.resolve(base, methods.build_method("ft", None))
  assert protocol.cost_per_epoch(25, 100, ft) == 100
  oeu = unlearn.resolve(base, methods.build_method("oeu", None))
  assert protocol.cost_per_epoch(25, 100, oeu) == 10 * (10 + 10)


def test_capped_epochs_stay_under_the_cap():
  for name in ("rl", "ga", "ft", "oeu", "scrub", "qmul"):
    m = methods.build_method(name, None)
    cfg = protocol.unlearn_config(m, 180, 1250, base=protocol.BASE, lr=0.01,
                                  train_epochs=30)
    cost = sum(protocol.cost_per_epoch(180, 1250, cfg, e)
               for e in range(cfg.epochs))
    assert cfg.epochs >= 1
    assert cost <= protocol.CAP * 30 * 1250 or cfg.epochs == 1
    more = sum(protocol.cost_per_epoch(180, 1250, cfg, e)
               for e in range(cfg.epochs + 1))
    assert more > protocol.CAP * 30 * 1250  # As many epochs as fit.


def test_scrub_forget_batch_gives_its_reference_steps_per_epoch():
  scrub = methods.build_method("scrub", None)
  cfg = protocol.unlearn_config(scrub, 145, 1250, base=protocol.BASE,
                                lr=5e-4, train_epochs=30)
  assert cfg.forget_batch_size == 15  # ceil(145 / 10): 10 max steps.
  assert unlearn.epoch_plan(145, 1250, cfg, 0)[0] == (unlearn.FORGET, 10)
  rl = protocol.unlearn_config(methods.build_method("rl", None), 145, 1250,
                               base=protocol.BASE, lr=0.01, train_epochs=30)
  assert rl.forget_batch_size is None  # Others keep the shared batch.


def test_grid_spans_a_decade_and_a_half_around_the_reference():
  for name, ref in protocol.REFERENCE_LR.items():
    lrs = sorted({lr for lr, _ in protocol.grid(name)})
    assert math.log10(lrs[-1] / lrs[0]) == pytest.approx(1.5, abs=0.01)
    assert lrs[0] < ref < lrs[-1]
  assert {tuple(kv.items()) for _, kv in protocol.grid("salun")} == {
      (("sparsity", 0.5),), (("sparsity", 0.3),)}


def _t(lr, score):
  return {"lr": lr, "score": score}


def test_extension_brackets_the_pick_by_half_decades():
  base = [0.001, 0.01, 0.1]
  inside = [_t(0.001, 5.0), _t(0.01, 1.0), _t(0.1, 3.0)]
  assert protocol.extension(inside, base) is None
  top = [_t(0.001, 5.0), _t(0.01, 3.0), _t(0.1, 1.0)]
  assert protocol.extension(top, base) == pytest.approx(0.316)
  assert protocol.extension(top + [_t(0.316, 0.5)], base) == 1.0
  # At most two steps beyond the base grid.
  assert protocol.extension(top + [_t(0.316, 0.5), _t(1.0, 0.2)],
                            base) is None
  # The new point lost: bracketed.
  assert protocol.extension(top + [_t(0.316, 2.0)], base) is None
  bottom = [_t(0.001, 1.0), _t(0.01, 3.0), _t(0.1, 5.0)]
  assert protocol.extension(bottom, base) == pytest.approx(0.000316)
  # Flat criterion: nothing moved, so the grid grows upward.
  flat = [_t(0.001, 50.04), _t(0.01, 50.04), _t(0.1, 50.03)]
  assert protocol.extension(flat, base) == pytest.approx(0.316)
  # Everything diverged: downward; a diverged top is not a pick.
  dead = [_t(lr, math.inf) for lr in base]
  assert protocol.extension(dead, base) == pytest.approx(0.000316)
  edge = [_t(0.001, 5.0), _t(0.01, 1.0), _t(0.1, math.inf)]
  assert protocol.extension(edge, base) is None


def test_refinement_probes_the_log_midpoints_around_the_pick():
  trials = [_t(0.001, 5.0), _t(0.01, 1.0), _t(0.1, math.inf)]
  assert protocol.refinement(trials, trials[1]) == [
      pytest.approx(0.00316), pytest.approx(0.0316)]
  assert protocol.refinement(trials, trials[0]) == [pytest.approx(0.00316)]
  # The neighbours are the nearest tried rates, refinements included.
  done = trials + [_t(0.00316, 2.0)]
  assert protocol.refinement(done, trials[1]) == [
      pytest.approx(0.00562), pytest.approx(0.0316)]


def test_tuning_and_table_seeds_are_disjoint():
  assert not set(protocol.TUNING_SEEDS) & set(protocol.TABLE_SEEDS)
  assert len(protocol.TABLE_SEEDS) >= 5
  assert tune.main(["--dataset", "digits", "--scenario", "class",
                    "--seeds", "0,100"]) == 2


@pytest.fixture(scope="module")
def tiny_tuner(tmp_path_factory):
  work = tmp_path_factory.mktemp("tune")
  args = tune.build_parser().parse_args([
      "--dataset", "digits", "--scenario", "class", "--max-examples", "300",
      "--train-epochs", "4", "--workdir", str(work)])
  ds = data.load_dataset("digits", max_examples=300)
  args.num_classes = ds.num_classes
  train = dataclasses.replace(config_lib.default_train("digits"), epochs=4)
  units = tune.units(ds, "class", (100,), 0.1)
  return args, units, train


def test_tuner_picks_the_better_of_two_learning_rates(tiny_tuner,
                                                      monkeypatch):
  args, units, train = tiny_tuner
  # 1e-7 leaves the Original as it is (UA 0 against Retrain's 100); 0.02
  # forgets the class and keeps RA within the working range.
  monkeypatch.setattr(protocol, "grid", lambda m: [(1e-7, {}), (0.02, {})])
  res = tune.tune_method(args, "rl", units, train, {}, max_extensions=0,
                         refine=False)
  lo, hi = res["trials"]
  assert lo["score"] > hi["score"] + 5
  assert res["pick"]["lr"] == 0.02
  assert not lo["diverged"] and not hi["diverged"]
  # Per-unit metrics are recorded and both settings keep RA in range.
  assert not lo["out_of_range"] and not hi["out_of_range"]
  assert hi["metrics"][0]["ra"] >= hi["metrics"][0]["retrain_ra"] - 10


def test_a_setting_out_of_the_working_range_is_rejected(tiny_tuner,
                                                       monkeypatch):
  args, units, train = tiny_tuner
  # 0.05 forgets the class (gap ~8) but wrecks RA: rejected, not picked
  # over 1e-7 (gap ~51), which keeps the network intact.
  monkeypatch.setattr(protocol, "grid", lambda m: [(1e-7, {}), (0.05, {})])
  res = tune.tune_method(args, "rl", units, train, {}, max_extensions=0,
                         refine=False)
  lo, hi = res["trials"]
  (m,) = hi["metrics"]
  assert m["ra"] < m["retrain_ra"] - protocol.RA_DROP
  assert hi["out_of_range"] and hi["score"] == math.inf
  assert not hi["diverged"] and hi["gaps"][0] < lo["score"]
  assert res["pick"]["lr"] == 1e-7


def test_unchecked_candidates_are_rerun_in_score_order():
  a = {"lr": 1, "score": 1.0}
  b = {"lr": 2, "score": 2.0}
  c = {"lr": 3, "score": 3.0, "metrics": []}
  trials, calls = [a, b, c], []

  def run_again(t):
    calls.append(t["lr"])
    out = t["lr"] == 1  # The best stored setting turns out collapsed.
    return dict(t, metrics=[], out_of_range=out,
                score=math.inf if out else t["score"])

  best = tune._checked_best(trials, run_again)
  assert calls == [1, 2] and best["lr"] == 2 and "metrics" in best
  assert trials[0]["score"] == math.inf and trials[2] is c
  assert tune._checked_best(trials, run_again) is best and calls == [1, 2]


def test_working_range_is_relative_to_retrain():
  assert protocol.in_working_range(90.0, 100.0)
  assert not protocol.in_working_range(89.0, 99.5)
  assert protocol.in_working_range(71.0, 80.0)
  assert not protocol.in_working_range(50.0, 99.0, drop=20.0)


def test_a_diverging_setting_is_rejected_and_flagged(tiny_tuner,
                                                    monkeypatch):
  args, units, train = tiny_tuner
  monkeypatch.setattr(protocol, "grid", lambda m: [(1e12, {}), (1e-4, {})])
  res = tune.tune_method(args, "ga", units, train, {}, max_extensions=0,
                         refine=False)
  bad, good = res["trials"]
  assert bad["diverged"] and bad["score"] == math.inf
  assert res["pick"]["lr"] == 1e-4


def _rec(method, seed, gap_shift, skipped=0):
  return {"method": method, "seed": seed, "forget_class": 0,
          "ua": 90.0 + gap_shift, "ra": 99.0, "ta": 95.0,
          "mia_efficacy": 80.0 + gap_shift, "rte_s": 1.0,
          "train_metrics": {"skipped_steps": skipped} if skipped else {}}


def test_table_flags_skipped_rows_and_marks_significance():
  recs = []
  for s in range(5):
    recs.append(_rec("retrain", s, 0.0))
    recs.append(_rec("oeu", s, 1.0 + 0.01 * s))
    recs.append(_rec("rl", s, 8.0 + 0.3 * s, skipped=3 if s == 0 else 0))
  md = table.markdown(recs, title="t")
  rows = {line.split("|")[1].strip(): line for line in md.splitlines()
          if line.startswith("| ") and "method" not in line}
  cells = [c.strip() for c in rows["rl (best baseline)"].split("|")]
  assert cells[-3:-1] == ["1", "0"]  # flagged, collapsed
  assert "oeu *" in rows  # Clearly better over 5 paired units.
  assert "significant at 0.05" in md
  # Identical methods: not significant.
  same = [r for r in recs if r["method"] != "rl"] + [
      dict(r, method="rl") for r in recs if r["method"] == "oeu"]
  assert "oeu ≈" in table.markdown(same, title="t")


def test_variants_section_tests_each_variant_against_best_and_oeu():
  diag = {"forget_entropy": 0.5, "confident_wrong": 10.0,
          "pred_hist_entropy": 0.25}
  recs = []
  for s in range(5):
    recs.append(dict(_rec("retrain", s, 0.0), **diag))
    recs.append(dict(_rec("oeu", s, 1.0 + 0.01 * s), **diag))
    recs.append(dict(_rec("rl", s, 8.0 + 0.3 * s), **diag))
    recs.append(dict(_rec("oeu_ema", s, 1.0 + 0.01 * s), **diag))
    recs.append(dict(_rec("oeu_renorm", s, 20.0 + s), **diag))
  assert table.variants_markdown([r for r in recs if r["method"] not in (
      "oeu_ema", "oeu_renorm")]) == ""  # OEU alone: no section.
  md = table.variants_markdown(recs)
  rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")]
          for line in md.splitlines()[2:]}
  assert "vs best baseline (rl)" in md
  # UA and MIA shifted: per-unit gaps (1+0.01s)/2 vs (8+0.3s)/2, so a mean
  # difference of -(7 + 0.29 * 2)/2.
  assert rows["oeu"][3].startswith("-3.79 [") and rows["oeu"][3].endswith(
      "*")
  assert rows["oeu"][4] == "-"
  assert rows["oeu_ema"][4].startswith("+0.00") and rows["oeu_ema"][
      4].endswith("≈")  # Identical to OEU: no difference.
  assert rows["oeu_renorm"][3].startswith("+") and rows["oeu_renorm"][
      3].endswith("*")  # Clearly worse than the best baseline.
  assert rows["rl"][3] == rows["rl"][4] == "-"
  assert rows["retrain"][5:8] == ["0.50", "10.00", "0.25"]


def test_table_counts_units_out_of_the_working_range():
  recs = [_rec(m, s, 0.0) for s in range(3) for m in ("retrain", "ft")]
  recs[1] = dict(recs[1], ra=50.0)  # ft, seed 0: collapsed.
  md = table.markdown(recs, title="t")
  ft = next(line for line in md.splitlines() if line.startswith("| ft"))
  assert [c.strip() for c in ft.split("|")][-2] == "1"
  assert table.collapsed([dict(r, ra=89.5) for r in recs[1::2]],
                         recs[0::2]) == 0  # 99 - 10 = 89 <= 89.5


def test_table_reports_stopped_units_only_under_a_rule():
  recs = [_rec(m, s, g) for s in range(4) for m, g in (("retrain", 0.0),
                                                          ("rl", 5.0))]
  recs += [dict(_rec("oeu", s, 1.0), stop_step=10 * (s + 1) if s < 3
                else None) for s in range(4)]
  md = table.markdown(recs, title="t")
  oeu = next(line for line in md.splitlines() if line.startswith("| oeu"))
  assert oeu.rstrip(" |").endswith("3/4, 20")  # Median of 10, 20, 30.
  plain = [dict(r, stop_step=None) for r in recs]
  assert "stopped" not in table.markdown(plain, title="t")


def test_table_passes_the_stopping_rule_to_every_method(tiny_tuner):
  args, units, train = tiny_tuner
  entry = {"methods": {"ga": {"pick": {"lr": 1e-3, "hparams": {},
                                       "epochs": 2}}}}
  seed, fc, split = units[0]
  cfg = table.method_config(
      entry, "ga", dataset="digits", scenario="class", forget_class=fc,
      forget_ratio=None, seeds=[0], data_dir=None, model="cnn",
      bits="w4a8", train=train, max_examples=300,
      num_forget=len(split.forget_idx), num_retain=len(split.retain_idx),
      stop_when="ua>=90", stop_every=3)
  assert (cfg.unlearn.stop_when, cfg.unlearn.stop_every) == ("ua>=90", 3)
  assert table.main(["--dataset", "digits", "--scenario", "class",
                     "--stop-when", "ua=1"]) == 2
  # Through the pipeline: a rule met at the first check ends the run
  # there, and the record says so.
  cfg = tune.trial_config(args, "ga", seed, fc, split, 1e-3, {}, train)
  cfg = dataclasses.replace(cfg, unlearn=dataclasses.replace(
      cfg.unlearn, stop_when="ua>=0", stop_every=2))
  recs = pipeline.run(cfg, args.workdir, resume=True, log=lambda *_: None)
  assert next(r for r in recs if r["method"] == "ga")["stop_step"] == 2


def test_table_records_file_reuses_finished_runs(tiny_tuner, tmp_path,
                                                monkeypatch):
  """A records file carries a table across sessions: runs already in it
  under the same configuration are reused, not rerun."""
  args, _, train = tiny_tuner
  # Tuning unit 100's Original and Retrain are in the tuner's workdir; a
  # table on "seed 100" reuses them (the entry says it was tuned on 7).
  entry = {"seeds": [7], "model": "cnn", "bits": "w4a8",
           "train": dataclasses.asdict(train), "forget_ratio": None,
           "max_examples": 300,
           "methods": {"ga": {"pick": {"lr": 1e-4, "hparams": {},
                                       "epochs": 1}}}}
  tuned = tmp_path / "tuned.json"
  tuned.write_text(json.dumps({"digits": {"class": entry}}))
  records = tmp_path / "records.json"
  argv = ["--dataset", "digits", "--scenario", "class", "--classes", "0",
          "--seeds", "100", "--methods", "ga", "--tuned", str(tuned),
          "--workdir", args.workdir, "--records", str(records)]
  assert table.main(argv) == 0
  kept = json.loads(records.read_text())
  assert sorted(r["method"] for r in kept) == ["ga", "original", "retrain"]
  calls = []
  real = pipeline.run
  monkeypatch.setattr(pipeline, "run", lambda *a, **k: (
      calls.append(a[0].unlearn.lr), real(*a, **k))[1])
  assert table.main(argv) == 0 and calls == []  # Reused, not rerun.
  records.write_text("[1, 2]")
  assert table.main(argv) == 2


def test_stored_records_must_match_the_configuration():
  train = dataclasses.replace(config_lib.default_train("digits"), epochs=2)
  cfg = config_lib.resolve(config_lib.RunConfig(
      dataset="digits", scenario="class", forget_class=0, methods=("ga",),
      seeds=(0, 1), train=train))
  cid = workdir_lib.config_id(cfg)
  recs = [{"method": m, "seed": s, "config": cid, "forget_class": 0}
          for m in ("original", "retrain", "ga") for s in (0, 1)]
  assert len(table.stored(recs, cfg)) == 6
  assert table.stored(recs[:-1], cfg) is None  # A seed is missing.
  other = dataclasses.replace(cfg, unlearn=dataclasses.replace(
      cfg.unlearn, lr=cfg.unlearn.lr * 2))
  assert table.stored(recs, other) is None  # Another pick: rerun.
  assert table.stored(recs, dataclasses.replace(cfg, forget_class=1)) is None


def test_a_diverging_table_run_is_reported_not_raised(tiny_tuner):
  args, units, train = tiny_tuner
  seed, fc, split = units[0]
  cfg = tune.trial_config(args, "ga", seed, fc, split, 1e12, {}, train)
  cfg = dataclasses.replace(cfg, unlearn=dataclasses.replace(
      cfg.unlearn, skip_nonfinite=True))
  recs = pipeline.run(cfg, args.workdir, resume=True, log=lambda *_: None)
  ga = next(r for r in recs if r["method"] == "ga")
  assert ga["train_metrics"]["skipped_steps"] >= 1
  assert all(np.isfinite(ga[k]) for k in ("ua", "ra", "ta", "mia_efficacy"))


def test_merge_combines_scenarios_tuned_in_parallel(tmp_path):
  a, b, out = (tmp_path / n for n in ("a.json", "b.json", "out.json"))
  a.write_text('{"digits": {"class": {"x": 1}}}')
  b.write_text('{"digits": {"random": {"x": 2}}, "mnist_idx": {"class": {}}}')
  out.write_text('{"digits": {"class": {"x": 0}, "random": {"x": 0}}}')
  assert tune.main(["--merge", str(a), str(b), "--out", str(out)]) == 0
  import json
  assert json.loads(out.read_text()) == {
      "digits": {"class": {"x": 1}, "random": {"x": 2}},
      "mnist_idx": {"class": {}}}
  assert tune.main(["--merge", str(tmp_path / "none.json"),
                    "--out", str(out)]) == 2
  with pytest.raises(SystemExit):
    tune.main(["--scenario", "class"])


def test_a_stored_trial_of_another_config_is_rerun(tiny_tuner, monkeypatch):
  args, units, train = tiny_tuner
  monkeypatch.setattr(protocol, "grid", lambda m: [(1e-7, {})])
  key = tune.json.dumps([1e-7, {}], sort_keys=True)
  stale = {"lr": 1e-7, "hparams": {}, "epochs": 1, "gaps": [0.0],
           "score": 0.0, "diverged": False, "unlearn": "UnlearnConfig(old)"}
  res = tune.tune_method(args, "rl", units, train, {key: dict(stale)},
                         max_extensions=0, refine=False)
  fresh, = res["trials"]
  assert fresh["score"] > 5  # Recomputed: 1e-7 leaves the Original as is.
  assert fresh["unlearn"].startswith("UnlearnConfig(epochs=")
  # The same config again is reused as stored.
  kept = dict(fresh, score=-1.0)
  again = tune.tune_method(args, "rl", units, train, {key: kept},
                           max_extensions=0, refine=False)
  assert again["trials"][0]["score"] == -1.0


def test_an_interrupted_tuning_resumes_from_its_saved_trials(
    tiny_tuner, monkeypatch, tmp_path):
  """Each trial is saved as it lands (``partial``), so a tuning killed
  mid-grid resumes in a later session without rerunning finished trials."""
  args, _, _ = tiny_tuner
  out = tmp_path / "tuned.json"
  argv = ["--dataset", "digits", "--scenario", "class", "--methods", "rl",
          "--seeds", "100", "--max-examples", "300", "--train-epochs", "4",
          "--workdir", args.workdir, "--out", str(out)]
  monkeypatch.setattr(protocol, "grid", lambda m: [(1e-7, {}), (0.02, {})])
  monkeypatch.setattr(tune, "tune_method", functools.partial(
      tune.tune_method, max_extensions=0, refine=False))
  real = tune._trial
  calls = []

  def dies_on_second(*a, **k):
    calls.append(a[4])
    if len(calls) == 2:
      raise KeyboardInterrupt
    return real(*a, **k)

  monkeypatch.setattr(tune, "_trial", dies_on_second)
  with pytest.raises(KeyboardInterrupt):
    tune.main(argv)
  saved = json.loads(out.read_text())["digits"]["class"]
  assert [t["lr"] for t in saved["partial"]["rl"]] == [1e-7]
  assert "methods" not in saved
  calls.clear()
  monkeypatch.setattr(tune, "_trial", lambda *a, **k: (
      calls.append(a[4]), real(*a, **k))[1])
  assert tune.main(argv) == 0
  done = json.loads(out.read_text())["digits"]["class"]
  assert 1e-7 not in calls and 0.02 in calls  # Only unfinished trials ran.
  assert "partial" not in done
  assert done["methods"]["rl"]["pick"]["lr"] == 0.02
