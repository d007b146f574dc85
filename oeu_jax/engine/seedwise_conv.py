"""Convolutions run seed by seed under ``jax.vmap`` (a CPU workaround).

Under ``jax.vmap`` over seeds, a convolution whose input and kernel both
carry the seed axis becomes a grouped convolution, which XLA's CPU backend
expands into a dense one N times larger (N seeds cost N^2).
:func:`seedwise_convs` re-traces a function so that, when it is vmapped,
each convolution is bound once per seed inside the same program instead;
every other operation stays vmapped. :func:`use_by_default` says where it
pays (the CPU backend).
"""

from typing import Callable

import jax
import jax.extend as jex
import jax.numpy as jnp


def use_by_default() -> bool:
  """True on the CPU backend, where grouped convolutions are slow."""
  return jax.default_backend() == "cpu"


def _looped_conv(params: dict) -> Callable:
  """``conv_general_dilated`` with ``params``; vmapped as one call per seed.

  The loop is unrolled (not ``lax.map``): inside a while loop XLA's CPU
  backend leaves gradient convolutions in layouts it runs slowly.
  """

  def bind(lhs, rhs):
    return jax.lax.conv_general_dilated_p.bind(lhs, rhs, **params)

  conv = jax.custom_batching.custom_vmap(bind)

  @conv.def_vmap
  def _rule(axis_size, in_batched, lhs, rhs):
    lhs_b, rhs_b = in_batched
    outs = [bind(lhs[i] if lhs_b else lhs, rhs[i] if rhs_b else rhs)
            for i in range(axis_size)]
    return jnp.stack(outs), True

  return conv


def _eval_jaxpr(jaxpr, consts, *args):
  """``jax.core.eval_jaxpr``, with every convolution run seed by seed.

  Under ``jax.vmap`` a convolution whose input and kernel both carry the
  seed axis becomes a grouped convolution, which XLA's CPU backend expands
  into a dense one N times larger (N seeds cost N^2). Binding it through
  ``jax.custom_batching.sequential_vmap`` loops over the seeds instead,
  inside the same program; every other operation stays vmapped. Nested
  ``jit`` calls are inlined so their convolutions are reached too.
  """
  env = {}

  def read(v):
    return v.val if isinstance(v, jex.core.Literal) else env[v]

  for v, c in zip(jaxpr.constvars, consts):
    env[v] = c
  for v, a in zip(jaxpr.invars, args):
    env[v] = a
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    prim = eqn.primitive
    if prim is jax.lax.conv_general_dilated_p:
      outs = [_looped_conv(eqn.params)(*invals)]
    elif prim.name in ("pjit", "jit"):
      inner = eqn.params["jaxpr"]
      outs = _eval_jaxpr(inner.jaxpr, inner.consts, *invals)
    else:
      with eqn.ctx.manager:  # As jax.core.eval_jaxpr (compute_on, ...).
        outs = prim.bind(*invals, **prim.get_bind_params(eqn.params))
      if not prim.multiple_results:
        outs = [outs]
    for v, o in zip(eqn.outvars, outs):
      env[v] = o
  return [read(v) for v in jaxpr.outvars]


def seedwise_convs(fn: Callable) -> Callable:
  """``fn`` re-traced so that, under ``jax.vmap``, convolutions loop."""

  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    outs = _eval_jaxpr(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

  return wrapped
