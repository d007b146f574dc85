"""Class-wise forgetting (class 3) on MNIST (t10k IDX files), CNN, W4A8.

Mirrors the SalUn/Q-MUL class-wise table on MNIST; data folder
``../shared/data/mnist-t10k`` relative to the repository root.

Command::

    python -m experiments.run mnist_class --variant class3  # CPU budget
    python -m experiments.run mnist_class --quick

Result here (2026-11-25, ``class3`` CPU variant, 3 seeds, RESULTS.md):
Avg. gap OEU 1.97 ± 2.36 (best), RL 2.96 ± 0.83, SalUn 3.03, Q-MUL
15.20 ± 7.22. ``class3-tuned``: OEU 5.23 ± 0.76, RL 1.42 ± 0.52 (best).
The ``-full`` variant was not run here.
"""

from experiments import common
from oeu_jax import train as train_lib
from oeu_jax import unlearn as unlearn_lib

# The budget that fits this project's 2-core CPU machines for 3 seeds x 9
# methods x 2 scenarios: the first 4,000 of the 8,000 training images,
# 8 training epochs and 3 unlearning epochs (METHOD.md's batch 256, lr 0.01).
CPU_EXAMPLES = 4000
CPU_TRAIN = train_lib.TrainConfig(epochs=8, batch_size=128, lr=0.05)
CPU_UNLEARN = unlearn_lib.UnlearnConfig(epochs=3, batch_size=256, lr=0.01)

FORGET_CLASS = 3


def configs(quick: bool = False) -> dict:
  """``cpu``: the budget run here; ``full``: the default MNIST budget."""
  full = common.make(dataset="mnist_idx", data_dir=str(common.MNIST_T10K),
                     model="cnn", methods=common.BASELINES,
                     scenario="class",
                     forget_class=FORGET_CLASS)
  if quick:
    return {f"class{FORGET_CLASS}": common.quick(full, train_epochs=3,
                                                 max_examples=3000)}
  cpu = common.make(dataset="mnist_idx", data_dir=str(common.MNIST_T10K),
                    model="cnn", methods=common.BASELINES,
                    scenario="class",
                    forget_class=FORGET_CLASS, max_examples=CPU_EXAMPLES,
                    train=CPU_TRAIN, unlearn=CPU_UNLEARN)
  return {f"class{FORGET_CLASS}": cpu,
          f"class{FORGET_CLASS}-tuned": common.tuned(cpu),
          f"class{FORGET_CLASS}-full": full}
