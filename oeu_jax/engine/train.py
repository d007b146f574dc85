"""Quantization-aware training of the Original model and of Retrain.

Both use the same recipe (SGD with momentum, weight decay, cosine schedule,
cross-entropy); Retrain simply trains on D_r only. The whole training set lives
on the device and a jitted step gathers its batch by index, so the step
compiles once per shape. Batch order is a pure function of ``(seed, epoch)``
and the step's rng is ``fold_in(key, step)``: a run resumed from a checkpoint
is bit-identical to an uninterrupted one.

References:
  Q-MUL harness (ICCV 2025) and SalUn (arXiv:2310.12508) training recipes.
"""

import dataclasses
from typing import Any
from typing import Callable
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from oeu_jax import data as data_lib
from oeu_jax import defaults
from oeu_jax.algorithm import losses
from oeu_jax.algorithm import optim
from oeu_jax.algorithm import transforms
from oeu_jax.engine import executors
from oeu_jax.engine import loop
from oeu_jax.engine import mesh as mesh_lib
from oeu_jax.nn import models

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Training recipe. Defaults fit the small CNN on digits; see ``defaults``.

  Attributes:
    epochs: passes over the training set.
    batch_size: examples per step (the last partial batch is dropped).
    lr: peak learning rate of the cosine schedule.
    momentum: SGD momentum.
    weight_decay: decoupled-from-nothing L2 term added to the gradient
      (PyTorch SGD convention).
    augment: random crop (pad 4) and horizontal flip; for 32x32 RGB data.
    checkpoint_every: steps between checkpoints when a directory is given.
    skip_nonfinite: False: a non-finite loss, gradient or parameter stops
      training with ``FloatingPointError`` naming the step (the last good
      checkpoint is kept). True: that step's update is dropped (parameters,
      batch stats and optimizer state unchanged, as with
      ``optax.apply_if_finite``) and training goes on; the count is in
      ``TrainResult.skipped_steps``.
  """
  epochs: int = defaults.TRAIN_FALLBACK["epochs"]
  batch_size: int = defaults.TRAIN_FALLBACK["batch_size"]
  lr: float = defaults.TRAIN_FALLBACK["lr"]
  momentum: float = defaults.TRAIN_MOMENTUM
  weight_decay: float = defaults.TRAIN_WEIGHT_DECAY
  augment: bool = False
  checkpoint_every: int = defaults.TRAIN_CHECKPOINT_EVERY
  skip_nonfinite: bool = False


class TrainState(NamedTuple):
  """Everything a resumed run needs (saved as one checkpoint pytree).

  ``rng`` holds raw ``uint32`` key data (``jax.random.PRNGKey``) so that it
  checkpoints like any other array.
  """
  params: Any
  batch_stats: Any
  opt_state: Any
  step: Array
  rng: Array


class TrainResult(NamedTuple):
  """Final state plus wall-clock seconds (with and without compilation)."""
  state: TrainState
  seconds: float
  compile_seconds: float
  losses: np.ndarray
  skipped_steps: int = 0


def validate_config(config: TrainConfig) -> None:
  """Raises ValueError naming the first bad field of a training config."""
  loop.check_budget(config)
  if not 0 <= config.momentum < 1:
    raise ValueError(f"momentum must be in [0, 1), got {config.momentum}")
  if not (np.isfinite(config.weight_decay) and config.weight_decay >= 0):
    raise ValueError(f"weight_decay must be >= 0, got {config.weight_decay}")


def augment_batch(rng: Array, x: Array) -> Array:
  """Random 4-pixel-padded crop and horizontal flip, one draw per example."""
  n, h, w, _ = x.shape
  k_crop, k_flip = jax.random.split(rng)
  padded = jnp.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
  offsets = jax.random.randint(k_crop, (n, 2), 0, 9)
  crop = jax.vmap(lambda im, o: jax.lax.dynamic_slice(
      im, (o[0], o[1], 0), (h, w, x.shape[-1])))(padded, offsets)
  flip = jax.random.bernoulli(k_flip, 0.5, (n,))
  return jnp.where(flip[:, None, None, None], crop[:, :, ::-1, :], crop)


def make_train_step(model, tx: optax.GradientTransformation, *,
                    augment: bool = False,
                    skip_nonfinite: bool = False) -> Callable:
  """Builds the pure training step ``(state, x_all, y_all, idx) -> state, m``.

  Args:
    model: a Flax module from :func:`oeu_jax.nn.models.build_model`.
    tx: the optax optimizer.
    augment: apply :func:`augment_batch`.
    skip_nonfinite: when the step is not finite, return the input state with
      only ``step`` advanced (see :class:`TrainConfig`).

  Returns:
    A pure function; jit it (it is jitted by :func:`fit`). ``m`` holds the
    batch loss and whether loss, gradients and new parameters were finite.
  """

  def step(state: TrainState, x_all: Array, y_all: Array, idx: Array):
    x, y = x_all[idx], y_all[idx]
    if augment:
      rng = jax.random.fold_in(state.rng, state.step)
      x = augment_batch(rng, x)

    def loss_fn(params):
      logits, new_bs = models.apply_model(model, params, state.batch_stats, x,
                                          train=True)
      return losses.mean_cross_entropy(logits, y), new_bs

    (loss, new_bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & transforms.tree_is_finite((grads, params))
    new_state = TrainState(params, new_bs, opt_state, state.step + 1,
                           state.rng)
    if skip_nonfinite:
      new_state = executors.skip_if_nonfinite(finite, new_state, state)
    return new_state, {"loss": loss, "finite": finite}

  return step


def steps_per_epoch(n: int, batch_size: int) -> int:
  """Full batches per epoch (at least one: small sets use one short batch)."""
  return max(1, n // batch_size)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Indices of training step ``step``: a pure function of (seed, step)."""
  spe = steps_per_epoch(n, batch_size)
  epoch, k = divmod(step, spe)
  order = data_lib.epoch_order(n, seed, epoch)
  b = min(batch_size, n)
  return order[k * b:(k + 1) * b].astype(np.int32)


