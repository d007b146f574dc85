"""The fake backend (the default): AQT's quantizers, native float convolutions.

Training mode computes what the ``aqt`` backend computes at float cost:
AQT's own quantizers turn input and kernel into integers (per-tensor
activation scale over the pixels the layer reads, per-output-channel weight
scales), a native ``lax.conv_general_dilated`` / ``dot_general`` contracts the
integer-valued float operands, and the result is multiplied by the
activation scale, then the weight scales, in AQT's order. The integer
products and their sums are exact in float32 while ``|sum| < 2**24`` (W4A8:
up to about 18,000 terms per output, ResNet-18's largest has 4,608), so the
outputs are AQT's bit for bit on CPU (TF32 and bfloat16 passes on
accelerators also hold int8 operands exactly; not measured here). Gradients
are straight-through, as AQT's: the same formulas, rounded in another order
(relative differences of the order of 1e-7 per layer).

Serving (``"convert"`` / ``"serve"``) is the ``aqt`` backend's: the integers
are AQT's, so the served model is the one an ``aqt``-trained model gives.

Whole models with BatchNorm agree less closely with the ``aqt`` backend, and
not because of the layers. Compiled, the float ops between them (BatchNorm,
ReLU6, residual adds) are fused differently around an integer dot than around
a native convolution and can round 1 ulp apart; a 1-ulp change of an
activation's absmax or of a value at a rounding boundary moves the next
layer's 8-bit integers by one step, and training-mode BatchNorm over few
values per channel amplifies that down the network. Measured on MobileNetV2
(W4A8, train-mode BatchNorm, cross-entropy gradients, norm of the difference
over the norm): at 32x32, width 0.5, batch 32 the two paths differ by 0.5%,
the float model's own sensitivity (0.45% between inputs one ulp apart). At
16x16, width 0.1, batch 4 (2x2 pixels per channel in the last blocks) they
differ by 94-97%; traced layer by layer, every quantized conv equals its
twin on equal inputs, the first difference is 1 ulp in block 0's depthwise
BatchNorm output, the first integer flip is in block 6's expand conv, and it
grows from there. Compilation alone moves each path's own gradient as much
(AQT jitted vs op by op: 2%; fake: 76%), and op by op the two paths' logits
are bit-identical.

References:
  AQT: https://github.com/google/aqt
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from oeu_jax.nn.quantization import Conv
from oeu_jax.nn.quantization import spec as spec_lib
from oeu_jax.nn.quantization.backends import aqt

__all__ = ["COLLECTION", "dense", "conv", "fake_quant_input",
           "fake_quant_kernel"]

COLLECTION = aqt.COLLECTION


def dense(module: nn.Module, x: jax.Array, kernel: jax.Array,
          spec: spec_lib.QuantSpec) -> jax.Array:
  """``x @ kernel`` on AQT's integers with a native ``dot_general``."""
  if spec.mode != "train":
    return aqt.dense(module, x, kernel, spec)
  xq, xs = fake_quant_input(spec, x)
  wq, ws = fake_quant_kernel(spec, kernel)
  dims = (((x.ndim - 1,), (0,)), ((), ()))
  return _dequantize(jax.lax.dot_general(xq, wq, dims, precision=None),
                     xs, ws)


def conv(module: nn.Module, x: jax.Array, kernel: jax.Array, geometry: Conv,
         spec: spec_lib.QuantSpec) -> jax.Array:
  """A native convolution on AQT's integers."""
  if spec.mode != "train":
    return aqt.conv(module, x, kernel, geometry, spec)
  xq, xs = fake_quant_input(
      spec, x, reads=_read_pixels(x, kernel.shape[:2], geometry.strides,
                                  geometry.padding))
  wq, ws = fake_quant_kernel(spec, kernel)
  return _dequantize(geometry(xq, wq, precision=None), xs, ws)


def _dequantize(y: jax.Array, x_scale, w_scale) -> jax.Array:
  """AQT's dequantization of an integer accumulator: times the activation
  scale, then the per-output-channel weight scales."""
  if x_scale is not None:
    y = y * jnp.reshape(x_scale, ())
  if w_scale is not None:
    y = y * jnp.reshape(w_scale, (-1,))
  return y


