"""experiments.quant_study end to end on digits: float -> PTQ and QAT arms.

One method (RL), one seed, one class, the protocol's digits recipe: the
records carry every arm and bits, the integer-served model scores what the
evaluation scores, the integer-change shares are fractions, and a second
call reuses the records file instead of rerunning.
"""

import json

from experiments import quant_study


def test_quant_study_runs_and_resumes(tmp_path, capsys):
  records = tmp_path / "r.json"
  argv = ["--dataset", "digits", "--scenario", "class", "--classes", "3",
          "--seeds", "0", "--methods", "rl", "--quant", "w8a8,w4a4",
          "--workdir",
          str(tmp_path / "w"), "--records", str(records)]
  assert quant_study.main(argv) == 0
  recs = json.loads(records.read_text())
  arms = {(r["arm"], r["quant"]) for r in recs}
  assert arms == {("float", "float")} | {
      (a, q) for a in ("ptq", "qat", "integers") for q in ("w8a8", "w4a4")}
  ptq = [r for r in recs if r["arm"] == "ptq"]
  assert {r["method"] for r in ptq} == {"original", "retrain", "rl"}
  for r in ptq + [r for r in recs if r["arm"] == "qat"]:
    assert r["served_max_diff"] == 0.0, r  # Integer serving == evaluation.
  moved = {r["quant"]: r["int_changed"] for r in recs
           if r["arm"] == "integers"}
  assert all(0 < v < 1 for v in moved.values())
  assert moved["w8a8"] > moved["w4a4"]  # Coarser steps absorb more change.
  # Retrain never saw class 3; the Original predicts it.
  by = {(r["arm"], r["quant"], r["method"]): r for r in ptq + recs}
  assert by[("ptq", "w4a4", "retrain")]["ua"] == 100.0
  assert by[("ptq", "w4a4", "original")]["ua"] < 5.0
  md = (tmp_path / "r.md").read_text()
  assert "| rl |" in md and "PTQ w4a4" in md
  capsys.readouterr()
  assert quant_study.main(argv) == 0  # Reuses the records: nothing new.
  assert "rl: 0 new records" in capsys.readouterr().out


def test_quant_study_refuses_bad_input(capsys):
  assert quant_study.main(["--seeds", "a,b"]) == 2
  assert quant_study.main(["--methods", "oeu,bogus"]) == 2
  assert quant_study.main(["--seeds", "100"]) == 2  # A tuning seed.
  assert quant_study.main(["--quant", "w2a2"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 4 and all(e.startswith("error:") for e in err), err
