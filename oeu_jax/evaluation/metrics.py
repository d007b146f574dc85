"""Unlearning metrics on logits and labels (SalUn convention).

Every function here is pure: it takes logits of shape ``(N, K)`` and integer
labels of shape ``(N,)`` (NumPy or JAX arrays) and returns Python floats,
NumPy arrays or plain dicts. Nothing here runs a model; the caller evaluates
the (quantized) network and passes its logits in. Computations run on the host
in float64.

Metrics (all in %, as in SalUn and Q-MUL, unless a docstring says otherwise):

* UA = 100 - accuracy on D_f; RA = accuracy on D_r; TA = accuracy on D_t
  (class-wise forgetting: on the remaining classes, and the forgotten class's
  test accuracy reported beside it).
* MIA-efficacy: an RBF SVC fitted on shadow members (the first |D_t| examples
  of D_r) against shadow non-members (D_t), then 100 x (1 - mean prediction)
  on D_f. Higher means more forgotten. For class-wise forgetting,
  ``shadow_exclude_class`` drops the forgotten class from the non-members as
  SalUn's class-wise test set does (off by default). The attack lives in
  :mod:`oeu_jax.evaluation.mia` and is re-exported here.
* Avg. gap: mean absolute difference to Retrain over {UA, RA, TA, MIA}.
* Forgetting-by-uncertainty diagnostics on D_f: mean normalized entropy,
  confident-misprediction rate, entropy of the predicted-class histogram.

References:
  Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight
  Saliency in Both Image Classification and Generation", ICLR 2024.
  https://arxiv.org/abs/2310.12508
  "Forget by Uncertainty: Orthogonal Entropy Unlearning for Quantized Neural
  Networks", ICML 2026. https://arxiv.org/abs/2602.00567
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np

from oeu_jax.evaluation.logit_math import as_logits_labels
from oeu_jax.evaluation.logit_math import entropy_from_log_probs
from oeu_jax.evaluation.logit_math import log_softmax
from oeu_jax.evaluation.mia import MIA_FEATURES
from oeu_jax.evaluation.mia import mia_efficacy
from oeu_jax.evaluation.mia import mia_shadow_sets

__all__ = [
    "GAP_KEYS",
    "CONFIDENT_THRESHOLD",
    "accuracy",
    "normalized_entropy",
    "forgetting_diagnostics",
    "unlearning_metrics",
    "avg_gap",
    "summarize",
    # Re-exported from oeu_jax.evaluation.mia.
    "MIA_FEATURES",
    "mia_shadow_sets",
    "mia_efficacy",
]

GAP_KEYS = ("ua", "ra", "ta", "mia_efficacy")
CONFIDENT_THRESHOLD = 0.9


def accuracy(logits: Any, labels: Any) -> float:
  """Top-1 accuracy in percent.

  Args:
    logits: Array of shape ``(N, K)``.
    labels: Integer array of shape ``(N,)`` with values in ``[0, K)``.

  Returns:
    ``100 * mean(argmax(logits) == labels)`` as a Python float.

  Raises:
    ValueError: If the shapes disagree, the labels are out of range, or
      ``N == 0``.

  Examples:
    >>> accuracy([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [1.0, 0.0]], [0, 1, 1, 0])
    75.0
  """
  logits, labels = as_logits_labels(logits, labels)
  return float(100.0 * np.mean(np.argmax(logits, axis=-1) == labels))


def normalized_entropy(logits: Any) -> np.ndarray:
  """Per-example prediction entropy divided by ``log K``.

  Computed from a shifted log-softmax, so it stays finite and exact for large
  logits (e.g. ``+-1e4``) and for ``-inf`` logits (masked classes).

  Args:
    logits: Array of shape ``(N, K)`` with ``K >= 2``.

  Returns:
    Float64 array of shape ``(N,)`` with values in ``[0, 1]``: 1 for a uniform
    prediction, 0 for a one-hot one.

  Raises:
    ValueError: If ``logits`` is not 2-D or has fewer than 2 classes.

  Examples:
    >>> normalized_entropy([[0.0, 0.0, 0.0, 0.0], [1e4, -1e4, 0.0, 0.0]])
    array([1., 0.])
  """
  logits = np.asarray(logits, dtype=np.float64)
  if logits.ndim != 2 or logits.shape[1] < 2:
    raise ValueError(
        f"logits must have shape (N, K) with K >= 2, got {logits.shape}."
    )
  entropy = entropy_from_log_probs(log_softmax(logits))
  # Rounding can give -0.0 or 1 + 1e-16; "+ 0.0" turns -0.0 into 0.0.
  return np.clip(entropy / np.log(logits.shape[1]), 0.0, 1.0) + 0.0

def forgetting_diagnostics(forget_logits: Any, forget_labels: Any) -> dict:
  """Forgetting-by-uncertainty diagnostics on the forget set.

  Args:
    forget_logits: Logits on D_f, shape ``(N, K)``.
    forget_labels: True labels of D_f, shape ``(N,)``.

  Returns:
    A dict with

    * ``forget_entropy``: mean of ``H(p) / log K`` over D_f, a **fraction in
      [0, 1]** (not a percentage); 1 means uniform predictions.
    * ``confident_wrong``: percentage of D_f predicted wrongly with maximum
      softmax probability ``>= 0.9`` (confident mispredictions).
    * ``pred_hist_entropy``: entropy of the histogram of predicted classes on
      D_f divided by ``log K``, a fraction in [0, 1]; near 0 when predictions
      collapse onto one class.
    * ``pred_hist``: list of ``K`` ints, the number of D_f examples predicted
      as each class.

  Raises:
    ValueError: If D_f is empty or the inputs are malformed.

  Examples:
    >>> d = forgetting_diagnostics([[5.0, 0.0], [5.0, 0.0]], [1, 0])
    >>> d["confident_wrong"], d["pred_hist"], d["pred_hist_entropy"]
    (50.0, [2, 0], 0.0)
  """
  logits, labels = as_logits_labels(
      forget_logits, forget_labels, "forget_logits"
  )
  num_classes = logits.shape[1]
  log_probs = log_softmax(logits)
  entropy = entropy_from_log_probs(log_probs) / np.log(num_classes)
  preds = np.argmax(logits, axis=-1)
  max_prob = np.exp(np.max(log_probs, axis=-1))
  confident_wrong = (preds != labels) & (max_prob >= CONFIDENT_THRESHOLD)
  hist = np.bincount(preds, minlength=num_classes)
  freqs = hist / hist.sum()
  nz = freqs[freqs > 0]
  hist_entropy = -np.sum(nz * np.log(nz)) / np.log(num_classes)
  # "+ 0.0" turns a -0.0 from rounding into 0.0.
  return {
      "forget_entropy": float(np.clip(np.mean(entropy), 0.0, 1.0) + 0.0),
      "confident_wrong": float(100.0 * np.mean(confident_wrong)),
      "pred_hist_entropy": float(np.clip(hist_entropy, 0.0, 1.0) + 0.0),
      "pred_hist": [int(c) for c in hist],
  }


def unlearning_metrics(
    *,
    forget_logits: Any,
    forget_labels: Any,
    retain_logits: Any,
    retain_labels: Any,
    test_logits: Any,
    test_labels: Any,
    shadow_member_logits: Any,
    shadow_member_labels: Any,
    forget_class: int | None = None,
    mia_feature: str = "confidence",
    shadow_exclude_class: int | None = None,
) -> dict:
  """All metrics of one unlearned model (one record of a results table).

  Args:
    forget_logits: Logits on D_f.
    forget_labels: Labels of D_f.
    retain_logits: Logits on D_r.
    retain_labels: Labels of D_r.
    test_logits: Logits on D_t (all classes).
    test_labels: Labels of D_t.
    shadow_member_logits: Logits on the MIA shadow members (the first |D_t|
      examples of D_r, chosen by the caller).
    shadow_member_labels: Their labels.
    forget_class: For class-wise forgetting, the forgotten class: then ``ta``
      is the test accuracy on the other classes and ``forget_class_ta`` the
      test accuracy on the forgotten class. ``None`` for random forgetting.
    mia_feature: MIA feature, one of ``MIA_FEATURES``.
    shadow_exclude_class: Passed to ``mia_efficacy``. ``None`` (default): the
      MIA non-members are the whole test set D_t, also in the class-wise
      scenario (the forgotten class's test examples included). Pass
      ``forget_class`` for SalUn's class-wise MIA: the forgotten class dropped
      from the non-members and the shadow members cut to the first as many
      (``mia_shadow_sets``). Only the MIA changes; ``ta`` and
      ``forget_class_ta`` do not.

  Returns:
    A dict with ``ua``, ``ra``, ``ta``, ``mia_efficacy`` (all %), the keys of
    ``forgetting_diagnostics``, and ``forget_class_ta`` (%) when
    ``forget_class`` is given.

  Raises:
    ValueError: For empty or malformed sets, a ``forget_class`` out of
      range or absent from the test set, or a bad ``shadow_exclude_class``.
  """
  ua = 100.0 - accuracy(forget_logits, forget_labels)
  ra = accuracy(retain_logits, retain_labels)
  test_logits_np, test_labels_np = as_logits_labels(
      test_logits, test_labels, "test_logits"
  )
  record = {"ua": ua, "ra": ra}
  if forget_class is None:
    record["ta"] = accuracy(test_logits_np, test_labels_np)
  else:
    if not 0 <= forget_class < test_logits_np.shape[1]:
      raise ValueError(
          f"forget_class={forget_class} is out of range for"
          f" {test_logits_np.shape[1]} classes."
      )
    in_class = test_labels_np == forget_class
    if not in_class.any():
      raise ValueError(f"The test set has no example of class {forget_class}.")
    rest = ~in_class
    record["ta"] = accuracy(test_logits_np[rest], test_labels_np[rest])
    record["forget_class_ta"] = accuracy(
        test_logits_np[in_class], test_labels_np[in_class]
    )
  record["mia_efficacy"] = mia_efficacy(
      shadow_member_logits,
      shadow_member_labels,
      test_logits_np,
      test_labels_np,
      forget_logits,
      forget_labels,
      feature=mia_feature,
      shadow_exclude_class=shadow_exclude_class,
  )
  record.update(forgetting_diagnostics(forget_logits, forget_labels))
  return record


def avg_gap(
    record: Mapping[str, float],
    retrain_record: Mapping[str, float],
    keys: Sequence[str] = GAP_KEYS,
) -> float:
  """Mean absolute gap to Retrain: the headline number, lower is better.

  Args:
    record: Metrics of a method (e.g. from ``unlearning_metrics``).
    retrain_record: Metrics of Retrain on the same split and seed.
    keys: Metrics to average over; default ``("ua", "ra", "ta",
      "mia_efficacy")``.

  Returns:
    ``mean_k |record[k] - retrain_record[k]|`` in the metrics' unit (%).

  Raises:
    KeyError: If a key is missing from either record.
    ValueError: If ``keys`` is empty.

  Examples:
    >>> avg_gap({"ua": 10, "ra": 90, "ta": 80, "mia_efficacy": 20},
    ...         {"ua": 12, "ra": 94, "ta": 80, "mia_efficacy": 14})
    3.0
  """
  keys = tuple(keys)
  if not keys:
    raise ValueError("avg_gap needs at least one key.")
  for name, rec in (("record", record), ("retrain_record", retrain_record)):
    missing = [k for k in keys if k not in rec]
    if missing:
      raise KeyError(f"{name} lacks metrics {missing}; it has {sorted(rec)}.")
  return float(
      np.mean([abs(float(record[k]) - float(retrain_record[k])) for k in keys])
  )


def summarize(
    records: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    *,
    group_by: str = "method",
    ddof: int = 0,
) -> dict:
  """Mean and standard deviation over seeds, grouped by method.

  Args:
    records: One dict per (method, seed), each with a ``group_by`` entry
      (the method name) and the metrics in ``keys``.
    keys: Metric names to summarize.
    group_by: Record key that names the group.
    ddof: Delta degrees of freedom of the standard deviation (0: population
      std, which is 0 for a single seed; 1: sample std, NaN for one seed).

  Returns:
    ``{method: {"n": number of records, "mean": {key: float},
    "std": {key: float}}}``, methods in order of first appearance.

  Raises:
    KeyError: If a record lacks ``group_by`` or one of ``keys``.

  Examples:
    >>> recs = [{"method": "oeu", "ua": 10.0}, {"method": "oeu", "ua": 14.0}]
    >>> summarize(recs, ["ua"])
    {'oeu': {'n': 2, 'mean': {'ua': 12.0}, 'std': {'ua': 2.0}}}
  """
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for i, rec in enumerate(records):
    if group_by not in rec:
      raise KeyError(f"record {i} has no {group_by!r} entry.")
    groups.setdefault(rec[group_by], []).append(rec)
  summary = {}
  for method, recs in groups.items():
    means, stds = {}, {}
    for key in keys:
      try:
        values = np.asarray([float(r[key]) for r in recs], dtype=np.float64)
      except KeyError:
        raise KeyError(
            f"a record of {method!r} lacks metric {key!r}."
        ) from None
      means[key] = float(np.mean(values))
      if len(values) > ddof:
        stds[key] = float(np.std(values, ddof=ddof))
      else:
        stds[key] = float("nan")
    summary[method] = {"n": len(recs), "mean": means, "std": stds}
  return summary
