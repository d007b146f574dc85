"""Stop when forgotten: an optional early-stopping rule for any method.

A rule is written ``METRIC>=THRESHOLD`` (or ``<=``) and checked on D_f (at
most ``defaults.STOP_SAMPLE`` examples of it, evenly spaced), in eval mode,
every ``every`` steps (``UnlearnConfig.stop_every``):

* ``ua>=T``: the unlearning accuracy UA = 100 x (1 - accuracy on D_f) has
  reached ``T`` (percent). Any method; class-wise forgetting's Retrain has
  UA near 100, so e.g. ``ua>=95`` stops a method once it forgets.
* ``entropy>=T``: the mean normalized prediction entropy on D_f,
  ``H(softmax) / log K`` in [0, 1], has reached ``T``. OEU's objective:
  e.g. ``entropy>=0.9``.
* ``conf<=T``: the mean true-class probability on D_f is at most ``T``.
* ``ra>=T``: the accuracy (percent) on a sample of D_r is at least ``T``.
* Clauses joined by ``&`` must all hold (``ua>=99&conf<=0.1``).
* ``auto``: the Retrain-free rule, the default of the methods of
  :data:`oeu_jax.defaults.OPEN_ENDED` under the protocol defaults. It
  becomes a concrete rule once the run's Original is known
  (:func:`auto_rule`): class-wise ``ua>=99&conf<=1/K``; otherwise ``ua>=T``
  with ``T`` the UA that :mod:`oeu_jax.evaluation.estimate` expects of
  Retrain, 100 minus the Original's accuracy on a held-out slice labelled
  as D_f is (D_f then looks like data the model never saw); both with
  ``&ra>=`` the Original's RA minus one point. The runner
  resolves it per seed; :func:`unlearn` takes the resolved rule as
  ``stop_rule``.

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

from oeu_jax import defaults
from oeu_jax.nn import models

METRICS = ("ua", "entropy", "conf", "ra")
AUTO = "auto"
# What ``auto`` resolves to, as text: part of an auto run's checkpoint
# name, so that a run stopped under an older resolution is never reused.
AUTO_RULE_ID = ("auto-v3: class ua>=100-slack&conf<=1/K; else ua>=heldout "
                "UA; both &ra>=Original RA-slack")
_RULE = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


class StopRule(NamedTuple):
  """``metric op threshold`` on D_f, and every clause of ``also`` (see the
  module docstring)."""
  metric: str
  threshold: float
  op: str = ">="
  also: tuple = ()


def _clause(text: str, clause: str) -> StopRule:
  m = _RULE.match(clause.lower())
  if not m:
    raise ValueError(f"stop rule {text!r} must read METRIC>=THRESHOLD, e.g. "
                     f"'ua>=95' or 'entropy>=0.9' (clauses joined by '&'), "
                     f"or be 'auto' or 'none'")
  metric, op = m.group(1), m.group(2)
  if metric not in METRICS:
    raise ValueError(f"stop rule {text!r}: unknown metric {metric!r}; "
                     f"valid: {', '.join(METRICS)}")
  try:
    threshold = float(m.group(3))
  except ValueError:
    raise ValueError(f"stop rule {text!r}: threshold {m.group(3)!r} is not "
                     "a number") from None
  top = 100.0 if metric in ("ua", "ra") else 1.0
  if not 0.0 <= threshold <= top:
    raise ValueError(f"stop rule {text!r}: a {metric} threshold must be in "
                     f"[0, {top:g}]")
  return StopRule(metric, threshold, op)


def parse(text: Optional[str]) -> Optional[StopRule]:
  """The rule of ``text`` (``"ua>=95"``, ``"entropy>=0.9"``,
  ``"ua>=99&conf<=0.1"``), None for none.

  Raises:
    ValueError: a malformed rule, an unknown metric or a threshold out of
      its range (UA in [0, 100], entropy and conf in [0, 1]), in one line.
  """
  if text is None or str(text).strip().lower() in ("", "none"):
    return None
  if str(text).strip().lower() == AUTO:
    return StopRule(AUTO, float("nan"))
  first, *rest = [_clause(str(text), c) for c in str(text).split("&")]
  return first._replace(also=tuple(rest))


def clauses(rule: StopRule) -> tuple:
  """``rule``'s clauses, each without ``also``."""
  return (rule._replace(also=()),) + tuple(rule.also)


