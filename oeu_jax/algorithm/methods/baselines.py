"""The simple baselines: FT, GA, RL, NegGrad+ and l1-sparse.

=============== ==========================================================
``ft``          cross-entropy on D_r (SalUn ``FT``)
``ga``          gradient ascent on the D_f cross-entropy (SalUn ``GA``)
``rl``          random wrong labels on D_f + CE on D_r (SalUn ``RL``)
``neggrad_plus`` ``beta CE(D_r) - (1 - beta) CE(D_f)`` (SCRUB's NegGrad+)
``l1_sparse``   FT + decaying l1 penalty (SalUn ``FT_prune``)
=============== ==========================================================

References:
  SalUn: arXiv:2310.12508 (code: OPTML-Group/Unlearn-Saliency). SCRUB:
  arXiv:2302.09880. l1-sparse: arXiv:2304.04934.
"""

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from oeu_jax.algorithm import losses
from oeu_jax.algorithm.methods import base

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class RLConfig:
  """Random labels (SalUn ``RL``).

  Attributes:
    resample: False (default): one random wrong label per forget example,
      drawn once in ``prepare`` from its rng (deterministic, resumable).
      True: a new label every step from ``fold_in(rng, step)`` (the SalUn
      CIFAR-10 code draws per batch, its CIFAR-100 code once per epoch).
    exclude_true: draw uniformly over the K-1 wrong classes (default). The
      SalUn code draws over all K classes (``torch.randint(0, K)``), so 1/K
      of its "random" labels are the true label; False reproduces that.
    forget_weight: weight of the relabelled forget CE. SalUn's RL has no
      such weight (1.0); the protocol searches {1, 0.5}
      (``experiments/protocol.py``).
  """
  resample: bool = False
  exclude_true: bool = True
  forget_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class GAConfig:
  """Gradient ascent.

  Attributes:
    lr_scale: multiplies the shared learning rate (0.01: the shared 1e-2
      becomes GA's reference 1e-4, the Sparse-Unlearn README value for 5
      epochs at constant lr; SalUn's maintainers advise 5e-4 to 1e-3).
      Ascent on cross-entropy is unbounded: at 1e-2 it diverges within an
      epoch on digits. The protocol (``experiments/protocol.py``) sets
      ``lr_scale=1`` and searches the learning rate itself.
  """
  lr_scale: float = 0.01


@dataclasses.dataclass(frozen=True)
class NegGradPlusConfig:
  """NegGrad+ (Kurmanji et al., SCRUB paper): ``beta L_r - (1-beta) L_f``.

  Attributes:
    beta: retain weight. SCRUB's code uses 0.95 and 0.9999 (0.999, the
      default kept here for the checkpoints of earlier runs, is neither);
      the SalUn harness has no NegGrad+ (its ``GA`` is pure ascent). The
      protocol searches {0.95, 0.9999}. SCRUB pairs ``zip(D_r,
      cycle(D_f))``, so NegGrad+'s reference schedule is paired.
  """
  beta: float = 0.999


@dataclasses.dataclass(frozen=True)
class L1SparseConfig:
  """l1-sparse fine-tuning (SalUn ``FT_prune`` / ``FT_l1``).

  The penalty ``a_e * ||theta||_1`` is added to the retain CE, with
  ``a_e = alpha * (1 - e / (E - no_l1_epochs))`` in epoch ``e`` of ``E``
  (0 afterwards), as in SalUn's ``FT_iter``; ``per_step=True`` decays it
  linearly per step instead.

  Attributes:
    alpha: initial coefficient. No public script or README of SalUn or
      Sparse Unlearn gives a value (its argparse default 0.2 is a shared
      flag); 5e-4 is the value reported in the l1-sparse paper for
      CIFAR-10. The protocol searches {5e-4, 1e-4}.
    epochs: the unlearning epochs E the decay runs over. ``None``: the
      run's total steps from ``PrepareInputs.total_steps`` (a field the loop
      may provide); otherwise it must be given.
    no_l1_epochs: final epochs without the penalty (SalUn's default 0).
    per_step: decay per step instead of per epoch.
  """
  alpha: float = 5e-4
  epochs: Optional[int] = None
  no_l1_epochs: int = 0
  per_step: bool = False


