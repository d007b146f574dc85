"""The AQT backend: AQT's integer ``dot_general`` and its freezer.

Dense layers contract through ``aqt_flax.AqtDotGeneral``; convolutions are
lowered to image patches and the same ``dot_general``, because AQT's own
convolution has no straight-through gradient (its kernel and input gradients
are exactly zero, google/aqt#285). AQT adds no variables in training mode.
Serving uses AQT's freezer: ``"convert"`` writes each layer's integer
weights (``int8``, or ``jnp.int4`` for 4 bits) and their per-output-channel
scales to the ``"aqt"`` collection under ``AqtDotGeneral_0/qrhs/{value,
scale}``; ``"serve"`` reads them back.

AQT's README says the library is reaching its end of life and points to
Qwix (the ``qwix`` backend).

References:
  AQT: https://github.com/google/aqt
"""

from __future__ import annotations

import aqt.jax.v2.config as aqt_config_lib
import aqt.jax.v2.flax.aqt_flax as aqt_flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from aqt.jax.v2.utils import QuantMode

from oeu_jax.nn.quantization import Conv
from oeu_jax.nn.quantization import spec as spec_lib

__all__ = ["COLLECTION", "make_dot_general", "aqt_config", "dense", "conv",
           "extract_patches"]

COLLECTION = "aqt"

_AQT_MODES = {"train": QuantMode.TRAIN, "convert": QuantMode.CONVERT,
              "serve": QuantMode.SERVE}


def aqt_config(spec: spec_lib.QuantSpec) -> aqt_config_lib.DotGeneral:
  """AQT's configuration of a quantized spec (also the ``fake`` backend's).

  Symmetric ``spec.weight_bits`` weights with one absmax scale per output
  channel, ``spec.act_bits`` activations with one per tensor, float backward
  pass (``bwd_bits=None``: straight-through).
  """
  cfg = aqt_config_lib.dot_general_make(
      lhs_bits=spec.act_bits, rhs_bits=spec.weight_bits, bwd_bits=None)
  if spec.act_bits is not None:
    cfg.fwd.dg_quantizer.lhs.calib_shared_axes = "per_tensor"
  return cfg


def make_dot_general(spec: spec_lib.QuantSpec | None
                     ) -> aqt_flax.AqtDotGeneral | None:
  """Builds an AQT ``dot_general`` module for a spec.

  The returned Flax module replaces ``jax.lax.dot_general`` with the activation
  as ``lhs`` and the weight as ``rhs``. Scales are dynamic absmax: the weight
  scale is shared over the contracting axes (one scale per output channel),
  the activation scale over the whole tensor. The backward pass is in float
  and uses the straight-through estimator. No stochastic rounding, so no rng
  is needed (``prng_name=None``).

  ``spec.mode`` selects AQT's freezer for the weights: ``"convert"`` writes
  the integer weights and their scales to the ``"aqt"`` collection (apply
  with ``mutable=["aqt"]``); ``"serve"`` reads them back. Activations are
  always quantized on the fly (dynamic per-tensor scale), in every mode.

  A new module instance is returned on each call; create it inside the
  ``@nn.compact`` method that uses it.

  Args:
    spec: bit widths, or ``None``.

  Returns:
    An ``aqt_flax.AqtDotGeneral``, or ``None`` when ``spec`` quantizes nothing
    (use plain ``jax.lax.dot_general`` then).

  Raises:
    ValueError: on invalid bit widths (see
      :func:`oeu_jax.nn.quantization.validate_spec`).

  Examples:
    >>> make_dot_general(spec_lib.preset("float")) is None
    True
  """
  spec_lib.validate_spec(spec)
  if not spec_lib.is_quantized(spec):
    return None
  cfg = aqt_config(spec)
  if spec.mode == "train" or spec.weight_bits is None:
    # Float weights have nothing to freeze; their mode is training's.
    return aqt_flax.AqtDotGeneral(cfg, prng_name=None)
  return aqt_flax.AqtDotGeneral(
      cfg, prng_name=None, rhs_quant_mode=_AQT_MODES[spec.mode],
      rhs_freeze_mode=aqt_flax.FreezerMode.CALIBRATION_AND_VALUE)


def dense(module: nn.Module, x: jax.Array, kernel: jax.Array,
          spec: spec_lib.QuantSpec) -> jax.Array:
  """``x @ kernel`` through AQT's ``dot_general`` (any mode).

  ``module`` is unused: the ``AqtDotGeneral`` created here becomes its child
  and keeps the frozen weights.
  """
  del module
  dims = (((x.ndim - 1,), (0,)), ((), ()))
  return make_dot_general(spec)(x, kernel, dims, None)


def conv(module: nn.Module, x: jax.Array, kernel: jax.Array, geometry: Conv,
         spec: spec_lib.QuantSpec) -> jax.Array:
  """A convolution as image patches times the kernel, through AQT.

  Strided slices of the padded input give image patches with the feature
  axis ordered ``(kh, kw, C_in)``, the kernel reshaped to
  ``(kh*kw*C_in, features)`` matches that order, and AQT's ``dot_general``
  contracts them. The per-tensor activation scale is the absmax of the
  patches, i.e. of the input pixels the convolution reads (all of them,
  except for strided convolutions that skip some, e.g. a stride-2 1x1
  shortcut); weight scales are per output channel. Grouped and depthwise
  convolutions use the group as a dot-general batch dimension, so they are
  quantized the same way. The patches take ``kh * kw`` times the input's
  memory.
  """
  del module
  kh, kw = kernel.shape[:2]
  patches = extract_patches(x, (kh, kw), geometry.strides, geometry.padding)
  return _patch_matmul(make_dot_general(spec), patches, kernel,
                       geometry.groups)


def extract_patches(x: jax.Array, window: tuple[int, int],
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
