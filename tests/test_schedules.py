"""Unlearning schedules visit exactly the batches they should.

Host-side index plans of :mod:`oeu_jax.engine.unlearn` (pure functions of seed
and step) are checked example by example; a tiny run per schedule checks that
the compiled step sees the batch kinds the plan says (a method that records
which batches it received), on one device and vmapped over seeds.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from oeu_jax.algorithm import losses
from oeu_jax.algorithm import methods
from oeu_jax.engine import seeds as seeds_lib
from oeu_jax.engine import unlearn
from oeu_jax.nn import models

NF, NR = 10, 23  # Not multiples of the batch: the last batch wraps.


def _cfg(schedule, **kw):
  return dataclasses.replace(unlearn.UnlearnConfig(
      epochs=3, batch_size=4, schedule=schedule), **kw)


def _plan(cfg, seed=0):
  """``[(forget, retain, kind), ...]``, the kind a ``(1,)`` array."""
  total = unlearn.num_steps(NF, NR, cfg)
  return [(*unlearn.step_indices(NF, NR, cfg, seed, s),
           np.array([unlearn.step_kind(NF, NR, cfg, s)]))
          for s in range(total)]


def test_forget_only_never_touches_the_retain_set():
  cfg = _cfg("forget_only")
  plan = _plan(cfg)
  assert len(plan) == 3 * 3  # ceil(10 / 4) batches per epoch.
  for f, r, kind in plan:
    assert kind[0] == unlearn.FORGET and not r.any()
  per_epoch = [np.concatenate([p[0] for p in plan[e * 3:(e + 1) * 3]])
               for e in range(3)]
  for e in per_epoch:  # Each epoch covers D_f (12 slots, 10 examples).
    assert set(e) == set(range(NF))


def test_retain_only_never_touches_the_forget_set():
  plan = _plan(_cfg("retain_only"))
  assert len(plan) == 3 * 6
  assert all(k[0] == unlearn.RETAIN and not f.any() for f, _, k in plan)


def test_sequential_covers_forget_then_retain_once_per_epoch():
  cfg = _cfg("sequential")
  plan = _plan(cfg)
  spe = 3 + 6
  assert len(plan) == 3 * spe
  for e in range(3):
    epoch = plan[e * spe:(e + 1) * spe]
    kinds = [int(k[0]) for _, _, k in epoch]
    assert kinds == [unlearn.FORGET] * 3 + [unlearn.RETAIN] * 6
    seen_f = np.concatenate([f for f, _, _ in epoch[:3]])
    seen_r = np.concatenate([r for _, r, _ in epoch[3:]])
    assert set(seen_f) == set(range(NF)) and len(seen_f) == 12
    assert set(seen_r) == set(range(NR)) and len(seen_r) == 24


def test_sequential_forget_epochs_drops_later_forget_passes():
  cfg = _cfg("sequential", forget_epochs=1)
  plan = _plan(cfg)
  assert len(plan) == (3 + 6) + 2 * 6 == unlearn.num_steps(NF, NR, cfg)
  kinds = [int(k[0]) for _, _, k in plan]
  assert kinds.count(unlearn.FORGET) == 3
  assert kinds[:3] == [unlearn.FORGET] * 3


def test_paired_is_unchanged_and_cycles_the_smaller_set():
  cfg = _cfg(None)
  plan = _plan(cfg)
  assert all(k[0] == unlearn.PAIRED for _, _, k in plan)
  assert len(plan) == 3 * 6  # max(ceil(10/4), ceil(23/4)) per epoch.
  first = np.concatenate([f for f, _, _ in plan[:6]])
  assert len(first) == 24 and set(first) == set(range(NF))


def test_forget_batch_size_is_separate():
  cfg = _cfg("sequential", forget_batch_size=8)
  f, _ = unlearn.step_indices(NF, NR, cfg, 0, 0)
  assert len(f) == 8
  assert unlearn.steps_per_epoch(NF, NR, cfg) == 2 + 6


def test_bad_schedule_names_the_field():
  with pytest.raises(ValueError, match="schedule must be one of"):
    unlearn.validate_config(_cfg("alternating"))
  with pytest.raises(ValueError, match="forget_epochs"):
    unlearn.validate_config(_cfg("sequential", forget_epochs=-1))


def _recorder(model):
  """A method that counts the forget and retain batches it receives."""

  def grads(params, batch_stats, mstate, forget, retain, rng, step):
    def loss(p):
      total = 0.0
      for b in (forget, retain):
        if b is not None:
          logits, _ = models.apply_model(model, p, batch_stats, b.x,
                                         train=False)
          total = total + losses.mean_cross_entropy(logits, b.y)
      return total
    g = jax.grad(loss)(params)
    nf = jnp.float32(0 if forget is None else 1)
    nr = jnp.float32(0 if retain is None else 1)
    return methods.StepOutput(g, {}, batch_stats, mstate,
                              {"forget_batches": nf, "retain_batches": nr})

  return methods.Method(
      name="recorder", prepare=lambda inputs: (), grads=grads,
      make_tx=lambda schedule, mstate: optax.sgd(schedule),
      schedule="sequential", schedules=unlearn.SCHEDULES)


@pytest.fixture(scope="module")
def tiny():
  rng = np.random.default_rng(0)
  x = rng.random((NF + NR, 8, 8, 1), np.float32)
  y = (np.arange(NF + NR) % 3).astype(np.int32)
  model = models.build_model("cnn", num_classes=3, bits="float",
                             features=(2, 2), hidden=4)
  params, bs = models.init_model(model, jax.random.PRNGKey(0), x.shape[1:])
  data = unlearn.make_data(x, y, np.arange(NF), np.arange(NF, NF + NR))
  return model, params, bs, data


@pytest.mark.parametrize("schedule,want", [
    ("sequential", (3, 6)), ("forget_only", (3, 0)),
    ("retain_only", (0, 6)), ("paired", (6, 6))])
def test_the_step_sees_the_planned_batches(tiny, schedule, want):
  model, params, bs, data = tiny
  method = _recorder(model)
  cfg = _cfg(schedule, epochs=1)
  res = unlearn.unlearn(method, model, params, bs, data, config=cfg,
                        num_classes=3)
  steps = unlearn.num_steps(NF, NR, unlearn.resolve(cfg, method))
  assert res.metrics["forget_batches"] * steps == pytest.approx(want[0])
  assert res.metrics["retain_batches"] * steps == pytest.approx(want[1])
  # Vmapped over two seeds: the same counts per seed.
  vm = seeds_lib.unlearn_seeds(method, model, [params] * 2, [bs] * 2,
                               [data] * 2, config=cfg, num_classes=3,
                               seeds=(0, 1))
  for r in vm:
    assert r.metrics["forget_batches"] * steps == pytest.approx(want[0])
    assert r.metrics["retain_batches"] * steps == pytest.approx(want[1])


def test_a_method_refuses_a_schedule_it_cannot_run(tiny):
  model, params, bs, data = tiny
  oeu = methods.build_method("oeu", model)
  with pytest.raises(ValueError, match="oeu cannot run the 'sequential'"):
    unlearn.unlearn(oeu, model, params, bs, data,
                    config=_cfg("sequential"), num_classes=3)