def _quantize(quantizer, x: jax.Array, calib: jax.Array,
              axes) -> tuple[jax.Array, jax.Array]:
  """AQT's quantization of ``x``, scale calibrated on ``calib``.

  Returns the integer values as floats, with a straight-through gradient
  (``d q / d x = 1 / scale``: ``q * scale`` has the identity gradient), and
  the scale (shaped to broadcast against ``x``, no gradient).
  """
  quantizer.init_calibration()
  qt = quantizer.calibrate(calib, calibration_axes=axes)
  qt, _ = quantizer.calculate_qvalue(x, qt)
  scale = jax.lax.stop_gradient(qt.scale[0])
  q = jax.lax.stop_gradient(qt.qvalue.astype(x.dtype))
  # Exactly q in the forward pass (x - x is 0).
  return q + (x - jax.lax.stop_gradient(x)) / scale, scale


def fake_quant_input(spec: spec_lib.QuantSpec, x: jax.Array, *,
                     reads: jax.Array | None = None
                     ) -> tuple[jax.Array, jax.Array | None]:
  """Quantizes an activation as AQT's ``dot_general`` does (the ``lhs``).

  Symmetric, ``spec.act_bits`` bits, one absmax scale per tensor, rounding
  to nearest even: AQT's own quantizer, so the integers are AQT's.

  Args:
    spec: a quantized spec.
    x: the activation.
    reads: the part of ``x`` the layer reads, for the scale (a strided 1x1
      convolution skips pixels; AQT's patches hold only those it reads);
      ``None``: all of ``x``.

  Returns:
    ``(q, scale)``: ``q`` the integer values as floats with a
    straight-through gradient, ``scale`` their per-tensor scale
    (``x ~ q * scale``); ``(x, None)`` when activations stay float.

  Examples:
    >>> q, s = fake_quant_input(spec_lib.QuantSpec(4, 8),
    ...                         jax.numpy.array([1., -.5]))
    >>> q.tolist(), s.shape  # scale: absmax / 127.5
    ([127.0, -64.0], (1,))
  """
  if spec.act_bits is None:
    return x, None
  quantizer = aqt.aqt_config(spec).fwd.dg_quantizer.lhs
  return _quantize(quantizer, x, x if reads is None else reads, None)


def fake_quant_kernel(spec: spec_lib.QuantSpec, kernel: jax.Array
                      ) -> tuple[jax.Array, jax.Array | None]:
  """Quantizes a kernel as AQT's ``dot_general`` does (the ``rhs``).

  Symmetric, ``spec.weight_bits`` bits, one absmax scale per output channel
  (the last axis: HWIO convolution kernels, ``(in, out)`` dense kernels).

  Args:
    spec: a quantized spec.
    kernel: the float kernel, output channels last.

  Returns:
    ``(q, scale)`` as :func:`fake_quant_input`, ``scale`` of shape
    ``(1, ..., 1, out)``; ``(kernel, None)`` when weights stay float.
  """
  if spec.weight_bits is None:
    return kernel, None
  quantizer = aqt.aqt_config(spec).fwd.dg_quantizer.rhs
  return _quantize(quantizer, kernel, kernel, tuple(range(kernel.ndim - 1)))


def _read_rows(size: int, k: int, s: int, pads: tuple[int, int]) -> list:
  """Input rows (or columns) a window of ``k`` at stride ``s`` reads."""
  lo, hi = pads
  out = (size + lo + hi - k) // s + 1
  return sorted({i * s + d - lo for i in range(out) for d in range(k)}
                & set(range(size)))


def _read_pixels(x: jax.Array, window: tuple[int, int],
                 strides: tuple[int, int], padding) -> jax.Array | None:
  """The input pixels a convolution reads; ``None`` when it reads them all.

  AQT's patches (:func:`aqt.extract_patches`) hold exactly these pixels (and
  padding zeros), so the per-tensor activation scale of the fake path,
  taken over them, is AQT's: a stride-2 1x1 shortcut reads one pixel in
  four, and the others must not set its scale.
  """
  window = tuple(window)
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
