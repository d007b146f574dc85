"""The shared unlearning loop: every method runs through :func:`unlearn`.

A *schedule* says which batches each step sees (``UnlearnConfig.schedule``;
``None`` takes the method's reference schedule, ``Method.schedule``):

* ``"paired"``: each step pairs one forget batch with one retain batch; an
  epoch has as many steps as the larger set has batches and the smaller set
  is cycled (``pairing="max"``), or covers D_f once (``pairing="forget"``).
  OEU and its ablations need both gradients in one step (the projection);
  NegGrad+ pairs as SCRUB's code does (``zip(D_r, cycle(D_f))``).
* ``"sequential"``: one pass over D_f, then one over D_r, per epoch (SalUn
  ``unlearn/RL.py``, Q-MUL ``unlearn/RL_min.py``); with ``forget_epochs``
  the D_f pass only happens in the first that many epochs (SCRUB's
  ``msteps`` max steps, then min steps only).
* ``"forget_only"``: D_f only (GA); ``"retain_only"``: D_r only (FT, l1).

In a forget-only step the method sees ``retain=None``, in a retain-only
step ``forget=None``. Each step *kind* (paired, forget, retain) is its own
compiled program, and the host picks a step's kind (:func:`step_kind`):
no kind is chosen inside a compiled conditional, where XLA's CPU backend
runs a CNN's convolution gradients about 40x slower than at top level (the
schedules: :mod:`oeu_jax.engine.schedule`). Batch order is a pure function
of ``(seed, epoch)``, the step's rng is ``fold_in(key, step)``, and the state is
one pytree: a run resumed from a checkpoint is bit-identical to an uninterrupted
one. Citations of the reference schedules: ``experiments/REFERENCES.md``.
"""

import dataclasses
from typing import Any
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from oeu_jax import data as data_lib
from oeu_jax import defaults
from oeu_jax.algorithm import methods as methods_lib
from oeu_jax.algorithm import optim
from oeu_jax.algorithm import transforms
from oeu_jax.engine import executors
from oeu_jax.engine import loop
from oeu_jax.engine import mesh as mesh_lib
from oeu_jax.engine import stopping

# The schedules, re-exported: part of this module's API.
from oeu_jax.engine.schedule import FORGET as FORGET
from oeu_jax.engine.schedule import KINDS as KINDS
from oeu_jax.engine.schedule import PAIRED as PAIRED
from oeu_jax.engine.schedule import PAIRINGS as PAIRINGS
from oeu_jax.engine.schedule import RETAIN as RETAIN
from oeu_jax.engine.schedule import SCHEDULES as SCHEDULES
from oeu_jax.engine.schedule import cycled_indices as cycled_indices
from oeu_jax.engine.schedule import epoch_plan as epoch_plan
from oeu_jax.engine.schedule import kind_runs as kind_runs
from oeu_jax.engine.schedule import num_steps as num_steps
from oeu_jax.engine.schedule import step_indices as step_indices
from oeu_jax.engine.schedule import step_kind as step_kind
from oeu_jax.engine.schedule import steps_per_epoch as steps_per_epoch

Array = jax.Array

@dataclasses.dataclass(frozen=True)
class UnlearnConfig:
  """The unlearning budget and schedule (Q-MUL harness defaults).

  Attributes:
    epochs: unlearning epochs (cosine schedule over all of them).
    batch_size: examples per forget batch and per retain batch (capped at
      each set's size, so a small forget set gives a full-set batch).
    lr: peak learning rate.
    pairing: with the paired schedule, ``"max"``: an epoch covers the
      larger set (default); ``"forget"``: an epoch covers the forget set
      once.
    schedule: one of :data:`SCHEDULES`; ``None``: the method's reference
      schedule (see the module docstring).
    forget_batch_size: examples per forget batch; ``None``: the method's
      own (SCRUB: 512), else ``batch_size``.
    forget_epochs: with the sequential schedule, D_f passes only in the first
      this many epochs; ``None``: the method's own (SCRUB: ``msteps``), else
      every epoch.
    checkpoint_every: steps between checkpoints when a directory is given.
    skip_nonfinite: False: a non-finite loss or update stops unlearning with
      ``FloatingPointError`` naming the step (the last good checkpoint is
      kept). True: that step's update is dropped (as with
      ``optax.apply_if_finite``) and unlearning goes on; the count is
      ``metrics["skipped_steps"]`` of the result.
    stop_when: an early-stopping rule on D_f, ``"ua>=T"`` or
      ``"entropy>=T"`` (:mod:`oeu_jax.engine.stopping`), checked every
      ``stop_every`` steps; a run that meets it ends there and reports the
      step as ``metrics["stop_step"]``. ``None`` (default): every method
      runs its whole budget, as its reference code does.
    stop_every: steps between checks of ``stop_when``.
    max_steps: end the run after this many steps (a compute cap shorter
      than one epoch, :func:`oeu_jax.engine.budget.capped`); the cosine
      schedule then spans these steps. ``None``: every epoch runs.
  """
  epochs: int = defaults.UNLEARN_FALLBACK["epochs"]
  batch_size: int = defaults.UNLEARN_FALLBACK["batch_size"]
  lr: float = defaults.UNLEARN_FALLBACK["lr"]
  pairing: str = "max"
  checkpoint_every: int = defaults.UNLEARN_CHECKPOINT_EVERY
  skip_nonfinite: bool = False
  schedule: Optional[str] = None
  forget_batch_size: Optional[int] = None
  forget_epochs: Optional[int] = None
  stop_when: Optional[str] = None
  stop_every: int = defaults.STOP_EVERY
  max_steps: Optional[int] = None


