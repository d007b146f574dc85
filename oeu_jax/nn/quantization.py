"""Quantization presets and the AQT dot-general factory.

This is the only module that talks to the quantization backend (AQT, the
``aqtp`` package). Models ask it for a ``dot_general`` built from a
:class:`QuantSpec`; swapping in a second backend (for example ``qwix``) means
changing this file only.

The scheme follows Q-MUL: symmetric integer fake quantization in the forward
pass, weights with one scale per output channel, activations with one scale per
tensor (dynamic absmax calibration), and a float backward pass, i.e. the
straight-through estimator for the rounding.

Two implementations of training mode (:data:`IMPLS`, ``QuantSpec.impl``):
``"aqt"`` (the default) contracts through AQT's ``dot_general`` (integer
dot, convolutions lowered to image patches); ``"fake"`` quantizes input and
kernel with AQT's own quantizers (:func:`fake_quant_input`,
:func:`fake_quant_kernel`: same calibration, clipping and rounding) and
leaves the contraction to a native float convolution / ``dot_general`` on
the integer-valued operands, scaled afterwards as AQT scales its integer
accumulator. Serving (``"convert"`` / ``"serve"``) always uses AQT.

References:
  Orthogonal Entropy Unlearning (OEU): https://arxiv.org/abs/2602.00567
  AQT: https://github.com/google/aqt
"""

from __future__ import annotations

import dataclasses

import aqt.jax.v2.config as aqt_config
import aqt.jax.v2.flax.aqt_flax as aqt_flax
import jax
from aqt.jax.v2.utils import QuantMode

from oeu_jax import nn as nn_names

__all__ = [
    "BITS",
    "MODES",
    "IMPLS",
    "QuantSpec",
    "preset",
    "validate_spec",
    "is_quantized",
    "serves_frozen_weights",
    "make_dot_general",
    "trains_fake_quant",
    "fake_quant_input",
    "fake_quant_kernel",
]

BITS = nn_names.BITS

# "train": fake quantization from the float kernel (training and evaluation).
# "convert": same forward pass, and AQT writes the integer weights and their
# scales to the "aqt" variable collection. "serve": AQT reads them from there
# (the float kernel is not used). See oeu_jax.nn.serving.
MODES = ("train", "convert", "serve")
_AQT_MODES = {"train": QuantMode.TRAIN, "convert": QuantMode.CONVERT,
              "serve": QuantMode.SERVE}

# How training mode computes a quantized layer (module docstring).
IMPLS = nn_names.IMPLS

_MIN_BITS = 2
_MAX_BITS = 8


@dataclasses.dataclass(frozen=True)
class QuantSpec:
  """Bit widths of a quantized layer.

  Attributes:
    weight_bits: bits of the weights (the ``rhs`` of the matmul), one symmetric
      scale per output channel; ``None`` keeps the weights in float.
    act_bits: bits of the input activations (the ``lhs``), one symmetric scale
      per tensor; ``None`` keeps the activations in float.
    mode: one of :data:`MODES`. ``"train"`` (the default) for training and
      evaluation; ``"convert"`` and ``"serve"`` freeze the integer weights
      for serving (:mod:`oeu_jax.nn.serving`) and give the same outputs.
    impl: one of :data:`IMPLS`, how ``"train"`` mode computes the layer:
      ``"aqt"`` (the default) through AQT's integer ``dot_general`` and
      image patches, ``"fake"`` through native float convolutions on AQT's
      quantized values (same outputs, see :mod:`oeu_jax.nn.layers`). Ignored
      in ``"convert"`` and ``"serve"`` modes, which always use AQT.
  """

  weight_bits: int | None
  act_bits: int | None
  mode: str = "train"
  impl: str = "aqt"


_PRESETS = {
    "float": QuantSpec(weight_bits=None, act_bits=None),
    "w8a8": QuantSpec(weight_bits=8, act_bits=8),
    "w4a8": QuantSpec(weight_bits=4, act_bits=8),
    "w4a4": QuantSpec(weight_bits=4, act_bits=4),
}


