"""Report tables and plots, and an end-to-end two-method table on digits."""

import re

import numpy as np
import pytest

from experiments import run as run_lib
from oeu_jax.algorithm import methods
from oeu_jax.engine import train as train_lib
from oeu_jax.engine import unlearn as unlearn_lib
from oeu_jax.runner import config
from oeu_jax.runner import pipeline
from oeu_jax.runner import report


def _record(method, seed, ua, ra, ta, mia, rte=1.0, k=4):
  rng = np.random.default_rng(seed)
  return {"method": method, "seed": seed, "scenario": "random", "ua": ua,
          "ra": ra, "ta": ta, "mia_efficacy": mia, "rte_s": rte,
          "forget_entropy": 0.5, "confident_wrong": 10.0,
          "pred_hist_entropy": 0.9,
          "pred_hist": rng.integers(0, 20, k).tolist(),
          "entropy_hist": rng.integers(0, 5, 20).tolist()}


def _records():
  recs = []
  for seed, d in ((0, 0.0), (1, 2.0)):
    retrain = _record("retrain", seed, 10 + d, 100, 90 + d, 20 + d, 50.0)
    oeu = _record("oeu", seed, 8 + d, 99, 89 + d, 17 + d)
    orig = _record("original", seed, 0, 100, 91, 2, 60.0)
    for r in (retrain, oeu, orig):
      r["avg_gap"] = float(np.mean([abs(r[k] - retrain[k]) for k in
                                    ("ua", "ra", "ta", "mia_efficacy")]))
    recs += [orig, retrain, oeu]
  return recs


def test_salun_table_layout_and_gaps():
  table = report.salun_table(_records())
  lines = table.splitlines()
  assert lines[0] == ("| Method | UA | RA | TA | MIA-Efficacy | Avg. Gap | "
                      "RTE (s) |")
  assert re.fullmatch(r"(\|---)+\|", lines[1])
  assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["retrain", "oeu"]
  # Retrain: mean ± std, no gaps; UA 10 and 12 -> 11.00 ± 1.00.
  assert "| retrain | 11.00 ± 1.00 | 100.00 ± 0.00 |" in lines[2]
  assert "(" not in lines[2]
  # OEU: gaps to Retrain's means in parentheses.
  cells = [c.strip() for c in lines[3].split("|")[2:-1]]
  assert cells[0] == "9.00 ± 1.00 (2.00)"
  assert cells[1] == "99.00 ± 0.00 (1.00)"
  assert cells[2] == "90.00 ± 1.00 (1.00)"
  assert cells[3] == "18.00 ± 1.00 (3.00)"
  assert cells[4] == "1.75 ± 0.00"  # per-seed avg gap (2+1+1+3)/4
  assert cells[5] == "1.00 ± 0.00"
  with_orig = report.salun_table(_records(), include_original=True)
  assert "| original |" in with_orig
  only = report.salun_table(_records(), methods=["oeu"])
  assert len(only.splitlines()) == 3 and "(" not in only.splitlines()[-1]
  with pytest.raises(KeyError):
    report.salun_table(_records(), methods=["ga"])


def test_single_seed_has_no_std():
  recs = [r for r in _records() if r["seed"] == 0]
  line = report.salun_table(recs).splitlines()[-1]
  assert "±" not in line and "8.00 (2.00)" in line


def test_variant_and_diagnostics_tables():
  recs = []
  for bits in ("w8a8", "w4a8"):
    for r in _records():
      recs.append(dict(r, variant=bits))
  vt = report.variant_table(recs).splitlines()
  assert vt[0] == "| Method | w8a8 | w4a8 |"
  assert vt[2].startswith("| retrain |") and vt[3].startswith("| oeu |")
  dt = report.diagnostics_table(_records())
  assert "| oeu | 0.500 ± 0.000 | 10.000 ± 0.000 | 0.900 ± 0.000 |" in dt


def test_write_report_writes_table_and_pngs(tmp_path):
  recs = _records()
  recs[0]["forget_class_ta"] = 50.0
  paths = report.write_report(recs, tmp_path / "out", title="t")
  text = paths["table"].read_text()
  assert text.startswith("# t") and "| oeu |" in text
  assert "Forgetting by uncertainty" in text
  for key in ("entropy_hist", "pred_hist"):
    png = paths[key]
    assert png is not None and png.exists()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # Records without histograms: table only.
  bare = [{k: v for k, v in r.items() if k not in ("entropy_hist",
                                                   "pred_hist")}
          for r in recs]
  paths = report.write_report(bare, tmp_path / "bare")
  assert paths["entropy_hist"] is None and paths["pred_hist"] is None


def test_two_method_table_end_to_end_on_digits(tmp_path):
  """pipeline.run -> records -> SalUn table + plots, with a tiny budget."""
  cfg = config.RunConfig(
      dataset="digits", model="cnn", bits="w4a8",
      model_kwargs=(("features", (8, 16)), ("hidden", 32)),
      scenario="random", forget_ratio=0.1, methods=("oeu", "qmul"),
      seeds=(0,), train=train_lib.TrainConfig(epochs=3, batch_size=64,
                                              lr=0.05),
      unlearn=unlearn_lib.UnlearnConfig(epochs=1, batch_size=64, lr=0.01),
      # 575 = 8 x 64 + 63: the Original and Retrain (D_r: 517 images) both
      # take 8 steps an epoch, so Retrain reuses the compiled step.
      max_examples=575)
  records = pipeline.run(cfg, tmp_path)
  assert [r["method"] for r in records] == ["original", "retrain", "oeu",
                                            "qmul"]
  for r in records:
    for k in ("ua", "ra", "ta", "mia_efficacy", "avg_gap", "rte_s"):
      assert np.isfinite(r[k])
  paths = report.write_report(records, tmp_path / "report")
  table = paths["table"].read_text()
  rows = [ln for ln in table.splitlines() if ln.startswith("| ")]
  assert [ln.split("|")[1].strip() for ln in rows[:4]] == [
      "Method", "retrain", "oeu", "qmul"]
  assert re.search(r"\| oeu \| [\d.]+ \([\d.]+\) \|", table)
  if "entropy_hist" in records[0]:
    assert paths["entropy_hist"].exists()
  assert paths["pred_hist"].exists()
  # OEU pushes D_f toward uncertainty: its mean normalized entropy on D_f
  # is above the Original model's.
  by = {r["method"]: r for r in records}
  assert by["oeu"]["forget_entropy"] > by["original"]["forget_entropy"]
  assert by["qmul"]["train_metrics"]["w_f"] > 0


def test_runner_rejects_unknown_names(capsys):
  assert run_lib.main(["no_such_experiment", "--workdir", "/nonexistent"]) \
      == 2
  assert "valid" in capsys.readouterr().err
  with pytest.raises(ValueError, match="variants"):
    run_lib.run_experiment("digits_random", "/nonexistent", quick=True,
                           variants=["nope"])
  cfgs = run_lib.load_configs("bits_sweep", quick=True)
  assert list(cfgs) == ["float", "w8a8", "w4a8", "w4a4"]
  for cfg in cfgs.values():
    config.resolve(cfg)
    assert set(cfg.methods) <= set(methods.METHODS)
