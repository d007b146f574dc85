"""The vmapped executor: a step's kinds vmapped over lanes (seeds).

:class:`Executor` runs one lane's pure step for N lanes as one vmapped
program, scanned over runs of steps (or one dispatch per step where XLA's
CPU backend would run convolution gradients in a loop body), one program
per step kind, dispatched by the host; :mod:`oeu_jax.engine.seeds` drives
it through :func:`oeu_jax.engine.loop.run`.

On CPU, vmapping a convolution over seeds (a per-seed kernel) gives a
grouped convolution that XLA's CPU backend expands into a dense one N times
larger; there each convolution runs seed by seed inside the program
(:mod:`oeu_jax.engine.seedwise_conv`), everything else stays vmapped. On
CPU the steady-state step costs about what N sequential steps cost (the
machine is compute bound); the gain is one compilation instead of N and no
per-step dispatch. On GPU/TPU the vmapped program fills the device that one
small model leaves idle.
"""

from typing import Any
from typing import Callable
from typing import Optional
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from oeu_jax.engine import executors
from oeu_jax.engine import mesh as mesh_lib
from oeu_jax.engine import seedwise_conv

# Convolutions of one lane's step that still run scanned on CPU: a float
# first layer's forward and kernel gradient (W4A8 CNN on digits, 8 seeds,
# vmapped: scanned 12.5-13.6 s of steps, one dispatch per step 17.6-18.7
# s); a float CNN (5 convolutions) is 17x slower scanned (170 s vs 10 s).
SCANNED_CONVS = 2


def pad_leaf(x, shape):
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
    return jnp.stack([pad_leaf(v, shape) for v in leaves])

  return jax.tree.map(stack, *trees)


def unstack(tree: Any, i: int) -> Any:
  """Seed ``i``'s slice of a stacked pytree."""
  return jax.tree.map(lambda a: a[i], tree)


def all_equal(trees: Sequence[Any]) -> bool:
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


def stack_indices(per_step):
  """``(steps, seeds, batch)`` arrays; an inactive seed's entry is zeros."""
  template = next(v for row in per_step for v in row if v is not None)
  out = []
  for part in range(len(template)):
    shape = template[part].shape
    out.append(np.stack([np.stack([
        v[part] if v is not None else np.zeros(shape, np.int32)
        for v in row]) for row in per_step]).astype(np.int32))
  return tuple(out)


