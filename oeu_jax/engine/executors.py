"""Executors: what runs a compiled step over a chunk of steps.

An *executor* maps ``(state, a, b, active)`` to ``(state, metrics)`` for the
steps ``[a, b)``, where ``active[k, i]`` says whether lane ``i`` runs step
``a + k`` and every metric comes back as a ``(b - a, lanes)`` NumPy array
with a boolean ``"finite"`` among them; :func:`oeu_jax.engine.loop.run` drives
one. :class:`Compiled` is the shared piece executors use to compile once per
input shape and time it; :class:`Programs` lets runs share what they
compiled (another seed of the same shapes compiles nothing). One-lane runs
use :class:`ScanExecutor`: ``lax.scan`` over a chunk of steps per dispatch,
the finiteness flags and metrics of the chunk fetched in one transfer.
A run with several step *kinds* (unlearning's forget, retain and paired
steps) gives each kind its own program and dispatches by kind from the
host: no step sits inside a compiled conditional (``lax.cond`` /
``lax.switch``), where XLA's CPU backend runs a CNN's convolution gradients
about 40x slower than at top level (BENCHMARKS.md).
:class:`StepExecutor` (one dispatch per step) is used instead where
:func:`loops_slow_convs`, and is the reference the scan is tested against:
XLA compiles a loop body apart from a top-level program, so the two may
differ in the last bit of a parameter, while any two chunk lengths give the
same bits. The
vmapped seeds of :mod:`oeu_jax.engine.seeds` have their own executor built on
:class:`Compiled`, and share a :class:`Programs` across chunks of seeds.

Batch order and rngs are pure functions of ``(seed, step)`` in the
executors, so a resumed run is bit-identical to an uninterrupted one.
"""

import hashlib
import time
from typing import Any
from typing import Callable
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

from oeu_jax.engine import mesh as mesh_lib


class Programs:
  """Compiled executables shared by the runs of one process (or stage).

  Keyed by the lowered program's text (so its baked-in constants and
  shardings), its argument and result structure and its donation: a second
  run whose step traces to the same program (another seed of a method, the
  same set sizes and budget) reuses the first run's executable instead of
  compiling it again. Pass one instance to every run that may share
  (:func:`oeu_jax.runner.pipeline.stage_runner` does); it holds at most
  ``capacity`` executables, dropping the oldest.
  """

  def __init__(self, capacity: int = 32):
    if capacity < 1:
      raise ValueError(f"capacity must be >= 1, got {capacity}")
    self._capacity = capacity
    self._table = {}
    self.compiles = 0  # Executables compiled (misses).
    self.hits = 0  # Executables reused.

  def get(self, lowered, key) -> Any:
    """``lowered.compile()``, or the executable of an equal program."""
    text = lowered.as_text()
    full = (hashlib.sha256(text.encode()).hexdigest(), len(text), key,
            str(lowered.out_tree))
    fn = self._table.get(full)
    if fn is not None:
      self.hits += 1
      return fn
    fn = lowered.compile()
    self.compiles += 1
    self._table[full] = fn
    while len(self._table) > self._capacity:
      self._table.pop(next(iter(self._table)))
    return fn


class Compiled:
  """``jax.jit(fn)`` compiled ahead of time once per argument shapes.

  ``compile_seconds`` accumulates the time spent lowering and compiling, so
  a loop can report step time and compile time apart. With ``programs``
  (a :class:`Programs`), an executable compiled for an equal program by
  another :class:`Compiled` (another run) is reused.
  """

  def __init__(self, fn: Callable, *, programs: Optional["Programs"] = None,
               **jit_kwargs):
    self._jitted = jax.jit(fn, **jit_kwargs)
    self._programs = programs
    self._donate = tuple(jit_kwargs.get("donate_argnums", ()))
    self._cache = {}
    self.compile_seconds = 0.0

  def __call__(self, *args):
    key = jax.tree.structure(args), tuple(
        (np.shape(a), str(getattr(a, "dtype", type(a))))
        for a in jax.tree.leaves(args))
    fn = self._cache.get(key)
    if fn is None:
      t0 = time.perf_counter()
      lowered = self._jitted.lower(*args)
      fn = (lowered.compile() if self._programs is None else
            self._programs.get(lowered, (str(key[0]), self._donate)))
      self.compile_seconds += time.perf_counter() - t0
      self._cache[key] = fn
    return fn(*args)


