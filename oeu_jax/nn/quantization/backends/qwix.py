"""The Qwix backend: Qwix's quantized training, served on Qwix's integers.

Training mode calls a ``qwix.QtProvider`` from inside the layer (a provider
"explicitly called by model authors", Qwix's own term, rather than injected
into the whole model by ``qwix.quantize_model``): the layer knows its spec,
so the float ends stay float without module-path rules. The provider's rule
gives ``spec.weight_bits`` weights (``int8``, ``jnp.int4``, or Qwix's
``"intN"`` types) with one absmax scale per output channel and
``spec.act_bits`` activations; Qwix's dynamic activation scales are per
example by default, and here per tensor (``lhs_disable_channelwise_axes``),
the scheme of the other backends. The forward pass is Qwix's integer
``conv_general_dilated`` / ``dot_general`` on ``QArray`` operands (int32
accumulator, then the activation scale, then the weight scales); the
backward pass is Qwix's custom VJP (straight-through: float gradients
through the dequantized operands).

Sub-byte integers (W4A8, W4A4). Qwix 0.1.8 hands both operands' integers
to ``lax.conv_general_dilated``, which refuses ``int8`` against ``int4``
("requires arguments to have the same dtypes"), and XLA:CPU refuses an
``int4`` against ``int4`` convolution ("does not support custom element
sizes"). Every integer of ``int4`` is an ``int8`` too, so sub-byte
integers are widened to ``int8`` before the contraction (same values, same
scales, exact); :class:`_Provider` does this in its own forward passes
for contractions with a sub-byte operand. Of the ways open (a Qwix option,
widening, a newer jax), this one keeps the pinned jax (0.10.2) and needs no
Qwix option (none exists in 0.1.8). Serving widens the same way; the stored
weights stay ``int4``.

Backward passes. Dense layers reuse Qwix's (``dot_general_qt_bwd``).
Convolutions with a sub-byte operand or groups take the float convolution's
transpose at the dequantized operands, which is what Qwix's backward pass
computes without gradient quantization, because Qwix 0.1.8's
``conv_general_qt_bwd`` fails on grouped convolutions (MobileNetV2's
depthwise layers: it transposes the kernel without regrouping it).
Ungrouped W8A8 convolutions run Qwix's own ``conv_general_qt``;
``tests/test_backends.py`` checks that both backward passes agree where
Qwix's works.

Serving. ``"convert"`` writes each layer's ``QArray`` weight, quantized by
Qwix (``qwix.quantize`` semantics: same calibration as training), to the
``"qwix"`` collection as ``qrhs/{value,scale}``; ``"serve"`` reads it and
runs the same integer contraction as training, with activations quantized
on the fly. Qwix's ``PtqProvider`` is not used: its convolution requires
equal activation and weight types (W4A8 fails) and per-example activation
scales.

Against the AQT backends (``tests/test_backends.py``): Qwix's integer
rounding is AQT's (absmax over ``2**(bits-1) - 0.5``, round half to even,
clip), but it divides by the scale where AQT multiplies by its inverse, and
a convolution's activation scale is taken over its whole input where AQT
takes it over the pixels the convolution reads (they differ for ResNet-18's
stride-2 1x1 shortcuts). An integer at a rounding boundary can move by one
step; the tests bound the outputs' difference.

References:
  Qwix: https://github.com/google/qwix (qwix 0.1.8:
    ``qwix/_src/providers/qt.py``, ``qwix/_src/core/conv_general_qt.py``)
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from qwix._src.core import conv_general as qconv
from qwix._src.core import dot_general as qdot
from qwix._src.core import dot_general_qt
from qwix._src.core import qarray
from qwix._src.providers import qt

from oeu_jax.nn.quantization import Conv
from oeu_jax.nn.quantization import spec as spec_lib

__all__ = ["COLLECTION", "dense", "conv", "qtype"]

COLLECTION = "qwix"

_NATIVE = {8: jnp.int8, 4: jnp.int4, 2: jnp.int2}


def qtype(bits: int):
  """Qwix's integer type of ``bits`` bits (``"int3"`` etc. where JAX has
  none)."""
  return _NATIVE.get(bits, f"int{bits}")


def _check(spec: spec_lib.QuantSpec) -> None:
  if spec.weight_bits is None:
    raise ValueError(
        f"The qwix backend quantizes weights; {spec} keeps them float. Use"
        " the fake or aqt backend for float weights.")


def _rule(spec: spec_lib.QuantSpec) -> qt.QtRule:
  return qt.QtRule(
      weight_qtype=qtype(spec.weight_bits),
      act_qtype=None if spec.act_bits is None else qtype(spec.act_bits),
      additional_qt_config={"lhs_disable_channelwise_axes": True})


def _sub_byte(qtype_) -> bool:
  return qtype_ is not None and not (
      isinstance(qtype_, type) and jnp.iinfo(qtype_).bits == 8)


def _widen(*operands):
  """Sub-byte integers as ``int8``: the same values, in a type XLA can
  contract."""
  return tuple(
      dataclasses.replace(o, qvalue=o.qvalue.astype(jnp.int8))
      if isinstance(o, qarray.QArray) and jnp.iinfo(o.qvalue.dtype).bits < 8
      else o
      for o in operands)


def _quantize_conv_operand(x, dnums, *, for_lhs: bool, qtype_):
  if qtype_ is None:
    return x
  how = qconv.get_how_to_quantize(dimension_numbers=dnums, for_lhs=for_lhs,
                                  qtype=qtype_, calibration_method="absmax")
  if for_lhs:  # one scale per tensor
    how = dataclasses.replace(how, channelwise_axes=[])
  return qarray.quantize(x, how)


_GEOMETRY_ARGS = (2, 3, 4, 5, 6, 7, 8)


@functools.partial(jax.custom_vjp, nondiff_argnums=_GEOMETRY_ARGS)
def _conv_qt(lhs, rhs, config, window_strides, padding, dimension_numbers,
             feature_group_count, batch_group_count, out_sharding):
  return _conv_qt_fwd(lhs, rhs, config, window_strides, padding,
                      dimension_numbers, feature_group_count,
                      batch_group_count, out_sharding)[0]


def _conv_qt_fwd(lhs, rhs, config, window_strides, padding,
                 dimension_numbers, feature_group_count, batch_group_count,
                 out_sharding):
  """Qwix's ``conv_general_qt_fwd``, sub-byte integers widened."""
  dnums = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                         dimension_numbers)
  qlhs = _quantize_conv_operand(lhs, dnums, for_lhs=True,
                                qtype_=config.lhs_qtype)
  qrhs = _quantize_conv_operand(rhs, dnums, for_lhs=False,
                                qtype_=config.rhs_qtype)
  qlhs, qrhs = _widen(qlhs, qrhs)
  out = qconv.conv_general_dilated(
      qlhs, qrhs, window_strides, padding, None, None, dnums,
      feature_group_count, batch_group_count, out_sharding=out_sharding)
  return out, (qlhs, qrhs)


