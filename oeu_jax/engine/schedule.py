"""Which batches each unlearning step sees: the schedules, as pure functions.

A *schedule* (``UnlearnConfig.schedule``) cuts an unlearning run into
steps: ``"paired"`` (one forget and one retain batch a step),
``"sequential"`` (a D_f pass, then a D_r pass, per epoch; with
``forget_epochs`` the D_f pass only in the first epochs), ``"forget_only"``
and ``"retain_only"``. Each step has a *kind* (:data:`PAIRED`,
:data:`FORGET`, :data:`RETAIN`), the batches the method sees; the host
dispatches each kind's compiled program (:mod:`oeu_jax.engine.executors`).
Batch order is a pure function of ``(seed, epoch)``, so a resumed run sees
the batches an uninterrupted one does. ``config`` is an
:class:`oeu_jax.engine.unlearn.UnlearnConfig` (read by attribute).
"""

import math
from typing import Callable
from typing import Optional

import numpy as np

from oeu_jax import data as data_lib
from oeu_jax.algorithm.methods import base

PAIRINGS = ("max", "forget")
SCHEDULES = ("paired", "sequential", "forget_only", "retain_only")
# Step kinds: which batches a step sees.
PAIRED, FORGET, RETAIN = base.PAIRED, base.FORGET, base.RETAIN
KINDS = (PAIRED, FORGET, RETAIN)


def _batches(num_forget: int, num_retain: int, config):
  """(forget batch, retain batch, forget batches, retain batches)."""
  bf = min(config.forget_batch_size or config.batch_size, num_forget)
  br = min(config.batch_size, num_retain)
  return bf, br, math.ceil(num_forget / bf), math.ceil(num_retain / br)


def epoch_plan(num_forget: int, num_retain: int, config,
               epoch: int) -> list:
  """``[(kind, steps), ...]`` of one epoch under ``config.schedule``."""
  _, _, nfb, nrb = _batches(num_forget, num_retain, config)
  schedule = config.schedule or "paired"
  if schedule == "paired":
    return [(PAIRED, nfb if config.pairing == "forget" else max(nfb, nrb))]
  if schedule == "forget_only":
    return [(FORGET, nfb)]
  if schedule == "retain_only":
    return [(RETAIN, nrb)]
  fe = config.forget_epochs
  return ([(FORGET, nfb)] if fe is None or epoch < fe else []) + [
      (RETAIN, nrb)]


def steps_per_epoch(num_forget: int, num_retain: int,
                    config) -> int:
  """Steps in the first unlearning epoch (all epochs but SCRUB-style
  ``forget_epochs`` schedules have this length)."""
  return sum(c for _, c in epoch_plan(num_forget, num_retain, config, 0))


def cycled_indices(n: int, batch: int, seed: int, epoch: int, k: int,
                   stream: int) -> np.ndarray:
  """Batch ``k`` of an epoch over a set of size ``n``, cycling the set.

  The epoch's sequence is the concatenation of permutations of ``range(n)``,
  each a pure function of ``(seed, stream, epoch, cycle)``.
  """
  start, stop = k * batch, (k + 1) * batch
  first, last = start // n, (stop - 1) // n
  seq = np.concatenate([
      data_lib.epoch_order(n, seed * 1000003 + stream, epoch * 65537 + c)
      for c in range(first, last + 1)])
  off = first * n
  return seq[start - off:stop - off].astype(np.int32)


def _locate(num_forget: int, num_retain: int, config,
            step: int) -> tuple:
  """(epoch, kind, k): step ``step`` is batch ``k`` of its epoch's ``kind``
  pass."""
  spe = steps_per_epoch(num_forget, num_retain, config)
  if config.forget_epochs is None or config.schedule != "sequential":
    epoch, k = divmod(step, spe)
  else:  # SCRUB-style: longer epochs first, then retain-only ones.
    head = min(step // spe, config.forget_epochs)
    rest = step - head * spe
    tail = sum(c for _, c in epoch_plan(num_forget, num_retain, config,
                                        config.forget_epochs))
    epoch, k = ((head, rest) if head < config.forget_epochs
                else (head + rest // tail, rest % tail))
  for kind, count in epoch_plan(num_forget, num_retain, config, epoch):
    if k < count:
      return epoch, kind, k
    k -= count
  raise AssertionError("unreachable: step past its epoch")


def step_indices(num_forget: int, num_retain: int, config,
                 seed: int, step: int) -> tuple:
  """Batch indices ``(forget, retain)`` of unlearning step ``step``.

  Under the sequential and one-set schedules the batch the step does not
  see is zeros (never read: see :func:`step_kind`).
  """
  bf, br, _, _ = _batches(num_forget, num_retain, config)
  epoch, kind, k = _locate(num_forget, num_retain, config, step)
  f = (cycled_indices(num_forget, bf, seed, epoch, k, 1) if kind != RETAIN
       else np.zeros((bf,), np.int32))
  r = (cycled_indices(num_retain, br, seed, epoch, k, 2) if kind != FORGET
       else np.zeros((br,), np.int32))
  return f, r


def step_kind(num_forget: int, num_retain: int, config,
              step: int, paired_kind: Optional[Callable] = None) -> int:
  """The kind of unlearning step ``step`` (:data:`PAIRED`, :data:`FORGET`
  or :data:`RETAIN`): which batches the method sees. ``paired_kind`` is the
  method's (``Method.paired_kind``), used under the paired schedule."""
  kind = _locate(num_forget, num_retain, config, step)[1]
  if kind == PAIRED and paired_kind is not None:
    return int(paired_kind(step, steps_per_epoch(num_forget, num_retain,
                                                 config)))
  return kind


def kind_runs(num_forget: int, num_retain: int, config,
              paired_kind: Optional[Callable] = None) -> dict:
  """``{kind: longest run of consecutive steps of that kind}`` over the
  whole run: the scanned executors size each kind's program to it."""
  total = num_steps(num_forget, num_retain, config)
  runs, prev, length = {}, None, 0
  for g in range(total):
    kind = step_kind(num_forget, num_retain, config, g, paired_kind)
    length = length + 1 if kind == prev else 1
    prev = kind
    runs[kind] = max(runs.get(kind, 0), length)
  return runs


def num_steps(num_forget: int, num_retain: int,
              config) -> int:
  """Steps of an unlearning run over sets of these sizes."""
  epochs = int(config.epochs)
  head = epochs
  if config.schedule == "sequential" and config.forget_epochs is not None:
    head = min(epochs, int(config.forget_epochs))
  tail = sum(c for _, c in epoch_plan(num_forget, num_retain, config,
                                      head)) if head < epochs else 0
  total = head * steps_per_epoch(num_forget, num_retain, config) + (
      epochs - head) * tail
  cap = getattr(config, "max_steps", None)
  return total if cap is None else min(total, int(cap))