def init_state(model, rng: Array, input_shape, tx) -> TrainState:
  """Initializes parameters, batch stats and optimizer state."""
  k_init, k_run = jax.random.split(rng)
  params, batch_stats = models.init_model(model, k_init, input_shape)
  return TrainState(params, batch_stats, tx.init(params),
                    jnp.zeros((), jnp.int32), k_run)


def make_optimizer(config: TrainConfig, total_steps: int):
  """SGD with cosine decay over ``total_steps``."""
  return optim.sgd(optim.cosine(config.lr, total_steps),
                   momentum=config.momentum, weight_decay=config.weight_decay)


def check_data(model, x: np.ndarray, y: np.ndarray) -> tuple:
  """Validated ``(x, y)`` for training ``model``; raises ValueError."""
  x, y = data_lib.validate_arrays(
      x, y, getattr(model, "num_classes", None) or
      max(2, int(np.max(y, initial=0)) + 1))
  if len(x) == 0:
    raise ValueError("need a non-empty training set, got 0 examples")
  return x, y


def total_steps(n: int, config: TrainConfig) -> int:
  """Steps of a run over ``n`` examples."""
  return steps_per_epoch(n, config.batch_size) * int(config.epochs)


def check_subset(subset, n: int) -> np.ndarray:
  """``subset`` as non-empty 1-D integer indices into a set of ``n``.

  Raises:
    ValueError: an empty subset, or indices that are not 1-D integers in
      ``[0, n)``.
  """
  s = np.asarray(subset)
  if len(s) == 0:
    raise ValueError("need a non-empty training set, got 0 examples")
  if s.ndim != 1 or not np.issubdtype(s.dtype, np.integer) or \
      s.min() < 0 or s.max() >= n:
    raise ValueError(f"subsets must be 1-D integer indices in [0, {n})")
  return s


