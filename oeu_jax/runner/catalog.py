"""The names and default budgets the command line offers, without JAX.

``python -m oeu_jax --help`` must answer at once, so the command line builds
its parser from this module, which imports neither JAX nor any module that
does (``oeu_jax.data`` is NumPy only). :mod:`oeu_jax.runner.config` builds
its budget tables from the numbers here, so they have one home; the names
of models, bit presets, methods and optimizers mirror their modules' tables
(``tests/test_cli.py`` checks that they agree).
"""

from oeu_jax.data import DATASETS
from oeu_jax.data import SCENARIOS

MODELS = ("cnn", "resnet18", "mobilenetv2")  # oeu_jax.models.MODELS
BITS = ("float", "w8a8", "w4a8", "w4a4")  # oeu_jax.quantization.BITS
QUANT_IMPLS = ("aqt", "fake")  # oeu_jax.quantization.IMPLS
# oeu_jax.methods.METHODS (the registry's order; "retrain" last).
METHODS = ("oeu", "oeu_no_proj", "rl_proj", "sl_proj", "oeu_ema",
           "oeu_subspace", "oeu_post", "oeu_complement", "oeu_renorm", "ft",
           "ga", "rl", "neggrad_plus", "l1_sparse", "salun", "scrub", "qmul",
           "oeu_scalar", "ssd", "bad_teacher", "retrain")
OPTIMIZERS = ("sgd", "adam", "adamw")  # oeu_jax.methods.OPTIMIZERS

# Original/Retrain recipes per dataset (TrainConfig fields). Paper-scale
# entries follow the Q-MUL harness (SGD 0.1, 182 epochs for CIFAR).
TRAIN = {
    "digits": dict(epochs=30, batch_size=64, lr=0.05),
    "mnist_idx": dict(epochs=15, batch_size=128, lr=0.05),
    "mnist": dict(epochs=15, batch_size=128, lr=0.05),
    "fashion_mnist": dict(epochs=30, batch_size=128, lr=0.05),
    "cifar10": dict(epochs=182, batch_size=256, lr=0.1, augment=True),
    "cifar100": dict(epochs=182, batch_size=256, lr=0.1, augment=True),
    "svhn_cropped": dict(epochs=50, batch_size=256, lr=0.1),
}
# What ``TrainConfig()`` and ``UnlearnConfig()`` default to (the budget of a
# dataset without an entry; the Q-MUL harness's unlearning default: SGD
# 0.01, batch 256, 10 epochs).
TRAIN_FALLBACK = dict(epochs=30, batch_size=64, lr=0.05)
UNLEARN_FALLBACK = dict(epochs=10, batch_size=256, lr=0.01)
# Unlearning budgets per (dataset, scenario) (UnlearnConfig fields). As in
# the SalUn and Q-MUL harnesses the budget is tuned per scenario. Digits
# grid (OEU, seed 0, w4a8 CNN; see RESULTS.md): batch {64, 128, 256} x lr
# {0.01, 0.02, 0.05}. Class-wise: the 256-example batch gives only 60 steps
# and UA 85 (Retrain 100); batch 64 / lr 0.02 gives UA 100 (seeds 0-2: 100,
# 92.5, 97.3). Random 10%: batch 64 over-forgets (MIA 22-43 vs Retrain 1-4),
# while the harness default keeps MIA at 4.9 and the avg gap at 1.35.
UNLEARN = {
    ("digits", "class"): dict(epochs=10, batch_size=64, lr=0.02),
}
# The budgets that fit this project's 2-core CPU machines for 3 seeds x 9
# methods x 2 scenarios (the ``cpu`` variants of experiments/): for MNIST,
# the first 4,000 of the 8,000 training images, 8 training epochs and 3
# unlearning epochs (the harness's batch 256, lr 0.01).
CPU = {
    "mnist_idx": (dict(epochs=8, batch_size=128, lr=0.05),
                  dict(epochs=3, batch_size=256, lr=0.01), 4000),
}


def train_budget(dataset: str) -> dict:
  """The Original/Retrain recipe of ``dataset`` as TrainConfig fields."""
  return dict(TRAIN.get(dataset, TRAIN_FALLBACK))


def unlearn_budget(dataset: str, scenario: str) -> dict:
  """The unlearning budget as UnlearnConfig fields."""
  return dict(UNLEARN.get((dataset, scenario), UNLEARN_FALLBACK))


def defaults_text() -> str:
  """Per-dataset defaults of the budget flags, for ``run --help``."""
  lines = ["per-dataset defaults, as epochs/batch size/learning rate:",
           "  training: --epochs/--batch-size (and lr; +aug: augmented)",
           "  unlearning per scenario: --unlearn-epochs/--unlearn-batch-size/"
           "--unlearn-lr", ""]
  width = max(len(d) for d in DATASETS)
  for d in DATASETS:
    t = train_budget(d)
    train = (f"{t['epochs']}/{t['batch_size']}/{t['lr']:g}"
             + (" +aug" if t.get("augment") else ""))
    unlearn = "  ".join(
        f"{s} {u['epochs']}/{u['batch_size']}/{u['lr']:g}"
        for s, u in ((s, unlearn_budget(d, s)) for s in SCENARIOS))
    lines.append(f"  {d:<{width}}  {train:<16}  {unlearn}")
  return "\n".join(lines)


def add_model_arguments(parser) -> None:
  """``--model``, ``--bits`` and ``--quant-impl`` on an argparse parser (the
  ``run`` and ``audit`` subcommands share them)."""
  parser.add_argument("--model", default="cnn", choices=MODELS,
                      help="architecture (default: cnn)")
  parser.add_argument("--bits", default="w4a8", choices=BITS,
                      help="weight/activation bits of quantization-aware "
                           "training (default: w4a8)")
  parser.add_argument("--quant-impl", default="aqt", choices=QUANT_IMPLS,
                      help="how quantized layers train: aqt (AQT's integer "
                           "dot, the default) or fake (AQT's quantizers, "
                           "then native float convolutions: same outputs, "
                           "float cost)")
