"""Random-data forgetting (10%) on MNIST (the t10k IDX files), CNN, W4A8.

The 10,000 MNIST test images are split 80/20 (stratified, fixed seed) into
train and test (:func:`oeu_jax.data.load_dataset`). Mirrors the SalUn/Q-MUL
random-forgetting table on a real image dataset that needs no download.
The data folder is ``../shared/data/mnist-t10k`` relative to the repository
root.

Command::

    python -m experiments.run mnist_random
    python -m experiments.run mnist_random --quick

Result here: not run yet at full budget.
"""

from experiments import common


def configs(quick: bool = False) -> dict:
  cfg = common.make(dataset="mnist_idx", data_dir=str(common.MNIST_T10K),
                    model="cnn", methods=common.BASELINES,
                    scenario="random", forget_ratio=0.1)
  if quick:
    cfg = common.quick(cfg, train_epochs=3, max_examples=3000)
  return {"random10": cfg}
