"""Independent NumPy/JAX references shared by the layer and preset tests."""

import jax.numpy as jnp
import numpy as np


def rel_err(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def cosine(a, b):
  a, b = jnp.ravel(a), jnp.ravel(b)
  return float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))


def fake_quant(x, bits, axes):
  """NumPy symmetric absmax fake quantization, AQT's convention.

  AQT (preserve_zero=True, preserve_max_val=False) maps absmax to the edge of
  the last bucket, 2**(bits-1) - 0.5, then clips to +-(2**(bits-1) - 1).
  """
  x = np.asarray(x, np.float64)
  absmax = np.max(np.abs(x), axis=axes, keepdims=True)
  absmax = np.where(absmax == 0.0, 1.0, absmax)
  scale = absmax / (2.0 ** (bits - 1) - 0.5)
  limit = 2.0 ** (bits - 1) - 1
  return np.clip(np.round(x / scale), -limit, limit) * scale
