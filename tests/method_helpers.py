"""Shared pieces of the method tests: a tiny CNN, batches, references.

A tiny CNN (8x8 inputs, 5 classes) on random data; properties are checked
against independent computations (NumPy, ``jax.grad`` of the plain losses,
``transforms.project_pytree``).
"""

import jax
import jax.numpy as jnp
import numpy as np

from oeu_jax.algorithm import losses
from oeu_jax.algorithm import methods
from oeu_jax.engine import unlearn
from oeu_jax.nn import models

K = 5
NF, NR = 16, 32


def tiny_setup():
  """``(model, params, batch_stats, UnlearnData)``: float CNN, random data."""
  model = models.build_model("cnn", num_classes=K, bits="float",
                             features=(4, 8), hidden=16)
  params, bs = models.init_model(model, jax.random.key(0), (8, 8, 1))
  rng = np.random.default_rng(0)
  x = rng.random((NF + NR, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, K, NF + NR).astype(np.int32)
  data = unlearn.make_data(x, y, np.arange(NF), np.arange(NF, NF + NR))
  return model, params, bs, data


def prepare_inputs(model, params, bs, data, spe=4, seed=0):
  return methods.PrepareInputs(model, params, bs, *data, K, spe,
                               jax.random.PRNGKey(seed), 10 * spe)


def batches(data, idx_f, idx_r):
  fi, ri = jnp.asarray(idx_f), jnp.asarray(idx_r)
  return (methods.Batch(data.forget_x[fi], data.forget_y[fi], fi),
          methods.Batch(data.retain_x[ri], data.retain_y[ri], ri))


def ce(model, params, bs, x, y):
  logits, _ = models.apply_model(model, params, bs, x, train=True)
  return losses.mean_cross_entropy(logits, y)


def jgrad(fn):
  """``jax.grad`` compiled once (eager op-by-op dispatch is slow)."""
  return jax.jit(jax.grad(fn))


def flat(tree):
  return np.concatenate([np.asarray(v, np.float64).ravel()
                         for v in jax.tree.leaves(tree)])


def assert_trees_close(a, b, **kw):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw)
