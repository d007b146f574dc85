"""The chunked one-lane executor
(:class:`oeu_jax.engine.executors.ScanExecutor`).

K steps per dispatch through ``lax.scan`` must keep what the one-step loop
did: the same steps, metrics and non-finite policy, stops and checkpoints at
the same steps, bit-identical results whatever the chunk length, and one
compilation shared by every seed of the same shapes.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oeu_jax import data
from oeu_jax.algorithm import methods
from oeu_jax.engine import checkpointing
from oeu_jax.engine import executors
from oeu_jax.engine import loop
from oeu_jax.engine import train
from oeu_jax.engine import unlearn
from oeu_jax.nn import models


@pytest.fixture(scope="module")
def tiny():
  ds = data.load_dataset("digits", max_examples=120)
  model = models.build_model("cnn", num_classes=10, bits="float",
                             features=(4, 4), hidden=8)
  cfg = train.TrainConfig(epochs=1, batch_size=16)
  n = len(ds.train_x)
  total = train.total_steps(n, cfg)
  tx = train.make_optimizer(cfg, total)
  return dict(ds=ds, model=model, n=n, total=total, tx=tx,
              step=train.make_train_step(model, tx),
              data=(jnp.asarray(ds.train_x), jnp.asarray(ds.train_y)))


def _init(t):
  return train.init_state(t["model"], jax.random.PRNGKey(0),
                          t["ds"].train_x.shape[1:], t["tx"])


def _leaves_equal(a, b):
  return all(np.array_equal(x, y)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _run(t, chunk, **kw):
  return loop.run_one(
      t["step"], _init(t), t["data"],
      lambda s: (train.batch_indices(t["n"], 16, 0, s),), total=t["total"],
      checkpoint_every=kw.pop("checkpoint_every", 1000),
      checkpoint_dir=kw.pop("checkpoint_dir", None), skip_nonfinite=False,
      failure=lambda s: f"step {s}", chunk=chunk, **kw)


@pytest.fixture(scope="module")
def four(tiny):
  return _run(tiny, 4)


def test_chunk_length_does_not_change_a_bit(tiny, four):
  assert tiny["total"] == 7  # Chunks of 4 leave a padded chunk of 3.
  one = _run(tiny, 1)
  assert _leaves_equal(one.state, four.state)
  assert np.array_equal(one.metrics[0]["loss"], four.metrics[0]["loss"])
  assert int(four.state.step) == 7 and four.metrics[0]["loss"].shape == (7,)


def test_chunks_compute_the_one_step_loop(tiny, four):
  ex = executors.StepExecutor(
      tiny["step"], tiny["data"],
      lambda s: (train.batch_indices(tiny["n"], 16, 0, s),))
  ref = loop.run(ex, _init(tiny), starts=[0], totals=[tiny["total"]],
                 checkpoint_dirs=[None], checkpoint_every=1000)
  got = four
  # XLA compiles a loop body apart from a top-level program, so a parameter
  # may differ in its last bit and, steps later, so may a loss (seen with
  # one CPU thread: 2.2879314 against 2.2879312 at step 7). A wrong step
  # order or a skipped or repeated batch moves the losses by far more.
  np.testing.assert_allclose(ref.metrics[0]["loss"], got.metrics[0]["loss"],
                             rtol=1e-6, atol=0)
  for a, b in zip(jax.tree.leaves(ref.state), jax.tree.leaves(got.state)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_checkpointed_resume_is_bit_identical(tiny, four, tmp_path):
  d = str(tmp_path / "ckpt")
  # A rule met at its first check ends the run at step 3, checkpointed.
  first = _run(tiny, 4, checkpoint_every=3, checkpoint_dir=d,
               stop=lambda st, i: True, stop_every=3)
  assert first.stopped == [3]
  half = checkpointing.restore_checkpoint(d, _init(tiny), step=3)
  rest = loop.run_one(
      tiny["step"], half, tiny["data"],
      lambda s: (train.batch_indices(tiny["n"], 16, 0, s),),
      total=tiny["total"], checkpoint_dir=None, checkpoint_every=3,
      skip_nonfinite=False, failure=str, chunk=4)
  assert _leaves_equal(four.state, rest.state)
  assert np.array_equal(four.metrics[0]["loss"][3:], rest.metrics[0]["loss"])


class Toy(NamedTuple):
  x: jax.Array
  step: jax.Array


def _toy_step(skip):
  """x += data[i]; not finite when data[i] is not."""

  def step(state, values, i):
    new = state.x + values[i[0]]
    finite = jnp.isfinite(new)
    x = jnp.where(finite, new, state.x) if skip else new
    return Toy(x, state.step + 1), {"v": new, "finite": finite}

  return step


def _toy(skip, *, total=10, **kw):
  values = jnp.arange(1.0, total + 1).at[6].set(jnp.inf)
  return loop.run_one(
      _toy_step(skip), Toy(jnp.zeros(()), jnp.zeros((), jnp.int32)),
      (values,), lambda s: (np.array([s], np.int32),), total=total,
      checkpoint_dir=None, checkpoint_every=1000, skip_nonfinite=skip,
      failure=lambda s: f"toy step {s}", chunk=4, **kw)


def test_a_non_finite_step_is_named_or_skipped():
  with pytest.raises(FloatingPointError, match="toy step 6 "):
    _toy(False)
  out = _toy(True)
  assert out.skipped == [1]
  assert float(out.state.x) == 55.0 - 7.0
  assert out.metrics[0]["v"].shape == (10,)


def test_the_stop_rule_stops_on_its_cadence():
  out = _toy(True, stop=lambda st, i: float(st.x) >= 9.0, stop_every=3)
  # After 3 steps x = 6, after 6 steps x = 21: the check at step 6 stops.
  assert out.stopped == [6] and int(out.state.step) == 6
  assert out.metrics[0]["v"].shape == (6,)


def test_a_second_seed_reuses_the_compiled_step(tiny):
  programs = executors.Programs()
  ds, model = tiny["ds"], tiny["model"]
  cfg = train.TrainConfig(epochs=1, batch_size=16)
  fits = [train.fit(model, ds.train_x, ds.train_y, config=cfg, seed=s,
                    programs=programs) for s in (0, 1)]
  assert (programs.compiles, programs.hits) == (1, 1)
  assert not _leaves_equal(fits[0].state.params, fits[1].state.params)
  split = data.make_split(ds, "class", forget_class=3, seed=0)
  udata = unlearn.make_data(ds.train_x, ds.train_y, split.forget_idx,
                            split.retain_idx)
  ucfg = unlearn.UnlearnConfig(epochs=1, batch_size=16)
  originals = [f.state.params for f in fits]
  kept = jax.tree.map(np.array, originals)
  for s, f in zip((0, 1), fits):
    unlearn.unlearn(methods.build_method("oeu", model), model,
                    f.state.params, f.state.batch_stats, udata, config=ucfg,
                    num_classes=10, seed=s, programs=programs)
  assert (programs.compiles, programs.hits) == (2, 2)
  # The state is donated, never the caller's Original parameters.
  assert _leaves_equal(originals, kept)


def test_a_subset_run_is_the_gathered_run_and_shares_its_step(tiny):
  # Retrain's way (train.fit's ``subset``): all of x on the device, the
  # subset as indices, so a run with the Original's step count reuses its
  # compiled step.
  ds, model, n = tiny["ds"], tiny["model"], tiny["n"]
  cfg = train.TrainConfig(epochs=1, batch_size=16)
  sub = np.random.default_rng(0).permutation(n)[:16 * (n // 16)]
  assert len(sub) < n and train.total_steps(len(sub), cfg) == tiny["total"]
  programs = executors.Programs()
  train.fit(model, ds.train_x, ds.train_y, config=cfg, seed=0,
            programs=programs)
  part = train.fit(model, ds.train_x, ds.train_y, config=cfg, seed=0,
                   subset=sub, programs=programs)
  assert (programs.compiles, programs.hits) == (1, 1)
  gathered = train.fit(model, ds.train_x[sub], ds.train_y[sub], config=cfg,
                       seed=0)
  assert _leaves_equal(part.state.params, gathered.state.params)
  np.testing.assert_array_equal(part.losses, gathered.losses)
  with pytest.raises(ValueError, match=r"subsets must be 1-D integer"):
    train.fit(model, ds.train_x, ds.train_y, config=cfg, seed=0,
              subset=[n])


def test_cpu_convolutions_keep_one_dispatch_per_step(tiny):
  idx = (train.batch_indices(tiny["n"], 16, 0, 0),)
  assert executors.loops_slow_convs(tiny["step"], _init(tiny), tiny["data"],
                               idx) == (jax.default_backend() == "cpu")
  toy = Toy(jnp.zeros(()), jnp.zeros((), jnp.int32))
  assert not executors.loops_slow_convs(_toy_step(False), toy,
                                   (jnp.ones(3),), (np.array([0]),))
