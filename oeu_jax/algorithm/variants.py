"""OEU's projection variants as optax transforms.

Each one changes *what* the forget gradient is made orthogonal to, or
*where* in the optimizer chain the projection happens; all take the forget
gradient as ``updates`` and the retain gradient as the keyword-only extra
argument ``reference``, like
:func:`oeu_jax.algorithm.transforms.project_orthogonal`:

* :func:`project_ema` (``oeu_ema``): the reference is an exponential moving
  average of retain gradients, a less noisy retain direction than one
  minibatch's;
* :func:`project_subspace` (``oeu_subspace``): ``g_f`` is projected off the
  span of the last ``k`` retain gradients (Gram-Schmidt in float32), so the
  step is first-order neutral for every one of those retain batches; ``k=1``
  is OEU;
* :func:`project_after` (``oeu_post``): the optimizer runs first and the
  projection is applied to its output, so the step actually applied (after
  momentum and Adam's preconditioning) is the one that is orthogonal.

Two more variants change OEU's uncertainty target, not the projection
(:func:`oeu_jax.algorithm.losses.target_forget_loss`):
``oeu_complement`` (``target="complement"``), the uniform distribution over
the classes other than the example's label, maximum uncertainty that never
predicts the forgotten label (an entropy maximizer still puts the argmax on
it by a hair about 1/K of the time); ``oeu_renorm``
(``target="renormalized"``), the Original's own softmax with the label's
mass removed and renormalized, its best guess of what a model that never
saw the label would say (Retrain is not uniform on a forgotten class).
:func:`check_options` checks how the options of
:class:`oeu_jax.algorithm.methods.OEUConfig` combine.

References:
  Forget by Uncertainty: Orthogonal Entropy Unlearning for Quantized Neural
  Networks, arXiv:2602.00567 (ICML 2026).
"""

from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from oeu_jax.algorithm import transforms

REFERENCES = ("batch", "ema", "subspace")
PROJECT_AT = ("gradient", "update")
TARGETS = ("uniform", "complement", "renormalized")


def check_options(c) -> None:
  """Raises ValueError naming the first option of an OEU config ``c``
  (``reference``, ``project_at``, ``target``, ``decay``, ``k``) that is
  bad or does not combine with the others."""
  transforms.check_choice(c.reference, REFERENCES, "reference")
  transforms.check_choice(c.project_at, PROJECT_AT, "project_at")
  transforms.check_choice(c.target, TARGETS, "target")
  if not 0.0 <= c.decay < 1.0:
    raise ValueError(f"decay must be in [0, 1), got {c.decay!r}")
  if isinstance(c.k, bool) or not isinstance(c.k, int) or c.k < 1:
    raise ValueError(f"k must be an integer >= 1, got {c.k!r}")
  if not c.project and (c.reference != "batch"
                        or c.project_at != "gradient"):
    raise ValueError("reference and project_at choose a projection; "
                     "project=False has none")
  if c.project_at == "update" and (
      c.reference != "batch" or c.scope != "global" or c.mode != "always"):
    raise ValueError("project_at='update' takes reference='batch', "
                     "scope='global' and mode='always'")
  if c.reference == "subspace" and (c.scope != "global"
                                    or c.mode != "always"):
    raise ValueError("reference='subspace' takes scope='global' and "
                     "mode='always'")
  if c.target != "uniform" and c.forget != "entropy":
    raise ValueError(f"target={c.target!r} needs forget='entropy', "
                     f"got forget={c.forget!r}")


def _f32(tree: Any) -> Any:
  return optax.tree.cast(tree, jnp.float32)


def _checked_reference(updates: Any, reference: Any, name: str) -> tuple:
  """``(reference in float32, whether it is all finite)``, checked."""
  transforms._check_reference(updates, reference, name)  # pylint: disable=protected-access
  r = _f32(reference)
  return r, transforms.tree_is_finite(r)


def _zeros(params: Any, lead: tuple = ()) -> Any:
  return jax.tree.map(lambda p: jnp.zeros(lead + p.shape, jnp.float32),
                      params)


# --------------------------------------------------------------------------
# oeu_ema: an averaged reference.


class EmaState(NamedTuple):
  """State of :func:`project_ema`.

  Attributes:
    count: retain gradients averaged so far (int32).
    ema: ``m_t = decay * m_{t-1} + (1 - decay) * g_r`` in float32, ``m_0 =
      0``, one leaf per parameter.
  """
  count: jax.Array
  ema: Any


