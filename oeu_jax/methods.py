"""Unlearning methods: each one is a gradient function plus an optax chain.

A :class:`Method` has three parts, all resolved once at the edge (no string
dispatch inside a step):

* ``prepare(inputs) -> method_state``: once-per-run work (relabels, masks, a
  teacher copy); the result is a pytree carried through the loop;
* ``grads(params, batch_stats, method_state, forget, retain, rng, step)``:
  pure, jit-able; returns the gradient handed to the optimizer, the extra
  keyword arguments for ``tx.update`` (OEU passes ``reference=g_r``), new
  batch stats, the new method state and scalar metrics;
* ``make_tx(schedule, method_state)``: the optax chain.

The shared loop in :mod:`oeu_jax.unlearn` does the rest.

References:
  OEU: arXiv:2602.00567. SalUn: arXiv:2310.12508. Q-MUL: ICCV 2025.
"""

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import optax

from oeu_jax import losses, models, transforms

Array = jax.Array


class Batch(NamedTuple):
  """A batch of one set; ``idx`` is each example's position in that set."""
  x: Array
  y: Array
  idx: Array


class PrepareInputs(NamedTuple):
  """What a method may look at once, before unlearning starts."""
  model: Any
  params: Any
  batch_stats: Any
  forget_x: Array
  forget_y: Array
  retain_x: Array
  retain_y: Array
  num_classes: int
  steps_per_epoch: int
  rng: Array


class StepOutput(NamedTuple):
  grads: Any
  extra: dict
  batch_stats: Any
  method_state: Any
  metrics: dict


class Method(NamedTuple):
  name: str
  prepare: Callable[[PrepareInputs], Any]
  grads: Callable[..., StepOutput]
  make_tx: Callable[[optax.Schedule, Any], optax.GradientTransformation]


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimizer behind every method (Q-MUL harness defaults).

  Attributes:
    name: ``"sgd"`` (PyTorch-style: weight decay added before momentum),
      ``"adam"`` or ``"adamw"``.
    momentum: SGD momentum.
    weight_decay: L2 coefficient.
  """
  name: str = "sgd"
  momentum: float = 0.9
  weight_decay: float = 5e-4


OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(schedule: optax.Schedule,
                   config: OptimizerConfig) -> optax.GradientTransformation:
  """The optimizer that follows a method's direction transforms."""
  if config.name == "sgd":
    parts = []
    if config.weight_decay:
      parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optax.sgd(schedule, momentum=config.momentum or None))
    return optax.chain(*parts)
  if config.name == "adam":
    return optax.chain(optax.add_decayed_weights(config.weight_decay),
                       optax.adam(schedule))
  if config.name == "adamw":
    return optax.adamw(schedule, weight_decay=config.weight_decay)
  raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got "
                   f"{config.name!r}")


def _no_prepare(inputs: PrepareInputs):
  del inputs
  return {}


def _forward(model, params, batch_stats, x):
  return models.apply_model(model, params, batch_stats, x, train=True)


# --------------------------------------------------------------------------
# OEU


@dataclasses.dataclass(frozen=True)
class OEUConfig:
  """OEU hyperparameters (METHOD.md §2; open choices marked there).

  Attributes:
    alpha: weight of the projected forget gradient.
    beta: weight of the retain gradient added back.
    scope: ``"global"`` or ``"per_leaf"`` projection.
    mode: ``"always"`` or ``"conflict"``.
    eps: guards a zero retain gradient.
    normalize: divide the entropy by ``log K``.
    project: False gives the ``oeu_no_proj`` ablation.
  """
  alpha: float = 1.0
  beta: float = 1.0
  scope: str = "global"
  mode: str = "always"
  eps: float = 1e-12
  normalize: bool = False
  project: bool = True


