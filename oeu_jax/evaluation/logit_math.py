"""Host-side checks and transforms of logits (NumPy, float64).

The metrics (:mod:`oeu_jax.evaluation.mia`, :mod:`oeu_jax.evaluation.metrics`)
run on the host on the logits a caller computed; these helpers validate a
(logits, labels) pair and compute a numerically stable log-softmax and the
Shannon entropy from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_logits_labels", "log_softmax", "entropy_from_log_probs"]


def as_logits_labels(
    logits: Any, labels: Any, name: str = "logits", *, allow_empty: bool = False
) -> tuple[np.ndarray, np.ndarray]:
  """Validates and converts a (logits, labels) pair to float64 / int64.

  Args:
    logits: Array of shape ``(N, K)`` with ``K >= 2``.
    labels: Integer array of shape ``(N,)`` with values in ``[0, K)``.
    name: What ``logits`` is called in error messages.
    allow_empty: Accept ``N == 0``.

  Returns:
    ``(logits, labels)`` as float64 and int64 NumPy arrays.

  Raises:
    ValueError: If the shapes disagree, ``K < 2``, the labels are not
      integers or out of range, or ``N == 0`` without ``allow_empty``.

  Examples:
    >>> x, y = as_logits_labels([[1.0, 0.0]], [1])
    >>> x.dtype, y.dtype
    (dtype('float64'), dtype('int64'))
  """
  logits = np.asarray(logits, dtype=np.float64)
  labels = np.asarray(labels)
  if logits.ndim != 2:
    raise ValueError(
        f"{name} must have shape (N, K), got shape {logits.shape}."
    )
  if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
    raise ValueError(
        f"labels for {name} must have shape ({logits.shape[0]},), got shape"
        f" {labels.shape}."
    )
  if logits.shape[1] < 2:
    raise ValueError(f"{name} needs at least 2 classes, got {logits.shape[1]}.")
  if not allow_empty and logits.shape[0] == 0:
    raise ValueError(f"{name} is empty: a metric needs at least one example.")
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
        f"labels for {name} must be integers, got dtype {labels.dtype}."
    )
  labels = labels.astype(np.int64)
  if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
    raise ValueError(
        f"labels for {name} must lie in [0, {logits.shape[1]}), got range"
        f" [{labels.min()}, {labels.max()}]."
    )
  return logits, labels


def log_softmax(logits: np.ndarray) -> np.ndarray:
  """Numerically stable log-softmax over the last axis (float64).

  Examples:
    >>> log_softmax(np.array([[0.0, 0.0]]))
    array([[-0.69314718, -0.69314718]])
  """
  shifted = logits - np.max(logits, axis=-1, keepdims=True)
  return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def entropy_from_log_probs(log_probs: np.ndarray) -> np.ndarray:
  """Shannon entropy in nats, with 0 log 0 = 0 (also for -inf logits).

  Examples:
    >>> entropy_from_log_probs(log_softmax(np.zeros((1, 4)))) / np.log(4)
    array([1.])
  """
  probs = np.exp(log_probs)
  terms = np.where(probs > 0, probs * np.where(probs > 0, log_probs, 0.0), 0.0)
  return -np.sum(terms, axis=-1)