class Executor:
  """A lane's step kinds vmapped over lanes, scanned over runs of steps.

  ``steps`` is ``{kind: one_step}`` (:func:`oeu_jax.engine.executors.as_steps`),
  ``one_step(state, data, idx) -> (state, metrics)`` one lane's pure step;
  a lane masked off keeps its state (a select, not ``lax.cond``).
  ``indices(lane, g)`` gives lane ``lane``'s batch index arrays at step
  ``g`` and ``kind_of(lane, g)`` its step kind (both computed on the host
  as the sequential loops do). Each kind is its own program, dispatched by
  the host: the steps of a chunk are cut into runs over which every lane
  keeps its kind, and a run goes, kind by kind, through that kind's scanned
  program (``sizes[kind]`` steps a dispatch, padded with masked-off steps),
  the lanes of the other kinds masked off. Where one lane's step has more
  than :data:`SCANNED_CONVS` convolutions on the CPU backend
  (:func:`oeu_jax.engine.executors.loops_slow_convs`: XLA runs convolution
  gradients inside a loop body many times slower than at top level) each
  step is its own dispatch of the vmapped step, as
  :class:`oeu_jax.engine.executors.StepExecutor` does for one lane.
  """

  def __init__(self, steps: Any, data: Any, data_axes: Any,
               indices: Callable[[int, int], tuple], *, mesh,
               seedwise: bool, cap: int, kind_of=None, sizes=None,
               programs: Optional[executors.Programs] = None):
    kw = dict(donate_argnums=(0,), programs=programs,
              **mesh_lib.replicated_outputs(mesh))
    self._one = executors.as_steps(steps)
    self._chunk, self._step = {}, {}
    for kind, one in self._one.items():
      def masked(state, d, idx, active, one=one):
        new, m = one(state, d, idx)
        return executors.select(active, new, state), m

      vstep = jax.vmap(seedwise_conv.seedwise_convs(masked) if seedwise
                       else masked, in_axes=(0, data_axes, 0, 0))

      def chunk(state, d, idx_seq, active_seq, vstep=vstep):
        return jax.lax.scan(lambda s, xs: vstep(s, d, *xs), state,
                            (idx_seq, active_seq))

      self._chunk[kind] = executors.Compiled(chunk, **kw)
      self._step[kind] = executors.Compiled(vstep, **kw)
    self._per_step = None  # Decided at the first call (needs the shapes).
    self._data, self._data_axes = data, data_axes
    self._indices, self._mesh = indices, mesh
    self._kind_of = kind_of or (lambda i, g: None)
    self._sizes, self._cap = sizes, int(cap)

  @property
  def compile_seconds(self) -> float:
    return sum(c.compile_seconds for c in (*self._chunk.values(),
                                           *self._step.values()))

  def _size(self, kind) -> int:
    """Steps per scanned dispatch of ``kind``: its longest run, at most
    ``cap`` (one program per kind, whatever the chunk)."""
    if callable(self._sizes):
      self._sizes = self._sizes()
    return max(1, min(self._cap, (self._sizes or {}).get(kind, self._cap)))

  def __call__(self, state, a: int, b: int, active: np.ndarray):
    lanes = range(active.shape[1])
    kinds = [tuple(self._kind_of(i, g) if active[k, i] else _OFF
                   for i in lanes) for k, g in enumerate(range(a, b))]
    idx_all = stack_indices([[self._indices(i, g) if active[k, i] else None
                               for i in lanes]
                              for k, g in enumerate(range(a, b))])
    if self._per_step is None:  # On lane 0's step (one lane's jaxpr).
      j = int(np.argmax(active[0]))
      one = self._one[kinds[0][j]]
      lane = lambda t: jax.tree.map(lambda v: v[j], t)  # noqa: E731
      self._per_step = executors.loops_slow_convs(
          one, lane(state), (self._data if self._data_axes is None
                             else lane(self._data),),
          (tuple(v[0, j] for v in idx_all),), at_most=SCANNED_CONVS)
    out = None
    for r0, r1, row in executors.runs(kinds):
      for kind in sorted(set(row) - {_OFF}, key=repr):
        on = np.asarray([k == kind for k in row])
        n = 1 if self._per_step else self._size(kind)
        for c in range(r0, r1, n):
          e = min(c + n, r1)
          state, m = self._dispatch(state, kind, idx_all, c, e, n, on)
          out = _merge(out, m, c, on, b - a)
    return state, out

  def _dispatch(self, state, kind, idx_all, c: int, e: int, n: int,
                on: np.ndarray):
    pad = n - (e - c)
    idx = tuple(np.concatenate([v[c:e], np.zeros((pad,) + v.shape[1:],
                                                 v.dtype)]) for v in idx_all)
    mask = np.zeros((n, len(on)), bool)
    mask[:e - c] = on[None]
    idx = jax.tree.map(
        lambda v: mesh_lib.shard_batch(self._mesh, v, axis=v.ndim - 1), idx)
    mask = mesh_lib.replicate(self._mesh, jnp.asarray(mask))
    if self._per_step:
      state, m = self._step[kind](state, self._data,
                                  tuple(v[0] for v in idx), mask[0])
      return state, {k: np.asarray(v)[None] for k, v in
                     jax.device_get(m).items()}
    state, m = self._chunk[kind](state, self._data, idx, mask)
    return state, {k: np.asarray(v)[:e - c] for k, v in
                   jax.device_get(m).items()}


_OFF = "off"  # The kind of a lane that does not run a step.


def _merge(out, m: dict, c: int, on: np.ndarray, steps: int) -> dict:
  """Writes ``m`` (metrics of steps ``c, c+1, ...``) into ``out`` (``(steps,
  lanes)`` per metric) for the lanes ``on``."""
  if out is None:
    out = {k: np.zeros((steps,) + np.shape(v)[1:], np.asarray(v).dtype)
           for k, v in m.items()}
  for k, v in m.items():
    rows = slice(c, c + len(v))
    out[k][rows] = np.where(on, v, out[k][rows])
  return out


