"""Many seeds in one compiled program, and data parallelism over devices.

**Seeds.** :func:`unlearn_seeds` and :func:`fit_seeds` run N seeds (each its
own Original parameters, split, batch order and rng) as one jitted program:
the pure step of :func:`oeu_jax.unlearn.make_step` (or
:func:`oeu_jax.train.make_train_step`) is ``jax.vmap``-ed over a leading
seed axis of the state and of the per-seed data, and ``jax.lax.scan``-ned
over a chunk of steps, so a chunk of N seeds costs one dispatch. Batch order
is each seed's own (:func:`oeu_jax.unlearn.step_indices`,
:func:`oeu_jax.train.batch_indices`), computed on the host exactly as the
sequential loops do, so each seed's result equals its sequential run's up to
float rounding (vmapped kernels may sum in another order). Float models
agree to about 1e-6 (relative, parameters); in quantized training a
rounding difference can move a weight across a 4-bit step, so after a few
epochs W4A8 parameters differ by up to about 1e-2 and a borderline test
example may change class, as between any two runs that differ by one ulp.
:func:`run_stages` runs the experiment runner's stages (Original, Retrain,
each method) this way.

On CPU, vmapping a convolution over seeds (a per-seed kernel) gives a
grouped convolution that XLA's CPU backend expands into a dense one N times
larger; there each convolution runs seed by seed inside the program
(``seedwise_convs``), everything else stays vmapped. On CPU the steady-state
step costs about what N sequential steps cost (the machine is compute
bound); the gain is one compilation instead of N and no per-step dispatch.
On GPU/TPU the vmapped program fills the device that one small model
leaves idle.

Seeds whose D_f / D_r (or training subsets) differ in size are padded to a
common size; batch indices are drawn from each seed's true sizes, so padding
is never read. A seed with fewer steps (smaller sets) is frozen once it has
run its own number of steps (its update is masked), and its learning-rate
schedule is its own. What must agree across seeds is the *batch* size
(``min(batch_size, set size)``); a ``ValueError`` says so otherwise.

Memory: the vmapped program holds N states (parameters, optimizer and method
state) and, unless every seed has the same data, N copies of D_f and D_r.

**Devices.** With ``mesh=make_mesh()`` (a 1-D :class:`jax.sharding.Mesh`
named ``"data"`` over all devices) the state and the data are replicated and
each batch's indices are split along ``"data"``; ``jax.jit`` propagates the
sharding, so every device computes its slice of the batch and the gradients
(and BatchNorm statistics) are all-reduced by XLA. No ``pmap``: the step is
the same function on 1 or N devices and gives the same numbers up to float
rounding. :func:`oeu_jax.train.fit` and :func:`oeu_jax.unlearn.unlearn` take
the same ``mesh`` argument. A batch that the devices do not divide is
replicated (correct, not parallel).

**Multi-host (TPU pods, multi-node GPU).** Run the same program on every
host and call ``jax.distributed.initialize()`` first (on Cloud TPU it needs
no arguments; elsewhere pass ``coordinator_address``, ``num_processes`` and
``process_id``). ``jax.devices()`` then lists the devices of all hosts and
:func:`oeu_jax.mesh.make_mesh` spans them. Every host loads the same dataset and computes
the same batch indices (a pure function of seed and step), and
``jax.device_put`` with a ``NamedSharding`` places only the shards its own
devices hold. Orbax checkpoints of these global arrays are written
collectively (call the save on every host). Not tested here: this machine
has one host and CPU only.

Examples:
  >>> import numpy as np
  >>> from oeu_jax import models, seeds, train
  >>> model = models.build_model("cnn", num_classes=2, bits="float",
  ...                            features=(4, 4), hidden=8)
  >>> x = np.random.default_rng(0).random((16, 8, 8, 1), np.float32)
  >>> y = np.arange(16, dtype=np.int32) % 2
  >>> cfg = train.TrainConfig(epochs=1, batch_size=8)
  >>> results = seeds.fit_seeds(model, x, y, config=cfg, seeds=(0, 1))
  >>> [int(r.state.step) for r in results]
  [2, 2]
"""

import logging
import time
from typing import Any
from typing import Callable
from typing import Optional
from typing import Sequence

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from oeu_jax import checkpointing
from oeu_jax import data as data_lib
from oeu_jax import mesh as mesh_lib
from oeu_jax import methods as methods_lib
from oeu_jax import train as train_lib
from oeu_jax import unlearn as unlearn_lib