def as_steps(step: Union[Callable, Mapping[Any, Callable]]) -> dict:
  """``{kind: step}``: a mapping as is, one callable as the kind ``None``."""
  return dict(step) if isinstance(step, Mapping) else {None: step}


def runs(kinds: Sequence[Any]) -> list:
  """``[(start, stop, kind), ...]``: maximal runs of equal ``kinds``."""
  out = []
  for i, k in enumerate(kinds):
    if out and out[-1][2] == k:
      out[-1] = (out[-1][0], i + 1, k)
    else:
      out.append((i, i + 1, k))
  return out


class StepExecutor:
  """One lane, one dispatch per step: ``step(state, *data, *indices(g))``.

  ``step`` is pure and returns ``(state, metrics)`` with a ``"finite"``
  entry; ``indices(g)`` gives step ``g``'s batch index arrays (a pure
  function of the seed and ``g``). With several step kinds, ``step`` is a
  mapping ``{kind: step}`` and ``kind_of(g)`` names step ``g``'s: each kind
  is its own program, compiled at its first step, and the host dispatches
  by kind (no kind is chosen inside a compiled conditional).
  """

  def __init__(self, step: Union[Callable, Mapping[Any, Callable]],
               data: Sequence[Any],
               indices: Callable[[int], Sequence[np.ndarray]], *,
               kind_of: Optional[Callable[[int], Any]] = None,
               mesh=None, donate: bool = False,
               programs: Optional["Programs"] = None):
    kw = dict(programs=programs, donate_argnums=(0,) if donate else (),
              **mesh_lib.replicated_outputs(mesh))
    self._compiled = {k: Compiled(fn, **kw)
                      for k, fn in as_steps(step).items()}
    self._kind_of = kind_of or (lambda g: None)
    self._data, self._indices, self._mesh = tuple(data), indices, mesh

  @property
  def compile_seconds(self) -> float:
    return sum(c.compile_seconds for c in self._compiled.values())

  def __call__(self, state, a: int, b: int, active: np.ndarray):
    rows = []
    for g in range(a, b):
      idx = [mesh_lib.shard_batch(self._mesh, i) for i in self._indices(g)]
      state, m = self._compiled[self._kind_of(g)](state, *self._data, *idx)
      rows.append(jax.device_get(m))
    return state, {k: np.stack([r[k] for r in rows])[:, None]
                   for k in rows[0]}


def select(on: jax.Array, new: Any, old: Any) -> Any:
  """``new`` where ``on``, else ``old``, leaf by leaf (a select: both are
  computed; neither is skipped by a compiled conditional)."""
  return jax.tree.map(lambda n, o: jnp.where(on, n, o), new, old)


def skip_if_nonfinite(finite: jax.Array, new_state: Any, state: Any) -> Any:
  """A step's ``new_state``, or, where it is not ``finite``, the input
  ``state`` with only its step advanced (batch order and rng stay a
  function of the step): ``skip_nonfinite`` of the train and unlearn
  steps."""
  return select(finite, new_state, state._replace(step=state.step + 1))


def masked_scan(step: Callable) -> Callable:
  """``chunk(state, data, idx_seq, on_seq)``: ``lax.scan`` of ``step`` over
  a chunk, a step whose ``on`` is False leaving the state as it was.

  The padding steps of a short chunk are computed and their results dropped
  by a select, not skipped by ``lax.cond``: XLA's CPU backend runs
  convolution gradients inside a conditional tens of times slower than at
  top level, and every chunk length runs the same loop body (the same bits).
  """

  def chunk(state, data, idx_seq, on_seq):
    def body(s, xs):
      idx, on = xs
      new, m = step(s, *data, *idx)
      return select(on, new, s), m

    return jax.lax.scan(body, state, (idx_seq, on_seq))

  return chunk


