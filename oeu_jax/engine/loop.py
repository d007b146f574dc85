"""The one host loop: every training and unlearning run is driven here.

:func:`run` drives a compiled step over absolute steps ``[start, total)`` of
one or more *lanes* (a lane is one seed's run: :func:`oeu_jax.engine.train.fit`
and :func:`oeu_jax.engine.unlearn.unlearn` drive one, the vmapped seeds of
:mod:`oeu_jax.engine.seeds` drive N as one program). It owns what every run
shares: restoring from checkpoints (:func:`restore`), timing the ahead-of-time
compilation apart from the steps, the progress bar, the non-finite policy,
the checkpoint cadence, the final save and the per-lane metric history
(with each checkpoint it stores the lane's :mod:`oeu_jax.engine.tally`, so that
a run's seconds and metric means cover its steps across resumes).

What a step computes is the caller's: an *executor*
(:mod:`oeu_jax.engine.executors`) maps ``(state, a, b, active)`` to
``(state, metrics)`` for the steps ``[a, b)``. One-lane runs
(:func:`run_one`) use :class:`oeu_jax.engine.executors.ScanExecutor`
(``lax.scan`` over a chunk of steps per dispatch), or
:class:`oeu_jax.engine.executors.StepExecutor` (one dispatch per step) where
:func:`oeu_jax.engine.executors.loops_slow_convs`.

Batch order and rngs are pure functions of ``(seed, step)`` in the
executors, so a run resumed here from a checkpoint is bit-identical to an
uninterrupted one.
"""

import logging
import time
from typing import Any
from typing import Callable
from typing import Mapping
from typing import NamedTuple
from typing import Optional
from typing import Sequence
from typing import Union

import jax
import numpy as np

from oeu_jax.engine import checkpointing
from oeu_jax.engine import executors
from oeu_jax.engine import progress as progress_lib
from oeu_jax.engine import tally as tally_lib

# Steps per dispatch of a one-lane run (:func:`run_one`) at most: bounds the
# host index arrays and the stacked metrics of a chunk.
CHUNK = 100


class Outcome(NamedTuple):
  """What :func:`run` returns.

  Attributes:
    state: the final (possibly stacked) state.
    seconds: wall seconds of the steps, compilation excluded.
    compile_seconds: ahead-of-time compilation seconds during the run.
    metrics: per lane, ``{name: (steps,) array}`` over the steps it ran, in
      order, ``"finite"`` included.
    skipped: per lane, the number of non-finite steps that were skipped.
    stopped: per lane, the step at which its stopping rule ended it, or
      None (it ran to its total).
  """
  state: Any
  seconds: float
  compile_seconds: float
  metrics: list
  skipped: list
  stopped: Optional[list] = None


def check_budget(config: Any) -> None:
  """The fields every run's config has (``epochs``, ``batch_size``, ``lr``,
  ``checkpoint_every``); raises ValueError naming the first bad one."""
  if int(config.epochs) != config.epochs or config.epochs < 0:
    raise ValueError(f"epochs must be an integer >= 0, got {config.epochs}")
  if int(config.batch_size) != config.batch_size or config.batch_size <= 0:
    raise ValueError(f"batch_size must be an integer > 0, got "
                     f"{config.batch_size}")
  if not (np.isfinite(config.lr) and config.lr > 0):
    raise ValueError(f"lr must be a finite number > 0, got {config.lr}")
  if (int(config.checkpoint_every) != config.checkpoint_every
      or config.checkpoint_every <= 0):
    raise ValueError(f"checkpoint_every must be an integer > 0, got "
                     f"{config.checkpoint_every}")


def resume_step(checkpoint_dir: Optional[str], total: int, *,
                resume: bool) -> Optional[int]:
  """The step to restore from ``checkpoint_dir`` before running ``total``.

  Args:
    checkpoint_dir: the run's checkpoint directory, or None.
    total: the run's number of steps.
    resume: whether an unfinished run may be continued.

  Returns:
    The latest complete step (``total`` for a finished run), or None when
    there is nothing to restore.

  Raises:
    UnfinishedRunError: an unfinished run and ``resume=False`` (a
      ValueError).
    CheckpointError: a checkpoint past ``total``.
  """
  if checkpoint_dir is None:
    return None
  last = checkpointing.latest_step(checkpoint_dir)
  if last is None:
    return None
  if last > total:
    raise checkpointing.CheckpointError(
        f"{checkpoint_dir} holds a checkpoint of step {last}, past the "
        f"{total} steps of this run (written with another config?); use "
        f"another directory")
  if last < total and not resume and stopped_at(checkpoint_dir) != last:
    raise UnfinishedRunError(checkpoint_dir, last, total)
  return last


