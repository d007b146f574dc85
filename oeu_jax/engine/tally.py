"""A run's accounting across resumes: elapsed seconds and metric sums.

:func:`oeu_jax.engine.loop.run` stores a *tally* in the manifest of every
checkpoint it saves (``meta["tally"]``) and continues the tally of the step
it resumes from, so that the time and the training metrics of a run cover
all of its steps, however often it was interrupted, and a finished run
reused from its checkpoint still reports them. A tally is a JSON dict:

* ``first_step``, ``step``: the steps ``[first_step, step)`` it covers
  (``first_step`` is 0 unless the run was resumed from a checkpoint written
  before tallies existed);
* ``seconds``, ``compile_seconds``: wall seconds of the steps and of
  compilation (a vmapped program's divided among its lanes, as
  :mod:`oeu_jax.engine.seeds` does);
* ``finite_steps``, ``skipped_steps``: steps with finite metrics, and
  non-finite steps that were skipped;
* ``sums``: per metric, the sum over the finite steps.

Sums are updated at every checkpoint with ``math.fsum`` over the steps since
the previous one, so a resumed run's tally equals an uninterrupted run's
bit for bit (the times aside).
"""

import math
from typing import Any
from typing import Mapping
from typing import Optional
from typing import Sequence

import numpy as np


def empty(first_step: int = 0) -> dict:
  """A tally of no steps, starting at ``first_step``."""
  return {"first_step": int(first_step), "step": int(first_step),
          "seconds": 0.0, "compile_seconds": 0.0, "finite_steps": 0,
          "skipped_steps": 0, "sums": {}}


def restored(meta: Optional[Mapping[str, Any]], step: int) -> dict:
  """The tally to continue from the checkpoint of ``step``.

  Args:
    meta: that checkpoint's ``meta`` (from
      :func:`oeu_jax.engine.checkpointing.read_manifest`), or None.
    step: the step restored (0: a fresh run).

  Returns:
    The stored tally when it ends at ``step``; else an empty one starting
    at ``step`` (a checkpoint written before tallies existed).
  """
  t = (meta or {}).get("tally")
  if step and isinstance(t, dict) and t.get("step") == step:
    return t
  return empty(step)


def advance(t: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *,
            seconds: float, compile_seconds: float) -> dict:
  """``t`` extended by the steps of ``rows``.

  Args:
    t: the tally so far.
    rows: metric chunks in step order, ``{name: (steps,) array}`` with a
      boolean ``"finite"`` (the history of :func:`oeu_jax.engine.loop.run`).
    seconds: the run's total step seconds now.
    compile_seconds: its total compilation seconds now.

  Returns:
    A new tally.
  """
  finite = [np.asarray(r["finite"], bool) for r in rows]
  new = dict(t, sums=dict(t["sums"]), seconds=float(seconds),
             compile_seconds=float(compile_seconds))
  new["step"] = t["step"] + sum(len(f) for f in finite)
  new["finite_steps"] = t["finite_steps"] + sum(int(f.sum()) for f in finite)
  new["skipped_steps"] = t["skipped_steps"] + sum(int((~f).sum())
                                                  for f in finite)
  names = [k for k in (rows[0] if rows else {}) if k != "finite"]
  for name in names:
    values = [float(v) for r, f in zip(rows, finite)
              for v in np.asarray(r[name])[f]]
    new["sums"][name] = math.fsum([t["sums"].get(name, 0.0), *values])
  return new


def means(t: Optional[Mapping[str, Any]]) -> dict:
  """Each metric's mean over the finite steps, and ``skipped_steps`` when
  some were skipped (the form of :func:`oeu_jax.engine.unlearn.summarize`)."""
  if not t or not t["finite_steps"]:
    return {}
  out = {k: v / t["finite_steps"] for k, v in t["sums"].items()}
  if t["skipped_steps"]:
    out["skipped_steps"] = t["skipped_steps"]
  return out
