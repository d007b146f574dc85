"""The names the command line offers, without JAX.

``python -m oeu_jax --help`` must answer at once, so the command line builds
its parser from this module, which imports neither JAX nor any module that
does (``oeu_jax.data`` is NumPy only; the model, bit-preset, method and
optimizer names come from the JAX-free ``oeu_jax.nn`` and
``oeu_jax.algorithm.methods`` package modules); every default is
:mod:`oeu_jax.defaults`'.
"""

from oeu_jax import defaults
from oeu_jax import nn as nn_names
from oeu_jax.algorithm import methods as methods_names
from oeu_jax.data import DATASETS
from oeu_jax.data import SCENARIOS

# The tables themselves, read from JAX-free homes (no copies to keep equal).
MODELS = nn_names.MODELS
BITS = nn_names.BITS
QUANT_BACKENDS = nn_names.BACKENDS
METHODS = methods_names.METHODS  # The registry's order; "retrain" last.
OPTIMIZERS = methods_names.OPTIMIZERS

def add_model_arguments(parser) -> None:
  """``--model``, ``--bits`` and ``--quant-backend`` on an argparse parser (the
  ``run`` and ``audit`` subcommands share them)."""
  parser.add_argument("--model", default=defaults.MODEL, choices=MODELS,
                      help=f"architecture (default: {defaults.MODEL})")
  parser.add_argument("--bits", default=defaults.BITS, choices=BITS,
                      help="weight/activation bits of quantization-aware "
                           f"training (default: {defaults.BITS})")
  parser.add_argument("--quant-backend", default=defaults.QUANT_BACKEND,
                      choices=QUANT_BACKENDS,
                      help="the quantization library: fake (the default: "
                           "AQT's quantizers, then native float "
                           "convolutions, served through AQT), aqt (AQT's "
                           "integer dot on image patches, 1.9x slower on "
                           "ResNet-18) or qwix (Qwix's quantized training "
                           "and integer serving)")


def defaults_text() -> str:
  """Per-dataset defaults of the budget flags, for ``run --help``."""
  return defaults.defaults_text(DATASETS, SCENARIOS)
