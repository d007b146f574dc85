"""Tests for oeu_jax.evaluation.stats against SciPy, NumPy reference loops, hand
sums."""

import doctest
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from scipy import stats as sp_stats

from oeu_jax.evaluation import pairing
from oeu_jax.evaluation import stats
from oeu_jax.evaluation.significance import marker
from oeu_jax.evaluation.significance import paired_difference_test
from oeu_jax.evaluation.significance import paired_test
from oeu_jax.evaluation.stats import avg_gap_of_means
from oeu_jax.evaluation.stats import best_baseline
from oeu_jax.evaluation.stats import mean_per_seed_gap
from oeu_jax.evaluation.stats import paired_units
from oeu_jax.evaluation.stats import per_unit_gaps
from oeu_jax.evaluation.stats import summary

KEYS = ("ua", "ra", "ta", "mia_efficacy")


def _rec(method, seed, ua, ra, ta, mia, **extra):
  return {"method": method, "seed": seed, "ua": ua, "ra": ra, "ta": ta,
          "mia_efficacy": mia, **extra}


def test_summary_matches_scipy():
  x = np.array([3.1, 4.7, 2.2, 5.9, 4.0])
  s = summary(x)
  n = len(x)
  sem = np.std(x, ddof=1) / math.sqrt(n)
  lo, hi = sp_stats.t.interval(0.95, n - 1, loc=x.mean(), scale=sem)
  assert s.n == n
  assert s.mean == pytest.approx(x.mean(), rel=1e-12)
  assert s.std == pytest.approx(np.std(x, ddof=1), rel=1e-12)
  assert s.ci_low == pytest.approx(lo, rel=1e-12)
  assert s.ci_high == pytest.approx(hi, rel=1e-12)
  assert s.ci_half_width == pytest.approx((hi - lo) / 2, rel=1e-12)
  assert s.confidence == 0.95
  s90 = summary(x, confidence=0.9)
  assert s90.ci_half_width == pytest.approx(
      sp_stats.t.ppf(0.95, n - 1) * sem, rel=1e-12)
  assert s90.ci_half_width < s.ci_half_width


def test_summary_two_values_by_hand():
  # std of (1, 3) = sqrt(2); t_{0.975, 1} = 12.7062...
  s = summary([1.0, 3.0])
  assert s.std == pytest.approx(math.sqrt(2.0))
  assert s.ci_half_width == pytest.approx(12.706204736, rel=1e-8)


def test_summary_single_value():
  s = summary([7.5])
  assert s.mean == 7.5
  assert s.std == 0.0
  assert s.n == 1
  assert math.isnan(s.ci_half_width)
  assert math.isnan(s.ci_low) and math.isnan(s.ci_high)


def test_summary_rejects_bad_input():
  with pytest.raises(ValueError, match="non-empty"):
    summary([])
  with pytest.raises(ValueError, match="non-empty"):
    summary([[1.0, 2.0]])
  with pytest.raises(ValueError, match="confidence"):
    summary([1.0, 2.0], confidence=1.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=12),
       st.floats(0.5, 0.99))
def test_summary_ci_contains_mean(values, confidence):
  s = summary(values, confidence)
  assert s.ci_low <= s.mean <= s.ci_high
  assert s.ci_half_width >= 0.0


def test_avg_gap_of_means_by_hand():
  method = [_rec("m", 0, 10, 90, 80, 20), _rec("m", 1, 20, 96, 84, 30)]
  retrain = [_rec("retrain", 0, 16, 95, 85, 30), _rec("retrain", 1, 12, 97, 83,
                                                       30)]
  # Means: method (15, 93, 82, 25), retrain (14, 96, 84, 30).
  assert avg_gap_of_means(method, retrain) == pytest.approx((1 + 3 + 2 + 5) / 4)
  # Per seed: seed 0 gaps (6, 5, 5, 10) -> 6.5; seed 1 (8, 1, 1, 0) -> 2.5.
  np.testing.assert_allclose(per_unit_gaps(method, retrain), [6.5, 2.5])
  s = mean_per_seed_gap(method, retrain)
  assert s.mean == pytest.approx(4.5)
  assert s.n == 2
  assert s.std == pytest.approx(np.std([6.5, 2.5], ddof=1))
  assert s.ci_half_width == pytest.approx(
      sp_stats.t.ppf(0.975, 1) * s.std / math.sqrt(2))
  # Gap of means <= mean of per-seed gaps (triangle inequality).
  assert avg_gap_of_means(method, retrain) <= s.mean
  with pytest.raises(KeyError, match="mia_efficacy"):
    avg_gap_of_means([{"ua": 1.0}], retrain)


