"""The per-example forgetting audit: the challenge score and its runner."""

import warnings

import numpy as np
import pytest

from oeu_jax import audit

# --- A dense, literal NumPy port of metric.py's threshold scans (one rule
# per column, every model compared with every threshold), to check the
# searchsorted version against.


def _dense_double(pos, neg):
  pos_diff, neg_diff = pos.max() - pos.min(), neg.max() - neg.min()
  smallest = neg_diff if pos_diff > neg_diff else pos_diff
  if pos_diff >= neg_diff:
    pos, neg = neg, pos
  width = smallest
  lo, hi = pos.min() + width - 2.0, pos.max() + 2.0
  right = np.linspace(lo, hi, num=int(np.ceil((hi - lo) * 100)))
  n_left = int(np.ceil(2 * 2.0 * 100))
  left = np.concatenate([np.linspace(tr - width - 2.0, tr - width + 2.0,
                                     num=n_left) for tr in right])
  right = np.tile(right.reshape(-1, 1), (1, n_left)).reshape(-1)

  def pp(c):
    return ((left[None] <= c[:, None]) & (c[:, None] <= right[None])
            ).astype(np.float32)

  return (pp(pos).mean(0), (1 - pp(pos)).mean(0), pp(neg).mean(0),
          (1 - pp(neg)).mean(0))


def _dense_single(pos, neg):
  both = np.concatenate([pos, neg])
  t = np.linspace(both.min(), both.max(),
                  int(np.ceil((both.max() - both.min()) * 100)))
  ge = lambda c: (c[:, None] >= t[None]).astype(np.float32)
  lt = lambda c: (c[:, None] < t[None]).astype(np.float32)
  return ge(pos).mean(0), lt(pos).mean(0), ge(neg).mean(0), lt(neg).mean(0)


def _dense_epsilon(pos, neg, delta=1e-5):
  pd, nd = np.ptp(pos), np.ptp(neg)
  if max(pd, nd) > 0 and min(pd, nd) / max(pd, nd) < 0.01:
    return 50.0
  tpr, fnr, fpr, tnr = (np.concatenate(r) for r in
                        zip(_dense_double(pos, neg), _dense_single(pos, neg)))
  eps = np.zeros(len(tpr))
  eps[(fpr + fnr == 0) & (tpr + tnr == 2)] = np.inf
  eps[(eps == 0) & (fpr * fnr == 0)] = np.nan
  with np.errstate(divide="ignore", invalid="ignore"), \
      warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN columns.
    live = np.clip(np.nanmax([np.log(1 - delta - fpr) - np.log(fnr),
                              np.log(1 - delta - fnr) - np.log(fpr)],
                             axis=0), 0, None)
  eps = np.where(eps == 0, live, eps)
  return float(min(np.nanmax(eps), 50.0))


def _populations(seed, m=8, n=6, shift=0.0, scale=1.0):
  rng = np.random.default_rng(seed)
  return (rng.normal(shift, scale, size=(m, n)),
          rng.normal(0.0, 1.0, size=(m, n)))


@pytest.mark.parametrize("seed,shift,scale",
                         [(0, 0.0, 1.0), (1, 1.5, 1.0), (2, 0.3, 0.2),
                          (3, -2.0, 3.0)])
def test_threshold_rates_match_a_dense_port(seed, shift, scale):
  u, r = _populations(seed, m=6, n=3, shift=shift, scale=scale)
  for i in range(u.shape[1]):
    pos, neg = u[:, i], r[:, i]
    for fast, dense in ((audit.double_threshold_rates, _dense_double),
                        (audit.single_threshold_rates, _dense_single)):
      for a, b in zip(fast(pos, neg), dense(pos, neg)):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert audit.example_epsilon(pos, neg) == pytest.approx(
        _dense_epsilon(pos, neg), rel=1e-6)


def test_epsilons_spread_over_bins_and_match_the_dense_port():
  # Overlapping but shifted samples give intermediate epsilons.
  u, r = _populations(5, m=16, n=6, shift=1.0)
  score = audit.score_populations(u, r)
  want = []
  for i in range(u.shape[1]):
    a, b = (r[:, i], u[:, i]) if np.median(r[:, i]) > np.median(u[:, i]) \
        else (u[:, i], r[:, i])
    want.append(_dense_epsilon(a, b))
  np.testing.assert_allclose(score.epsilons, want, rtol=1e-6)
  assert 0 < score.forget_score < 1
  assert len(set(np.round(score.epsilons, 3))) > 2