Array = jax.Array

# Steps per compiled chunk when nothing is checkpointed: bounds the host
# index arrays (steps x seeds x batch int32) and the scanned metrics.
MAX_CHUNK = 1000


# --------------------------------------------------------------------------
# Shared machinery


def cosine_schedule(lr: float, total: Array) -> optax.Schedule:
  """``optax.cosine_decay_schedule(lr, total)`` with a traced ``total``.

  The same arithmetic as optax (float32), so a seed's learning rates are
  those of its sequential run even when seeds have different step counts.
  """
  decay = jnp.maximum(total, 1).astype(jnp.float32)

  def schedule(count):
    count = jnp.minimum(count, decay)
    cosine_decay = 0.5 * (1 + jnp.cos(jnp.pi * count / decay))
    return lr * ((1 - 0.0) * cosine_decay**1.0 + 0.0)

  return schedule


def _pad_leaf(x, shape):
  x = jnp.asarray(x)
  if x.shape == tuple(shape):
    return x
  return jnp.pad(x, [(0, t - s) for s, t in zip(x.shape, shape)])


def stack_trees(trees: Sequence[Any]) -> Any:
  """Stacks pytrees on a new leading axis, zero-padding leaves to one shape.

  Padding serves per-seed arrays indexed by example (relabels of D_f, ...):
  indices stay below each seed's true size, so padded entries are never
  read.

  Raises:
    ValueError: trees of different structure, rank or dtype.
  """
  structs = [jax.tree.structure(t) for t in trees]
  if any(s != structs[0] for s in structs[1:]):
    raise ValueError(f"per-seed pytrees differ in structure: {structs[0]} vs "
                     f"{next(s for s in structs if s != structs[0])}")

  def stack(*leaves):
    ranks = {np.ndim(v) for v in leaves}
    dtypes = {jnp.result_type(v) for v in leaves}
    if len(ranks) > 1 or len(dtypes) > 1:
      raise ValueError(f"per-seed leaves differ in rank or dtype: "
                       f"{[(np.shape(v), jnp.result_type(v)) for v in leaves]}")
    shape = np.max([np.shape(v) for v in leaves], axis=0) if ranks != {0} \
        else ()
    return jnp.stack([_pad_leaf(v, shape) for v in leaves])

  return jax.tree.map(stack, *trees)


def unstack(tree: Any, i: int) -> Any:
  """Seed ``i``'s slice of a stacked pytree."""
  return jax.tree.map(lambda a: a[i], tree)


def _all_equal(trees: Sequence[Any]) -> bool:
  first = jax.tree.leaves(trees[0])
  for t in trees[1:]:
    leaves = jax.tree.leaves(t)
    if t is trees[0]:
      continue
    if len(leaves) != len(first) or any(
        np.shape(a) != np.shape(b) or not bool(jnp.array_equal(a, b))
        for a, b in zip(first, leaves)):
      return False
  return True


def _check_seeds(seeds: Sequence[int], n: int, what: str) -> list:
  seeds = [int(s) for s in seeds]
  if len(seeds) != n:
    raise ValueError(f"got {len(seeds)} seeds for {n} {what}")
  if not seeds:
    raise ValueError("need at least one seed")
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds must be distinct, got {seeds}")
  return seeds


def _common_batch(sizes: Sequence[int], name: str) -> int:
  if len(set(sizes)) > 1:
    raise ValueError(
        f"the {name} batch sizes differ across seeds ({sorted(set(sizes))}: "
        f"a set smaller than batch_size gives a short batch); vmapped seeds "
        f"need one batch size: lower batch_size or run these seeds "
        f"sequentially")
  return sizes[0]


def _looped_conv(params: dict) -> Callable:
  """``conv_general_dilated`` with ``params``; vmapped as one call per seed.

  The loop is unrolled (not ``lax.map``): inside a while loop XLA's CPU
  backend leaves gradient convolutions in layouts it runs slowly.
  """

  def bind(lhs, rhs):
    return jax.lax.conv_general_dilated_p.bind(lhs, rhs, **params)

  conv = jax.custom_batching.custom_vmap(bind)

  @conv.def_vmap
  def _rule(axis_size, in_batched, lhs, rhs):
    lhs_b, rhs_b = in_batched
    outs = [bind(lhs[i] if lhs_b else lhs, rhs[i] if rhs_b else rhs)
            for i in range(axis_size)]
    return jnp.stack(outs), True

  return conv


