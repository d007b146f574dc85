"""Step kinds are dispatched from the host, never chosen in the program.

A schedule with two step kinds (RL, SalUn, Q-MUL and SCRUB's sequential
schedule; SCRUB's paired max/min alternation) compiles one program per kind:
no ``conditional`` (``lax.cond`` / ``lax.switch``) around the gradients,
where XLA's CPU backend runs convolution gradients ~40x slower. The runs
still see the planned batches, and the sequential and vmapped paths agree.
"""


import jax
import numpy as np
import pytest

from oeu_jax.algorithm import methods
from oeu_jax.engine import executors
from oeu_jax.engine import loop
from oeu_jax.engine import seeds as seeds_lib
from oeu_jax.engine import unlearn
from oeu_jax.nn import models

NF, NR, K = 12, 40, 4


@pytest.fixture(scope="module")
def tiny():
  rng = np.random.default_rng(0)
  x = rng.random((NF + NR, 8, 8, 1), np.float32)
  y = (np.arange(NF + NR) % K).astype(np.int32)
  model = models.build_model("cnn", num_classes=K, bits="w4a8",
                             features=(2, 4), hidden=8)
  params, bs = models.init_model(model, jax.random.PRNGKey(0), x.shape[1:])
  data = unlearn.make_data(x, y, np.arange(NF), np.arange(NF, NF + NR))
  return model, params, bs, data


def _cfg(**kw):
  return unlearn.UnlearnConfig(epochs=2, batch_size=8, **kw)


def _lowered_text(method, model, params, bs, data, cfg, kind):
  cfg = unlearn.resolve(cfg, method)
  state, tx = unlearn.init_state(method, model, params, bs, data,
                                 config=cfg, num_classes=K, seed=0)
  idx = unlearn.step_indices(NF, NR, cfg, 0, 0)
  step = unlearn.make_step(method, tx, kind=kind)
  return jax.jit(step).lower(state, *data, *idx).as_text()


@pytest.mark.parametrize("name", ["rl", "salun", "qmul", "scrub"])
def test_each_kind_compiles_without_a_conditional(tiny, name):
  model, params, bs, data = tiny
  method = methods.build_method(name, model)
  cfg = unlearn.resolve(_cfg(), method)
  kinds = {unlearn.step_kind(NF, NR, cfg, g, method.paired_kind)
           for g in range(unlearn.num_steps(NF, NR, cfg))}
  assert kinds == {unlearn.FORGET, unlearn.RETAIN}
  for kind in kinds:
    text = _lowered_text(method, model, params, bs, data, _cfg(), kind)
    assert "convolution" in text  # The gradients are in this program ...
    assert "stablehlo.case" not in text  # ... and no conditional is.
    assert "stablehlo.if" not in text


def test_the_old_switch_would_show_as_a_case(tiny):
  # The check above can fail: a step kind chosen in the program lowers to
  # ``stablehlo.case``.
  model, params, bs, data = tiny
  method = methods.build_method("rl", model)
  cfg = unlearn.resolve(_cfg(), method)
  state, tx = unlearn.init_state(method, model, params, bs, data,
                                 config=cfg, num_classes=K, seed=0)
  steps = [unlearn.make_step(method, tx, kind=k)
           for k in (unlearn.FORGET, unlearn.RETAIN)]

  def switched(state, *args, kind):
    return jax.lax.switch(kind, steps, state, *args)

  idx = unlearn.step_indices(NF, NR, cfg, 0, 0)
  text = jax.jit(switched).lower(state, *data, *idx,
                                 kind=np.int32(0)).as_text()
  assert "stablehlo.case" in text


def test_scrub_paired_alternation_is_host_dispatched(tiny):
  model, params, bs, data = tiny
  scrub = methods.build_method("scrub", model, msteps=1)
  cfg = unlearn.resolve(_cfg(schedule="paired"), scrub)
  spe = unlearn.steps_per_epoch(NF, NR, cfg)
  kinds = [unlearn.step_kind(NF, NR, cfg, g, scrub.paired_kind)
           for g in range(unlearn.num_steps(NF, NR, cfg))]
  want = [unlearn.FORGET if g < spe and g % 2 == 0 else unlearn.RETAIN
          for g in range(len(kinds))]
  assert kinds == want
  out = unlearn.unlearn(scrub, model, params, bs, data, num_classes=K,
                        config=_cfg(schedule="paired"))
  # max_step is 1 on the forget (max) steps: spe/2 of the 2 * spe steps.
  assert out.metrics["max_step"] == pytest.approx(
      sum(k == unlearn.FORGET for k in kinds) / len(kinds))


