"""SalUn: random labels on the most salient weights only.

References:
  Fan et al., SalUn: Empowering Machine Unlearning via Gradient-based Weight
  Saliency in Both Image Classification and Generation, arXiv:2310.12508
  (code: OPTML-Group/Unlearn-Saliency).
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from oeu_jax.algorithm import losses
from oeu_jax.algorithm.methods import base
from oeu_jax.algorithm.methods import baselines
from oeu_jax.nn import models


@dataclasses.dataclass(frozen=True)
class SalUnConfig:
  """SalUn: RL restricted to a saliency mask.

  Attributes:
    sparsity: fraction of weights updated: those with the largest
      ``|grad CE(D_f)|`` at the original weights, ranked globally over all
      parameters (SalUn's ``with_0.5.pt``; grid {0.1, ..., 0.9}).
    resample: see :class:`~oeu_jax.algorithm.methods.baselines.RLConfig`.
    exclude_true: see :class:`~oeu_jax.algorithm.methods.baselines.RLConfig`.
    forget_weight: see :class:`~oeu_jax.algorithm.methods.baselines.RLConfig`.
    batch_size: examples per forward pass when computing the saliency.
  """
  sparsity: float = 0.5
  resample: bool = False
  exclude_true: bool = True
  forget_weight: float = 1.0
  batch_size: int = 256


def saliency_mask(grads: Any, sparsity: float) -> Any:
  """Boolean pytree: True on the ``sparsity`` fraction of largest ``|g|``.

  The threshold is global over all leaves (SalUn). Ties at the threshold are
  broken by position so exactly ``round(sparsity * n)`` entries are True.

  Args:
    grads: a pytree of gradients.
    sparsity: fraction in ``[0, 1]`` of entries to keep trainable.

  Returns:
    A pytree of bool arrays like ``grads``.
  """
  if not 0.0 <= sparsity <= 1.0:
    raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
  return _saliency_mask(grads, float(sparsity))


@functools.partial(jax.jit, static_argnums=1)
def _saliency_mask(grads: Any, sparsity: float) -> Any:
  leaves, treedef = jax.tree.flatten(grads)
  flat = jnp.concatenate([jnp.abs(x.astype(jnp.float32)).ravel()
                          for x in leaves])
  n = flat.shape[0]
  k = int(round(sparsity * n))
  # Stable descending order: rank 0 is the largest magnitude.
  order = jnp.argsort(-flat, stable=True)
  keep = jnp.zeros((n,), bool).at[order[:k]].set(True)
  out, start = [], 0
  for x in leaves:
    out.append(keep[start:start + x.size].reshape(x.shape))
    start += x.size
  return jax.tree.unflatten(treedef, out)


def forget_gradient(model, params, batch_stats, x, y, *,
                    batch_size: int = 256) -> Any:
  """``grad_theta mean_{D_f} CE`` at fixed ``params`` (eval-mode forward).

  Accumulated over batches of ``batch_size`` (sum of per-example losses,
  divided by ``|D_f|`` at the end), all at the same weights.
  """
  n = int(x.shape[0])

  @jax.jit
  def batch_grad(p, xb, yb):
    def loss(q):
      logits, _ = models.apply_model(model, q, batch_stats, xb, train=False)
      return jnp.sum(losses.cross_entropy(logits, yb))
    return jax.grad(loss)(p)

  total = optax.tree.zeros_like(params, dtype=jnp.float32)
  for i in range(0, n, batch_size):
    g = batch_grad(params, x[i:i + batch_size], y[i:i + batch_size])
    total = optax.tree.add(total, base.as_f32(g))
  # A true division: optax.tree.scale(1 / n, .) would round differently.
  return jax.tree.map(lambda a: a / max(n, 1), total)


def mask_updates() -> optax.GradientTransformationExtraArgs:
  """Multiplies updates by the keyword argument ``mask`` (a bool pytree).

  Placed last in a chain, it zeroes the applied update of masked weights
  whatever came before (momentum, weight decay, Adam), so those weights
  stay bit-identical.
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, mask=None, **extra):
    del params, extra
    if mask is None:
      raise ValueError("mask_updates needs update(..., mask=bool_pytree)")
    return _masked(updates, mask), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _masked(tree, mask):
  # optax.tree.where takes one condition for the whole tree, not a pytree.
  return jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros_like(u)),
                      tree, mask)


def salun(model, config: SalUnConfig = SalUnConfig(),
          optimizer: base.OptimizerConfig = base.OptimizerConfig(),
          name: str = "salun") -> base.Method:
  """SalUn: random labels, updating only the most salient weights.

  ``prepare`` computes ``g = grad CE(D_f)`` at the original weights (eval
  mode, whole D_f, fixed weights) and keeps the ``sparsity`` fraction of
  weights with the largest ``|g|``, ranked globally over all parameters.
  The step is RL's (:func:`~oeu_jax.algorithm.methods.baselines.rl`), with RL's
  reference schedule (one pass over D_f, then one over D_r, per epoch:
  SalUn ``unlearn/RL.py``). The mask is
  applied to the gradient and, again, to the final update at the end of the
  optax chain, so masked weights are truly frozen: momentum and weight decay
  cannot move them.

  Older revisions of the public SalUn code (``unlearn/RL.py``) multiplied
  ``param.grad`` by the mask and then called PyTorch SGD, which adds
  ``weight_decay * theta`` and the momentum buffer to *every* weight; since
  2026-02-28 it restores masked weights and zeroes their momentum after each
  step, which is what freezing them here does. At HEAD its
  ``generate_mask.py`` computes the saliency gradient at the original
  weights in eval mode without optimizer steps (earlier revisions stepped),
  as here (citations: ``experiments/REFERENCES.md``).

  Args:
    model: the Flax module.
    config: see :class:`SalUnConfig`.
    optimizer: the optimizer.
    name: the method's name in results.

  Returns:
    A :class:`~oeu_jax.algorithm.methods.base.Method`; ``method_state["mask"]``
    holds the bool mask.

  References:
    Fan et al., SalUn, arXiv:2310.12508.
  """
  objective = base.forget_objective("random", resample=config.resample,
                                    exclude_true=config.exclude_true)
  rl_grads = baselines.sum_grads(model, objective, config.forget_weight)

  def prepare(inputs):
    state = dict(objective.prepare(inputs))
    g = forget_gradient(inputs.model, inputs.params, inputs.batch_stats,
                        inputs.forget_x, inputs.forget_y,
                        batch_size=config.batch_size)
    state["mask"] = saliency_mask(g, config.sparsity)
    return state

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    out = rl_grads(params, batch_stats, mstate, fb, rb, rng, step)
    g = _masked(out.grads, mstate["mask"])
    return out._replace(grads=g, extra={"mask": mstate["mask"]})

  def make_tx(schedule, mstate):
    del mstate
    return optax.chain(base.make_optimizer(schedule, optimizer),
                       mask_updates())

  return base.Method(name, prepare, grads, make_tx, schedule="sequential",
                     schedules=("sequential", "paired"))
