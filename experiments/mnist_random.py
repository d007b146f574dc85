"""Random-data forgetting (10%) on MNIST (the t10k IDX files), CNN, W4A8.

The 10,000 MNIST test images are split 80/20 (stratified, fixed seed) into
train and test (:func:`oeu_jax.data.load_dataset`). Mirrors the SalUn/Q-MUL
random-forgetting table on a real image dataset that needs no download.
The data folder is ``../shared/data/mnist-t10k`` relative to the repository
root.

Command::

    python -m experiments.run mnist_random --variant random10  # CPU
    python -m experiments.run mnist_random --quick

Result here (2026-11-25, ``random10`` CPU variant, 3 seeds, RESULTS.md):
Avg. gap OEU 1.17 ± 0.45 (best), Q-MUL 1.31 ± 0.27, FT 1.48.
``random10-tuned``: OEU 1.01 ± 0.24 (best), Q-MUL 1.31. The ``-full``
variant was not run here.
"""

from experiments import common
from oeu_jax.runner import config as config_lib

# The budget that fits this project's 2-core CPU machines (4,000 training
# images, 8 + 3 epochs): oeu_jax.runner.config.CPU_BUDGETS.
CPU = config_lib.cpu_budget("mnist_idx")


def configs(quick: bool = False) -> dict:
  """``cpu``: the budget run here; ``full``: the default MNIST budget."""
  full = common.make(dataset="mnist_idx", data_dir=str(common.MNIST_T10K),
                     model="cnn", methods=common.BASELINES,
                     scenario="random", forget_ratio=0.1)
  if quick:
    return {"random10": common.quick(full, train_epochs=3, max_examples=3000)}
  cpu = common.make(dataset="mnist_idx", data_dir=str(common.MNIST_T10K),
                    model="cnn", methods=common.BASELINES,
                    scenario="random", forget_ratio=0.1,
                    max_examples=CPU.max_examples,
                    train=CPU.train, unlearn=CPU.unlearn)
  return {"random10": cpu, "random10-tuned": common.tuned(cpu),
          "random10-full": full}
