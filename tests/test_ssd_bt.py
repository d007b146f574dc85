"""SSD and Bad Teacher against NumPy re-implementations of their references.

A two-layer MLP (no BatchNorm, so train and eval mode agree) whose
gradients NumPy computes by hand; the reference arithmetic is written out
again in NumPy from the reference code (``ssd.py`` of
if-loops/selective-synaptic-dampening, ``unlearn.py`` of
vikram2000b/bad-teaching-unlearning; commits in experiments/REFERENCES.md).
Then both run through :func:`oeu_jax.engine.unlearn.unlearn` on digits.
"""

import doctest
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import protocol
from experiments import tune
from experiments import tune_report
from oeu_jax import data as data_lib
from oeu_jax.algorithm import methods
from oeu_jax.algorithm.methods.ssd import importance_fn
from oeu_jax.engine import unlearn
from oeu_jax.nn import models

K, H = 4, 8


class MLP(nn.Module):
  """``relu(x W1 + b1) W2 + b2`` on flattened images."""
  hidden: int = H
  num_classes: int = K

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(x.reshape(len(x), -1)))
    return nn.Dense(self.num_classes, name="head")(h)


def np_params(params):
  return {k: {n: np.asarray(v, np.float64) for n, v in d.items()}
          for k, d in params.items()}


def np_forward(p, x):
  x = x.reshape(len(x), -1).astype(np.float64)
  h = np.maximum(x @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0.0)
  return x, h, h @ p["head"]["kernel"] + p["head"]["bias"]


def np_backward(p, x, h, dlogits):
  """Gradients of the MLP's parameters given ``dL/dlogits``."""
  dh = (dlogits @ p["head"]["kernel"].T) * (h > 0)
  return {"head": {"kernel": h.T @ dlogits, "bias": dlogits.sum(0)},
          "hidden": {"kernel": x.T @ dh, "bias": dh.sum(0)}}


def np_softmax(z):
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def np_tree(fn, *trees):
  return {k: {n: fn(*(t[k][n] for t in trees)) for n in trees[0][k]}
          for k in trees[0]}


def np_importance(p, x, y, batch_size):
  """SSD ``calc_importance``: mean over batches of squared batch-mean CE
  gradients (consecutive batches, the last one partial)."""
  total, count = None, 0
  for i in range(0, len(x), batch_size):
    xf, h, logits = np_forward(p, x[i:i + batch_size])
    onehot = np.eye(K)[y[i:i + batch_size]]
    g = np_backward(p, xf, h, (np_softmax(logits) - onehot) / len(xf))
    sq = np_tree(np.square, g)
    total = sq if total is None else np_tree(np.add, total, sq)
    count += 1
  return np_tree(lambda t: t / count, total)


def np_factor(imp_f, imp_d, alpha, lam):
  """SSD ``modify_weight``'s multiplier (exponent 1, lower bound 1)."""

  def one(f, d):
    sel = f > d * alpha
    return np.where(sel, np.minimum((d * lam) / np.where(sel, f, 1.0), 1.0),
                    1.0)

  return np_tree(one, imp_f, imp_d)


@pytest.fixture(scope="module")
def tiny():
  model = MLP()
  params, bs = models.init_model(model, jax.random.key(0), (2, 2, 3))
  rng = np.random.default_rng(0)
  # D ten times D_f and more: at alpha 10, I_Df > alpha I_D needs it.
  nf, nr = 6, 110
  x = rng.normal(size=(nf + nr, 2, 2, 3)).astype(np.float32)
  y = rng.integers(0, K, nf + nr).astype(np.int32)
  # A distinctive D_f, so that some weights matter to it alone.
  x[:nf] += 1.5
  y[:nf] = 0
  data = unlearn.make_data(x, y, np.arange(nf), np.arange(nf, nf + nr))
  return model, params, bs, data


def _inputs(model, params, bs, data, seed=0):
  return methods.PrepareInputs(model, params, bs, *data, K, 1,
                               jax.random.PRNGKey(seed), 1)


def test_ssd_importances_match_numpy(tiny):
  model, params, bs, d = tiny
  imp = importance_fn(model)
  p = np_params(params)
  fx, fy, rx, ry = (np.asarray(a) for a in d)
  got_f = imp(params, bs, [(d.forget_x, d.forget_y)], 4)
  # Batches of 4 over D_r then D_f: batch 27 straddles the two sets.
  got_d = imp(params, bs, [(d.retain_x, d.retain_y),
                           (d.forget_x, d.forget_y)], 4)
  want_f = np_importance(p, fx, fy, 4)
  want_d = np_importance(p, np.concatenate([rx, fx]),
                         np.concatenate([ry, fy]), 4)
  for got, want in ((got_f, want_f), (got_d, want_d)):
    for k in want:
      for n in want[k]:
        np.testing.assert_allclose(np.asarray(got[k][n]), want[k][n],
                                   rtol=2e-4, atol=1e-9)


