"""The first-order measurement (experiments/first_order.py) on a toy problem.

A linear softmax classifier on random data is smooth, so one plain SGD
step along ``g_f_perp`` must change the retain loss by ``O(eta^2)`` (log-log
slope about 2) and one along ``g_f`` by ``O(eta)`` (slope about 1); the
forget loss falls linearly along both. ``post`` (the optimizer's output
projected) must restore the second order that momentum breaks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import first_order
from oeu_jax.algorithm import losses

ETAS = tuple(float(v) for v in np.logspace(-2.5, -1.0, 6))


@pytest.fixture(scope="module")
def toy():
  rng = np.random.default_rng(0)
  d, k = 6, 4
  params = {"w": jnp.asarray(rng.normal(size=(d, k)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(k,)), jnp.float32)}
  xr = jnp.asarray(rng.normal(size=(64, d)), jnp.float32)
  yr = jnp.asarray(rng.integers(0, k, 64), jnp.int32)
  xf = jnp.asarray(rng.normal(size=(16, d)) + 1.0, jnp.float32)

  def logits(p, x):
    return x @ p["w"] + p["b"]

  l_r = jax.jit(lambda p: losses.mean_cross_entropy(logits(p, xr), yr))
  l_f = jax.jit(lambda p: losses.forget_loss(logits(p, xf)))
  g_r, g_f = jax.grad(l_r)(params), jax.grad(l_f)(params)
  warm = []
  for i in range(5):
    idx = rng.choice(64, 32, replace=False)
    sub = jax.grad(lambda p, i=idx: losses.mean_cross_entropy(
        logits(p, xr[i]), yr[i]))(params)
    warm.append((jax.tree.map(lambda a, s=i: a * (1 + 0.1 * s), g_f), sub))
  return {"L_r": l_r, "L_f": l_f}, params, g_f, g_r, warm


def test_projected_step_is_second_order_in_eta_with_plain_sgd(toy):
  fns, params, g_f, g_r, _ = toy
  out = first_order.one_step(fns, params, g_f, g_r, optimizer="sgd",
                             etas=ETAS)
  assert set(out) == {"g_f", "g_f_perp"}
  perp = first_order.loglog_slope(ETAS, out["g_f_perp"]["L_r"])
  plain = first_order.loglog_slope(ETAS, out["g_f"]["L_r"])
  assert 1.8 < perp < 2.2, perp
  assert 0.8 < plain < 1.25, plain
  # The forget loss falls to first order along both.
  for arm in ("g_f", "g_f_perp"):
    assert all(v < 0 for v in out[arm]["L_f"])
    assert 0.8 < first_order.loglog_slope(ETAS, out[arm]["L_f"]) < 1.25


def test_momentum_breaks_it_and_post_restores_it(toy):
  fns, params, g_f, g_r, warm = toy
  out = first_order.one_step(fns, params, g_f, g_r, optimizer="momentum",
                             etas=ETAS, warm=tuple(warm))
  assert first_order.loglog_slope(ETAS, out["g_f_perp"]["L_r"]) < 1.4
  assert 1.8 < first_order.loglog_slope(ETAS, out["post"]["L_r"]) < 2.2


def test_loglog_slope_and_bad_optimizer():
  e = np.logspace(-3, -1, 5)
  assert first_order.loglog_slope(e, 3 * e ** 2) == pytest.approx(2.0)
  assert first_order.loglog_slope(e, -e) == pytest.approx(1.0)
  assert np.isnan(first_order.loglog_slope(e, np.zeros(5)))
  with pytest.raises(ValueError, match="optimizer must be one of"):
    first_order.make_optimizer("rmsprop", 0.1)
