"""Flax Linen classifiers with injectable quantization.

Every weight layer is a :class:`QDense` or a :class:`QConv`. With a float spec
(``None`` or ``QuantSpec(None, None)``) they compute exactly what
``flax.linen.Dense`` / ``flax.linen.Conv`` compute, with the same parameter
names, shapes and initializers. With a quantized spec they route the matmul
through the AQT ``dot_general`` of :mod:`oeu_jax.quantization`; convolutions
are lowered to image patches and a matmul, because AQT's own convolution has
no straight-through gradient (its kernel and input gradients are exactly zero,
google/aqt#285). AQT adds no variables in training mode, so a float model and
its quantized twin share one parameter tree.

BatchNorm stays in float, as in Q-MUL. With ``float_ends=True`` the first
convolution and the final classifier stay in float too.

References:
  Orthogonal Entropy Unlearning (OEU): https://arxiv.org/abs/2602.00567
  He et al., Deep Residual Learning for Image Recognition:
    https://arxiv.org/abs/1512.03385
  Sandler et al., MobileNetV2: https://arxiv.org/abs/1801.04381
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from oeu_jax import quantization
from oeu_jax.quantization import QuantSpec

__all__ = [
    "QDense",
    "QConv",
    "CNN",
    "BasicBlock",
    "ResNet18",
    "InvertedResidual",
    "MobileNetV2",
    "MODELS",
    "build_model",
    "init_model",
    "apply_model",
]

MODELS = ("cnn", "resnet18", "mobilenetv2")

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


def _kernel(module: nn.Module, shape: tuple[int, ...]) -> jax.Array:
  """The float kernel parameter; a zero placeholder when serving.

  In ``"serve"`` mode (:func:`oeu_jax.quantization.serves_frozen_weights`)
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
    dot_general = quantization.make_dot_general(self.quant)
    if dot_general is None:
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

    dot_general = quantization.make_dot_general(self.quant)
    if dot_general is None:
      y = jax.lax.conv_general_dilated(
          x, kernel, window_strides=strides, padding=padding,
          lhs_dilation=(1, 1), rhs_dilation=(1, 1),
          dimension_numbers=jax.lax.conv_dimension_numbers(
              x.shape, kernel.shape, _DN),
          feature_group_count=groups, precision=None)
    else:
      patches = _extract_patches(x, (kh, kw), strides, padding)
      y = _patch_matmul(dot_general, patches, kernel, groups)

    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
      y += jnp.reshape(bias, (1, 1, 1, -1))
    return y


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


def _end(quant: QuantSpec | None, float_ends: bool) -> QuantSpec | None:
  """Spec of the first conv / the classifier: float when ``float_ends``."""
  return None if float_ends else quant


class CNN(nn.Module):
  """A small convolutional classifier (no BatchNorm).

  conv3x3(32)-ReLU-conv3x3(64)-ReLU-maxpool2-dense(128)-ReLU-dense(K), the
  Keras/Flax MNIST network; it fits 8x8, 28x28 and 32x32 inputs. For inputs
  of 16 pixels or more a 2x2 max-pool also follows the first conv (by
  default), which cuts the cost of a 28x28 step about fourfold on CPU.

  Attributes:
    num_classes: number of classes K.
    quant: bit widths of the quantized layers; ``None`` is float.
    float_ends: keep the first conv and the classifier in float.
    features: channels of the two convolutions.
    hidden: width of the hidden dense layer.
    stem_pool: pool after the first conv too; ``None``: when the input is at
      least 16 pixels high.
  """

  num_classes: int
  quant: QuantSpec | None = None
  float_ends: bool = True
  features: Sequence[int] = (32, 64)
  hidden: int = 128
  stem_pool: bool | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Returns ``(N, num_classes)`` logits of NHWC images ``x``."""
    del train  # No BatchNorm or dropout.
    stem_pool = x.shape[1] >= 16 if self.stem_pool is None else self.stem_pool
    for i, f in enumerate(self.features):
      spec = _end(self.quant, self.float_ends) if i == 0 else self.quant
      x = nn.relu(QConv(f, (3, 3), quant=spec, name=f"conv{i + 1}")(x))
      if i == 0 and stem_pool:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(QDense(self.hidden, quant=self.quant, name="fc1")(x))
    return QDense(self.num_classes, quant=_end(self.quant, self.float_ends),
                  name="head")(x)


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
  # PyTorch's momentum 0.1 and eps 1e-5, as in the SalUn / Q-MUL models.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
  """ResNet basic block: two 3x3 convs with BatchNorm and a shortcut.

  Attributes:
    features: output channels.
    strides: stride of the first conv and of the projection shortcut.
    quant: bit widths of the convs; ``None`` is float.
  """

  features: int
  strides: int = 1
  quant: QuantSpec | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Applies the block to NHWC ``x``."""
    conv = functools.partial(QConv, self.features, (3, 3), padding=1,
                             use_bias=False, quant=self.quant)
    y = conv(strides=self.strides, name="conv1")(x)
    y = nn.relu(_batch_norm(train, "bn1")(y))
    y = conv(name="conv2")(y)
    y = _batch_norm(train, "bn2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = QConv(self.features, (1, 1), strides=self.strides, padding=0,
                use_bias=False, quant=self.quant, name="shortcut_conv")(x)
      x = _batch_norm(train, "shortcut_bn")(x)
    return nn.relu(x + y)


