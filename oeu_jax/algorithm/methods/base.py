"""The Method contract and the pieces every unlearning method shares.

A :class:`Method` has three parts, all resolved once at the edge (no string
dispatch inside a step):

* ``prepare(inputs) -> method_state``: once-per-run work (relabels, masks, a
  teacher copy); the result is a pytree carried through the loop;
* ``grads(params, batch_stats, method_state, forget, retain, rng, step)``:
  pure, jit-able; returns the gradient handed to the optimizer, the extra
  keyword arguments for ``tx.update`` (OEU passes ``reference=g_r``), new
  batch stats, the new method state and scalar metrics;
* ``make_tx(schedule, method_state)``: the optax chain.

The shared loop in :mod:`oeu_jax.engine.unlearn` does the rest. Also here: the
optimizer behind every method, the forward and loss helpers, the relabelling
functions (random wrong labels, Q-MUL's similar labels) and the forget
objectives that OEU, RL and Q-MUL swap between.
"""

import dataclasses
import math
from typing import Any
from typing import Callable
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from oeu_jax import defaults
from oeu_jax.algorithm import losses
from oeu_jax.algorithm import optim
from oeu_jax.algorithm import transforms
from oeu_jax.algorithm.methods import OPTIMIZERS
from oeu_jax.nn import models

Array = jax.Array

# Step kinds: which batches a step sees. The host loop picks a step's kind
# and dispatches that kind's compiled program (:mod:`oeu_jax.engine.unlearn`);
# no kind is chosen inside a compiled conditional, where XLA's CPU backend runs
# convolution gradients tens of times slower than at top level.
PAIRED, FORGET, RETAIN = 0, 1, 2


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
  total_steps: int


class StepOutput(NamedTuple):
  grads: Any
  extra: dict
  batch_stats: Any
  method_state: Any
  metrics: dict


class Method(NamedTuple):
  """An unlearning method, resolved once at the edge.

  Attributes:
    name: the method's name in results.
    prepare: once-per-run work -> the method state.
    grads: ``(params, batch_stats, mstate, forget, retain, rng, step) ->
      StepOutput``; ``forget`` or ``retain`` is ``None`` in a step of a
      schedule that does not visit that set (see :mod:`oeu_jax.engine.unlearn`).
    make_tx: ``(schedule, mstate) -> optax chain``.
    schedule: the reference schedule (``UnlearnConfig.schedule=None``).
    schedules: the schedules ``grads`` supports.
    forget_batch_size: the reference forget batch size (None: the shared
      one).
    forget_epochs: with the sequential schedule, D_f passes only in the
      first this many epochs (SCRUB's ``msteps``); None: every epoch.
    paired_kind: under the paired schedule, ``(step, steps_per_epoch) ->``
      :data:`PAIRED`, :data:`FORGET` or :data:`RETAIN` (host integers): the
      batches step ``step`` hands to ``grads`` (SCRUB alternates max and min
      steps); None: every paired step sees both batches.
  """
  name: str
  prepare: Callable[[PrepareInputs], Any]
  grads: Callable[..., StepOutput]
  make_tx: Callable[[optax.Schedule, Any], optax.GradientTransformation]
  schedule: str = "paired"
  schedules: tuple = ("paired",)
  forget_batch_size: Optional[int] = None
  forget_epochs: Optional[int] = None
  paired_kind: Optional[Callable[[int, int], int]] = None


# --------------------------------------------------------------------------
# The optimizer.


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimizer behind every method (Q-MUL harness defaults).

  Attributes:
    name: ``"sgd"`` (PyTorch-style: weight decay added before momentum),
      ``"adam"`` or ``"adamw"``.
    momentum: SGD momentum.
    weight_decay: L2 coefficient.
  """
  name: str = defaults.OPTIMIZER["name"]
  momentum: float = defaults.OPTIMIZER["momentum"]
  weight_decay: float = defaults.OPTIMIZER["weight_decay"]




def make_optimizer(schedule: optax.Schedule,
                   config: OptimizerConfig) -> optax.GradientTransformation:
  """The optimizer that follows a method's direction transforms."""
  if config.name == "sgd":
    return optim.sgd(schedule, momentum=config.momentum,
                     weight_decay=config.weight_decay)
  if config.name == "adam":
    return optax.chain(optax.add_decayed_weights(config.weight_decay),
                       optax.adam(schedule))
  if config.name == "adamw":
    return optax.adamw(schedule, weight_decay=config.weight_decay)
  raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got "
                   f"{config.name!r}")


def simple_tx(optimizer: OptimizerConfig):
  """``make_tx`` of a method whose direction is its gradient."""
  return lambda schedule, mstate: make_optimizer(schedule, optimizer)


# --------------------------------------------------------------------------
# Forward passes, losses and pytree arithmetic.


def no_prepare(inputs: PrepareInputs):
  del inputs
  return {}


check_choice = transforms.check_choice


def check_positive(value, name):
  """Raises a one-line ValueError unless ``value`` is a finite number > 0."""
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  if not (ok and math.isfinite(value) and value > 0):
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def forward(model, params, batch_stats, x):
  return models.apply_model(model, params, batch_stats, x, train=True)


def retain_ce(model, params, batch_stats, rb):
  """``(L_r, new_batch_stats), g_r``: CE on the retain batch."""

  def lr(p):
    logits, bs = forward(model, p, batch_stats, rb.x)
    return losses.mean_cross_entropy(logits, rb.y), bs

  return jax.value_and_grad(lr, has_aux=True)(params)


def as_f32(tree):
  return optax.tree.cast(tree, jnp.float32)


