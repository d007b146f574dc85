"""OEU's variants (issue 13): each one's defining property, against NumPy.

Projections on small random pytrees; targets on random logits; every
variant end to end through the unlearning loop on a slice of digits.
"""

import jax
import jax.numpy as jnp
import method_helpers as mh
import numpy as np
import optax
import pytest

from oeu_jax import data as data_lib
from oeu_jax.algorithm import losses
from oeu_jax.algorithm import methods
from oeu_jax.algorithm import transforms
from oeu_jax.algorithm import variants
from oeu_jax.engine import unlearn
from oeu_jax.nn import models

VARIANTS = ("oeu_ema", "oeu_subspace", "oeu_post", "oeu_complement",
            "oeu_renorm")


def _tree(rng):
  return {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}


def _vec(tree):
  return mh.flat(tree)


def _np_project(g, r):
  return g - (g @ r) / (r @ r) * r


def test_subspace_orthogonal_to_every_stored_direction():
  rng = np.random.default_rng(0)
  k = 3
  tx = variants.project_subspace(k=k)
  state = tx.init(_tree(rng))
  refs = []
  for step in range(5):
    g, r = _tree(rng), _tree(rng)
    refs.append(_vec(r))
    out, state = tx.update(g, state, reference=r)
    o, gv = _vec(out), _vec(g)
    stored = refs[-k:]
    for d in stored:
      assert abs(o @ d) <= 1e-5 * np.linalg.norm(o) * np.linalg.norm(d)
    # And it is the projection: g minus its component in the span (NumPy).
    basis, _ = np.linalg.qr(np.stack(stored, axis=1))
    want = gv - basis @ (basis.T @ gv)
    np.testing.assert_allclose(o, want, atol=1e-5)
    assert int(state.count) == step + 1


def test_subspace_k1_equals_oeu():
  rng = np.random.default_rng(1)
  tx = variants.project_subspace(k=1)
  state = tx.init(_tree(rng))
  for _ in range(3):
    g, r = _tree(rng), _tree(rng)
    out, state = tx.update(g, state, reference=r)
    mh.assert_trees_close(out, transforms.project_pytree(g, r), atol=1e-6)
    np.testing.assert_allclose(_vec(out), _np_project(_vec(g), _vec(r)),
                               atol=1e-5)


def test_subspace_dependent_and_zero_directions():
  rng = np.random.default_rng(2)
  tx = variants.project_subspace(k=3)
  g, r = _tree(rng), _tree(rng)
  state = tx.init(g)
  _, state = tx.update(g, state, reference=r)
  # The same direction again (scaled) and a zero one add nothing.
  _, state = tx.update(g, state, reference=jax.tree.map(lambda x: 3 * x, r))
  zero = jax.tree.map(jnp.zeros_like, r)
  out, _ = tx.update(g, state, reference=zero)
  np.testing.assert_allclose(_vec(out), _np_project(_vec(g), _vec(r)),
                             atol=1e-5)
  assert np.all(np.isfinite(_vec(out)))


def test_ema_reference_equals_numpy_ema():
  rng = np.random.default_rng(3)
  decay = 0.8
  tx = variants.project_ema(decay=decay)
  state = tx.init(_tree(rng))
  m = np.zeros_like(_vec(_tree(rng)))
  for _ in range(4):
    g, r = _tree(rng), _tree(rng)
    m = decay * m + (1 - decay) * _vec(r)
    out, state = tx.update(g, state, reference=r)
    np.testing.assert_allclose(_vec(state.ema), m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_vec(out), _np_project(_vec(g), m), atol=1e-5)