def _scaled(channels: int, width: float) -> int:
  return max(1, int(round(channels * width)))


class ResNet18(nn.Module):
  """ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool).

  Four stages of two :class:`BasicBlock` each, widths ``(64, 128, 256, 512)``
  times ``width``, strides ``(1, 2, 2, 2)``, global average pooling and a
  linear classifier; BatchNorm in float with running statistics.

  Attributes:
    num_classes: number of classes K.
    quant: bit widths of the quantized layers; ``None`` is float.
    float_ends: keep the stem conv and the classifier in float.
    width: channel multiplier (1.0 is the standard network; tests use less).
  """

  num_classes: int
  quant: QuantSpec | None = None
  float_ends: bool = True
  width: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Returns ``(N, num_classes)`` logits of NHWC images ``x``."""
    x = QConv(_scaled(64, self.width), (3, 3), padding=1, use_bias=False,
              quant=_end(self.quant, self.float_ends), name="stem_conv")(x)
    x = nn.relu(_batch_norm(train, "stem_bn")(x))
    for stage, (channels, stride) in enumerate(
        zip((64, 128, 256, 512), (1, 2, 2, 2))):
      for block in range(2):
        x = BasicBlock(_scaled(channels, self.width),
                       strides=stride if block == 0 else 1, quant=self.quant,
                       name=f"layer{stage + 1}_{block}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return QDense(self.num_classes, quant=_end(self.quant, self.float_ends),
                  name="head")(x)


def _make_divisible(value: float, divisor: int = 8) -> int:
  # torchvision's rounding of MobileNet widths.
  new = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return new + divisor if new < 0.9 * value else new


class InvertedResidual(nn.Module):
  """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection.

  Attributes:
    features: output channels.
    strides: stride of the depthwise conv.
    expansion: expansion ratio t (no expansion conv when 1).
    quant: bit widths of the convs; ``None`` is float.
  """

  features: int
  strides: int
  expansion: int
  quant: QuantSpec | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Applies the block to NHWC ``x``."""
    c_in = x.shape[-1]
    hidden = c_in * self.expansion
    y = x
    if self.expansion != 1:
      y = QConv(hidden, (1, 1), padding=0, use_bias=False, quant=self.quant,
                name="expand_conv")(y)
      y = nn.relu6(_batch_norm(train, "expand_bn")(y))
    y = QConv(hidden, (3, 3), strides=self.strides, padding=1, use_bias=False,
              feature_group_count=hidden, quant=self.quant,
              name="depthwise_conv")(y)
    y = nn.relu6(_batch_norm(train, "depthwise_bn")(y))
    y = QConv(self.features, (1, 1), padding=0, use_bias=False,
              quant=self.quant, name="project_conv")(y)
    y = _batch_norm(train, "project_bn")(y)
    if self.strides == 1 and c_in == self.features:
      y = x + y
    return y