def _eval_jaxpr(jaxpr, consts, *args):
  """``jax.core.eval_jaxpr``, with every convolution run seed by seed.

  Under ``jax.vmap`` a convolution whose input and kernel both carry the
  seed axis becomes a grouped convolution, which XLA's CPU backend expands
  into a dense one N times larger (N seeds cost N^2). Binding it through
  ``jax.custom_batching.sequential_vmap`` loops over the seeds instead,
  inside the same program; every other operation stays vmapped. Nested
  ``jit`` calls are inlined so their convolutions are reached too.
  """
  env = {}

  def read(v):
    return v.val if isinstance(v, jex.core.Literal) else env[v]

  for v, c in zip(jaxpr.constvars, consts):
    env[v] = c
  for v, a in zip(jaxpr.invars, args):
    env[v] = a
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    prim = eqn.primitive
    if prim is jax.lax.conv_general_dilated_p:
      outs = [_looped_conv(eqn.params)(*invals)]
    elif prim.name in ("pjit", "jit"):
      inner = eqn.params["jaxpr"]
      outs = _eval_jaxpr(inner.jaxpr, inner.consts, *invals)
    else:
      with eqn.ctx.manager:  # As jax.core.eval_jaxpr (compute_on, ...).
        outs = prim.bind(*invals, **prim.get_bind_params(eqn.params))
      if not prim.multiple_results:
        outs = [outs]
    for v, o in zip(eqn.outvars, outs):
      env[v] = o
  return [read(v) for v in jaxpr.outvars]


