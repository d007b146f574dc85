"""SIGKILL at an arbitrary step, resume, and get the same bits (CPU).

A real subprocess trains a tiny quantized (W4A8) CNN on digits, then runs
OEU from it, checkpointing every few steps. One process runs uninterrupted;
another is killed with SIGKILL as soon as its first training checkpoint
appears, restarted and killed again as soon as its first unlearning
checkpoint appears, then restarted to the end. Every leaf of the final
training and unlearning states (parameters, optimizer and method state, step,
rng) must equal the uninterrupted run's, bit for bit.

In-process tests then cover what a resume must refuse: an unfinished run
without ``resume=True``, a checkpoint past the run's end, one of another
model, and a corrupt one (each naming the path), while a save killed half-way
is ignored.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from oeu_jax import data
from oeu_jax.engine import checkpointing
from oeu_jax.engine import train
from oeu_jax.nn import models

TRAIN_STEPS = 30  # 240 examples, batch 16, 2 epochs.
UNLEARN_STEPS = 24  # max(48/16, 192/16) = 12 steps per epoch, 2 epochs.

SCRIPT = """
import logging, sys
import jax, numpy as np
from oeu_jax import data
from oeu_jax.algorithm import methods
from oeu_jax.nn import models
from oeu_jax.engine import train
from oeu_jax.engine import unlearn

logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)
logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's chatter.
workdir, out = sys.argv[1], sys.argv[2]
ds = data.load_dataset("digits", max_examples=240)
model = models.build_model("cnn", num_classes=10, bits="w4a8")
fit = train.fit(model, ds.train_x, ds.train_y, seed=3,
                config=train.TrainConfig(epochs=2, batch_size=16,
                                         checkpoint_every=3),
                checkpoint_dir=workdir + "/train", resume=True)
split = data.make_split(ds, "random", forget_ratio=0.2, seed=3)
udata = unlearn.make_data(ds.train_x, ds.train_y, split.forget_idx,
                          split.retain_idx)
res = unlearn.unlearn(methods.build_method("oeu", model), model,
                      fit.state.params, fit.state.batch_stats, udata,
                      config=unlearn.UnlearnConfig(epochs=2, batch_size=16,
                                                   checkpoint_every=3),
                      num_classes=10, seed=3,
                      checkpoint_dir=workdir + "/unlearn", resume=True)
leaves = jax.tree.leaves((fit.state, res.state))
moved = not all(np.array_equal(a, b) for a, b in zip(
    jax.tree.leaves(fit.state.params), jax.tree.leaves(res.state.params)))
np.savez(out, *[np.asarray(x) for x in leaves],
         steps=np.array([fit.state.step, res.state.step]), moved=moved)
