"""Dense and convolution layers with injectable AQT quantization.

:class:`QDense` and :class:`QConv` are the only weight layers of
:mod:`oeu_jax.nn.models`. With a float spec (``None`` or
``QuantSpec(None, None)``) they compute exactly what ``flax.linen.Dense`` /
``flax.linen.Conv`` compute, with the same parameter names, shapes and
initializers. With a quantized spec they route the matmul through the AQT
``dot_general`` of :mod:`oeu_jax.nn.quantization`; convolutions are lowered to
image patches and a matmul, because AQT's own convolution has no
straight-through gradient (its kernel and input gradients are exactly zero,
google/aqt#285). AQT adds no variables in training mode, so a float layer and
its quantized twin share one parameter tree.

With ``QuantSpec.impl="fake"`` (training mode only) the quantized layers
compute the same thing at float cost: AQT's own quantizers turn input and
kernel into integers (per-tensor activation scale over the pixels the layer
reads, per-output-channel weight scales), a native
``lax.conv_general_dilated`` / ``dot_general`` contracts the integer-valued
float operands, and the result is multiplied by the activation scale, then
the weight scales, in AQT's order. The integer products and their sums are
exact in float32 while ``|sum| < 2**24`` (W4A8: up to about 18,000 terms
per output, ResNet-18's largest has 4,608), so the outputs are AQT's bit for
bit on CPU (TF32 and bfloat16 passes on accelerators also hold int8
operands exactly; not measured here). Gradients are straight-through, as
AQT's: the same formulas, rounded in another order (relative differences of
the order of 1e-7 per layer).

Whole models with BatchNorm agree less closely, and not because of the
layers. Compiled, the float ops between them (BatchNorm, ReLU6, residual
adds) are fused differently around an integer dot than around a native
convolution and can round 1 ulp apart; a 1-ulp change of an activation's
absmax or of a value at a rounding boundary moves the next layer's 8-bit
integers by one step, and training-mode BatchNorm over few values per
channel amplifies that down the network. Measured on MobileNetV2 (W4A8,
train-mode BatchNorm, cross-entropy gradients, norm of the difference over
the norm): at 32x32, width 0.5, batch 32 the two paths differ by 0.5%, the
float model's own sensitivity (0.45% between inputs one ulp apart). At
16x16, width 0.1, batch 4 (2x2 pixels per channel in the last blocks) they
differ by 94-97%; traced layer by layer, every quantized conv equals its
twin on equal inputs, the first difference is 1 ulp in block 0's depthwise
BatchNorm output, the first integer flip is in block 6's expand conv, and
it grows from there. Compilation alone moves each path's own gradient as
much (AQT jitted vs op by op: 2%; fake: 76%), and op by op the two paths'
logits are bit-identical. The MobileNetV2 gradient difference of 2.7%
reported for an earlier, lost fake-quant draft fits this effect (between
0.5% and 97% here, depending on input size and batch).

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

_DN = ("NHWC", "HWIO", "NHWC")


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


def _fake_scale(y: jax.Array, x_scale, w_scale) -> jax.Array:
  """AQT's dequantization of an integer accumulator: times the activation
  scale, then the per-output-channel weight scales."""
  if x_scale is not None:
    y = y * jnp.reshape(x_scale, ())
  if w_scale is not None:
    y = y * jnp.reshape(w_scale, (-1,))
  return y


def _kernel(module: nn.Module, shape: tuple[int, ...]) -> jax.Array:
  """The float kernel parameter; a zero placeholder when serving.

  In ``"serve"`` mode (:func:`oeu_jax.nn.quantization.serves_frozen_weights`)
  AQT reads the integer kernel and its scales from the ``"aqt"`` collection
  and never uses this array's values, so the layer has no ``kernel``
  parameter and the serving tree holds no float copy of it.
  """
  if quantization.serves_frozen_weights(module.quant):
    return jnp.zeros(shape, jnp.float32)
  return module.param("kernel", module.kernel_init, shape, jnp.float32)


class QDense(nn.Module):
  """A dense layer, fake-quantized when ``quant`` asks for it.

  Float path: identical to ``nn.Dense(features)`` (same ``kernel``/``bias``
  names, shapes, initializers and arithmetic). Quantized path: the same
  contraction through AQT (weights per output channel, activations per
  tensor, straight-through gradients).

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
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    if quantization.trains_fake_quant(self.quant):
      xq, xs = quantization.fake_quant_input(self.quant, x)
      wq, ws = quantization.fake_quant_kernel(self.quant, kernel)
      y = _fake_scale(jax.lax.dot_general(xq, wq, dims, precision=None),
                      xs, ws)
    elif (dot_general := quantization.make_dot_general(self.quant)) is None:
      y = jax.lax.dot_general(x, kernel, dims, precision=None)
    else:
      y = dot_general(x, kernel, dims, None)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
      y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    return y


