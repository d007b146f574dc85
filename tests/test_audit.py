"""The per-example forgetting audit: the challenge score and its runner."""

import warnings

import numpy as np
import pytest

from oeu_jax.evaluation import audit

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


# --- The runner and the command line.


def _tiny_config(**kw):
  from oeu_jax.engine import train
  from oeu_jax.engine import unlearn
  from oeu_jax.runner import config as config_lib
  base = dict(dataset="digits", model="cnn", bits="float",
              model_kwargs=(("features", (4, 4)), ("hidden", 8)),
              scenario="class", forget_class=3, forget_ratio=None,
              methods=("oeu",), max_examples=200,
              train=train.TrainConfig(epochs=1, batch_size=64, lr=0.05),
              unlearn=unlearn.UnlearnConfig(epochs=1, batch_size=32,
                                            lr=0.02))
  return config_lib.RunConfig(**(base | kw))


def test_tiny_audit_writes_its_files_and_resumes_without_recomputing(
    tmp_path):
  from oeu_jax.runner import audit as runner
  from oeu_jax.runner import audit_report
  cfg = _tiny_config()
  lines = []
  recs = runner.run_audit(cfg, tmp_path, n_models=4, chunk=2,
                          log=lines.append)
  assert [r["method"] for r in recs] == ["original", "retrain", "oeu"]
  assert [r["n_models"] for r in recs] == [4, 2, 4]
  n_forget = recs[0]["num_forget"]
  for r in recs:
    h = r["eps_hist"]
    assert sum(h["counts"]) + h["beyond"] == n_forget
    assert 0.0 <= r["forget_score"] <= 1.0
    assert 0.0 <= r["ua"] <= 100.0
  # N copies of one model have zero spread: capped, score 0.
  assert recs[0]["forget_score"] == 0.0
  assert recs[0]["mean_epsilon"] == 50.0
  assert recs[0]["conf_range"] == 0.0  # Copies: no spread across models.
  assert recs[2]["conf_range"] > 0.0  # Unlearning seeds differ.
  assert all(abs(r["conf_median"]) < 104 for r in recs)
  assert recs[2]["settings"] == runner.DEFAULT_SETTINGS
  assert sum("vmapped" in s for s in lines) == 5  # 1 + 2 chunks + 2 chunks.
  out = audit_report.write_audit(recs, tmp_path, title="tiny")
  assert out["json"].is_file() and out["table"].is_file()
  assert sorted(p.name for p in out["png"]) == [
      "audit_eps_oeu.png", "audit_eps_original.png",
      "audit_eps_retrain.png"]
  assert "| oeu | 4 |" in out["table"].read_text()
  stored = sorted(tmp_path.glob("audit/checkpoints/*/seed*/*/audit-*.npz"))
  assert len(stored) == 1 + 4 + 4
  stamps = [p.stat().st_mtime_ns for p in stored]
  again = []
  recs2 = runner.run_audit(cfg, tmp_path, n_models=4, chunk=2,
                           log=again.append)
  assert not any("vmapped" in s for s in again)  # Nothing trained.
  assert sum("outputs reused" in s for s in again) == 5
  assert [p.stat().st_mtime_ns for p in stored] == stamps
  assert recs2 == recs


def test_audit_refuses_bad_input(tmp_path):
  from oeu_jax.runner import audit as runner
  with pytest.raises(ValueError, match="at least 4 models"):
    runner.run_audit(_tiny_config(), tmp_path, n_models=3)
  with pytest.raises(ValueError, match="unknown method 'nope'"):
    runner.run_audit(_tiny_config(methods=("nope",)), tmp_path, n_models=4)


@pytest.mark.parametrize("extra,message", [
    (["--forget-class", "3", "--methods", "oeu", "--models", "3"],
     "error: --models must be >= 4"),
    (["--forget-class", "3", "--methods", "oeu,nope"],
     "error: --methods: unknown method 'nope'"),
    (["--forget-class", "12", "--methods", "oeu"],
     "error: forget_class must be an int in [0, 10)"),
    (["--methods", "oeu"], "error: --scenario class needs --forget-class"),
])
def test_audit_command_answers_bad_input_in_one_line(tmp_path, capsys,
                                                     extra, message):
  from oeu_jax import cli
  status = cli.main(["audit", "--dataset", "digits", "--scenario", "class",
                     "--workdir", str(tmp_path)] + extra)
  err = capsys.readouterr().err.strip()
  assert status == 2
  assert err.startswith(message) and "\n" not in err
