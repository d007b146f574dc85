"""What :mod:`oeu_jax.engine.checkpointing` needs around orbax's I/O.

* Fitting stored leaves to a restore target (:func:`check_structure`,
  :func:`like_target`): key paths, shapes and PRNG-key kinds are compared
  before any array is read; values come back as the target leaves' types.
* Short error texts (:func:`short`, :func:`listed`, :func:`io_cause`): a
  storage error becomes one line naming its cause (``No space left on
  device (ENOSPC)``), never TensorStore's specs.
* :func:`quiet_background_failures`: while a save runs, the tracebacks that
  orbax's writer threads log (``absl`` errors) and the ``Event loop is
  closed`` callbacks TensorStore raises after a failed write are dropped;
  the failure itself reaches the caller as one exception.
* :func:`remove_unfinished`: a failed save's temporary directory is removed
  at once (on a full disk it holds the space the next attempt needs).
* The run identity of a checkpoint directory (:func:`claim`,
  :func:`read_identity`): ``identity.json`` names the configuration whose
  checkpoints the directory holds; every save copies it into the step's
  manifest and every restore compares the two.
"""

from __future__ import annotations

import contextlib
import errno as errno_lib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any
from typing import Iterator
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "oeu_jax.checkpoint/1"
IDENTITY_JSON = "identity.json"
TMP_MARK = ".orbax-checkpoint-tmp"
_MAX_LISTED = 8
# TensorStore reports the OS error inside its message, e.g.
# "... No space left on device [os_error_code='28']".
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_STATUS_CODE = re.compile(r"^([A-Z][A-Z_]{3,}):")


class CheckpointError(ValueError):
  """A checkpoint is missing, unfinished, corrupt, foreign, or unwritable."""


def short(error: BaseException, limit: int = 120) -> str:
  """First line of an error, cut short (TensorStore errors embed specs)."""
  text = str(error).strip().splitlines()
  text = text[0] if text else ""
  if len(text) > limit:
    text = text[:limit] + "..."
  return f"{type(error).__name__}: {text}"


def listed(items: list) -> str:
  """The first few items, comma-separated, and how many more there are."""
  head = ", ".join(str(i) for i in items[:_MAX_LISTED])
  more = len(items) - _MAX_LISTED
  return head + (f", ... ({more} more)" if more > 0 else "")


def _chain(error: BaseException) -> Iterator[BaseException]:
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _errno_text(code: int) -> str:
  name = errno_lib.errorcode.get(code)
  return os.strerror(code) + (f" ({name})" if name else "")


def io_cause(error: BaseException) -> str:
  """The cause of a storage failure in a few words.

  ``No space left on device (ENOSPC)`` for an ``OSError`` or a TensorStore
  error carrying an OS error code; else TensorStore's status code
  (``DATA_LOSS``) or the exception's type and first line.

  Examples:
    >>> io_cause(OSError(28, "No space left on device"))
    'No space left on device (ENOSPC)'
    >>> io_cause(ValueError("DATA_LOSS: Error reading ... tspec {...}"))
    'DATA_LOSS'
  """
  for e in _chain(error):
    if isinstance(e, OSError) and e.errno:
      return _errno_text(e.errno)
    match = _OS_ERROR_CODE.search(str(e))
    if match:
      return _errno_text(int(match.group(1)))
  match = _STATUS_CODE.match(str(error).strip())
  if match:
    return match.group(1)
  return short(error, limit=80)


def corrupt(path: Path, what: str, directory: Path) -> CheckpointError:
  """The one-line error of a corrupt checkpoint, saying what to do."""
  return CheckpointError(f"Checkpoint {path} is corrupt: {what}; delete "
                         f"{directory} to retrain it.")