def test_ema_first_step_is_oeu():
  rng = np.random.default_rng(4)
  g, r = _tree(rng), _tree(rng)
  tx = variants.project_ema(decay=0.9)
  out, _ = tx.update(g, tx.init(g), reference=r)
  mh.assert_trees_close(out, transforms.project_pytree(g, r), atol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_post_sgd_momentum_matches_numpy(beta):
  """SGD momentum: J = -lr I, so applied + lr beta g_r is orthogonal to g_r
  and equals the NumPy projection of the momentum step's forget part."""
  rng = np.random.default_rng(5)
  lr, mu, alpha = 0.1, 0.9, 0.7
  tx = variants.project_after(optax.sgd(lr, momentum=mu), alpha=alpha,
                              beta=beta)
  state = tx.init(_tree(rng))
  trace = 0.0
  for _ in range(4):
    g, r = _tree(rng), _tree(rng)
    gv, rv = _vec(g), _vec(r)
    trace = mu * trace + alpha * gv + beta * rv
    u_f = -lr * trace + lr * beta * rv
    want = _np_project(u_f, rv) - lr * beta * rv
    out, state = tx.update(g, state, reference=r)
    np.testing.assert_allclose(_vec(out), want, atol=1e-5)
    forget_part = _vec(out) + lr * beta * rv
    assert abs(forget_part @ rv) <= 1e-5 * np.linalg.norm(rv) * max(
        np.linalg.norm(forget_part), 1e-6)


def test_post_adam_applied_update_orthogonal_to_retain():
  """Adam: the applied update minus its retain part ``beta J g_r`` is
  orthogonal to ``g_r``; with beta = 0 the whole applied update is."""
  rng = np.random.default_rng(6)
  for beta in (0.0, 0.5):
    opt = optax.adam(0.05)
    tx = variants.project_after(opt, beta=beta)
    state = tx.init(_tree(rng))
    for _ in range(3):
      g, r = _tree(rng), _tree(rng)
      inner = state.inner
      out, state = tx.update(g, state, reference=r)
      d = jax.tree.map(lambda a, b: a + beta * b, g, r)
      _, r_tilde = variants.preconditioned(opt, inner, None, d, r)
      # J g_r by central finite differences, an independent check of jvp.
      h = 1e-3
      up = opt.update(jax.tree.map(lambda a, b: a + h * b, d, r), inner)[0]
      dn = opt.update(jax.tree.map(lambda a, b: a - h * b, d, r), inner)[0]
      fd = (_vec(up) - _vec(dn)) / (2 * h)
      np.testing.assert_allclose(_vec(r_tilde), fd, rtol=2e-2, atol=1e-4)
      rest = _vec(out) - beta * _vec(r_tilde)
      rv = _vec(r)
      assert abs(rest @ rv) <= 1e-4 * np.linalg.norm(rv) * np.linalg.norm(
          rest)
    # The optimizer state advanced as plain Adam on d would.
    assert int(state.inner[0].count) == 3


def test_complement_target_and_its_minimum():
  k = 5
  y = jnp.array([0, 3, 4])
  t = np.asarray(losses.complement_target(y, k))
  np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-6)
  assert np.all(t[np.arange(3), np.asarray(y)] == 0)
  np.testing.assert_allclose(t[t > 0], 1 / (k - 1))
  # Minimal at p = t: the loss there is H(t) = log(K - 1), its gradient ~0,
  # and random logits do worse.
  at_t = jnp.where(jax.nn.one_hot(y, k, dtype=bool), -40.0, 0.0)
  loss = lambda z: losses.target_forget_loss(z, jnp.asarray(t))  # noqa: E731
  np.testing.assert_allclose(float(loss(at_t)), np.log(k - 1), rtol=1e-5)
  assert float(jnp.max(jnp.abs(jax.grad(loss)(at_t)))) < 1e-6
  rng = np.random.default_rng(7)
  for _ in range(5):
    z = at_t + jnp.asarray(rng.normal(scale=0.5, size=(3, k)), jnp.float32)
    assert float(loss(z)) > float(loss(at_t))
  # The plain entropy target (OEU's) is minimal at uniform instead.
  assert float(losses.forget_loss(jnp.zeros((3, k)))) == pytest.approx(
      -np.log(k), rel=1e-6)


