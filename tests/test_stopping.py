"""Stop when forgotten: the rule, its metric, and where a run ends."""

import dataclasses

import jax
import numpy as np
import pytest

from oeu_jax.algorithm import methods
from oeu_jax.engine import checkpointing
from oeu_jax.engine import loop
from oeu_jax.engine import seeds as seeds_lib
from oeu_jax.engine import stopping
from oeu_jax.engine import unlearn
from oeu_jax.nn import models
from oeu_jax.runner import layout

NF, NR, K = 12, 20, 3


@pytest.fixture(scope="module")
def tiny():
  rng = np.random.default_rng(0)
  x = rng.random((NF + NR, 8, 8, 1), np.float32)
  y = (np.arange(NF + NR) % K).astype(np.int32)
  model = models.build_model("cnn", num_classes=K, bits="float",
                             features=(2, 2), hidden=4)
  params, bs = models.init_model(model, jax.random.PRNGKey(0), x.shape[1:])
  data = unlearn.make_data(x, y, np.arange(NF), np.arange(NF, NF + NR))
  return model, params, bs, data, x, y


def _cfg(**kw):
  return dataclasses.replace(unlearn.UnlearnConfig(
      epochs=4, batch_size=4, lr=0.05, stop_every=2), **kw)


def test_parse_reads_rules_and_names_bad_ones():
  assert stopping.parse("ua>=95") == stopping.StopRule("ua", 95.0)
  assert stopping.parse(" Entropy >= 0.9 ") == stopping.StopRule(
      "entropy", 0.9)
  assert stopping.parse(None) is None and stopping.parse("none") is None
  for bad, msg in (("ua>95", "METRIC>=THRESHOLD"), ("acc>=3", "unknown"),
                   ("ua>=101", r"\[0, 100\]"), ("entropy>=2", r"\[0, 1\]"),
                   ("ua>=1.2.3", "not a number")):
    with pytest.raises(ValueError, match=msg):
      stopping.parse(bad)


def test_bad_config_fields_are_named():
  with pytest.raises(ValueError, match="unknown metric"):
    unlearn.validate_config(_cfg(stop_when="loss>=1"))
  with pytest.raises(ValueError, match="stop_every"):
    unlearn.validate_config(_cfg(stop_when="ua>=50", stop_every=0))


def test_the_metric_matches_numpy(tiny):
  model, params, bs, data, _, _ = tiny
  logits = np.asarray(models.apply_model(model, params, bs, data.forget_x,
                                         train=False)[0], np.float64)
  y = np.asarray(data.forget_y)
  ua = 100.0 * np.mean(logits.argmax(-1) != y)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  ent = np.mean(-(p * np.log(p)).sum(-1)) / np.log(K)
  got_ua = stopping.forget_value(model, params, bs, data.forget_x,
                                 data.forget_y, metric="ua")
  got_h = stopping.forget_value(model, params, bs, data.forget_x,
                                data.forget_y, metric="entropy")
  assert float(got_ua) == pytest.approx(ua, abs=1e-4)
  assert float(got_h) == pytest.approx(ent, rel=1e-5)
  assert 0.0 < ent <= 1.0


def test_the_fingerprint_text_omits_the_rule_at_its_default():
  # Checkpoint fingerprints and stored tuning trials hash this text.
  assert "stop" not in layout.config_repr(
      unlearn.UnlearnConfig(stop_every=7))
  r = layout.config_repr(unlearn.UnlearnConfig(stop_when="ua>=90"))
  assert "stop_when='ua>=90'" in r and "stop_every=10" in r


