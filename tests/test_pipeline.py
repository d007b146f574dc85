"""End to end on real data: train -> unlearn (OEU) -> evaluate, and reuse."""

import json

import pytest

from oeu_jax import cli
from oeu_jax import pipeline
from oeu_jax import train
from oeu_jax import unlearn

TINY = dict(
    dataset="digits", model="cnn", bits="w4a8", methods=("oeu",), seeds=(0,),
    train=train.TrainConfig(epochs=6, batch_size=64, lr=0.05),
    unlearn=unlearn.UnlearnConfig(epochs=3, batch_size=64, lr=0.02))


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("class")
  cfg = pipeline.RunConfig(scenario="class", forget_ratio=None,
                           forget_class=3, **TINY)
  return workdir, cfg, pipeline.run(cfg, workdir)


def test_records_have_the_documented_keys(class_run):
  _, _, records = class_run
  assert [r["method"] for r in records] == ["original", "retrain", "oeu"]
  for r in records:
    assert set(pipeline.RECORD_KEYS) <= set(r)
    for k in ("ua", "ra", "ta", "mia_efficacy"):
      assert 0.0 <= r[k] <= 100.0
    assert 0.0 <= r["forget_entropy"] <= 1.0
  by = {r["method"]: r for r in records}
  assert by["retrain"]["avg_gap"] == 0.0
  # Retrain never saw class 3: it cannot classify it.
  assert by["retrain"]["ua"] > 90.0


def test_oeu_forgets_by_uncertainty_and_keeps_retain_accuracy(class_run):
  _, _, records = class_run
  by = {r["method"]: r for r in records}
  orig, oeu = by["original"], by["oeu"]
  assert orig["ra"] > 90.0  # The tiny budget still learns digits.
  assert oeu["forget_entropy"] > orig["forget_entropy"] + 0.3
  assert oeu["ua"] > orig["ua"] + 30.0
  assert oeu["ra"] > orig["ra"] - 5.0
  assert oeu["avg_gap"] < orig["avg_gap"]


def test_second_run_reuses_original_and_retrain(class_run, monkeypatch):
  workdir, cfg, records = class_run

  def no_training(*args, **kwargs):
    raise AssertionError("Original/Retrain should come from checkpoints")

  monkeypatch.setattr(train, "make_train_step", no_training)
  monkeypatch.setattr(unlearn, "make_step", no_training)
  again = pipeline.run(cfg, workdir)
  for a, b in zip(records, again):
    for k in ("ua", "ra", "ta", "mia_efficacy", "rte_s"):
      assert a[k] == b[k], (a["method"], k)


def test_cli_run_writes_results_json(tmp_path, capsys):
  code = cli.main(["run", "--dataset", "digits", "--scenario", "random",
                   "--forget-ratio", "0.1", "--methods", "oeu", "--seeds",
                   "0", "--epochs", "2", "--unlearn-epochs", "1",
                   "--max-examples", "400", "--workdir", str(tmp_path),
                   "--no-progress"])
  assert code == 0
  out = capsys.readouterr().out
  assert "| oeu |" in out and "| retrain |" in out
  records = json.loads((tmp_path / "results.json").read_text())
  assert {r["method"] for r in records} == {"original", "retrain", "oeu"}
  assert all(r["scenario"] == "random" for r in records)


def test_cli_export_converts_every_run(class_run, capsys):
  workdir, _, _ = class_run
  assert cli.main(["export", "--workdir", str(workdir)]) == 0
  summary = json.loads((workdir / "serving" / "export.json").read_text())
  names = sorted(m["dest"].split("/")[-1] for m in summary["models"])
  assert names[0].startswith("oeu-class3") and names[1:] == [
      "original", "retrain-class3"]
  for m in summary["models"]:
    assert m["weight_dtype"] == "int4"
    assert m["serving_packed_bytes"] * 4 < m["float_bytes"]
  assert cli.main(["export", "--workdir", str(workdir / "missing")]) == 2
  assert "missing" in capsys.readouterr().err


def test_vmapped_seeds_match_sequential_runs_and_share_checkpoints(
    tmp_path, monkeypatch):
  argv = ["run", "--dataset", "digits", "--bits", "float", "--scenario",
          "random", "--forget-ratio", "0.1", "--methods", "oeu,rl",
          "--seeds", "0,1", "--epochs", "2", "--unlearn-epochs", "1",
          "--max-examples", "400", "--no-progress"]
  vdir, sdir = tmp_path / "vmapped", tmp_path / "sequential"
  assert cli.main(argv + ["--workdir", str(vdir), "--vmap-seeds"]) == 0
  assert cli.main(argv + ["--workdir", str(sdir)]) == 0
  vm = json.loads((vdir / "results.json").read_text())
  seq = json.loads((sdir / "results.json").read_text())
  assert [(r["method"], r["seed"]) for r in vm] == [
      (r["method"], r["seed"]) for r in seq]
  assert {r["seed"] for r in vm} == {0, 1}
  for a, b in zip(seq, vm):
    for k in ("ua", "ra", "ta", "forget_entropy"):
      # Float models agree to ~1e-6; at most one borderline example moves.
      assert b[k] == pytest.approx(a[k], abs=1.0), (a["method"], k)
  # The sequential loop reuses the vmapped run's checkpoints as they are.

  def no_training(*args, **kwargs):
    raise AssertionError("the vmapped checkpoints should be reused")

  monkeypatch.setattr(train, "make_train_step", no_training)
  monkeypatch.setattr(unlearn, "make_step", no_training)
  assert cli.main(argv + ["--workdir", str(vdir)]) == 0
  again = json.loads((vdir / "results.json").read_text())
  for a, b in zip(vm, again):
    for k in ("ua", "ra", "ta", "mia_efficacy", "rte_s"):
      assert a[k] == b[k], (a["method"], k)
