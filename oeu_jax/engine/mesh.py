"""One device mesh for data parallelism, and placing arrays on it.

A 1-D :class:`jax.sharding.Mesh` named ``"data"`` over all devices: the
state and the data are replicated and each batch's indices are split along
``"data"``; ``jax.jit`` propagates the sharding, so every device computes its
slice of the batch and the gradients (and BatchNorm statistics) are
all-reduced by XLA. No ``pmap``: the step is the same function on 1 or N
devices and gives the same numbers up to float rounding. Every function here
takes ``mesh=None`` to mean "one device, arrays as they are".

Multi-host (TPU pods, multi-node GPU): run the same program on every host and
call ``jax.distributed.initialize()`` first; ``jax.devices()`` then lists the
devices of all hosts and :func:`make_mesh` spans them. Every host computes the
same batch indices (a pure function of seed and step), and
``jax.device_put`` with a ``NamedSharding`` places only the shards its own
devices hold. Not tested here: this machine has one host and CPU only.
"""

from typing import Any
from typing import Optional
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all).

  Args:
    devices: the devices to use; ``None``: ``jax.devices()`` (all hosts'
      devices after ``jax.distributed.initialize()``); an int ``n``: the
      first ``n`` of them.

  Returns:
    A :class:`jax.sharding.Mesh` to pass as ``mesh=`` to the training and
    unlearning loops.

  Raises:
    ValueError: no devices, or more asked for than there are.

  Examples:
    >>> make_mesh().axis_names
    ('data',)
  """
  if isinstance(devices, (int, np.integer)):
    available = jax.devices()
    if not 1 <= devices <= len(available):
      raise ValueError(f"asked for {devices} devices, {len(available)} "
                       f"available ({jax.default_backend()})")
    devices = available[:devices]
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("make_mesh needs at least one device")
  return Mesh(np.array(devices), (DATA_AXIS,))


def replicate(mesh: Optional[Mesh], tree: Any) -> Any:
  """Places ``tree`` on every device of ``mesh``; ``mesh=None``: as is."""
  if mesh is None:
    return tree
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(mesh: Optional[Mesh], idx: np.ndarray,
                axis: int = 0) -> jax.Array:
  """Batch indices on device, split on ``axis`` along the ``"data"`` axis.

  ``mesh=None``: ``jnp.asarray(idx)``. A batch the devices do not divide is
  replicated (correct, not parallel).
  """
  if mesh is None:
    return jax.numpy.asarray(idx)
  spec = [None] * np.ndim(idx)
  if np.shape(idx)[axis] % mesh.shape[DATA_AXIS] == 0:
    spec[axis] = DATA_AXIS
  return jax.device_put(idx, NamedSharding(mesh, PartitionSpec(*spec)))


def replicated_outputs(mesh: Optional[Mesh]) -> dict:
  """``jax.jit`` kwargs keeping a step's outputs replicated over ``mesh``."""
  if mesh is None:
    return {}
  return {"out_shardings": NamedSharding(mesh, PartitionSpec())}
