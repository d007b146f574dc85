"""MobileNetV2 (width 0.5, CIFAR strides) at W4A8: the second architecture.

Mirrors Q-MUL's MobileNetV2 results: random 10% forgetting on CIFAR-10,
CIFAR-100 and SVHN (one variant each), all baselines, Q-MUL and OEU, 3
seeds, Q-MUL harness budgets. Needs the TFDS datasets prepared and a GPU.

Command::

    python -m experiments.run mobilenetv2 --variant cifar10
    python -m experiments.run mobilenetv2              # all three datasets
    python -m experiments.run mobilenetv2 --quick      # width 0.25, 2k images

Result here: not run yet.
"""

from experiments import common

DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100",
            "svhn": "svhn_cropped"}


def configs(quick: bool = False) -> dict:
  out = {name: common.make(dataset=ds, model="mobilenetv2", bits="w4a8",
                           methods=common.BASELINES, scenario="random",
                           forget_ratio=0.1)
         for name, ds in DATASETS.items()}
  if quick:
    out = {k: common.quick(v, train_epochs=2, unlearn_epochs=1,
                           max_examples=2048, model_kwargs=(("width", 0.25),))
           for k, v in out.items()}
  return out