# (expansion t, channels c, repeats n, stride s); CIFAR variant: the second
# stage keeps stride 1 and so does the stem, for an overall stride of 8.
_MOBILENETV2_CIFAR = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
  """MobileNetV2 for 32x32 inputs (CIFAR strides), ReLU6 and BatchNorm.

  Stem 3x3 conv with stride 1, the seven inverted-residual stages with the
  second stage's stride set to 1, a 1x1 conv to 1280 channels (kept at 1280
  for ``width < 1``, as torchvision does), global average pooling and a linear
  classifier. Channels are ``width`` times the standard ones, rounded to a
  multiple of 8.

  Attributes:
    num_classes: number of classes K.
    quant: bit widths of the quantized layers; ``None`` is float.
    float_ends: keep the stem conv and the classifier in float.
    width: width multiplier (0.5 by default).
  """

  num_classes: int
  quant: QuantSpec | None = None
  float_ends: bool = True
  width: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Returns ``(N, num_classes)`` logits of NHWC images ``x``."""
    x = QConv(_make_divisible(32 * self.width), (3, 3), padding=1,
              use_bias=False, quant=_end(self.quant, self.float_ends),
              name="stem_conv")(x)
    x = nn.relu6(_batch_norm(train, "stem_bn")(x))
    index = 0
    for t, c, n, s in _MOBILENETV2_CIFAR:
      for i in range(n):
        x = InvertedResidual(_make_divisible(c * self.width),
                             strides=s if i == 0 else 1, expansion=t,
                             quant=self.quant, name=f"block{index}")(x, train)
        index += 1
    x = QConv(_make_divisible(1280 * max(1.0, self.width)), (1, 1), padding=0,
              use_bias=False, quant=self.quant, name="last_conv")(x)
    x = nn.relu6(_batch_norm(train, "last_bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    return QDense(self.num_classes, quant=_end(self.quant, self.float_ends),
                  name="head")(x)


_MODEL_CLASSES = {"cnn": CNN, "resnet18": ResNet18, "mobilenetv2": MobileNetV2}


def build_model(name: str, *, num_classes: int,
                bits: str | QuantSpec | None = "w4a8", float_ends: bool = True,
                **kwargs) -> nn.Module:
  """Builds a classifier by name.

  Args:
    name: one of :data:`MODELS` (case-insensitive).
    num_classes: number of classes K, at least 2.
    bits: a preset name from :data:`oeu_jax.quantization.BITS`, a
      :class:`QuantSpec`, or ``None`` (float). Default W4A8, Q-MUL's setting.
    float_ends: keep the first conv and the final classifier in float, Q-MUL's
      convention. BatchNorm is always float.
    **kwargs: extra module attributes, e.g. ``width`` for ResNet18 and
      MobileNetV2, ``features`` / ``hidden`` for the CNN.

  Returns:
    An unbound Flax module; call it as ``model.apply(variables, x, train=...)``
    or through :func:`init_model` / :func:`apply_model`.

  Raises:
    ValueError: for an unknown name or preset, invalid bits, or
      ``num_classes < 2``.

  Examples:
    >>> model = build_model("cnn", num_classes=10, bits="w8a8")
    >>> type(model).__name__
    'CNN'
  """
  key = name.lower() if isinstance(name, str) else None
  if key not in _MODEL_CLASSES:
    raise ValueError(f"Unknown model {name!r}; valid models are {MODELS}.")
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or (
      num_classes < 2):
    raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
  if isinstance(bits, str):
    quant = quantization.preset(bits)
  else:
    quant = quantization.validate_spec(bits)
  if not quantization.is_quantized(quant):
    quant = None
  return _MODEL_CLASSES[key](num_classes=num_classes, quant=quant,
                             float_ends=float_ends, **kwargs)


# Jitted, with the (hashable) module static: one compiled program per model
# and shape, reused across calls. On CPU this beats compiling every
# initializer's random-number code shape by shape.
@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_variables(model: nn.Module, rng: jax.Array, shape: tuple[int, ...]):
  return model.init(rng, jnp.zeros((1,) + shape, jnp.float32), train=False)


def init_model(model: nn.Module, rng: jax.Array,
               input_shape: Sequence[int]) -> tuple[Any, Any]:
  """Initializes a model's parameters and BatchNorm statistics.

  Args:
    model: a module from :func:`build_model`.
    rng: a ``jax.random.key``.
    input_shape: the shape of one example, ``(H, W, C)``.

  Returns:
    ``(params, batch_stats)``; ``batch_stats`` is ``{}`` for a model without
    BatchNorm. Works under ``jax.jit`` and ``jax.vmap`` over ``rng``.

  Raises:
    ValueError: if ``input_shape`` is not three positive ints.

  Examples:
    >>> model = build_model("cnn", num_classes=3, bits="float")
    >>> params, stats = init_model(model, jax.random.key(0), (8, 8, 1))
    >>> stats
    {}
  """
  try:
    shape = tuple(operator.index(d) for d in input_shape)
  except TypeError:
    shape = ()
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(
        f"input_shape must be one example's (H, W, C), got {input_shape!r}.")
  # AQT creates no variables in training mode, so the float twin has the same
  # tree and the same initial values, and traces about twice as fast.
  if getattr(model, "quant", None) is not None:
    model = model.clone(quant=None)
  variables = _init_variables(model, rng, shape)
  return variables["params"], variables.get("batch_stats", {})


def apply_model(model: nn.Module, params: Any, batch_stats: Any,
                x: jax.Array, *, train: bool) -> tuple[jax.Array, Any]:
  """Runs a model; pure and jittable.

  Args:
    model: a module from :func:`build_model`.
    params: its parameters.
    batch_stats: its BatchNorm statistics, ``{}`` when it has none.
    x: ``(N, H, W, C)`` float images.
    train: use batch statistics in BatchNorm and return updated running
      statistics (``False``: use and return the running statistics).

  Returns:
    ``(logits, new_batch_stats)`` with logits of shape ``(N, num_classes)``;
    ``new_batch_stats`` is ``batch_stats`` itself unless ``train`` and the
    model has BatchNorm.

  Raises:
    ValueError: if ``x`` is not a 4-D floating-point array.

  Examples:
    >>> model = build_model("cnn", num_classes=3, bits="w8a8")
    >>> params, stats = init_model(model, jax.random.key(0), (8, 8, 1))
    >>> logits, _ = apply_model(model, params, stats, jnp.ones((2, 8, 8, 1)),
    ...                         train=False)
    >>> logits.shape
    (2, 3)
  """
  if jnp.ndim(x) != 4:
    raise ValueError(f"x must be NHWC (4-D), got shape {jnp.shape(x)}.")
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(
        f"x must be floating point, got dtype {jnp.result_type(x)}.")
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  if train and batch_stats:
    logits, updates = model.apply(variables, x, train=True,
                                  mutable=["batch_stats"])
    return logits, updates["batch_stats"]
  return model.apply(variables, x, train=train), batch_stats