def _conv_qt_bwd(config, window_strides, padding, dimension_numbers,
                 feature_group_count, batch_group_count, out_sharding, res,
                 g):
  """Straight-through: the float convolution's transpose at the
  dequantized operands (Qwix's backward without gradient quantization)."""
  del config, out_sharding
  lhs, rhs = (qarray.dequantize(x) if isinstance(x, qarray.QArray) else x
              for x in res)
  _, vjp = jax.vjp(lambda a, b: jax.lax.conv_general_dilated(
      a, b, window_strides, padding, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count), lhs, rhs)
  return vjp(g.astype(lhs.dtype))


_conv_qt.defvjp(_conv_qt_fwd, _conv_qt_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _widened_dot_qt(lhs, rhs, lhs_calibration, rhs_calibration,
                    dimension_numbers, config):
  return _widened_dot_fwd(lhs, rhs, lhs_calibration, rhs_calibration,
                          dimension_numbers, config)[0]


def _widened_dot_fwd(lhs, rhs, lhs_calibration, rhs_calibration,
                     dimension_numbers, config):
  """Qwix's ``dot_general_qt_fwd`` with sub-byte integers widened."""
  qlhs, qrhs = lhs, rhs
  if lhs_calibration is not None:
    scale, zero = qarray.compute_scale_zero_point(lhs_calibration,
                                                  config.lhs_qtype)
    qlhs = qarray.quantize_with_scale_zero_point(lhs, config.lhs_qtype,
                                                 scale, zero)
  if rhs_calibration is not None:
    scale, zero = qarray.compute_scale_zero_point(rhs_calibration,
                                                  config.rhs_qtype)
    qrhs = qarray.quantize_with_scale_zero_point(rhs, config.rhs_qtype,
                                                 scale, zero)
  out = qdot.dot_general(*_widen(qlhs, qrhs), dimension_numbers)
  return out, (lhs, rhs, qlhs, qrhs, lhs_calibration, rhs_calibration,
               config)


_widened_dot_qt.defvjp(_widened_dot_fwd, dot_general_qt.dot_general_qt_bwd)


class _Provider(qt.QtProvider):
  """Qwix's QT provider, per-tensor activations, integers of one width."""

  def dot_general(self, lhs, rhs, dimension_numbers, precision=None,
                  preferred_element_type=None, *, out_sharding=None):
    rule = self._get_current_rule_and_op_id("dot_general", only_rule=True)[0]
    if not (_sub_byte(rule.weight_qtype) or _sub_byte(rule.act_qtype)):
      return super().dot_general(lhs, rhs, dimension_numbers, precision,
                                 preferred_element_type,
                                 out_sharding=out_sharding)
    rule, op_id = self._get_current_rule_and_op_id("dot_general")
    config = self._create_dot_general_qt_config(rule, op_id, lhs, rhs)
    ndims = (lhs.ndim, rhs.ndim)

    def calibrate(x, for_lhs, qtype_, method):
      if qtype_ is None:
        return None
      how = qdot.get_how_to_quantize(
          dimension_numbers=dimension_numbers, ndims=ndims, for_lhs=for_lhs,
          qtype=qtype_, tile_size=None, calibration_method=method)
      if for_lhs:  # one scale per tensor
        how = dataclasses.replace(how, channelwise_axes=[])
      return qarray.calibrate(x, how)

    return _widened_dot_qt(
        lhs, rhs,
        calibrate(lhs, True, config.lhs_qtype, config.lhs_calibration_method),
        calibrate(rhs, False, config.rhs_qtype,
                  config.rhs_calibration_method),
        dimension_numbers, config)

  def _create_conv_general_qt_config(self, rule, op_id, lhs, rhs):
    config = super()._create_conv_general_qt_config(rule, op_id, lhs, rhs)
    return dataclasses.replace(config, lhs_disable_channelwise_axes=True)

  def conv_general_dilated(self, lhs, rhs, window_strides, padding,
                           lhs_dilation=None, rhs_dilation=None,
                           dimension_numbers=None, feature_group_count=1,
                           batch_group_count=1, precision=None,
                           preferred_element_type=None, out_sharding=None):
    rule = self._get_current_rule_and_op_id("conv_general_dilated",
                                            only_rule=True)[0]
    if feature_group_count == 1 and not (_sub_byte(rule.weight_qtype)
                                         or _sub_byte(rule.act_qtype)):
      return super().conv_general_dilated(
          lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
          dimension_numbers, feature_group_count, batch_group_count,
          precision, preferred_element_type, out_sharding)
    if lhs_dilation or rhs_dilation:
      raise ValueError("dilated quantized convolutions are not supported")
    rule, op_id = self._get_current_rule_and_op_id("conv_general_dilated")
    config = self._create_conv_general_qt_config(rule, op_id, lhs, rhs)
    return _conv_qt(lhs, rhs, config, tuple(window_strides), padding,
                    jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                                   dimension_numbers),
                    feature_group_count, batch_group_count, out_sharding)


