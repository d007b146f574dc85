"""Tests for oeu_jax.engine.checkpointing: round trips, retention, failure
modes."""

import doctest
import errno
import json
import os
import shutil
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.path import atomicity
from orbax.checkpoint._src.serialization import type_handlers

from oeu_jax.engine import checkpoint_io
from oeu_jax.engine import checkpointing
from oeu_jax.engine.checkpointing import CheckpointError
from oeu_jax.engine.checkpointing import available_steps
from oeu_jax.engine.checkpointing import latest_step
from oeu_jax.engine.checkpointing import restore_checkpoint
from oeu_jax.engine.checkpointing import save_checkpoint


class OptState(NamedTuple):
  count: jax.Array
  mu: dict


def _tree(offset=0.0):
  rng = np.random.default_rng(0)
  w = rng.normal(size=(16, 8)).astype(np.float32) + offset
  return {
      "params": {
          "dense": {"kernel": jnp.asarray(w), "bias": jnp.zeros(8) + offset},
          "emb": jnp.asarray(w[:4], dtype=jnp.bfloat16),
      },
      "batch_stats": {"mean": np.arange(5, dtype=np.int32)},
      "opt": OptState(count=jnp.asarray(3, jnp.int32),
                      mu={"kernel": jnp.asarray(-w)}),
      "step": 7,
      "lr": 0.125,
      "done": False,
      "np_scalar": np.float32(2.5),
      "rng": jax.random.key(42),
      "rng_split": jax.random.split(jax.random.key(1), 3),
      "raw_key": jax.random.PRNGKey(5),
  }


def _target():
  return jax.tree.map(
      lambda x: jnp.zeros_like(x) if isinstance(x, jax.Array) else x, _tree()
  )


def _assert_same(restored, expected):
  assert (jax.tree_util.tree_structure(restored)
          == jax.tree_util.tree_structure(expected))
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(restored)[0],
                          jax.tree.leaves(expected)):
    where = jax.tree_util.keystr(path)
    assert type(a) is type(b) or (
        isinstance(a, jax.Array) and isinstance(b, jax.Array)), where
    if isinstance(b, jax.Array) and jax.dtypes.issubdtype(
        b.dtype, jax.dtypes.prng_key):
      assert a.dtype == b.dtype, where
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    assert np.asarray(a).dtype == np.asarray(b).dtype, where
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)


def _state_files(step_dir):
  return sorted(p for p in (step_dir / "state").rglob("*") if p.is_file()
                and p.name != "commit_success.txt")


def test_round_trip_concrete_target(tmp_path):
  tree = _tree()
  path = save_checkpoint(tmp_path / "ck", 7, tree)
  assert path == (tmp_path / "ck" / "7").resolve()
  restored = restore_checkpoint(tmp_path / "ck", _target())
  _assert_same(restored, tree)
  assert restored["step"] == 7 and isinstance(restored["step"], int)
  assert isinstance(restored["done"], bool)
  assert isinstance(restored["batch_stats"]["mean"], np.ndarray)
  assert restored["params"]["emb"].dtype == jnp.bfloat16
  # The restored key generates the same numbers.
  np.testing.assert_array_equal(jax.random.normal(restored["rng"], (3,)),
                                jax.random.normal(tree["rng"], (3,)))


def test_round_trip_abstract_target(tmp_path):
  tree = {"w": jnp.arange(6.0).reshape(2, 3), "key": jax.random.key(3)}
  save_checkpoint(tmp_path, 0, tree)
  abstract = jax.eval_shape(lambda: tree)
  restored = restore_checkpoint(tmp_path, abstract)
  _assert_same(restored, tree)