def test_renormalized_target_equals_numpy():
  rng = np.random.default_rng(8)
  z = rng.normal(scale=3.0, size=(6, 4)).astype(np.float32)
  y = rng.integers(0, 4, 6)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = p.copy()
  want[np.arange(6), y] = 0
  want /= want.sum(-1, keepdims=True)
  got = np.asarray(losses.renormalized_target(jnp.asarray(z), jnp.asarray(y)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_renorm_prepare_uses_original_softmax():
  model, params, bs, data = mh.tiny_setup()
  method = methods.build_method("oeu_renorm", model)
  ms = method.prepare(mh.prepare_inputs(model, params, bs, data))
  logits, _ = models.apply_model(model, params, bs, data.forget_x,
                                 train=False)
  p = np.asarray(jax.nn.softmax(logits.astype(jnp.float32)), np.float64)
  y = np.asarray(data.forget_y)
  p[np.arange(len(y)), y] = 0
  p /= p.sum(-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(ms["target"]), p, rtol=1e-4,
                             atol=1e-6)


@pytest.fixture(scope="module")
def digits_data():
  ds = data_lib.load_dataset("digits")
  y = ds.train_y
  forget = np.flatnonzero(y == 3)[:24]
  retain = np.flatnonzero(y != 3)[:96]
  return unlearn.make_data(ds.train_x, y, forget, retain), ds.num_classes


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_runs_end_to_end_on_digits(name, digits_data):
  data, k = digits_data
  model = models.build_model("cnn", num_classes=k, bits="float",
                             features=(4, 8), hidden=16)
  params, bs = models.init_model(model, jax.random.key(0), (8, 8, 1))
  hp = {"k": 2} if name == "oeu_subspace" else {}
  method = methods.build_method(name, model, **hp)
  cfg = unlearn.UnlearnConfig(epochs=1, batch_size=32, lr=0.01)
  res = unlearn.unlearn(method, model, params, bs, data, config=cfg,
                        num_classes=k, seed=0)
  assert int(res.state.step) == 3
  out = mh.flat(res.state.params)
  assert np.all(np.isfinite(out))
  assert not np.array_equal(out, mh.flat(params))
  assert all(np.isfinite(v) for v in res.metrics.values())


def test_default_oeu_unchanged_by_the_options():
  """OEU's default config still builds OEU's own chain: same update."""
  model, params, bs, data = mh.tiny_setup()
  fb, rb = mh.batches(data, np.arange(8), np.arange(16))
  sched = optax.constant_schedule(0.01)
  method = methods.build_method("oeu", model)
  out = jax.jit(method.grads)(params, bs, {}, fb, rb, jax.random.key(0), 0)
  tx = method.make_tx(sched, {})
  ref = optax.chain(transforms.oeu_direction(),
                    methods.make_optimizer(sched, methods.OptimizerConfig()))

  @jax.jit
  def both(g, extra):
    return (tx.update(g, tx.init(params), params, **extra)[0],
            ref.update(g, ref.init(params), params, **extra)[0])

  got, want = both(out.grads, out.extra)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name, hp, match", [
    ("oeu_subspace", {"k": 0}, "k must be an integer >= 1"),
    ("oeu_ema", {"decay": 1.0}, r"decay must be in \[0, 1\)"),
    ("oeu", {"target": "bogus"}, "target must be one of"),
    ("oeu", {"reference": "mean"}, "reference must be one of"),
    ("oeu", {"project_at": "later"}, "project_at must be one of"),
    ("oeu_no_proj", {"reference": "ema"}, "project=False has none"),
    ("rl_proj", {"target": "complement"}, "needs forget='entropy'"),
    ("oeu_post", {"scope": "per_leaf"}, "project_at='update' takes"),
    ("oeu_subspace", {"mode": "conflict"}, "reference='subspace' takes"),
    ("oeu_complement", {"target": "uniform"}, "fixes"),
])
def test_bad_option_gives_one_clear_error(name, hp, match):
  with pytest.raises(ValueError, match=match) as err:
    methods.build_method(name, None, **hp)
  assert "\n" not in str(err.value)


def test_transforms_reject_bad_arguments():
  with pytest.raises(ValueError, match="k must be"):
    variants.project_subspace(k=2.5)
  with pytest.raises(ValueError, match="decay"):
    variants.project_ema(decay=-0.1)
  with pytest.raises(ValueError, match="needs the retain gradient"):
    tx = variants.project_after(optax.sgd(0.1))
    tx.update({"a": jnp.ones(2)}, tx.init({"a": jnp.ones(2)}))