class UnlearnState(NamedTuple):
  """Everything a resumed unlearning run needs."""
  params: Any
  batch_stats: Any
  opt_state: Any
  method_state: Any
  step: Array
  rng: Array


class UnlearnResult(NamedTuple):
  state: UnlearnState
  seconds: float
  compile_seconds: float
  metrics: dict


def validate_config(config: UnlearnConfig) -> None:
  """Raises ValueError naming the first bad field."""
  loop.check_budget(config)
  if config.pairing not in PAIRINGS:
    raise ValueError(f"pairing must be one of {PAIRINGS}, got "
                     f"{config.pairing!r}")
  if config.schedule is not None and config.schedule not in SCHEDULES:
    raise ValueError(f"schedule must be one of {SCHEDULES}, got "
                     f"{config.schedule!r}")
  for name in ("forget_batch_size", "forget_epochs"):
    v = getattr(config, name)
    if v is not None and (int(v) != v or v < (1 if name[7] == "b" else 0)):
      raise ValueError(f"{name} must be an integer > 0 (or None), got {v}")
  stopping.parse(config.stop_when)
  if config.max_steps is not None and (
      int(config.max_steps) != config.max_steps or config.max_steps < 1):
    raise ValueError(f"max_steps must be an integer > 0 (or None), got "
                     f"{config.max_steps}")
  if (int(config.stop_every) != config.stop_every
      or config.stop_every <= 0):
    raise ValueError(f"stop_every must be an integer > 0, got "
                     f"{config.stop_every}")


def resolve(config: UnlearnConfig,
            method: methods_lib.Method) -> UnlearnConfig:
  """``config`` with the method's reference schedule where it says None.

  Raises:
    ValueError: a schedule the method cannot run (OEU needs paired batches).
  """
  ref = getattr(method, "schedule", "paired")
  cfg = dataclasses.replace(
      config, schedule=config.schedule or ref,
      forget_batch_size=(config.forget_batch_size
                         or getattr(method, "forget_batch_size", None)),
      forget_epochs=(config.forget_epochs if config.forget_epochs is not None
                     else getattr(method, "forget_epochs", None)))
  if cfg.schedule not in getattr(method, "schedules", ("paired",)):
    raise ValueError(f"{method.name} cannot run the {cfg.schedule!r} "
                     f"schedule; it supports {', '.join(method.schedules)}")
  return cfg


