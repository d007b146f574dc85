"""Losses against hand formulas and numerical gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from oeu_jax.algorithm import losses


def _np_softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_cross_entropy_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 7)).astype(np.float32)
  labels = rng.integers(0, 7, 5)
  want = -np.log(_np_softmax(logits)[np.arange(5), labels])
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), want,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.mean_cross_entropy(logits, labels),
                             want.mean(), rtol=1e-5)


def test_entropy_matches_numpy_and_bounds():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(6, 10)).astype(np.float32) * 3
  p = _np_softmax(logits)
  want = -(p * np.log(p)).sum(-1)
  np.testing.assert_allclose(losses.entropy(logits), want, rtol=1e-5)
  assert float(losses.entropy(jnp.zeros((1, 10)))[0]) == pytest.approx(
      math.log(10), rel=1e-6)


def test_forget_loss_is_negative_mean_entropy_and_normalized():
  logits = jnp.array([[0., 0., 0., 0.], [10., 0., 0., 0.]])
  h = np.asarray(losses.entropy(logits))
  assert float(losses.forget_loss(logits)) == pytest.approx(-h.mean(), 1e-6)
  assert float(losses.forget_loss(logits, normalize=True)) == pytest.approx(
      -h.mean() / math.log(4), 1e-6)
  # Normalized loss equals KL(p||u)/log K - 1.
  p = _np_softmax(np.asarray(logits))
  kl = (p * np.log(p * 4)).sum(-1).mean()
  assert float(losses.forget_loss(logits, normalize=True)) == pytest.approx(
      kl / math.log(4) - 1, abs=1e-6)


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_are_finite(scale):
  logits = jnp.array([[scale, 0., -scale], [0., 0., scale]])
  labels = jnp.array([2, 0])
  for value in (losses.entropy(logits), losses.cross_entropy(logits, labels),
                jax.grad(lambda z: losses.forget_loss(z))(logits),
                jax.grad(lambda z: losses.mean_cross_entropy(z, labels))(
                    logits)):
    assert np.all(np.isfinite(np.asarray(value)))


def test_bf16_logits():
  logits = jnp.array([[1., 2., 3.]], jnp.bfloat16)
  assert losses.entropy(logits).dtype == jnp.float32
  np.testing.assert_allclose(losses.entropy(logits),
                             losses.entropy(logits.astype(jnp.float32)),
                             rtol=1e-6)


def test_check_grads():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  labels = jnp.array([0, 3, 4])
  check_grads(lambda z: losses.forget_loss(z), (logits,), order=2,
              modes=("rev",), atol=1e-2, rtol=1e-2)
  check_grads(lambda z: losses.mean_cross_entropy(z, labels), (logits,),
              order=2, modes=("rev",), atol=1e-2, rtol=1e-2)


def test_entropy_gradient_points_towards_uniform():
  logits = jnp.array([[3., 0., -1.]])
  g = jax.grad(losses.forget_loss)(logits)
  after = logits - 0.1 * g
  assert float(losses.entropy(after)[0]) > float(losses.entropy(logits)[0])


def test_kl_divergence_matches_numpy():
  rng = np.random.default_rng(3)
  s, t = rng.normal(size=(2, 4, 6)).astype(np.float32)
  p, q = _np_softmax(t), _np_softmax(s)
  np.testing.assert_allclose(losses.kl_divergence(s, t),
                             (p * np.log(p / q)).sum(-1), rtol=1e-4, atol=1e-6)


def test_bad_shapes():
  with pytest.raises(ValueError, match="labels must have shape"):
    losses.cross_entropy(jnp.zeros((3, 4)), jnp.zeros((2,), jnp.int32))
  with pytest.raises(ValueError, match="logits must have shape"):
    losses.entropy(jnp.zeros((4,)))


# Issue 15: masked classes (-inf logits) and extreme bf16 logits.

_MASK = np.array([[True, False, True, True, False],
                  [True, True, True, False, True],
                  [False, True, True, True, True]])


def _masked(logits, dtype=jnp.float32):
  return jnp.where(_MASK, jnp.asarray(logits, dtype), -jnp.inf)


def test_masked_logits_give_the_entropy_of_the_unmasked_classes():
  rng = np.random.default_rng(4)
  z = rng.normal(size=_MASK.shape).astype(np.float32) * 3
  h = np.asarray(losses.entropy(_masked(z)))
  for i in range(len(z)):
    p = _np_softmax(z[i][_MASK[i]])
    assert h[i] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-5)
  assert float(losses.forget_loss(_masked(z))) == pytest.approx(-h.mean(),
                                                                rel=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 1e4, -1e4])
def test_masked_and_extreme_logits_have_finite_gradients(dtype, scale):
  rng = np.random.default_rng(5)
  z = _masked(rng.normal(size=_MASK.shape) * scale, dtype)
  teacher = _masked(rng.normal(size=_MASK.shape), dtype)
  for fn in (lambda x: losses.forget_loss(x),
             lambda x: losses.forget_loss(x, normalize=True),
             lambda x: jnp.mean(losses.entropy(x)),
             lambda x: jnp.mean(losses.kl_divergence(teacher, x)),
             lambda x: jnp.mean(losses.kl_divergence(x, teacher))):
    value, grad = jax.value_and_grad(fn)(z)
    assert np.isfinite(float(value))
    grad = np.asarray(grad, np.float32)
    assert np.isfinite(grad).all()
    assert (grad[~_MASK] == 0).all()  # Masked classes get no gradient.


def test_masking_changes_nothing_for_finite_logits():
  # The mask only touches log p = -inf; finite logits give the same bits
  # as the plain formula -sum(p * log p).
  rng = np.random.default_rng(6)
  z = jnp.asarray(rng.normal(size=(32, 10)) * 5, jnp.float32)

  def plain(x):
    logp = jax.nn.log_softmax(x, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)

  assert np.array_equal(losses.entropy(z), plain(z))
  assert np.array_equal(jax.grad(lambda x: jnp.mean(losses.entropy(x)))(z),
                        jax.grad(lambda x: jnp.mean(plain(x)))(z))