def test_kind_runs_are_the_longest_runs():
  cfg = unlearn.resolve(_cfg(), methods.build_method(
      "rl", models.build_model("cnn", num_classes=K, bits="float",
                               features=(2, 2), hidden=4)))
  # ceil(12 / 8) = 2 forget steps, then ceil(40 / 8) = 5 retain steps.
  assert unlearn.kind_runs(NF, NR, cfg) == {unlearn.FORGET: 2,
                                            unlearn.RETAIN: 5}
  assert executors.runs([1, 1, 2, 2, 2, 1]) == [(0, 2, 1), (2, 5, 2),
                                                (5, 6, 1)]


@pytest.mark.parametrize("chunk", [None, 3])
def test_sequential_run_matches_a_hand_driven_loop(tiny, chunk):
  # The executors (one dispatch per step, or scanned runs of one kind
  # padded with masked-off steps) give the steps a hand loop gives.
  model, params, bs, data = tiny
  rl = methods.build_method("rl", model)
  cfg = unlearn.resolve(_cfg(), rl)
  state, tx = unlearn.init_state(rl, model, params, bs, data, config=cfg,
                                 num_classes=K, seed=0)
  steps = {k: jax.jit(unlearn.make_step(rl, tx, kind=k))
           for k in unlearn.KINDS}
  total = unlearn.num_steps(NF, NR, cfg)
  want = []
  for g in range(total):
    kind = unlearn.step_kind(NF, NR, cfg, g)
    state, m = steps[kind](state, *data,
                           *unlearn.step_indices(NF, NR, cfg, 0, g))
    want.append(float(m["forget_loss"] + m["retain_loss"]))
  got_state, tx2 = unlearn.init_state(rl, model, params, bs, data,
                                      config=cfg, num_classes=K, seed=0)
  out = loop.run_one(
      unlearn.make_steps(rl, tx2), got_state, data,
      lambda s: unlearn.step_indices(NF, NR, cfg, 0, s), total=total,
      kind_of=lambda s: unlearn.step_kind(NF, NR, cfg, s),
      kind_sizes=lambda: unlearn.kind_runs(NF, NR, cfg),
      checkpoint_dir=None, checkpoint_every=1000, skip_nonfinite=False,
      failure=str, chunk=chunk)
  got = out.metrics[0]["forget_loss"] + out.metrics[0]["retain_loss"]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(state.params),
                  jax.tree.leaves(out.state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_vmapped_lanes_with_different_kind_plans(tiny):
  # Same step count, different forget/retain split: at some steps one lane
  # takes a forget step while the other takes a retain step.
  model, params, bs, data = tiny
  rl = methods.build_method("rl", model)
  x = np.concatenate([np.asarray(data.forget_x), np.asarray(data.retain_x)])
  y = np.concatenate([np.asarray(data.forget_y), np.asarray(data.retain_y)])
  d2 = unlearn.make_data(x, y, np.arange(20), np.arange(20, NF + NR))
  cfg = _cfg()
  c = unlearn.resolve(cfg, rl)
  # 2 + 5 and 3 + 4 steps an epoch.
  assert unlearn.total_steps(data, c) == unlearn.total_steps(d2, c)
  assert unlearn.kind_runs(NF, NR, c) != unlearn.kind_runs(20, 32, c)
  vm = seeds_lib.unlearn_seeds(rl, model, [params, params], [bs, bs],
                               [data, d2], config=cfg, num_classes=K,
                               seeds=[0, 1])
  for d, s, got in zip([data, d2], [0, 1], vm):
    ref = unlearn.unlearn(rl, model, params, bs, d, config=cfg,
                          num_classes=K, seed=s)
    for a, b in zip(jax.tree.leaves(ref.state.params),
                    jax.tree.leaves(got.state.params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert got.metrics["retain_loss"] == pytest.approx(
        ref.metrics["retain_loss"], rel=1e-4)


def test_make_step_names_a_bad_kind(tiny):
  model = tiny[0]
  with pytest.raises(ValueError, match="kind must be one of"):
    unlearn.make_step(methods.build_method("rl", model), None, kind=7)
