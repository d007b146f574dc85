"""The names the command line offers, without JAX.

``python -m oeu_jax --help`` must answer at once, so the command line builds
its parser from this module, which imports neither JAX nor any module that
does (``oeu_jax.data`` is NumPy only). The names of models, bit presets,
methods and optimizers mirror their modules' tables (``tests/test_cli.py``
checks that they agree); every default is :mod:`oeu_jax.defaults`'.
"""

from oeu_jax import defaults
from oeu_jax.data import DATASETS
from oeu_jax.data import SCENARIOS

MODELS = ("cnn", "resnet18", "mobilenetv2")  # oeu_jax.nn.models.MODELS
BITS = ("float", "w8a8", "w4a8", "w4a4")  # oeu_jax.nn.quantization.BITS
QUANT_IMPLS = ("aqt", "fake")  # oeu_jax.nn.quantization.IMPLS
# oeu_jax.algorithm.methods.METHODS (the registry's order; "retrain" last).
METHODS = ("oeu", "oeu_no_proj", "rl_proj", "sl_proj", "oeu_ema",
           "oeu_subspace", "oeu_post", "oeu_complement", "oeu_renorm", "ft",
           "ga", "rl", "neggrad_plus", "l1_sparse", "salun", "scrub", "qmul",
           "oeu_scalar", "ssd", "bad_teacher", "retrain")
OPTIMIZERS = ("sgd", "adam", "adamw")  # oeu_jax.algorithm.methods.OPTIMIZERS

def add_model_arguments(parser) -> None:
  """``--model``, ``--bits`` and ``--quant-impl`` on an argparse parser (the
  ``run`` and ``audit`` subcommands share them)."""
  parser.add_argument("--model", default=defaults.MODEL, choices=MODELS,
                      help=f"architecture (default: {defaults.MODEL})")
  parser.add_argument("--bits", default=defaults.BITS, choices=BITS,
                      help="weight/activation bits of quantization-aware "
                           f"training (default: {defaults.BITS})")
  parser.add_argument("--quant-impl", default=defaults.QUANT_IMPL,
                      choices=QUANT_IMPLS,
                      help="how quantized layers train: aqt (AQT's integer "
                           "dot, the default) or fake (AQT's quantizers, "
                           "then native float convolutions: same outputs, "
                           "float cost)")


def defaults_text() -> str:
  """Per-dataset defaults of the budget flags, for ``run --help``."""
  return defaults.defaults_text(DATASETS, SCENARIOS)
