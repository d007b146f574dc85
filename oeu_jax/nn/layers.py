"""Dense and convolution layers with injectable quantization.

:class:`QDense` and :class:`QConv` are the only weight layers of
:mod:`oeu_jax.nn.models`. With a float spec (``None`` or
``QuantSpec(None, None)``) they compute exactly what ``flax.linen.Dense`` /
``flax.linen.Conv`` compute, with the same parameter names, shapes and
initializers. With a quantized spec they hand the contraction to the spec's
backend (:mod:`oeu_jax.nn.quantization.backends`: ``fake`` by default,
``aqt``, ``qwix``), which quantizes weights per output channel and
activations per tensor with straight-through gradients. No backend adds
variables in training mode, so a float layer and its quantized twin share
one parameter tree.

References:
  Orthogonal Entropy Unlearning (OEU): https://arxiv.org/abs/2602.00567
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from oeu_jax.nn import quantization
from oeu_jax.nn.quantization import QuantSpec

__all__ = ["QDense", "QConv"]

def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
  if isinstance(value, int):
    return (value, value)
  value = tuple(value)
  if len(value) != 2 or not all(isinstance(v, int) for v in value):
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}.")
  return value


def _canonical_padding(padding):
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(
          f"padding must be 'SAME', 'VALID', an int or ((lo, hi), (lo, hi)),"
          f" got {padding!r}.")
    return padding.upper()
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  try:
    pads = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
  except TypeError:
    pads = ()
  if len(pads) != 2 or any(len(p) != 2 for p in pads):
    raise ValueError(
        f"padding must be 'SAME', 'VALID', an int or ((lo, hi), (lo, hi)),"
        f" got {padding!r}.")
  return pads


def _kernel(module: nn.Module, shape: tuple[int, ...]) -> jax.Array:
  """The float kernel parameter; a zero placeholder when serving.

  In ``"serve"`` mode (:func:`oeu_jax.nn.quantization.serves_frozen_weights`)
  the backend reads the integer kernel and its scales from its collection
  and never uses this array's values, so the layer has no ``kernel``
  parameter and the serving tree holds no float copy of it.
  """
  if quantization.serves_frozen_weights(module.quant):
    return jnp.zeros(shape, jnp.float32)
  return module.param("kernel", module.kernel_init, shape, jnp.float32)


class QDense(nn.Module):
  """A dense layer, quantized when ``quant`` asks for it.

  Float path: identical to ``nn.Dense(features)`` (same ``kernel``/``bias``
  names, shapes, initializers and arithmetic). Quantized path: the same
  contraction through the spec's backend (weights per output channel,
  activations per tensor, straight-through gradients).

  Attributes:
    features: number of outputs.
    quant: bit widths; ``None`` or ``QuantSpec(None, None)`` is float.
    use_bias: whether to add a bias.
    kernel_init: kernel initializer (``nn.Dense``'s default).
    bias_init: bias initializer (``nn.Dense``'s default).
  """

  features: int
  quant: QuantSpec | None = None
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the layer.

    Args:
      x: ``(..., in_features)`` float array.

    Returns:
      ``(..., features)`` array.
    """
    kernel = _kernel(self, (jnp.shape(x)[-1], self.features))
    if quantization.is_quantized(self.quant):
      y = quantization.backend(self.quant).dense(self, x, kernel, self.quant)
    else:
      y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())),
                              precision=None)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
      y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    return y


class QConv(nn.Module):
  """A 2-D convolution (NHWC / HWIO), quantized when asked.

  Float path: identical to ``nn.Conv`` with the same arguments (same
  ``kernel`` of shape ``(kh, kw, in_features // feature_group_count,
  features)``, same ``bias``, same ``lax.conv_general_dilated`` call).

  Quantized path: the spec's backend convolves (grouped and depthwise
  convolutions too), with straight-through gradients to the kernel and the
  input (AQT's own convolution has none; the ``aqt`` backend lowers to image
  patches instead).

  Attributes:
    features: number of output channels.
    kernel_size: ``(kh, kw)`` or an int.
    strides: an int or ``(sh, sw)``.
    padding: ``"SAME"``, ``"VALID"``, an int, a pair of ints, or
      ``((lo, hi), (lo, hi))``, as for ``nn.Conv``.
    use_bias: whether to add a bias.
    feature_group_count: number of groups; ``in_features`` for depthwise.
    quant: bit widths; ``None`` or ``QuantSpec(None, None)`` is float.
    kernel_init: kernel initializer (``nn.Conv``'s default).
    bias_init: bias initializer (``nn.Conv``'s default).
  """

  features: int
  kernel_size: int | Sequence[int] = (3, 3)
  strides: int | Sequence[int] = 1
  padding: Any = "SAME"
  use_bias: bool = True
  feature_group_count: int = 1
  quant: QuantSpec | None = None
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution.

    Args:
      x: ``(N, H, W, C_in)`` float array.

    Returns:
      ``(N, H', W', features)`` array.

    Raises:
      ValueError: if ``x`` is not 4-D or the channels do not split into
        ``feature_group_count`` groups.
    """
    if x.ndim != 4:
      raise ValueError(f"QConv expects NHWC input, got shape {x.shape}.")
    kh, kw = _pair(self.kernel_size, "kernel_size")
    strides = _pair(self.strides, "strides")
    padding = _canonical_padding(self.padding)
    groups = self.feature_group_count
    c_in = x.shape[-1]
    if groups < 1 or c_in % groups or self.features % groups:
      raise ValueError(
          f"feature_group_count={groups} must divide in_features={c_in} and"
          f" features={self.features}.")
    kernel = _kernel(self, (kh, kw, c_in // groups, self.features))
    geometry = quantization.Conv(strides, padding, groups)
    if quantization.is_quantized(self.quant):
      y = quantization.backend(self.quant).conv(self, x, kernel, geometry,
                                                self.quant)
    else:
      y = geometry(x, kernel, precision=None)

    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
      y += jnp.reshape(bias, (1, 1, 1, -1))
    return y


def _windows(x: jax.Array) -> jax.Array:
  """``(b, h/2, w/2, c, 4)``: each 2x2 window's values, row-major."""
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  win = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
  return win.reshape(b, h // 2, w // 2, c, 4)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """``nn.max_pool(x, (2, 2), strides=(2, 2))`` (VALID), same values and
  gradients, without ``reduce_window``.

  XLA's CPU backend runs the gradient of ``reduce_window`` max (a
  ``select_and_scatter``) slowly: on the 28x28 CNN at batch 256 the first
  pool's forward and backward took 124 ms against 55 ms in torch eager,
  over a third of the float training step (BENCHMARKS.md). Here
  the forward is Flax's (fast) and the gradient is written out: each
  window's four values go to a trailing axis and the cotangent goes to the
  window's first maximum in row-major order (a one-hot of ``argmax``), as
  ``select_and_scatter`` routes it, ties sharing nothing: elementwise ops
  and one reduction, which XLA fuses. Odd heights or widths drop their last
  row or column, as VALID does.
  """
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def _pool_fwd(x):
  return max_pool_2x2(x), x


def _pool_bwd(x, g):
  b, h, w, c = x.shape
  pick = jax.nn.one_hot(jnp.argmax(_windows(x), axis=-1), 4, dtype=g.dtype)
  dx = (pick * g[..., None]).reshape(b, h // 2, w // 2, c, 2, 2)
  dx = dx.transpose(0, 1, 4, 2, 5, 3).reshape(b, h // 2 * 2, w // 2 * 2, c)
  return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_pool_fwd, _pool_bwd)
