"""Pure loss functions of OEU and its baselines, computed from ``log_softmax``.

Every function takes logits of shape ``(N, K)`` and works in float32 whatever
the input dtype, so that bf16 logits and extreme values (±1e4) stay finite.
Masked classes (logits of ``-inf``, e.g. classes excluded from a head) have
probability 0 and follow the convention ``0 log 0 = 0``: entropies, the
forget loss and KL terms stay finite, with finite gradients, as
cross-entropy does (the label's own logit must be finite).

References:
  Forget by Uncertainty: Orthogonal Entropy Unlearning for Quantized Neural
  Networks, arXiv:2602.00567 (ICML 2026).
"""

import math

import jax
import jax.numpy as jnp


def _check_logits(logits: jax.Array) -> None:
  if logits.ndim != 2 or logits.shape[-1] < 2:
    raise ValueError(
        f"logits must have shape (batch, num_classes>=2), got {logits.shape}")


def _check_labels(logits: jax.Array, labels: jax.Array) -> None:
  _check_logits(logits)
  if labels.shape != logits.shape[:1]:
    raise ValueError(
        f"labels must have shape {logits.shape[:1]} to match logits "
        f"{logits.shape}, got {labels.shape}")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example cross-entropy ``-log p_y``.

  Args:
    logits: ``(N, K)`` logits.
    labels: ``(N,)`` integer class ids.

  Returns:
    ``(N,)`` float32 losses.

  Examples:
    >>> import jax.numpy as jnp
    >>> float(cross_entropy(jnp.zeros((1, 4)), jnp.array([2])))  # log 4
    1.386...
  """
  _check_labels(logits, labels)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  idx = labels[:, None].astype(jnp.int32)
  return -jnp.take_along_axis(logp, idx, axis=-1)[:, 0]


def mean_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean cross-entropy over the batch (the retain loss L_r)."""
  return jnp.mean(cross_entropy(logits, labels))


def _finite_log_probs(logp: jax.Array) -> jax.Array:
  """``log p`` with ``-inf`` (``p = 0``) replaced by 0, so ``p log p`` and
  its gradient are 0 there instead of ``0 * inf``; identical elsewhere."""
  return jnp.where(jnp.isfinite(logp), logp, 0.0)


def entropy(logits: jax.Array) -> jax.Array:
  """Per-example prediction entropy ``H(p) = -sum_k p_k log p_k`` in nats.

  Computed as ``-sum softmax * log_softmax``: no ``log(0)``. A class with
  ``p_k = 0`` (an underflowing or a ``-inf`` logit) contributes 0 (``0 log 0
  = 0``), so the entropy and its gradient are finite whenever at least one
  logit per row is finite.

  Args:
    logits: ``(N, K)`` logits.

  Returns:
    ``(N,)`` float32 entropies in ``[0, log K]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> float(entropy(jnp.zeros((1, 4))))  # uniform: log 4
    1.386...
  """
  _check_logits(logits)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(logp) * _finite_log_probs(logp), axis=-1)


def forget_loss(logits: jax.Array, *, normalize: bool = False) -> jax.Array:
  """The OEU forget objective ``L_f = -mean_x H(p(x))`` (to be minimized).

  Minimizing it maximizes prediction entropy on the forget batch, so that
  forgotten examples become uncertain rather than confidently mislabelled.

  Args:
    logits: ``(N, K)`` logits of a forget batch.
    normalize: divide by ``log K`` so the loss lies in ``[-1, 0]``; it then
      equals ``KL(p || uniform) / log K - 1`` (an option left open by the
      paper; default False).

  Returns:
    Scalar float32 loss.

  References:
    arXiv:2602.00567.
  """
  h = jnp.mean(entropy(logits))
  if normalize:
    h = h / math.log(logits.shape[-1])
  return -h


def kl_divergence(student_logits: jax.Array,
                  teacher_logits: jax.Array) -> jax.Array:
  """Per-example ``KL(p_teacher || p_student)`` (SCRUB's distillation term).

  Classes the teacher gives probability 0 (``-inf`` logits) contribute 0.
  """
  _check_logits(student_logits)
  logq = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  logp = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), axis=-1)
  terms = jnp.where(jnp.isfinite(logp), logp - logq, 0.0)
  return jnp.sum(jnp.exp(logp) * terms, axis=-1)