def test_identical_populations_score_one_per_example():
  u, _ = _populations(0, m=8, n=10)
  score = audit.score_populations(u, u.copy())
  np.testing.assert_array_equal(score.points, 1.0)
  assert score.forget_score == 1.0


def test_separated_populations_score_zero():
  u, r = _populations(1, m=8, n=10)
  score = audit.score_populations(u + 50.0, r)
  np.testing.assert_array_equal(score.epsilons, audit.EPSILON_CAP)
  assert score.forget_score == 0.0


def test_collapsed_unlearned_population_gets_the_cap():
  # The 1%-range rule: N copies of one output against a spread sample.
  _, r = _populations(2, m=8, n=4)
  copies = np.tile(r[:1], (8, 1))
  score = audit.score_populations(copies, r)
  np.testing.assert_array_equal(score.epsilons, audit.EPSILON_CAP)
  # One constant against itself: the reference asserts; here epsilon 0.
  assert audit.example_epsilon(np.ones(4), np.ones(4)) == 0.0


def test_bins_rule():
  assert audit.max_epsilon(4) == 2.0  # ceil(log 3)
  assert audit.max_epsilon(32) == 4.0  # ceil(log 31)
  assert audit.max_epsilon(512) == 7.0
  starts, pts = audit.bucket_points(32)
  assert starts == [0.5 * i for i in range(8)]
  assert pts == [2.0 ** -i for i in range(8)]
  assert audit.bucket_points(3) == ([0.0, 0.5], [1.0, 0.5])  # ceil(log 2)
  assert audit.bucket_points(2) == ([], [])  # ceil(log 1) = 0: no bin
  got = audit.points_of([0.0, 0.49, 0.5, 1.0, 1.99, 2.0, 50.0], 8)
  np.testing.assert_array_equal(got, [1, 1, 0.5, 0.25, 0.125, 0, 0])
  hist = audit.eps_histogram([0.1, 0.7, 1.9, 2.0, 50.0], 8)
  assert hist == {"edges": [0.0, 0.5, 1.0, 1.5, 2.0],
                  "counts": [1, 1, 0, 1], "beyond": 2}


def test_confidence_is_the_log_odds_of_the_label():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 4))
  y = np.array([0, 1, 2, 3, 0])
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  py = np.take_along_axis(p, np.broadcast_to(y[None, :, None], (3, 5, 1)),
                          -1)[..., 0]
  np.testing.assert_allclose(audit.logit_scaled_confidence(logits, y),
                             np.log(py) - np.log1p(-py), rtol=1e-9)
  # Extreme logits stay finite at the reference's 1e-45 floor.
  extreme = audit.logit_scaled_confidence([[1e4, 0.0], [0.0, 1e4]], [0, 0])
  np.testing.assert_allclose(extreme, [-np.log(1e-45), np.log(1e-45)],
                             rtol=1e-9)


def test_final_score_is_the_utility_adjusted_forget_score():
  assert audit.final_score(0.5, ra_unlearned=50, ra_retrained=100,
                           ta_unlearned=90, ta_retrained=90) == 0.25


@pytest.mark.parametrize("call,match", [
    (lambda: audit.score_populations(np.zeros((8, 3)), np.zeros((6, 3))),
     "one shape"),
    (lambda: audit.score_populations(np.zeros((1, 3)), np.zeros((1, 3))),
     "at least 2 models"),
    (lambda: audit.score_populations(np.full((4, 2), np.nan),
                                     np.zeros((4, 2))), "finite"),
    (lambda: audit.logit_scaled_confidence(np.zeros((3, 4)), [0, 1]),
     "disagree"),
    (lambda: audit.logit_scaled_confidence(np.zeros((2, 4)), [0, 7]),
     r"\[0, 4\)"),
    (lambda: audit.final_score(1.0, ra_unlearned=1, ra_retrained=0,
                               ta_unlearned=1, ta_retrained=1), "> 0"),
])
def test_bad_input_is_named(call, match):
  with pytest.raises(ValueError, match=match):
    call()
