"""OEU, Orthogonal Entropy Unlearning, and its projection ablations.

OEU's step, in three parts:

* the forget loss: minus the mean prediction entropy on the forget batch
  (:func:`oeu_jax.losses.forget_loss`), so forgotten examples become
  uncertain rather than confidently mislabelled;
* the retain loss: cross-entropy on the retain batch;
* the direction: ``g_f`` projected orthogonal to ``g_r``, plus ``beta g_r``
  (:func:`oeu_jax.transforms.oeu_direction`), then the optimizer.

The ablations are OEU with one field of :class:`OEUConfig` pinned (the
registry in :mod:`oeu_jax.methods` pins them): ``oeu_no_proj``
(``project=False``), ``rl_proj`` (``forget="random"``) and ``sl_proj``
(``forget="similar"``). The fourth, ``oeu_scalar``, swaps the projection for
Q-MUL's scalar reweighting and is built by :func:`oeu_jax.methods.qmul.qmul`.

References:
  Forget by Uncertainty: Orthogonal Entropy Unlearning for Quantized Neural
  Networks, arXiv:2602.00567 (ICML 2026).
"""

import dataclasses

import optax

from oeu_jax import transforms
from oeu_jax.methods import base


@dataclasses.dataclass(frozen=True)
class OEUConfig:
  """OEU hyperparameters.

  Defaults: the projected forget gradient and the retain gradient at equal
  weight, one global projection at every step, the entropy in nats.

  Attributes:
    alpha: weight of the projected forget gradient.
    beta: weight of the retain gradient added back.
    scope: ``"global"`` or ``"per_leaf"`` projection.
    mode: ``"always"`` or ``"conflict"``.
    eps: guards a zero retain gradient.
    normalize: divide the entropy by ``log K``.
    project: False gives the ``oeu_no_proj`` ablation.
    forget: the forget objective: ``"entropy"`` (OEU), ``"random"``
      (``rl_proj``: CE to random wrong labels) or ``"similar"``
      (``sl_proj``: CE to Q-MUL's similar labels).
    resample: with ``forget="random"``, draw new random labels every step
      instead of once in ``prepare``.
  """
  alpha: float = 1.0
  beta: float = 1.0
  scope: str = "global"
  mode: str = "always"
  eps: float = 1e-12
  normalize: bool = False
  project: bool = True
  forget: str = "entropy"
  resample: bool = False


def oeu(model, config: OEUConfig = OEUConfig(),
        optimizer: base.OptimizerConfig = base.OptimizerConfig(),
        name: str = "oeu") -> base.Method:
  """Orthogonal Entropy Unlearning.

  One step computes ``g_f = grad L_f`` (minus mean prediction entropy on the
  forget batch) and ``g_r = grad L_r`` (cross-entropy on the retain batch),
  both through the quantized forward pass with ``jax.grad``, and hands them
  to ``chain(project_orthogonal, add_reference(beta), optimizer)``. BatchNorm
  statistics are taken from the retain pass (the forget pass's are dropped).

  ``config.forget`` swaps the forget objective for the ablations: random
  wrong labels (``rl_proj``: RL *minimizes* CE to the random labels; its
  gradient is projected, then ``g_r`` added) or similar labels
  (``sl_proj``); ``config.project=False`` drops the projection
  (``oeu_no_proj``).

  Args:
    model: the Flax module.
    config: OEU hyperparameters.
    optimizer: the optimizer behind the projection.
    name: the method's name in results.

  Returns:
    A :class:`~oeu_jax.methods.base.Method`.

  References:
    arXiv:2602.00567.
  """
  direction = transforms.oeu_direction(
      alpha=config.alpha, beta=config.beta, scope=config.scope,
      mode=config.mode, eps=config.eps, project=config.project)
  objective = base.forget_objective(config.forget, normalize=config.normalize,
                                    resample=config.resample)

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del step
    loss_f, g_f = base.forget_grad(model, objective, params, batch_stats,
                                   mstate, fb, rng)
    (loss_r, new_bs), g_r = base.retain_ce(model, params, batch_stats, rb)
    metrics = {"forget_loss": loss_f, "retain_loss": loss_r,
               "cos_fr": transforms.cosine(g_f, g_r)}
    return base.StepOutput(g_f, {"reference": g_r}, new_bs, mstate, metrics)

  def make_tx(schedule, mstate):
    del mstate
    return optax.chain(direction, base.make_optimizer(schedule, optimizer))

  return base.Method(name, objective.prepare, grads, make_tx)