def project_ema(*, decay: float = 0.9, scope: str = "global",
                mode: str = "always", eps: float = 1e-12
                ) -> optax.GradientTransformationExtraArgs:
  """Projects updates off an exponential moving average of ``reference``.

  Each update first folds the retain gradient into the average,
  ``m_t = decay * m_{t-1} + (1 - decay) * g_r`` (``m_0 = 0``), then returns
  ``g_f - (<g_f, m_t> / (||m_t||^2 + eps)) m_t``. No bias correction is
  needed: the projection depends on ``m_t``'s direction only, so the first
  step (``m_1 = (1 - decay) g_r``) is exactly OEU's.

  Why: one minibatch's ``g_r`` is a noisy estimate of the gradient of the
  whole retain loss; an average over recent batches is a steadier retain
  direction (at the price of mixing gradients taken at earlier parameters).
  Put :func:`oeu_jax.algorithm.transforms.add_reference` after it to add the
  *current* ``beta * g_r``.

  Args:
    decay: weight of the past, in ``[0, 1)``; 0 is OEU.
    scope: as in :func:`oeu_jax.algorithm.transforms.project_orthogonal`.
    mode: as in :func:`oeu_jax.algorithm.transforms.project_orthogonal`.
    eps: as in :func:`oeu_jax.algorithm.transforms.project_orthogonal`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with :class:`EmaState`.

  Raises:
    ValueError: ``decay`` outside ``[0, 1)``, a bad scope/mode/eps, or a
      missing or mismatched ``reference``.
  """
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"decay must be in [0, 1), got {decay}")
  transforms._validate(scope, mode, eps)  # pylint: disable=protected-access

  def init_fn(params):
    return EmaState(jnp.zeros((), jnp.int32), _zeros(params))

  def update_fn(updates, state, params=None, *, reference=None, **extra):
    del params, extra
    # A non-finite retain gradient is not folded in (it would poison the
    # average for good); the loop's finiteness check reports it.
    r, ok = _checked_reference(updates, reference, "project_ema")
    ema = jax.tree.map(
        lambda m, g: jnp.where(ok, decay * m + (1.0 - decay) * g, m),
        state.ema, r)
    out = transforms.project_pytree(updates, ema, scope=scope, mode=mode,
                                    eps=eps)
    return out, EmaState(state.count + 1, ema)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------
# oeu_subspace: several retain directions.


class SubspaceState(NamedTuple):
  """State of :func:`project_subspace`.

  Attributes:
    count: retain gradients seen so far (int32).
    directions: the last ``k`` retain gradients, each divided by its
      max-abs entry (only directions matter), in float32, each leaf with a
      leading axis of size ``k``; slot ``count % k`` is written next.
  """
  count: jax.Array
  directions: Any


def project_subspace(*, k: int = 4, eps: float = 1e-12
                     ) -> optax.GradientTransformationExtraArgs:
  """Projects updates off the span of the last ``k`` retain gradients.

  The retain gradient of this step is stored (replacing the oldest of the
  ``k``), the stored directions ``r_1..r_k`` are orthonormalized by modified
  Gram-Schmidt in float32 over the whole pytree (a direction whose residual
  is below ``1e-6`` of its norm, i.e. already in the span of the others, or
  not finite, is dropped), and

      g_f_perp = g_f - sum_i <g_f, q_i> q_i,

  so ``<g_f_perp, r_j> = 0`` for every stored ``r_j``: the step is
  first-order neutral for the retain loss of each of the last ``k`` retain
  batches, not only the current one. With ``k=1`` the span is the current
  ``g_r`` and this is OEU's projection. Before ``k`` steps have passed only
  the directions seen so far are used.

  Args:
    k: how many retain gradients span the subspace (``>= 1``); the state
      holds ``k`` float32 copies of the parameters.
    eps: directions with squared norm at most ``eps`` (after rescaling to
      max-abs 1) are treated as zero.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with :class:`SubspaceState`.

  Raises:
    ValueError: ``k < 1``, ``eps < 0``, or a missing or mismatched
      ``reference``.
  """
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"k must be an integer >= 1, got {k!r}")
  if not eps >= 0:
    raise ValueError(f"eps must be >= 0, got {eps}")

  def init_fn(params):
    return SubspaceState(jnp.zeros((), jnp.int32), _zeros(params, (k,)))

  def update_fn(updates, state, params=None, *, reference=None, **extra):
    del params, extra
    r, ok = _checked_reference(updates, reference, "project_subspace")
    s_r = transforms.max_abs(r)
    r = jax.tree.map(lambda x: jnp.where(ok, x / s_r, 0.0), r)
    slot = state.count % k
    directions = jax.tree.map(lambda d, x: d.at[slot].set(x),
                              state.directions, r)
    filled = jnp.minimum(state.count + 1, k)
    basis = []
    for i in range(k):
      v = jax.tree.map(lambda d, i=i: d[i], directions)
      norm0 = transforms.tree_vdot(v, v)
      for q in basis:
        v = optax.tree.add_scale(v, -transforms.tree_vdot(v, q), q)
      norm = transforms.tree_vdot(v, v)
      keep = ((i < filled) & (norm > eps) & (norm > 1e-12 * norm0)
              & jnp.isfinite(norm))
      scale = jnp.where(keep, jax.lax.rsqrt(jnp.where(keep, norm, 1.0)), 0.0)
      basis.append(optax.tree.scale(scale, v))
    g = _f32(updates)
    s_g = transforms.max_abs(g)
    g = optax.tree.scale(1.0 / s_g, g)
    for q in basis:
      g = optax.tree.add_scale(g, -transforms.tree_vdot(g, q), q)
    out = jax.tree.map(lambda x, u: (x * s_g).astype(u.dtype), g, updates)
    return out, SubspaceState(state.count + 1, directions)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------
