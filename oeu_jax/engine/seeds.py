"""Many seeds in one compiled program (vmap over seeds, scan over steps).

**Seeds.** :func:`unlearn_seeds` and :func:`fit_seeds` run N seeds (each its
own Original parameters, split, batch order and rng) as one jitted program:
the pure step of :func:`oeu_jax.engine.unlearn.make_step` (or
:func:`oeu_jax.engine.train.make_train_step`) is ``jax.vmap``-ed over a leading
seed axis of the state and of the per-seed data, and ``jax.lax.scan``-ned
over a chunk of steps, so a chunk of N seeds costs one dispatch. Batch order
is each seed's own (:func:`oeu_jax.engine.unlearn.step_indices`,
:func:`oeu_jax.engine.train.batch_indices`), computed on the host exactly as the
sequential loops do, so each seed's result equals its sequential run's up to
float rounding (vmapped kernels may sum in another order). Float models
agree to about 1e-6 (relative, parameters); in quantized training a
rounding difference can move a weight across a 4-bit step, so after a few
epochs W4A8 parameters differ by up to about 1e-2 and a borderline test
example may change class, as between any two runs that differ by one ulp.
The host loop is :func:`oeu_jax.engine.loop.run`, shared with the sequential
runs; the vmapped executor (and its speed) is :mod:`oeu_jax.engine.lanes`.

Sets of different sizes are padded to one (batch indices come from each
seed's true sizes, so padding is never read); seeds with different step
counts run as separate programs, each with its own cosine schedule. The
*batch* size (``min(batch_size, set size)``) must agree across seeds. The
program holds N states and, unless the seeds share their data, N copies of
D_f and D_r.

**Devices.** ``mesh=`` (:func:`oeu_jax.engine.mesh.make_mesh`) works as in
the sequential loops (state and data replicated, batch indices split).

Examples:
  >>> import numpy as np
  >>> from oeu_jax.engine import seeds, train
  >>> from oeu_jax.nn import models
  >>> model = models.build_model("cnn", num_classes=2, bits="float",
  ...                            features=(4, 4), hidden=8)
  >>> x = np.random.default_rng(0).random((16, 8, 8, 1), np.float32)
  >>> y = np.arange(16, dtype=np.int32) % 2
  >>> cfg = train.TrainConfig(epochs=1, batch_size=8)
  >>> results = seeds.fit_seeds(model, x, y, config=cfg, seeds=(0, 1))
  >>> [int(r.state.step) for r in results]
  [2, 2]
"""

from typing import Any
from typing import Callable
from typing import Optional
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from oeu_jax.algorithm import methods as methods_lib
from oeu_jax.algorithm import optim
from oeu_jax.engine import executors
from oeu_jax.engine import lanes as lanes_lib
from oeu_jax.engine import loop
from oeu_jax.engine import mesh as mesh_lib
from oeu_jax.engine import seedwise_conv
from oeu_jax.engine import train as train_lib
from oeu_jax.engine import unlearn as unlearn_lib

# Part of this module's API.
from oeu_jax.engine.lanes import stack_trees as stack_trees
from oeu_jax.engine.lanes import unstack as unstack

# Steps per compiled chunk when nothing is checkpointed: bounds the host
# index arrays (steps x seeds x batch int32) and the scanned metrics.
MAX_CHUNK = 1000


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


