"""SVC membership-inference attack (MIA) on logits (SalUn's ``SVC_MIA``).

MIA-efficacy: an RBF SVC fitted on one scalar feature of shadow members (the
first |D_t| examples of D_r) against shadow non-members (D_t), then
100 x (1 - mean prediction) on the target set D_f; higher means more
forgotten. For class-wise forgetting, ``shadow_exclude_class`` drops the
forgotten class from the non-members as SalUn's class-wise test set does (off
by default). Pure and host-side, like :mod:`oeu_jax.evaluation.metrics`, which
re-exports these names.

References:
  Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight
  Saliency in Both Image Classification and Generation", ICLR 2024.
  https://arxiv.org/abs/2310.12508
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import svm

from oeu_jax.evaluation.logit_math import as_logits_labels
from oeu_jax.evaluation.logit_math import entropy_from_log_probs
from oeu_jax.evaluation.logit_math import log_softmax

__all__ = ["MIA_FEATURES", "mia_shadow_sets", "mia_efficacy"]

MIA_FEATURES = ("confidence", "entropy", "correctness")


def _mia_features(logits: np.ndarray, labels: np.ndarray, feature: str):
  """SalUn's per-example MIA features, shape (N, 1)."""
  log_probs = log_softmax(logits)
  if feature == "confidence":
    true_log_probs = np.take_along_axis(log_probs, labels[:, None], axis=-1)
    values = np.exp(true_log_probs[:, 0])
  elif feature == "entropy":
    values = entropy_from_log_probs(log_probs)  # Unnormalized, as in SalUn.
  else:  # correctness
    values = (np.argmax(logits, axis=-1) == labels).astype(np.float64)
  return values[:, None]