class _DropRecords(logging.Filter):
  """Drops warnings and errors (the writer threads' tracebacks)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno < logging.WARNING


def _closed_loop(unraisable) -> bool:
  value = getattr(unraisable, "exc_value", None)
  return isinstance(value, RuntimeError) and "Event loop is closed" in str(
      value)


class _DropOrphanedWrites(logging.Filter):
  """Drops asyncio's "Task exception was never retrieved" for orbax's
  writes (the sibling writes of a failed one, collected later)."""

  def filter(self, record: logging.LogRecord) -> bool:
    text = record.getMessage()
    return not ("never retrieved" in text and "orbax" in text)


def _drop_closed_loop_errors() -> None:
  """Wraps ``sys.unraisablehook`` (once) to drop closed-loop callbacks, and
  filters orbax's orphaned write tasks out of the ``asyncio`` log."""
  previous = sys.unraisablehook
  if getattr(previous, "_oeu_drops_closed_loop", False):
    return
  logging.getLogger("asyncio").addFilter(_DropOrphanedWrites())

  def hook(unraisable):
    if not _closed_loop(unraisable):
      previous(unraisable)

  hook._oeu_drops_closed_loop = True
  sys.unraisablehook = hook


@contextlib.contextmanager
def quiet_background_failures() -> Iterator[None]:
  """Silences orbax's writer threads while a save runs.

  When a write fails (a full disk, a read-only folder), orbax's threads log
  the error with its traceback through ``absl`` before the exception reaches
  the caller: those records are dropped while the save runs. TensorStore's
  callbacks of the failed writes then hit the closed event loop of the save
  (``RuntimeError: Event loop is closed``, reported through
  ``sys.unraisablehook``), some of them after the exception has reached the
  caller; the hook is therefore wrapped for the rest of the process to drop
  exactly that error (others still reach the previous hook), and asyncio's
  "Task exception was never retrieved" records of orbax's sibling writes
  are filtered out of the ``asyncio`` log. The failure itself is raised to
  the caller as usual.
  """
  absl = logging.getLogger("absl")
  drop = _DropRecords()
  _drop_closed_loop_errors()
  absl.addFilter(drop)
  try:
    yield
  finally:
    absl.removeFilter(drop)


def remove_unfinished(directory: Path, step: int) -> None:
  """Removes the temporary directories of a failed save of ``step``."""
  if not directory.is_dir():
    return
  for p in directory.iterdir():
    if p.name.startswith(f"{step}{TMP_MARK}"):
      shutil.rmtree(p, ignore_errors=True)


def unfinished(directory: Path) -> list[str]:
  """Names of interrupted saves' temporary directories in ``directory``."""
  if not directory.is_dir():
    return []
  return sorted(p.name for p in directory.iterdir() if TMP_MARK in p.name)


def read_identity(directory: str | os.PathLike) -> Optional[str]:
  """The configuration ``directory`` holds checkpoints of, or None."""
  path = Path(directory) / IDENTITY_JSON
  try:
    return str(json.loads(path.read_text())["config"])
  except FileNotFoundError:
    return None
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"{path} is not a valid identity file ({short(e)}); "
                     f"delete {path.parent} to retrain it") from e


def claim(directory: str | os.PathLike, config: str) -> None:
  """Marks ``directory`` as holding checkpoints of ``config``.

  Args:
    directory: a checkpoint root directory (created if missing).
    config: the configuration's identity (any string, e.g. the run's
      fingerprinted directory names).

  Raises:
    CheckpointError: the directory already belongs to another
      configuration (it was copied or moved from another run).
    OSError: the identity file cannot be written.
  """
  directory = Path(directory)
  present = read_identity(directory)
  if present == config:
    return
  if present is not None:
    raise CheckpointError(
        f"{directory} holds checkpoints of configuration {present}, not "
        f"{config}; delete {directory} to retrain it")
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / IDENTITY_JSON
  tmp = path.with_name(path.name + ".tmp")
  try:
    tmp.write_text(json.dumps({"config": config}))
    tmp.replace(path)
  except OSError:
    tmp.unlink(missing_ok=True)
    raise


