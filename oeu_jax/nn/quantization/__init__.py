"""Quantization: what a layer computes (``spec``) and who computes it.

:class:`QuantSpec` (in :mod:`.spec`) names the bits, the mode and the
backend. A backend is one module of :mod:`oeu_jax.nn.quantization.backends`
named by its file (:data:`BACKENDS`); adding one means adding that file. It
provides:

* ``COLLECTION``: the Flax variable collection its ``"convert"`` mode writes
  the integer weights and their scales to, and its ``"serve"`` mode reads.
* ``dense(module, x, kernel, spec)``: ``x @ kernel`` (no bias) for a
  quantized spec, in every mode of :data:`MODES`. ``module`` is the calling
  :class:`~oeu_jax.nn.layers.QDense`; the backend creates its serving
  variables there. In ``"serve"`` mode ``kernel`` is a zero placeholder.
* ``conv(module, x, kernel, geometry, spec)``: the same for a 2-D NHWC/HWIO
  convolution of :class:`Conv` geometry.

Training mode must give straight-through gradients to the kernel and the
input of every layer, and serving must give the training-mode outputs
(``tests/test_backends.py`` holds every backend to that). The layers call
a backend only for a quantized spec; float layers never reach it.

References:
  AQT: https://github.com/google/aqt
  Qwix: https://github.com/google/qwix
"""

from __future__ import annotations

import importlib
from typing import Any
from typing import NamedTuple

import jax

from oeu_jax.nn.quantization.spec import BACKENDS
from oeu_jax.nn.quantization.spec import BITS
from oeu_jax.nn.quantization.spec import MODES
from oeu_jax.nn.quantization.spec import QuantSpec
from oeu_jax.nn.quantization.spec import is_quantized
from oeu_jax.nn.quantization.spec import preset
from oeu_jax.nn.quantization.spec import serves_frozen_weights
from oeu_jax.nn.quantization.spec import validate_spec

__all__ = ["BACKENDS", "BITS", "MODES", "QuantSpec", "Conv", "backend",
           "is_quantized", "preset", "serves_frozen_weights",
           "validate_spec"]

_DN = ("NHWC", "HWIO", "NHWC")


class Conv(NamedTuple):
  """Geometry of a 2-D convolution (NHWC input, HWIO kernel).

  Attributes:
    strides: ``(sh, sw)``.
    padding: ``"SAME"``, ``"VALID"`` or ``((lo, hi), (lo, hi))``.
    groups: ``feature_group_count`` (``C_in`` for depthwise).
  """

  strides: tuple[int, int]
  padding: Any
  groups: int

  def __call__(self, lhs: jax.Array, rhs: jax.Array, **kwargs) -> jax.Array:
    """``lax.conv_general_dilated`` of this geometry (kwargs passed on)."""
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides=self.strides, padding=self.padding,
        lhs_dilation=(1, 1), rhs_dilation=(1, 1),
        dimension_numbers=self.dimension_numbers(lhs.shape, rhs.shape),
        feature_group_count=self.groups, **kwargs)

  @staticmethod
  def dimension_numbers(lhs_shape, rhs_shape) -> jax.lax.ConvDimensionNumbers:
    """NHWC / HWIO / NHWC dimension numbers for these shapes."""
    return jax.lax.conv_dimension_numbers(lhs_shape, rhs_shape, _DN)


def backend(spec: QuantSpec):
  """The backend module that computes ``spec`` (imported on first use).

  Args:
    spec: a validated :class:`QuantSpec`.

  Returns:
    The module ``oeu_jax.nn.quantization.backends.<spec.backend>``.

  Examples:
    >>> backend(preset("w4a8")).__name__
    'oeu_jax.nn.quantization.backends.fake'
  """
  validate_spec(spec)
  return importlib.import_module(
      f"oeu_jax.nn.quantization.backends.{spec.backend}")