# oeu_post: project the optimizer's output.


class AfterState(NamedTuple):
  """State of :func:`project_after`: the wrapped optimizer's state."""
  inner: Any


def _finite_or_zero(tree: Any) -> Any:
  return jax.tree.map(lambda x: jnp.where(jnp.isfinite(x), x, 0.0), tree)


def preconditioned(optimizer: optax.GradientTransformation, state: Any,
                   params: Any, at: Any, direction: Any) -> tuple:
  """``(U(at), J direction)``: the optimizer's update and its derivative.

  ``U(g) = optimizer.update(g, state, params)[0]`` is the map from the
  gradient to the applied update at the current optimizer state; ``J =
  dU/dg`` at ``at`` (a Jacobian-vector product). For SGD with or without
  momentum ``J = -lr I``; for Adam it is (minus the learning rate times) the
  diagonal preconditioner, including the second moment's own dependence on
  the gradient. Entries where ``U`` is not differentiable (Adam at a zero
  second moment gives ``0/0``) are set to 0.
  """
  def u(g):
    return optimizer.update(g, state, params)[0]

  out, tangent = jax.jvp(u, (at,), (direction,))
  return out, _finite_or_zero(tangent)


def project_after(optimizer: optax.GradientTransformation, *,
                  alpha: float = 1.0, beta: float = 1.0, eps: float = 1e-12
                  ) -> optax.GradientTransformationExtraArgs:
  """OEU with the projection applied to the optimizer's output.

  With ``g_f = updates`` and ``g_r = reference``, the optimizer ``U`` (its
  state as it stands) receives ``d = alpha g_f + beta g_r`` and returns the
  update ``u = U(d)``, momentum, Adam's normalization, weight decay and the
  learning rate included. The retain direction is passed through the same
  preconditioning: ``r~ = J g_r``, ``J = dU/dg`` at ``d``
  (:func:`preconditioned`), so ``beta r~`` is the part of ``u`` that the
  retain gradient is responsible for (exactly, for SGD: ``r~ = -lr g_r``).
  The rest, ``u_f = u - beta r~`` (the forget gradient, the momentum carried
  from earlier steps, weight decay), is projected off ``g_r``, and the
  retain part is added back:

      applied = u_f - (<u_f, g_r> / (||g_r||^2 + eps)) g_r + beta r~.

  What is orthogonal to what: ``<applied - beta r~, g_r> = 0``. The applied
  step minus its retain part is Euclidean-orthogonal to the current retain
  gradient, which is the same as orthogonal to the preconditioned retain
  direction ``r~`` in the optimizer's own metric ``<a, b> = -a^T J^{-1} b``
  (``J`` diagonal for SGD and Adam). So to first order the retain loss of
  this batch changes by ``beta <g_r, r~>`` only (``-beta lr ||g_r||^2`` for
  SGD): the retain descent, and nothing from the forget gradient or the
  momentum. :func:`oeu_jax.algorithm.transforms.project_orthogonal` instead
  makes only the optimizer's *input* orthogonal; momentum and Adam then break
  it.

  The optimizer state advances exactly as it would without the projection
  (it sees ``d``); only the applied update changes.

  Args:
    optimizer: the optimizer to wrap (its output is the applied update).
    alpha: weight of the forget gradient.
    beta: weight of the retain gradient.
    eps: guards ``||g_r|| = 0`` (then ``u`` is applied unchanged).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with :class:`AfterState`;
    its updates go straight to ``optax.apply_updates``.

  Raises:
    ValueError: ``eps < 0``, or a missing or mismatched ``reference``.
  """
  if not eps >= 0:
    raise ValueError(f"eps must be >= 0, got {eps}")

  def init_fn(params):
    return AfterState(optimizer.init(params))

  def update_fn(updates, state, params=None, *, reference=None, **extra):
    del extra
    transforms._check_reference(updates, reference, "project_after")  # pylint: disable=protected-access
    g_r = _f32(reference)
    d = optax.tree.add_scale(optax.tree.scale(alpha, _f32(updates)), beta,
                             g_r)
    _, inner = optimizer.update(d, state.inner, params)
    u, r_tilde = preconditioned(optimizer, state.inner, params, d, g_r)
    u_f = optax.tree.add_scale(_f32(u), -beta, r_tilde)
    u_f = transforms.project_pytree(u_f, g_r, eps=eps)
    out = optax.tree.add_scale(u_f, beta, r_tilde)
    return optax.tree.cast_like(out, updates), AfterState(inner)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
