"""OEU, Orthogonal Entropy Unlearning, and its projection ablations.

OEU's step, in three parts:

* the forget loss: minus the mean prediction entropy on the forget batch
  (:func:`oeu_jax.algorithm.losses.forget_loss`), so forgotten examples become
  uncertain rather than confidently mislabelled;
* the retain loss: cross-entropy on the retain batch;
* the direction: ``g_f`` projected orthogonal to ``g_r``, plus ``beta g_r``
  (:func:`oeu_jax.algorithm.transforms.oeu_direction`), then the optimizer.

The ablations are OEU with one field of :class:`OEUConfig` pinned (the
registry in :mod:`oeu_jax.algorithm.methods` pins them): ``oeu_no_proj``
(``project=False``), ``rl_proj`` (``forget="random"``) and ``sl_proj``
(``forget="similar"``). The fourth, ``oeu_scalar``, swaps the projection for
Q-MUL's scalar reweighting and is built by
:func:`oeu_jax.algorithm.methods.qmul.qmul`.

The variants are OEU with one more field pinned; each changes one of
OEU's two ideas: what ``g_f`` is projected off (``oeu_ema``:
``reference="ema"``; ``oeu_subspace``: ``reference="subspace"``), where
the projection sits (``oeu_post``: ``project_at="update"``), or the
uncertainty target (``oeu_complement``: ``target="complement"``;
``oeu_renorm``: ``target="renormalized"``, minimizing the soft
cross-entropy to the target). What each changes and why, and the checks of
their options: :mod:`oeu_jax.algorithm.variants`.

References:
  Forget by Uncertainty: Orthogonal Entropy Unlearning for Quantized Neural
  Networks, arXiv:2602.00567 (ICML 2026).
"""

import dataclasses

import optax

from oeu_jax.algorithm import losses
from oeu_jax.algorithm import transforms
from oeu_jax.algorithm import variants
from oeu_jax.algorithm.methods import base

REFERENCES = variants.REFERENCES
PROJECT_AT = variants.PROJECT_AT
TARGETS = variants.TARGETS


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
    reference: what ``g_f`` is projected off: ``"batch"`` (OEU: this
      step's ``g_r``), ``"ema"`` (``oeu_ema``) or ``"subspace"``
      (``oeu_subspace``).
    decay: with ``reference="ema"``, the moving average's weight of the
      past, in ``[0, 1)``.
    k: with ``reference="subspace"``, how many recent retain gradients
      span the subspace (``k=1`` is OEU).
    project_at: ``"gradient"`` (OEU: the optimizer's input is projected) or
      ``"update"`` (``oeu_post``: its output is).
    target: the forget target with ``forget="entropy"``: ``"uniform"``
      (OEU: minus the entropy), ``"complement"`` (``oeu_complement``) or
      ``"renormalized"`` (``oeu_renorm``).
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
  reference: str = "batch"
  decay: float = 0.9
  k: int = 4
  project_at: str = "gradient"
  target: str = "uniform"

  def __post_init__(self):
    variants.check_options(self)


def _target_objective(target: str, normalize: bool) -> base.ForgetObjective:
  """The ``complement`` and ``renormalized`` forget objectives.

  The renormalized target is computed once, in ``prepare``, from the
  Original model's eval-mode logits on D_f (as Q-MUL's similar labels are),
  and indexed by ``Batch.idx``.
  """
  if target == "complement":
    return base.ForgetObjective(
        base.no_prepare,
        lambda logits, fb, ms, rng: losses.target_forget_loss(
            logits, losses.complement_target(fb.y, logits.shape[-1]),
            normalize=normalize))

  def prep(inputs):
    logits = base.eval_logits(inputs.model, inputs.params,
                              inputs.batch_stats, inputs.forget_x)
    return {"target": losses.renormalized_target(logits, inputs.forget_y)}

  return base.ForgetObjective(
      prep, lambda logits, fb, ms, rng: losses.target_forget_loss(
          logits, ms["target"][fb.idx], normalize=normalize))


def _direction(config: OEUConfig) -> optax.GradientTransformationExtraArgs:
  """What goes in front of the optimizer (``project_at="gradient"``)."""
  if config.reference == "batch":
    return transforms.oeu_direction(
        alpha=config.alpha, beta=config.beta, scope=config.scope,
        mode=config.mode, eps=config.eps, project=config.project)
  if config.reference == "ema":
    project = variants.project_ema(decay=config.decay, scope=config.scope,
                                   mode=config.mode, eps=config.eps)
  else:
    project = variants.project_subspace(k=config.k, eps=config.eps)
  scale = [] if config.alpha == 1.0 else [optax.scale(config.alpha)]
  return optax.chain(project, *scale, transforms.add_reference(config.beta))


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
  (``oeu_no_proj``); ``reference``, ``project_at`` and ``target`` give the
  variants of the module docstring.

  Args:
    model: the Flax module.
    config: OEU hyperparameters.
    optimizer: the optimizer behind the projection.
    name: the method's name in results.

  Returns:
    A :class:`~oeu_jax.algorithm.methods.base.Method`.

  References:
    arXiv:2602.00567.
  """
  direction = None if config.project_at == "update" else _direction(config)
  if config.target == "uniform":
    objective = base.forget_objective(
        config.forget, normalize=config.normalize, resample=config.resample)
  else:
    objective = _target_objective(config.target, config.normalize)

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
    opt = base.make_optimizer(schedule, optimizer)
    if config.project_at == "update":
      return optax.chain(variants.project_after(
          opt, alpha=config.alpha, beta=config.beta, eps=config.eps))
    return optax.chain(direction, opt)

  return base.Method(name, objective.prepare, grads, make_tx)