def test_restore_casts_to_target_dtype(tmp_path):
  save_checkpoint(tmp_path, 0, {"w": jnp.full((3,), 1.5, jnp.float32)})
  restored = restore_checkpoint(tmp_path, {"w": jnp.zeros(3, jnp.bfloat16)})
  assert restored["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(restored["w"], jnp.full(3, 1.5, jnp.bfloat16))


def test_latest_step_and_max_to_keep(tmp_path):
  assert latest_step(tmp_path / "missing") is None
  assert latest_step(tmp_path) is None
  assert not (tmp_path / "missing").exists()  # latest_step creates nothing.
  for step in range(5):
    save_checkpoint(tmp_path, step * 10, {"x": step}, max_to_keep=2)
    assert latest_step(tmp_path) == step * 10
  assert available_steps(tmp_path) == [30, 40]
  assert sorted(os.listdir(tmp_path)) == ["30", "40"]
  assert restore_checkpoint(tmp_path, {"x": 0}) == {"x": 4}
  assert restore_checkpoint(tmp_path, {"x": 0}, step=30) == {"x": 3}


def test_steps_must_increase(tmp_path):
  save_checkpoint(tmp_path, 5, {"x": 1})
  for step in (5, 4):
    with pytest.raises(CheckpointError, match="steps must increase"):
      save_checkpoint(tmp_path, step, {"x": 2})
  assert restore_checkpoint(tmp_path, {"x": 0}) == {"x": 1}
  with pytest.raises(ValueError, match="step must be"):
    save_checkpoint(tmp_path, -1, {"x": 1})


def test_unsupported_leaf_is_a_type_error(tmp_path):
  with pytest.raises(TypeError, match=r"\['name'\]"):
    save_checkpoint(tmp_path, 0, {"name": "resnet"})
  assert latest_step(tmp_path) is None


def test_missing_directory_and_step(tmp_path):
  with pytest.raises(CheckpointError, match=str(tmp_path / "nope")):
    restore_checkpoint(tmp_path / "nope", {"x": 0})
  with pytest.raises(CheckpointError, match="No complete checkpoint in"):
    restore_checkpoint(tmp_path, {"x": 0})
  save_checkpoint(tmp_path, 1, {"x": 1})
  with pytest.raises(CheckpointError, match=r"step 3: .*3 does not exist"):
    restore_checkpoint(tmp_path, {"x": 0}, step=3)


@pytest.mark.parametrize("target, message", [
    ({"a": jnp.zeros(3)}, r"not the target: \['b'\]"),
    ({"a": jnp.zeros(3), "b": 0, "c": 0}, r"not the checkpoint: \['c'\]"),
    ({"a": jnp.zeros(4), "b": 0}, r"shapes differ: \['a'\]: saved \(3,\)"),
    ({"a": jnp.zeros(3), "b": jax.random.key(0)}, r"PRNG key vs array"),
    ({"a": jnp.zeros(3), "b": {"inner": 0}}, r"\['b'\]\['inner'\]"),
])
def test_structure_mismatch(tmp_path, target, message):
  save_checkpoint(tmp_path, 2, {"a": jnp.ones(3), "b": 1})
  with pytest.raises(CheckpointError, match=message) as info:
    restore_checkpoint(tmp_path, target)
  assert str(tmp_path / "2") in str(info.value)


def test_key_implementation_mismatch(tmp_path):
  save_checkpoint(tmp_path, 0, {"k": jax.random.key(0, impl="rbg")})
  restored = restore_checkpoint(tmp_path, {"k": jax.random.key(1, impl="rbg")})
  assert restored["k"].dtype == jax.random.key(0, impl="rbg").dtype
  with pytest.raises(CheckpointError):
    restore_checkpoint(tmp_path, {"k": jax.random.key(0)})


def test_flipped_byte_is_detected(tmp_path):
  """TensorStore does not notice a flipped bit in array data; the digest does.
  """
  rng = np.random.default_rng(1)
  tree = {"w": rng.normal(size=(64, 64)).astype(np.float32)}
  save_checkpoint(tmp_path, 1, tree)
  save_checkpoint(tmp_path, 2, tree)
  data_file = max(_state_files(tmp_path / "2"), key=lambda p: p.stat().st_size)
  raw = bytearray(data_file.read_bytes())
  raw[len(raw) // 2] ^= 0x01
  data_file.write_bytes(bytes(raw))
  with pytest.raises(CheckpointError, match="corrupt") as info:
    restore_checkpoint(tmp_path, {"w": np.zeros((64, 64), np.float32)})
  assert str(tmp_path / "2") in str(info.value)
  # The previous checkpoint is intact.
  _assert_same(restore_checkpoint(tmp_path, {"w": np.zeros((64, 64),
                                                           np.float32)},
                                  step=1), tree)


# When TensorStore fails mid-read, orbax leaves asyncio callbacks behind that
# complain "Event loop is closed" at garbage collection; harmless noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_damaged_state_files_never_restore_wrong_values(tmp_path, damage):
  tree = {"w": np.arange(600, dtype=np.float32).reshape(20, 30), "step": 3,
          "b": jnp.arange(4, dtype=jnp.bfloat16)}
  target = {"w": np.zeros((20, 30), np.float32), "step": 0,
            "b": jnp.zeros(4, jnp.bfloat16)}
  save_checkpoint(tmp_path / "clean", 1, tree)
  files = [p.relative_to(tmp_path / "clean" / "1")
           for p in _state_files(tmp_path / "clean" / "1")]
  assert files
  rng = np.random.default_rng(0)
  raised = 0
  for rel in files:
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(tmp_path / "clean", work)
    victim = work / "1" / rel
    raw = victim.read_bytes()
    if damage == "garbage":
      victim.write_bytes(rng.integers(0, 256, len(raw), np.uint8).tobytes())
    else:
      victim.write_bytes(raw[: len(raw) // 2])
    try:
      restored = restore_checkpoint(work, target)
    except CheckpointError as e:
      assert str(work / "1") in str(e), e
      raised += 1
    else:  # Only files orbax does not read may be damaged harmlessly.
      _assert_same(restored, tree)
  assert raised >= 1


def test_corrupt_manifest(tmp_path):
  save_checkpoint(tmp_path, 1, {"x": 1})
  for f in (tmp_path / "1" / "manifest").iterdir():
    if f.name != "commit_success.txt":
      f.write_bytes(b"\x00\xffnot json")
  with pytest.raises(CheckpointError, match="manifest") as info:
    restore_checkpoint(tmp_path, {"x": 0})
  assert str(tmp_path / "1" / "manifest") in str(info.value)



def test_read_manifest_describes_the_saved_tree(tmp_path):
  tree = {"p": {"w": jnp.ones((2, 3), jnp.bfloat16)}, "k": jax.random.key(5),
          "opt": OptState(count=jnp.asarray(1), mu={})}
  save_checkpoint(tmp_path, 2, tree)
  save_checkpoint(tmp_path, 4, tree)
  manifest = checkpointing.read_manifest(tmp_path)
  assert manifest["format"] == checkpointing.FORMAT and manifest["step"] == 4
  by_path = {e["path"]: e for e in manifest["leaves"]}
  assert list(by_path) == ["['k']", "['opt'].count", "['p']['w']"]
  assert by_path["['p']['w']"]["shape"] == [2, 3]
  assert by_path["['p']['w']"]["dtype"] == "bfloat16"
  assert by_path["['k']"]["kind"] == "key" and "impl" in by_path["['k']"]
  assert checkpointing.read_manifest(tmp_path, step=2)["step"] == 2
  with pytest.raises(CheckpointError, match="No complete checkpoint for "
                     "step 3"):
    checkpointing.read_manifest(tmp_path, step=3)
  with pytest.raises(CheckpointError, match="No checkpoint directory"):
    checkpointing.read_manifest(tmp_path / "missing")
  for f in (tmp_path / "4" / "manifest").iterdir():
    if f.name != "commit_success.txt":
      f.write_text('{"format": "someone else"}')
  with pytest.raises(CheckpointError, match="not an oeu_jax.checkpoint/1"):
    checkpointing.read_manifest(tmp_path)

def test_interrupted_save_keeps_previous_usable(tmp_path, monkeypatch):
  save_checkpoint(tmp_path, 1, {"w": np.ones(3, np.float32)})

  async def crash(self, *args, **kwargs):
    raise KeyboardInterrupt("simulated crash before the final rename")

  with monkeypatch.context() as m:
    m.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", crash)
    with pytest.raises(KeyboardInterrupt):
      save_checkpoint(tmp_path, 2, {"w": np.full(3, 2.0, np.float32)})
  leftovers = [n for n in os.listdir(tmp_path) if "orbax-checkpoint-tmp" in n]
  assert leftovers  # The crash left an unfinished step behind ...
  assert latest_step(tmp_path) == 1  # ... which is ignored.
  target = {"w": np.zeros(3, np.float32)}
  np.testing.assert_array_equal(restore_checkpoint(tmp_path, target)["w"], 1)
  with pytest.raises(CheckpointError, match="Unfinished saves"):
    restore_checkpoint(tmp_path, target, step=2)
  # The next save succeeds and removes the leftover.
  save_checkpoint(tmp_path, 2, {"w": np.full(3, 2.0, np.float32)})
  np.testing.assert_array_equal(restore_checkpoint(tmp_path, target)["w"], 2)
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_tmp_step_directory_is_ignored(tmp_path):
  save_checkpoint(tmp_path, 1, {"x": 1})
  save_checkpoint(tmp_path, 2, {"x": 2}, max_to_keep=3)
  partial = tmp_path / "3.orbax-checkpoint-tmp-1234"
  shutil.copytree(tmp_path / "2", partial)
  shutil.rmtree(partial / "state")
  assert latest_step(tmp_path) == 2
  assert restore_checkpoint(tmp_path, {"x": 0}) == {"x": 2}


def test_step_directory_missing_an_item(tmp_path):
  save_checkpoint(tmp_path, 1, {"x": 1})
  shutil.copytree(tmp_path / "1", tmp_path / "2")
  shutil.rmtree(tmp_path / "2" / "manifest")
  assert latest_step(tmp_path) == 1
  assert restore_checkpoint(tmp_path, {"x": 0}) == {"x": 1}
  with pytest.raises(CheckpointError, match=r"lacks the items \['manifest'\]"):
    restore_checkpoint(tmp_path, {"x": 0}, step=2)


def test_step_directory_missing_data_files(tmp_path):
  tree = {"w": np.arange(12, dtype=np.float32)}
  target = {"w": np.zeros(12, np.float32)}
  save_checkpoint(tmp_path, 1, tree)
  shutil.copytree(tmp_path / "1", tmp_path / "2")
  for f in _state_files(tmp_path / "2"):
    if "manifest" not in f.name and "METADATA" not in f.name:
      f.unlink()
  # Both items are there, so step 2 looks complete; restoring it says why not.
  assert latest_step(tmp_path) == 2
  with pytest.raises(CheckpointError,
                     match="its array files cannot be read") as info:
    restore_checkpoint(tmp_path, target)
  assert str(tmp_path / "2" / "state") in str(info.value)
  assert str(info.value).endswith(f"delete {tmp_path} to retrain it.")
  _assert_same(restore_checkpoint(tmp_path, target, step=1), tree)


def test_checkpointer_and_doctests(tmp_path):
  ckpt = checkpointing.Checkpointer(tmp_path, max_to_keep=1)
  ckpt.save(0, {"x": 1.5})
  ckpt.save(4, {"x": 2.5})
  assert ckpt.latest_step() == 4
  assert ckpt.restore({"x": 0.0}) == {"x": 2.5}
  assert available_steps(tmp_path) == [4]
  assert doctest.testmod(checkpointing).failed == 0
  assert doctest.testmod(checkpoint_io).failed == 0


# Issue 15: disk full, foreign checkpoints, short corrupt-checkpoint messages.


def _disk_full_at(monkeypatch, step: int) -> None:
  """Every array write of ``step``'s save fails with ENOSPC, in orbax's
  writer threads (as TensorStore's writes fail on a full disk)."""
  real = type_handlers.NumpyHandler._open_and_write

  async def write(self, value, tspec, ts_context):
    if f"/{step}.orbax-checkpoint-tmp" in json.dumps(tspec):
      raise OSError(errno.ENOSPC, "No space left on device")
    return await real(self, value, tspec, ts_context)

  monkeypatch.setattr(type_handlers.NumpyHandler, "_open_and_write", write)


def test_disk_full_is_one_error_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, capfd):
  tree = {"w": np.arange(6, dtype=np.float32), "b": np.ones(3, np.float32)}
  save_checkpoint(tmp_path, 2, tree)
  _disk_full_at(monkeypatch, 4)
  with pytest.raises(CheckpointError) as info:
    save_checkpoint(tmp_path, 4, jax.tree.map(lambda x: x + 1, tree))
  assert str(info.value) == (
      f"Cannot save checkpoint step 4 in {tmp_path}: No space left on device "
      "(ENOSPC); the last complete checkpoint, step 2, is kept.")
  # orbax's writer threads log their tracebacks: none reach the terminal.
  out, err = capfd.readouterr()
  assert out == "" and err == "", err
  assert sorted(os.listdir(tmp_path)) == ["2"]  # The failed save is gone.
  _assert_same(restore_checkpoint(tmp_path, {"w": np.zeros(6, np.float32),
                                             "b": np.zeros(3, np.float32)}),
               tree)
  with pytest.raises(CheckpointError, match="no complete checkpoint was "
                     "saved there yet"):
    _disk_full_at(monkeypatch, 0)
    save_checkpoint(tmp_path / "fresh", 0, tree)


def test_io_cause_is_short():
  assert checkpoint_io.io_cause(PermissionError(13, "denied")) == (
      "Permission denied (EACCES)")
  ts = ValueError('RESOURCE_EXHAUSTED: Error writing "00000/0" in OCDBT '
                  'database at local file "/w/x": Failed to write 358187 '
                  "bytes to file 14: No space left on device "
                  "[os_error_code='28']")
  assert checkpoint_io.io_cause(ts) == "No space left on device (ENOSPC)"
  assert checkpoint_io.io_cause(RuntimeError("x" * 500)).startswith(
      "RuntimeError: xxx")
  assert len(checkpoint_io.io_cause(RuntimeError("x" * 500))) < 100


def test_meta_is_stored_in_the_manifest(tmp_path):
  save_checkpoint(tmp_path, 1, {"x": 1}, meta={"tally": {"seconds": 1.5}})
  save_checkpoint(tmp_path, 2, {"x": 2})
  assert checkpointing.read_manifest(tmp_path, step=1)["meta"] == {
      "tally": {"seconds": 1.5}}
  assert checkpointing.read_manifest(tmp_path)["meta"] == {}


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
  tree, target = {"w": np.ones(3, np.float32)}, {"w": np.zeros(3, np.float32)}
  a, b = tmp_path / "w4a8" / "original", tmp_path / "w8a8" / "original"
  checkpointing.claim(a, "digits-cnn-w4a8-1/seed0/original")
  save_checkpoint(a, 5, tree)
  assert checkpointing.read_manifest(a)["config"] == (
      "digits-cnn-w4a8-1/seed0/original")
  # Its step copied into a directory claimed by another configuration.
  checkpointing.claim(b, "digits-cnn-w8a8-2/seed0/original")
  shutil.copytree(a / "5", b / "5")
  with pytest.raises(CheckpointError) as info:
    restore_checkpoint(b, target)
  assert str(info.value) == (
      f"Checkpoint {b}/5 was written by configuration "
      "digits-cnn-w4a8-1/seed0/original, not digits-cnn-w8a8-2/seed0/original"
      f" (the one {b} belongs to); delete {b} to retrain it.")
  # The whole directory copied: its identity comes along, and the claim of
  # the new configuration is refused.
  c = tmp_path / "copy"
  shutil.copytree(a, c)
  with pytest.raises(CheckpointError, match=(
      "holds checkpoints of configuration digits-cnn-w4a8-1/seed0/original, "
      "not digits-cnn-w8a8-2/seed0/original; delete .* to retrain it")):
    checkpointing.claim(c, "digits-cnn-w8a8-2/seed0/original")
  checkpointing.claim(a, "digits-cnn-w4a8-1/seed0/original")  # Its own: ok.
  _assert_same(restore_checkpoint(a, target), tree)


def test_checkpoints_without_a_stamp_restore_as_before(tmp_path):
  tree, target = {"w": np.ones(3, np.float32)}, {"w": np.zeros(3, np.float32)}
  save_checkpoint(tmp_path, 1, tree)  # Unclaimed directory: no stamp.
  assert checkpointing.read_manifest(tmp_path)["config"] is None
  checkpointing.claim(tmp_path, "some/configuration")  # An older workdir.
  _assert_same(restore_checkpoint(tmp_path, target), tree)
  save_checkpoint(tmp_path, 2, tree)
  assert checkpointing.read_manifest(tmp_path)["config"] == (
      "some/configuration")


def test_corrupt_checkpoint_message_is_short_and_says_what_to_do(tmp_path):
  tree = {"w": np.arange(4096, dtype=np.float32)}
  save_checkpoint(tmp_path, 3, tree)
  data_file = max(_state_files(tmp_path / "3"), key=lambda p: p.stat().st_size)
  raw = bytearray(data_file.read_bytes())
  raw[len(raw) // 2] ^= 0x01
  data_file.write_bytes(bytes(raw))
  with pytest.raises(CheckpointError) as info:
    restore_checkpoint(tmp_path, {"w": np.zeros(4096, np.float32)})
  text = str(info.value)
  assert text.startswith(f"Checkpoint {tmp_path}/3/state is corrupt: ")
  assert text.endswith(f"; delete {tmp_path} to retrain it.")
  assert len(text) - 2 * len(str(tmp_path)) < 120, text
  assert "\n" not in text
