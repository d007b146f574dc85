"""Flax Linen classifiers with injectable quantization.

Every weight layer is a :class:`~oeu_jax.nn.layers.QDense` or a
:class:`~oeu_jax.nn.layers.QConv` (both re-exported here): float when the spec
is ``None``, quantized by the spec's backend with straight-through gradients
otherwise. No backend adds variables in training mode, so a float model and
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

from oeu_jax import nn as nn_names
from oeu_jax.nn import quantization
from oeu_jax.nn.layers import QConv
from oeu_jax.nn.layers import QDense
from oeu_jax.nn.layers import max_pool_2x2
from oeu_jax.nn.quantization import QuantSpec

__all__ = ["QDense", "QConv", "CNN", "BasicBlock", "ResNet18",
           "InvertedResidual", "MobileNetV2", "MODELS", "build_model",
           "init_model", "apply_model", "max_pool_2x2"]

MODELS = nn_names.MODELS


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
        x = max_pool_2x2(x)
    x = max_pool_2x2(x)
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
    bits: a preset name from :data:`oeu_jax.nn.quantization.BITS`, a
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
  # No backend creates variables in training mode, so the float twin has the
  # same tree and the same initial values, and traces about twice as fast.
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
