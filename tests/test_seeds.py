"""Seeds vmapped in one program equal sequential runs; devices equal one.

Each test compares :mod:`oeu_jax.engine.seeds` with the sequential loops
(:func:`oeu_jax.engine.train.fit`, :func:`oeu_jax.engine.unlearn.unlearn`) on a
tiny W4A8 CNN (first conv float, second quantized: both convolution paths) and a
digits subset. The multi-device test runs in a subprocess, where
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` is set before JAX
starts.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oeu_jax import data
from oeu_jax.algorithm import methods
from oeu_jax.engine import executors
from oeu_jax.engine import lanes
from oeu_jax.engine import seeds as seeds_lib
from oeu_jax.engine import train
from oeu_jax.engine import unlearn
from oeu_jax.nn import models

SEEDS = (0, 1, 2)
N_TRAIN = 240
TRAIN = train.TrainConfig(epochs=2, batch_size=32, lr=0.05)
UNLEARN = unlearn.UnlearnConfig(epochs=2, batch_size=32, lr=0.02)


def rel_diff(a, b) -> float:
  """||a - b|| / ||a|| over whole pytrees."""
  num = sum(float(jnp.sum((x - y) ** 2)) for x, y in
            zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  den = sum(float(jnp.sum(x ** 2)) for x in jax.tree.leaves(a))
  return (num / den) ** 0.5


@pytest.fixture(scope="module")
def setup():
  ds = data.load_dataset("digits")
  ds = ds._replace(train_x=ds.train_x[:N_TRAIN], train_y=ds.train_y[:N_TRAIN])
  model = models.build_model("cnn", num_classes=10, bits="w4a8",
                             features=(4, 8), hidden=16)
  return ds, model


@pytest.fixture(scope="module")
def trained(setup):
  ds, model = setup
  seq = [train.fit(model, ds.train_x, ds.train_y, config=TRAIN, seed=s)
         for s in SEEDS]
  vm = seeds_lib.fit_seeds(model, ds.train_x, ds.train_y, config=TRAIN,
                          seeds=SEEDS)
  return seq, vm


def test_fit_seeds_equals_sequential_fit(trained):
  seq, vm = trained
  for a, b in zip(seq, vm):
    assert int(b.state.step) == int(a.state.step) == 2 * (N_TRAIN // 32)
    assert rel_diff(a.state.params, b.state.params) < 1e-3
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-3, atol=1e-4)
  # The seeds really differ (different init and batch order).
  assert rel_diff(vm[0].state.params, vm[1].state.params) > 0.1


@pytest.fixture(scope="module")
def unlearned(setup, trained):
  ds, model = setup
  originals = [r.state for r in trained[0]]
  oeu = methods.build_method("oeu", model)
  datas, seq, vm = _both_ways(ds, model, oeu, originals, UNLEARN)
  return oeu, originals, datas, seq, vm


def _both_ways(ds, model, method, originals, cfg):
  """Random forgetting (a different D_f per seed), run seed by seed and
  vmapped: ``(datas, sequential results, vmapped results)``."""
  seeds = SEEDS[:len(originals)]
  datas = []
  for s in seeds:
    split = data.make_split(ds, "random", forget_ratio=0.2, seed=s)
    datas.append(unlearn.make_data(ds.train_x, ds.train_y, split.forget_idx,
                                   split.retain_idx))
  seq = [unlearn.unlearn(method, model, o.params, o.batch_stats, d,
                         config=cfg, num_classes=10, seed=s)
         for o, d, s in zip(originals, datas, seeds)]
  vm = seeds_lib.unlearn_seeds(
      method, model, [o.params for o in originals],
      [o.batch_stats for o in originals], datas, config=cfg,
      num_classes=10, seeds=seeds)
  return datas, seq, vm


def test_unlearn_seeds_equals_sequential_unlearn(unlearned):
  _, originals, datas, seq, vm = unlearned
  assert not np.array_equal(datas[0].forget_y, datas[1].forget_y)
  for o, a, b in zip(originals, seq, vm):
    assert int(b.state.step) == int(a.state.step)
    assert rel_diff(a.state.params, b.state.params) < 1e-3
    assert rel_diff(o.params, b.state.params) > 1e-2  # It did unlearn.
    assert a.metrics.keys() == b.metrics.keys()
    for k in a.metrics:
      assert b.metrics[k] == pytest.approx(a.metrics[k], rel=1e-3, abs=1e-4)


def test_checkpoints_resume_and_are_shared_with_the_sequential_loop(
    setup, unlearned, tmp_path):
  _, model = setup
  oeu, originals, datas, seq, _ = unlearned
  dirs = [str(tmp_path / "s0"), str(tmp_path / "s1")]
  # Seed 0 was interrupted after one epoch (a 1-epoch run left a partial
  # checkpoint); seed 1 starts from scratch.
  short = dataclasses.replace(UNLEARN, epochs=1)
  unlearn.unlearn(oeu, model, originals[0].params, originals[0].batch_stats,
                  datas[0], config=short, num_classes=10, seed=0,
                  checkpoint_dir=dirs[0])
  shutil.copytree(dirs[0], tmp_path / "seq0")
  cfg = dataclasses.replace(UNLEARN, checkpoint_every=4)
  vm = seeds_lib.unlearn_seeds(
      oeu, model, [o.params for o in originals[:2]],
      [o.batch_stats for o in originals[:2]], datas[:2], config=cfg,
      num_classes=10, seeds=SEEDS[:2], checkpoint_dirs=dirs)
  resumed = unlearn.unlearn(oeu, model, originals[0].params,
                            originals[0].batch_stats, datas[0], config=cfg,
                            num_classes=10, seed=0,
                            checkpoint_dir=str(tmp_path / "seq0"))
  assert rel_diff(resumed.state.params, vm[0].state.params) < 1e-3
  assert rel_diff(seq[1].state.params, vm[1].state.params) < 1e-3
  # Finished vmapped runs are reused as they are by the sequential loop.
  for i, d in enumerate(dirs):
    again = unlearn.unlearn(oeu, model, originals[i].params,
                            originals[i].batch_stats, datas[i], config=cfg,
                            num_classes=10, seed=i, checkpoint_dir=d)
    assert again.seconds == 0.0
    assert rel_diff(vm[i].state.params, again.state.params) == 0.0


def test_unequal_set_sizes_are_padded_and_keep_each_schedule(setup,
                                                             trained):
  """D_f of 30 and 50: different step counts, schedules and padding."""
  ds, _ = setup
  model = models.build_model("cnn", num_classes=10, bits="float",
                             features=(4, 8), hidden=16)
  params, stats = models.init_model(model, jax.random.PRNGKey(0), (8, 8, 1))
  cfg = unlearn.UnlearnConfig(epochs=1, batch_size=16, lr=0.02,
                              schedule="paired")
  rl = methods.build_method("rl", model)  # Per-seed relabels of D_f.
  datas = [unlearn.make_data(ds.train_x, ds.train_y, np.arange(nf),
                             np.arange(nf, N_TRAIN)) for nf in (30, 50)]
  seq = [unlearn.unlearn(rl, model, params, stats, d, config=cfg,
                         num_classes=10, seed=s)
         for d, s in zip(datas, SEEDS)]
  vm = seeds_lib.unlearn_seeds(rl, model, [params] * 2, [stats] * 2, datas,
                              config=cfg, num_classes=10, seeds=SEEDS[:2])
  steps = [int(r.state.step) for r in seq]
  assert steps[0] != steps[1]
  assert [int(r.state.step) for r in vm] == steps
  for a, b in zip(seq, vm):
    assert rel_diff(a.state.params, b.state.params) < 1e-3
  # Retrain-like training on subsets of different sizes.
  subsets = [np.arange(96), np.arange(160)]
  tcfg = train.TrainConfig(epochs=1, batch_size=32, lr=0.05)
  seq_t = [train.fit(model, ds.train_x[s], ds.train_y[s], config=tcfg,
                     seed=i) for i, s in enumerate(subsets)]
  vm_t = seeds_lib.fit_seeds(model, ds.train_x, ds.train_y, config=tcfg,
                            seeds=(0, 1), subsets=subsets)
  for a, b in zip(seq_t, vm_t):
    assert int(b.state.step) == int(a.state.step)
    assert rel_diff(a.state.params, b.state.params) < 1e-3


def test_seedwise_convolutions_equal_grouped_ones(setup, monkeypatch):
  # Also: on CPU a float CNN's step (5 convolutions) runs one dispatch per
  # step, forced here to a scanned chunk for the grouped run (same models);
  # and a later chunk of seeds of the same shapes reuses the compiled
  # program (``programs``), as the audit's chunks of 8 do.
  ds, _ = setup
  model = models.build_model("cnn", num_classes=10, bits="float",
                             features=(4, 8), hidden=16)
  cfg = train.TrainConfig(epochs=1, batch_size=32, lr=0.05)
  x, y = ds.train_x[:96], ds.train_y[:96]
  chosen = []
  call = lanes.Executor.__call__

  def spy(self, *args):
    out = call(self, *args)
    chosen.append(self._per_step)  # pylint: disable=protected-access
    return out
  monkeypatch.setattr(lanes.Executor, "__call__", spy)
  programs = executors.Programs()
  a = seeds_lib.fit_seeds(model, x, y, config=cfg, seeds=(0, 1),
                          seedwise_convs=True, programs=programs)
  again = seeds_lib.fit_seeds(model, x, y, config=cfg, seeds=(2, 3),
                              seedwise_convs=True, programs=programs)
  assert (programs.compiles, programs.hits) == (1, 1)
  monkeypatch.setattr(lanes, "SCANNED_CONVS", 99)
  b = seeds_lib.fit_seeds(model, x, y, config=cfg, seeds=(0, 1),
                          seedwise_convs=False)
  assert chosen == [jax.default_backend() == "cpu"] * 2 + [False]
  for ra, rb in zip(a, b):
    assert int(ra.state.step) == int(rb.state.step) == 3
    assert rel_diff(ra.state.params, rb.state.params) < 1e-4
    np.testing.assert_allclose(ra.losses, rb.losses, rtol=1e-4)
  assert rel_diff(a[0].state.params, again[0].state.params) > 0.1


def test_bad_inputs_raise_clear_errors(setup):
  ds, model = setup
  with pytest.raises(ValueError, match="batch sizes differ"):
    seeds_lib.fit_seeds(model, ds.train_x, ds.train_y, config=TRAIN,
                       seeds=(0, 1), subsets=[np.arange(10), np.arange(20)])
  with pytest.raises(ValueError, match="seeds"):
    seeds_lib.fit_seeds(model, ds.train_x, ds.train_y, config=TRAIN,
                       seeds=(0, 1), subsets=[np.arange(64)])
  with pytest.raises(ValueError, match="distinct"):
    seeds_lib.fit_seeds(model, ds.train_x, ds.train_y, config=TRAIN,
                       seeds=(1, 1))


_MULTI_DEVICE = textwrap.dedent("""
    import json
    import flax.linen as nn
    import jax, jax.numpy as jnp, numpy as np
    from oeu_jax import data
    from oeu_jax.algorithm import methods
    from oeu_jax.nn import models
    from oeu_jax.engine import train
    from oeu_jax.engine import unlearn
    from oeu_jax.engine import mesh as mesh_lib, seeds as seeds_lib

    def rel(a, b):
      num = sum(float(jnp.sum((x - y) ** 2)) for x, y in
                zip(jax.tree.leaves(a), jax.tree.leaves(b)))
      return (num / sum(float(jnp.sum(x ** 2))
                        for x in jax.tree.leaves(a))) ** 0.5

    class TinyBN(nn.Module):  # BatchNorm statistics over a split batch.
      num_classes: int = 10

      @nn.compact
      def __call__(self, x, train):
        x = nn.Dense(16)(x.reshape((x.shape[0], -1)))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(self.num_classes)(nn.relu(x))

    ds = data.load_dataset("digits")
    x, y = ds.train_x[:160], ds.train_y[:160]
    cfg = train.TrainConfig(epochs=1, batch_size=32, lr=0.05)
    mesh = mesh_lib.make_mesh()
    out = {"devices": len(jax.devices())}
    a = train.fit(TinyBN(), x, y, config=cfg, seed=0)
    b = train.fit(TinyBN(), x, y, config=cfg, seed=0, mesh=mesh)
    out["fit_bn"] = rel(a.state.params, b.state.params)
    out["fit_bn_stats"] = rel(a.state.batch_stats, b.state.batch_stats)
    model = models.build_model("cnn", num_classes=10, bits="w4a8",
                               features=(4, 8), hidden=16)
    params, stats = models.init_model(model, jax.random.PRNGKey(0),
                                      (8, 8, 1))
    # Quantized training: all-reduced gradients sum in another order, and a
    # rounding difference can move a weight across a 4-bit step.
    qa = train.fit(model, x, y, config=cfg, seed=0)
    qb = train.fit(model, x, y, config=cfg, seed=0, mesh=mesh)
    out["fit_w4a8"] = rel(qa.state.params, qb.state.params)
    d = unlearn.make_data(x, y, np.arange(32), np.arange(32, 160))
    oeu = methods.build_method("oeu", model)
    ucfg = unlearn.UnlearnConfig(epochs=1, batch_size=16, lr=0.02)
    ua = unlearn.unlearn(oeu, model, params, stats, d, config=ucfg,
                         num_classes=10, seed=0)
    ub = unlearn.unlearn(oeu, model, params, stats, d, config=ucfg,
                         num_classes=10, seed=0, mesh=mesh)
    out["unlearn"] = rel(ua.state.params, ub.state.params)
    uc = seeds_lib.unlearn_seeds(oeu, model, [params] * 2, [stats] * 2,
                                [d, d], config=ucfg, num_classes=10,
                                seeds=[0, 1], mesh=mesh)
    out["unlearn_seeds"] = rel(ua.state.params, uc[0].state.params)
    # The batch is really split: the step's program all-reduces gradients.
    st, tx = unlearn.init_state(oeu, model, params, stats, d, config=ucfg,
                                num_classes=10, seed=0)
    fi, ri = unlearn.step_indices(32, 128, ucfg, 0, 0)
    hlo = jax.jit(unlearn.make_step(oeu, tx)).lower(
        mesh_lib.replicate(mesh, st), *mesh_lib.replicate(mesh, d),
        mesh_lib.shard_batch(mesh, fi),
        mesh_lib.shard_batch(mesh, ri)).compile().as_text()
    out["all_reduce"] = "all-reduce" in hlo
    out["idx_sharding"] = str(mesh_lib.shard_batch(mesh, ri).sharding.spec)
    print("RESULT " + json.dumps(out))
    """)


def test_four_devices_give_the_one_device_results():
  env = dict(os.environ,
             XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _MULTI_DEVICE], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
  out = json.loads(line[len("RESULT "):])
  assert out["devices"] == 4
  assert out["all_reduce"]
  assert "data" in out["idx_sharding"]
  for k in ("fit_bn", "fit_bn_stats", "unlearn", "unlearn_seeds"):
    assert out[k] < 1e-3, (k, out)
  assert out["fit_w4a8"] < 3e-2, out


@pytest.mark.parametrize("name,lr", [("rl", 0.005), ("ga", 0.05),
                                     ("scrub", 0.005)])
def test_reference_schedules_equal_sequential_unlearn(setup, trained, name,
                                                      lr):
  """Sequential (RL), forget-only (GA) and SCRUB's max/min alternation with
  its own forget batch: the vmapped steps visit the same batches."""
  ds, model = setup
  originals = [r.state for r in trained[0]][:2]
  cfg = dataclasses.replace(UNLEARN, lr=lr, forget_batch_size=16)
  _, seq, vm = _both_ways(ds, model, methods.build_method(name, model),
                          originals, cfg)
  for o, a, b in zip(originals, seq, vm):
    assert int(b.state.step) == int(a.state.step) > 0
    moved = rel_diff(o.params, b.state.params)
    assert moved > 1e-4
    assert rel_diff(a.state.params, b.state.params) < 0.01 * moved