def test_pairing_by_seed_and_class():
  method, retrain = [], []
  for seed in (0, 1):
    for fc in (2, 5):
      method.append(_rec("m", seed, 10 * fc + seed, 90, 80, 20,
                         forget_class=fc))
      retrain.append(_rec("retrain", seed, 10 * fc, 90, 80, 20,
                          forget_class=fc))
  retrain.reverse()  # Pairing must not depend on the order.
  keys, units, _ = paired_units(method, retrain)
  assert keys == ("seed", "forget_class")
  assert units == [(0, 2), (0, 5), (1, 2), (1, 5)]
  np.testing.assert_allclose(per_unit_gaps(method, retrain),
                             [0.0, 0.0, 0.25, 0.25])
  # Pairing by seed alone sees two records per seed.
  with pytest.raises(ValueError, match="two records for unit"):
    per_unit_gaps(method, retrain, pair_by=("seed",))
  # Random-forgetting records carry forget_class None: pairs by seed.
  rnd = [_rec("m", s, 1.0, 2.0, 3.0, 4.0, forget_class=None) for s in (1, 0)]
  keys, units, _ = paired_units(rnd, rnd)
  assert units == [(0, None), (1, None)]
  # Records without forget_class at all pair by seed.
  bare = [_rec("m", s, 1.0, 2.0, 3.0, 4.0) for s in (0, 1)]
  assert paired_units(bare, bare)[0] == ("seed",)


def test_pairing_errors():
  a = [_rec("m", 0, 1, 2, 3, 4), _rec("m", 1, 1, 2, 3, 4)]
  b = [_rec("retrain", 0, 1, 2, 3, 4), _rec("retrain", 2, 1, 2, 3, 4)]
  with pytest.raises(ValueError, match=r"differ in units \[\(1,\), \(2,\)\]"):
    per_unit_gaps(a, b)
  with pytest.raises(ValueError, match="some records but not"):
    per_unit_gaps(a, [_rec("retrain", 0, 1, 2, 3, 4, forget_class=1),
                      _rec("retrain", 1, 1, 2, 3, 4)])
  with pytest.raises(ValueError, match="none of the pairing keys"):
    per_unit_gaps([{"ua": 1}], [{"ua": 1}], keys=("ua",))
  with pytest.raises(ValueError, match="empty"):
    per_unit_gaps([], b)


def _reference_bootstrap(d, n_boot, seed, alpha):
  """Independent loop: one resample at a time from the same generator."""
  rng = np.random.default_rng(seed)
  n = len(d)
  means = []
  for _ in range(n_boot):
    idx = rng.integers(0, n, size=n)
    means.append(sum(d[i] for i in idx) / n)
  means = np.sort(np.array(means))
  le = sum(m <= 0 for m in means) / n_boot
  ge = sum(m >= 0 for m in means) / n_boot
  lo, hi = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
  return lo, hi, min(1.0, 2 * min(le, ge))


def test_paired_difference_test_matches_scipy_and_reference_loop():
  a = np.array([2.1, 3.4, 1.9, 4.2, 2.8, 3.0])
  b = np.array([2.5, 3.1, 2.6, 4.9, 3.3, 3.2])
  r = paired_difference_test(a, b, n_boot=2000, seed=3)
  t = sp_stats.ttest_rel(a, b)
  assert r.n == 6
  assert r.mean_diff == pytest.approx(np.mean(a - b), rel=1e-12)
  assert r.p_t == pytest.approx(t.pvalue, rel=1e-12)
  assert r.significant == (t.pvalue < 0.05)
  lo, hi, p = _reference_bootstrap(a - b, 2000, 3, 0.05)
  assert r.ci_low == pytest.approx(lo, rel=1e-12)
  assert r.ci_high == pytest.approx(hi, rel=1e-12)
  assert r.p_boot == pytest.approx(p, abs=1e-12)
  assert 0.0 < r.p_boot < 1.0
  # Reproducible, and the default is B = 10000.
  assert paired_difference_test(a, b, seed=3) == paired_difference_test(
      a, b, seed=3)
  lo, hi, p = _reference_bootstrap(a - b, 10_000, 0, 0.05)
  r = paired_difference_test(a, b)
  assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), rel=1e-12)
  assert r.p_boot == pytest.approx(p, abs=1e-12)


def test_identical_methods_not_significant():
  gaps = [3.0, 1.5, 2.25, 4.0, 0.5]
  r = paired_difference_test(gaps, gaps)
  assert r.mean_diff == 0.0
  assert r.p_t == 1.0 and r.p_boot == 1.0
  assert (r.ci_low, r.ci_high) == (0.0, 0.0)
  assert not r.significant
  assert marker(r) == "\u2248"


