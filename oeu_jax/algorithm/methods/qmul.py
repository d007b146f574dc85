"""Q-MUL: similar labels and adaptive gradient reweighting.

With ``forget="entropy"`` it is the ``oeu_scalar`` ablation of OEU: the
entropy forget loss with this scalar reweighting instead of the projection.

References:
  Tong et al., Robust Machine Unlearning for Quantized Neural Networks via
  Adaptive Gradient Reweighting with Similar Labels, arXiv:2503.13917
  (ICCV 2025).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from oeu_jax.algorithm.methods import base

Array = jax.Array

FIRST_EPOCH_WEIGHTS = ("step0", "equal")


@dataclasses.dataclass(frozen=True)
class QMULConfig:
  """Q-MUL: similar labels + adaptive gradient reweighting.

  Attributes:
    first_epoch: weights of the first epoch, before any epoch mean exists:
      ``"step0"`` (default): from the gradient norms at step 0, held for
      the first epoch; ``"equal"``: ``w_f = w_r = 1/2`` (grid: both).
    forget: the forget objective: ``"similar"`` (Q-MUL) or ``"entropy"``
      (``oeu_scalar``).
    normalize: with ``forget="entropy"``, divide by ``log K``.
    eps: guards ``G_f + G_r = 0`` (then equal weights).
  """
  first_epoch: str = "step0"
  forget: str = "similar"
  normalize: bool = False
  eps: float = 1e-12


def qmul_weights(g_forget: Array, g_retain: Array,
                 eps: float = 1e-12) -> Array:
  """``(w_f, w_r) = (G_r, G_f) / (G_f + G_r)``; equal when both are 0.

  Examples:
    >>> qmul_weights(jnp.float32(1.0), jnp.float32(3.0)).tolist()
    [0.75, 0.25]
  """
  den = g_forget + g_retain
  ok = den > eps
  safe = jnp.where(ok, den, 1.0)
  return jnp.where(ok, jnp.stack([g_retain / safe, g_forget / safe]),
                   jnp.full((2,), 0.5, jnp.float32)).astype(jnp.float32)


def qmul(model, config: QMULConfig = QMULConfig(),
         optimizer: base.OptimizerConfig = base.OptimizerConfig(),
         name: str = "qmul") -> base.Method:
  """Q-MUL: similar labels plus adaptive gradient reweighting.

  Each forget example is relabelled, once in ``prepare``, with its most
  probable wrong class under the Original model
  (:func:`~oeu_jax.algorithm.methods.base.similar_labels`). A step computes
  ``g_f = grad CE(D_f, similar)`` and ``g_r = grad CE(D_r)`` and hands
  ``w_f g_f + w_r g_r`` to the optimizer, with

      w_f = G_r / (G_f + G_r),   w_r = G_f / (G_f + G_r),

  where ``G_f``, ``G_r`` are the mean global gradient norms of the forget
  and retain losses over the previous epoch. ``method_state`` carries the
  running sums of this epoch; at the last step of an epoch the weights are
  swapped for the epoch means (``jnp.where``, no Python branching). The
  first epoch uses the norms at step 0 (``first_epoch="step0"``) or equal
  weights (``"equal"``).

  Under the reference schedule (``"sequential"``: Q-MUL's
  ``unlearn/RL_min.py`` makes a pass over D_f, then one over D_r) a forget
  step descends ``w_f g_f`` and a retain step ``w_r g_r``; ``G_f`` and
  ``G_r`` are the means over that epoch's forget and retain steps, and the
  first epoch uses equal weights (step 0 sees no retain gradient). Q-MUL's
  code recomputes labels and weights each epoch from full passes with the
  current model; here labels come from the Original model once and the
  norms from the steps themselves (``experiments/REFERENCES.md``).

  ``config.forget="entropy"`` gives the ``oeu_scalar`` ablation (OEU's
  entropy loss with this scalar reweighting instead of the projection).

  References:
    Tong et al., Robust Machine Unlearning for Quantized Neural Networks via
    Adaptive Gradient Reweighting with Similar Labels, arXiv:2503.13917.
  """
  base.check_choice(config.first_epoch, FIRST_EPOCH_WEIGHTS, "first_epoch")
  base.check_choice(config.forget, ("similar", "entropy"), "forget")
  objective = base.forget_objective(config.forget, normalize=config.normalize)
  eps = float(config.eps)

  def prepare(inputs):
    state = dict(objective.prepare(inputs))
    state.update(
        weights=jnp.full((2,), 0.5, jnp.float32),
        norm_sums=jnp.zeros((2,), jnp.float32),
        norm_count=jnp.zeros((), jnp.int32),
        kind_counts=jnp.zeros((2,), jnp.float32),
        steps_per_epoch=jnp.asarray(max(int(inputs.steps_per_epoch), 1),
                                    jnp.int32))
    return state

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    zero = jnp.float32(0.0)
    loss_f = loss_r = zero
    new_bs = batch_stats
    if fb is not None:
      loss_f, g_f = base.forget_grad(model, objective, params, batch_stats,
                                     mstate, fb, rng)
    if rb is not None:
      (loss_r, new_bs), g_r = base.retain_ce(model, params, batch_stats, rb)
    norms = jnp.stack([
        optax.tree.norm(base.as_f32(g_f)) if fb is not None else zero,
        optax.tree.norm(base.as_f32(g_r)) if rb is not None else zero])
    w = mstate["weights"]
    if fb is not None and rb is not None:
      if config.first_epoch == "step0":
        w = jnp.where(step == 0, qmul_weights(norms[0], norms[1], eps), w)
      g = base.weighted_sum(w[0], g_f, w[1], g_r)
    else:  # One pass of the sequential schedule: its own weight.
      k, gk = (0, g_f) if fb is not None else (1, g_r)
      g = optax.tree.cast_like(optax.tree.scale(w[k], base.as_f32(gk)), gk)
    seen = jnp.asarray([fb is not None, rb is not None], jnp.float32)
    sums = mstate["norm_sums"] + norms
    count = mstate["norm_count"] + 1
    counts = mstate["kind_counts"] + seen
    end = (step + 1) % mstate["steps_per_epoch"] == 0
    if fb is not None and rb is not None:
      means = sums / jnp.maximum(count, 1).astype(jnp.float32)
    else:
      means = sums / jnp.maximum(counts, 1.0)
    new_w = jnp.where(end, qmul_weights(means[0], means[1], eps), w)
    new_state = dict(mstate)
    new_state.update(
        weights=new_w, norm_sums=jnp.where(end, jnp.zeros_like(sums), sums),
        norm_count=jnp.where(end, jnp.zeros_like(count), count),
        kind_counts=jnp.where(end, jnp.zeros_like(counts), counts))
    metrics = {"forget_loss": loss_f, "retain_loss": loss_r,
               "w_f": w[0], "w_r": w[1], "grad_norm_f": norms[0],
               "grad_norm_r": norms[1]}
    return base.StepOutput(g, {}, new_bs, new_state, metrics)

  # Q-MUL's reference schedule (``unlearn/RL_min.py``): a pass over D_f,
  # then one over D_r, per epoch. The oeu_scalar ablation pairs batches, as
  # OEU does.
  sequential = config.forget == "similar"
  return base.Method(name, prepare, grads, base.simple_tx(optimizer),
                     schedule="sequential" if sequential else "paired",
                     schedules=("sequential", "paired"))
