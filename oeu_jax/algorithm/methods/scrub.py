"""SCRUB: a student moving away from the teacher on D_f, toward it on D_r.

References:
  Kurmanji et al., Towards Unbounded Machine Unlearning, arXiv:2302.09880.
"""

import dataclasses

import jax
import jax.numpy as jnp

from oeu_jax.algorithm import losses
from oeu_jax.algorithm.methods import base
from oeu_jax.nn import models

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SCRUBConfig:
  """SCRUB (Kurmanji et al. 2023), defaults from its public code.

  Attributes:
    msteps: epochs (from the start) that interleave max steps; SCRUB: 2
      (grid {1, 2, 3, 5}).
    gamma: weight of the retain CE in a min step; SCRUB: 0.99.
    alpha: weight of the retain KL in a min step; SCRUB: 0.001 (grid
      {0.001, 0.01, 0.1, 0.5}).
    temperature: distillation temperature ``kd_T``; SCRUB: 4.

  SCRUB's own lr (5e-4, 3-10 epochs) is not used: every method shares the
  unlearning budget of ``UnlearnConfig``.
  """
  msteps: int = 2
  gamma: float = 0.99
  alpha: float = 0.001
  temperature: float = 4.0


def distill_kl(student_logits: Array, teacher_logits: Array,
               temperature: float) -> Array:
  """SCRUB's ``DistillKL``: ``T^2 * mean KL(p_t^T || p_s^T)``."""
  t = float(temperature)
  return t * t * jnp.mean(losses.kl_divergence(
      student_logits.astype(jnp.float32) / t,
      teacher_logits.astype(jnp.float32) / t))


def scrub_is_max_step(step: Array, steps_per_epoch: Array,
                      msteps: int) -> Array:
  """SCRUB's schedule: max steps on even steps of the first ``msteps``
  epochs."""
  return (step // steps_per_epoch < msteps) & (step % 2 == 0)


def scrub(model, config: SCRUBConfig = SCRUBConfig(),
          optimizer: base.OptimizerConfig = base.OptimizerConfig(),
          name: str = "scrub") -> base.Method:
  """SCRUB: a student moving away from the teacher on D_f, toward it on D_r.

  The teacher is the Original model (its params and batch stats are kept in
  ``method_state``, evaluated in eval mode as in SCRUB). A *max* step
  descends ``-KL_T(teacher || student)`` on the forget batch; a *min* step
  descends ``gamma * CE + alpha * KL_T`` on the retain batch. SCRUB runs, for
  each of its first ``msteps`` epochs, a max epoch over D_f then a min epoch
  over D_r, and only min epochs after (``large_scale_unlearning.ipynb``:
  forget batch 512, retain batch 256, SGD 5e-4). That is the reference
  schedule here: ``"sequential"`` with ``forget_epochs=msteps`` and a forget
  batch of 512, a forget step being a max step and a retain step a min step.
  Under the paired schedule (one forget and one retain batch per step),
  during the first ``msteps`` epochs even steps are max steps and odd steps
  min steps, then every step is a min step: the loop picks the kind on the
  host (``Method.paired_kind``) and hands the max step only the forget batch,
  the min step only the retain batch, so no conditional is compiled around
  the gradients. ``grads`` called directly with both batches picks the
  branch with ``lax.cond``.

  References:
    Kurmanji et al., Towards Unbounded Machine Unlearning,
    arXiv:2302.09880.
  """
  temp = float(config.temperature)

  def prepare(inputs):
    return {"teacher_params": inputs.params,
            "teacher_batch_stats": inputs.batch_stats,
            "steps_per_epoch": jnp.asarray(max(int(inputs.steps_per_epoch),
                                               1), jnp.int32)}

  def teacher_logits(mstate, x):
    logits, _ = models.apply_model(model, mstate["teacher_params"],
                                   mstate["teacher_batch_stats"], x,
                                   train=False)
    return jax.lax.stop_gradient(logits)

  def max_branch(params, batch_stats, mstate, fb, rb):
    t = teacher_logits(mstate, fb.x)

    def loss(p):
      s, bs = base.forward(model, p, batch_stats, fb.x)
      return -distill_kl(s, t, temp), bs

    (lv, bs), g = jax.value_and_grad(loss, has_aux=True)(params)
    return g, bs, -lv, jnp.float32(0.0)

  def min_branch(params, batch_stats, mstate, fb, rb):
    t = teacher_logits(mstate, rb.x)

    def loss(p):
      s, bs = base.forward(model, p, batch_stats, rb.x)
      ce = losses.mean_cross_entropy(s, rb.y)
      return config.gamma * ce + config.alpha * distill_kl(s, t, temp), (
          bs, ce)

    (_, (bs, ce)), g = jax.value_and_grad(loss, has_aux=True)(params)
    return g, bs, jnp.float32(0.0), ce

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del rng
    if fb is None or rb is None:  # The sequential schedule: one kind.
      is_max = jnp.asarray(rb is None)
      branch = max_branch if rb is None else min_branch
      g, bs, kl_f, ce_r = branch(params, batch_stats, mstate, fb, rb)
      return base.StepOutput(g, {}, bs, mstate,
                             {"forget_kl": kl_f, "retain_loss": ce_r,
                              "max_step": is_max.astype(jnp.float32)})
    is_max = scrub_is_max_step(step, mstate["steps_per_epoch"],
                               config.msteps)
    g, bs, kl_f, ce_r = jax.lax.cond(
        is_max, max_branch, min_branch, params, batch_stats, mstate, fb, rb)
    return base.StepOutput(g, {}, bs, mstate,
                           {"forget_kl": kl_f, "retain_loss": ce_r,
                            "max_step": is_max.astype(jnp.float32)})

  def paired_kind(step: int, steps_per_epoch: int) -> int:
    is_max = scrub_is_max_step(step, max(steps_per_epoch, 1), config.msteps)
    return base.FORGET if is_max else base.RETAIN

  return base.Method(name, prepare, grads, base.simple_tx(optimizer),
                     schedule="sequential", schedules=("sequential",
                                                       "paired"),
                     forget_batch_size=512,
                     forget_epochs=int(config.msteps),
                     paired_kind=paired_kind)