def test_clearly_separated_pair_significant():
  rng = np.random.default_rng(0)
  b = rng.uniform(5.0, 6.0, 8)
  a = b - 3.0 + rng.normal(0.0, 0.1, 8)
  r = paired_difference_test(a, b)
  assert r.significant
  assert r.p_t < 1e-6
  assert r.p_boot == 0.0  # Every resampled mean is negative.
  assert r.ci_high < 0.0
  assert r.mean_diff == pytest.approx(np.mean(a - b))
  assert marker(r) == ""


def test_paired_difference_degenerate_cases():
  one = paired_difference_test([1.0], [3.0])
  assert one.n == 1 and one.mean_diff == -2.0
  assert all(math.isnan(v) for v in (one.ci_low, one.ci_high, one.p_t,
                                     one.p_boot))
  assert not one.significant and marker(one) == "\u2248"
  bad = paired_difference_test([1.0, float("nan")], [1.0, 2.0])
  assert math.isnan(bad.mean_diff) and math.isnan(bad.p_boot)
  assert not bad.significant
  with pytest.raises(ValueError, match="equal non-zero length"):
    paired_difference_test([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match="alpha"):
    paired_difference_test([1.0, 2.0], [1.0, 2.0], alpha=0.0)
  with pytest.raises(ValueError, match="n_boot"):
    paired_difference_test([1.0, 2.0], [1.0, 2.0], n_boot=0)


def test_paired_test_on_records():
  retrain = [_rec("retrain", s, 10, 95, 90, 20) for s in range(5)]
  oeu = [_rec("oeu", s, 10 + s % 2, 95, 90, 20) for s in range(5)]
  base = [_rec("ga", s, 14 + s, 95, 90, 20) for s in range(5)]
  r = paired_test(oeu, base, retrain)
  gaps_oeu = np.array([s % 2 for s in range(5)]) / 4
  gaps_base = np.array([4 + s for s in range(5)]) / 4
  t = sp_stats.ttest_rel(gaps_oeu, gaps_base)
  assert r.mean_diff == pytest.approx(np.mean(gaps_oeu - gaps_base))
  assert r.p_t == pytest.approx(t.pvalue, rel=1e-12)
  assert r.significant and r.mean_diff < 0
  assert paired_test(oeu, oeu, retrain).significant is False


def test_best_baseline():
  recs = [_rec("retrain", s, 10, 95, 90, 20) for s in range(2)]
  recs += [_rec("oeu", s, 10, 95, 90, 20) for s in range(2)]  # Excluded.
  recs += [_rec("oeu_scalar", s, 10, 95, 90, 20) for s in range(2)]
  recs += [_rec("original", s, 10, 95, 90, 20) for s in range(2)]
  recs += [_rec("ga", s, 30, 95, 90, 20) for s in range(2)]       # gap 5
  recs += [_rec("ft", s, 12, 95, 90, 20) for s in range(2)]       # gap 0.5
  recs += [_rec("scrub", s, float("nan"), 95, 90, 20) for s in range(2)]
  assert best_baseline(recs) == "ft"
  assert best_baseline(recs, exclude=("oeu", "original", "ft")) == "oeu_scalar"
  with pytest.raises(ValueError, match="no 'retrain' records"):
    best_baseline([r for r in recs if r["method"] != "retrain"])
  with pytest.raises(ValueError, match="no baseline"):
    best_baseline([r for r in recs if r["method"] in ("retrain", "oeu",
                                                      "scrub")])


_metric = st.floats(0.0, 100.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(*[_metric] * 8), min_size=1, max_size=8))
def test_gap_of_means_at_most_mean_of_paired_gaps(rows):
  method = [_rec("m", i, *row[:4]) for i, row in enumerate(rows)]
  retrain = [_rec("retrain", i, *row[4:]) for i, row in enumerate(rows)]
  assert (avg_gap_of_means(method, retrain)
          <= mean_per_seed_gap(method, retrain).mean + 1e-9)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50), st.floats(0, 50)), min_size=2,
                max_size=10))
def test_bootstrap_interval_in_range_and_swap_symmetry(pairs):
  a, b = np.array(pairs).T
  d = a - b
  r = paired_difference_test(a, b, n_boot=500)
  # Resampled means lie between the smallest and largest difference.
  assert d.min() - 1e-9 <= r.ci_low <= r.ci_high <= d.max() + 1e-9
  s = paired_difference_test(b, a, n_boot=500)
  assert s.mean_diff == pytest.approx(-r.mean_diff, abs=1e-9)
  assert s.p_boot == pytest.approx(r.p_boot, abs=1e-12)
  if not (math.isnan(r.p_t) or math.isnan(s.p_t)):
    assert s.p_t == pytest.approx(r.p_t, rel=1e-9, abs=1e-12)
  assert 0.0 <= r.p_boot <= 1.0


def test_doctests():
  for module in (pairing, stats):
    assert doctest.testmod(module).failed == 0