@pytest.mark.parametrize("alpha,lam", [(2.0, 0.5), (10.0, 1.0)])
def test_ssd_dampened_weights_match_numpy(tiny, alpha, lam):
  model, params, bs, d = tiny
  method = methods.build_method("ssd", model, alpha=alpha, lam=lam,
                                batch_size=4)
  # Two epochs: the first step dampens, the second is the identity.
  cfg = unlearn.UnlearnConfig(epochs=2, batch_size=8)
  res = unlearn.unlearn(method, model, params, bs, d, config=cfg,
                        num_classes=K)
  assert int(res.state.step) == 2
  p = np_params(params)
  fx, fy, rx, ry = (np.asarray(a) for a in d)
  imp_f = np_importance(p, fx, fy, 4)
  imp_d = np_importance(p, np.concatenate([rx, fx]),
                        np.concatenate([ry, fy]), 4)
  factor = np_factor(imp_f, imp_d, alpha, lam)
  dampened, total = 0, sum(v.size for v in jax.tree.leaves(params))
  for k in factor:
    for n in factor[k]:
      got = np.asarray(res.state.params[k][n])
      np.testing.assert_allclose(got, p[k][n] * factor[k][n], rtol=1e-5,
                                 atol=1e-7)
      kept = factor[k][n] == 1.0
      # Weights SSD does not select stay bit-identical.
      np.testing.assert_array_equal(got[kept],
                                    np.asarray(params[k][n])[kept])
      dampened += int((~kept).sum())
  assert 0 < dampened < total
  assert res.metrics["dampened"] == pytest.approx(dampened / total)


def test_dampening_factor_guards_zero_importance():
  f = methods.dampening_factor(jnp.array([0.0, 3.0, 1e-30]),
                               jnp.array([0.0, 0.0, 0.0]), alpha=10.0,
                               lam=1.0)
  assert f.tolist() == [1.0, 0.0, 0.0]


def np_bad_teacher(p, p_rand, p_orig, fx, rx, weights, temperature,
                   reduction):
  """BAD ``UnlearnerLoss`` with row weights, and its gradient."""
  x = np.concatenate([fx, rx])
  is_f = (np.arange(len(x)) < len(fx))[:, None]
  xf, h, s = np_forward(p, x)
  teacher = np.where(is_f, np_softmax(np_forward(p_rand, x)[2] / temperature),
                     np_softmax(np_forward(p_orig, x)[2] / temperature))
  log_s = np.log(np_softmax(s / temperature))
  scale = K if reduction == "mean" else 1
  w = weights[:, None] / scale
  loss = np.sum(w * teacher * (np.log(teacher) - log_s))
  dlogits = w * (np_softmax(s / temperature) - teacher) / temperature
  return loss, np_backward(p, xf, h, dlogits)


@pytest.mark.parametrize("hp", [
    {}, {"retain_fraction": None}, {"temperature": 4.0,
                                    "reduction": "batchmean"}])
def test_bad_teacher_loss_and_sgd_step_match_numpy(tiny, hp):
  model, params, bs, d = tiny
  method = methods.build_method("bad_teacher", model, **hp)
  cfg = methods.BadTeacherConfig(**hp)
  cfg_u = unlearn.UnlearnConfig(epochs=1, batch_size=8, lr=0.05)
  state, tx = unlearn.init_state(method, model, params, bs, d, config=cfg_u,
                                 num_classes=K, seed=3)
  fi, ri = np.array([1, 3, 5]), np.array([0, 2, 5, 9, 11])
  step = unlearn.make_step(method, tx)
  new, metrics = step(state, *d, jnp.asarray(fi), jnp.asarray(ri))
  p = np_params(params)
  p_rand = np_params(state.method_state["random_params"])
  nf, nr = len(d.forget_y), len(d.retain_y)
  if cfg.retain_fraction is None:
    weights = np.full(8, 1 / 8)
  else:
    phi = nf / (nf + int(cfg.retain_fraction * nr))
    weights = np.array([phi / 3] * 3 + [(1 - phi) / 5] * 5)
  loss, g = np_bad_teacher(p, p_rand, p, np.asarray(d.forget_x)[fi],
                           np.asarray(d.retain_x)[ri], weights,
                           cfg.temperature, cfg.reduction)
  assert float(metrics["distill_loss"]) == pytest.approx(loss, rel=1e-4)
  # PyTorch-style SGD's first step (momentum buffer = g + wd * p).
  want = np_tree(lambda w, gw: w - 0.05 * (gw + 5e-4 * w), p, g)
  for k in want:
    for n in want[k]:
      np.testing.assert_allclose(np.asarray(new.params[k][n]), want[k][n],
                                 rtol=1e-5, atol=1e-7)


def test_bad_teacher_random_teacher_is_drawn_from_the_rng(tiny):
  model, params, bs, d = tiny
  method = methods.build_method("bad_teacher", model)
  a = method.prepare(_inputs(model, params, bs, d, seed=1))
  b = method.prepare(_inputs(model, params, bs, d, seed=1))
  c = method.prepare(_inputs(model, params, bs, d, seed=2))
  flat = lambda t: np.concatenate(
      [np.ravel(v) for v in jax.tree.leaves(t)])
  assert np.array_equal(flat(a["random_params"]), flat(b["random_params"]))
  assert not np.array_equal(flat(a["random_params"]),
                            flat(c["random_params"]))
  assert not np.array_equal(flat(a["random_params"]), flat(params))
  assert float(a["forget_share"]) == pytest.approx(6 / (6 + 33))