class QConv(nn.Module):
  """A 2-D convolution (NHWC / HWIO), fake-quantized when asked.

  Float path: identical to ``nn.Conv`` with the same arguments (same
  ``kernel`` of shape ``(kh, kw, in_features // feature_group_count,
  features)``, same ``bias``, same ``lax.conv_general_dilated`` call).

  Quantized path: strided slices of the padded input give image patches
  with the feature axis ordered ``(kh, kw, C_in)``, the kernel reshaped to
  ``(kh*kw*C_in, features)`` matches that order, and the two are contracted
  by the AQT ``dot_general``. The per-tensor activation scale is the absmax
  of the patches, i.e. of the input pixels the convolution reads (all of
  them, except for strided convolutions that skip some, e.g. a stride-2 1x1
  shortcut); weight scales are per output channel. Grouped and depthwise
  convolutions (``feature_group_count > 1``) use the group as a dot-general
  batch dimension, so they are quantized the same way and also get
  straight-through gradients. The patches take ``kh * kw`` times the input's
  memory.

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

    def conv(lhs, rhs):
      return jax.lax.conv_general_dilated(
          lhs, rhs, window_strides=strides, padding=padding,
          lhs_dilation=(1, 1), rhs_dilation=(1, 1),
          dimension_numbers=jax.lax.conv_dimension_numbers(
              lhs.shape, rhs.shape, _DN),
          feature_group_count=groups, precision=None)

    if quantization.trains_fake_quant(self.quant):
      xq, xs = quantization.fake_quant_input(
          self.quant, x, reads=_read_pixels(x, (kh, kw), strides, padding))
      wq, ws = quantization.fake_quant_kernel(self.quant, kernel)
      y = _fake_scale(conv(xq, wq), xs, ws)
    elif (dot_general := quantization.make_dot_general(self.quant)) is None:
      y = conv(x, kernel)
    else:
      patches = _extract_patches(x, (kh, kw), strides, padding)
      y = _patch_matmul(dot_general, patches, kernel, groups)

    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
      y += jnp.reshape(bias, (1, 1, 1, -1))
    return y


def _read_rows(size: int, k: int, s: int, pads: tuple[int, int]) -> list:
  """Input rows (or columns) a window of ``k`` at stride ``s`` reads."""
  lo, hi = pads
  out = (size + lo + hi - k) // s + 1
  return sorted({i * s + d - lo for i in range(out) for d in range(k)}
                & set(range(size)))


def _read_pixels(x: jax.Array, window: tuple[int, int],
                 strides: tuple[int, int], padding) -> jax.Array | None:
  """The input pixels a convolution reads; ``None`` when it reads them all.

  AQT's patches (:func:`_extract_patches`) hold exactly these pixels (and
  padding zeros), so the per-tensor activation scale of the fake path,
  taken over them, is AQT's: a stride-2 1x1 shortcut reads one pixel in
  four, and the others must not set its scale.
  """
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x.shape[1:3], window, strides, padding)
  rows = [_read_rows(n, k, s, tuple(p)) for n, k, s, p in
          zip(x.shape[1:3], window, strides, padding)]
  if all(len(r) == n for r, n in zip(rows, x.shape[1:3])):
    return None
  for axis, r in ((1, rows[0]), (2, rows[1])):
    step = r[1] - r[0] if len(r) > 1 else 1
    if r == list(range(r[0], r[-1] + 1, step)):
      x = jax.lax.slice_in_dim(x, r[0], r[-1] + 1, step, axis=axis)
    else:
      x = jnp.take(x, jnp.asarray(r), axis=axis)
  return x


def _extract_patches(x: jax.Array, window: tuple[int, int],
                     strides: tuple[int, int], padding) -> jax.Array:
  """``(N, H', W', kh*kw*C)`` image patches, feature axis ordered (kh, kw, C).

  Strided slices of the padded input: exact data movement. The alternative,
  ``lax.conv_general_dilated_patches``, is a grouped convolution with a
  one-hot kernel: it made a quantized ResNet-18 training step about 18x
  slower on CPU, and a convolution may run at reduced precision under a
  backend's default (TF32/bf16 passes). The (kh, kw, C) order matches a
  row-major reshape of the HWIO kernel.
  """
  (kh, kw), (sh, sw) = window, strides
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x.shape[1:3], window, strides, padding)
  x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  n, h, w, c = x.shape
  out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
  if out_h < 1 or out_w < 1:
    raise ValueError(
        f"A {window} window does not fit the padded input {(h, w)}.")
  slices = [
      jax.lax.slice(x, (0, i, j, 0),
                    (n, i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1, c),
                    (1, sh, sw, 1))
      for i in range(kh) for j in range(kw)]
  return slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)


def _patch_matmul(dot_general, patches: jax.Array, kernel: jax.Array,
                  groups: int) -> jax.Array:
  """Contracts (kh, kw, C_in)-ordered patches with an HWIO kernel."""
  kh, kw, cg_in, c_out = kernel.shape
  if groups == 1:
    w = kernel.reshape(kh * kw * cg_in, c_out)
    return dot_general(patches, w, (((3,), (0,)), ((), ())), None)
  n, h, wd, _ = patches.shape
  cg_out = c_out // groups
  # lax groups split channels into contiguous blocks: group g reads input
  # channels [g*cg_in, (g+1)*cg_in) and writes outputs [g*cg_out, ...).
  p = patches.reshape(n, h, wd, kh * kw, groups, cg_in)
  p = jnp.transpose(p, (0, 1, 2, 4, 3, 5)).reshape(
      n, h, wd, groups, kh * kw * cg_in)
  w = kernel.reshape(kh, kw, cg_in, groups, cg_out)
  w = jnp.transpose(w, (3, 0, 1, 2, 4)).reshape(groups, kh * kw * cg_in,
                                                cg_out)
  y = dot_general(p, w, (((4,), (1,)), ((3,), (0,))), None)  # (G,N,H,W,Fg)
  return jnp.transpose(y, (1, 2, 3, 0, 4)).reshape(n, h, wd, c_out)


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