def stopped_at(checkpoint_dir: Optional[str]) -> Optional[int]:
  """The step at which a stopping rule ended the run saved in
  ``checkpoint_dir`` (its latest checkpoint is then that step), or None."""
  if checkpoint_dir is None:
    return None
  last = checkpointing.latest_step(checkpoint_dir)
  if last is None:
    return None
  t = checkpointing.read_manifest(checkpoint_dir, step=last)["meta"].get(
      "tally") or {}
  return last if t.get("stopped_at") == last else None


class UnfinishedRunError(ValueError):
  """An unfinished run found where ``resume=False`` (the CLI words it with
  its own flag); ``directory``, ``step`` and ``total`` say which."""

  def __init__(self, directory, step: int, total: int):
    self.directory, self.step, self.total = directory, step, total
    super().__init__(
        f"{directory} holds an unfinished run (checkpoint at step {step} of "
        f"{total}): pass resume=True to continue it, or delete that "
        "directory to start over")


def restore(template: Any, checkpoint_dir: Optional[str], total: int, *,
            resume: bool, desc: str = "run") -> Any:
  """``template``, or its latest checkpoint in ``checkpoint_dir``.

  Raises:
    ValueError / CheckpointError: as :func:`resume_step` and
      :func:`oeu_jax.engine.checkpointing.restore_checkpoint`.
  """
  last = resume_step(checkpoint_dir, total, resume=resume)
  if last is None:
    return template
  state = checkpointing.restore_checkpoint(checkpoint_dir, template,
                                           step=last)
  logging.info("resumed %s from step %d", desc, last)
  return state


def kept_note(checkpoint_dir: Optional[str]) -> str:
  """Where the last good state is, for non-finite errors (naming the path)."""
  if checkpoint_dir is None:
    return " (no checkpoint directory was given)"
  last = checkpointing.latest_step(checkpoint_dir)
  if last is None:
    return f"; no checkpoint was saved yet in {checkpoint_dir}"
  return f"; the last good checkpoint is step {last} in {checkpoint_dir}"


