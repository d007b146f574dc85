"""Experiment configs: one module per results table.

Each module defines ``configs(quick: bool = False) -> dict[str, RunConfig]``
(variant name -> experiment) and says in its docstring which table it
mirrors and the exact command. Run one with::

    python -m experiments.run NAME [--quick] [--workdir DIR]
"""

EXPERIMENTS = (
    "digits_random",
    "digits_class",
    "mnist_random",
    "mnist_class",
    "cifar10_resnet18",
    "cifar100_resnet18",
    "svhn_resnet18",
    "mobilenetv2",
    "bits_sweep",
    "ablations",
)
