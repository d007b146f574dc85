"""What runs in one work directory share: a lock, identities, results.json.

* :func:`lock`: ``WORKDIR/.lock`` is held (``flock``) while a run goes on,
  with the holder's pid inside; a second run in the same work directory
  fails at once with :class:`WorkdirBusy` naming that pid. The kernel drops
  the lock of a process that dies, so a stale lock file (SIGKILL, a crash)
  is simply taken over. Within a process the lock is re-entrant.
* :func:`config_id` and :func:`run_label`: the identities of a
  configuration's records and of each of its checkpoint directories
  (claimed with :func:`oeu_jax.engine.checkpointing.claim`, so that a checkpoint
  copied from another configuration is refused).
* :func:`merge_results`: ``results.json`` keeps the records of every
  configuration run in the work directory, keyed by (``config``,
  ``method``, ``seed``); a rerun replaces its own records and nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Iterator
from typing import Optional
from typing import Sequence

from oeu_jax.runner import config as config_lib
from oeu_jax.runner import layout as layout_lib

LOCK = ".lock"
# Metrics equal in a legacy record (one written before records carried
# "config") and a new one of the same description: the same model.
_SAME_MODEL_KEYS = ("ua", "ra", "ta", "mia_efficacy", "forget_entropy")
_DESCRIPTION = ("dataset", "model", "bits", "scenario", "forget_class",
                "forget_ratio", "method", "seed")
# Locks this process holds: path -> [fd, depth] (re-entrant within it).
_held: dict[Path, list] = {}


class WorkdirBusy(RuntimeError):
  """Another process runs in the same work directory."""

  def __init__(self, workdir: Path, pid: Optional[int]):
    self.workdir, self.pid = workdir, pid
    who = f"process {pid}" if pid else "another process"
    super().__init__(
        f"{workdir} is in use by {who} (lock file {workdir / LOCK}); wait "
        "for that run to finish or use another work directory")


def _pid_in(fd: int) -> Optional[int]:
  for _ in range(20):  # The holder writes its pid right after locking.
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if text.isdigit():
      return int(text)
    time.sleep(0.01)
  return None


def _alive(pid: Optional[int]) -> bool:
  if not pid or pid == os.getpid():
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _acquire(path: Path) -> int:
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno in (errno.EAGAIN, errno.EACCES):
      pid = _pid_in(fd)
      os.close(fd)
      raise WorkdirBusy(path.parent, pid) from None
    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
      os.close(fd)
      raise
    # No flock on this filesystem: the pid inside decides (stale if dead).
    pid = _pid_in(fd)
    if _alive(pid):
      os.close(fd)
      raise WorkdirBusy(path.parent, pid) from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
  return fd


@contextlib.contextmanager
def lock(workdir: str | os.PathLike) -> Iterator[None]:
  """Holds ``workdir``'s lock while the block runs.

  Raises:
    WorkdirBusy: another living process holds it (naming its pid).
    OSError: the lock file cannot be created.
  """
  workdir = Path(workdir).resolve()
  path = workdir / LOCK
  if path in _held:
    _held[path][1] += 1
  else:
    workdir.mkdir(parents=True, exist_ok=True)
    _held[path] = [_acquire(path), 1]
  try:
    yield
  finally:
    _held[path][1] -= 1
    if not _held[path][1]:
      fd = _held.pop(path)[0]
      os.ftruncate(fd, 0)  # No pid: nobody holds it now.
      os.close(fd)


def config_id(cfg: config_lib.RunConfig) -> str:
  """The identity of a resolved configuration's records.

  ``<dataset>-<model>-<bits>-<model fingerprint>/<scenario>/<unlearning
  fingerprint>``: what the Original and Retrain depend on, the scenario,
  and the unlearning budget, optimizer and method hyperparameters.

  Examples:
    >>> config_id(config_lib.resolve(config_lib.RunConfig()))[:37]
    'digits-cnn-w4a8-5b270538b7/random0.1/'
  """
  run_dir = layout_lib.Layout.of(cfg, "/").run_dir
  tag = layout_lib.fingerprint(
      dataclasses.replace(cfg.unlearn, checkpoint_every=0), cfg.optimizer,
      cfg.method_hparams, *(
          (tuple((m, dataclasses.replace(u, checkpoint_every=0))
                 for m, u in cfg.method_unlearn),)
          if cfg.method_unlearn else ()))
  return f"{run_dir.name}/{layout_lib.scenario_tag(cfg)}/{tag}"


def run_label(layout: layout_lib.Layout, seed: int, stage: str) -> str:
  """A checkpoint directory's identity: its path under ``checkpoints/``
  (``digits-cnn-w4a8-5b270538b7/seed0/original``), whose names carry the
  configuration's fingerprints."""
  return layout.checkpoint_dir(seed, stage).relative_to(
      layout.run_dir.parent).as_posix()


def read_results(path: str | os.PathLike) -> list[dict]:
  """The records of ``results.json`` (``[]`` when there is none).

  Raises:
    ValueError: the file is not a JSON list of records (naming it).
  """
  path = Path(path)
  if not path.exists():
    return []
  try:
    records = json.loads(path.read_text())
  except ValueError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); move it away to "
                     "start a new one") from None
  if not isinstance(records, list) or not all(
      isinstance(r, dict) and "method" in r and "seed" in r for r in records):
    raise ValueError(f"{path} is not a list of result records; move it away "
                     "to start a new one")
  return records


def _key(r: dict) -> tuple:
  return r.get("config"), r["method"], r["seed"]


def _superseded(old: dict, new: dict) -> bool:
  """A legacy record (no ``config``) of the model a new record reports."""
  return (old.get("config") is None
          and all(old.get(k) == new.get(k) for k in _DESCRIPTION)
          and all(old.get(k) == new.get(k) for k in _SAME_MODEL_KEYS))


def merge(old: Sequence[dict], new: Sequence[dict]) -> list[dict]:
  """``old`` with ``new`` merged in by (``config``, ``method``, ``seed``).

  A new record replaces the old one of its key in place; other old records
  stay, except legacy ones (without ``config``) that report the same model
  as a new record (same description and metrics); the rest of ``new``
  follows in order.
  """
  by_key = {_key(r): r for r in new}
  out, placed = [], set()
  for r in old:
    k = _key(r)
    if k in by_key:
      if k not in placed:
        out.append(by_key[k])
        placed.add(k)
    elif not any(_superseded(r, n) for n in new):
      out.append(r)
  return out + [r for r in new if _key(r) not in placed]


def merge_results(records: Sequence[dict],
                  path: str | os.PathLike) -> list[dict]:
  """Merges ``records`` into ``results.json`` (atomically); returns all."""
  merged = merge(read_results(path), records)
  layout_lib.write_results(merged, path)
  return merged

