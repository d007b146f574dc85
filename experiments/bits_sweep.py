"""Bit-width sweep: float, W8A8, W4A8, W4A4 for OEU vs Q-MUL vs RL.

Mirrors the OEU/Q-MUL question "does the advantage hold as bits shrink":
random 10% forgetting with ResNet-18 on CIFAR-10 at each bit width (first
conv and classifier in float), 3 seeds; the summary table gives the Avg.
gap per method and bit width. The quick variant runs the small CNN on
digits instead (offline, CPU).

Command::

    python -m experiments.run bits_sweep             # CIFAR-10, GPU
    python -m experiments.run bits_sweep --quick     # digits, CPU minutes

Result here: not run yet.
"""

from experiments import common

BITS = ("float", "w8a8", "w4a8", "w4a4")
METHODS = ("rl", "qmul", "oeu")


def configs(quick: bool = False) -> dict:
  if quick:
    return {b: common.quick(common.make(
        dataset="digits", model="cnn", bits=b, methods=METHODS,
        scenario="random", forget_ratio=0.1)) for b in BITS}
  return {b: common.make(dataset="cifar10", model="resnet18", bits=b,
                         methods=METHODS, scenario="random",
                         forget_ratio=0.1) for b in BITS}
