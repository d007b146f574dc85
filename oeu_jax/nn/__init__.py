"""Networks and their quantized numerics (layer 1).

``quantization`` (bit presets, ``QuantSpec`` and one backend module per
quantization library in ``quantization/backends/``), ``layers`` (quantized
dense and conv layers), ``models`` (CNN, ResNet-18, MobileNetV2,
``build_model`` / ``init_model`` / ``apply_model``), ``inference`` (batched
eval-mode logits) and ``serving`` (the integer serving form, any backend).

Imports: :mod:`oeu_jax.defaults` only. The name tables below are plain
Python (the command line reads them without importing JAX); the modules
that implement them import them from here.
"""

import pkgutil
from pathlib import Path

MODELS = ("cnn", "resnet18", "mobilenetv2")  # nn.models.build_model
BITS = ("float", "w8a8", "w4a8", "w4a4")  # nn.quantization.preset
# nn.quantization.QuantSpec.backend: every module of quantization/backends/
# is one, named by its file; a new backend is a new file there.
BACKENDS = tuple(sorted(
    m.name for m in pkgutil.iter_modules(
        [str(Path(__file__).parent / "quantization" / "backends")])))