def _frozen_weight(module: nn.Module, quantize, spec: spec_lib.QuantSpec
                   ) -> qarray.QArray:
  """The weight's ``QArray`` in ``"convert"`` (written) or ``"serve"`` mode."""
  if spec.mode == "convert":
    q = quantize()
    var = module.variable(COLLECTION, "qrhs",
                          lambda: {"value": q.qvalue, "scale": q.scale})
    var.value = {"value": q.qvalue, "scale": q.scale}
  else:
    shapes = jax.eval_shape(quantize)
    var = module.variable(COLLECTION, "qrhs", lambda: {
        "value": jnp.zeros(shapes.qvalue.shape, shapes.qvalue.dtype),
        "scale": jnp.zeros(shapes.scale.shape, shapes.scale.dtype)})
  return qarray.QArray(var.value["value"], var.value["scale"], None,
                       qtype(spec.weight_bits))


def dense(module: nn.Module, x: jax.Array, kernel: jax.Array,
          spec: spec_lib.QuantSpec) -> jax.Array:
  """``x @ kernel`` through Qwix (training: its QT provider)."""
  _check(spec)
  dims = (((x.ndim - 1,), (0,)), ((), ()))
  if spec.mode == "train":
    return _Provider([_rule(spec)]).dot_general(x, kernel, dims)
  ndims = (x.ndim, kernel.ndim)

  def how(for_lhs, bits):
    h = qdot.get_how_to_quantize(
        dimension_numbers=dims, ndims=ndims, for_lhs=for_lhs,
        qtype=qtype(bits), calibration_method="absmax", tile_size=None)
    return dataclasses.replace(h, channelwise_axes=[]) if for_lhs else h

  w = _frozen_weight(module, lambda: qarray.quantize(
      kernel, how(False, spec.weight_bits)), spec)
  if spec.act_bits is not None:
    x = qarray.quantize(x, how(True, spec.act_bits))
  x, w = _widen(x, w)
  return qdot.dot_general(x, w, dims)


def conv(module: nn.Module, x: jax.Array, kernel: jax.Array, geometry: Conv,
         spec: spec_lib.QuantSpec) -> jax.Array:
  """A convolution through Qwix (training: its QT provider)."""
  _check(spec)
  if spec.mode == "train":
    return _Provider([_rule(spec)]).conv_general_dilated(
        x, kernel, geometry.strides, geometry.padding,
        dimension_numbers=geometry.dimension_numbers(x.shape, kernel.shape),
        feature_group_count=geometry.groups)
  dnums = geometry.dimension_numbers(x.shape, kernel.shape)
  w = _frozen_weight(module, lambda: _quantize_conv_operand(
      kernel, dnums, for_lhs=False, qtype_=qtype(spec.weight_bits)), spec)
  if spec.act_bits is not None:
    x = _quantize_conv_operand(x, dnums, for_lhs=True,
                               qtype_=qtype(spec.act_bits))
  x, w = _widen(x, w)
  return qconv.conv_general_dilated(
      x, w, geometry.strides, geometry.padding, None, None, dnums,
      geometry.groups)
