"""OEU and its ablations: the projection is the only difference.

Same tiny CNN as ``test_methods.py`` (:mod:`method_helpers`); the applied
direction is checked against ``transforms.project_pytree`` and ``jax.grad``
of the plain losses.
"""

import jax
import jax.numpy as jnp
import method_helpers as mh
import numpy as np
import optax
import pytest

from oeu_jax.algorithm import losses
from oeu_jax.algorithm import methods
from oeu_jax.algorithm import transforms
from oeu_jax.nn import models


@pytest.fixture(scope="module")
def setup():
  return mh.tiny_setup()


@pytest.mark.parametrize("pair", [("oeu", "oeu_no_proj"),
                                  ("rl_proj", None), ("sl_proj", None)])
def test_projection_is_the_only_difference(setup, pair):
  """Same g_f and g_r; the applied direction differs by project_pytree."""
  model, params, bs, data = setup
  name, twin = pair
  opt = methods.OptimizerConfig(momentum=0.0, weight_decay=0.0)
  method = methods.build_method(name, model, optimizer=opt)
  ms = method.prepare(mh.prepare_inputs(model, params, bs, data))
  fb, rb = mh.batches(data, np.arange(8), np.arange(8))
  out = jax.jit(method.grads)(params, bs, ms, fb, rb, jax.random.PRNGKey(0), 0)
  g_r = mh.jgrad(lambda p: mh.ce(model, p, bs, rb.x, rb.y))(params)
  mh.assert_trees_close(out.extra["reference"], g_r, rtol=1e-5, atol=1e-7)
  if name == "oeu":
    def lf(p):
      logits, _ = models.apply_model(model, p, bs, fb.x, train=True)
      return losses.forget_loss(logits)
  else:
    def lf(p):
      return mh.ce(model, p, bs, fb.x, ms["labels"][fb.idx])
  mh.assert_trees_close(out.grads, mh.jgrad(lf)(params), rtol=1e-5, atol=1e-7)
  sched = optax.constant_schedule(1.0)
  tx = method.make_tx(sched, ms)
  upd, _ = tx.update(out.grads, tx.init(params), params, **out.extra)
  perp = transforms.project_pytree(out.grads, out.extra["reference"])
  want = jax.tree.map(lambda a, b: -(a + b), perp, out.extra["reference"])
  mh.assert_trees_close(upd, want, rtol=1e-5, atol=1e-7)
  if twin is not None:
    other = methods.build_method(twin, model, optimizer=opt)
    out2 = jax.jit(other.grads)(params, bs, {}, fb,
                       rb, jax.random.PRNGKey(0), 0)
    mh.assert_trees_close(out2.grads, out.grads, rtol=0, atol=0)
    mh.assert_trees_close(out2.extra["reference"], out.extra["reference"],
                        rtol=0, atol=0)
    tx2 = other.make_tx(sched, {})
    upd2, _ = tx2.update(out2.grads, tx2.init(params), params, **out2.extra)
    want2 = jax.tree.map(lambda a, b: -(a + b), out.grads,
                         out.extra["reference"])
    mh.assert_trees_close(upd2, want2, rtol=1e-5, atol=1e-7)
    diff = mh.flat(upd2) - mh.flat(upd)
    coeff_dir = mh.flat(out.extra["reference"])
    # The difference is a multiple of g_r: exactly the projected component.
    c = diff @ coeff_dir / (coeff_dir @ coeff_dir)
    np.testing.assert_allclose(diff, c * coeff_dir, atol=1e-5)


def test_oeu_scalar_uses_entropy_and_qmul_weights(setup):
  model, params, bs, data = setup
  method = methods.build_method("oeu_scalar", model)
  ms = method.prepare(mh.prepare_inputs(model, params, bs, data))
  assert "labels" not in ms
  fb, rb = mh.batches(data, np.arange(8), np.arange(8))
  out = jax.jit(method.grads)(params, bs, ms, fb, rb, jax.random.PRNGKey(0),
                     jnp.int32(0))

  def lf(p):
    logits, _ = models.apply_model(model, p, bs, fb.x, train=True)
    return losses.forget_loss(logits)

  gf = mh.jgrad(lf)(params)
  gr = mh.jgrad(lambda p: mh.ce(model, p, bs, rb.x, rb.y))(params)
  nf, nr = np.linalg.norm(mh.flat(gf)), np.linalg.norm(mh.flat(gr))
  wf, wr = nr / (nf + nr), nf / (nf + nr)
  mh.assert_trees_close(out.grads, jax.tree.map(
      lambda a, b: wf * a + wr * b, gf, gr), rtol=1e-4, atol=1e-7)
