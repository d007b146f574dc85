"""OEU's orthogonal projection as composable optax transforms.

The forget gradient arrives as ``updates``; the retain gradient arrives as the
keyword-only extra argument ``reference``. Because both transforms are
``optax.GradientTransformationExtraArgs``, ``optax.chain`` forwards
``reference`` to them and to nothing else, so the OEU direction is::

    tx = optax.chain(project_orthogonal(), add_reference(1.0),
                     optax.sgd(0.01, momentum=0.9))
    updates, state = tx.update(g_forget, state, params, reference=g_retain)

and works the same in front of ``optax.adam``, ``optax.adamw`` or any other
optimizer. ``optax.scale(alpha)`` between the two gives ``alpha * g_f_perp +
beta * g_r``.

References:
  Forget by Uncertainty: Orthogonal Entropy Unlearning for Quantized Neural
  Networks, arXiv:2602.00567 (ICML 2026).
  Yu et al., Gradient Surgery for Multi-Task Learning (PCGrad),
  arXiv:2001.06782 (the ``mode="conflict"`` variant).
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

SCOPES = ("global", "per_leaf")
MODES = ("always", "conflict")


def _check_reference(updates: Any, reference: Any, name: str) -> None:
  if reference is None:
    raise ValueError(
        f"{name} needs the retain gradient: call "
        "update(g_forget, state, params, reference=g_retain)")
  if jax.tree.structure(updates) != jax.tree.structure(reference):
    raise ValueError(
        f"{name}: reference pytree structure {jax.tree.structure(reference)} "
        f"differs from updates {jax.tree.structure(updates)}")
  for u, r in zip(jax.tree.leaves(updates), jax.tree.leaves(reference)):
    if jnp.shape(u) != jnp.shape(r):
      raise ValueError(
          f"{name}: reference leaf shape {jnp.shape(r)} differs from "
          f"update leaf shape {jnp.shape(u)}")


def _vdot(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.sum(a.astype(jnp.float32) * b.astype(jnp.float32))


def _coefficient(dot: jax.Array, norm_sq: jax.Array, mode: str,
                 eps: jax.Array) -> jax.Array:
  # Guarded division: a zero reference, or one whose |r|^2 is negligible
  # against eps (eps / s_r^2 overflowing to inf), gives 0, never NaN.
  den = norm_sq + eps
  safe = (norm_sq > 0) & jnp.isfinite(den)
  coeff = jnp.where(safe, dot / jnp.where(safe, den, 1.0), 0.0)
  if mode == "conflict":
    coeff = jnp.where(dot < 0, coeff, 0.0)
  return coeff


def check_choice(value: Any, choices: tuple, name: str) -> None:
  """Raises a one-line ValueError naming ``name`` unless ``value`` is one of
  ``choices``."""
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _validate(scope: str, mode: str, eps: float) -> None:
  check_choice(scope, SCOPES, "scope")
  check_choice(mode, MODES, "mode")
  if not eps >= 0:
    raise ValueError(f"eps must be >= 0, got {eps}")


def project_pytree(g: Any, r: Any, *, scope: str = "global",
                   mode: str = "always", eps: float = 1e-12) -> Any:
  """Projects pytree ``g`` onto the orthogonal complement of pytree ``r``.

  ``g_perp = g - (<g, r> / (||r||^2 + eps)) r``. Inner products are taken in
  float32 after dividing each side by its max-abs entry (so gradients of any
  finite magnitude project without overflow); each leaf is cast back to its
  own dtype.

  Args:
    g: pytree of arrays (the forget gradient).
    r: pytree of the same structure and shapes (the retain gradient).
    scope: ``"global"``: one inner product over the whole pytree (the
      first-order guarantee on ``L_r``); ``"per_leaf"``: each array projected
      against its own reference leaf.
    mode: ``"always"``, or ``"conflict"``: project only where ``<g, r> < 0``.
    eps: added to ``||r||^2``; a zero reference returns ``g`` unchanged.

  Returns:
    A pytree like ``g``.
  """
  _validate(scope, mode, eps)
  if scope == "per_leaf":
    return jax.tree.map(
        lambda gl, rl: _project_leaves([gl], [rl], mode, eps)[0], g, r)
  out = _project_leaves(jax.tree.leaves(g), jax.tree.leaves(r), mode, eps)
  return jax.tree.unflatten(jax.tree.structure(g), out)


def max_abs(tree: Any) -> jax.Array:
  """The largest ``|x|`` over ``tree``'s leaves in float32: a scale for
  overflow-safe inner products; a zero, non-finite or empty one is 1 (then
  nothing is rescaled)."""
  m = jnp.max(jnp.stack([jnp.float32(0)] + [
      jnp.max(jnp.abs(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)
      if x.size]))
  return jnp.where((m > 0) & jnp.isfinite(m), m, 1.0)


def tree_vdot(a: Any, b: Any) -> jax.Array:
  """``<a, b>`` over two pytrees of one structure, in float32."""
  return sum((_vdot(x, y) for x, y in zip(jax.tree.leaves(a),
                                          jax.tree.leaves(b))),
             jnp.float32(0))


def _project_leaves(gs: list, rs: list, mode: str, eps: float) -> list:
  """Projects the vector made of leaves ``gs`` against that of ``rs``.

  Both are first divided by their max-abs entry, so inner products in float32
  neither overflow (entries ~1e19) nor underflow (entries ~1e-19):
  ``g - c r = g - q s_g r_hat`` with ``q = <g_hat, r_hat> / (|r_hat|^2 +
  eps / s_r^2)`` is the same formula, computed at unit scale. A reference
  with a non-finite entry is not used at all (``q = 0``, ``r_hat = 0``):
  ``g`` comes back unchanged rather than with NaN where ``0 * inf`` fell.
  """
  if not gs:
    return []
  s_g, s_r = max_abs(gs), max_abs(rs)
  usable = tree_is_finite(rs)
  g_hat = [x.astype(jnp.float32) / s_g for x in gs]
  r_hat = [jnp.where(usable, x.astype(jnp.float32) / s_r, 0.0) for x in rs]
  dot = sum((jnp.sum(a * b) for a, b in zip(g_hat, r_hat)), jnp.float32(0))
  norm_sq = sum((jnp.sum(b * b) for b in r_hat), jnp.float32(0))
  q = _coefficient(dot, norm_sq, mode, eps / (s_r * s_r))
  return [(gl.astype(jnp.float32) - (q * s_g) * rh).astype(gl.dtype)
          for gl, rh in zip(gs, r_hat)]


def project_orthogonal(
    *, scope: str = "global", mode: str = "always", eps: float = 1e-12
) -> optax.GradientTransformationExtraArgs:
  """Projects updates onto the orthogonal complement of ``reference``.

  ``update(updates, state, params=None, *, reference, **extra)`` returns

      g_f_perp = g_f - (<g_f, r> / (||r||^2 + eps)) r,    r = reference,

  so that ``<g_f_perp, r> = 0`` (up to eps): to first order, a step along
  ``-g_f_perp`` leaves the retain loss unchanged while still decreasing the
  forget loss by ``eta * ||g_f_perp||^2``.

  Non-finite reference: when ``r`` (the whole pytree; with
  ``scope="per_leaf"``, that leaf) has a NaN or infinite entry, the
  coefficient is zeroed and ``g_f`` passes through unchanged, never with NaN
  where the projection would multiply 0 by inf. The non-finite reference is
  not hidden: :func:`add_reference` after it adds it to the update, and the
  unlearning step's finiteness check (:func:`oeu_jax.engine.unlearn.make_step`)
  then stops the run naming the step, or skips the step with
  ``skip_nonfinite``, so it never reaches the parameters.

  Note: only the direction handed to the *next* transform is orthogonal.
  Momentum, Adam's preconditioning or weight decay after it make the step
  actually applied non-orthogonal to the current retain gradient.

  Args:
    scope: ``"global"`` (default; whole pytree) or ``"per_leaf"``.
    mode: ``"always"`` (default) or ``"conflict"`` (PCGrad-style: project
      only when ``<g_f, r> < 0``).
    eps: guards ``||r|| = 0``; then updates pass through unchanged.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with ``optax.EmptyState``.

  Raises:
    ValueError: bad scope/mode/eps, or ``reference`` missing or of another
      structure or shape than ``updates``.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> tx = project_orthogonal()
    >>> out, _ = tx.update(jnp.array([1., 2.]), tx.init(None),
    ...                    reference=jnp.array([3., 4.]))
    >>> [round(float(v), 4) for v in out]
    [-0.32, 0.24]

  References:
    arXiv:2602.00567 (OEU).
  """
  _validate(scope, mode, eps)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, reference=None, **extra):
    del params, extra
    _check_reference(updates, reference, "project_orthogonal")
    return project_pytree(updates, reference, scope=scope, mode=mode,
                          eps=eps), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def add_reference(weight: float = 1.0) -> optax.GradientTransformationExtraArgs:
  """Adds ``weight * reference`` to the updates: ``d = g + weight * r``.

  After :func:`project_orthogonal` this adds the retain gradient back
  (``beta`` in METHOD.md §2), so the step also descends the retain loss.

  Args:
    weight: the coefficient ``beta`` of the reference.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with ``optax.EmptyState``.

  Raises:
    ValueError: if ``reference`` is missing or mismatched.
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, reference=None, **extra):
    del params, extra
    _check_reference(updates, reference, "add_reference")
    out = jax.tree.map(
        lambda u, r: (u.astype(jnp.float32)
                      + weight * r.astype(jnp.float32)).astype(u.dtype),
        updates, reference)
    return out, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def oeu_direction(
    *, alpha: float = 1.0, beta: float = 1.0, scope: str = "global",
    mode: str = "always", eps: float = 1e-12,
    project: bool = True) -> optax.GradientTransformationExtraArgs:
  """``alpha * g_f_perp + beta * g_r`` as one chain (without the optimizer).

  Args:
    alpha: weight of the (projected) forget gradient.
    beta: weight of the retain gradient.
    scope: see :func:`project_orthogonal`.
    mode: see :func:`project_orthogonal`.
    eps: see :func:`project_orthogonal`.
    project: False drops the projection (the ``oeu_no_proj`` ablation).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` to put in front of an
    optimizer with ``optax.chain``.
  """
  parts = []
  if project:
    parts.append(project_orthogonal(scope=scope, mode=mode, eps=eps))
  if alpha != 1.0:
    parts.append(optax.scale(alpha))
  parts.append(add_reference(beta))
  return optax.chain(*parts)


def cosine(a: Any, b: Any) -> jax.Array:
  """Cosine similarity of two pytrees (0 when either is zero)."""
  dot, na, nb = tree_vdot(a, b), tree_vdot(a, a), tree_vdot(b, b)
  den = jnp.sqrt(na * nb)
  return jnp.where(den > 0, dot / jnp.where(den > 0, den, 1.0), 0.0)


def tree_is_finite(tree: Any) -> jax.Array:
  """True when every leaf of ``tree`` is finite (a scalar bool array)."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.array(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))

