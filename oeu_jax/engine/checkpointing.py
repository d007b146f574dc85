"""Checkpoints with orbax: atomic saves, verified restores, clear errors.

A checkpoint of step ``s`` in ``directory`` is the orbax step directory
``directory/s`` with two items, written together by one
``ocp.CheckpointManager.save`` (so both appear or neither does: orbax writes
into ``s.orbax-checkpoint-tmp-*`` and renames it when finished):

* ``state``: the leaves of the pytree as host NumPy arrays in a flat dict
  (``"00000"``, ``"00001"``, ... in ``jax.tree_util`` flattening order);
* ``manifest``: JSON with, per leaf, its key path (``jax.tree_util.keystr``),
  shape, dtype, kind (``"array"`` or ``"key"``) and the SHA-256 of its bytes;
  the directory's run identity (``config``, see below) and the caller's
  ``meta`` (e.g. the run's elapsed time and metric sums), when given.

Run identity: a directory marked with :func:`claim` (``identity.json``, the
configuration that owns it) stamps every step it saves with that identity,
and restoring a step stamped with another one raises ``CheckpointError``
naming both (a checkpoint copied from another configuration is refused).
Steps without a stamp (written before stamps existed) restore as before.

Failed saves (a full disk, a read-only folder) raise ``CheckpointError``
naming the directory, the cause and the last complete step, which is left
untouched; the failed save's temporary directory is removed and orbax's
writer-thread tracebacks are dropped (:mod:`oeu_jax.engine.checkpoint_io`).

Why the manifest: orbax/TensorStore keep no checksum of array data, so a
flipped byte in a data file restores silently as a different number (checked
with orbax-checkpoint 0.12.8). Restoring here reads the manifest first, checks
the target's structure against it, reads the arrays, verifies every checksum,
and only then builds the output tree: a failure anywhere raises
``CheckpointError`` naming the path and never returns a half-restored tree.
Flattening the tree ourselves also makes any pytree type (dicts, NamedTuples
such as optax states, Flax structs) restorable into the caller's ``target``.

PRNG keys: typed keys (``jax.random.key``) may be leaves. They are stored as
``jax.random.key_data`` (uint32) with the implementation name, and rewrapped
with ``jax.random.wrap_key_data`` on restore, so the target must hold a typed
key of the same implementation and shape. Raw uint32 keys
(``jax.random.PRNGKey``) are ordinary arrays.

Scope: single-process, host-memory checkpoints (every leaf through
``np.asarray``); Python and NumPy scalars round-trip as the target's type.

References:
  orbax-checkpoint: https://orbax.readthedocs.io/en/latest/
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from oeu_jax.engine import checkpoint_io
from oeu_jax.engine.checkpoint_io import CheckpointError
from oeu_jax.engine.checkpoint_io import claim
from oeu_jax.engine.checkpoint_io import read_identity

FORMAT = checkpoint_io.FORMAT
_STATE = "state"
_MANIFEST = "manifest"
_short, _listed = checkpoint_io.short, checkpoint_io.listed

__all__ = ("CheckpointError", "Checkpointer", "available_steps", "claim",
           "latest_step", "read_identity", "read_manifest",
           "restore_checkpoint", "save_checkpoint")


def _manager(directory: Path, *, max_to_keep: int | None = None,
             read_only: bool = False) -> ocp.CheckpointManager:
  if read_only:
    # Not orbax's ``read_only=True``, which logs warnings on every use; a
    # manager that never saves and neither creates nor cleans up is as safe.
    options = ocp.CheckpointManagerOptions(create=False)
  else:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        # Saves are waited for anyway; synchronous saves keep no threads.
        enable_async_checkpointing=False,
        # Leftovers of interrupted saves (``*.orbax-checkpoint-tmp-*``) are
        # never restorable; orbax deletes them when the next save starts.
        cleanup_tmp_directories=True,
    )
  return ocp.CheckpointManager(directory, options=options)


def available_steps(directory: str | os.PathLike) -> list[int]:
  """Steps with a complete checkpoint in ``directory``, ascending.

  A step counts when orbax considers it finalized (its directory was renamed
  from the temporary name) and it holds both items of this module's format.
  Temporary directories of interrupted saves and step directories missing an
  item are ignored.

  Args:
    directory: Checkpoint root directory (made absolute).

  Returns:
    Sorted list of steps; empty when the directory is missing or empty.
  """
  directory = Path(directory).resolve()
  if not directory.is_dir():
    return []
  with _manager(directory, read_only=True) as mngr:
    steps = mngr.all_steps()
  return sorted(
      s for s in steps
      if (directory / str(s) / _STATE).is_dir()
      and (directory / str(s) / _MANIFEST).is_dir()
  )


def latest_step(directory: str | os.PathLike) -> int | None:
  """The latest complete step in ``directory``, or None if there is none.

  Args:
    directory: Checkpoint root directory.

  Returns:
    The largest step of ``available_steps(directory)``; ``None`` when the
    directory is missing or holds no complete checkpoint.
  """
  steps = available_steps(directory)
  return steps[-1] if steps else None


def save_checkpoint(
    directory: str | os.PathLike,
    step: int,
    tree: Any,
    *,
    max_to_keep: int | None = 2,
    meta: dict | None = None,
) -> Path:
  """Saves ``tree`` as step ``step`` and waits until it is on disk.

  The save is atomic: orbax writes into a temporary directory and renames it
  to ``directory/step`` when every file is written, so an interrupted save
  leaves the previous checkpoints untouched and is ignored by
  ``latest_step``. After the save only the ``max_to_keep`` latest steps are
  kept.

  Args:
    directory: Checkpoint root directory; created if missing, made absolute.
    step: Non-negative step number, larger than every step already saved in
      ``directory`` (orbax would otherwise skip the save silently).
    tree: Pytree of arrays (any dtype, including bfloat16), typed PRNG keys,
      and Python or NumPy scalars.
    max_to_keep: Number of most recent checkpoints to keep; ``None`` keeps
      all.
    meta: JSON-serializable dict stored in the step's manifest
      (:func:`read_manifest` returns it).

  Returns:
    The absolute path of the step directory.

  Raises:
    ValueError: If ``step`` is negative or not an integer.
    TypeError: If a leaf cannot be stored (e.g. a string).
    CheckpointError: If ``step`` is not larger than the latest step present,
      or the save failed (naming the cause, e.g. ``No space left on device
      (ENOSPC)``, and the last complete step, which stays restorable).

  Examples:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...   _ = save_checkpoint(d, 3, {"w": np.ones(2, np.float32), "step": 3})
    ...   restore_checkpoint(d, {"w": np.zeros(2, np.float32), "step": 0})
    {'step': 3, 'w': array([1., 1.], dtype=float32)}
  """
  if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
    raise ValueError(f"step must be an int, got {type(step).__name__}.")
  step = int(step)
  if step < 0:
    raise ValueError(f"step must be >= 0, got {step}.")
  if max_to_keep is not None and max_to_keep < 1:
    raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}.")
  directory = Path(directory).resolve()
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  state, entries = {}, []
  for i, (path, leaf) in enumerate(leaves):
    data, entry = checkpoint_io.to_host(jax.tree_util.keystr(path), leaf)
    state[f"{i:05d}"] = data
    entries.append(entry)
  manifest = {"format": FORMAT, "step": step, "leaves": entries}
  config = read_identity(directory)
  if config is not None:
    manifest["config"] = config
  if meta is not None:
    manifest["meta"] = meta
  try:
    with checkpoint_io.quiet_background_failures(), _manager(
        directory, max_to_keep=max_to_keep) as mngr:
      present = mngr.latest_step()
      if present is not None and step <= present:
        raise CheckpointError(
            f"Cannot save step {step} in {directory}: step {present} is "
            "already there and steps must increase. Delete the later step "
            "directories (or use a new directory) to save again."
        )
      saved = mngr.save(
          step,
          args=ocp.args.Composite(**{
              _STATE: ocp.args.StandardSave(state),
              _MANIFEST: ocp.args.JsonSave(manifest),
          }),
      )
      mngr.wait_until_finished()
  except CheckpointError:
    raise
  except Exception as e:  # TensorStore/orbax raise many types for I/O.
    checkpoint_io.remove_unfinished(directory, step)
    last = latest_step(directory)
    kept = ("no complete checkpoint was saved there yet" if last is None
            else f"the last complete checkpoint, step {last}, is kept")
    raise CheckpointError(
        f"Cannot save checkpoint step {step} in {directory}: "
        f"{checkpoint_io.io_cause(e)}; {kept}.") from e
  if not saved:
    raise CheckpointError(f"orbax declined to save step {step} in {directory}.")
  return directory / str(step)


def read_manifest(directory: str | os.PathLike, *,
                  step: int | None = None) -> dict:
  """The checked manifest of a complete checkpoint, without its arrays.

  Enough to rebuild a restore target without knowing what was saved.

  Args:
    directory: Checkpoint root directory.
    step: Step to read; the latest complete step when ``None``.

  Returns:
    ``{"format", "step", "leaves", "config", "meta"}``; per leaf, in
    flattening order: ``path`` (keystr), ``kind`` (``"array"``/``"key"``;
    keys add ``impl``), ``shape``, ``dtype``, ``stored_shape``, ``sha256``.
    ``config`` is the run identity the step was stamped with (None before
    stamps existed), ``meta`` what the save was given (``{}`` if nothing).

  Raises:
    CheckpointError: as :func:`restore_checkpoint` (naming the path).
  """
  directory = Path(directory).resolve()
  if not directory.is_dir():
    raise CheckpointError(f"No checkpoint directory at {directory}.")
  steps = available_steps(directory)
  unfinished = checkpoint_io.unfinished(directory)
  note = (f" Unfinished saves (ignored): {_listed(unfinished)}."
          if unfinished else "")
  if step is None:
    if not steps:
      raise CheckpointError(f"No complete checkpoint in {directory}.{note}")
    step = steps[-1]
  step_dir = directory / str(step)
  if step not in steps:
    if step_dir.is_dir():
      lacking = [i for i in (_STATE, _MANIFEST) if not (step_dir / i).is_dir()]
      state = f"exists but lacks the items {lacking}"
    else:
      state = "does not exist"
    raise CheckpointError(
        f"No complete checkpoint for step {step}: {step_dir} {state}. Complete"
        f" steps: {steps}.{note}")
  with _manager(directory, read_only=True) as mngr:
    try:
      manifest = mngr.restore(
          step, args=ocp.args.Composite(**{_MANIFEST: ocp.args.JsonRestore()})
      )[_MANIFEST]
    except Exception as e:  # orbax/json raise many types; report them all.
      raise checkpoint_io.corrupt(
          step_dir / _MANIFEST,
          f"it cannot be read ({checkpoint_io.io_cause(e)})", directory) from e
  leaves = checkpoint_io.check_manifest(manifest, step_dir)
  return {"format": FORMAT, "step": step, "leaves": leaves,
          "config": manifest.get("config"), "meta": manifest.get("meta", {})}


def restore_checkpoint(
    directory: str | os.PathLike,
    target: Any,
    *,
    step: int | None = None,
) -> Any:
  """Restores a checkpoint into the structure, types and dtypes of ``target``.

  Checks, in order: the step exists and is complete, the manifest is readable,
  the target has the saved key paths and shapes, the array files are readable,
  and every leaf's SHA-256 matches the manifest. Values are then cast to the
  target leaves' dtypes (so a float32 checkpoint restores into a bfloat16
  target) and returned as the target leaves' types: ``jax.Array`` for arrays
  and ``jax.ShapeDtypeStruct`` (placed on the target's sharding when it has
  one), ``np.ndarray`` for NumPy arrays, the same Python or NumPy type for
  scalars, typed keys for typed keys.

  Args:
    directory: Checkpoint root directory.
    target: Pytree of concrete or abstract (``jax.ShapeDtypeStruct``) leaves
      with the saved structure, e.g. the freshly initialized state, or
      ``jax.eval_shape`` of its initializer.
    step: Step to restore; the latest complete step when ``None``.

  Returns:
    A pytree with the treedef of ``target`` holding the saved values.

  Raises:
    CheckpointError: Naming the path, when the directory or step is missing
      or unfinished, a file is unreadable or corrupt (checksum mismatch), or
      the target's key paths, shapes or PRNG key types differ from the saved
      ones. Nothing is returned in that case.

  Examples:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...   _ = save_checkpoint(d, 1, {"k": jax.random.key(7)})
    ...   r = restore_checkpoint(d, {"k": jax.random.key(0)})
    >>> seven = jax.random.key_data(jax.random.key(7))
    >>> bool((jax.random.key_data(r["k"]) == seven).all())
    True
  """
  directory = Path(directory).resolve()
  manifest = read_manifest(directory, step=step)
  step, entries = manifest["step"], manifest["leaves"]
  step_dir = directory / str(step)
  target_leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
  checkpoint_io.check_structure(entries, target_leaves, step_dir)
  with _manager(directory, read_only=True) as mngr:
    try:
      stored = {
          f"{i:05d}": np.zeros(e["stored_shape"], jnp.dtype(e["dtype"]))
          for i, e in enumerate(entries)
      }
    except TypeError as e:
      raise checkpoint_io.corrupt(step_dir / _MANIFEST, _short(e),
                                  directory) from e
    try:
      state = mngr.restore(
          step,
          args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(stored)}),
      )[_STATE]
    except Exception as e:  # TensorStore errors come as ValueError/Exception.
      raise checkpoint_io.corrupt(
          step_dir / _STATE, "its array files cannot be read "
          f"({checkpoint_io.io_cause(e)})", directory) from e
  by_path = {}
  for i, entry in enumerate(entries):
    data = np.asarray(state[f"{i:05d}"])
    if (data.dtype.name != entry["dtype"]
        or list(data.shape) != entry["stored_shape"]
        or checkpoint_io.sha256(data) != entry["sha256"]):
      raise checkpoint_io.corrupt(
          step_dir / _STATE, f"leaf {entry['path']} fails its SHA-256 check",
          directory)
    by_path[entry["path"]] = (data, entry)
  leaves = []
  for path, leaf in target_leaves:
    data, entry = by_path[jax.tree_util.keystr(path)]
    leaves.append(checkpoint_io.like_target(data, entry, leaf, step_dir))
  return jax.tree_util.tree_unflatten(treedef, leaves)


@dataclasses.dataclass(frozen=True)
class Checkpointer:
  """The three functions bound to one directory and retention policy.

  Attributes:
    directory: Checkpoint root directory.
    max_to_keep: Number of most recent checkpoints kept by ``save``.

  Examples:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...   ckpt = Checkpointer(d, max_to_keep=1)
    ...   _ = ckpt.save(0, {"x": 1.5})
    ...   _ = ckpt.save(1, {"x": 2.5})
    ...   ckpt.latest_step(), ckpt.restore({"x": 0.0}), available_steps(d)
    (1, {'x': 2.5}, [1])
  """

  directory: str | os.PathLike
  max_to_keep: int | None = 2

  def save(self, step: int, tree: Any) -> Path:
    """See ``save_checkpoint``."""
    return save_checkpoint(self.directory, step, tree,
                           max_to_keep=self.max_to_keep)

  def restore(self, target: Any, *, step: int | None = None) -> Any:
    """See ``restore_checkpoint``."""
    return restore_checkpoint(self.directory, target, step=step)

  def latest_step(self) -> int | None:
    """See ``latest_step``."""
    return latest_step(self.directory)
