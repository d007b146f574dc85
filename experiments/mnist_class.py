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
from oeu_jax.runner import config as config_lib

# The budget that fits this project's 2-core CPU machines (4,000 training
# images, 8 + 3 epochs): oeu_jax.runner.config.CPU_BUDGETS.
CPU = config_lib.cpu_budget("mnist_idx")

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
                    forget_class=FORGET_CLASS, max_examples=CPU.max_examples,
                    train=CPU.train, unlearn=CPU.unlearn)
  return {f"class{FORGET_CLASS}": cpu,
          f"class{FORGET_CLASS}-tuned": common.tuned(cpu),
          f"class{FORGET_CLASS}-full": full}
