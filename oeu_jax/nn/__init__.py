"""Networks and their quantized numerics (layer 1).

``quantization`` (bit presets, ``QuantSpec``, AQT configs), ``layers``
(quantized dense and conv layers), ``models`` (CNN, ResNet-18, MobileNetV2,
``build_model`` / ``init_model`` / ``apply_model``), ``inference`` (batched
eval-mode logits) and ``serving`` (AQT's integer serving form).

Imports: :mod:`oeu_jax.defaults` only. The name tables below are plain
Python (the command line reads them without importing JAX); the modules
that implement them import them from here.
"""

MODELS = ("cnn", "resnet18", "mobilenetv2")  # nn.models.build_model
BITS = ("float", "w8a8", "w4a8", "w4a4")  # nn.quantization.preset
IMPLS = ("aqt", "fake")  # nn.quantization.QuantSpec.impl
