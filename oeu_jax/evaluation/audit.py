"""The NeurIPS 2023 Machine Unlearning Challenge score (NumPy, host only).

A per-example test of forgetting: for every forget example, the logit-scaled
confidence ``log p_y - log(1 - p_y)`` of each model of an *unlearned*
population (many unlearning runs from one Original) is compared with that of
a *retrained* population (many models trained without D_f). How well one
decision rule tells the two samples apart gives a per-example privacy
``epsilon``; an example earns points ``1, 1/2, 1/4, ...`` for epsilon in the
bins ``[0, 0.5), [0.5, 1), ...`` up to ``ceil(log(N - 1))``, and the forget
score ``F`` is the mean over D_f. Indistinguishable populations score 1,
separable ones 0. The challenge's final score multiplies ``F`` by the
utility ratios ``(RA_u / RA_r) * (TA_u / TA_r)`` of population-mean
accuracies (:func:`final_score`).

Per example, as in the reference:

* the population with the larger median confidence is "positive";
* if the smaller of the two ranges (max - min) is under 1% of the larger,
  epsilon is the cap (50): a collapsed, peaky unlearned distribution;
* else two families of decision rules are scanned, 100 thresholds per unit
  of confidence: single thresholds (predict positive at or above ``t``) over
  the range of both samples, and double thresholds (predict positive inside
  ``[l, r]``) around the peakier sample;
* a rule with FPR = FNR = 0 (and TPR = TNR = 1) gives epsilon = inf (then
  capped at 50); a rule with exactly one of FPR, FNR zero is discarded
  (too few samples to trust it); every other rule gives
  ``max(log(1 - delta - FPR) - log(FNR), log(1 - delta - FNR) - log(FPR))``,
  clipped below at 0, with ``delta = 1e-5``; epsilon is the largest.

Deviations from the reference (each changes no score on non-degenerate
input, except by last-bit rounding of interior single thresholds):

1. Confidences come from a float64 log-softmax
   (:func:`oeu_jax.evaluation.logit_math.log_softmax`), with the reference's
   ``1e-45`` floor applied in the log domain (``logaddexp(log p, log 1e-45)``);
   the reference exponentiates (float32) logits before casting to float64, so a
   probability under about 1e-38 underflows there to the floor; here it
   keeps its value until it meets the same floor.
2. Rates are counted with ``np.searchsorted`` on the sorted sample instead
   of a dense (models x thresholds) comparison on a GPU; the comparisons
   (``<=``, ``>=``, ``<``) are the same, rates are float32 as there, and
   epsilon is computed in float32 as there. Single thresholds use
   ``np.linspace`` where the reference uses ``torch.linspace``: the two may
   round interior thresholds differently in the last bit (endpoints agree).
3. Where no rule survives (both samples one and the same constant; the
   reference stops on an ``assert``), epsilon is 0: the populations cannot
   be told apart.
4. The two populations must have the same number of models (the reference
   needs it too, through ``np.where``), at least 2 each.

References:
  Triantafillou et al., "Are we making progress in unlearning? Findings from
  the first NeurIPS unlearning competition", 2024.
  https://arxiv.org/abs/2406.09073
  ``metric.py`` of https://github.com/google-deepmind/unlearning_evaluation
  at commit ffae0ff (``compute_logit_scaled_confidence``,
  ``_get_double_threshold_rates``, ``_get_single_threshold_rates``,
  ``_get_epsilons``, ``compute_forget_score_from_confs``) and ``main.py``
  (the final score).
"""

from __future__ import annotations

import math
from typing import Any
from typing import NamedTuple

import numpy as np

from oeu_jax.evaluation import logit_math

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
BUCKET = 0.5
# Double-threshold rules: right thresholds within BUFFER of the peakier
# sample's maximum, left ones within BUFFER of (right - its range).
BUFFER = 2.0
# Below this ratio of ranges the unlearned sample counts as collapsed.
RANGE_RATIO = 0.01
_LOG_FLOOR = math.log(1e-45)


