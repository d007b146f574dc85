"""SSD, Selective Synaptic Dampening: training-free, one multiplicative step.

SSD measures how important each parameter is to the forget set D_f and to
the whole training set D = D_r ∪ D_f, as the diagonal of the empirical
Fisher information (squared gradients of the cross-entropy), and shrinks the
parameters that matter far more to D_f than to D:

* ``I_S = (1 / n_b) sum_b (grad mean_{x in b} CE(x))**2`` over the ``n_b``
  consecutive batches ``b`` of a set S (the last one may be partial), at the
  Original weights, eval mode (BatchNorm on its running statistics);
* where ``I_Df > alpha * I_D``, ``theta <- theta * min(lam * I_D / I_Df,
  1)``; every other parameter is left as it is.

References:
  Foster, Schoepf and Brintrup, Fast Machine Unlearning Without Retraining
  Through Selective Synaptic Dampening, AAAI 2024, arXiv:2308.07707. Code:
  ``if-loops/selective-synaptic-dampening`` at
  ``cdfdc0e35c1908e032a6e150d882b0fa17833f85``, ``src/ssd.py#L151-L217``
  (``calc_importance``, ``modify_weight``) and
  ``src/forget_full_class_strategies.py#L646-L685`` (``ssd_tuning``).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from oeu_jax.algorithm import losses
from oeu_jax.algorithm.methods import base
from oeu_jax.nn import models

# A forget batch that holds all of D_f (the loop caps a batch at the set's
# size): SSD's forget-only schedule is then one step per epoch.
WHOLE_SET = 2 ** 31 - 1


@dataclasses.dataclass(frozen=True)
class SSDConfig:
  """SSD's hyperparameters, defaults from its public code (paths in
  ``if-loops/selective-synaptic-dampening`` at ``cdfdc0e35c19``).

  Attributes:
    alpha: selection weighting: dampen where ``I_Df > alpha * I_D``. 10 for
      every CNN (``selection_weighting = 10 * model_size_scaler``,
      ``src/forget_full_class_main.py#L159-L177``,
      ``src/forget_random_main.py#L125-L148``); 5 for ViT class-wise, 50
      for PinsFaceRecognition (the comment at ``#L160``).
    lam: dampening constant: the multiplier is ``min(lam * I_D / I_Df,
      1)``. 1 in the same scripts; 0.1 for PinsFaceRecognition (``#L160``).
    batch_size: examples per batch of the importance passes (importances
      are means of squared *batch-mean* gradients, so they depend on it).
      64: the class-wise scripts' ``-b`` default
      (``src/forget_full_class_main.py#L58,L152-L157``); the random
      scripts use 128 (``src/forget_random_main.py#L57,L120,L133-L136``).
  """
  alpha: float = 10.0
  lam: float = 1.0
  batch_size: int = 64

  def __post_init__(self):
    for name in ("alpha", "lam"):
      base.check_positive(getattr(self, name), name)
    b = self.batch_size
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
      raise ValueError(f"batch_size must be an integer >= 1, got {b!r}")


def consecutive_batches(parts, batch_size: int):
  """``(x, y)`` batches of the concatenation of ``parts`` (``(x, y)``
  pairs), in order: consecutive slices, the last one partial, as a PyTorch
  ``DataLoader(ConcatDataset(parts), batch_size)`` without shuffling. Only
  a batch that straddles two parts is copied."""
  ends = np.cumsum([0] + [int(x.shape[0]) for x, _ in parts])
  for start in range(0, int(ends[-1]), batch_size):
    stop = min(start + batch_size, int(ends[-1]))
    xs, ys = [], []
    for (x, y), lo, hi in zip(parts, ends[:-1], ends[1:]):
      a, b = max(start, lo), min(stop, hi)
      if a < b:
        xs.append(x[a - lo:b - lo])
        ys.append(y[a - lo:b - lo])
    yield ((xs[0], ys[0]) if len(xs) == 1
           else (jnp.concatenate(xs), jnp.concatenate(ys)))


def importance_fn(model):
  """``importance(params, batch_stats, parts, batch_size) -> pytree``: SSD's
  importance of each parameter on the concatenation of ``parts`` (module
  docstring), in float32; one jitted accumulation per batch shape."""

  @jax.jit
  def add(total, params, batch_stats, x, y):
    def loss(p):
      logits, _ = models.apply_model(model, p, batch_stats, x, train=False)
      return losses.mean_cross_entropy(logits, y)

    g = base.as_f32(jax.grad(loss)(params))
    return jax.tree.map(lambda t, gi: t + gi * gi, total, g)

  def importance(params, batch_stats, parts, batch_size):
    total = optax.tree.zeros_like(params, dtype=jnp.float32)
    count = 0
    for x, y in consecutive_batches(parts, batch_size):
      total = add(total, params, batch_stats, x, y)
      count += 1
    # The reference divides by len(dataloader), a true division.
    return jax.tree.map(lambda t: t / float(max(count, 1)), total)

  return importance


def dampening_factor(forget_importance, full_importance, *, alpha: float,
                     lam: float):
  """SSD's multiplier per parameter: ``min(lam * I_D / I_Df, 1)`` where
  ``I_Df > alpha * I_D``, else 1.

  The operations are the reference's, in its order
  (``oimp.mul(lam).div(fimp)``); a selected entry has ``I_Df > 0``, so the
  division is guarded only for the entries that are not selected.

  Examples:
    >>> f = dampening_factor(jnp.array([4.0, 1.0, 0.0]),
    ...                      jnp.array([1.0, 1.0, 0.0]), alpha=2.0, lam=1.0)
    >>> f.tolist()
    [0.25, 1.0, 1.0]
  """

  def one(fimp, oimp):
    selected = fimp > oimp * alpha
    weight = (oimp * lam) / jnp.where(selected, fimp, 1.0)
    return jnp.where(selected, jnp.minimum(weight, 1.0), 1.0)

  return jax.tree.map(one, forget_importance, full_importance)


def dampen() -> optax.GradientTransformationExtraArgs:
  """``update(updates, state, params, factor=pytree)`` ignores ``updates``
  and returns ``params * factor - params`` (exactly 0 where ``factor`` is
  1): applied, the parameters become ``params * factor``."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, factor=None, **extra):
    del updates, extra
    if params is None or factor is None:
      raise ValueError("dampen needs update(..., params, factor=pytree)")
    return jax.tree.map(lambda p, f: p * f.astype(p.dtype) - p, params,
                        factor), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def ssd(model, config: SSDConfig = SSDConfig(),
        optimizer: base.OptimizerConfig = base.OptimizerConfig(),
        name: str = "ssd") -> base.Method:
  """Selective Synaptic Dampening as a one-step method.

  ``prepare`` computes ``I_Df`` over D_f and ``I_D`` over D_r followed by
  D_f (the reference's unshuffled ``ConcatDataset((retain, forget))``), in
  eval mode, and :func:`dampening_factor`. The run's first step multiplies
  the parameters by it (:func:`dampen`), later steps are the identity. A
  forget batch of all of D_f (``forget_only``, one step per epoch) makes
  ``UnlearnConfig(epochs=1)`` exactly one step. The learning rate and
  ``optimizer`` are not read; BatchNorm statistics are kept; a QAT model's
  float latent weights are dampened. The importance passes run in
  ``prepare``, so the loop's ``seconds`` (RTE) do not include them.

  Args:
    model: the Flax module.
    config: see :class:`SSDConfig`.
    optimizer: unused (SSD takes no optimizer step).
    name: the method's name in results.

  Returns:
    A :class:`~oeu_jax.algorithm.methods.base.Method`;
    ``method_state["factor"]`` holds the multiplier.

  References:
    Foster et al., arXiv:2308.07707; ``if-loops/selective-synaptic-
    dampening@cdfdc0e35c19:src/ssd.py#L151-L217``.
  """
  del optimizer
  importance = importance_fn(model)

  def prepare(inputs):
    forget = [(inputs.forget_x, inputs.forget_y)]
    full = [(inputs.retain_x, inputs.retain_y)] + forget
    i_f = importance(inputs.params, inputs.batch_stats, forget,
                     config.batch_size)
    i_d = importance(inputs.params, inputs.batch_stats, full,
                     config.batch_size)
    factor = dampening_factor(i_f, i_d, alpha=config.alpha, lam=config.lam)
    leaves = jax.tree.leaves(factor)
    changed = sum(jnp.sum(f < 1.0) for f in leaves)
    return {"factor": factor,
            "dampened": (changed / sum(f.size for f in leaves)).astype(
                jnp.float32)}

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del fb, rb, rng
    factor = jax.tree.map(lambda f: jnp.where(step == 0, f, 1.0),
                          mstate["factor"])
    return base.StepOutput(optax.tree.zeros_like(params), {"factor": factor},
                           batch_stats, mstate,
                           {"dampened": mstate["dampened"]})

  return base.Method(name, prepare, grads, lambda schedule, mstate: dampen(),
                     schedule="forget_only", schedules=("forget_only",),
                     forget_batch_size=WHOLE_SET)