"""


@pytest.fixture
def start(tmp_path):
  """Starts the script in a subprocess; kills what is left at teardown."""
  script = tmp_path / "run.py"
  script.write_text(SCRIPT)
  procs = []

  def start_fn(workdir: Path, out: Path, log: Path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    with open(log, "w") as f:
      procs.append(subprocess.Popen(
          [sys.executable, str(script), str(workdir), str(out)], stdout=f,
          stderr=subprocess.STDOUT, env=env))
    return procs[-1]

  yield start_fn
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _listdir(path: Path) -> list:
  try:
    return os.listdir(path)
  except FileNotFoundError:
    return []


def _kill_at_first_checkpoint(proc, ckpt_dir: Path, log: Path) -> int:
  """SIGKILLs ``proc`` once a step appears in ``ckpt_dir``; returns it."""
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline:
    assert proc.poll() is None, log.read_text()  # Still mid-run.
    # A plain listing (the writer may be deleting old steps): orbax renames
    # a finished step's temporary directory to its number.
    steps = [int(n) for n in _listdir(ckpt_dir) if n.isdigit()]
    if steps:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return max(steps)
    time.sleep(0.02)
  proc.kill()
  raise AssertionError(f"no checkpoint in {ckpt_dir}: {log.read_text()}")


def _finish(proc, log: Path) -> None:
  assert proc.wait(timeout=300) == 0, log.read_text()


def test_sigkill_and_resume_is_bit_identical(tmp_path, start):
  straight = start(tmp_path / "a", tmp_path / "a.npz", tmp_path / "a.log")

  work = tmp_path / "b"
  log1, log2, log3 = (tmp_path / f"b{i}.log" for i in (1, 2, 3))
  proc = start(work, tmp_path / "b.npz", log1)
  _kill_at_first_checkpoint(proc, work / "train", log1)
  killed_at = checkpointing.latest_step(work / "train")
  assert 0 < killed_at < TRAIN_STEPS, killed_at

  proc = start(work, tmp_path / "b.npz", log2)
  _kill_at_first_checkpoint(proc, work / "unlearn", log2)
  assert f"resumed train from step {killed_at}" in log2.read_text()
  assert checkpointing.latest_step(work / "train") == TRAIN_STEPS
  unlearn_killed_at = checkpointing.latest_step(work / "unlearn")
  assert 0 < unlearn_killed_at < UNLEARN_STEPS, unlearn_killed_at

  proc = start(work, tmp_path / "b.npz", log3)
  _finish(proc, log3)
  text = log3.read_text()
  assert f"resumed train from step {TRAIN_STEPS}" in text
  assert f"resumed oeu from step {unlearn_killed_at}" in text
  _finish(straight, tmp_path / "a.log")

  want, got = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
  assert len(want.files) == len(got.files) > 10
  for name in want.files:
    assert want[name].dtype == got[name].dtype, name
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  np.testing.assert_array_equal(want["steps"], [TRAIN_STEPS, UNLEARN_STEPS])
  assert want["moved"]  # Unlearning changed the weights.


# In-process faults around resuming (float CNN, 64 examples, 8 steps).


def _fit(ds, tmp_path, *, epochs=2, resume=True, **model_kwargs):
  model = models.build_model("cnn", num_classes=10, bits="float",
                             **model_kwargs)
  return train.fit(model, ds.train_x, ds.train_y, seed=0,
                   config=train.TrainConfig(epochs=epochs, batch_size=16,
                                            checkpoint_every=2),
                   checkpoint_dir=str(tmp_path), resume=resume)


def test_unfinished_mismatched_and_corrupt_checkpoints(tmp_path,
                                                       monkeypatch):
  ds = data.load_dataset("digits", max_examples=64)
  real_save = checkpointing.save_checkpoint

  def save_then_interrupt(*args, **kwargs):
    real_save(*args, **kwargs)
    raise KeyboardInterrupt

  monkeypatch.setattr(checkpointing, "save_checkpoint", save_then_interrupt)
  with pytest.raises(KeyboardInterrupt):
    _fit(ds, tmp_path)
  monkeypatch.undo()
  assert checkpointing.available_steps(tmp_path) == [2]
  # A save killed half-way leaves a temporary directory: never restored.
  (tmp_path / "4.orbax-checkpoint-tmp-1234" / "state").mkdir(parents=True)

  with pytest.raises(ValueError, match=(
      f"{tmp_path} holds an unfinished run \\(checkpoint at step 2 of 8\\)")):
    _fit(ds, tmp_path, resume=False)
  with pytest.raises(checkpointing.CheckpointError,
                     match=f"{tmp_path} holds a checkpoint of step 2, past "
                           "the 0 steps"):
    _fit(ds, tmp_path, epochs=0)
  with pytest.raises(checkpointing.CheckpointError,
                     match=f"Checkpoint {tmp_path}/2 does not match the "
                           "target structure; shapes differ"):
    _fit(ds, tmp_path, hidden=32)

  done = _fit(ds, tmp_path)
  assert int(done.state.step) == 8 and len(done.losses) == 6
  assert checkpointing.available_steps(tmp_path)[-1] == 8
  assert not list(tmp_path.glob("*.orbax-checkpoint-tmp-*"))
  again = _fit(ds, tmp_path, resume=False)  # Finished: reused as is.
  assert again.seconds == 0.0 and len(again.losses) == 0

  files = [p for p in (tmp_path / "8" / "state").rglob("*") if p.is_file()]
  biggest = max(files, key=lambda p: p.stat().st_size)
  blob = bytearray(biggest.read_bytes())
  blob[len(blob) // 2] ^= 0xFF
  biggest.write_bytes(bytes(blob))
  with pytest.raises(checkpointing.CheckpointError,
                     match=f"{tmp_path}/8/state"):
    _fit(ds, tmp_path)