def test_a_met_rule_ends_the_run_on_a_prefix_of_the_full_run(tiny):
  model, params, bs, data, _, _ = tiny
  ga = methods.build_method("ga", model)
  full = unlearn.unlearn(ga, model, params, bs, data, num_classes=K,
                         config=_cfg())
  total = int(full.state.step)
  assert total > 4 and "stop_step" not in full.metrics
  # Always met: stops at the first check, with the full run's state there.
  stopped = unlearn.unlearn(ga, model, params, bs, data, num_classes=K,
                            config=_cfg(stop_when="ua>=0"))
  assert stopped.metrics["stop_step"] == 2 and int(stopped.state.step) == 2
  # The full run's first two steps, driven by hand (its lr schedule).
  cfg = unlearn.resolve(_cfg(), ga)
  state, tx = unlearn.init_state(ga, model, params, bs, data, config=cfg,
                                 num_classes=K, seed=0)
  step = jax.jit(unlearn.make_step(ga, tx, kind=unlearn.FORGET))
  for g in range(2):
    state, _ = step(state, *data, *unlearn.step_indices(NF, NR, cfg, 0, g))
  np.testing.assert_array_equal(
      np.concatenate([np.ravel(a) for a in jax.tree.leaves(state.params)]),
      np.concatenate([np.ravel(a) for a in
                      jax.tree.leaves(stopped.state.params)]))
  # Never met (entropy exactly 1 is out of reach): the whole budget.
  never = unlearn.unlearn(ga, model, params, bs, data, num_classes=K,
                          config=_cfg(stop_when="entropy>=1"))
  assert int(never.state.step) == total and "stop_step" not in never.metrics


def test_a_stopped_run_is_finished_when_resumed(tiny, tmp_path):
  model, params, bs, data, _, _ = tiny
  ga = methods.build_method("ga", model)
  d = str(tmp_path / "ga")
  cfg = _cfg(stop_when="ua>=0", checkpoint_every=3)
  first = unlearn.unlearn(ga, model, params, bs, data, num_classes=K,
                          config=cfg, checkpoint_dir=d)
  assert first.metrics["stop_step"] == 2
  assert checkpointing.latest_step(d) == 2 and loop.stopped_at(d) == 2
  # resume=False does not call it unfinished; nothing runs again.
  again = unlearn.unlearn(ga, model, params, bs, data, num_classes=K,
                          config=cfg, checkpoint_dir=d, resume=False)
  assert int(again.state.step) == 2 and again.seconds == 0.0
  vm, = seeds_lib.unlearn_seeds(ga, model, [params], [bs], [data],
                                config=cfg, num_classes=K, seeds=[0],
                                checkpoint_dirs=[d], resume=False)
  assert int(vm.state.step) == 2 and vm.seconds == 0.0


def test_vmapped_lanes_stop_on_their_own(tiny):
  model, params, bs, data, x, y = tiny
  # Lane 0's D_f carries the model's own predictions (UA 0), lane 1's a
  # label it does not predict (UA 100); at a tiny lr neither changes, so
  # only lane 1 meets "ua>=50".
  pred = np.asarray(models.apply_model(model, params, bs, x,
                                       train=False)[0]).argmax(-1)
  fi, ri = np.arange(NF), np.arange(NF, NF + NR)
  own = unlearn.make_data(x, np.where(np.arange(len(y)) < NF, pred, y)
                          .astype(np.int32), fi, ri)
  other = unlearn.make_data(x, np.where(np.arange(len(y)) < NF,
                                        (pred + 1) % K, y)
                            .astype(np.int32), fi, ri)
  ga = methods.build_method("ga", model)
  cfg = _cfg(stop_when="ua>=50", lr=1e-6)
  res = seeds_lib.unlearn_seeds(ga, model, [params] * 2, [bs] * 2,
                                [own, other], config=cfg, num_classes=K,
                                seeds=(0, 1))
  total = unlearn.total_steps(own, unlearn.resolve(cfg, ga))
  assert int(res[0].state.step) == total and "stop_step" not in res[0].metrics
  assert res[1].metrics["stop_step"] == 2 and int(res[1].state.step) == 2
  seq = unlearn.unlearn(ga, model, params, bs, other, num_classes=K,
                        config=cfg, seed=1)
  assert seq.metrics["stop_step"] == 2
