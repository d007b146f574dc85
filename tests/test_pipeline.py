"""End to end on real data: train -> unlearn (OEU) -> evaluate, and reuse."""

import dataclasses
import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from oeu_jax import cli
from oeu_jax.engine import train
from oeu_jax.engine import unlearn
from oeu_jax.runner import args as args_lib
from oeu_jax.runner import config
from oeu_jax.runner import export
from oeu_jax.runner import layout
from oeu_jax.runner import pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_T10K = REPO_ROOT.parent / "shared" / "data" / "mnist-t10k"

TINY = dict(
    dataset="digits", model="cnn", bits="w4a8", methods=("oeu",), seeds=(0,),
    train=train.TrainConfig(epochs=6, batch_size=64, lr=0.05),
    unlearn=unlearn.UnlearnConfig(epochs=3, batch_size=64, lr=0.02))


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("class")
  cfg = config.RunConfig(scenario="class", forget_ratio=None,
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
  # A reused unlearning run reports the metrics it stored, not {}.
  assert again[2]["train_metrics"] and (
      again[2]["train_metrics"] == records[2]["train_metrics"])


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


def test_checkpoint_names_are_stable():
  # The demo's directories as the pipeline named them before the runner
  # package existed: existing work directories keep being reused (under the
  # harness budgets and the AQT backend the demo ran with before the
  # protocol defaults and the fake backend).
  classwise, random10 = (
      config.resolve(dataclasses.replace(c, budgets="harness",
                                         quant_backend="aqt"))
      for c in args_lib.demo_configs(0))
  for cfg, tag, oeu in ((classwise, "class3", "oeu-class3-8bce7ecad8"),
                        (random10, "random0.1", "oeu-random0.1-36de0971fb")):
    lay = layout.Layout.of(cfg, "/w")
    assert lay.run_dir == Path("/w/checkpoints/digits-cnn-w4a8-7c1a6aa4ae")
    assert [lay.checkpoint_dir(0, s).relative_to(lay.run_dir).as_posix()
            for s in ("original", "retrain", "oeu")] == [
                "seed0/original", f"seed0/retrain-{tag}", f"seed0/{oeu}"]
  # Checkpoint cadence is not part of a run's identity.
  more = dataclasses.replace(
      classwise, train=dataclasses.replace(classwise.train, checkpoint_every=7),
      unlearn=dataclasses.replace(classwise.unlearn, checkpoint_every=3))
  assert (layout.Layout.of(more, "/w").checkpoint_dir(0, "oeu")
          == layout.Layout.of(classwise, "/w").checkpoint_dir(0, "oeu"))


def test_default_budgets_have_one_home():
  assert config.default_train("digits") is config.TRAIN_DEFAULTS["digits"]
  assert config.default_train("no_such") == train.TrainConfig()
  assert config.default_unlearn("digits", "class").batch_size == 64
  assert config.default_unlearn("digits", "random") == unlearn.UnlearnConfig()
  budget = config.cpu_budget("mnist_idx")
  assert budget.max_examples == 4000 and budget.train.epochs == 8
  with pytest.raises(KeyError, match="no CPU budget"):
    config.cpu_budget("cifar10")
  with pytest.raises(ValueError, match="hyperparameters given for 'rl'"):
    config.resolve(config.RunConfig(method_hparams=(("rl", ()),)))


def _write_idx(folder: Path, n: int = 120) -> None:
  """A synthetic t10k pair of 28x28 images (when the real one is absent)."""
  rng = np.random.default_rng(0)
  labels = np.arange(n, dtype=np.uint8) % 10
  images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
  for name, magic, arr in (("t10k-images-idx3-ubyte", 2051, images),
                           ("t10k-labels-idx1-ubyte", 2049, labels)):
    header = struct.pack(f">{1 + arr.ndim}I", magic, *arr.shape)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{name}.gz", "wb") as f:
      f.write(header + arr.tobytes())


def test_export_of_a_28x28_cnn_records_its_input_shape(tmp_path):
  data_dir = MNIST_T10K
  if not (data_dir / "t10k-images-idx3-ubyte.gz").exists():
    data_dir = tmp_path / "idx"
    _write_idx(data_dir)
  cfg = config.RunConfig(
      dataset="mnist_idx", data_dir=str(data_dir), model="cnn", bits="w8a8",
      methods=(), max_examples=120,
      train=train.TrainConfig(epochs=1, batch_size=32))
  records = pipeline.run(cfg, tmp_path / "w")
  assert [r["method"] for r in records] == ["original", "retrain"]
  lay = layout.Layout.of(config.resolve(cfg), tmp_path / "w")
  spec = layout.read_model_json(lay.run_dir)
  assert spec["input_shape"] == (28, 28, 1) and spec["dataset"] == "mnist_idx"
  summary = export.export(tmp_path / "w", tmp_path / "serving")
  assert len(summary["models"]) == 2
  for m in summary["models"]:
    # The CNN pools after its first conv at 28x28: its fc1 alone would
    # suggest a 14x14 input.
    assert m["input_shape"] == [28, 28, 1]
    assert m["dataset"] == "mnist_idx" and m["argmax_equal"]
    assert m["architecture_from"] == str(lay.run_dir / layout.MODEL_JSON)


_COUNT_MESHES = textwrap.dedent("""
    import sys
    from oeu_jax import cli
    from oeu_jax.engine import train
    from oeu_jax.engine import unlearn
    seen = []
    def spy(fn):
      def wrapped(*args, **kwargs):
        seen.append(kwargs["mesh"].devices.size)
        return fn(*args, **kwargs)
      return wrapped
    train.fit, unlearn.unlearn = spy(train.fit), spy(unlearn.unlearn)
    code = cli.main(sys.argv[1:])
    print("meshes", seen)
    sys.exit(code)
""")


def test_devices_flag_runs_on_a_two_device_mesh(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  argv = [sys.executable, "-c", _COUNT_MESHES, "run", "--dataset", "digits",
          "--methods", "oeu", "--epochs", "1", "--unlearn-epochs", "1",
          "--max-examples", "200", "--no-progress", "--workdir",
          str(tmp_path / "w")]
  proc = subprocess.run(argv + ["--devices", "2"], capture_output=True,
                        text=True, env=env, timeout=600, check=False,
                        cwd=REPO_ROOT)
  assert proc.returncode == 0, proc.stderr
  # Original, Retrain and OEU, each on both devices.
  assert "meshes [2, 2, 2]" in proc.stdout
  records = json.loads((tmp_path / "w" / "results.json").read_text())
  assert [r["method"] for r in records] == ["original", "retrain", "oeu"]
  proc = subprocess.run(argv + ["--devices", "3"], capture_output=True,
                        text=True, env=env, timeout=600, check=False,
                        cwd=REPO_ROOT)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: --devices 3: asked for 3 devices, 2 available (cpu)"]


@pytest.mark.parametrize("n", ["0", "-1"])
def test_devices_flag_rejects_bad_counts(n, tmp_path, capsys):
  assert cli.main(["demo", "--devices", n, "--workdir", str(tmp_path)]) == 2
  assert capsys.readouterr().err.strip() == (
      f"error: --devices must be >= 1, got {n}")