def chunks(g0: int, g1: int, size: int, *every: Optional[int]):
  """``[a, b)`` pieces of ``[g0, g1)`` ending on multiples of ``size`` and
  of each of ``every`` that is given (the checkpoint and stop cadences)."""
  g = g0
  while g < g1:
    b = min(g1, (g // size + 1) * size)
    for e in every:
      if e:
        b = min(b, (g // e + 1) * e)
    yield g, b
    g = b


def run(execute: Callable, state: Any, *, starts: Sequence[int],
        totals: Sequence[int], checkpoint_dirs: Sequence[Optional[str]],
        checkpoint_every: int, chunk: int = 1,
        lane: Callable[[Any, int], Any] = lambda state, i: state,
        skip_nonfinite: bool = False,
        failure: Callable[[int, int], str] = lambda i, step: f"step {step}",
        progress: bool = False, desc: str = "run",
        stop: Optional[Callable[[Any, int], bool]] = None,
        stop_every: int = 0) -> Outcome:
  """Drives ``execute`` over every lane's steps ``[starts[i], totals[i])``.

  Args:
    execute: ``(state, a, b, active) -> (state, metrics)`` for steps
      ``[a, b)`` (see the module docstring); it must leave an inactive
      lane's state unchanged. It may carry ``compile_seconds``.
    state: the initial state (all lanes).
    starts: per lane, the first step to run (after a restore).
    totals: per lane, its number of steps.
    checkpoint_dirs: per lane, a directory or None.
    checkpoint_every: save each lane every this many steps and at its end.
    chunk: steps per ``execute`` call (dispatch); chunks also end on
      checkpoint steps.
    lane: ``(state, i) -> lane i's state`` (what is checkpointed).
    skip_nonfinite: count non-finite steps instead of raising (the executor
      has already dropped their updates).
    failure: ``(lane, step) -> text`` naming a non-finite step.
    progress: a tqdm bar on a terminal, plain lines otherwise
      (:func:`oeu_jax.engine.progress.bar`).
    desc: its label.
    stop: ``(lane_state, i) -> bool``, checked for every running lane after
      each multiple of ``stop_every`` steps (:mod:`oeu_jax.engine.stopping`):
      True ends lane ``i`` there (its final checkpoint is that step, its tally
      records ``stopped_at``). None: every lane runs to its total.
    stop_every: the steps between checks (chunks end on its multiples).

  Returns:
    An :class:`Outcome`.

  Raises:
    FloatingPointError: a non-finite step (unless ``skip_nonfinite``),
      naming it and the last good checkpoint.
  """
  n = len(starts)
  if stop is not None and stop_every < 1:
    raise ValueError(f"stop_every must be >= 1 with a stopping rule, got "
                     f"{stop_every}")
  totals = [int(t) for t in totals]  # A stopped lane's ends at its stop.
  stopped = [None] * n
  g0, g1 = min(starts), max(totals)
  saving = any(d is not None for d in checkpoint_dirs)
  bar = progress_lib.bar(g1 - g0, desc) if progress and g1 > g0 else None
  compile0 = getattr(execute, "compile_seconds", 0.0)
  history = [[] for _ in range(n)]
  skipped = [0] * n
  starts_a, totals_a = np.asarray(starts), np.asarray(totals)
  tallies = [tally_lib.restored(None if d is None or not s else
                                checkpointing.read_manifest(d, step=s)["meta"],
                                s) for d, s in zip(checkpoint_dirs, starts)]
  tallied = [0] * n  # Per lane, history entries already in its tally.
  base = [(t["seconds"], t["compile_seconds"]) for t in tallies]
  t0 = time.perf_counter()

  def save(i: int, step: int, state: Any) -> None:
    """Lane ``i``'s checkpoint of ``step`` with its tally (the time of a
    vmapped program shared among its lanes, as :mod:`oeu_jax.engine.seeds`)."""
    compiled = getattr(execute, "compile_seconds", 0.0) - compile0
    seconds = time.perf_counter() - t0 - compiled
    tallies[i] = tally_lib.advance(
        tallies[i], history[i][tallied[i]:],
        seconds=base[i][0] + seconds / n,
        compile_seconds=base[i][1] + compiled / n)
    tallied[i] = len(history[i])
    checkpointing.save_checkpoint(checkpoint_dirs[i], step, lane(state, i),
                                  meta={"tally": tallies[i]})

  for a, b in chunks(g0, g1, chunk, checkpoint_every if saving else None,
                    stop_every if stop is not None else None):
    steps = np.arange(a, b)[:, None]
    active = (steps >= starts_a[None]) & (steps < totals_a[None])
    if not active.any():  # Between one lane's end and another's restart.
      if bar is not None:
        bar.update(b - a)
      continue
    state, m = execute(state, a, b, active)
    finite = np.asarray(m["finite"], bool)
    bad = active & ~finite
    if bad.any() and not skip_nonfinite:
      k, i = map(int, np.argwhere(bad)[0])
      raise FloatingPointError(
          f"{failure(i, a + k)}{kept_note(checkpoint_dirs[i])}")
    check = stop is not None and b % stop_every == 0
    for i in range(n):
      rows = active[:, i]
      if rows.any():
        history[i].append({key: np.asarray(v)[rows, i]
                           for key, v in m.items()})
        skipped[i] += int(bad[:, i].sum())
      ran_to_b = bool(rows.any()) and starts[i] < b <= totals[i]
      if check and ran_to_b and b < totals[i] and stop(lane(state, i), i):
        totals[i] = stopped[i] = b
        totals_a[i] = b
        tallies[i] = dict(tallies[i], stopped_at=b)
      ckpt = checkpoint_dirs[i]
      if ckpt is not None and ran_to_b and (b % checkpoint_every == 0
                                            or stopped[i] == b):
        save(i, b, state)
    if bar is not None:
      bar.update(b - a)
    if max(totals) <= b:  # Every lane is done (some stopped early).
      if bar is not None and g1 > b:
        bar.update(g1 - b)
      break
  jax.block_until_ready(state)
  if bar is not None:
    bar.close()
  compile_s = getattr(execute, "compile_seconds", 0.0) - compile0
  seconds = time.perf_counter() - t0 - compile_s
  for i, ckpt in enumerate(checkpoint_dirs):
    if (ckpt is not None and starts[i] < totals[i]
        and checkpointing.latest_step(ckpt) != totals[i]):
      save(i, totals[i], state)
  metrics = [{key: np.concatenate([h[key] for h in hist]) for key in hist[0]}
             if hist else {} for hist in history]
  for i, s in enumerate(skipped):
    if s:
      logging.warning("%s: skipped %d of %d steps with non-finite values",
                      desc if n == 1 else f"{desc} lane {i}", s,
                      totals[i] - starts[i])
  return Outcome(state, seconds, compile_s, metrics, skipped, stopped)


def run_one(step: Union[Callable, Mapping[Any, Callable]], state: Any,
            data: Sequence[Any],
            indices: Callable[[int], Sequence[np.ndarray]], *, total: int,
            checkpoint_dir: Optional[str], checkpoint_every: int,
            skip_nonfinite: bool, failure: Callable[[int], str], mesh=None,
            donate: bool = False, progress: bool = False,
            desc: str = "run",
            stop: Optional[Callable[[Any, int], bool]] = None,
            stop_every: int = 0, chunk: Optional[int] = None,
            programs: Optional[executors.Programs] = None,
            kind_of: Optional[Callable[[int], Any]] = None,
            kind_sizes: Optional[Callable[[], Mapping]] = None) -> Outcome:
  """:func:`run` for one lane with a
  :class:`~oeu_jax.engine.executors.ScanExecutor`.

  ``failure(step)`` names a non-finite step, ``stop`` and ``stop_every``
  are :func:`run`'s. ``chunk`` bounds the steps per dispatch; the scanned
  length is ``chunk`` capped by ``total`` and by the checkpoint and stop
  cadences, a function of the run's config alone, so that every seed (and a
  resumed run) uses one program, shared through ``programs``. ``None``:
  :data:`CHUNK`, or one dispatch per step (a
  :class:`~oeu_jax.engine.executors.StepExecutor`) where
  :func:`~oeu_jax.engine.executors.loops_slow_convs`. ``donate`` donates
  ``state``'s buffers. With several step kinds, ``step`` is ``{kind:
  step}``, ``kind_of(g)`` names step ``g``'s kind and ``kind_sizes()``
  gives each kind's longest run of steps (the executors' contract).
  """
  if chunk is not None and chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  start = int(state.step)
  first = executors.as_steps(step)[(kind_of or (lambda g: None))(
      min(start, max(total - 1, 0)))]
  if chunk is None and start < total and executors.loops_slow_convs(
      first, state, data, indices(start)):
    execute = executors.StepExecutor(step, data, indices, kind_of=kind_of,
                                     mesh=mesh, donate=donate,
                                     programs=programs)
    size = 1
  else:
    size = min([chunk or CHUNK, max(total, 1)] + [
        e for e in (checkpoint_every if checkpoint_dir is not None else 0,
                    stop_every if stop is not None else 0) if e > 0])
    execute = executors.ScanExecutor(step, data, indices, size=size,
                                     kind_of=kind_of, sizes=kind_sizes,
                                     mesh=mesh, donate=donate,
                                     programs=programs)
  return run(execute, state, starts=[start], totals=[total],
             checkpoint_dirs=[checkpoint_dir],
             checkpoint_every=checkpoint_every, chunk=size,
             skip_nonfinite=skip_nonfinite,
             failure=lambda i, s: failure(s), progress=progress, desc=desc,
             stop=stop, stop_every=stop_every)


def mean_metrics(metrics: dict) -> dict:
  """Mean of each metric over the finite steps (``"finite"`` dropped)."""
  good = np.asarray(metrics.get("finite", ()), bool)
  if not good.any():
    return {}
  return {k: float(np.mean([float(v) for v in np.asarray(vals)[good]]))
          for k, vals in metrics.items() if k != "finite"}