def is_key(leaf: Any) -> bool:
  """Whether ``leaf`` is a typed PRNG key (``jax.random.key``)."""
  dtype = getattr(leaf, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(
      dtype, jax.dtypes.prng_key
  )


def check_structure(entries: list[dict], target_leaves: list,
                    step_dir: Path) -> None:
  """Raises CheckpointError unless the target has the saved paths, shapes
  and PRNG-key kinds (``target_leaves``: ``tree_flatten_with_path``)."""
  saved = {e["path"]: e for e in entries}
  wanted = {}
  for path, leaf in target_leaves:
    wanted[jax.tree_util.keystr(path)] = leaf
  missing = [p for p in saved if p not in wanted]
  unexpected = [p for p in wanted if p not in saved]
  problems = []
  if missing:
    problems.append(f"in the checkpoint but not the target: {listed(missing)}")
  if unexpected:
    problems.append(
        f"in the target but not the checkpoint: {listed(unexpected)}"
    )
  shapes, kinds = [], []
  for p, leaf in wanted.items():
    if p not in saved:
      continue
    entry = saved[p]
    if tuple(entry["shape"]) != tuple(np.shape(leaf)):
      shapes.append(f"{p}: saved {tuple(entry['shape'])}, target "
                    f"{tuple(np.shape(leaf))}")
    if (entry["kind"] == "key") != is_key(leaf):
      kinds.append(f"{p}: saved {entry['kind']}, target "
                   f"{'key' if is_key(leaf) else 'array'}")
  if shapes:
    problems.append(f"shapes differ: {listed(shapes)}")
  if kinds:
    problems.append(f"PRNG key vs array: {listed(kinds)}")
  if problems:
    raise CheckpointError(
        f"Checkpoint {step_dir} does not match the target structure; "
        + "; ".join(problems) + f"; delete {step_dir.parent} to retrain it."
    )


def like_target(data: np.ndarray, entry: dict, target: Any,
                step_dir: Path) -> Any:
  """Converts stored data to the type and dtype of the target leaf."""
  if entry["kind"] == "key":
    key = jax.random.wrap_key_data(jnp.asarray(data), impl=entry["impl"])
    if key.dtype != target.dtype:
      raise CheckpointError(
          f"Checkpoint {step_dir} stores {entry['path']} as a {key.dtype} PRNG"
          f" key, the target expects {target.dtype}."
      )
    return key
  if isinstance(target, (bool, int, float, complex)):
    return type(target)(data.item())
  if isinstance(target, np.generic):
    return data.astype(target.dtype)[()]
  if isinstance(target, np.ndarray):
    return data.astype(target.dtype)
  value = data.astype(target.dtype)
  sharding = getattr(target, "sharding", None)
  if sharding is not None:
    return jax.device_put(value, sharding)
  return jnp.asarray(value)


def sha256(array: np.ndarray) -> str:
  return hashlib.sha256(np.asarray(array, order="C").tobytes()).hexdigest()


def to_host(keystr: str, leaf: Any) -> tuple[np.ndarray, dict]:
  """Converts a leaf to the stored NumPy array and its manifest entry."""
  entry = {"path": keystr, "kind": "array"}
  if is_key(leaf):
    data = np.asarray(jax.random.key_data(leaf))
    entry.update(kind="key", impl=str(jax.random.key_impl(leaf)))
    shape = tuple(leaf.shape)
  elif isinstance(leaf, (bool, int, float, complex, np.generic, np.ndarray,
                         jax.Array)):
    data = np.asarray(leaf)
    shape = data.shape
  else:
    raise TypeError(
        f"Cannot checkpoint leaf {keystr} of type {type(leaf).__name__}; leaves"
        " must be arrays, PRNG keys or Python/NumPy scalars."
    )
  if data.dtype == object or data.dtype.kind not in "biufcV":
    raise TypeError(
        f"Cannot checkpoint leaf {keystr} with dtype {data.dtype} (e.g. an int"
        " too large for int64)."
    )
  data = np.asarray(data, order="C")  # Not ascontiguousarray: 0-d -> (1,).
  entry.update(
      shape=list(shape),
      dtype=data.dtype.name,
      stored_shape=list(data.shape),
      sha256=sha256(data),
  )
  return data, entry


def check_manifest(manifest: Any, step_dir: Path) -> list[dict]:
  keys = ("path", "kind", "shape", "dtype", "stored_shape", "sha256")
  if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
      or not isinstance(manifest.get("leaves"), list)
      or not all(isinstance(e, dict) and all(k in e for k in keys)
                 for e in manifest["leaves"])):
    raise corrupt(step_dir / "manifest", f"not an {FORMAT} manifest",
                  step_dir.parent)
  config, expected = manifest.get("config"), read_identity(step_dir.parent)
  if config is not None and expected is not None and config != expected:
    raise CheckpointError(
        f"Checkpoint {step_dir} was written by configuration {config}, not "
        f"{expected} (the one {step_dir.parent} belongs to); delete "
        f"{step_dir.parent} to retrain it.")
  return manifest["leaves"]
