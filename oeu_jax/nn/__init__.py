"""Networks and their quantized numerics (layer 1).

``quantization`` (bit presets, ``QuantSpec``, AQT configs), ``layers``
(quantized dense and conv layers), ``models`` (CNN, ResNet-18, MobileNetV2,
``build_model`` / ``init_model`` / ``apply_model``), ``inference`` (batched
eval-mode logits) and ``serving`` (AQT's integer serving form).

Imports: :mod:`oeu_jax.defaults` only.
"""
