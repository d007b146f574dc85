"""Class-wise forgetting (class 3) on MNIST (t10k IDX files), CNN, W4A8.

Mirrors the SalUn/Q-MUL class-wise table on MNIST; data folder
``../shared/data/mnist-t10k`` relative to the repository root.

Command::

    python -m experiments.run mnist_class
    python -m experiments.run mnist_class --quick

Result here: not run yet at full budget.
"""

from experiments import common

FORGET_CLASS = 3


def configs(quick: bool = False) -> dict:
  cfg = common.make(dataset="mnist_idx", data_dir=str(common.MNIST_T10K),
                    model="cnn", methods=common.BASELINES, scenario="class",
                    forget_class=FORGET_CLASS)
  if quick:
    cfg = common.quick(cfg, train_epochs=3, max_examples=3000)
  return {f"class{FORGET_CLASS}": cfg}