def weighted_sum(a: float | Array, ga, b: float | Array, gb):
  """``a * ga + b * gb`` leafwise, in float32, cast back to ``ga``'s dtypes."""
  return optax.tree.cast_like(
      optax.tree.add_scale(optax.tree.scale(a, as_f32(ga)), b, as_f32(gb)),
      ga)


def eval_logits(model, params, batch_stats, x, batch_size=512):
  """Eval-mode logits of ``x`` (outside jit: used once, in ``prepare``).

  Not :func:`oeu_jax.nn.inference.predict`: that one zero-pads the last batch to
  full size, and with per-tensor dynamic activation quantization the padded
  rows enter the activation scale, so quantized logits can differ (they do
  for inputs without zero pixels and a bias-dominated first layer). Here
  every batch is the real examples only.
  """
  fn = jax.jit(lambda p, s, xb: models.apply_model(model, p, s, xb,
                                                   train=False)[0])
  outs = [fn(params, batch_stats, x[i:i + batch_size])
          for i in range(0, x.shape[0], batch_size)]
  return jnp.concatenate(outs, axis=0)


# --------------------------------------------------------------------------
# Relabelling.


def random_wrong_labels(key: Array, labels: Array, num_classes: int, *,
                        exclude_true: bool = True) -> Array:
  """Uniformly random labels, different from ``labels`` by default.

  ``(y + U{1, ..., K-1}) mod K`` is uniform over the K-1 wrong classes.

  Args:
    key: a ``jax.random`` key.
    labels: ``(N,)`` true labels.
    num_classes: K.
    exclude_true: False: uniform over all K classes (the SalUn code).

  Returns:
    ``(N,)`` int32 labels.

  Examples:
    >>> y = jnp.zeros((1000,), jnp.int32)
    >>> z = random_wrong_labels(jax.random.PRNGKey(0), y, 4)
    >>> bool(jnp.all(z != y)), sorted(set(z.tolist()))
    (True, [1, 2, 3])
  """
  labels = jnp.asarray(labels, jnp.int32)
  if not exclude_true:
    return jax.random.randint(key, labels.shape, 0, num_classes, jnp.int32)
  shift = jax.random.randint(key, labels.shape, 1, num_classes, jnp.int32)
  return (labels + shift) % num_classes


def similar_labels(logits: Array, labels: Array) -> Array:
  """Q-MUL's similar label: the most probable *wrong* class.

  ``argmax_{k != y} p_k``, computed on logits (softmax is monotone, so the
  argmax over logits equals the argmax over probabilities) with the true
  class masked to ``-inf``.

  Note: the public Q-MUL PyTorch code compares logits with a probability
  and mis-indexes when picking this class; this is the definition of the
  paper, computed correctly.

  Args:
    logits: ``(N, K)`` logits of the original model.
    labels: ``(N,)`` true labels.

  Returns:
    ``(N,)`` int32 labels, never equal to ``labels``.

  Examples:
    >>> logits = jnp.array([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0]])
    >>> similar_labels(logits, jnp.array([0, 0])).tolist()
    [1, 1]
  """
  k = logits.shape[-1]
  true = jax.nn.one_hot(labels, k, dtype=bool)
  masked = jnp.where(true, -jnp.inf, logits.astype(jnp.float32))
  return jnp.argmax(masked, axis=-1).astype(jnp.int32)


# --------------------------------------------------------------------------
# Forget objectives.

FORGET_OBJECTIVES = ("entropy", "random", "similar")


class ForgetObjective(NamedTuple):
  """A forget objective: what ``prepare`` stores and the loss on logits."""
  prepare: Callable[[PrepareInputs], dict]
  loss: Callable[[Array, Batch, Any, Array], Array]


def forget_objective(kind: str, *, normalize: bool = False,
                     resample: bool = False,
                     exclude_true: bool = True) -> ForgetObjective:
  """The forget loss of OEU (``entropy``), RL (``random``), Q-MUL
  (``similar``); relabels live in ``method_state["labels"]``, indexed by
  ``Batch.idx``."""
  check_choice(kind, FORGET_OBJECTIVES, "forget")
  if kind == "entropy":
    return ForgetObjective(
        no_prepare,
        lambda logits, fb, ms, rng: losses.forget_loss(logits,
                                                       normalize=normalize))
  if kind == "random":
    def prep_random(inputs):
      if resample:
        return {}
      return {"labels": random_wrong_labels(
          inputs.rng, inputs.forget_y, inputs.num_classes,
          exclude_true=exclude_true)}

    def loss_random(logits, fb, ms, rng):
      if resample:
        y = random_wrong_labels(rng, fb.y, logits.shape[-1],
                                exclude_true=exclude_true)
      else:
        y = ms["labels"][fb.idx]
      return losses.mean_cross_entropy(logits, y)

    return ForgetObjective(prep_random, loss_random)

  def prep_similar(inputs):
    logits = eval_logits(inputs.model, inputs.params, inputs.batch_stats,
                         inputs.forget_x)
    return {"labels": similar_labels(logits, inputs.forget_y)}

  return ForgetObjective(prep_similar,
                         lambda logits, fb, ms, rng: losses.mean_cross_entropy(
                             logits, ms["labels"][fb.idx]))


def forget_grad(model, objective: ForgetObjective, params, batch_stats,
                mstate, fb, rng):
  """``L_f, g_f`` (the forget pass's batch stats are dropped)."""

  def lf(p):
    logits, _ = forward(model, p, batch_stats, fb.x)
    return objective.loss(logits, fb, mstate, rng)

  return jax.value_and_grad(lf)(params)
