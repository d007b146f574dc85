"""Eval-mode logits of a model over many examples, in fixed-size batches.

One compilation per (model, batch shape): every batch has the compiled
size, the last one zero-padded and its padding's outputs dropped. The
training loop, the metrics, the audit and the serving path all read logits
through here, so their batches (and so their bits) agree.
"""

import functools
from typing import Any
from typing import Callable

import jax
import numpy as np

from oeu_jax.nn import models


def predict(model, params, batch_stats, x: np.ndarray, *,
            batch_size: int = 512) -> np.ndarray:
  """Eval-mode logits of ``x`` in fixed-size (padded) batches.

  Args:
    model: the Flax module.
    params: its parameters.
    batch_stats: its BatchNorm statistics (``{}`` when none).
    x: ``(N, H, W, C)`` images.
    batch_size: compiled batch size; the last batch is zero-padded.

  Returns:
    ``(N, K)`` float32 NumPy logits.
  """
  return batched(lambda chunk: _eval_logits(model, params, batch_stats, chunk),
                 x, batch_size=batch_size)


def batched(fn: Callable[[np.ndarray], Any], x: np.ndarray, *,
            batch_size: int) -> np.ndarray:
  """``fn`` over ``x`` in batches of one compiled size, concatenated.

  Batches of ``min(batch_size, len(x))`` in order, the last one zero-padded
  to full size (and the padding's outputs dropped), so ``fn`` compiles once.

  Args:
    fn: maps a ``(B, ...)`` float32 batch to ``(B, ...)`` outputs.
    x: ``(N, ...)`` inputs.
    batch_size: the compiled batch size.

  Returns:
    ``(N, ...)`` NumPy outputs.

  Raises:
    ValueError: on an empty input.
  """
  n = len(x)
  if n == 0:
    raise ValueError("predict: empty input")
  b = min(batch_size, n)
  out = []
  for i in range(0, n, b):
    chunk = np.asarray(x[i:i + b], np.float32)
    pad = b - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:],
                                              np.float32)])
    out.append(np.asarray(fn(chunk))[:b - pad])
  return np.concatenate(out)


@functools.partial(jax.jit, static_argnums=0)
def _eval_logits(model, params, batch_stats, x):
  # Flax modules hash by their fields: one compilation per (model, shape).
  return models.apply_model(model, params, batch_stats, x, train=False)[0]
