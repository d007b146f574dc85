"""The orthogonal projection against NumPy, closed forms and optax chains."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import oeu_jax
from oeu_jax.algorithm import transforms


def _random_tree(rng, dtype=np.float32):
  return {"a": rng.normal(size=(3, 4)).astype(dtype),
          "b": [rng.normal(size=(5,)).astype(dtype),
                rng.normal(size=(2, 2, 2)).astype(dtype)]}


def _np_project(g, r, scope, mode, eps):
  gl = [np.asarray(x, np.float64) for x in jax.tree.leaves(g)]
  rl = [np.asarray(x, np.float64) for x in jax.tree.leaves(r)]
  if scope == "global":
    gv, rv = np.concatenate([x.ravel() for x in gl]), np.concatenate(
        [x.ravel() for x in rl])
    dot, nsq = gv @ rv, rv @ rv
    c = 0.0 if nsq == 0 or (mode == "conflict" and dot >= 0) else dot / (
        nsq + eps)
    out = [x - c * y for x, y in zip(gl, rl)]
  else:
    out = []
    for x, y in zip(gl, rl):
      dot, nsq = (x * y).sum(), (y * y).sum()
      c = 0.0 if nsq == 0 or (mode == "conflict" and dot >= 0) else dot / (
          nsq + eps)
      out.append(x - c * y)
  return jax.tree.unflatten(jax.tree.structure(g), out)


def _flat(tree):
  return np.concatenate([np.asarray(x, np.float64).ravel()
                         for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("scope", ["global", "per_leaf"])
@pytest.mark.parametrize("mode", ["always", "conflict"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_reference(scope, mode, seed):
  rng = np.random.default_rng(seed)
  g, r = _random_tree(rng), _random_tree(rng)
  tx = oeu_jax.project_orthogonal(scope=scope, mode=mode)
  out, _ = tx.update(g, tx.init(g), reference=r)
  want = _np_project(g, r, scope, mode, 1e-12)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_closed_form():
  tx = oeu_jax.project_orthogonal()
  out, _ = tx.update(jnp.array([1., 2.]), tx.init(None),
                     reference=jnp.array([3., 4.]))
  # <g,r> = 11, ||r||^2 = 25: g - 11/25 r = (1 - 1.32, 2 - 1.76).
  np.testing.assert_allclose(out, [-0.32, 0.24], atol=1e-6)


def test_conflict_mode_leaves_agreeing_gradients():
  tx = oeu_jax.project_orthogonal(mode="conflict")
  g = jnp.array([1., 2.])
  out, _ = tx.update(g, tx.init(None), reference=jnp.array([3., 4.]))
  np.testing.assert_array_equal(out, g)
  out, _ = tx.update(-g, tx.init(None), reference=jnp.array([3., 4.]))
  np.testing.assert_allclose(out, [0.32, -0.24], atol=1e-6)


@pytest.mark.parametrize("scope", ["global", "per_leaf"])
def test_orthogonal_and_idempotent(scope):
  rng = np.random.default_rng(3)
  g, r = _random_tree(rng), _random_tree(rng)
  tx = oeu_jax.project_orthogonal(scope=scope)
  once, _ = tx.update(g, tx.init(g), reference=r)
  twice, _ = tx.update(once, tx.init(g), reference=r)
  if scope == "global":
    assert abs(_flat(once) @ _flat(r)) < 1e-4 * np.linalg.norm(_flat(g)) * \
        np.linalg.norm(_flat(r))
  else:
    for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(r)):
      assert abs(float(np.vdot(a, b))) < 1e-4 * np.linalg.norm(b) * \
          np.linalg.norm(a) + 1e-6
  np.testing.assert_allclose(_flat(twice), _flat(once), atol=1e-5)
  assert np.linalg.norm(_flat(once)) <= np.linalg.norm(_flat(g)) + 1e-5


def test_zero_reference_passes_through_without_nan():
  rng = np.random.default_rng(4)
  g = _random_tree(rng)
  zero = jax.tree.map(np.zeros_like, g)
  for scope in ("global", "per_leaf"):
    tx = oeu_jax.project_orthogonal(scope=scope, eps=0.0)
    out, _ = tx.update(g, tx.init(g), reference=zero)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(g)):
      np.testing.assert_array_equal(a, b)
    grads = jax.grad(lambda gg: _sum_tree(tx.update(gg, None,
                                                    reference=zero)[0]))(g)
    assert np.all(np.isfinite(_flat(grads)))


def _sum_tree(t):
  return sum(jnp.sum(x) for x in jax.tree.leaves(t))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtype_and_structure_kept(dtype):
  rng = np.random.default_rng(5)
  g = jax.tree.map(lambda x: jnp.asarray(x, dtype), _random_tree(rng))
  r = jax.tree.map(lambda x: jnp.asarray(x, dtype), _random_tree(rng))
  tx = optax.chain(oeu_jax.project_orthogonal(), oeu_jax.add_reference(1.0))
  out, _ = tx.update(g, tx.init(g), reference=r)
  assert jax.tree.structure(out) == jax.tree.structure(g)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(g)):
    assert a.dtype == b.dtype and a.shape == b.shape


def test_add_reference():
  tx = oeu_jax.add_reference(0.5)
  out, _ = tx.update({"w": jnp.ones(3)}, tx.init(None),
                     reference={"w": jnp.arange(3.)})
  np.testing.assert_allclose(out["w"], [1., 1.5, 2.])


@pytest.mark.parametrize("opt", [lambda: optax.sgd(0.1, momentum=0.9),
                                 lambda: optax.adam(1e-2),
                                 lambda: optax.adamw(1e-2)])
def test_inside_optax_chain(opt):
  rng = np.random.default_rng(6)
  params = _random_tree(rng)
  g, r = _random_tree(rng), _random_tree(rng)
  tx = optax.chain(oeu_jax.project_orthogonal(), oeu_jax.add_reference(1.0),
                   opt())
  state = tx.init(params)
  updates, state = tx.update(g, state, params, reference=r)
  # Same as feeding the hand-built direction to the optimizer alone.
  d = jax.tree.map(lambda a, b: a + b, _np_project(g, r, "global", "always",
                                                   1e-12), r)
  d = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), d)
  ref_tx = opt()
  want, _ = ref_tx.update(d, ref_tx.init(params), params)
  np.testing.assert_allclose(_flat(updates), _flat(want), rtol=1e-4,
                             atol=1e-5)


def test_missing_reference_is_a_clear_error():
  tx = optax.chain(oeu_jax.project_orthogonal(), optax.sgd(0.1))
  params = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="reference=g_retain"):
    tx.update(params, tx.init(params), params)
  with pytest.raises(ValueError, match="structure"):
    tx.update(params, tx.init(params), params, reference={"v": jnp.ones(2)})
  with pytest.raises(ValueError, match="shape"):
    tx.update(params, tx.init(params), params, reference={"w": jnp.ones(3)})


def test_bad_hyperparameters():
  with pytest.raises(ValueError, match="scope"):
    oeu_jax.project_orthogonal(scope="layer")
  with pytest.raises(ValueError, match="mode"):
    oeu_jax.project_orthogonal(mode="sometimes")
  with pytest.raises(ValueError, match="eps"):
    oeu_jax.project_orthogonal(eps=-1.0)


def test_jit_compiles_once():
  tx = optax.chain(oeu_jax.project_orthogonal(), oeu_jax.add_reference(1.0),
                   optax.sgd(0.1, momentum=0.9))
  traces = []

  @jax.jit
  def step(params, state, g, r):
    traces.append(1)
    u, state = tx.update(g, state, params, reference=r)
    return optax.apply_updates(params, u), state

  rng = np.random.default_rng(7)
  params = jax.tree.map(jnp.asarray, _random_tree(rng))
  state = tx.init(params)
  for _ in range(3):
    params, state = step(params, state, _random_tree(rng), _random_tree(rng))
  assert len(traces) == 1


def test_first_order_guarantee_on_a_real_loss():
  """A small step along -g_f_perp changes L_r by O(eta^2), L_f by -eta|g|^2."""
  from oeu_jax.algorithm import losses
  rng = np.random.default_rng(8)
  w = {"w": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
       "b": jnp.zeros(4)}
  xf, xr = rng.normal(size=(2, 16, 6)).astype(np.float32)
  yr = rng.integers(0, 4, 16)

  def logits(p, x):
    return x @ p["w"] + p["b"]

  lf = lambda p: losses.forget_loss(logits(p, xf))
  lr = lambda p: losses.mean_cross_entropy(logits(p, xr), yr)
  gf, gr = jax.grad(lf)(w), jax.grad(lr)(w)
  gp = transforms.project_pytree(gf, gr)
  for eta in (1e-2, 1e-3):
    step = jax.tree.map(lambda p, d: p - eta * d, w, gp)
    d_r = float(lr(step) - lr(w))
    d_f = float(lf(step) - lf(w))
    gp_sq = float(_flat(gp) @ _flat(gp))
    assert abs(d_r) < 50 * eta ** 2 * (1 + gp_sq)
    assert d_f == pytest.approx(-eta * gp_sq, rel=0.1)


@pytest.mark.parametrize("scale", [1e19, 1e30, 1e-15])
@pytest.mark.parametrize("scope", ["global", "per_leaf"])
def test_any_finite_magnitude_projects_without_overflow(scale, scope):
  g = {"a": jnp.array([1., 2.]) * scale}
  r = {"a": jnp.array([3., 4.]) * scale}
  out = transforms.project_pytree(g, r, scope=scope, eps=0.0)
  np.testing.assert_allclose(np.asarray(out["a"]) / scale, [-0.32, 0.24],
                             rtol=1e-5)


# Issue 15: a non-finite reference is never a silent NaN.


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_reference_zeroes_the_coefficient(bad):
  rng = np.random.default_rng(7)
  g, r = _random_tree(rng), _random_tree(rng)
  r["b"][0][2] = bad
  out, _ = oeu_jax.project_orthogonal().update(g, optax.EmptyState(),
                                               reference=r)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(g)):
    np.testing.assert_array_equal(a, b)  # g passes through, finite.
  # Per leaf, only the leaf with the bad entry is left unprojected.
  out, _ = oeu_jax.project_orthogonal(scope="per_leaf").update(
      g, optax.EmptyState(), reference=r)
  with np.errstate(invalid="ignore"):  # The bad leaf's reference is NaN.
    want = _np_project(g, r, "per_leaf", "always", 1e-12)
  np.testing.assert_array_equal(out["b"][0], g["b"][0])
  np.testing.assert_allclose(out["a"], want["a"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["b"][1], want["b"][1], rtol=1e-5, atol=1e-5)


def test_non_finite_reference_is_reported_by_the_update_check():
  # OEU adds the reference back: the update is not finite, which the
  # unlearning step's check (transforms.tree_is_finite) reports.
  rng = np.random.default_rng(8)
  g, r = _random_tree(rng), _random_tree(rng)
  r["a"][0, 0] = np.nan
  tx = optax.chain(transforms.oeu_direction(), optax.sgd(0.1))
  updates, _ = tx.update(g, tx.init(g), g, reference=r)
  assert not bool(transforms.tree_is_finite(updates))
  assert bool(transforms.tree_is_finite(transforms.project_pytree(g, r)))