def mia_shadow_sets(
    member_logits: Any,
    member_labels: Any,
    nonmember_logits: Any,
    nonmember_labels: Any,
    *,
    exclude_class: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """The shadow sets an MIA is fitted on, optionally without one class.

  With ``exclude_class=c`` this reproduces SalUn's class-wise MIA: SalUn's
  class-wise test set drops the forgotten class (``dataset.py``:
  ``test_set.targets != class_to_replace``) and its shadow members are the
  first ``len(test set)`` examples of D_r (``main_forget.py``:
  ``Subset(retain_dataset, range(test_len))``). So here

  * non-members: every non-member whose label is not ``c``, in order;
  * members: the first ``m`` given members, ``m`` = the number of non-members
    kept (all of them if fewer are given). Given the first |D_t| examples of
    D_r, these are the first |D_t without c| of D_r, as in SalUn, and the two
    sets stay the same size. Members are not filtered by class: in class-wise
    forgetting D_r holds no example of the forgotten class.

  With ``exclude_class=None`` the sets are returned as given (validated and
  converted to float64 / int64).

  Args:
    member_logits: Shadow-member logits ``(N_m, K)``.
    member_labels: Their labels ``(N_m,)``.
    nonmember_logits: Shadow non-member logits ``(N_n, K)``.
    nonmember_labels: Their labels ``(N_n,)``.
    exclude_class: A class in ``[0, K)`` to drop from the non-members, or
      ``None``.

  Returns:
    ``(member_logits, member_labels, nonmember_logits, nonmember_labels)``.

  Raises:
    ValueError: For malformed or empty sets, differing class counts, an
      ``exclude_class`` out of range, or no non-member left after excluding.

  Examples:
    >>> m, my, n, ny = mia_shadow_sets(
    ...     [[1.0, 0.0]] * 4, [0, 0, 0, 0], [[0.0, 1.0]] * 3, [0, 1, 0],
    ...     exclude_class=1)
    >>> len(m), ny.tolist()
    (2, [0, 0])
  """
  m_logits, m_labels = as_logits_labels(
      member_logits, member_labels, "member_logits")
  n_logits, n_labels = as_logits_labels(
      nonmember_logits, nonmember_labels, "nonmember_logits")
  num_classes = m_logits.shape[1]
  if n_logits.shape[1] != num_classes:
    raise ValueError(
        f"nonmember_logits has {n_logits.shape[1]} classes, expected"
        f" {num_classes}."
    )
  if exclude_class is None:
    return m_logits, m_labels, n_logits, n_labels
  if (isinstance(exclude_class, bool) or not isinstance(
      exclude_class, (int, np.integer))
      or not 0 <= exclude_class < num_classes):
    raise ValueError(
        f"exclude_class={exclude_class!r} must be an int in"
        f" [0, {num_classes})."
    )
  keep = n_labels != exclude_class
  if not keep.any():
    raise ValueError(
        f"no shadow non-member is left after excluding class {exclude_class}."
    )
  n_logits, n_labels = n_logits[keep], n_labels[keep]
  num_kept = len(n_labels)
  return m_logits[:num_kept], m_labels[:num_kept], n_logits, n_labels


def mia_efficacy(
    member_logits: Any,
    member_labels: Any,
    nonmember_logits: Any,
    nonmember_labels: Any,
    target_logits: Any,
    target_labels: Any,
    *,
    feature: str = "confidence",
    seed: int = 0,
    shadow_exclude_class: int | None = None,
) -> float:
  """SVC membership-inference efficacy on a target set, in percent (SalUn).

  Fits ``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")`` on one scalar
  feature per example, members labelled 1 and non-members 0, and returns
  ``100 * (1 - mean prediction on the target set)``: the share of the target
  set the attacker calls non-members. The sets are used as given: in the
  SalUn protocol the caller passes the first |D_t| examples of D_r as members,
  D_t as non-members and D_f as the target.

  Features (SalUn's ``SVC_MIA``):

  * ``"confidence"``: softmax probability of the true class (the default and
    the number papers report);
  * ``"entropy"``: Shannon entropy of the softmax in nats (not normalized);
  * ``"correctness"``: 1 if the prediction is right, else 0.

  Args:
    member_logits: Shadow-member logits ``(N_m, K)``.
    member_labels: Their labels ``(N_m,)``.
    nonmember_logits: Shadow non-member logits ``(N_n, K)``.
    nonmember_labels: Their labels ``(N_n,)``.
    target_logits: Logits of the set under attack ``(N_t, K)``, usually D_f.
    target_labels: Their labels ``(N_t,)``.
    feature: One of ``MIA_FEATURES``.
    seed: Passed to the SVC as ``random_state``. An SVC without probability
      estimates is deterministic, so this only pins the API.
    shadow_exclude_class: ``None`` (default): the shadow sets are used as
      given. A class ``c``: SalUn's class-wise MIA, the non-members without
      class ``c`` and the members cut to the first as many (see
      ``mia_shadow_sets``). The target set is never filtered.

  Returns:
    MIA-efficacy in ``[0, 100]``; higher means the target set looks less like
    training data (more forgotten).

  Raises:
    ValueError: For an unknown ``feature`` (the message lists the valid ones),
      an empty set, malformed logits/labels, or a bad
      ``shadow_exclude_class``.

  References:
    Fan et al., SalUn, ICLR 2024, https://arxiv.org/abs/2310.12508 (code:
    ``evaluation/SVC_MIA.py``).
  """
  if feature not in MIA_FEATURES:
    raise ValueError(
        f"Unknown MIA feature {feature!r}; valid features: {MIA_FEATURES}."
    )
  m_logits, m_labels, n_logits, n_labels = mia_shadow_sets(
      member_logits, member_labels, nonmember_logits, nonmember_labels,
      exclude_class=shadow_exclude_class)
  t_logits, t_labels = as_logits_labels(
      target_logits, target_labels, "target_logits")
  if t_logits.shape[1] != m_logits.shape[1]:
    raise ValueError(
        f"target_logits has {t_logits.shape[1]} classes, expected"
        f" {m_logits.shape[1]}."
    )
  feats = {
      "member_logits": _mia_features(m_logits, m_labels, feature),
      "nonmember_logits": _mia_features(n_logits, n_labels, feature),
      "target_logits": _mia_features(t_logits, t_labels, feature),
  }
  x_shadow = np.concatenate([feats["member_logits"], feats["nonmember_logits"]])
  y_shadow = np.concatenate([
      np.ones(len(feats["member_logits"])),
      np.zeros(len(feats["nonmember_logits"])),
  ])
  clf = svm.SVC(C=3, gamma="auto", kernel="rbf", random_state=seed)
  clf.fit(x_shadow, y_shadow)
  return float(100.0 * (1.0 - np.mean(clf.predict(feats["target_logits"]))))
