"""Tests for oeu_jax.evaluation.metrics against hand computations."""

import doctest
import math

import jax.numpy as jnp
import numpy as np
import pytest

from oeu_jax.evaluation import logit_math
from oeu_jax.evaluation import metrics
from oeu_jax.evaluation import mia
from oeu_jax.evaluation.metrics import accuracy
from oeu_jax.evaluation.metrics import avg_gap
from oeu_jax.evaluation.metrics import forgetting_diagnostics
from oeu_jax.evaluation.metrics import mia_efficacy
from oeu_jax.evaluation.metrics import normalized_entropy
from oeu_jax.evaluation.metrics import summarize
from oeu_jax.evaluation.metrics import unlearning_metrics


def _logits_with_true_prob(labels, probs, num_classes):
  """Logits whose softmax gives ``probs`` to the label, the rest uniformly."""
  labels = np.asarray(labels)
  probs = np.asarray(probs, dtype=np.float64)
  rest = (1.0 - probs) / (num_classes - 1)
  logits = np.tile(np.log(rest)[:, None], (1, num_classes))
  logits[np.arange(len(labels)), labels] = np.log(probs)
  return logits


def test_accuracy_by_hand():
  logits = np.array([[3.0, 1.0, 0.0],
                     [0.0, 2.0, 1.0],
                     [0.0, 1.0, 5.0],
                     [4.0, 0.0, 0.0],
                     [0.0, 0.0, 1.0]])
  labels = np.array([0, 1, 2, 1, 0])
  assert accuracy(logits, labels) == pytest.approx(60.0)
  assert accuracy(jnp.asarray(logits), jnp.asarray(labels)) == pytest.approx(
      60.0)


@pytest.mark.parametrize("logits, labels, message", [
    (np.zeros((0, 3)), np.zeros(0, int), "empty"),
    (np.zeros((2, 3)), np.array([0, 3]), r"\[0, 3\)"),
    (np.zeros((2, 3)), np.array([0]), "shape"),
    (np.zeros(3), np.array([0]), "shape"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), "integers"),
])
def test_accuracy_rejects_bad_input(logits, labels, message):
  with pytest.raises(ValueError, match=message):
    accuracy(logits, labels)


def test_normalized_entropy_by_hand_and_stable():
  logits = np.log(np.array([[0.5, 0.25, 0.25, 1e-300]]))
  expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)) / math.log(4)
  np.testing.assert_allclose(normalized_entropy(logits), [expected], rtol=1e-9)
  big = np.array([[1e4, -1e4, 0.0, 0.0],
                  [1e4, 1e4, -1e4, -1e4],
                  [-1e4, -1e4, -1e4, -1e4],
                  [0.0, -np.inf, -np.inf, -np.inf]])
  h = normalized_entropy(jnp.asarray(big, dtype=jnp.float32))
  assert np.all(np.isfinite(h))
  np.testing.assert_allclose(h, [0.0, 0.5, 1.0, 0.0], atol=1e-12)


def test_forgetting_diagnostics_by_hand():
  num_classes = 4
  labels = np.array([0, 1, 2, 3])
  # Prob of the predicted class: 0.95 right, 0.95 wrong, 0.6 wrong, 0.25.
  logits = np.array([
      np.log([0.95, 0.05 / 3, 0.05 / 3, 0.05 / 3]),
      np.log([0.95, 0.05 / 3, 0.05 / 3, 0.05 / 3]),
      np.log([0.6, 0.2, 0.1, 0.1]),
      np.log([0.25, 0.25, 0.25, 0.25]) + np.array([0, 0, 0, -1e-9]),
  ])
  d = forgetting_diagnostics(logits, labels)
  assert d["confident_wrong"] == pytest.approx(25.0)  # Only example 1.
  assert d["pred_hist"] == [4, 0, 0, 0]
  assert d["pred_hist_entropy"] == 0.0
  rows = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  ent = -(rows * np.log(rows)).sum(1) / np.log(num_classes)
  assert d["forget_entropy"] == pytest.approx(ent.mean(), rel=1e-9)
  assert 0.0 <= d["forget_entropy"] <= 1.0