def oeu(model, config: OEUConfig = OEUConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(),
        name: str = "oeu") -> Method:
  """Orthogonal Entropy Unlearning.

  One step computes ``g_f = grad L_f`` (minus mean prediction entropy on the
  forget batch) and ``g_r = grad L_r`` (cross-entropy on the retain batch),
  both through the quantized forward pass with ``jax.grad``, and hands them
  to ``chain(project_orthogonal, add_reference(beta), optimizer)``. BatchNorm
  statistics are taken from the retain pass (the forget pass's are dropped).

  Args:
    model: the Flax module.
    config: OEU hyperparameters.
    optimizer: the optimizer behind the projection.
    name: the method's name in results.

  Returns:
    A :class:`Method`.

  References:
    arXiv:2602.00567.
  """
  direction = transforms.oeu_direction(
      alpha=config.alpha, beta=config.beta, scope=config.scope,
      mode=config.mode, eps=config.eps, project=config.project)

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del rng, step

    def lf(p):
      logits, _ = _forward(model, p, batch_stats, fb.x)
      return losses.forget_loss(logits, normalize=config.normalize)

    def lr(p):
      logits, bs = _forward(model, p, batch_stats, rb.x)
      return losses.mean_cross_entropy(logits, rb.y), bs

    loss_f, g_f = jax.value_and_grad(lf)(params)
    (loss_r, new_bs), g_r = jax.value_and_grad(lr, has_aux=True)(params)
    metrics = {"forget_loss": loss_f, "retain_loss": loss_r,
               "cos_fr": transforms.cosine(g_f, g_r)}
    return StepOutput(g_f, {"reference": g_r}, new_bs, mstate, metrics)

  def make_tx(schedule, mstate):
    del mstate
    return optax.chain(direction, make_optimizer(schedule, optimizer))

  return Method(name, _no_prepare, grads, make_tx)


# --------------------------------------------------------------------------
# Simple baselines


def ft(model, optimizer: OptimizerConfig = OptimizerConfig(),
       name: str = "ft") -> Method:
  """Fine-tuning on D_r with cross-entropy (SalUn's FT)."""

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del fb, rng, step

    def lr(p):
      logits, bs = _forward(model, p, batch_stats, rb.x)
      return losses.mean_cross_entropy(logits, rb.y), bs

    (loss_r, new_bs), g = jax.value_and_grad(lr, has_aux=True)(params)
    return StepOutput(g, {}, new_bs, mstate, {"retain_loss": loss_r})

  return Method(name, _no_prepare, grads,
                lambda schedule, _: make_optimizer(schedule, optimizer))


def ga(model, optimizer: OptimizerConfig = OptimizerConfig(),
       name: str = "ga") -> Method:
  """Gradient ascent on the forget-set cross-entropy."""

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del rb, rng, step

    def lf(p):
      logits, bs = _forward(model, p, batch_stats, fb.x)
      return -losses.mean_cross_entropy(logits, fb.y), bs

    (loss, new_bs), g = jax.value_and_grad(lf, has_aux=True)(params)
    return StepOutput(g, {}, new_bs, mstate, {"forget_loss": loss})

  return Method(name, _no_prepare, grads,
                lambda schedule, _: make_optimizer(schedule, optimizer))


# --------------------------------------------------------------------------
# Registry: names resolved once, at the edge.

_FACTORIES = {
    "oeu": lambda model, opt, **kw: oeu(model, OEUConfig(**kw), opt, "oeu"),
    "oeu_no_proj": lambda model, opt, **kw: oeu(
        model, OEUConfig(**{**kw, "project": False}), opt, "oeu_no_proj"),
    "ft": lambda model, opt, **kw: ft(model, opt, **kw),
    "ga": lambda model, opt, **kw: ga(model, opt, **kw),
}

METHODS = tuple(_FACTORIES) + ("retrain",)


def build_method(name: str, model, *,
                 optimizer: OptimizerConfig = OptimizerConfig(),
                 **hparams) -> Method:
  """Builds the method called ``name`` (``retrain`` is run by the trainer).

  Args:
    name: one of :data:`METHODS` except ``"retrain"``.
    model: the Flax module.
    optimizer: the optimizer behind the method's direction.
    **hparams: method-specific hyperparameters (e.g. ``scope="per_leaf"``).

  Returns:
    A :class:`Method`.

  Raises:
    ValueError: unknown name (listing the valid ones) or hyperparameter.
  """
  if name not in _FACTORIES:
    raise ValueError(f"unknown method {name!r}; valid: "
                     f"{', '.join(METHODS)}")
  try:
    return _FACTORIES[name](model, optimizer, **hparams)
  except TypeError as e:
    raise ValueError(f"bad hyperparameters for method {name!r}: {e}") from e