def preset(name: str) -> QuantSpec:
  """Returns the :class:`QuantSpec` of a named preset.

  Args:
    name: one of :data:`BITS` (case-insensitive): ``"float"``, ``"w8a8"``,
      ``"w4a8"`` (Q-MUL's ResNet-18 setting) or ``"w4a4"``.

  Returns:
    The preset's spec; ``"float"`` gives ``QuantSpec(None, None)``.

  Raises:
    ValueError: if ``name`` is not a known preset.

  Examples:
    >>> preset("w4a8")
    QuantSpec(weight_bits=4, act_bits=8, mode='train', impl='aqt')
  """
  if not isinstance(name, str) or name.lower() not in _PRESETS:
    raise ValueError(
        f"Unknown quantization preset {name!r}; valid presets are {BITS}."
    )
  return _PRESETS[name.lower()]


def _check_bits(value, field: str) -> None:
  # bool is an int subclass; `True` bits is a bug, not 1 bit.
  if value is None:
    return
  if isinstance(value, bool) or not isinstance(value, int):
    raise ValueError(
        f"QuantSpec.{field} must be an int in [{_MIN_BITS}, {_MAX_BITS}] or"
        f" None, got {value!r}."
    )
  if not _MIN_BITS <= value <= _MAX_BITS:
    raise ValueError(
        f"QuantSpec.{field} must be in [{_MIN_BITS}, {_MAX_BITS}] or None, got"
        f" {value}."
    )


def validate_spec(spec: QuantSpec | None) -> QuantSpec | None:
  """Checks the bit widths of a spec.

  Args:
    spec: the spec to check, or ``None`` (float).

  Returns:
    ``spec`` unchanged.

  Raises:
    ValueError: if a bit width is not ``None`` or an int in ``[2, 8]``, if
      the mode is not one of :data:`MODES`, the impl not one of
      :data:`IMPLS`, or if ``spec`` is not a :class:`QuantSpec`.

  Examples:
    >>> validate_spec(QuantSpec(8, 8))
    QuantSpec(weight_bits=8, act_bits=8, mode='train', impl='aqt')
  """
  if spec is None:
    return None
  if not isinstance(spec, QuantSpec):
    raise ValueError(f"Expected a QuantSpec or None, got {spec!r}.")
  _check_bits(spec.weight_bits, "weight_bits")
  _check_bits(spec.act_bits, "act_bits")
  if not isinstance(spec.mode, str) or spec.mode not in MODES:
    raise ValueError(
        f"QuantSpec.mode must be one of {MODES}, got {spec.mode!r}.")
  if not isinstance(spec.impl, str) or spec.impl not in IMPLS:
    raise ValueError(
        f"QuantSpec.impl must be one of {IMPLS}, got {spec.impl!r}.")
  return spec


def is_quantized(spec: QuantSpec | None) -> bool:
  """Whether a spec quantizes anything.

  Args:
    spec: a :class:`QuantSpec` or ``None``.

  Returns:
    ``False`` for ``None`` and for ``QuantSpec(None, None)``, else ``True``.

  Examples:
    >>> is_quantized(preset("float")), is_quantized(preset("w8a8"))
    (False, True)
  """
  return spec is not None and (
      spec.weight_bits is not None or spec.act_bits is not None
  )


def serves_frozen_weights(spec: QuantSpec | None) -> bool:
  """Whether a layer reads frozen integer weights instead of its kernel.

  True in ``"serve"`` mode when the weights are quantized: the layer then
  has no float ``kernel`` parameter, AQT reads the integer kernel and its
  scales from the ``"aqt"`` collection.

  Args:
    spec: a :class:`QuantSpec` or ``None``.

  Returns:
    ``spec.mode == "serve" and spec.weight_bits is not None``.

  Examples:
    >>> serves_frozen_weights(dataclasses.replace(preset("w8a8"), mode="serve"))
    True
  """
  return (spec is not None and spec.weight_bits is not None
          and spec.mode == "serve")


