"""Statistics over seeds for unlearning tables (NumPy / SciPy, host only).

What a reviewer expects beside each number of a results table:

* ``summary``: mean, sample std (``ddof=1``) and a Student-t confidence
  interval of one metric over seeds.
* SalUn's **Avg. Gap**: ``avg_gap_of_means`` is the mean over {UA, RA, TA,
  MIA-efficacy} of ``|mean_method - mean_retrain|`` (the headline number, as
  in SalUn's tables); ``mean_per_seed_gap`` is the mean over paired units of
  each unit's avg gap, with its CI. By the triangle inequality the first is
  never larger than the second.
* ``paired_test``: is a method's avg gap different from another's? Units
  (seeds, or (seed, forget class) pairs for class-wise tables averaged over
  classes) are paired, and the mean per-unit difference is tested with a
  two-sided paired t-test and a paired bootstrap. ``marker`` turns the result
  into the table's significance marker; **the t-test decides it**.
* ``best_baseline``: the baseline a table compares OEU against.

Records are the dicts of ``results.json`` (``method, seed, ua, ra, ta,
mia_efficacy, ...`` and, for class-wise forgetting, ``forget_class``). The
functions take lists of records of one method each; ``by_method`` splits a
whole ``results.json`` list. Pairing records unit by unit (``paired_units``,
``PAIR_BY``) lives in :mod:`oeu_jax.evaluation.pairing` and is re-exported here.

Non-finite metrics (a diverged run) are not an error here: they propagate as
NaN, a paired test involving one is not significant, and ``best_baseline``
skips a method whose gap is NaN, so a table never aborts on one bad row.

References:
  Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight
  Saliency in Both Image Classification and Generation", ICLR 2024.
  https://arxiv.org/abs/2310.12508
  Efron and Tibshirani, "An Introduction to the Bootstrap", 1993 (percentile
  interval, section 13.3; bootstrap test, chapter 16).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import numpy as np
from scipy import stats as sp_stats

from oeu_jax.evaluation.metrics import GAP_KEYS
from oeu_jax.evaluation.metrics import avg_gap
from oeu_jax.evaluation.pairing import PAIR_BY
from oeu_jax.evaluation.pairing import paired_units

# Methods that are not baselines: the method itself, the references and the
# OEU ablations (experiments/ablations.py) and variants.
NON_BASELINES = ("oeu", "original", "retrain", "oeu_no_proj", "rl_proj",
                 "sl_proj", "oeu_scalar", "oeu_ema", "oeu_subspace",
                 "oeu_post", "oeu_complement", "oeu_renorm")


class Summary(NamedTuple):
  """Mean, spread and Student-t confidence interval of values over seeds.

  Attributes:
    mean: Sample mean.
    std: Sample standard deviation (``ddof=1``); ``0.0`` for one value.
    n: Number of values.
    ci_half_width: ``t_{(1+confidence)/2, n-1} * std / sqrt(n)``; NaN for one
      value (an interval from one seed is undefined, and ``0`` would print as
      certainty).
    ci_low: ``mean - ci_half_width`` (NaN for one value).
    ci_high: ``mean + ci_half_width`` (NaN for one value).
    confidence: The confidence level, e.g. ``0.95``.
  """

  mean: float
  std: float
  n: int
  ci_half_width: float
  ci_low: float
  ci_high: float
  confidence: float


def check_level(value: float, name: str) -> None:
  if not 0.0 < value < 1.0:
    raise ValueError(f"{name} must lie in (0, 1), got {value!r}.")


def summary(values: Sequence[float], confidence: float = 0.95) -> Summary:
  """Mean, sample std and Student-t confidence interval of values over seeds.

  The interval is ``mean +- t.ppf((1 + confidence) / 2, n - 1) * std /
  sqrt(n)`` with the sample std (``ddof=1``): the usual interval for the mean
  of a few seeds, wider than a normal one for small ``n``.

  Args:
    values: One value per seed (or per paired unit); at least one.
    confidence: Confidence level in ``(0, 1)``.

  Returns:
    A ``Summary``. For a single value: ``std == 0.0`` and the interval
    (``ci_half_width``, ``ci_low``, ``ci_high``) is NaN. NaN values propagate.

  Raises:
    ValueError: If ``values`` is empty or not 1-D, or ``confidence`` is not in
      ``(0, 1)``.

  Examples:
    >>> s = summary([1.0, 2.0, 3.0])
    >>> s.mean, s.std, s.n, round(s.ci_half_width, 4)
    (2.0, 1.0, 3, 2.4841)
    >>> summary([5.0]).std, summary([5.0]).ci_half_width
    (0.0, nan)
  """
  check_level(confidence, "confidence")
  x = np.asarray(values, dtype=np.float64)
  if x.ndim != 1 or x.size == 0:
    raise ValueError(
        f"values must be a non-empty 1-D sequence, got shape {x.shape}."
    )
  n = int(x.size)
  mean = float(np.mean(x))
  if n == 1:
    nan = float("nan")
    return Summary(mean, 0.0 if math.isfinite(mean) else nan, 1, nan, nan,
                   nan, confidence)
  std = float(np.std(x, ddof=1))
  half = float(sp_stats.t.ppf(0.5 + confidence / 2.0, n - 1) * std
               / math.sqrt(n))
  return Summary(mean, std, n, half, mean - half, mean + half, confidence)


def by_method(records: Sequence[Mapping[str, Any]]) -> dict:
  """Groups records by their ``method`` entry, in order of first appearance.

  Args:
    records: Dicts with a ``method`` entry (a ``results.json`` list).

  Returns:
    ``{method: [records of that method]}``.

  Raises:
    KeyError: If a record has no ``method`` entry.
  """
  groups: dict[str, list] = {}
  for i, rec in enumerate(records):
    if "method" not in rec:
      raise KeyError(f"record {i} has no 'method' entry.")
    groups.setdefault(rec["method"], []).append(rec)
  return groups


def _check_keys(records, keys, name):
  keys = tuple(keys)
  if not keys:
    raise ValueError("at least one metric key is needed.")
  if not records:
    raise ValueError(f"{name} is empty.")
  for i, rec in enumerate(records):
    missing = [k for k in keys if k not in rec]
    if missing:
      raise KeyError(f"{name}[{i}] lacks metrics {missing}.")
  return keys


def avg_gap_of_means(
    method_records: Sequence[Mapping[str, Any]],
    retrain_records: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = GAP_KEYS,
) -> float:
  """SalUn's Avg. Gap: mean over ``keys`` of ``|mean_method - mean_retrain|``.

  Each mean is over that method's records (all seeds, and all forgotten
  classes for class-wise tables averaged over classes); no pairing is needed.

  Args:
    method_records: Records of the method.
    retrain_records: Records of Retrain.
    keys: Metrics to average over; default ``("ua", "ra", "ta",
      "mia_efficacy")``.

  Returns:
    The gap in the metrics' unit (%); NaN if a metric is NaN.

  Raises:
    ValueError: If a list or ``keys`` is empty.
    KeyError: If a record lacks a metric.

  Examples:
    >>> m = [{"ua": 10.0, "ra": 90.0}, {"ua": 14.0, "ra": 94.0}]
    >>> r = [{"ua": 11.0, "ra": 95.0}, {"ua": 11.0, "ra": 97.0}]
    >>> avg_gap_of_means(m, r, keys=("ua", "ra"))
    2.5
  """
  keys = _check_keys(method_records, keys, "method_records")
  _check_keys(retrain_records, keys, "retrain_records")

  def mean(recs, key):
    return float(np.mean([float(r[key]) for r in recs]))

  return float(np.mean([abs(mean(method_records, k) - mean(retrain_records, k))
                        for k in keys]))


def per_unit_gaps(
    method_records: Sequence[Mapping[str, Any]],
    retrain_records: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = GAP_KEYS,
    *,
    pair_by: Sequence[str] = PAIR_BY,
) -> np.ndarray:
  """Each unit's avg gap to the Retrain record of the same unit.

  Args:
    method_records: Records of the method.
    retrain_records: Records of Retrain, over the same units.
    keys: Metrics to average over.
    pair_by: Candidate pairing keys (see ``paired_units``).

  Returns:
    Float64 array of per-unit avg gaps, units in sorted order.

  Raises:
    ValueError, KeyError: As ``paired_units`` and ``metrics.avg_gap``.
  """
  _, _, (method, retrain) = paired_units(method_records, retrain_records,
                                         pair_by=pair_by)
  return np.asarray([avg_gap(m, r, keys) for m, r in zip(method, retrain)],
                    dtype=np.float64)


def mean_per_seed_gap(
    method_records: Sequence[Mapping[str, Any]],
    retrain_records: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = GAP_KEYS,
    *,
    pair_by: Sequence[str] = PAIR_BY,
    confidence: float = 0.95,
) -> Summary:
  """Mean over paired units of each unit's avg gap, with its t interval.

  Args:
    method_records: Records of the method.
    retrain_records: Records of Retrain, over the same units.
    keys: Metrics to average over.
    pair_by: Candidate pairing keys (see ``paired_units``).
    confidence: Confidence level of the interval.

  Returns:
    ``summary(per_unit_gaps(...), confidence)``.

  Raises:
    ValueError, KeyError: As ``per_unit_gaps``.

  Examples:
    >>> m = [{"seed": 0, "ua": 10.0}, {"seed": 1, "ua": 14.0}]
    >>> r = [{"seed": 1, "ua": 11.0}, {"seed": 0, "ua": 11.0}]
    >>> mean_per_seed_gap(m, r, keys=("ua",)).mean
    2.0
  """
  return summary(per_unit_gaps(method_records, retrain_records, keys,
                               pair_by=pair_by), confidence)


def best_baseline(
    records: Sequence[Mapping[str, Any]],
    *,
    exclude: Sequence[str] = NON_BASELINES,
    retrain: str = "retrain",
    keys: Sequence[str] = GAP_KEYS,
) -> str:
  """The baseline with the lowest ``avg_gap_of_means`` to Retrain.

  Args:
    records: A whole ``results.json`` list (all methods).
    exclude: Method names that are not baselines (default: OEU, Original,
      Retrain and the OEU ablations).
    retrain: The method name of Retrain's records.
    keys: Metrics of the avg gap.

  Returns:
    The method name. Ties go to the method that appears first; a method
    whose gap is NaN (a diverged run) is skipped.

  Raises:
    ValueError: If there are no Retrain records or no baseline with a finite
      gap.

  Examples:
    >>> recs = [{"method": "retrain", "ua": 5.0}, {"method": "ga", "ua": 9.0},
    ...         {"method": "ft", "ua": 4.0}, {"method": "oeu", "ua": 5.0}]
    >>> best_baseline(recs, keys=("ua",))
    'ft'
  """
  groups = by_method(records)
  if retrain not in groups:
    raise ValueError(
        f"no {retrain!r} records; methods present: {sorted(groups)}."
    )
  excluded = set(exclude) | {retrain}
  best, best_gap = None, math.inf
  for method, recs in groups.items():
    if method in excluded:
      continue
    gap = avg_gap_of_means(recs, groups[retrain], keys)
    if gap < best_gap:  # False for NaN.
      best, best_gap = method, gap
  if best is None:
    raise ValueError(
        f"no baseline with a finite gap among {sorted(groups)} (excluded:"
        f" {sorted(excluded)})."
    )
  return best