class ScanExecutor:
  """One lane, ``size`` steps per dispatch (``jax.lax.scan``).

  The same contract as :class:`StepExecutor`, kinds included: a chunk is
  cut into runs of one kind, and each run goes through its kind's scanned
  program, ``sizes[kind]`` steps per dispatch (default ``size``; capped by
  ``size``), the last dispatch of a run padded with steps whose results are
  dropped (:func:`masked_scan`), so one program serves every run of a
  kind. ``sizes`` may be a callable returning the mapping, called at the
  first dispatch. Batch indices of a dispatch travel as ``(steps, ...)``
  arrays, metrics come back stacked, one transfer per dispatch.
  ``programs`` (:class:`Programs`) shares the executables with other runs.
  """

  def __init__(self, step: Union[Callable, Mapping[Any, Callable]],
               data: Sequence[Any],
               indices: Callable[[int], Sequence[np.ndarray]], *, size: int,
               kind_of: Optional[Callable[[int], Any]] = None,
               sizes: Union[None, Mapping, Callable[[], Mapping]] = None,
               mesh=None, donate: bool = False,
               programs: Optional[Programs] = None):
    if size < 1:
      raise ValueError(f"size must be >= 1, got {size}")
    kw = dict(programs=programs, donate_argnums=(0,) if donate else (),
              **mesh_lib.replicated_outputs(mesh))
    self._compiled = {k: Compiled(masked_scan(fn), **kw)
                      for k, fn in as_steps(step).items()}
    self._kind_of = kind_of or (lambda g: None)
    self._sizes = sizes
    self._data, self._indices, self._mesh = tuple(data), indices, mesh
    self.size = int(size)

  @property
  def compile_seconds(self) -> float:
    return sum(c.compile_seconds for c in self._compiled.values())

  def size_of(self, kind) -> int:
    """Steps per dispatch of ``kind``'s program."""
    if callable(self._sizes):
      self._sizes = self._sizes()
    return max(1, min(self.size, (self._sizes or {}).get(kind, self.size)))

  def __call__(self, state, a: int, b: int, active: np.ndarray):
    if b - a > self.size or not np.all(active):
      raise ValueError(f"a chunk of one lane's own steps of at most "
                       f"{self.size} steps, got [{a}, {b})")
    parts = []
    for r0, r1, kind in runs([self._kind_of(g) for g in range(a, b)]):
      n = self.size_of(kind)
      for c in range(a + r0, a + r1, n):
        state, m = self._dispatch(state, kind, c, min(c + n, a + r1), n)
        parts.append(m)
    return state, {k: np.concatenate([p[k] for p in parts])
                   for k in parts[0]}

  def _dispatch(self, state, kind, a: int, b: int, n: int):
    rows = [tuple(np.asarray(v) for v in self._indices(g))
            for g in range(a, b)]
    rows += [tuple(np.zeros_like(v) for v in rows[0])] * (n - len(rows))
    idx_seq = tuple(mesh_lib.shard_batch(self._mesh, np.stack(part),
                                         axis=np.ndim(part[0]))
                    if np.ndim(part[0]) else jnp.asarray(np.stack(part))
                    for part in zip(*rows))
    on = mesh_lib.replicate(self._mesh, jnp.asarray(np.arange(n) < b - a))
    state, m = self._compiled[kind](state, self._data, idx_seq, on)
    return state, {k: np.asarray(v)[:b - a, None]
                   for k, v in jax.device_get(m).items()}


def conv_count(step: Callable, state: Any, data: Sequence[Any],
               idx: Sequence[np.ndarray]) -> int:
  """The number of convolutions in ``step``'s jaxpr (backward included)."""
  return str(jax.make_jaxpr(step)(state, *data, *idx)).count(
      "conv_general_dilated[")


def loops_slow_convs(step: Callable, state: Any, data: Sequence[Any],
                     idx: Sequence[np.ndarray], *, at_most: int = 0) -> bool:
  """Whether ``step`` has more than ``at_most`` convolutions on the CPU
  backend, where XLA runs a convolution's gradients inside a loop body far
  slower than at top level (kernel gradients 4-33x, input gradients 3x;
  forward convolutions are not slowed: BENCHMARKS.md), so that a scanned
  chunk loses to one dispatch per step (a float CNN step: 12x)."""
  if jax.default_backend() != "cpu":
    return False
  return conv_count(step, state, data, idx) > at_most