def make_dot_general(spec: QuantSpec | None) -> aqt_flax.AqtDotGeneral | None:
  """Builds an AQT ``dot_general`` module for a spec.

  The returned Flax module replaces ``jax.lax.dot_general`` with the activation
  as ``lhs`` and the weight as ``rhs``. Scales are dynamic absmax: the weight
  scale is shared over the contracting axes (one scale per output channel),
  the activation scale over the whole tensor. The backward pass is in float
  and uses the straight-through estimator. No stochastic rounding, so no rng
  is needed (``prng_name=None``).

  ``spec.mode`` selects AQT's freezer for the weights: ``"convert"`` writes
  the integer weights (int8, or ``jnp.int4`` for 4 bits) and their
  per-output-channel scales to the ``"aqt"`` collection (apply with
  ``mutable=["aqt"]``) under ``AqtDotGeneral_0/qrhs/{value,scale}``;
  ``"serve"`` reads them back. Activations are always quantized on the fly
  (dynamic per-tensor scale), in every mode.

  A new module instance is returned on each call; create it inside the
  ``@nn.compact`` method that uses it.

  Args:
    spec: bit widths, or ``None``.

  Returns:
    An ``aqt_flax.AqtDotGeneral``, or ``None`` when ``spec`` quantizes nothing
    (use plain ``jax.lax.dot_general`` then).

  Raises:
    ValueError: on invalid bit widths (see :func:`validate_spec`).

  Examples:
    >>> make_dot_general(preset("float")) is None
    True
  """
  validate_spec(spec)
  if not is_quantized(spec):
    return None
  cfg = _aqt_config(spec)
  if spec.mode == "train" or spec.weight_bits is None:
    # Float weights have nothing to freeze; their mode is training's.
    return aqt_flax.AqtDotGeneral(cfg, prng_name=None)
  return aqt_flax.AqtDotGeneral(
      cfg, prng_name=None, rhs_quant_mode=_AQT_MODES[spec.mode],
      rhs_freeze_mode=aqt_flax.FreezerMode.CALIBRATION_AND_VALUE)


def _aqt_config(spec: QuantSpec) -> aqt_config.DotGeneral:
  """AQT's configuration of a spec: the one both impls quantize with."""
  cfg = aqt_config.dot_general_make(
      lhs_bits=spec.act_bits, rhs_bits=spec.weight_bits, bwd_bits=None
  )
  if spec.act_bits is not None:
    cfg.fwd.dg_quantizer.lhs.calib_shared_axes = "per_tensor"
  return cfg


def trains_fake_quant(spec: QuantSpec | None) -> bool:
  """Whether a layer computes through :func:`fake_quant_input` / kernel.

  Args:
    spec: a :class:`QuantSpec` or ``None``.

  Returns:
    True for a quantized spec with ``impl="fake"`` in ``"train"`` mode.

  Examples:
    >>> trains_fake_quant(dataclasses.replace(preset("w4a8"), impl="fake"))
    True
    >>> trains_fake_quant(preset("w4a8"))
    False
  """
  validate_spec(spec)
  return is_quantized(spec) and spec.impl == "fake" and spec.mode == "train"


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


def fake_quant_input(spec: QuantSpec, x: jax.Array, *,
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
    >>> q, s = fake_quant_input(QuantSpec(4, 8), jax.numpy.array([1., -.5]))
    >>> q.tolist(), s.shape  # scale: absmax / 127.5
    ([127.0, -64.0], (1,))
  """
  if spec.act_bits is None:
    return x, None
  quantizer = _aqt_config(spec).fwd.dg_quantizer.lhs
  return _quantize(quantizer, x, x if reads is None else reads, None)


def fake_quant_kernel(spec: QuantSpec, kernel: jax.Array
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
  quantizer = _aqt_config(spec).fwd.dg_quantizer.rhs
  return _quantize(quantizer, kernel, kernel, tuple(range(kernel.ndim - 1)))
