"""Unlearning cost in examples, and budgets under a compute cap.

Cost is counted as examples that go through a forward and backward pass: a
paired step costs its forget and its retain batch, a forget or retain step
its one batch; forward-only passes (SCRUB's teacher, SalUn's one-off
saliency gradient, stop checks) are not counted. The Original's training
cost is its epochs times its training-set size, Retrain's the same over D_r.
"""

import dataclasses
from typing import Optional

from oeu_jax.engine import schedule


def _step_cost(kind: int, num_forget: int, num_retain: int, config) -> int:
  bf = min(config.forget_batch_size or config.batch_size, num_forget)
  br = min(config.batch_size, num_retain)
  return ((bf if kind in (schedule.PAIRED, schedule.FORGET) else 0)
          + (br if kind in (schedule.PAIRED, schedule.RETAIN) else 0))


def cost_per_epoch(num_forget: int, num_retain: int, config,
                   epoch: int = 0) -> int:
  """Examples through a forward+backward pass in one unlearning epoch."""
  return sum(steps * _step_cost(kind, num_forget, num_retain, config)
             for kind, steps in schedule.epoch_plan(num_forget, num_retain,
                                                    config, epoch))


def cost_of_steps(num_forget: int, num_retain: int, config,
                  steps: int) -> int:
  """Examples through a forward+backward pass in the first ``steps`` steps
  (a run's kinds in their plan order)."""
  left, cost, epoch = int(steps), 0, 0
  while left > 0:
    plan = schedule.epoch_plan(num_forget, num_retain, config, epoch)
    if not sum(n for _, n in plan):
      break
    for kind, n in plan:
      k = min(n, left)
      cost += k * _step_cost(kind, num_forget, num_retain, config)
      left -= k
    epoch += 1
  return cost


def capped(num_forget: int, num_retain: int, config, *,
           budget: float, max_epochs: Optional[int] = None):
  """``config`` with as many whole epochs as cost at most ``budget``
  examples (at most ``max_epochs``); where one epoch already costs more,
  one epoch cut to the steps that fit (``max_steps``, at least 1).

  Args:
    num_forget: |D_f|.
    num_retain: |D_r|.
    config: an :class:`~oeu_jax.engine.unlearn.UnlearnConfig` with its
      schedule resolved (``unlearn.resolve``).
    budget: examples (e.g. 0.1 x the Original's epochs x |D|).
    max_epochs: an upper bound on the epochs (None: none).

  Raises:
    ValueError: a budget that is not positive.
  """
  if not budget > 0:
    raise ValueError(f"a compute budget must be > 0 examples, got {budget}")
  epochs, spent = 0, 0
  while epochs < (max_epochs or 10_000):
    nxt = cost_per_epoch(num_forget, num_retain, config, epochs)
    if spent + nxt > budget:
      break
    spent += nxt
    epochs += 1
  if epochs:
    return dataclasses.replace(config, epochs=epochs, max_steps=None)
  fit, left = 0, budget
  for kind, n in schedule.epoch_plan(num_forget, num_retain, config, 0):
    c = _step_cost(kind, num_forget, num_retain, config)
    k = min(n, int(left // c)) if c else n
    fit, left = fit + k, left - k * c
    if k < n:
      break
  return dataclasses.replace(config, epochs=1, max_steps=max(1, fit))