def test_pred_hist_entropy_uniform_vs_collapsed():
  num_classes = 5
  preds = np.repeat(np.arange(num_classes), 3)
  uniform = np.eye(num_classes)[preds] * 10.0
  collapsed = np.eye(num_classes)[np.full_like(preds, 2)] * 10.0
  labels = preds
  u = forgetting_diagnostics(uniform, labels)
  c = forgetting_diagnostics(collapsed, labels)
  assert u["pred_hist_entropy"] == pytest.approx(1.0)
  assert u["pred_hist"] == [3] * num_classes
  assert c["pred_hist_entropy"] == 0.0
  assert c["pred_hist"] == [0, 0, 15, 0, 0]
  # Two classes, 3 vs 12 predictions: H = -(.2 log .2 + .8 log .8) / log 5.
  half = np.eye(num_classes)[np.r_[np.zeros(3, int), np.ones(12, int)]]
  h = forgetting_diagnostics(half, labels)["pred_hist_entropy"]
  expected = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8)) / math.log(5)
  assert h == pytest.approx(expected)


def _mia_sets(rng, n=200, num_classes=10):
  member_labels = rng.integers(0, num_classes, n)
  nonmember_labels = rng.integers(0, num_classes, n)
  member = _logits_with_true_prob(
      member_labels, rng.uniform(0.9, 0.999, n), num_classes)
  nonmember = _logits_with_true_prob(
      nonmember_labels, rng.uniform(0.05, 0.5, n), num_classes)
  return member, member_labels, nonmember, nonmember_labels


@pytest.mark.parametrize("feature", metrics.MIA_FEATURES)
def test_mia_efficacy_separates_members_from_nonmembers(feature):
  rng = np.random.default_rng(0)
  num_classes = 10
  member, member_y, nonmember, nonmember_y = _mia_sets(rng)
  target_y = rng.integers(0, num_classes, 50)
  if feature == "correctness":  # Members right, non-members wrong.
    member = np.eye(num_classes)[member_y] * 5.0
    nonmember = np.eye(num_classes)[(nonmember_y + 1) % num_classes] * 5.0
    like_member = np.eye(num_classes)[target_y] * 5.0
    like_nonmember = np.eye(num_classes)[(target_y + 1) % num_classes] * 5.0
  else:
    like_member = _logits_with_true_prob(
        target_y, rng.uniform(0.9, 0.999, 50), num_classes)
    like_nonmember = _logits_with_true_prob(
        target_y, rng.uniform(0.05, 0.5, 50), num_classes)
  low = mia_efficacy(member, member_y, nonmember, nonmember_y, like_member,
                     target_y, feature=feature)
  high = mia_efficacy(member, member_y, nonmember, nonmember_y,
                      like_nonmember, target_y, feature=feature)
  assert low <= 5.0
  assert high >= 95.0


def test_mia_efficacy_rejects_bad_input():
  rng = np.random.default_rng(0)
  member, member_y, nonmember, nonmember_y = _mia_sets(rng, n=20)
  with pytest.raises(ValueError, match="confidence.*entropy.*correctness"):
    mia_efficacy(member, member_y, nonmember, nonmember_y, member, member_y,
                 feature="loss")
  with pytest.raises(ValueError, match="target_logits is empty"):
    mia_efficacy(member, member_y, nonmember, nonmember_y,
                 np.zeros((0, 10)), np.zeros(0, int))
  with pytest.raises(ValueError, match="member_logits is empty"):
    mia_efficacy(np.zeros((0, 10)), np.zeros(0, int), nonmember, nonmember_y,
                 member, member_y)


def _records_inputs(num_classes=3):
  def make(labels, correct):
    preds = np.where(correct, labels, (labels + 1) % num_classes)
    return np.eye(num_classes)[preds] * 4.0, labels

  forget = make(np.array([0, 1, 2, 0]), np.array([1, 0, 0, 0], bool))
  retain = make(np.array([0, 1, 2, 1, 2]), np.array([1, 1, 1, 1, 0], bool))
  test_labels = np.array([0, 0, 1, 1, 2, 2])
  test = make(test_labels, np.array([0, 0, 1, 0, 1, 1], bool))
  shadow = (retain[0][:3], retain[1][:3])
  return forget, retain, test, shadow


