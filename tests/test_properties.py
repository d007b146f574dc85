"""Property-based tests (hypothesis): the projection, class splits, batches.

The projection is checked on random pytrees of random shapes and dtypes
(float32, bfloat16) against its defining properties, with tolerances set by
the dtype's rounding; the random-split property lives in tests/test_data.py.
Batch orders are what makes a resumed run bit-identical, so they are checked
to be pure functions of (seed, step) with fixed shapes that cover the data.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from oeu_jax import data
from oeu_jax.algorithm import transforms
from oeu_jax.engine import train
from oeu_jax.engine import unlearn

# Relative rounding error of one operation, per dtype (float32: 2^-24, with
# room for sums of up to ~100 terms; bfloat16: 2^-8 plus cancellation).
TOL = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}

shapes = st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple)


@st.composite
def tree_pairs(draw):
  """(g, r, dtype): two pytrees of one random structure, shapes and dtype."""
  dtype = draw(st.sampled_from([jnp.float32, jnp.bfloat16]))
  leaf_shapes = draw(st.lists(shapes, min_size=1, max_size=4))
  seed = draw(st.integers(0, 2**32 - 1))
  g_scale = 10.0 ** draw(st.integers(-3, 3))
  r_scale = 10.0 ** draw(st.integers(-3, 3))
  rng = np.random.default_rng(seed)

  def tree(scale):
    leaves = [jnp.asarray(rng.normal(size=s) * scale, dtype)
              for s in leaf_shapes]
    # A nested structure: a dict holding a list and a tuple.
    return {"a": leaves[:1], "b": tuple(leaves[1:])}

  return tree(g_scale), tree(r_scale), dtype


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.asarray(x, np.float64).ravel()
                         for x in jax.tree.leaves(tree)])


def _project(g, r, **kw):
  tx = transforms.project_orthogonal(**kw)
  return tx.update(g, tx.init(g), reference=r)[0]


@settings(max_examples=40, deadline=None)
@given(tree_pairs(), st.sampled_from(transforms.SCOPES))
def test_projection_properties(pair, scope):
  g, r, dtype = pair
  tol = TOL[dtype]
  out = _project(g, r, scope=scope, eps=0.0)
  # Structure, shapes and dtypes are kept.
  assert jax.tree.structure(out) == jax.tree.structure(g)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(g)):
    assert a.shape == b.shape and a.dtype == b.dtype
  # Orthogonal to the reference: the whole tree, or each leaf.
  pieces = ([(out, g, r)] if scope == "global" else
            list(zip(jax.tree.leaves(out), jax.tree.leaves(g),
                     jax.tree.leaves(r))))
  for o, gg, rr in pieces:
    o, gg, rr = _flat(o), _flat(gg), _flat(rr)
    bound = tol * np.linalg.norm(gg) * np.linalg.norm(rr)
    assert abs(o @ rr) <= bound + 1e-30
    # The norm never increases (up to one rounding of each element).
    assert np.linalg.norm(o) <= np.linalg.norm(gg) * (1 + tol) + 1e-30
  # Idempotent: projecting again changes nothing (up to rounding).
  twice = _project(out, r, scope=scope, eps=0.0)
  assert np.linalg.norm(_flat(twice) - _flat(out)) <= (
      tol * np.linalg.norm(_flat(g)) + 1e-30)


@settings(max_examples=25, deadline=None)
@given(tree_pairs(), st.sampled_from(transforms.SCOPES),
       st.sampled_from(transforms.MODES), st.sampled_from([0.0, 1e-12, 1.0]))
def test_zero_reference_is_the_identity(pair, scope, mode, eps):
  g, r, _ = pair
  zero = jax.tree.map(jnp.zeros_like, r)
  out = _project(g, zero, scope=scope, mode=mode, eps=eps)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(g)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


@settings(max_examples=25, deadline=None)
@given(tree_pairs())
def test_conflict_mode_only_touches_conflicting_gradients(pair):
  g, r, dtype = pair
  dot = _flat(g) @ _flat(r)
  assume(abs(dot) > TOL[dtype] * np.linalg.norm(_flat(g)) * np.linalg.norm(
      _flat(r)))  # The sign is not a rounding artefact.
  out = _project(g, r, mode="conflict", eps=0.0)
  if dot > 0:
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(g)):
      np.testing.assert_array_equal(a, b)
  else:
    assert abs(_flat(out) @ _flat(r)) < abs(dot)


def _labels_dataset(labels, k):
  y = np.asarray(labels, np.int32)
  x = np.zeros((len(y), 2, 2, 1), np.float32)
  return data.Dataset("synthetic", x, y, x[:1], y[:1], k)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.integers(0, k - 1), min_size=1, max_size=120),
    st.integers(0, k - 1), st.integers(0, 2**31 - 1))))
def test_class_split_property(args):
  k, labels, c, seed = args
  ds = _labels_dataset(labels, k)
  y = ds.train_y
  if not (y == c).any() or (y == c).all():
    with pytest.raises(ValueError, match=f"forget_class={c}"):
      data.make_split(ds, "class", forget_class=c, seed=seed)
    return
  split = data.make_split(ds, "class", forget_class=c, seed=seed)
  f, r = split.forget_idx, split.retain_idx
  assert np.intersect1d(f, r).size == 0  # Disjoint.
  np.testing.assert_array_equal(np.sort(np.concatenate([f, r])),
                                np.arange(len(y)))  # Covering.
  np.testing.assert_array_equal(f, np.flatnonzero(y == c))  # Exactly class c.
  again = data.make_split(ds, "class", forget_class=c, seed=seed + 1)
  np.testing.assert_array_equal(again.forget_idx, f)  # Seed plays no role.


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.integers(1, 64), st.integers(0, 2**31 - 1),
       st.integers(0, 5))
def test_training_batches_are_pure_fixed_size_and_disjoint(n, batch, seed,
                                                           epoch):
  spe = train.steps_per_epoch(n, batch)
  steps = range(epoch * spe, (epoch + 1) * spe)
  batches = [train.batch_indices(n, batch, seed, s) for s in steps]
  seen = np.concatenate(batches)
  assert {len(b) for b in batches} == {min(batch, n)}  # One compiled shape.
  assert len(np.unique(seen)) == len(seen)  # No example twice in an epoch.
  assert seen.min() >= 0 and seen.max() < n
  assert len(seen) == spe * min(batch, n) >= n - batch
  for s, b in zip(steps, batches):  # A pure function of (seed, step).
    np.testing.assert_array_equal(train.batch_indices(n, batch, seed, s), b)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 80), st.integers(1, 200), st.integers(1, 48),
       st.sampled_from(unlearn.PAIRINGS), st.integers(0, 2**20),
       st.integers(0, 3))
def test_unlearning_batches_cover_each_set(nf, nr, batch, pairing, seed,
                                           epoch):
  cfg = unlearn.UnlearnConfig(batch_size=batch, pairing=pairing)
  spe = unlearn.steps_per_epoch(nf, nr, cfg)
  steps = range(epoch * spe, (epoch + 1) * spe)
  pairs = [unlearn.step_indices(nf, nr, cfg, seed, s) for s in steps]
  forget = np.concatenate([f for f, _ in pairs])
  retain = np.concatenate([r for _, r in pairs])
  assert {len(f) for f, _ in pairs} == {min(batch, nf)}
  assert {len(r) for _, r in pairs} == {min(batch, nr)}
  assert forget.min() >= 0 and forget.max() < nf
  assert retain.min() >= 0 and retain.max() < nr
  assert set(forget) == set(range(nf))  # Every forget example, each epoch.
  if pairing == "max":
    assert set(retain) == set(range(nr))
  for s, (f, r) in zip(steps, pairs):
    f2, r2 = unlearn.step_indices(nf, nr, cfg, seed, s)
    np.testing.assert_array_equal(f2, f)
    np.testing.assert_array_equal(r2, r)
