"""Paired significance tests of one method against another over units.

A *unit* is one (seed, forget class) run; a method and a baseline are
compared on the same units (:mod:`oeu_jax.evaluation.pairing`), their
per-unit Avg. gaps to that unit's Retrain
(:func:`oeu_jax.evaluation.stats.per_unit_gaps`) differenced, and the mean
difference tested with a paired t-test (which decides) and a paired
bootstrap (reported beside it). :func:`marker` is the tables' sign for a
difference inside the noise.
"""

from __future__ import annotations

import warnings
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
from oeu_jax.evaluation.stats import check_level

NOT_SIGNIFICANT = "\u2248"  # "≈"


class PairedTest(NamedTuple):
  """A paired comparison of two methods' per-unit values (e.g. avg gaps).

  Attributes:
    mean_diff: Mean over units of ``a - b``; for avg gaps with ``a`` = OEU, a
      negative value means OEU is closer to Retrain.
    ci_low: Lower bound of the paired-bootstrap percentile interval of the
      mean difference (NaN for fewer than 2 units).
    ci_high: Upper bound of that interval.
    p_t: Two-sided p-value of the paired t-test (``scipy.stats.ttest_rel``);
      NaN for fewer than 2 units, 1.0 when every difference is exactly 0.
    p_boot: Two-sided paired-bootstrap p-value,
      ``min(1, 2 * min(P*(mean <= 0), P*(mean >= 0)))`` over the bootstrap
      means; NaN for fewer than 2 units.
    n: Number of paired units.
    significant: ``p_t < alpha`` (the t-test decides; the bootstrap is
      reported beside it). False whenever ``p_t`` is NaN.
  """

  mean_diff: float
  ci_low: float
  ci_high: float
  p_t: float
  p_boot: float
  n: int
  significant: bool


def paired_difference_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
) -> PairedTest:
  """Two-sided paired t-test and paired bootstrap of ``mean(a - b)``.

  The bootstrap resamples the ``n`` paired differences with replacement
  ``n_boot`` times (``np.random.default_rng(seed).integers(0, n, (n_boot,
  n))``), takes the ``alpha/2`` and ``1 - alpha/2`` percentiles of the
  resampled means as the interval, and ``min(1, 2 * min(P*(mean <= 0),
  P*(mean >= 0)))`` as the p-value.

  Degenerate cases: fewer than 2 units give NaN interval and p-values
  (no test, not significant); all differences exactly 0 give ``p_t = 1`` (SciPy
  returns NaN for 0/0) and ``p_boot = 1``; constant non-zero differences give
  SciPy's ``p_t = 0``; any non-finite value makes everything but ``n`` NaN.

  Args:
    a: Per-unit values of the first method (e.g. OEU's avg gaps).
    b: Per-unit values of the second, in the same unit order.
    alpha: Significance level; the interval has level ``1 - alpha``.
    n_boot: Number of bootstrap resamples (positive).
    seed: Seed of the bootstrap generator (results are reproducible).

  Returns:
    A ``PairedTest``; ``significant`` is ``p_t < alpha``.

  Raises:
    ValueError: If ``a`` and ``b`` are not 1-D of equal non-zero length, or
      ``alpha`` / ``n_boot`` are out of range.

  Examples:
    >>> r = paired_difference_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    >>> r.mean_diff, r.p_t, r.p_boot, r.significant
    (0.0, 1.0, 1.0, False)
  """
  check_level(alpha, "alpha")
  if not (isinstance(n_boot, int) and n_boot >= 1):
    raise ValueError(f"n_boot must be a positive int, got {n_boot!r}.")
  a = np.asarray(a, dtype=np.float64)
  b = np.asarray(b, dtype=np.float64)
  if a.ndim != 1 or a.shape != b.shape or a.size == 0:
    raise ValueError(
        f"a and b must be 1-D of equal non-zero length, got shapes {a.shape}"
        f" and {b.shape}."
    )
  d = a - b
  n = int(d.size)
  nan = float("nan")
  if not np.all(np.isfinite(d)):
    return PairedTest(nan, nan, nan, nan, nan, n, False)
  mean_diff = float(np.mean(d))
  if n < 2:
    return PairedTest(mean_diff, nan, nan, nan, nan, n, False)
  if np.all(d == 0.0):
    p_t = 1.0
  else:
    with warnings.catch_warnings():  # Near-constant d: SciPy warns, still ok.
      warnings.simplefilter("ignore", RuntimeWarning)
      p_t = float(sp_stats.ttest_rel(a, b).pvalue)
  rng = np.random.default_rng(seed)
  boot = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
  ci_low, ci_high = np.percentile(boot, [50.0 * alpha, 100.0 - 50.0 * alpha])
  p_boot = min(1.0, 2.0 * min(float(np.mean(boot <= 0.0)),
                              float(np.mean(boot >= 0.0))))
  significant = bool(p_t < alpha)  # False for NaN.
  return PairedTest(mean_diff, float(ci_low), float(ci_high), p_t, p_boot, n,
                    significant)


def paired_test(
    method_records: Sequence[Mapping[str, Any]],
    baseline_records: Sequence[Mapping[str, Any]],
    retrain_records: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = GAP_KEYS,
    *,
    pair_by: Sequence[str] = PAIR_BY,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
) -> PairedTest:
  """Tests a method's avg gap against a baseline's, paired over units.

  For each unit (seed, or (seed, forget_class)) both methods' avg gaps to
  that unit's Retrain record are computed; ``paired_difference_test`` then
  tests the mean of ``gap_method - gap_baseline`` (negative: the method is
  closer to Retrain).

  Args:
    method_records: Records of the method (e.g. OEU).
    baseline_records: Records of the baseline, over the same units.
    retrain_records: Records of Retrain, over the same units.
    keys: Metrics of the avg gap.
    pair_by: Candidate pairing keys (see ``paired_units``).
    alpha: Significance level (``significant = p_t < alpha``).
    n_boot: Bootstrap resamples.
    seed: Bootstrap seed.

  Returns:
    A ``PairedTest``.

  Raises:
    ValueError, KeyError: If the records do not pair (``paired_units``) or
      lack a metric.
  """
  _, _, (method, baseline, retrain) = paired_units(
      method_records, baseline_records, retrain_records, pair_by=pair_by)
  gaps_m = [avg_gap(m, r, keys) for m, r in zip(method, retrain)]
  gaps_b = [avg_gap(b, r, keys) for b, r in zip(baseline, retrain)]
  return paired_difference_test(gaps_m, gaps_b, alpha=alpha, n_boot=n_boot,
                                seed=seed)


def marker(result: PairedTest) -> str:
  """The table's significance marker for a paired comparison.

  Args:
    result: A ``PairedTest``.

  Returns:
    ``""`` when ``result.significant`` (paired t-test, ``p_t < alpha``), else
    ``"≈"``: the difference is not significant (also when no test was
    possible, e.g. a single seed or a NaN gap).

  Examples:
    >>> marker(paired_difference_test([1.0, 2.0], [1.0, 2.0]))
    '≈'
  """
  return "" if result.significant else NOT_SIGNIFICANT
