"""Tuning the stopping rule (experiments.tune --stop-when) and using it in
the table (experiments.table --stop-when tuned), on tiny digits."""

import functools
import json
import math
from pathlib import Path

import pytest

from experiments import protocol
from experiments import table
from experiments import tune
from oeu_jax.runner import pipeline

# Tuning unit: seed 100 forgets class 0 of 300 digits; RL's capped budget
# is then 1 epoch of 3 steps (one D_f and two D_r batches).
ARGV = ["--dataset", "digits", "--scenario", "class", "--methods", "rl",
        "--seeds", "100", "--max-examples", "300", "--train-epochs", "4",
        "--stop-every", "1"]
# ua>=0 holds at the first check (step 1 of 3); the normalized entropy
# never reaches 1, so that rule never stops the run.
RULES = "ua>=0,entropy>=1"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
  """One tiny tuning with stop candidates, and the pipeline runs it made."""
  work = tmp_path_factory.mktemp("tune-stop")
  out = work / "tuned.json"
  argv = ARGV + ["--workdir", str(work / "runs"), "--out", str(out)]
  mp = pytest.MonkeyPatch()
  mp.setattr(protocol, "grid", lambda m: [(0.02, {})])
  mp.setattr(tune, "tune_method", functools.partial(
      tune.tune_method, max_extensions=0, refine=False))
  calls = []
  real = pipeline.run
  mp.setattr(pipeline, "run", lambda *a, **k: (
      calls.append(a[0].unlearn.stop_when), real(*a, **k))[1])
  assert tune.main(argv + ["--stop-when", RULES]) == 0
  yield argv, out, calls, mp
  mp.undo()


def _stop(out):
  return json.loads(out.read_text())["digits"]["class"]["methods"]["rl"][
      "stop"]


def test_stop_candidates_are_scored_like_any_trial(tuned):
  _, out, calls, _ = tuned
  assert calls == [None, "ua>=0", "entropy>=1"]
  stop = _stop(out)
  assert stop["rules"] == ["ua>=0", "entropy>=1"] and stop["every"] == 1
  early, never = stop["candidates"]
  assert [u["stop_step"] for u in early["metrics"]] == [1]
  assert early["mean_steps"] == 1 and never["mean_steps"] == 3
  assert stop["base"]["mean_steps"] == 3
  assert [u["stop_step"] for u in never["metrics"]] == [None]
  for c in (early, never):
    assert c["rte_s"] is not None and c["rule"] in c["unlearn"]
    assert math.isfinite(c["gaps"][0])


def test_a_rule_that_worsens_the_score_is_not_picked(tuned):
  _, out, _, _ = tuned
  stop = _stop(out)
  early, never = stop["candidates"]
  # One step of RL barely forgets: far worse than the pick's whole budget.
  assert early["score"] > stop["base"]["score"] + protocol.STOP_TOL
  # The rule that never fires is the unstopped run (up to the rounding of
  # its one-step chunks; equal here): within the tolerance, and no saving.
  assert never["score"] == pytest.approx(stop["base"]["score"],
                                         abs=protocol.STOP_TOL)
  assert stop["pick"] is None


def test_an_early_rule_within_the_tolerance_is_picked_from_stored_trials(
    tuned, monkeypatch):
  argv, out, calls, _ = tuned
  calls.clear()
  # A tolerance wide enough for the one-step run: it stops earliest, so it
  # is picked; the rule that never fires saves nothing and is not.
  monkeypatch.setattr(protocol, "STOP_TOL", 1e3)
  assert tune.main(argv) == 0  # Rules and their trials from --out.
  assert calls == []  # Every trial reused: no pipeline run.
  assert _stop(out)["pick"] == "ua>=0"
  entry = json.loads(out.read_text())["digits"]["class"]
  assert "partial" not in entry and len(entry["methods"]["rl"]["trials"]) == 1


def test_report_shows_the_stop_pick(tuned, capsys):
  argv, out, _, _ = tuned
  assert tune.main(argv + ["--report"]) == 0
  rl = next(line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| rl"))
  assert rl.endswith(("| none (2 tried) |", "| ua>=0 (1 of 3 steps) |"))


def test_table_runs_each_method_under_its_tuned_rule(tuned, tmp_path):
  argv, out, _, _ = tuned
  entry = json.loads(out.read_text())["digits"]["class"]
  entry["methods"]["rl"]["stop"]["pick"] = "ua>=0"
  entry["methods"]["ga"] = {"pick": {"lr": 1e-4, "hparams": {},
                                     "epochs": 1},
                            "stop": {"every": 5, "pick": None}}
  entry["seeds"] = [7]  # So that unit 100's Original/Retrain are reused.
  path = tmp_path / "tuned.json"
  path.write_text(json.dumps({"digits": {"class": entry}}))
  assert table.stop_rules(entry, ["rl", "ga"], "tuned", None) == {
      "rl": ("ua>=0", 1), "ga": (None, 5)}
  assert table.stop_rules(entry, ["ga"], "ua>=90", None) == {
      "ga": ("ua>=90", 10)}
  with pytest.raises(ValueError, match="'ft' has no tuned stopping rule"):
    table.stop_rules(entry, ["rl", "ft"], "tuned", None)
  base = ["--dataset", "digits", "--scenario", "class", "--classes", "0",
          "--seeds", "100", "--tuned", str(path)]
  assert table.main(base + ["--methods", "rl,ft", "--stop-when",
                            "tuned"]) == 2
  work = Path(argv[argv.index("--workdir") + 1])  # Reuses Original/Retrain.
  assert table.main(base + ["--methods", "rl", "--stop-when", "tuned",
                            "--workdir", str(work)]) == 0
  rl = next(r for r in json.loads((work / "results.json").read_text())
            if r["method"] == "rl")
  assert rl["stop_step"] == 1  # Stopped by its tuned rule, checked each step.
  assert "rl ua>=0" in (work / "table.md").read_text()


def test_malformed_candidate_rules_answer_one_line(capsys):
  for bad in ("ua>=90,ua=95", "ua>=90,,ua>=95", "acc>=9"):
    assert tune.main(["--dataset", "digits", "--scenario", "class",
                      "--stop-when", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
  assert tune.main(["--dataset", "digits", "--scenario", "class",
                    "--stop-when", "ua>=9", "--stop-every", "0"]) == 2
  assert tune.rules_arg("ua >= 95, entropy>=0.90,ua>=95") == [
      "ua>=95", "entropy>=0.9"]