def ft(model, optimizer: base.OptimizerConfig = base.OptimizerConfig(),
       name: str = "ft") -> base.Method:
  """Fine-tuning on D_r with cross-entropy (SalUn's FT)."""

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del fb, rng, step
    (loss_r, new_bs), g = base.retain_ce(model, params, batch_stats, rb)
    return base.StepOutput(g, {}, new_bs, mstate, {"retain_loss": loss_r})

  return base.Method(name, base.no_prepare, grads, base.simple_tx(optimizer),
                     schedule="retain_only",
                     schedules=("retain_only", "paired"))


def ga(model, config: GAConfig = GAConfig(),
       optimizer: base.OptimizerConfig = base.OptimizerConfig(),
       name: str = "ga") -> base.Method:
  """Gradient ascent on the forget-set cross-entropy.

  Args:
    model: the Flax module.
    config: see :class:`GAConfig` (its own learning-rate scale).
    optimizer: the shared optimizer.
    name: the method's name in results.

  Returns:
    A :class:`~oeu_jax.algorithm.methods.base.Method`.

  References:
    SalUn, arXiv:2310.12508 (``unlearn/GA.py``).
  """

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del rb, rng, step

    def lf(p):
      logits, bs = base.forward(model, p, batch_stats, fb.x)
      return -losses.mean_cross_entropy(logits, fb.y), bs

    (loss, new_bs), g = jax.value_and_grad(lf, has_aux=True)(params)
    return base.StepOutput(g, {}, new_bs, mstate, {"forget_loss": loss})

  def make_tx(schedule, mstate):
    del mstate
    return base.make_optimizer(lambda s: config.lr_scale * schedule(s),
                               optimizer)

  return base.Method(name, base.no_prepare, grads, make_tx,
                     schedule="forget_only",
                     schedules=("forget_only", "paired"))


def rl(model, config: RLConfig = RLConfig(),
       optimizer: base.OptimizerConfig = base.OptimizerConfig(),
       name: str = "rl") -> base.Method:
  """Random labels: CE on the relabelled forget batch + CE on the retain batch.

  The gradient is ``forget_weight * grad CE(D_f, y~) + grad CE(D_r, y)``.
  The reference schedule is SalUn's ``unlearn/RL.py``: per epoch one pass
  over D_f (relabelled), then one over D_r (``"sequential"``); a forget
  step then descends the first term only, a retain step the second. The
  paired schedule sums both per step. BatchNorm statistics come from the
  retain pass.

  Args:
    model: the Flax module.
    config: see :class:`RLConfig` (labels drawn once in ``prepare`` by
      default).
    optimizer: the optimizer.
    name: the method's name in results.

  Returns:
    A :class:`~oeu_jax.algorithm.methods.base.Method`.

  References:
    Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020 (as
    cited by SalUn for RL); SalUn ``unlearn/RL.py``.
  """
  objective = base.forget_objective("random", resample=config.resample,
                                    exclude_true=config.exclude_true)
  return base.Method(name, objective.prepare,
                     sum_grads(model, objective, config.forget_weight),
                     base.simple_tx(optimizer), schedule="sequential",
                     schedules=("sequential", "paired"))


def sum_grads(model, objective: base.ForgetObjective, forget_weight: float):
  """``grads`` of ``forget_weight * L_f + L_r`` (RL, SalUn)."""

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del step
    zero = jnp.float32(0.0)
    if rb is None:  # A forget step of the sequential schedule.
      loss_f, g_f = base.forget_grad(model, objective, params, batch_stats,
                                     mstate, fb, rng)
      g = optax.tree.cast_like(
          optax.tree.scale(forget_weight, base.as_f32(g_f)), g_f)
      return base.StepOutput(g, {}, batch_stats, mstate,
                             {"forget_loss": loss_f, "retain_loss": zero})
    (loss_r, new_bs), g_r = base.retain_ce(model, params, batch_stats, rb)
    if fb is None:  # A retain step.
      return base.StepOutput(g_r, {}, new_bs, mstate,
                             {"forget_loss": zero, "retain_loss": loss_r})
    loss_f, g_f = base.forget_grad(model, objective, params, batch_stats,
                                   mstate, fb, rng)
    g = base.weighted_sum(forget_weight, g_f, 1.0, g_r)
    return base.StepOutput(g, {}, new_bs, mstate,
                           {"forget_loss": loss_f, "retain_loss": loss_r})

  return grads