def _drive(one_step: Callable, states: list, datas: list, indices: Callable,
           *, lanes: list, starts: list, totals: list, dirs: list,
           config, mesh, seedwise_convs: Optional[bool], progress: bool,
           desc: str, seeds: list, what: str, stop: Optional[Callable] = None,
           programs: Optional[executors.Programs] = None,
           kind_of: Optional[Callable[[int, int], Any]] = None,
           sizes: Optional[Callable[[], dict]] = None) -> dict:
  """Runs the pending lanes, one vmapped program per step count.

  ``one_step(st, d, idx, total)`` is a lane's step, or ``{kind: one_step}``
  with ``kind_of(lane, g)`` naming lane ``lane``'s kind at step ``g`` and
  ``sizes()`` each kind's longest run (:class:`oeu_jax.engine.lanes.Executor`).

  ``datas[i]`` is lane ``i``'s data, or all ``None`` but ``datas[0]`` when
  every lane shares one copy. Returns ``{lane: (state, seconds,
  compile_seconds, metrics, skipped, stopped)}`` with the times divided
  among the lanes of a program; ``stopped`` is the step at which lane
  ``i``'s stopping rule ``stop(i, lane_state)`` (checked every
  ``config.stop_every`` steps) ended it, or None. ``programs`` shares
  the compiled chunk with other calls of the same shapes.
  """
  seedwise = (seedwise_conv.use_by_default() if seedwise_convs is None
              else bool(seedwise_convs))
  out = {}
  for total in sorted({totals[i] for i in lanes}):
    group = [i for i in lanes if totals[i] == total]
    if datas[0] is not None and all(d is None for d in datas[1:]):
      data, data_axes = datas[0], None
    else:
      data, data_axes = lanes_lib.stack_trees([datas[i] for i in group]), 0
    state = lanes_lib.stack_trees([states[i] for i in group])
    state, data = mesh_lib.replicate(mesh, (state, data))
    dirs_g = [dirs[i] for i in group]
    chunk = config.checkpoint_every if any(dirs_g) else MAX_CHUNK
    stop_every = getattr(config, "stop_every", 0) if stop else 0
    steps = {k: (lambda st, d, idx, f=f, t=total: f(st, d, idx, t))
             for k, f in executors.as_steps(one_step).items()}
    execute = lanes_lib.Executor(
        steps if isinstance(one_step, dict) else steps[None], data,
        data_axes, lambda j, g: indices(group[j], g), mesh=mesh,
        seedwise=seedwise, programs=programs,
        cap=min([chunk, total] + ([stop_every] if stop_every else [])),
        kind_of=(None if kind_of is None else
                 lambda j, g, group=group: kind_of(group[j], g)),
        sizes=sizes)
    res = loop.run(
        execute, state, starts=[starts[i] for i in group],
        totals=[total] * len(group), checkpoint_dirs=dirs_g,
        checkpoint_every=config.checkpoint_every, chunk=chunk,
        lane=lanes_lib.unstack, skip_nonfinite=config.skip_nonfinite,
        failure=lambda j, s: (f"{desc} (seed {seeds[group[j]]}): non-finite "
                              f"{what} at step {s}"),
        progress=progress, desc=f"{desc} x{len(group)}",
        stop=(None if stop is None else
              lambda st, j, group=group: stop(group[j], st)),
        stop_every=getattr(config, "stop_every", 0))
    share = 1.0 / len(group)
    for j, i in enumerate(group):
      out[i] = (lanes_lib.unstack(res.state, j), res.seconds * share,
                res.compile_seconds * share, res.metrics[j], res.skipped[j],
                res.stopped[j])
  return out


def _dirs(checkpoint_dirs, n: int) -> list:
  dirs = list(checkpoint_dirs or [None] * n)
  if len(dirs) != n:
    raise ValueError(f"need {n} checkpoint_dirs, got {len(dirs)}")
  return dirs


# Unlearning