def make_step(method: methods_lib.Method, tx: optax.GradientTransformation,
              *, skip_nonfinite: bool = False, kind: int = PAIRED):
  """The pure unlearning step ``(state, fx, fy, rx, ry, fi, ri) -> state,
  m`` of one kind.

  ``(fi, ri)`` is what :func:`step_indices` gives; the method sees ``None``
  for the batch the step's ``kind`` does not visit (:data:`FORGET`: no
  retain batch, :data:`RETAIN`: no forget batch). With ``skip_nonfinite``,
  a step whose update or metrics are not finite returns the input state
  with only ``step`` advanced.
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

  def step(state: UnlearnState, fx, fy, rx, ry, f_idx, r_idx):
    fb = (None if kind == RETAIN else
          methods_lib.Batch(fx[f_idx], fy[f_idx], f_idx))
    rb = (None if kind == FORGET else
          methods_lib.Batch(rx[r_idx], ry[r_idx], r_idx))
    rng = jax.random.fold_in(state.rng, state.step)
    out = method.grads(state.params, state.batch_stats, state.method_state,
                       fb, rb, rng, state.step)
    updates, opt_state = tx.update(out.grads, state.opt_state, state.params,
                                   **out.extra)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(out.metrics)
    # The new parameters too: a finite update can still overflow them.
    metrics["finite"] = transforms.tree_is_finite(
        (updates, params, [v for v in out.metrics.values()]))
    new_state = UnlearnState(params, out.batch_stats, opt_state,
                             out.method_state, state.step + 1, state.rng)
    if skip_nonfinite:
      new_state = executors.skip_if_nonfinite(metrics["finite"], new_state,
                                              state)
    return new_state, metrics

  return step


def make_steps(method: methods_lib.Method, tx: optax.GradientTransformation,
               *, skip_nonfinite: bool = False) -> dict:
  """``{kind: make_step(..., kind=kind)}`` for every kind; an executor
  compiles only the kinds its run reaches."""
  return {k: make_step(method, tx, skip_nonfinite=skip_nonfinite, kind=k)
          for k in KINDS}


class UnlearnData(NamedTuple):
  """Device arrays of D_f and D_r."""
  forget_x: Array
  forget_y: Array
  retain_x: Array
  retain_y: Array


def make_data(x: np.ndarray, y: np.ndarray, forget_idx: np.ndarray,
              retain_idx: np.ndarray) -> UnlearnData:
  """Gathers D_f and D_r onto the device.

  Raises:
    ValueError: bad images or labels (see
      :func:`oeu_jax.data.validate_arrays`), an empty forget or retain set,
      or indices that are out of range or shared by both sets.
  """
  x, y = data_lib.validate_arrays(x, y, max(2, int(np.max(y, initial=0)) + 1))
  forget_idx, retain_idx = np.asarray(forget_idx), np.asarray(retain_idx)
  if len(forget_idx) == 0 or len(retain_idx) == 0:
    raise ValueError(f"forget and retain sets must be non-empty, got "
                     f"{len(forget_idx)} and {len(retain_idx)} examples")
  for name, idx in (("forget_idx", forget_idx), ("retain_idx", retain_idx)):
    if (idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer)
        or idx.min() < 0 or idx.max() >= len(y)):
      raise ValueError(f"{name} must be 1-D integer indices in [0, {len(y)})")
  if np.intersect1d(forget_idx, retain_idx).size:
    raise ValueError("forget_idx and retain_idx overlap")
  return UnlearnData(jnp.asarray(x[forget_idx], jnp.float32),
                     jnp.asarray(y[forget_idx], jnp.int32),
                     jnp.asarray(x[retain_idx], jnp.float32),
                     jnp.asarray(y[retain_idx], jnp.int32))


def init_state(method: methods_lib.Method, model, params, batch_stats,
               data: UnlearnData, *, config: UnlearnConfig, num_classes: int,
               seed: int):
  """Prepares the method and the initial state; returns (state, tx)."""
  config = resolve(config, method)
  nf, nr = len(data.forget_y), len(data.retain_y)
  spe = steps_per_epoch(nf, nr, config)
  total = total_steps(data, config)
  key = jax.random.PRNGKey(seed)
  k_prep, k_run = jax.random.split(key)
  mstate = method.prepare(methods_lib.PrepareInputs(
      model, params, batch_stats, data.forget_x, data.forget_y, data.retain_x,
      data.retain_y, num_classes, spe, k_prep, total))
  schedule = optim.cosine(config.lr, total)
  tx = method.make_tx(schedule, mstate)
  state = UnlearnState(params, batch_stats, tx.init(params), mstate,
                       jnp.zeros((), jnp.int32), k_run)
  return state, tx


def unlearn(method: methods_lib.Method, model, params, batch_stats,
            data: UnlearnData, *, config: UnlearnConfig = UnlearnConfig(),
            num_classes: int, seed: int = 0,
            checkpoint_dir: Optional[str] = None,
            progress: bool = False, resume: bool = True,
            mesh: Optional[jax.sharding.Mesh] = None,
            programs: Optional[executors.Programs] = None,
            stop_rule: Optional[str] = None) -> UnlearnResult:
  """Runs ``method`` from the original weights for ``config.epochs`` epochs.

  Args:
    method: from :func:`oeu_jax.algorithm.methods.build_method`.
    model: the Flax module.
    params: the Original model's parameters (not modified).
    batch_stats: its BatchNorm statistics (``{}`` when none).
    data: D_f and D_r on the device (:func:`make_data`).
    config: budget and schedule.
    num_classes: K.
    seed: batch order and method randomness.
    checkpoint_dir: save every ``config.checkpoint_every`` steps and at the
      end. A finished run found there is returned as is; an unfinished one
      is resumed (see ``resume``).
    progress: tqdm bar.
    resume: as in :func:`oeu_jax.engine.train.fit`.
    mesh: as in :func:`oeu_jax.engine.train.fit`.
    programs: as in :func:`oeu_jax.engine.train.fit`.
    stop_rule: the concrete rule (``"ua>=97.5"``) that ``config.stop_when
      = "auto"`` resolved to for this run
      (:func:`oeu_jax.engine.stopping.auto_rule`); it replaces
      ``config.stop_when`` when given.

  Returns:
    An :class:`UnlearnResult`; ``seconds`` excludes compilation,
    ``compile_seconds`` is the ahead-of-time compile time.

  Raises:
    ValueError: bad config, or an unfinished run in ``checkpoint_dir`` with
      ``resume=False``.
    CheckpointError: a corrupt or mismatched checkpoint (naming the path).
    FloatingPointError: a non-finite loss or update (naming the step; the
      last good checkpoint is kept) unless ``config.skip_nonfinite``.
  """
  validate_config(config)
  config = resolve(config, method)
  total = total_steps(data, config)
  loop.resume_step(checkpoint_dir, total, resume=resume)  # Before prepare.
  state, tx = init_state(method, model, params, batch_stats, data,
                         config=config, num_classes=num_classes, seed=seed)
  state = loop.restore(state, checkpoint_dir, total, resume=resume,
                       desc=method.name)
  start = int(state.step)
  if start >= total or loop.stopped_at(checkpoint_dir) == start:
    return UnlearnResult(state, 0.0, 0.0, {})  # Finished (or stopped).
  state, data = mesh_lib.replicate(mesh, (state, data))
  # Own buffers (not the caller's Original parameters) that the step may
  # donate.
  state = jax.tree.map(
      lambda a: jnp.copy(a) if isinstance(a, jax.Array) else a, state)
  nf, nr = len(data.forget_y), len(data.retain_y)
  pk = method.paired_kind
  out = loop.run_one(
      make_steps(method, tx, skip_nonfinite=config.skip_nonfinite), state,
      data, lambda s: step_indices(nf, nr, config, seed, s), total=total,
      kind_of=lambda s: step_kind(nf, nr, config, s, pk),
      kind_sizes=lambda: kind_runs(nf, nr, config, pk),
      checkpoint_dir=checkpoint_dir, checkpoint_every=config.checkpoint_every,
      skip_nonfinite=config.skip_nonfinite,
      failure=lambda s: (f"{method.name}: non-finite loss or update at "
                         f"unlearning step {s}"),
      mesh=mesh, donate=True, progress=progress, desc=method.name,
      stop=stop_check(model, config, data, stop_rule, warm=state),
      stop_every=config.stop_every,
      programs=programs)
  return UnlearnResult(out.state, out.seconds, out.compile_seconds,
                       summarize(out.metrics[0], out.skipped[0],
                                 out.stopped[0]))


def total_steps(data: UnlearnData, config: UnlearnConfig) -> int:
  """Steps of an unlearning run on ``data``."""
  return num_steps(len(data.forget_y), len(data.retain_y), config)


def summarize(metrics: dict, skipped: int,
              stopped: Optional[int] = None) -> dict:
  """A run's metrics: means over its finite steps, the skipped count, and
  the step its stopping rule ended it at (when it did)."""
  summary = loop.mean_metrics(metrics)
  if skipped:
    summary["skipped_steps"] = skipped
  if stopped is not None:
    summary["stop_step"] = int(stopped)
  return summary


def stop_check(model, config: UnlearnConfig, data: UnlearnData,
               stop_rule: Optional[str] = None, warm: Any = None):
  """``(state, lane) -> bool`` for :func:`oeu_jax.engine.loop.run`: has this
  run's D_f met ``stop_rule`` (given) or ``config.stop_when``? None without
  a rule.

  The rule is checked on at most ``defaults.STOP_SAMPLE`` examples of D_f,
  evenly spaced (all of it when smaller), so a check costs about one step
  whatever |D_f|. Given a state ``warm``, the check is compiled on it now,
  before the run's timer starts (like the step's own compilation).
  """
  rule = stopping.parse(stop_rule if stop_rule is not None
                        else config.stop_when)
  if rule is None:
    return None
  check = stopping.make_check(model, rule)
  n = len(data.forget_y)
  idx = np.unique(np.linspace(0, n - 1, min(n, defaults.STOP_SAMPLE),
                              dtype=np.int64))
  fx, fy = ((data.forget_x, data.forget_y) if len(idx) == n else
            (data.forget_x[idx], data.forget_y[idx]))
  m = len(data.retain_y)
  r_idx = np.unique(np.linspace(0, m - 1, min(m, defaults.STOP_SAMPLE),
                                dtype=np.int64))
  rx, ry = data.retain_x[r_idx], data.retain_y[r_idx]
  if warm is not None:
    check.warm(warm.params, warm.batch_stats, fx, fy, rx, ry)
  return lambda state, _: check(state.params, state.batch_stats, fx, fy,
                                rx, ry)