def test_unlearning_metrics_random_and_classwise():
  forget, retain, test, shadow = _records_inputs()
  kwargs = dict(
      forget_logits=forget[0], forget_labels=forget[1],
      retain_logits=retain[0], retain_labels=retain[1],
      test_logits=test[0], test_labels=test[1],
      shadow_member_logits=shadow[0], shadow_member_labels=shadow[1],
  )
  rec = unlearning_metrics(**kwargs)
  assert rec["ua"] == pytest.approx(100.0 - 25.0)
  assert rec["ra"] == pytest.approx(80.0)
  assert rec["ta"] == pytest.approx(50.0)
  assert "forget_class_ta" not in rec
  assert 0.0 <= rec["mia_efficacy"] <= 100.0
  for key in ("forget_entropy", "confident_wrong", "pred_hist_entropy",
              "pred_hist"):
    assert key in rec
  expected_mia = mia_efficacy(shadow[0], shadow[1], test[0], test[1],
                              forget[0], forget[1])
  assert rec["mia_efficacy"] == expected_mia

  cls = unlearning_metrics(**kwargs, forget_class=0)
  # Class 0 test examples are both wrong; the other four have 3 right.
  assert cls["ta"] == pytest.approx(75.0)
  assert cls["forget_class_ta"] == pytest.approx(0.0)
  # The MIA non-members are the whole test set in both scenarios.
  assert cls["mia_efficacy"] == expected_mia
  with pytest.raises(ValueError, match="out of range"):
    unlearning_metrics(**kwargs, forget_class=3)


def test_avg_gap_by_hand():
  rec = {"ua": 10.0, "ra": 95.0, "ta": 90.0, "mia_efficacy": 30.0, "x": 1}
  retrain = {"ua": 12.0, "ra": 99.0, "ta": 88.0, "mia_efficacy": 22.0}
  assert avg_gap(rec, retrain) == pytest.approx((2 + 4 + 2 + 8) / 4)
  assert avg_gap(rec, retrain, keys=("ua",)) == pytest.approx(2.0)
  assert avg_gap(retrain, retrain) == 0.0
  with pytest.raises(KeyError, match="x"):
    avg_gap(rec, retrain, keys=("x",))


def test_summarize_groups_by_method():
  records = [
      {"method": "oeu", "seed": 0, "ua": 10.0, "ta": 90.0},
      {"method": "ga", "seed": 0, "ua": 50.0, "ta": 40.0},
      {"method": "oeu", "seed": 1, "ua": 14.0, "ta": 92.0},
      {"method": "oeu", "seed": 2, "ua": 12.0, "ta": 94.0},
  ]
  s = summarize(records, ["ua", "ta"])
  assert list(s) == ["oeu", "ga"]
  assert s["oeu"]["n"] == 3
  assert s["oeu"]["mean"]["ua"] == pytest.approx(12.0)
  assert s["oeu"]["std"]["ua"] == pytest.approx(np.std([10.0, 14.0, 12.0]))
  assert s["ga"]["std"]["ta"] == 0.0
  s1 = summarize(records, ["ua"], ddof=1)
  assert s1["oeu"]["std"]["ua"] == pytest.approx(2.0)
  assert math.isnan(s1["ga"]["std"]["ua"])
  with pytest.raises(KeyError, match="ra"):
    summarize(records, ["ra"])


def test_doctests():
  for module in (logit_math, mia, metrics):
    assert doctest.testmod(module).failed == 0


def _reference_mia(member, member_y, nonmember, nonmember_y, target,
                   target_y):
  """Independent SalUn SVC_MIA on the confidence feature."""
  from sklearn.svm import SVC

  def conf(logits, labels):
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p[np.arange(len(labels)), labels][:, None]

  x = np.concatenate([conf(member, member_y), conf(nonmember, nonmember_y)])
  y = np.r_[np.ones(len(member_y)), np.zeros(len(nonmember_y))]
  clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
  return 100.0 * (1.0 - clf.predict(conf(target, target_y)).mean())


def _classwise_mia_sets(num_classes=4, forget_class=2):
  """Shadow and target sets where the forgotten class's test examples matter.

  Members (D_r, no forgotten class) have true-class probability 0.5-0.7, test
  examples of the other classes 0.0-0.3, and test examples of the forgotten
  class 0.9-0.99, where D_f also sits.
  """
  rng = np.random.default_rng(1)
  member_y = rng.choice([c for c in range(num_classes) if c != forget_class],
                        60)
  member = _logits_with_true_prob(member_y, rng.uniform(0.5, 0.7, 60),
                                  num_classes)
  test_y = np.repeat(np.arange(num_classes), 10)
  test_p = np.where(test_y == forget_class, rng.uniform(0.9, 0.99, 40),
                    rng.uniform(0.01, 0.3, 40))
  test = _logits_with_true_prob(test_y, test_p, num_classes)
  target_y = np.full(15, forget_class)
  target = _logits_with_true_prob(target_y, rng.uniform(0.9, 0.99, 15),
                                  num_classes)
  return member, member_y, test, test_y, target, target_y


