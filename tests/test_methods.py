"""Every unlearning method: one step runs, and its defining property holds.

A tiny CNN (8x8 inputs, 5 classes) on random data (:mod:`method_helpers`);
properties are checked against independent computations (NumPy,
``jax.grad`` of the plain losses). OEU and its ablations: ``test_oeu.py``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import method_helpers as mh
import numpy as np
import optax
import pytest

from oeu_jax.algorithm import losses
from oeu_jax.algorithm import methods
from oeu_jax.engine import unlearn
from oeu_jax.nn import models

K, NF, NR = mh.K, mh.NF, mh.NR


@pytest.fixture(scope="module")
def setup():
  return mh.tiny_setup()


_ALL = [m for m in methods.METHODS if m != "retrain"]


@pytest.mark.parametrize("name", _ALL)
def test_every_method_runs_quantized(name):
  """Shapes, dtypes and finiteness after a short W4A8 run of each method."""
  model = models.build_model("cnn", num_classes=K, bits="w4a8",
                             features=(4, 8), hidden=16)
  params, bs = models.init_model(model, jax.random.key(1), (8, 8, 1))
  rng = np.random.default_rng(1)
  x = rng.random((24, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, K, 24).astype(np.int32)
  data = unlearn.make_data(x, y, np.arange(8), np.arange(8, 24))
  hp = {"epochs": 1} if name == "l1_sparse" else {}
  method = methods.build_method(name, model, **hp)
  cfg = unlearn.UnlearnConfig(epochs=1, batch_size=8, lr=0.01)
  res = unlearn.unlearn(method, model, params, bs, data, config=cfg,
                        num_classes=K, seed=0)
  # Paired: max(1, 2) steps; forget-only 1; retain-only 2; sequential 3.
  want = {"paired": 2, "forget_only": 1, "retain_only": 2, "sequential": 3}
  assert int(res.state.step) == want[method.schedule]
  out = res.state.params
  assert jax.tree.structure(out) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(params)):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.all(np.isfinite(np.asarray(a)))
  assert not np.array_equal(mh.flat(out), mh.flat(params))
  assert all(np.isfinite(v) for v in res.metrics.values())


def test_ga_increases_forget_cross_entropy(setup):
  model, params, bs, data = setup
  method = methods.build_method("ga", model)
  cfg = unlearn.UnlearnConfig(epochs=1, batch_size=NF, lr=0.01)
  res = unlearn.unlearn(method, model, params, bs, data, config=cfg,
                        num_classes=K)
  before = mh.ce(model, params, bs, data.forget_x, data.forget_y)
  after = mh.ce(model, res.state.params, bs, data.forget_x, data.forget_y)
  assert float(after) > float(before)


def test_rl_labels_wrong_and_uniform(setup):
  model, params, bs, _ = setup
  n = 20000
  y = np.random.default_rng(3).integers(0, K, n).astype(np.int32)
  inputs = methods.PrepareInputs(
      model, params, bs, jnp.zeros((n, 8, 8, 1)), jnp.asarray(y),
      jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,), jnp.int32), K, 1,
      jax.random.PRNGKey(7), 1)
  labels = np.asarray(methods.build_method("rl", model).prepare(
      inputs)["labels"])
  assert labels.shape == (n,) and labels.dtype == np.int32
  assert np.all(labels != y)
  # Per true class, the K-1 wrong classes are equally likely.
  for c in range(K):
    counts = np.bincount(labels[y == c], minlength=K)
    assert counts[c] == 0
    wrong = counts[np.arange(K) != c]
    expected = wrong.sum() / (K - 1)
    chi2 = np.sum((wrong - expected) ** 2 / expected)
    assert chi2 < 20.0  # chi^2 with 3 dof: P(> 20) < 2e-4.
  # Per-step resampling: also never the true label.
  fresh = methods.random_wrong_labels(jax.random.PRNGKey(1), y, K)
  assert np.all(np.asarray(fresh) != y)
  # Labels come from the prepare rng: same key, same labels.
  again = methods.build_method("rl", model).prepare(inputs)["labels"]
  np.testing.assert_array_equal(labels, np.asarray(again))


def test_rl_step_uses_relabelled_forget_batch(setup):
  model, params, bs, data = setup
  method = methods.build_method("rl", model)
  ms = method.prepare(mh.prepare_inputs(model, params, bs, data))
  fb, rb = mh.batches(data, np.arange(8), np.arange(8))
  out = jax.jit(method.grads)(params, bs, ms, fb, rb, jax.random.PRNGKey(0), 0)
  want = mh.jgrad(lambda p: mh.ce(model, p, bs, fb.x, ms["labels"][fb.idx])
                  + mh.ce(model, p, bs, rb.x, rb.y))(params)
  mh.assert_trees_close(out.grads, want, rtol=1e-5, atol=1e-6)


def test_neggrad_plus_gradient(setup):
  model, params, bs, data = setup
  beta = 0.9
  method = methods.build_method("neggrad_plus", model, beta=beta)
  fb, rb = mh.batches(data, np.arange(8), np.arange(8))
  out = jax.jit(method.grads)(params, bs, {}, fb, rb, jax.random.PRNGKey(0), 0)
  want = mh.jgrad(lambda p: beta * mh.ce(model, p, bs, rb.x, rb.y)
                  - (1 - beta) * mh.ce(model, p, bs, fb.x, fb.y))(params)
  mh.assert_trees_close(out.grads, want, rtol=1e-5, atol=1e-6)
  assert methods.NegGradPlusConfig().beta == 0.999


def test_l1_sparse_coefficient_and_gradient(setup):
  model, params, bs, data = setup
  cfg = methods.L1SparseConfig(alpha=1e-2, epochs=4)
  spe, epochs = jnp.int32(3), jnp.int32(4)
  coefs = [float(methods.l1_coefficient(jnp.int32(s), spe, epochs, cfg))
           for s in range(14)]
  want = [1e-2 * (1 - (s // 3) / 4) if s < 12 else 0.0 for s in range(14)]
  np.testing.assert_allclose(coefs, want, rtol=1e-6, atol=1e-12)
  method = methods.build_method("l1_sparse", model, alpha=1e-2, epochs=4)
  ms = method.prepare(mh.prepare_inputs(model, params, bs, data, spe=3))
  fb, rb = mh.batches(data, np.arange(8), np.arange(8))
  out = jax.jit(method.grads)(params, bs, ms, fb, rb, jax.random.PRNGKey(0),
                     jnp.int32(4))
  g_ce = mh.jgrad(lambda p: mh.ce(model, p, bs, rb.x, rb.y))(params)
  want = jax.tree.map(lambda g, p: g + 1e-2 * 0.75 * jnp.sign(p), g_ce,
                      params)
  mh.assert_trees_close(out.grads, want, rtol=1e-5, atol=1e-7)
  # Without explicit epochs the decay spans the loop's total steps.
  ms = methods.build_method("l1_sparse", model).prepare(
      mh.prepare_inputs(model, params, bs, data, spe=4))
  assert int(ms["epochs"]) == 10 and int(ms["steps_per_epoch"]) == 4


def test_salun_mask_is_top_half_of_forget_gradient(setup):
  model, params, bs, data = setup
  method = methods.build_method("salun", model)
  ms = method.prepare(mh.prepare_inputs(model, params, bs, data))

  def full_ce(p):
    logits, _ = models.apply_model(model, p, bs, data.forget_x, train=False)
    return losses.mean_cross_entropy(logits, data.forget_y)

  g = np.abs(mh.flat(mh.jgrad(full_ce)(params)))
  mask = mh.flat(ms["mask"]).astype(bool)
  assert mask.sum() == round(0.5 * mask.size)
  assert g[mask].min() >= g[~mask].max() - 1e-7


def test_salun_freezes_masked_weights_bit_identically(setup):
  """Masked weights stay bit-identical through SGD momentum + weight decay."""
  model, params, bs, data = setup
  opt = methods.OptimizerConfig(name="sgd", momentum=0.9, weight_decay=5e-2)
  method = methods.build_method("salun", model, optimizer=opt)
  cfg = unlearn.UnlearnConfig(epochs=3, batch_size=8, lr=0.1)
  res = unlearn.unlearn(method, model, params, bs, data, config=cfg,
                        num_classes=K)
  # Sequential (SalUn's RL): a D_f pass (2 batches) and a D_r pass (4).
  assert int(res.state.step) == 3 * (2 + 4)
  mask = mh.flat(res.state.method_state["mask"]).astype(bool)
  before, after = mh.flat(params), mh.flat(res.state.params)
  np.testing.assert_array_equal(after[~mask], before[~mask])
  assert np.mean(after[mask] != before[mask]) > 0.9
  # The public code's order (mask the gradient, then SGD with weight decay
  # and momentum) moves the masked weights: the last transform is needed.
  tx = methods.make_optimizer(optax.constant_schedule(0.1), opt)
  fb, rb = mh.batches(data, np.arange(8), np.arange(8))
  out = jax.jit(method.grads)(params, bs, res.state.method_state, fb, rb,
                     jax.random.PRNGKey(0), 0)
  updates, _ = tx.update(out.grads, tx.init(params), params)
  assert np.any(mh.flat(updates)[~mask] != 0)


def test_qmul_similar_label_matches_numpy(setup):
  model, params, bs, data = setup
  ms = methods.build_method("qmul", model).prepare(
      mh.prepare_inputs(model, params, bs, data))
  logits, _ = models.apply_model(model, params, bs, data.forget_x,
                                 train=False)
  p = np.array(jax.nn.softmax(np.asarray(logits, np.float64), axis=-1))
  y = np.asarray(data.forget_y)
  p[np.arange(len(y)), y] = -1.0
  np.testing.assert_array_equal(np.asarray(ms["labels"]), p.argmax(-1))
  assert np.all(np.asarray(ms["labels"]) != y)
  # Closed form: the runner-up when the true class is the top one, and the
  # top one otherwise.
  lg = jnp.array([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [0.0, 0.0, 5.0]])
  np.testing.assert_array_equal(
      methods.similar_labels(lg, jnp.array([0, 2, 2])), [1, 1, 0])


def test_qmul_weights_match_independent_gradient_norms(setup):
  """w_f = G_r/(G_f+G_r), w_r = G_f/(G_f+G_r), G = epoch-mean grad norms."""
  model, params, bs, data = setup
  opt = methods.OptimizerConfig(momentum=0.0, weight_decay=0.0)
  method = methods.build_method("qmul", model, optimizer=opt)
  cfg = unlearn.UnlearnConfig(epochs=2, batch_size=8, lr=0.05,
                              schedule="paired")
  state, tx = unlearn.init_state(method, model, params, bs, data, config=cfg,
                                 num_classes=K, seed=0)
  step_fn = jax.jit(unlearn.make_step(method, tx))
  spe = unlearn.steps_per_epoch(NF, NR, cfg)
  labels = state.method_state["labels"]

  @jax.jit
  def both_grads(p, fi, ri):
    fb, rb = mh.batches(data, fi, ri)
    gf = jax.grad(lambda q: mh.ce(model, q, bs, fb.x, labels[fb.idx]))(p)
    gr = jax.grad(lambda q: mh.ce(model, q, bs, rb.x, rb.y))(p)
    return gf, gr

  def norms(p, fi, ri):
    gf, gr = both_grads(p, fi, ri)
    return np.linalg.norm(mh.flat(gf)), np.linalg.norm(mh.flat(gr)), gf, gr

  grads_fn = jax.jit(method.grads)
  used, independent = [], []
  for s in range(2 * spe):
    fi, ri = unlearn.step_indices(NF, NR, cfg, 0, s)
    nf, nr, gf, gr = norms(state.params, fi, ri)
    independent.append((nf, nr))
    fb, rb = mh.batches(data, fi, ri)
    out = grads_fn(state.params, state.batch_stats, state.method_state,
                   fb, rb, jax.random.PRNGKey(0), jnp.int32(s))
    w = np.asarray([out.metrics["w_f"], out.metrics["w_r"]], np.float64)
    used.append(w)
    mh.assert_trees_close(out.grads, jax.tree.map(
        lambda a, b: w[0] * a + w[1] * b, gf, gr), rtol=1e-4, atol=1e-6)
    state, _ = step_fn(state, *data, jnp.asarray(fi), jnp.asarray(ri))
  independent = np.asarray(independent)
  # First epoch: the norms at step 0.
  g0f, g0r = independent[0]
  np.testing.assert_allclose(used[0], [g0r / (g0f + g0r), g0f / (g0f + g0r)],
                             rtol=1e-4)
  np.testing.assert_allclose(used[spe - 1], used[0], rtol=1e-6)
  # Second epoch: the means over the first.
  gf, gr = independent[:spe].mean(axis=0)
  for s in range(spe, 2 * spe):
    np.testing.assert_allclose(used[s], [gr / (gf + gr), gf / (gf + gr)],
                               rtol=1e-4)
  np.testing.assert_allclose(np.sum(used, axis=1), 1.0, rtol=1e-6)
  # After the last epoch the weights hold the second epoch's means.
  gf, gr = independent[spe:].mean(axis=0)
  np.testing.assert_allclose(state.method_state["weights"],
                             [gr / (gf + gr), gf / (gf + gr)], rtol=1e-4)


def test_qmul_equal_first_epoch_and_zero_guard():
  np.testing.assert_allclose(methods.qmul_weights(jnp.float32(0),
                                                  jnp.float32(0)), [0.5, 0.5])
  np.testing.assert_allclose(methods.qmul_weights(jnp.float32(1),
                                                  jnp.float32(3)),
                             [0.75, 0.25])


def test_scrub_max_step_raises_kl_to_teacher(setup):
  model, params, bs, data = setup
  method = methods.build_method("scrub", model)
  ms = method.prepare(mh.prepare_inputs(model, params, bs, data, spe=4))
  # At the teacher itself KL and its gradient are 0; start from a student
  # moved away from it, as after SCRUB's first min step.
  noise = jax.tree.map(
      lambda p: 0.05 * jax.random.normal(jax.random.key(5), p.shape), params)
  student = jax.tree.map(jnp.add, params, noise)
  fb, rb = mh.batches(data, np.arange(NF), np.arange(8))

  @jax.jit
  def kl(p):
    s, _ = models.apply_model(model, p, bs, data.forget_x, train=False)
    t, _ = models.apply_model(model, params, bs, data.forget_x, train=False)
    return jnp.mean(losses.kl_divergence(s, t))

  def kl_f(p):
    return float(kl(p))

  out = jax.jit(method.grads)(student, bs, ms, fb, rb, jax.random.PRNGKey(0),
                     jnp.int32(0))
  assert float(out.metrics["max_step"]) == 1.0
  moved = jax.tree.map(lambda p, g: p - 0.5 * g, student, out.grads)
  assert kl_f(moved) > kl_f(student) > 0.0
  # Odd steps are min steps; after msteps=2 epochs every step is a min step.
  sched = [bool(methods.scrub_is_max_step(jnp.int32(s), jnp.int32(4), 2))
           for s in range(12)]
  assert sched == [True, False] * 4 + [False] * 4
  out = jax.jit(method.grads)(student, bs, ms, fb, rb, jax.random.PRNGKey(0),
                     jnp.int32(1))
  want = mh.jgrad(lambda p: 0.99 * mh.ce(model, p, bs, rb.x, rb.y)
                  + 0.001 * methods.distill_kl(
                      models.apply_model(model, p, bs, rb.x, train=True)[0],
                      models.apply_model(model, params, bs, rb.x,
                                         train=False)[0], 4.0))(student)
  mh.assert_trees_close(out.grads, want, rtol=1e-4, atol=1e-7)


def test_build_method_errors(setup):
  model = setup[0]
  with pytest.raises(ValueError, match="valid"):
    methods.build_method("nope", model)
  with pytest.raises(ValueError, match="bad hyperparameters"):
    methods.build_method("qmul", model, nonsense=1)
  with pytest.raises(ValueError, match="fixes"):
    methods.build_method("oeu_no_proj", model, project=True)
  with pytest.raises(ValueError, match="first_epoch"):
    methods.build_method("qmul", model, first_epoch="later")
  for name in methods.HPARAM_DEFAULTS:
    assert isinstance(methods.default_hparams(name), dict)
  assert set(methods.HPARAM_DEFAULTS) == set(_ALL)
  with pytest.raises(ValueError, match="bad hyperparameters"):
    methods.build_method("ft", model, alpha=1.0)


def test_registry_is_the_one_table():
  """METHODS, HPARAM_DEFAULTS and default_hparams all come from REGISTRY."""
  assert methods.METHODS == tuple(methods.REGISTRY) + ("retrain",)
  for name, spec in methods.REGISTRY.items():
    assert methods.HPARAM_DEFAULTS[name] is spec.config
    hp = methods.default_hparams(name)
    if spec.config is None:
      assert hp == {} and not spec.pinned
    else:
      fields = {f.name for f in dataclasses.fields(spec.config)}
      assert set(spec.pinned) <= fields and set(hp) == fields
      assert all(hp[k] == v for k, v in spec.pinned.items())
    free = {k: v for k, v in hp.items() if k not in spec.pinned}
    assert methods.build_method(name, None, **free).name == name
