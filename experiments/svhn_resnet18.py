"""ResNet-18 (CIFAR stem) at W4A8 on SVHN (cropped): paper-scale comparison.

Mirrors Q-MUL's main table (ResNet-18, W4A8, first conv and classifier in
float) in SalUn's layout: random 10% forgetting and class-wise forgetting
(class 0), all baselines, Q-MUL and OEU, 3 seeds. Budgets: Original and
Retrain from :func:`oeu_jax.runner.config.default_train` (SGD 0.1, cosine),
unlearning 10 epochs, batch 256, lr 0.01 (Q-MUL harness). Needs the TFDS
dataset ``svhn_cropped`` prepared in the TFDS data dir (no download at run
time) and a GPU.

Command::

    python -m experiments.run svhn_resnet18 --workdir runs/svhn_resnet18
    python -m experiments.run svhn_resnet18 --variant random10
    python -m experiments.run svhn_resnet18 --quick   # width 1/8, 2k images

Result here: not run yet.
"""

from experiments import common

DATASET = "svhn_cropped"


def configs(quick: bool = False) -> dict:
  return common.resnet18_tables(DATASET, tiny=quick)