@pytest.mark.parametrize("name,hp,field", [
    ("ssd", {"alpha": 0.0}, "alpha"), ("ssd", {"alpha": -1.0}, "alpha"),
    ("ssd", {"lam": 0.0}, "lam"), ("ssd", {"alpha": float("nan")}, "alpha"),
    ("ssd", {"batch_size": 0}, "batch_size"),
    ("bad_teacher", {"temperature": 0.0}, "temperature"),
    ("bad_teacher", {"retain_fraction": 1.5}, "retain_fraction"),
    ("bad_teacher", {"reduction": "sum"}, "reduction")])
def test_bad_config_raises_one_line_naming_the_field(name, hp, field):
  with pytest.raises(ValueError) as e:
    methods.build_method(name, None, **hp)
  assert str(e.value).startswith(field) and "\n" not in str(e.value)


def _accuracy(model, params, bs, x, y):
  logits, _ = models.apply_model(model, params, bs, jnp.asarray(x),
                                 train=False)
  return float(np.mean(np.asarray(jnp.argmax(logits, -1)) == y))


@pytest.fixture(scope="module")
def digits():
  """An MLP trained on digits; D_f = the training images of class 3."""
  ds = data_lib.load_dataset("digits")
  x, y = ds.train_x, ds.train_y
  model = MLP(hidden=32, num_classes=ds.num_classes)
  params, bs = models.init_model(model, jax.random.key(0), x.shape[1:])
  tx = optax.adam(0.01)

  @jax.jit
  def train(params):
    def body(carry, _):
      p, s = carry
      g = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(
          model.apply({"params": q}, x), y).mean())(p)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(body, (params, tx.init(params)), None, 300)[0][0]

  params = train(params)
  forget = np.flatnonzero(y == 3)
  data = unlearn.make_data(x, y, forget, np.flatnonzero(y != 3))
  return model, params, bs, data


def test_ssd_forgets_a_digit_class(digits):
  model, params, bs, d = digits
  method = methods.build_method("ssd", model)
  cfg = protocol.unlearn_config(method, len(d.forget_y), len(d.retain_y),
                                base=protocol.BASE, lr=0.01, train_epochs=30)
  assert cfg.epochs == 1
  res = unlearn.unlearn(method, model, params, bs, d, config=cfg,
                        num_classes=10)
  assert int(res.state.step) == 1
  out = res.state.params
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(out))
  fx, fy, rx, ry = (np.asarray(a) for a in d)
  before = _accuracy(model, params, bs, fx, fy)
  after = _accuracy(model, out, bs, fx, fy)
  assert before > 0.9 and after < before - 0.3
  assert _accuracy(model, out, bs, rx, ry) > 0.8


def test_bad_teacher_runs_on_digits(digits):
  model, params, bs, d = digits
  method = methods.build_method("bad_teacher", model)
  cfg = unlearn.UnlearnConfig(epochs=1, batch_size=128, lr=0.1)
  res = unlearn.unlearn(method, model, params, bs, d, config=cfg,
                        num_classes=10)
  assert np.isfinite(res.metrics["distill_loss"])
  out = res.state.params
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(out))
  fx, fy = np.asarray(d.forget_x), np.asarray(d.forget_y)
  assert (_accuracy(model, out, bs, fx, fy)
          < _accuracy(model, params, bs, fx, fy))


def test_ssd_search_is_its_knob_grid_alone(monkeypatch):
  """One (unread) learning rate, six (alpha, lam) pairs, never extended."""
  def fake(done, key, args, method, units, train, lr, knob, on_trial=None,
           **kw):
    del done, key, args, method, units, train, on_trial, kw
    return {"lr": lr, "hparams": knob, "score": knob["alpha"] * knob["lam"],
            "metrics": [], "diverged": False}

  monkeypatch.setattr(tune, "_cached", fake)
  entry = tune.tune_method(None, "ssd", [], None, {})
  assert len(entry["trials"]) == 6
  assert {t["lr"] for t in entry["trials"]} == {protocol.BASE.lr}
  assert entry["space"]["extended_lr"] == entry["space"]["refined_lr"] == []
  assert entry["pick"]["hparams"] == {"alpha": 1.0, "lam": 0.1}
  cell = tune_report._knob_cell(  # pylint: disable=protected-access
      entry["space"]["knob"])
  assert cell.startswith("alpha/lam [(10.0, 1.0)")
  assert protocol.grid("bad_teacher")[1] == (0.00178, {"temperature": 4.0})


@pytest.mark.parametrize("module", ["ssd", "bad_teacher"])
def test_doctests(module):
  mod = importlib.import_module(f"oeu_jax.algorithm.methods.{module}")
  assert doctest.testmod(mod).failed == 0