def fit(model, x: np.ndarray, y: np.ndarray, *, config: TrainConfig,
        seed: int, subset: Optional[np.ndarray] = None,
        checkpoint_dir: Optional[str] = None,
        progress: bool = False, desc: str = "train",
        resume: bool = True,
        mesh: Optional[jax.sharding.Mesh] = None,
        programs: Optional[executors.Programs] = None) -> TrainResult:
  """Trains ``model`` on ``(x, y)`` from scratch (QAT when it is quantized).

  Args:
    model: a Flax module from :func:`oeu_jax.nn.models.build_model`.
    x: ``(N, H, W, C)`` finite images.
    y: ``(N,)`` int labels in ``[0, model.num_classes)``.
    config: the recipe.
    seed: seeds initialization, batch order and augmentation.
    subset: indices into ``x`` of the training set (Retrain:
      ``split.retain_idx``): the run equals one on ``x[subset],
      y[subset]``, but the device holds all of ``x`` and each batch's
      indices are mapped through ``subset``, so that runs on different
      subsets of one set have steps of one shape (with ``programs``, a
      Retrain whose step count equals the Original's compiles nothing
      new). None: all of ``x``.
    checkpoint_dir: when given, the state is saved every
      ``config.checkpoint_every`` steps and at the end. A finished run found
      there is returned as is; an unfinished one is resumed (see ``resume``).
    progress: show a tqdm progress bar.
    desc: progress-bar label.
    resume: continue an unfinished run found in ``checkpoint_dir`` from its
      latest checkpoint (bit-identical to an uninterrupted run). False: such
      a run is an error instead of being continued silently.
    mesh: data parallelism (:func:`oeu_jax.engine.mesh.make_mesh`): state and
      data replicated, each batch split along the mesh's ``"data"`` axis.
    programs: compiled steps shared with other runs
      (:class:`oeu_jax.engine.executors.Programs`): another seed of the same
      shapes and config reuses the executable instead of compiling it
      again.

  Returns:
    A :class:`TrainResult`.

  Raises:
    ValueError: bad config or data, or an unfinished run in
      ``checkpoint_dir`` with ``resume=False``.
    CheckpointError: a checkpoint that is corrupt, does not fit the model, or
      lies past this run's last step (naming the path).
    FloatingPointError: a non-finite loss, gradient or parameter (naming the
      step) unless ``config.skip_nonfinite``.
  """
  validate_config(config)
  x, y = check_data(model, x, y)
  if subset is not None:
    subset = check_subset(subset, len(x)).astype(np.int32)
  n = len(x) if subset is None else len(subset)
  total = total_steps(n, config)
  tx = make_optimizer(config, total)
  state = loop.restore(
      init_state(model, jax.random.PRNGKey(seed), x.shape[1:], tx),
      checkpoint_dir, total, resume=resume, desc=desc)
  data = mesh_lib.replicate(mesh, (jnp.asarray(x, jnp.float32),
                                   jnp.asarray(y, jnp.int32)))
  state = mesh_lib.replicate(mesh, state)
  start = int(state.step)
  if start >= total:  # A finished run restored from its checkpoint.
    return TrainResult(state, 0.0, 0.0, np.zeros((0,), np.float32))
  out = loop.run_one(
      make_train_step(model, tx, augment=config.augment,
                      skip_nonfinite=config.skip_nonfinite),
      state, data, lambda s: (subset_indices(subset, batch_indices(
          n, config.batch_size, seed, s)),),
      total=total, checkpoint_dir=checkpoint_dir,
      checkpoint_every=config.checkpoint_every,
      skip_nonfinite=config.skip_nonfinite,
      failure=lambda s: (f"{desc}: non-finite loss, gradient or parameter "
                         f"at training step {s}"),
      mesh=mesh, donate=True, progress=progress, desc=desc,
      programs=programs)
  return TrainResult(out.state, out.seconds, out.compile_seconds,
                     np.asarray(out.metrics[0]["loss"], np.float32),
                     out.skipped[0])


def subset_indices(subset: Optional[np.ndarray],
                   local: np.ndarray) -> np.ndarray:
  """Batch indices ``local`` (into a subset) as indices into the full set."""
  return local if subset is None else subset[local].astype(np.int32)