def neggrad_plus(model, config: NegGradPlusConfig = NegGradPlusConfig(),
                 optimizer: base.OptimizerConfig = base.OptimizerConfig(),
                 name: str = "neggrad_plus") -> base.Method:
  """NegGrad+: ``beta * CE(D_r) - (1 - beta) * CE(D_f)``, minimized.

  References:
    Kurmanji et al., Towards Unbounded Machine Unlearning (SCRUB),
    arXiv:2302.09880.
  """
  beta = float(config.beta)
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"beta must be in [0, 1], got {beta}")

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del rng, step

    def loss(p):
      lf, _ = base.forward(model, p, batch_stats, fb.x)
      lr, bs = base.forward(model, p, batch_stats, rb.x)
      ce_f = losses.mean_cross_entropy(lf, fb.y)
      ce_r = losses.mean_cross_entropy(lr, rb.y)
      return beta * ce_r - (1.0 - beta) * ce_f, (ce_f, ce_r, bs)

    (_, (ce_f, ce_r, new_bs)), g = jax.value_and_grad(loss, has_aux=True)(
        params)
    return base.StepOutput(g, {}, new_bs, mstate,
                           {"forget_loss": ce_f, "retain_loss": ce_r})

  return base.Method(name, base.no_prepare, grads, base.simple_tx(optimizer))


def l1_coefficient(step: Array, steps_per_epoch: Array, total_epochs: Array,
                   config: L1SparseConfig) -> Array:
  """The l1 coefficient of unlearning step ``step`` (SalUn's decay)."""
  span = jnp.maximum(total_epochs - config.no_l1_epochs, 1).astype(
      jnp.float32)
  if config.per_step:
    t = step.astype(jnp.float32) / (span * steps_per_epoch.astype(
        jnp.float32))
  else:
    t = (step // steps_per_epoch).astype(jnp.float32) / span
  return jnp.where(t < 1.0, config.alpha * (1.0 - t), 0.0)


def l1_sparse(model, config: L1SparseConfig = L1SparseConfig(),
              optimizer: base.OptimizerConfig = base.OptimizerConfig(),
              name: str = "l1_sparse") -> base.Method:
  """l1-sparse: FT on D_r plus ``a(step) * ||theta||_1`` over all parameters.

  ``a`` decays linearly from ``alpha`` to 0 over the unlearning epochs (see
  :class:`L1SparseConfig`); the gradient of ``|theta|`` is ``sign(theta)``.

  References:
    Jia et al., Model Sparsity Can Simplify Machine Unlearning,
    arXiv:2304.04934; SalUn ``unlearn/FT.py`` (``FT_l1``).
  """

  def prepare(inputs):
    spe = int(inputs.steps_per_epoch)
    if config.epochs is not None:
      epochs = int(config.epochs)
    else:
      epochs = max(1, math.ceil(int(inputs.total_steps) / max(spe, 1)))
    return {"steps_per_epoch": jnp.asarray(max(spe, 1), jnp.int32),
            "epochs": jnp.asarray(epochs, jnp.int32)}

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del fb, rng
    coef = l1_coefficient(step, mstate["steps_per_epoch"], mstate["epochs"],
                          config)

    (ce, new_bs), g_ce = base.retain_ce(model, params, batch_stats, rb)
    # sign(theta) is the subgradient of |theta| that is 0 at 0, as in
    # PyTorch's l1 norm (jax.grad of jnp.abs gives 1 at 0, which would push
    # zero-initialized biases every step).
    sign = jax.tree.map(jnp.sign, base.as_f32(params))
    g = optax.tree.cast_like(
        optax.tree.add_scale(base.as_f32(g_ce), coef, sign), g_ce)
    l1 = optax.tree.norm(base.as_f32(params), ord=1)
    return base.StepOutput(g, {}, new_bs, mstate,
                           {"retain_loss": ce, "l1": l1, "l1_coef": coef})

  return base.Method(name, prepare, grads, base.simple_tx(optimizer),
                     schedule="retain_only",
                     schedules=("retain_only", "paired"))
