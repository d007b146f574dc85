"""Numerical safety: non-finite steps, zero retain gradients, extreme logits.

A non-finite step is provoked with one training image of 3e38 (finite, so it
passes input validation, but the forward pass overflows): the loops must stop
with ``FloatingPointError`` naming exactly the first step whose batch holds
it, keep the checkpoint before it restorable, or, with ``skip_nonfinite``,
drop exactly those updates and finish.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from oeu_jax import data
from oeu_jax.algorithm import losses
from oeu_jax.algorithm import methods
from oeu_jax.algorithm import transforms
from oeu_jax.engine import checkpointing
from oeu_jax.engine import train
from oeu_jax.engine import unlearn
from oeu_jax.nn import models

N, BATCH, EPOCHS, POISON = 64, 16, 2, 5


@pytest.fixture(scope="module")
def digits():
  return data.load_dataset("digits", max_examples=N)


@pytest.fixture(scope="module")
def model():
  # Float: the overflow shows at once (W4A8 clips activations first).
  return models.build_model("cnn", num_classes=10, bits="float")


def _poisoned(x, index=POISON):
  x = x.copy()
  x[index] = 3e38
  return x


def _steps_with(index, steps, step_fn):
  """The steps (of ``range(steps)``) whose batch ``step_fn(s)`` has index."""
  return [s for s in range(steps) if index in step_fn(s)]


def _tree_finite(tree):
  return all(np.isfinite(np.asarray(x, np.float32)).all()
             for x in jax.tree.leaves(tree))


def test_training_stops_at_the_bad_step_and_keeps_the_last_checkpoint(
    digits, model, tmp_path):
  cfg = train.TrainConfig(epochs=EPOCHS, batch_size=BATCH, checkpoint_every=1)
  total = EPOCHS * N // BATCH
  bad = _steps_with(POISON, total,
                    lambda s: train.batch_indices(N, BATCH, 0, s))
  assert bad[0] > 0  # So that a checkpoint precedes it.
  with pytest.raises(FloatingPointError) as err:
    train.fit(model, _poisoned(digits.train_x), digits.train_y, config=cfg,
              seed=0, checkpoint_dir=str(tmp_path))
  msg = str(err.value)
  assert f"at training step {bad[0]};" in msg
  assert f"last good checkpoint is step {bad[0]} in {tmp_path}" in msg
  assert checkpointing.latest_step(tmp_path) == bad[0]
  target = train.init_state(model, jax.random.PRNGKey(0),
                            digits.train_x.shape[1:],
                            train.make_optimizer(cfg, total))
  good = checkpointing.restore_checkpoint(tmp_path, target)
  assert int(good.step) == bad[0] and _tree_finite(good)

  # Skipping instead: exactly the poisoned steps are dropped.
  res = train.fit(model, _poisoned(digits.train_x), digits.train_y,
                  config=dataclasses.replace(cfg, skip_nonfinite=True), seed=0)
  assert res.skipped_steps == len(bad) >= 1
  assert int(res.state.step) == total and _tree_finite(res.state)
  np.testing.assert_array_equal(np.flatnonzero(~np.isfinite(res.losses)), bad)


def test_training_without_a_checkpoint_dir_says_so(digits, model):
  cfg = train.TrainConfig(epochs=1, batch_size=BATCH)
  with pytest.raises(FloatingPointError,
                     match=r"at training step \d+ \(no checkpoint directory"):
    train.fit(model, _poisoned(digits.train_x), digits.train_y, config=cfg,
              seed=0)


def test_skipped_step_leaves_the_state_unchanged(digits, model):
  cfg = train.TrainConfig(epochs=1, batch_size=BATCH, skip_nonfinite=True)
  tx = train.make_optimizer(cfg, 4)
  state = train.init_state(model, jax.random.PRNGKey(0),
                           digits.train_x.shape[1:], tx)
  step = jax.jit(train.make_train_step(model, tx, skip_nonfinite=True))
  x = jnp.asarray(_poisoned(digits.train_x))
  new, m = step(state, x, jnp.asarray(digits.train_y),
                jnp.arange(BATCH, dtype=jnp.int32))
  assert not bool(m["finite"])
  assert int(new.step) == int(state.step) + 1
  for a, b in zip(jax.tree.leaves(new._replace(step=state.step)),
                  jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)


def test_unlearning_stops_at_the_bad_step_or_skips_it(digits, model,
                                                      tmp_path):
  params, batch_stats = models.init_model(model, jax.random.PRNGKey(1),
                                          digits.train_x.shape[1:])
  forget, retain = np.arange(0, 16), np.arange(16, N)
  cfg = unlearn.UnlearnConfig(epochs=2, batch_size=8, checkpoint_every=1)
  total = 2 * unlearn.steps_per_epoch(16, N - 16, cfg)
  batches = [unlearn.step_indices(16, N - 16, cfg, 0, s)[0]
             for s in range(total)]
  poison = min(set(range(16)) - set(batches[0]))  # Not in the first batch.
  bad = [s for s, b in enumerate(batches) if poison in b]
  udata = unlearn.make_data(_poisoned(digits.train_x, poison),
                            digits.train_y, forget, retain)
  method = methods.build_method("oeu", model)
  with pytest.raises(FloatingPointError) as err:
    unlearn.unlearn(method, model, params, batch_stats, udata, config=cfg,
                    num_classes=10, checkpoint_dir=str(tmp_path))
  assert f"at unlearning step {bad[0]};" in str(err.value)
  assert str(tmp_path) in str(err.value)
  assert checkpointing.latest_step(tmp_path) == bad[0]

  res = unlearn.unlearn(method, model, params, batch_stats, udata,
                        config=unlearn.UnlearnConfig(
                            epochs=2, batch_size=8, skip_nonfinite=True),
                        num_classes=10)
  assert res.metrics["skipped_steps"] == len(bad)
  assert int(res.state.step) == total and _tree_finite(res.state.params)
  assert all(np.isfinite(v) for v in res.metrics.values())


@pytest.mark.parametrize("bad,pattern", [
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan,
                            x), y), "non-finite values"),
    (lambda x, y: (x[..., 0], y), r"shape \(N, H, W, C\)"),
    (lambda x, y: (x, y[:-1]), "counts must match"),
    (lambda x, y: (x, y.astype(np.float32)), "labels must be integers"),
    (lambda x, y: (x, np.where(y == y[0], 10, y)), r"label 10 out of range"),
    (lambda x, y: (x[:0], y[:0]), "non-empty training set"),
])
def test_bad_arrays_are_refused_before_training(digits, model, bad, pattern):
  x, y = bad(digits.train_x, digits.train_y)
  with pytest.raises(ValueError, match=pattern):
    train.fit(model, x, y, config=train.TrainConfig(epochs=1), seed=0)


def test_bad_unlearning_data_is_refused(digits):
  x, y = digits.train_x, digits.train_y
  with pytest.raises(ValueError, match="non-empty"):
    unlearn.make_data(x, y, np.arange(0), np.arange(N))
  with pytest.raises(ValueError, match=r"forget_idx must be 1-D integer"):
    unlearn.make_data(x, y, np.array([N]), np.arange(N - 1))
  with pytest.raises(ValueError, match="overlap"):
    unlearn.make_data(x, y, np.arange(3), np.arange(2, N))
  with pytest.raises(ValueError, match="non-finite"):
    unlearn.make_data(np.full_like(x, np.inf), y, np.arange(3),
                      np.arange(3, N))


def test_bad_loop_configs():
  with pytest.raises(ValueError, match="checkpoint_every"):
    train.validate_config(train.TrainConfig(checkpoint_every=0))
  with pytest.raises(ValueError, match="checkpoint_every"):
    unlearn.validate_config(unlearn.UnlearnConfig(checkpoint_every=-1))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_zero_retain_gradient_passes_through(dtype):
  g = {"w": jnp.asarray([[1., -2.], [3., 0.5]], dtype),
       "b": jnp.asarray([0.25, -4.], dtype)}
  zero = jax.tree.map(jnp.zeros_like, g)
  for eps in (0.0, 1e-12):
    tx = transforms.project_orthogonal(eps=eps)
    out, _ = jax.jit(lambda u: tx.update(u, tx.init(g), reference=zero))(g)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(g)):
      assert a.dtype == dtype
      np.testing.assert_array_equal(a, b)
  # The whole OEU direction then is the forget gradient alone (+ 0 * g_r).
  tx = optax.chain(transforms.oeu_direction(), optax.sgd(0.1))
  out, _ = jax.jit(lambda u: tx.update(u, tx.init(g), g, reference=zero))(g)
  want = jax.tree.map(lambda b: -0.1 * np.asarray(b, np.float32), g)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=1e-2)


@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1e12])
def test_tiny_and_large_retain_gradients_stay_finite(scale):
  rng = np.random.default_rng(0)
  g = jnp.asarray(rng.normal(size=(64,)), jnp.float32)
  r = jnp.asarray(rng.normal(size=(64,)) * scale, jnp.float32)
  out = transforms.project_pytree(g, r)
  assert np.isfinite(np.asarray(out)).all()
  assert np.linalg.norm(out) <= np.linalg.norm(g) * (1 + 1e-6)


def _np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_extreme_logits_match_a_float64_reference(dtype):
  logits = jnp.asarray([[1e4, 0., -1e4, 3.], [-1e4, -1e4, -1e4, -1e4],
                        [1e4, 1e4, -1e4, 0.], [0.5, -0.25, 1., 2.]], dtype)
  labels = jnp.asarray([2, 1, 0, 3])
  logp = _np_log_softmax(np.asarray(logits, np.float32))
  want_ce = -logp[np.arange(4), np.asarray(labels)]
  want_h = -(np.exp(logp) * logp).sum(-1)
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), want_ce,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(losses.entropy(logits), want_h, rtol=1e-5,
                             atol=1e-6)
  for f in (lambda z: losses.forget_loss(z, normalize=True),
            lambda z: losses.mean_cross_entropy(z, labels)):
    value, grad = jax.value_and_grad(f)(logits)
    assert np.isfinite(float(value))
    assert grad.dtype == dtype
    assert np.isfinite(np.asarray(grad, np.float32)).all()
