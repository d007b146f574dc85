"""Retrain-free targets: what Retrain would show on D_f, from what a user has.

A user unlearns because retraining costs too much, so there is never a
Retrain model to compare with; there are the Original, D_f, D_r and a
held-out test set. From those, per scenario, an estimate of Retrain's
metrics (UA, RA, TA, MIA-efficacy, in percent):

* **class** (class ``c`` forgotten): a model that never saw ``c`` never
  predicts it, so UA = 100; its true-class confidence on ``c`` is about
  zero, below any member's, so the membership attack calls all of D_f
  non-members: MIA-efficacy = 100.
* **random**: D_f is a random sample of the training distribution, so to a
  model that never saw it D_f is held-out data. A held-out slice ``H`` (half
  of the test set, drawn per seed) stands in for it: UA = 100 - the
  Original's accuracy on ``H``; MIA-efficacy = the share of ``H`` that the
  attack (:func:`oeu_jax.evaluation.mia.mia_efficacy`, the same SVC on the
  true-class confidence) calls non-members when it is fitted on the shadow
  members against the *other* half of the test set, so that ``H`` is as new
  to the attack as D_f is.
* **mislabel**: D_f is held-out-like data carrying wrong labels. ``H`` gets
  wrong labels the way the scenario draws them (a uniformly drawn other
  class per example), then as for random.

In every scenario RA and TA are the Original's: Retrain fits D_r and
generalizes as well as the Original does (on these data the two differ by
well under a point; ``results/protocol``).

The **estimated Avg. gap** of a model is its Avg. gap to these targets
(:func:`oeu_jax.evaluation.metrics.avg_gap`); records carry it beside the
true one, and :mod:`oeu_jax.engine.stopping`'s ``auto`` rule stops a run
when D_f meets the UA target.
"""

from typing import Any
from typing import Optional

import numpy as np

from oeu_jax.evaluation import metrics
from oeu_jax.evaluation import mia

KEYS = metrics.GAP_KEYS
SCENARIOS = ("class", "random", "mislabel")
# The share of the test set held out as H (the rest fits the attack).
HELDOUT_FRACTION = 0.5


def heldout_split(num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """``(H, rest)``: test indices held out as D_f's stand-in, and the others
  (the attack's non-members); sorted, a pure function of the seed.

  Raises:
    ValueError: fewer than 2 test examples.
  """
  if num_test < 2:
    raise ValueError(f"the held-out targets need >= 2 test examples, got "
                     f"{num_test}")
  rng = np.random.default_rng([int(seed), 7919])
  perm = rng.permutation(num_test)
  k = max(1, int(round(HELDOUT_FRACTION * num_test)))
  return np.sort(perm[:k]), np.sort(perm[k:])


def wrong_labels(labels: np.ndarray, num_classes: int,
                 seed: int) -> np.ndarray:
  """Each label moved to a uniformly drawn other class (the mislabel
  scenario's corruption), fixed by ``seed``."""
  rng = np.random.default_rng([int(seed), 104729])
  shift = rng.integers(1, num_classes, size=len(labels))
  return (np.asarray(labels) + shift) % num_classes


def targets(scenario: str, *, ra: float, ta: float,
            test_logits: Optional[Any] = None,
            test_labels: Optional[Any] = None,
            member_logits: Optional[Any] = None,
            member_labels: Optional[Any] = None,
            seed: int = 0) -> dict:
  """The estimated Retrain metrics on one split (see the module docstring).

  Args:
    scenario: one of :data:`SCENARIOS`.
    ra: the Original's RA (percent).
    ta: the Original's TA (percent).
    test_logits: the Original's logits on the test set (random, mislabel).
    test_labels: the test labels.
    member_logits: the Original's logits on the MIA shadow members (the
      first |D_t| examples of D_r, as for the record's MIA).
    member_labels: their (training) labels.
    seed: draws ``H`` (and, for mislabel, its wrong labels).

  Returns:
    ``{"ua", "ra", "ta", "mia_efficacy"}`` in percent.

  Raises:
    ValueError: an unknown scenario, or random/mislabel without logits.
  """
  if scenario not in SCENARIOS:
    raise ValueError(f"unknown scenario {scenario!r}; valid: "
                     f"{', '.join(SCENARIOS)}")
  out = {"ra": float(ra), "ta": float(ta)}
  if scenario == "class":
    return dict(out, ua=100.0, mia_efficacy=100.0)
  if test_logits is None or member_logits is None:
    raise ValueError(f"scenario {scenario!r}: the held-out targets need the "
                     "Original's test and shadow-member logits")
  test_logits = np.asarray(test_logits)
  test_labels = np.asarray(test_labels)
  held, rest = heldout_split(len(test_labels), seed)
  h_labels = test_labels[held]
  if scenario == "mislabel":
    h_labels = wrong_labels(h_labels, test_logits.shape[-1], seed)
  members = np.asarray(member_logits)[:len(rest)]
  out["ua"] = 100.0 - metrics.accuracy(test_logits[held], h_labels)
  out["mia_efficacy"] = mia.mia_efficacy(
      members, np.asarray(member_labels)[:len(rest)],
      test_logits[rest], test_labels[rest], test_logits[held], h_labels)
  return out


def estimated_gap(record: dict, target: dict) -> float:
  """Avg. gap of ``record`` to the estimated Retrain metrics ``target``."""
  return metrics.avg_gap(record, target, KEYS)
