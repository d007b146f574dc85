"""What a quantized layer computes: bits, mode and backend (no JAX).

The scheme follows Q-MUL: symmetric integer quantization in the forward
pass, weights with one scale per output channel, activations with one scale
per tensor (dynamic absmax calibration), and a float backward pass, i.e. the
straight-through estimator for the rounding. A :class:`QuantSpec` names the
bits, the mode (train, convert, serve) and the backend that computes it
(:mod:`oeu_jax.nn.quantization.backends`).

References:
  Orthogonal Entropy Unlearning (OEU): https://arxiv.org/abs/2602.00567
"""

from __future__ import annotations

import dataclasses

from oeu_jax import defaults
from oeu_jax import nn as nn_names

__all__ = [
    "BITS",
    "MODES",
    "BACKENDS",
    "QuantSpec",
    "preset",
    "validate_spec",
    "is_quantized",
    "serves_frozen_weights",
]

BITS = nn_names.BITS

# "train": quantization from the float kernel (training and evaluation).
# "convert": same forward pass, and the backend writes the integer weights and
# their scales to its variable collection. "serve": it reads them from there
# (the float kernel is not used). See oeu_jax.nn.serving.
MODES = ("train", "convert", "serve")

# The backends, one module each in oeu_jax/nn/quantization/backends/.
BACKENDS = nn_names.BACKENDS

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
    backend: one of :data:`BACKENDS`, the code that computes the layer:
      ``"fake"`` (the default, ``defaults.QUANT_BACKEND``: AQT's quantizers,
      then native float convolutions, float cost), ``"aqt"`` (AQT's integer
      ``dot_general`` on image patches) or ``"qwix"`` (Qwix's quantized
      training provider). See :mod:`oeu_jax.nn.quantization.backends`.
  """

  weight_bits: int | None
  act_bits: int | None
  mode: str = "train"
  backend: str = defaults.QUANT_BACKEND


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
    QuantSpec(weight_bits=4, act_bits=8, mode='train', backend='fake')
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
      the mode is not one of :data:`MODES`, the backend not one of
      :data:`BACKENDS`, or if ``spec`` is not a :class:`QuantSpec`.

  Examples:
    >>> validate_spec(QuantSpec(8, 8))
    QuantSpec(weight_bits=8, act_bits=8, mode='train', backend='fake')
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
  if not isinstance(spec.backend, str) or spec.backend not in BACKENDS:
    raise ValueError(
        f"QuantSpec.backend must be one of {BACKENDS}, got {spec.backend!r}.")
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
  scales from its backend's variable collection.

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