class PopulationScore(NamedTuple):
  """The forget score of one unlearned population against a retrained one.

  Attributes:
    forget_score: ``F``, the mean points over the forget examples, in [0, 1].
    epsilons: per forget example epsilon (float64, ``[n]``), in [0, 50].
    points: per forget example points (``[n]``).
    n_models: models per population (sets the bins).
  """
  forget_score: float
  epsilons: np.ndarray
  points: np.ndarray
  n_models: int


def logit_scaled_confidence(logits: Any, labels: Any) -> np.ndarray:
  """``log p_y - log(1 - p_y)`` per example, from a float64 log-softmax.

  Args:
    logits: ``[..., n, K]`` (a leading model axis is fine).
    labels: ``[n]`` integer labels in ``[0, K)``.

  Returns:
    float64 ``[..., n]``, each probability floored at 1e-45 as in the
    reference (so values lie within about +-103.6).

  Raises:
    ValueError: shapes that disagree, fewer than 2 classes, labels out of
      range or logits that are not finite.

  Examples:
    >>> logit_scaled_confidence(np.log([[0.75, 0.25]]), [0]).round(6)
    array([1.098612])
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  if logits.ndim < 2 or labels.ndim != 1 or logits.shape[-2] != len(labels):
    raise ValueError(f"logits [..., n, K] and labels [n] disagree: "
                     f"{logits.shape} vs {labels.shape}")
  k = logits.shape[-1]
  if k < 2:
    raise ValueError(f"need at least 2 classes, got {k}")
  if labels.size and (labels.min() < 0 or labels.max() >= k):
    raise ValueError(f"labels must lie in [0, {k}), got range "
                     f"[{labels.min()}, {labels.max()}]")
  if not np.isfinite(logits).all():
    raise ValueError("logits are not all finite")
  log_p = logit_math.log_softmax(logits)
  onehot = np.arange(k) == labels[:, None]
  log_py = np.sum(np.where(onehot, log_p, 0.0), axis=-1)
  others = np.where(onehot, -np.inf, log_p)
  top = np.max(others, axis=-1, keepdims=True)
  log_rest = top[..., 0] + np.log(np.sum(np.exp(others - top), axis=-1))
  return (np.logaddexp(log_py, _LOG_FLOOR)
          - np.logaddexp(log_rest, _LOG_FLOOR))


def _counts_inside(sorted_x: np.ndarray, left: np.ndarray,
                   right: np.ndarray) -> np.ndarray:
  """How many of ``sorted_x`` satisfy ``left <= x <= right``."""
  n = (np.searchsorted(sorted_x, right, side="right")
       - np.searchsorted(sorted_x, left, side="left"))
  return np.maximum(n, 0)


def _rates(n_pos_pp: np.ndarray, n_neg_pp: np.ndarray, m: int) -> tuple:
  """TPR, FNR, FPR, TNR (float32, as the reference's means) from counts."""
  m32 = np.float32(m)
  tpr = n_pos_pp.astype(np.float32) / m32
  fnr = (m - n_pos_pp).astype(np.float32) / m32
  fpr = n_neg_pp.astype(np.float32) / m32
  tnr = (m - n_neg_pp).astype(np.float32) / m32
  return tpr, fnr, fpr, tnr


def double_threshold_rates(pos: np.ndarray, neg: np.ndarray) -> tuple:
  """Rates of the double-threshold rules (positive inside ``[l, r]``).

  The peakier sample (smaller range) is taken as positive; right
  thresholds span its maximum +-2 and, for each, 400 left thresholds span
  ``right - width`` +-2 (``width``: its range), 100 per unit.

  Args:
    pos, neg: the two samples of one example, ``[m]`` each.

  Returns:
    ``(tpr, fnr, fpr, tnr)``, float32 ``[num_rules]``, in the frame where
    the peakier sample is positive.
  """
  pos_diff, neg_diff = np.ptp(pos), np.ptp(neg)
  width = neg_diff if pos_diff > neg_diff else pos_diff
  if pos_diff >= neg_diff:
    pos, neg = neg, pos
  lo = pos.min() + width - BUFFER
  hi = pos.max() + BUFFER
  right = np.linspace(lo, hi, num=int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
  n_left = int(np.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT))
  left = np.linspace(right - width - BUFFER, right - width + BUFFER,
                     num=n_left, axis=1).reshape(-1)
  right = np.repeat(right, n_left)
  return _rates(_counts_inside(np.sort(pos), left, right),
                _counts_inside(np.sort(neg), left, right), len(pos))


def single_threshold_rates(pos: np.ndarray, neg: np.ndarray) -> tuple:
  """Rates of the single-threshold rules (positive at or above ``t``).

  Args:
    pos, neg: the two samples of one example, ``[m]`` each.

  Returns:
    ``(tpr, fnr, fpr, tnr)``, float32 ``[num_rules]``: thresholds span the
    range of both samples, 100 per unit (none when they are one constant).
  """
  both = np.concatenate([pos, neg])
  lo, hi = both.min(), both.max()
  t = np.linspace(lo, hi, int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
  m = len(pos)
  at_or_above = lambda x: m - np.searchsorted(np.sort(x), t, side="left")
  return _rates(at_or_above(pos), at_or_above(neg), m)


def rule_epsilons(tpr, fnr, fpr, tnr, *, delta: float = DELTA) -> np.ndarray:
  """Epsilon of each rule; NaN for a discarded rule (one of FPR, FNR zero).

  Args:
    tpr, fnr, fpr, tnr: float32 rates of the rules.
    delta: the delta of (epsilon, delta).

  Returns:
    float32 epsilons: inf for a perfectly separating rule, NaN where
    discarded, else ``max(log(1-delta-FPR) - log(FNR),
    log(1-delta-FNR) - log(FPR))`` clipped below at 0 (NaN where both terms
    are NaN, i.e. FPR and FNR above ``1 - delta``, as in the reference).
  """
  separated = (fpr + fnr == 0) & (tpr + tnr == 2)
  one_zero = fpr * fnr == 0
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.stack([np.log(1 - delta - fpr) - np.log(fnr),
                      np.log(1 - delta - fnr) - np.log(fpr)])
    both_nan = np.isnan(terms).all(axis=0)
    eps = np.clip(np.where(both_nan, np.nan,
                           np.nanmax(np.where(np.isnan(terms), -np.inf,
                                              terms), axis=0)), 0, None)
  eps = np.where(one_zero, np.float32(np.nan), eps.astype(np.float32))
  return np.where(separated, np.float32(np.inf), eps)


def example_epsilon(pos: np.ndarray, neg: np.ndarray, *,
                    delta: float = DELTA) -> float:
  """Epsilon of one forget example from its two samples of confidences.

  Args:
    pos: the sample with the larger median, ``[m]``.
    neg: the other sample, ``[m]``.
    delta: the delta of (epsilon, delta).

  Returns:
    Epsilon in [0, :data:`EPSILON_CAP`].
  """
  pos = np.asarray(pos, np.float64)
  neg = np.asarray(neg, np.float64)
  pos_diff, neg_diff = np.ptp(pos), np.ptp(neg)
  largest, smallest = max(pos_diff, neg_diff), min(pos_diff, neg_diff)
  if largest > 0 and smallest / largest < RANGE_RATIO:
    return EPSILON_CAP
  # largest == 0: the reference's 0/0 is NaN and the test fails; go on.
  rates = [np.concatenate(r) for r in zip(double_threshold_rates(pos, neg),
                                          single_threshold_rates(pos, neg))]
  eps = rule_epsilons(*rates, delta=delta)
  kept = eps[~np.isnan(eps)]
  if kept.size == 0:  # Deviation 3: the reference asserts here.
    return 0.0
  return float(min(np.max(kept), EPSILON_CAP))


def max_epsilon(n_models: int) -> float:
  """``ceil(log(n_models - 1))``: where the bins of points end."""
  if n_models < 2:
    raise ValueError(f"need at least 2 models per population, got {n_models}")
  return float(np.ceil(np.log(n_models - 1)))


def bucket_points(n_models: int) -> tuple:
  """The bins and their points for populations of ``n_models``.

  Args:
    n_models: models per population.

  Returns:
    ``(starts, points)``: bin ``i`` is ``[starts[i], starts[i] + 0.5)`` and
    earns ``points[i] = 2 ** -i``; epsilon past the last bin earns 0.

  Examples:
    >>> bucket_points(8)
    ([0.0, 0.5, 1.0, 1.5], [1.0, 0.5, 0.25, 0.125])
  """
  top = max_epsilon(n_models)
  starts, points = [], []
  start, p = 0.0, 1.0
  while start + BUCKET <= top:
    starts.append(start)
    points.append(p)
    p /= 2
    start += BUCKET
  return starts, points


def points_of(epsilons: Any, n_models: int) -> np.ndarray:
  """Points of each epsilon (0 past the last bin)."""
  starts, pts = bucket_points(n_models)
  eps = np.asarray(epsilons, np.float64)
  out = np.zeros(eps.shape)
  for start, p in reversed(list(zip(starts, pts))):
    out = np.where(eps < start + BUCKET, p, out)
  return out


def eps_histogram(epsilons: Any, n_models: int) -> dict:
  """Counts of epsilons per bin of points, and past the last bin.

  Returns:
    ``{"edges": [0, 0.5, ..., top], "counts": [...], "beyond": k}``:
    ``counts[i]`` examples in ``[edges[i], edges[i+1])``, ``beyond`` at or
    above ``top`` (0 points; the capped ones included).
  """
  starts, _ = bucket_points(n_models)
  edges = starts + [starts[-1] + BUCKET] if starts else [0.0]
  eps = np.asarray(epsilons, np.float64)
  counts = [int(np.sum((eps >= a) & (eps < b)))
            for a, b in zip(edges[:-1], edges[1:])]
  return {"edges": edges, "counts": counts,
          "beyond": int(np.sum(eps >= edges[-1]))}


def score_populations(unlearned_confs: Any, retrained_confs: Any, *,
                      delta: float = DELTA) -> PopulationScore:
  """The forget score ``F`` of an unlearned against a retrained population.

  Args:
    unlearned_confs: ``[m, n]`` confidences (:func:`logit_scaled_confidence`)
      of the n forget examples under m unlearned models.
    retrained_confs: ``[m, n]`` the same under m retrained models.
    delta: the delta of (epsilon, delta).

  Returns:
    A :class:`PopulationScore`.

  Raises:
    ValueError: shapes that disagree, fewer than 2 models, no example, or
      confidences that are not finite.

  Examples:
    >>> rng = np.random.default_rng(0)
    >>> c = rng.normal(size=(8, 5))
    >>> score_populations(c, c).forget_score
    1.0
    >>> score_populations(c + 100.0, c).forget_score
    0.0
  """
  u = np.asarray(unlearned_confs, np.float64)
  r = np.asarray(retrained_confs, np.float64)
  if u.ndim != 2 or u.shape != r.shape:
    raise ValueError(f"need two [models, examples] arrays of one shape, got "
                     f"{u.shape} and {r.shape}")
  m, n = u.shape
  if m < 2:
    raise ValueError(f"need at least 2 models per population, got {m}")
  if n == 0:
    raise ValueError("no forget example to score")
  if not (np.isfinite(u).all() and np.isfinite(r).all()):
    raise ValueError("confidences are not all finite")
  retrain_positive = np.median(r, axis=0) > np.median(u, axis=0)
  pos = np.where(retrain_positive, r, u)
  neg = np.where(retrain_positive, u, r)
  eps = np.array([example_epsilon(pos[:, i], neg[:, i], delta=delta)
                  for i in range(n)])
  pts = points_of(eps, m)
  return PopulationScore(float(np.mean(pts)), eps, pts, m)


def final_score(forget_score: float, *, ra_unlearned: float,
                ra_retrained: float, ta_unlearned: float,
                ta_retrained: float) -> float:
  """``F * (RA_u / RA_r) * (TA_u / TA_r)`` (population-mean accuracies).

  Raises:
    ValueError: a retrained accuracy that is not positive.

  Examples:
    >>> final_score(0.5, ra_unlearned=90, ra_retrained=100,
    ...             ta_unlearned=80, ta_retrained=80)
    0.45
  """
  if not (ra_retrained > 0 and ta_retrained > 0):
    raise ValueError(f"retrained accuracies must be > 0, got RA "
                     f"{ra_retrained}, TA {ta_retrained}")
  return float(forget_score * (ra_unlearned / ra_retrained)
               * (ta_unlearned / ta_retrained))
