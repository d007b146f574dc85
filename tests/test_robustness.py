"""Issue 15: disk full, shared work directories, foreign checkpoints, budgets
of zero epochs and whole-run accounting across resumes.

One tiny run (digits, W4A8 CNN, 200 examples, one epoch of training and of
OEU, checkpoints every 2 steps) is shared by the tests that need trained
checkpoints; the others fake the pipeline or work on the files directly.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import pytest

from oeu_jax import cli
from oeu_jax.engine import checkpointing
from oeu_jax.engine import executors
from oeu_jax.engine import train
from oeu_jax.engine import unlearn
from oeu_jax.nn import models
from oeu_jax.runner import config
from oeu_jax.runner import layout
from oeu_jax.runner import pipeline
from oeu_jax.runner import report
from oeu_jax.runner import workdir as workdir_lib

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, JAX_PLATFORMS="cpu")

CFG = config.RunConfig(
    dataset="digits", model="cnn", bits="w4a8", methods=("oeu",), seeds=(0,),
    scenario="random", forget_ratio=0.1, max_examples=200,
    train=train.TrainConfig(epochs=1, batch_size=32, checkpoint_every=2),
    unlearn=unlearn.UnlearnConfig(epochs=1, batch_size=32, lr=0.02,
                                  checkpoint_every=2))


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
  """The tiny run, finished: (workdir, records)."""
  work = tmp_path_factory.mktemp("a")
  return work, pipeline.run(CFG, work)


def _one_error_line(err: str) -> str:
  """The only line of ``err`` that is not a progress or budget line."""
  assert "Traceback" not in err, err
  lines = [ln for ln in err.strip().splitlines()
           if not ln.startswith(("[seed", "[budget]"))]
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  return lines[0]


# 1. Disk full.

_DISK_FULL = textwrap.dedent("""
    import errno, json, sys
    from orbax.checkpoint._src.serialization import type_handlers
    real = type_handlers.NumpyHandler._open_and_write
    async def write(self, value, tspec, ts_context):
      # Step 4's save hits a full disk in orbax's writer threads.
      if "/4.orbax-checkpoint-tmp" in json.dumps(tspec):
        raise OSError(errno.ENOSPC, "No space left on device")
      return await real(self, value, tspec, ts_context)
    type_handlers.NumpyHandler._open_and_write = write
    from oeu_jax import cli
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_disk_full_exits_1_with_one_line_and_keeps_the_checkpoint(tmp_path):
  work = tmp_path / "w"
  proc = subprocess.run(
      [sys.executable, "-c", _DISK_FULL, "run", "--dataset", "digits",
       "--max-examples", "200", "--epochs", "2", "--batch-size", "32",
       "--checkpoint-every", "2", "--no-progress", "--workdir", str(work)],
      capture_output=True, text=True, env=ENV, timeout=600, check=False,
      cwd=REPO_ROOT)
  assert proc.returncode == 1, proc.stderr
  two = dataclasses.replace(CFG.train, epochs=2)
  ckpt = layout.Layout.of(config.resolve(dataclasses.replace(
      CFG, train=two)), work).checkpoint_dir(0, "original")
  assert _one_error_line(proc.stderr) == (
      f"error: Cannot save checkpoint step 4 in {ckpt}: No space left on "
      "device (ENOSPC); the last complete checkpoint, step 2, is kept.")
  assert checkpointing.available_steps(ckpt) == [2]
  # The last complete checkpoint restores into the training state.
  model = models.build_model("cnn", num_classes=10, bits="w4a8")
  cfg = train.TrainConfig(epochs=2, batch_size=32)
  template = train.init_state(model, jax.random.PRNGKey(0), (8, 8, 1),
                              train.make_optimizer(cfg, 12))
  assert int(checkpointing.restore_checkpoint(ckpt, template).step) == 2


# 2. Two configurations, two processes.