def test_mia_shadow_sets_exclude_class():
  member, member_y, test, test_y, _, _ = _classwise_mia_sets()
  m, my, n, ny = metrics.mia_shadow_sets(member[:40], member_y[:40], test,
                                         test_y, exclude_class=2)
  assert not np.any(ny == 2)
  np.testing.assert_array_equal(n, test[test_y != 2])
  np.testing.assert_array_equal(ny, test_y[test_y != 2])
  # Members: the first |D_t without the class| of those given (balanced).
  assert len(my) == len(ny) == 30
  np.testing.assert_array_equal(m, member[:30])
  np.testing.assert_array_equal(my, member_y[:30])
  # Fewer members than kept non-members: all of them are kept.
  m, _, _, _ = metrics.mia_shadow_sets(member[:5], member_y[:5], test, test_y,
                                       exclude_class=2)
  assert len(m) == 5
  # None: the sets as given.
  m, my, n, ny = metrics.mia_shadow_sets(member[:40], member_y[:40], test,
                                         test_y)
  np.testing.assert_array_equal(m, member[:40])
  np.testing.assert_array_equal(ny, test_y)
  for bad in (4, -1, True, 2.0):
    with pytest.raises(ValueError, match="exclude_class"):
      metrics.mia_shadow_sets(member, member_y, test, test_y,
                              exclude_class=bad)
  with pytest.raises(ValueError, match="no shadow non-member is left"):
    metrics.mia_shadow_sets(member, member_y, test[test_y == 2],
                            test_y[test_y == 2], exclude_class=2)


def test_mia_efficacy_shadow_exclude_class():
  member, member_y, test, test_y, target, target_y = _classwise_mia_sets()
  member, member_y = member[:40], member_y[:40]  # The first |D_t| of D_r.
  default = mia_efficacy(member, member_y, test, test_y, target, target_y)
  # None is today's behaviour, bit for bit, and matches an independent SVC.
  assert mia_efficacy(member, member_y, test, test_y, target, target_y,
                      shadow_exclude_class=None) == default
  assert default == pytest.approx(
      _reference_mia(member, member_y, test, test_y, target, target_y),
      abs=1e-12)
  excluded = mia_efficacy(member, member_y, test, test_y, target, target_y,
                          shadow_exclude_class=2)
  keep = test_y != 2
  assert excluded == pytest.approx(
      _reference_mia(member[:30], member_y[:30], test[keep], test_y[keep],
                     target, target_y), abs=1e-12)
  # With the forgotten class's test examples among the non-members, the
  # attack calls D_f's region "non-member"; without them, confident examples
  # look like members.
  assert default == 100.0
  assert excluded == 0.0


def test_unlearning_metrics_shadow_exclude_class():
  member, member_y, test, test_y, target, target_y = _classwise_mia_sets()
  kwargs = dict(
      forget_logits=target, forget_labels=target_y,
      retain_logits=member, retain_labels=member_y,
      test_logits=test, test_labels=test_y,
      shadow_member_logits=member[:40], shadow_member_labels=member_y[:40],
      forget_class=2,
  )
  default = unlearning_metrics(**kwargs)
  assert unlearning_metrics(**kwargs, shadow_exclude_class=None) == default
  excluded = unlearning_metrics(**kwargs, shadow_exclude_class=2)
  assert excluded["mia_efficacy"] == mia_efficacy(
      member[:40], member_y[:40], test, test_y, target, target_y,
      shadow_exclude_class=2)
  # Only the MIA changes.
  assert {k: v for k, v in excluded.items() if k != "mia_efficacy"} == {
      k: v for k, v in default.items() if k != "mia_efficacy"}
  with pytest.raises(ValueError, match="exclude_class"):
    unlearning_metrics(**kwargs, shadow_exclude_class=7)