def unlearn_seeds(method: methods_lib.Method, model,
                  params_list: Sequence[Any], batch_stats_list: Sequence[Any],
                  data_list: Sequence[unlearn_lib.UnlearnData], *,
                  config: unlearn_lib.UnlearnConfig = (
                      unlearn_lib.UnlearnConfig()),
                  num_classes: int, seeds: Sequence[int],
                  checkpoint_dirs: Optional[Sequence[Optional[str]]] = None,
                  progress: bool = False, resume: bool = True,
                  mesh: Optional[jax.sharding.Mesh] = None,
                  seedwise_convs: Optional[bool] = None,
                  programs: Optional[executors.Programs] = None,
                  stop_rules: Optional[list] = None
                  ) -> list[unlearn_lib.UnlearnResult]:
  """Runs ``method`` for N seeds as one vmapped, jitted program.

  Seed ``i`` starts from ``params_list[i]`` on ``data_list[i]`` with seed
  ``seeds[i]``; its result equals
  ``unlearn.unlearn(method, model, params_list[i], batch_stats_list[i],
  data_list[i], config=config, num_classes=num_classes, seed=seeds[i])``
  up to float rounding. ``method.prepare`` runs per seed, on that seed's
  unpadded data.

  Args:
    method: from :func:`oeu_jax.algorithm.methods.build_method`.
    model: the Flax module.
    params_list: each seed's Original parameters.
    batch_stats_list: each seed's BatchNorm statistics (``{}`` when none).
    data_list: each seed's D_f and D_r
    (:func:`oeu_jax.engine.unlearn.make_data`).
      When they are all equal (class-wise forgetting), one copy is shared.
    config: budget and schedule (as :func:`oeu_jax.engine.unlearn.unlearn`).
    num_classes: K.
    seeds: one per entry of ``params_list``.
    checkpoint_dirs: per seed, a directory or None; as in
      :func:`oeu_jax.engine.unlearn.unlearn` (a finished run found there is
      kept, an unfinished one resumed), and compatible with its checkpoints.
    progress: tqdm bar.
    resume: as in :func:`oeu_jax.engine.unlearn.unlearn`.
    mesh: data parallelism over devices (:func:`oeu_jax.engine.mesh.make_mesh`).
    seedwise_convs: convolutions seed by seed, not grouped
      (:mod:`oeu_jax.engine.seedwise_conv`); ``None``: on CPU only (faster).
    programs: compiled programs shared with other calls
      (:class:`oeu_jax.engine.executors.Programs`): a later chunk of seeds with
      the same shapes (seed count, set sizes, budget) compiles nothing.
    stop_rules: per seed, ``stop_rule`` of
      :func:`oeu_jax.engine.unlearn.unlearn`.

  Returns:
    One :class:`oeu_jax.engine.unlearn.UnlearnResult` per seed. ``seconds`` and
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
  config = unlearn_lib.resolve(config, method)
  n = len(params_list)
  seeds = _check_seeds(seeds, n, "parameter sets")
  if len(batch_stats_list) != n or len(data_list) != n:
    raise ValueError(f"need {n} batch_stats and {n} data sets, got "
                     f"{len(batch_stats_list)} and {len(data_list)}")
  dirs = _dirs(checkpoint_dirs, n)
  sizes = [(len(d.forget_y), len(d.retain_y)) for d in data_list]
  totals = [unlearn_lib.total_steps(d, config) for d in data_list]
  _common_batch([min(config.forget_batch_size or config.batch_size, nf)
                 for nf, _ in sizes], "forget")
  _common_batch([min(config.batch_size, nr) for _, nr in sizes], "retain")
  for d, total in zip(dirs, totals):  # Before any (costly) prepare.
    loop.resume_step(d, total, resume=resume)
  states = []
  for p, bs, d, s, ckpt, total in zip(params_list, batch_stats_list,
                                      data_list, seeds, dirs, totals):
    st, _ = unlearn_lib.init_state(method, model, p, bs, d, config=config,
                                   num_classes=num_classes, seed=s)
    states.append(loop.restore(st, ckpt, total, resume=resume,
                               desc=f"{method.name} seed {s}"))
  starts = [int(st.step) for st in states]
  pending = [i for i in range(n) if starts[i] < totals[i]
             and loop.stopped_at(dirs[i]) != starts[i]]
  shared = len(pending) > 0 and lanes_lib.all_equal(
      [data_list[i] for i in pending])
  datas = ([data_list[pending[0]]] + [None] * (n - 1) if shared
           else list(data_list))

  def one_step(kind):
    def fn(st, d, idx, total):
      tx = method.make_tx(
          optim.cosine(config.lr, total),
          st.method_state)
      step = unlearn_lib.make_step(method, tx,
                                   skip_nonfinite=config.skip_nonfinite,
                                   kind=kind)
      return step(st, *d, *idx)
    return fn

  def indices(i, g):
    nf, nr = sizes[i]
    return unlearn_lib.step_indices(nf, nr, config, seeds[i], g)

  def kind_of(i, g):
    nf, nr = sizes[i]
    return unlearn_lib.step_kind(nf, nr, config, g, method.paired_kind)

  def kind_sizes():
    runs = [unlearn_lib.kind_runs(*sizes[i], config, method.paired_kind)
            for i in pending]
    return {k: max(r.get(k, 0) for r in runs) for k in unlearn_lib.KINDS}

  rules = list(stop_rules or [None] * n)
  checks = [unlearn_lib.stop_check(model, config, d, r, warm=st)
            for d, r, st in zip(data_list, rules, states, strict=True)]
  ran = _drive({k: one_step(k) for k in unlearn_lib.KINDS}, states, datas,
               indices, lanes=pending, kind_of=kind_of, sizes=kind_sizes,
               starts=starts, totals=totals, dirs=dirs, config=config,
               mesh=mesh, seedwise_convs=seedwise_convs, progress=progress,
               desc=method.name, seeds=seeds, what="loss or update",
               stop=(None if checks[0] is None else
                     lambda i, st: checks[i](st, i)), programs=programs)
  results = []
  for i in range(n):
    if i not in ran:  # A finished run restored from its checkpoint.
      results.append(unlearn_lib.UnlearnResult(states[i], 0.0, 0.0, {}))
      continue
    state, seconds, compile_s, m, skipped, stopped = ran[i]
    results.append(unlearn_lib.UnlearnResult(
        state, seconds, compile_s,
        unlearn_lib.summarize(m, skipped, stopped)))
  return results


# --------------------------------------------------------------------------
# Training


def fit_seeds(model, x: np.ndarray, y: np.ndarray, *,
              config: train_lib.TrainConfig, seeds: Sequence[int],
              subsets: Optional[Sequence[np.ndarray]] = None,
              checkpoint_dirs: Optional[Sequence[Optional[str]]] = None,
              progress: bool = False, desc: str = "train",
              resume: bool = True, mesh: Optional[jax.sharding.Mesh] = None,
              seedwise_convs: Optional[bool] = None,
              programs: Optional[executors.Programs] = None
              ) -> list[train_lib.TrainResult]:
  """Trains ``model`` for N seeds as one vmapped, jitted program.

  Seed ``i`` trains on ``x[subsets[i]], y[subsets[i]]`` (all of ``x`` when
  ``subsets`` is None: the Original models); its result equals
  ``train.fit(model, x[subsets[i]], y[subsets[i]], config=config,
  seed=seeds[i])`` up to float rounding. The data is stored once: each
  seed's batch indices are mapped through its subset.

  Args:
    model: a Flax module from :func:`oeu_jax.nn.models.build_model`.
    x: ``(N, H, W, C)`` finite images shared by all seeds.
    y: ``(N,)`` int labels.
    config: the recipe (as :func:`oeu_jax.engine.train.fit`).
    seeds: one per run; each seeds initialization, batch order and
      augmentation.
    subsets: per seed, indices into ``x`` of its training set (Retrain:
      ``split.retain_idx``); None: every seed trains on all of ``x``.
    checkpoint_dirs: per seed, a directory or None (as
      :func:`oeu_jax.engine.train.fit`, compatible with its checkpoints).
    progress: tqdm bar.
    desc: progress-bar label.
    resume: as in :func:`oeu_jax.engine.train.fit`.
    mesh: data parallelism over devices (:func:`oeu_jax.engine.mesh.make_mesh`).
    seedwise_convs: as in :func:`unlearn_seeds`.
    programs: as in :func:`unlearn_seeds`.

  Returns:
    One :class:`oeu_jax.engine.train.TrainResult` per seed; ``seconds`` and
    ``compile_seconds`` are the joint run's divided among the seeds that
    ran.

  Raises:
    ValueError: bad config or data; per-seed batch sizes that differ.
    CheckpointError: a corrupt or mismatched checkpoint.
    FloatingPointError: a non-finite loss, gradient or parameter (naming the
      seed and step) unless ``config.skip_nonfinite``.
  """
  train_lib.validate_config(config)
  x, y = train_lib.check_data(model, x, y)
  seeds = [int(s) for s in seeds]
  if subsets is None:
    subsets = [None] * len(seeds)
  seeds = _check_seeds(seeds, len(subsets), "subsets")
  subsets = [np.arange(len(x)) if s is None
             else train_lib.check_subset(s, len(x)) for s in subsets]
  n = len(seeds)
  dirs = _dirs(checkpoint_dirs, n)
  sizes = [len(s) for s in subsets]
  _common_batch([min(config.batch_size, m) for m in sizes], "training")
  totals = [train_lib.total_steps(m, config) for m in sizes]
  states = [loop.restore(
      train_lib.init_state(model, jax.random.PRNGKey(s), x.shape[1:],
                           train_lib.make_optimizer(config, total)),
      d, total, resume=resume, desc=f"{desc} seed {s}")
      for s, d, total in zip(seeds, dirs, totals)]
  starts = [int(st.step) for st in states]
  pending = [i for i in range(n) if starts[i] < totals[i]]
  data = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32))

  def one_step(st, d, idx, total):
    step = train_lib.make_train_step(
        model, train_lib.make_optimizer(config, total),
        augment=config.augment, skip_nonfinite=config.skip_nonfinite)
    return step(st, *d, *idx)

  def indices(i, g):
    return (train_lib.subset_indices(subsets[i], train_lib.batch_indices(
        sizes[i], config.batch_size, seeds[i], g)),)

  ran = _drive(one_step, states, [data] + [None] * (n - 1), indices,
               lanes=pending, starts=starts, totals=totals, dirs=dirs,
               config=config, mesh=mesh, seedwise_convs=seedwise_convs,
               progress=progress, desc=desc, seeds=seeds,
               what="loss, gradient or parameter", programs=programs)
  results = []
  for i in range(n):
    if i not in ran:  # A finished run restored from its checkpoint.
      results.append(train_lib.TrainResult(states[i], 0.0, 0.0,
                                           np.zeros((0,), np.float32)))
      continue
    state, seconds, compile_s, m, skipped, _ = ran[i]
    results.append(train_lib.TrainResult(
        state, seconds, compile_s, np.asarray(m["loss"], np.float32),
        skipped))
  return results