def _fake_run(cfg, workdir, **kwargs):
  """Records as pipeline.run writes them, without training."""
  del kwargs
  cfg = config.resolve(cfg)
  return [{"method": m, "seed": s, "config": workdir_lib.config_id(cfg),
           "dataset": cfg.dataset, "model": cfg.model, "bits": cfg.bits,
           "scenario": cfg.scenario, "forget_ratio": cfg.forget_ratio,
           "forget_class": cfg.forget_class, "ua": 1.0, "ra": 2.0, "ta": 3.0,
           "mia_efficacy": 4.0, "avg_gap": 0.0, "rte_s": 0.0,
           "forget_entropy": 0.5, "confident_wrong": 0.0}
          for s in cfg.seeds for m in ("original", "retrain", *cfg.methods)]


def test_other_configurations_are_merged_into_results_json(
    tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(pipeline, "run", _fake_run)
  argv = ["run", "--dataset", "digits", "--no-progress", "--workdir",
          str(tmp_path)]
  assert cli.main(argv + ["--bits", "w4a8", "--seeds", "0,1"]) == 0
  assert cli.main(argv + ["--bits", "w8a8"]) == 0
  assert cli.main(argv + ["--bits", "w4a8", "--seeds", "1"]) == 0  # A rerun.
  capsys.readouterr()
  records = json.loads((tmp_path / "results.json").read_text())
  keys = [(r["bits"], r["method"], r["seed"]) for r in records]
  assert keys == [("w4a8", m, s) for s in (0, 1)
                  for m in ("original", "retrain", "oeu")] + [
                      ("w8a8", m, 0) for m in ("original", "retrain", "oeu")]
  assert len({r["config"] for r in records}) == 2


def test_merge_keeps_legacy_records_unless_superseded():
  new = _fake_run(CFG, None)
  legacy = [dict(r) for r in new]
  for r in legacy:
    del r["config"]  # Written before records carried their configuration.
  other = dict(legacy[0], ua=99.0)  # Same description, another model.
  merged = workdir_lib.merge(legacy + [other], new)
  assert merged == [other] + new


def test_records_name_their_configuration(run_a):
  _, records = run_a
  cfg = config.resolve(CFG)
  for r in records:
    assert r["config"] == workdir_lib.config_id(cfg)
    assert (r["dataset"], r["model"], r["bits"], r["scenario"],
            r["forget_ratio"], r["forget_class"]) == (
                "digits", "cnn", "w4a8", "random", 0.1, None)


_HOLD = textwrap.dedent("""
    import sys, time
    from oeu_jax.runner import workdir
    with workdir.lock(sys.argv[1]):
      print("locked", flush=True)
      time.sleep(600)
""")


def test_a_second_run_in_the_same_workdir_is_refused(tmp_path, capsys):
  holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, env=ENV,
                            cwd=REPO_ROOT)
  try:
    assert holder.stdout.readline().strip() == "locked"
    status = cli.main(["run", "--dataset", "digits", "--no-progress",
                       "--workdir", str(tmp_path)])
    assert status == 1
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: {tmp_path} is in use by process {holder.pid} (lock file "
        f"{tmp_path}/.lock); wait for that run to finish or use another "
        "work directory")
    assert not (tmp_path / "checkpoints").exists()  # Refused at once.
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The dead holder's lock file (its pid still inside) is taken over.
  assert (tmp_path / ".lock").read_text().strip() == str(holder.pid)
  with workdir_lib.lock(tmp_path):
    with workdir_lib.lock(tmp_path):  # Re-entrant within a process.
      assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
  assert (tmp_path / ".lock").read_text() == ""


# 3. A checkpoint of another configuration.