def _seedwise_convs(fn: Callable) -> Callable:
  """``fn`` re-traced so that, under ``jax.vmap``, convolutions loop."""

  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    outs = _eval_jaxpr(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

  return wrapped


class _Driver:
  """Runs a vmapped, scanned step over absolute steps ``[g0, g1)``.

  Seed ``i`` is active on steps ``starts[i] <= g < totals[i]``; an inactive
  seed's state passes through unchanged.
  """

  def __init__(self, one_step: Callable, data_axes: Any, *, mesh, name: str,
               seedwise_convs: bool):
    self.mesh, self.name = mesh, name
    self.compiled = {}
    self.compile_seconds = 0.0

    def masked(state, total, data, idx, active):
      new, m = one_step(state, total, data, idx)
      return jax.tree.map(lambda a, b: jnp.where(active, a, b), new,
                          state), m

    vstep = jax.vmap(_seedwise_convs(masked) if seedwise_convs else masked,
                     in_axes=(0, 0, data_axes, 0, 0))

    def chunk(state, totals, data, idx_seq, active_seq):
      return jax.lax.scan(
          lambda s, xs: vstep(s, totals, data, *xs), state,
          (idx_seq, active_seq))

    self.fn = jax.jit(chunk, donate_argnums=(0,),
                      **mesh_lib.replicated_outputs(mesh))

  def run(self, state, totals, data, idx_seq, active_seq):
    length = active_seq.shape[0]
    idx_seq = jax.tree.map(
        lambda a: mesh_lib.shard_batch(self.mesh, a, axis=a.ndim - 1),
        idx_seq)
    active_seq = mesh_lib.replicate(self.mesh, jnp.asarray(active_seq))
    if length not in self.compiled:
      t0 = time.perf_counter()
      self.compiled[length] = self.fn.lower(state, totals, data, idx_seq,
                                            active_seq).compile()
      self.compile_seconds += time.perf_counter() - t0
    return self.compiled[length](state, totals, data, idx_seq, active_seq)


def _resolve_seedwise(flag: Optional[bool]) -> bool:
  return jax.default_backend() == "cpu" if flag is None else bool(flag)


def _chunks(g0: int, g1: int, size: int):
  """``[a, b)`` pieces of ``[g0, g1)`` ending on multiples of ``size``."""
  g = g0
  while g < g1:
    b = min(g1, (g // size + 1) * size)
    yield g, b
    g = b


def _restore_all(dirs, templates, totals, resume):
  """Per seed: restores its latest checkpoint (if any); returns starts."""
  states, starts = [], []
  for d, st, total in zip(dirs, templates, totals):
    last = train_lib.resume_step(d, total, resume=resume)
    if last is not None:
      st = checkpointing.restore_checkpoint(d, st, step=last)
    states.append(st)
    starts.append(int(st.step))
  return states, starts


def _loop(driver: _Driver, state, totals, starts, data, indices_of, *,
          seeds, checkpoint_dirs, checkpoint_every, progress, desc,
          on_metrics):
  """The host loop: chunks, non-finite checks, checkpoints; returns state,
  the wall seconds without compilation."""
  n = len(seeds)
  g0 = min(starts)
  g1 = max(totals)
  size = checkpoint_every if any(checkpoint_dirs) else MAX_CHUNK
  bar = None
  if progress and g1 > g0:
    from tqdm.auto import tqdm  # Only the CLI shows bars.
    bar = tqdm(total=g1 - g0, desc=desc, leave=False)
  t_compile0 = driver.compile_seconds
  t0 = time.perf_counter()
  tot_dev = mesh_lib.replicate(driver.mesh, jnp.asarray(totals, jnp.int32))
  for a, b in _chunks(g0, g1, size):
    steps = np.arange(a, b)
    active = ((steps[:, None] >= np.asarray(starts)[None])
              & (steps[:, None] < np.asarray(totals)[None]))
    if not active.any():  # Between one seed's end and another's restart.
      if bar is not None:
        bar.update(b - a)
      continue
    per_step = [[indices_of(i, int(g)) if active[k, i] else None
                 for i in range(n)] for k, g in enumerate(steps)]
    idx_seq = _stack_indices(per_step)
    state, m = driver.run(state, tot_dev, data, idx_seq, active)
    m = jax.device_get(m)
    finite = np.asarray(m["finite"], bool)
    bad = active & ~finite
    on_metrics(m, active & finite, bad, a)
    for i in range(n):
      ckpt = checkpoint_dirs[i]
      if ckpt is not None and b % checkpoint_every == 0 and \
          starts[i] < b <= totals[i] and active[:, i].any():
        checkpointing.save_checkpoint(ckpt, b, unstack(state, i))
    if bar is not None:
      bar.update(b - a)
  jax.block_until_ready(state)
  if bar is not None:
    bar.close()
  seconds = time.perf_counter() - t0 - (driver.compile_seconds - t_compile0)
  for i, ckpt in enumerate(checkpoint_dirs):
    if ckpt is not None and checkpointing.latest_step(ckpt) != totals[i]:
      checkpointing.save_checkpoint(ckpt, totals[i], unstack(state, i))
  return state, seconds


def _stack_indices(per_step):
  """``(steps, seeds, batch)`` arrays; an inactive seed's entry is zeros."""
  template = next(v for row in per_step for v in row if v is not None)
  out = []
  for part in range(len(template)):
    shape = template[part].shape
    out.append(np.stack([np.stack([
        v[part] if v is not None else np.zeros(shape, np.int32)
        for v in row]) for row in per_step]).astype(np.int32))
  return tuple(out)


def _nonfinite_error(bad, seeds, g0, what, dirs):
  k, i = map(int, np.argwhere(bad)[0])
  return FloatingPointError(
      f"{what} (seed {seeds[i]}): non-finite loss or update at step "
      f"{g0 + k}{train_lib.kept_note(dirs[i])}")


# --------------------------------------------------------------------------
# Unlearning


def unlearn_seeds(method: methods_lib.Method, model,
                  params_list: Sequence[Any], batch_stats_list: Sequence[Any],
                  data_list: Sequence[unlearn_lib.UnlearnData], *,
                  config: unlearn_lib.UnlearnConfig = (
                      unlearn_lib.UnlearnConfig()),
                  num_classes: int, seeds: Sequence[int],
                  checkpoint_dirs: Optional[Sequence[Optional[str]]] = None,
                  progress: bool = False, resume: bool = True,
                  mesh: Optional[Mesh] = None,
                  seedwise_convs: Optional[bool] = None
                  ) -> list[unlearn_lib.UnlearnResult]:
  """Runs ``method`` for N seeds as one vmapped, jitted program.

  Seed ``i`` starts from ``params_list[i]`` on ``data_list[i]`` with seed
  ``seeds[i]``; its result equals
  ``unlearn.unlearn(method, model, params_list[i], batch_stats_list[i],
  data_list[i], config=config, num_classes=num_classes, seed=seeds[i])``
  up to float rounding. ``method.prepare`` runs per seed, on that seed's
  unpadded data.

  Args:
    method: from :func:`oeu_jax.methods.build_method`.
    model: the Flax module.
    params_list: each seed's Original parameters.
    batch_stats_list: each seed's BatchNorm statistics (``{}`` when none).
    data_list: each seed's D_f and D_r (:func:`oeu_jax.unlearn.make_data`).
      When they are all equal (class-wise forgetting), one copy is shared.
    config: budget and schedule (as :func:`oeu_jax.unlearn.unlearn`).
    num_classes: K.
    seeds: one per entry of ``params_list``.
    checkpoint_dirs: per seed, a directory or None; as in
      :func:`oeu_jax.unlearn.unlearn` (a finished run found there is kept,
      an unfinished one resumed), and compatible with its checkpoints.
    progress: tqdm bar.
    resume: as in :func:`oeu_jax.unlearn.unlearn`.
    mesh: data parallelism over devices (:func:`oeu_jax.mesh.make_mesh`).
    seedwise_convs: run convolutions seed by seed inside the program
      instead of as one grouped convolution (see :func:`_eval_jaxpr`);
      ``None``: on the CPU backend only, where it is much faster.

  Returns:
    One :class:`oeu_jax.unlearn.UnlearnResult` per seed. ``seconds`` and
    ``compile_seconds`` are the joint run's divided among the seeds that
    ran (the amortized cost of one seed).

  Raises:
    ValueError: bad config; list lengths or seeds that do not match; per-seed
      batch sizes that differ; an unfinished run with ``resume=False``.
    CheckpointError: a corrupt or mismatched checkpoint.
    FloatingPointError: a non-finite loss or update (naming the seed and
      step) unless ``config.skip_nonfinite``.
  """
  unlearn_lib.validate_config(config)
  n = len(params_list)
  seeds = _check_seeds(seeds, n, "parameter sets")
  if len(batch_stats_list) != n or len(data_list) != n:
    raise ValueError(f"need {n} batch_stats and {n} data sets, got "
                     f"{len(batch_stats_list)} and {len(data_list)}")
  dirs = list(checkpoint_dirs) if checkpoint_dirs is not None else [None] * n
  if len(dirs) != n:
    raise ValueError(f"need {n} checkpoint_dirs, got {len(dirs)}")
  sizes = [(len(d.forget_y), len(d.retain_y)) for d in data_list]
  totals = [unlearn_lib.steps_per_epoch(nf, nr, config) * int(config.epochs)
            for nf, nr in sizes]
  _common_batch([min(config.batch_size, nf) for nf, _ in sizes], "forget")
  _common_batch([min(config.batch_size, nr) for _, nr in sizes], "retain")

  inits = [unlearn_lib.init_state(method, model, p, bs, d, config=config,
                                  num_classes=num_classes, seed=s)
           for p, bs, d, s in zip(params_list, batch_stats_list, data_list,
                                  seeds)]
  states, starts = _restore_all(dirs, [st for st, _ in inits], totals,
                                resume)
  for d, s, st in zip(dirs, seeds, starts):
    if d is not None and st:
      logging.info("resumed %s seed %d from step %d", method.name, s, st)
  results: list = [None] * n
  pending = [i for i in range(n) if starts[i] < totals[i]]
  for i in range(n):
    if i not in pending:  # A finished run restored from its checkpoint.
      results[i] = unlearn_lib.UnlearnResult(states[i], 0.0, 0.0, {})
  if not pending:
    return results

  shared = _all_equal([data_list[i] for i in pending])
  if shared:
    data, data_axes = data_list[pending[0]], None
  else:
    data, data_axes = stack_trees([data_list[i] for i in pending]), 0
  state = stack_trees([states[i] for i in pending])
  state, data = mesh_lib.replicate(mesh, (state, data))
  p_totals = [totals[i] for i in pending]
  # Equal step counts (the usual case): the schedule of unlearn.init_state.
  # Otherwise each seed's own cosine, with its step count traced.
  uniform = p_totals[0] if len(set(p_totals)) == 1 else None

  def one_step(st, total, d, idx):
    schedule = (optax.cosine_decay_schedule(config.lr, max(uniform, 1))
                if uniform is not None else cosine_schedule(config.lr, total))
    tx = method.make_tx(schedule, st.method_state)
    step = unlearn_lib.make_step(method, tx,
                                 skip_nonfinite=config.skip_nonfinite)
    return step(st, *d, *idx)

  driver = _Driver(one_step, data_axes, mesh=mesh, name=method.name,
                   seedwise_convs=_resolve_seedwise(seedwise_convs))
  history = {i: [] for i in pending}
  skipped = {i: 0 for i in pending}
  p_seeds = [seeds[i] for i in pending]
  p_dirs = [dirs[i] for i in pending]

  def on_metrics(m, good, bad, g0):
    if bad.any() and not config.skip_nonfinite:
      raise _nonfinite_error(bad, p_seeds, g0, method.name, p_dirs)
    for j, i in enumerate(pending):
      skipped[i] += int(bad[:, j].sum())
      for k in np.flatnonzero(good[:, j]):
        history[i].append({key: v[k, j] for key, v in m.items()})

  def indices_of(j, g):
    nf, nr = sizes[pending[j]]
    return unlearn_lib.step_indices(nf, nr, config, p_seeds[j], g)

  state, seconds = _loop(
      driver, state, p_totals, [starts[i] for i in pending], data,
      indices_of, seeds=p_seeds, checkpoint_dirs=p_dirs,
      checkpoint_every=config.checkpoint_every, progress=progress,
      desc=f"{method.name} x{len(pending)}", on_metrics=on_metrics)
  share = 1.0 / len(pending)
  for j, i in enumerate(pending):
    hist = history[i]
    summary = {k: float(np.mean([float(h[k]) for h in hist]))
               for k in (hist[0] if hist else {}) if k != "finite"}
    if skipped[i]:
      summary["skipped_steps"] = skipped[i]
      logging.warning("%s seed %d: skipped %d steps with non-finite values",
                      method.name, seeds[i], skipped[i])
    results[i] = unlearn_lib.UnlearnResult(
        unstack(state, j), seconds * share, driver.compile_seconds * share,
        summary)
  return results


# --------------------------------------------------------------------------
# Training


def fit_seeds(model, x: np.ndarray, y: np.ndarray, *,
              config: train_lib.TrainConfig, seeds: Sequence[int],
              subsets: Optional[Sequence[np.ndarray]] = None,
              checkpoint_dirs: Optional[Sequence[Optional[str]]] = None,
              progress: bool = False, desc: str = "train",
              resume: bool = True, mesh: Optional[Mesh] = None,
              seedwise_convs: Optional[bool] = None
              ) -> list[train_lib.TrainResult]:
  """Trains ``model`` for N seeds as one vmapped, jitted program.

  Seed ``i`` trains on ``x[subsets[i]], y[subsets[i]]`` (all of ``x`` when
  ``subsets`` is None: the Original models); its result equals
  ``train.fit(model, x[subsets[i]], y[subsets[i]], config=config,
  seed=seeds[i])`` up to float rounding. The data is stored once: each
  seed's batch indices are mapped through its subset.

  Args:
    model: a Flax module from :func:`oeu_jax.models.build_model`.
    x: ``(N, H, W, C)`` finite images shared by all seeds.
    y: ``(N,)`` int labels.
    config: the recipe (as :func:`oeu_jax.train.fit`).
    seeds: one per run; each seeds initialization, batch order and
      augmentation.
    subsets: per seed, indices into ``x`` of its training set (Retrain:
      ``split.retain_idx``); None: every seed trains on all of ``x``.
    checkpoint_dirs: per seed, a directory or None (as
      :func:`oeu_jax.train.fit`, compatible with its checkpoints).
    progress: tqdm bar.
    desc: progress-bar label.
    resume: as in :func:`oeu_jax.train.fit`.
    mesh: data parallelism over devices (:func:`oeu_jax.mesh.make_mesh`).
    seedwise_convs: run convolutions seed by seed inside the program
      instead of as one grouped convolution (see :func:`_eval_jaxpr`);
      ``None``: on the CPU backend only, where it is much faster.

  Returns:
    One :class:`oeu_jax.train.TrainResult` per seed; ``seconds`` and
    ``compile_seconds`` are the joint run's divided among the seeds that
    ran.

  Raises:
    ValueError: bad config or data; per-seed batch sizes that differ.
    CheckpointError: a corrupt or mismatched checkpoint.
    FloatingPointError: a non-finite loss, gradient or parameter (naming the
      seed and step) unless ``config.skip_nonfinite``.
  """
  train_lib.validate_config(config)
  x, y = data_lib.validate_arrays(
      x, y, getattr(model, "num_classes", None) or
      max(2, int(np.max(y, initial=0)) + 1))
  seeds = [int(s) for s in seeds]
  if subsets is None:
    subsets = [None] * len(seeds)
  seeds = _check_seeds(seeds, len(subsets), "subsets")
  subsets = [np.arange(len(x)) if s is None else np.asarray(s)
             for s in subsets]
  for s in subsets:
    if len(s) == 0:
      raise ValueError("need a non-empty training set, got 0 examples")
    if s.ndim != 1 or not np.issubdtype(s.dtype, np.integer) or \
        s.min() < 0 or s.max() >= len(x):
      raise ValueError(f"subsets must be 1-D integer indices in "
                       f"[0, {len(x)})")
  n = len(seeds)
  dirs = list(checkpoint_dirs) if checkpoint_dirs is not None else [None] * n
  if len(dirs) != n:
    raise ValueError(f"need {n} checkpoint_dirs, got {len(dirs)}")
  sizes = [len(s) for s in subsets]
  _common_batch([min(config.batch_size, m) for m in sizes], "training")
  totals = [train_lib.steps_per_epoch(m, config.batch_size)
            * int(config.epochs) for m in sizes]
  txs = [train_lib.make_optimizer(config, t) for t in totals]
  inits = [train_lib.init_state(model, jax.random.PRNGKey(s), x.shape[1:],
                                tx) for s, tx in zip(seeds, txs)]
  states, starts = _restore_all(dirs, inits, totals, resume)
  results: list = [None] * n
  pending = [i for i in range(n) if starts[i] < totals[i]]
  for i in range(n):
    if i not in pending:
      results[i] = train_lib.TrainResult(states[i], 0.0, 0.0,
                                         np.zeros((0,), np.float32))
  if not pending:
    return results

  data = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32))
  state = stack_trees([states[i] for i in pending])
  state, data = mesh_lib.replicate(mesh, (state, data))
  p_totals = [totals[i] for i in pending]
  uniform = txs[pending[0]] if len(set(p_totals)) == 1 else None

  def one_step(st, total, d, idx):
    tx = uniform if uniform is not None else train_lib.sgd(
        cosine_schedule(config.lr, total), momentum=config.momentum,
        weight_decay=config.weight_decay)
    step = train_lib.make_train_step(model, tx, augment=config.augment,
                                     skip_nonfinite=config.skip_nonfinite)
    return step(st, *d, *idx)

  driver = _Driver(one_step, None, mesh=mesh, name=desc,
                   seedwise_convs=_resolve_seedwise(seedwise_convs))
  losses_seen = {i: [] for i in pending}
  skipped = {i: 0 for i in pending}
  p_seeds = [seeds[i] for i in pending]
  p_dirs = [dirs[i] for i in pending]

  def on_metrics(m, good, bad, g0):
    if bad.any() and not config.skip_nonfinite:
      raise _nonfinite_error(bad, p_seeds, g0, desc, p_dirs)
    active = good | bad
    for j, i in enumerate(pending):
      skipped[i] += int(bad[:, j].sum())
      losses_seen[i].extend(m["loss"][active[:, j], j].tolist())

  def indices_of(j, g):
    i = pending[j]
    local = train_lib.batch_indices(sizes[i], config.batch_size, seeds[i], g)
    return (subsets[i][local].astype(np.int32),)

  state, seconds = _loop(
      driver, state, p_totals, [starts[i] for i in pending], data,
      indices_of, seeds=p_seeds, checkpoint_dirs=p_dirs,
      checkpoint_every=config.checkpoint_every, progress=progress,
      desc=f"{desc} x{len(pending)}", on_metrics=on_metrics)
  share = 1.0 / len(pending)
  for j, i in enumerate(pending):
    if skipped[i]:
      logging.warning("%s seed %d: skipped %d steps with non-finite values",
                      desc, seeds[i], skipped[i])
    results[i] = train_lib.TrainResult(
        unstack(state, j), seconds * share, driver.compile_seconds * share,
        np.asarray(losses_seen[i], np.float32), skipped[i])
  return results