def auto_rule(targets: dict, scenario: str,
              num_classes: int = 10) -> StopRule:
  """The ``auto`` rule of one run.

  Class-wise: UA >= ``100 - CLASS_SLACK`` and D_f's mean true-class
  probability at most ``1 / K`` (a model that never saw the class gives
  it far less). Otherwise UA >= the estimated Retrain's UA (``targets``,
  :func:`oeu_jax.evaluation.estimate.targets`). Always also: RA on a D_r
  sample at least the Original's minus ``RA_SLACK`` (``targets["ra"]``),
  so that a run never stops in a damaged state (Q-MUL stopped after its
  first epoch on digits hidden classes with RA 95 and MIA 0-50; at the end
  of its budget RA 99.4 and MIA 100).
  """
  keep = StopRule("ra", float(np.clip(targets["ra"] - defaults.RA_SLACK,
                                      0.0, 100.0)))
  if scenario == "class":
    return StopRule("ua", 100.0 - defaults.CLASS_SLACK, ">=",
                    (StopRule("conf", 1.0 / num_classes, "<="), keep))
  return StopRule("ua", float(np.clip(targets["ua"], 0.0, 100.0)), ">=",
                  (keep,))


def rule_text(rule: Optional[StopRule]) -> Optional[str]:
  """``"ua>=97.5"`` (what :func:`parse` reads back), None for none."""
  if rule is None:
    return None
  return "&".join(f"{c.metric}{c.op}{c.threshold:.6g}"
                  for c in clauses(rule))


def _metrics(logits: jax.Array, y: jax.Array) -> dict:
  """Every rule metric of one set's logits (pure, traced once)."""
  logits = logits.astype(jnp.float32)
  logp = jax.nn.log_softmax(logits)
  hit = jnp.argmax(logits, -1) == y
  return {"ua": 100.0 * jnp.mean(~hit), "ra": 100.0 * jnp.mean(hit),
          "conf": jnp.mean(jnp.exp(jnp.take_along_axis(logp, y[:, None],
                                                       -1))),
          "entropy": jnp.mean(-jnp.sum(jnp.exp(logp) * logp, -1))
                     / jnp.log(logits.shape[-1])}


def forget_value(model, params, batch_stats, x: jax.Array, y: jax.Array, *,
                 metric: str) -> jax.Array:
  """The rule's metric in eval mode (a scalar): on D_f ``(x, y)``, or for
  ``ra`` the accuracy (percent) on the D_r sample ``(x, y)``."""
  logits = models.apply_model(model, params, batch_stats, x, train=False)[0]
  return _metrics(logits, y)[metric]


@functools.partial(jax.jit, static_argnums=(0, 5))
def _values(model, params, batch_stats, x, y, metrics):
  """Every metric of ``metrics`` from one forward pass over ``(x, y)``."""
  logits = models.apply_model(model, params, batch_stats, x, train=False)[0]
  out = _metrics(logits, y)
  return jnp.stack([out[m] for m in metrics])


def make_check(model, rule: StopRule) -> Callable[..., bool]:
  """``check(params, batch_stats, x, y, rx=None, ry=None) -> bool``: has
  D_f ``(x, y)`` met ``rule`` (its ``ra`` clauses on the D_r sample ``(rx,
  ry)``)?

  One jitted forward pass per clause and call (compiled once per shape).

  Raises:
    ValueError: an unresolved ``auto`` rule (see :func:`auto_rule`).
  """
  if rule.metric == AUTO:
    raise ValueError("stop rule 'auto' needs the Retrain-free targets of "
                     "its run: resolve it with stopping.auto_rule (the "
                     "runner does) and pass it as stop_rule")
  on_f = tuple(c for c in clauses(rule) if c.metric != "ra")
  on_r = tuple(c for c in clauses(rule) if c.metric == "ra")

  def met(cs, params, batch_stats, x, y) -> bool:
    values = np.asarray(_values(model, params, batch_stats, x, y,
                                tuple(c.metric for c in cs)))
    return all(bool(np.isfinite(v) and (v >= c.threshold if c.op == ">="
                                        else v <= c.threshold))
               for c, v in zip(cs, values))

  def check(params, batch_stats, x, y, rx=None, ry=None) -> bool:
    if on_r and rx is None:
      raise ValueError("an 'ra' stop clause needs a D_r sample")
    # D_r is read only once D_f meets its clauses.
    return ((not on_f or met(on_f, params, batch_stats, x, y))
            and (not on_r or met(on_r, params, batch_stats, rx, ry)))

  def warm(params, batch_stats, x, y, rx=None, ry=None) -> None:
    """Compiles both passes now (before a run's timer starts)."""
    if on_f:
      met(on_f, params, batch_stats, x, y)
    if on_r and rx is not None:
      met(on_r, params, batch_stats, rx, ry)
  check.warm = warm
  return check