def test_a_copied_checkpoint_of_another_configuration_is_refused(
    run_a, tmp_path):
  work, _ = run_a
  w4a8 = layout.Layout.of(config.resolve(CFG), work)
  w8a8_cfg = dataclasses.replace(CFG, bits="w8a8", methods=())
  w8a8 = layout.Layout.of(config.resolve(w8a8_cfg), tmp_path)
  src, dst = (lay.checkpoint_dir(0, "original") for lay in (w4a8, w8a8))
  want, have = (workdir_lib.run_label(lay, 0, "original")
                for lay in (w8a8, w4a8))
  # The whole folder: its identity file comes along.
  shutil.copytree(src, dst)
  with pytest.raises(checkpointing.CheckpointError, match=(
      f"{dst} holds checkpoints of configuration {have}, not {want}; "
      f"delete {dst} to retrain it")):
    pipeline.run(w8a8_cfg, tmp_path)
  # Only the step directory, into the folder of the w8a8 run.
  shutil.rmtree(dst)
  checkpointing.claim(dst, want)
  step = checkpointing.latest_step(src)
  shutil.copytree(src / str(step), dst / str(step))
  with pytest.raises(checkpointing.CheckpointError, match=(
      f"Checkpoint {dst}/{step} was written by configuration {have}, not "
      f"{want}")):
    pipeline.run(w8a8_cfg, tmp_path)


# 4. Zero epochs.


def test_zero_unlearning_epochs_are_no_unlearning(run_a):
  work, records = run_a
  none = dataclasses.replace(
      CFG, unlearn=dataclasses.replace(CFG.unlearn, epochs=0))
  again = pipeline.run(none, work)  # Original and Retrain are reused.
  by = {r["method"]: r for r in again}
  assert by["oeu"]["unlearn_epochs"] == 0
  for k in ("ua", "ra", "ta", "mia_efficacy", "forget_entropy"):
    assert by["oeu"][k] == by["original"][k], k
  table = report.format_table(again)
  assert "| oeu (no unlearning) |" in table
  assert "these rows are the Original model" in table
  assert "no unlearning" not in report.format_table(records)


def test_zero_training_epochs_need_allow_untrained():
  with pytest.raises(ValueError, match="train.epochs is 0.*allow_untrained"):
    config.resolve(dataclasses.replace(CFG, train=dataclasses.replace(
        CFG.train, epochs=0)))
  config.resolve(dataclasses.replace(
      CFG, train=dataclasses.replace(CFG.train, epochs=0),
      allow_untrained=True))


# 6. Time and metrics of a resumed run.


def test_a_resumed_run_reports_the_whole_run(run_a, tmp_path, monkeypatch):
  work, records = run_a
  oeu_dir = layout.Layout.of(config.resolve(CFG), tmp_path).checkpoint_dir(
      0, "oeu")
  shutil.copytree(work / "checkpoints", tmp_path / "checkpoints",
                  ignore=lambda d, names: [n for n in names
                                           if n == oeu_dir.name])
  # The interrupted part is slow (0.25 s a step) and stops after step 2.
  real_call = executors.StepExecutor.__call__
  real_save = checkpointing.save_checkpoint

  def slow(self, state, a, b, active):
    time.sleep(0.25 * (b - a))
    return real_call(self, state, a, b, active)

  def save_then_interrupt(*args, **kwargs):
    real_save(*args, **kwargs)
    raise KeyboardInterrupt

  with monkeypatch.context() as m:
    m.setattr(executors.StepExecutor, "__call__", slow)
    m.setattr(checkpointing, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
      pipeline.run(CFG, tmp_path)
  assert checkpointing.latest_step(oeu_dir) == 2
  resumed = pipeline.run(CFG, tmp_path, resume=True)
  (a,), (b,) = ([r for r in recs if r["method"] == "oeu"]
                for recs in (records, resumed))
  assert b["rte_s"] >= 0.5  # The two slow steps before the interruption.
  # Metric sums are stored at each checkpoint: the same means, bit for bit.
  assert b["train_metrics"] and b["train_metrics"] == a["train_metrics"]
  # A finished run reused later reports what it stored.
  (c,) = [r for r in pipeline.run(CFG, tmp_path) if r["method"] == "oeu"]
  assert c["train_metrics"] == b["train_metrics"]
  assert c["rte_s"] == b["rte_s"]
