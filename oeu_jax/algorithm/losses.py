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


def soft_cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
  """Per-example cross-entropy to a distribution, ``-sum_k t_k log p_k``.

  Equals ``KL(t || p) + H(t)``: for a fixed target it is minimal exactly at
  ``p = t``. Classes with ``t_k = 0`` contribute 0 even where ``p_k = 0``.

  Args:
    logits: ``(N, K)`` logits.
    target: ``(N, K)`` rows summing to 1.

  Returns:
    ``(N,)`` float32 losses.
  """
  _check_logits(logits)
  if target.shape != logits.shape:
    raise ValueError(f"target must have the logits' shape {logits.shape}, "
                     f"got {target.shape}")
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  t = target.astype(jnp.float32)
  return -jnp.sum(jnp.where(t > 0, t * _finite_log_probs(logp), 0.0),
                  axis=-1)


def complement_target(labels: jax.Array, num_classes: int) -> jax.Array:
  """Uniform over the classes other than each label: ``(N, K)``.

  The most uncertain prediction that never names the forgotten label.

  Examples:
    >>> import jax.numpy as jnp
    >>> complement_target(jnp.array([1]), 3).tolist()
    [[0.5, 0.0, 0.5]]
  """
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  other = 1.0 - jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return other / (num_classes - 1)


def renormalized_target(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``softmax(logits)`` with the label's mass removed and renormalized.

  ``t_k = p_k / (1 - p_y)`` for ``k != y``, ``t_y = 0``, computed as a
  softmax over the logits with the label's logit masked to ``-inf`` (exact
  even when ``p_y`` rounds to 1).

  Args:
    logits: ``(N, K)`` logits (of the Original model).
    labels: ``(N,)`` labels.

  Returns:
    ``(N, K)`` float32 rows summing to 1, zero at the label.
  """
  _check_labels(logits, labels)
  true = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  masked = jnp.where(true, -jnp.inf, logits.astype(jnp.float32))
  return jax.nn.softmax(masked, axis=-1)


def target_forget_loss(logits: jax.Array, target: jax.Array, *,
                       normalize: bool = False) -> jax.Array:
  """Forget loss toward a target distribution: mean soft cross-entropy.

  The ``target="complement"`` and ``"renormalized"`` variants of OEU's
  forget loss (:func:`forget_loss` is the uniform target): minimal where
  every forget prediction equals its target.

  Args:
    logits: ``(N, K)`` logits of a forget batch.
    target: ``(N, K)`` target distributions.
    normalize: divide by ``log K``, as :func:`forget_loss` does.

  Returns:
    Scalar float32 loss.
  """
  loss = jnp.mean(soft_cross_entropy(logits, target))
  if normalize:
    loss = loss / math.log(logits.shape[-1])
  return loss
