"""Stop when forgotten: an optional early-stopping rule for any method.

A rule is written ``METRIC>=THRESHOLD`` and checked on the whole forget set
D_f, in eval mode, every ``every`` steps (``UnlearnConfig.stop_every``):

* ``ua>=T``: the unlearning accuracy UA = 100 x (1 - accuracy on D_f) has
  reached ``T`` (percent). Any method; class-wise forgetting's Retrain has
  UA near 100, so e.g. ``ua>=95`` stops a method once it forgets.
* ``entropy>=T``: the mean normalized prediction entropy on D_f,
  ``H(softmax) / log K`` in [0, 1], has reached ``T``. OEU's objective:
  e.g. ``entropy>=0.9``.

A run that meets its rule at step ``s`` ends there: its state is the state
after ``s`` steps of the full run (the learning-rate schedule keeps the
full run's length, so the stopped run is a prefix of the unstopped one),
its final checkpoint is step ``s`` with ``stopped_at = s`` in its tally,
and a resumed run that finds it is finished. The default is no rule: every
method runs its whole budget, as its reference code does (SalUn, Sparse,
SCRUB and Q-MUL have no stopping rule).
"""

import functools
import re
from typing import Callable
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from oeu_jax.nn import models

METRICS = ("ua", "entropy")
_RULE = re.compile(r"^\s*([a-z_]+)\s*>=\s*([-+0-9.eE]+)\s*$")


class StopRule(NamedTuple):
  """``metric >= threshold`` on D_f (see the module docstring)."""
  metric: str
  threshold: float


def parse(text: Optional[str]) -> Optional[StopRule]:
  """The rule of ``text`` (``"ua>=95"``, ``"entropy>=0.9"``), None for none.

  Raises:
    ValueError: a malformed rule, an unknown metric or a threshold out of
      its range (UA in [0, 100], entropy in [0, 1]), in one line.
  """
  if text is None or str(text).strip().lower() in ("", "none"):
    return None
  m = _RULE.match(str(text).lower())
  if not m:
    raise ValueError(f"stop rule {text!r} must read METRIC>=THRESHOLD, e.g. "
                     f"'ua>=95' or 'entropy>=0.9'")
  metric = m.group(1)
  if metric not in METRICS:
    raise ValueError(f"stop rule {text!r}: unknown metric {metric!r}; "
                     f"valid: {', '.join(METRICS)}")
  try:
    threshold = float(m.group(2))
  except ValueError:
    raise ValueError(f"stop rule {text!r}: threshold {m.group(2)!r} is not "
                     "a number") from None
  top = 100.0 if metric == "ua" else 1.0
  if not 0.0 <= threshold <= top:
    raise ValueError(f"stop rule {text!r}: a {metric} threshold must be in "
                     f"[0, {top:g}]")
  return StopRule(metric, threshold)


def forget_value(model, params, batch_stats, x: jax.Array, y: jax.Array, *,
                 metric: str) -> jax.Array:
  """The rule's metric on D_f ``(x, y)`` in eval mode (a scalar)."""
  logits = models.apply_model(model, params, batch_stats, x, train=False)[0]
  logits = logits.astype(jnp.float32)
  if metric == "ua":
    return 100.0 * jnp.mean(jnp.argmax(logits, -1) != y)
  logp = jax.nn.log_softmax(logits)
  h = -jnp.sum(jnp.exp(logp) * logp, -1)
  return jnp.mean(h) / jnp.log(logits.shape[-1])


@functools.partial(jax.jit, static_argnums=(0, 5))
def _value(model, params, batch_stats, x, y, metric):
  return forget_value(model, params, batch_stats, x, y, metric=metric)


def make_check(model, rule: StopRule) -> Callable[..., bool]:
  """``check(params, batch_stats, x, y) -> bool``: has D_f met ``rule``?

  One jitted forward pass over D_f per call (compiled once per shape).
  """
  def check(params, batch_stats, x, y) -> bool:
    value = float(_value(model, params, batch_stats, x, y, rule.metric))
    return bool(np.isfinite(value) and value >= rule.threshold)
  return check
