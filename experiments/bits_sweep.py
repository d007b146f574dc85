"""Bit-width sweep: float, W8A8, W4A8, W4A4 for OEU vs Q-MUL vs RL.

Mirrors the OEU/Q-MUL question "does the advantage hold as bits shrink":
random 10% forgetting with ResNet-18 on CIFAR-10 at each bit width (first
conv and classifier in float), 3 seeds; the summary table gives the Avg.
gap per method and bit width. The ``digits-*`` variants run the small CNN
on digits class-wise forgetting (class 3) on CPU, 3 seeds; the quick
variant is digits random 10%, one seed.

Command::

    python -m experiments.run bits_sweep --variant float --variant w8a8 \
        --variant w4a8 --variant w4a4                # CIFAR-10, GPU
    python -m experiments.run bits_sweep --variant digits-float \
        --variant digits-w8a8 --variant digits-w4a8 \
        --variant digits-w4a4                        # digits class 3, CPU
    python -m experiments.run bits_sweep --quick     # digits, CPU minutes

Result here (2026-11-25, ``digits-*``, 3 seeds, RESULTS.md): Avg. gap
float / w8a8 / w4a8 / w4a4: OEU 1.27 / 1.56 / 5.81 / 5.90, RL 0.50 /
0.61 / 0.52 / 0.56, Q-MUL 3.39 / 2.42 / 1.82 / 2.01. CIFAR-10 not run
here (no GPU).
"""

from experiments import common

BITS = ("float", "w8a8", "w4a8", "w4a4")
METHODS = ("rl", "qmul", "oeu")


def configs(quick: bool = False) -> dict:
  if quick:
    return {b: common.quick(common.make(
        dataset="digits", model="cnn", bits=b, methods=METHODS,
        scenario="random", forget_ratio=0.1)) for b in BITS}
  out = {b: common.make(dataset="cifar10", model="resnet18", bits=b,
                        methods=METHODS, scenario="random",
                        forget_ratio=0.1) for b in BITS}
  # CPU: the digits class-3 table's setting at each bit width.
  out.update({f"digits-{b}": common.make(
      dataset="digits", model="cnn", bits=b, methods=METHODS,
      scenario="class", forget_class=3) for b in BITS})
  return out
