"""OEU ablations: forget objective x (projection | scalar reweighting).

Rows: RL (random labels, plain sum), RL + projection (``rl_proj``), Q-MUL
(similar labels + scalar reweighting), similar labels + projection
(``sl_proj``), entropy + scalar reweighting (``oeu_scalar``), entropy
without projection (``oeu_no_proj``) and OEU (entropy + projection).
Mirrors the OEU paper's ablation: which of its two parts (entropy forget
loss, orthogonal projection) carries the gain. Paper scale: ResNet-18 W4A8,
CIFAR-10, random 10%, 3 seeds; quick: digits CNN on CPU.

Command::

    python -m experiments.run ablations --variant cifar10_random10  # GPU
    python -m experiments.run ablations --variant digits_class3     # CPU
    python -m experiments.run ablations --quick    # digits, CPU minutes

Result here (2026-11-25, ``digits_class3``, 3 seeds, RESULTS.md): Avg. gap
sl_proj 0.17, RL 0.52, rl_proj 0.95, Q-MUL 1.82, OEU 5.81, oeu_no_proj
6.09, oeu_scalar 7.07. CIFAR-10 not run here (no GPU).
"""

from experiments import common


def configs(quick: bool = False) -> dict:
  if quick:
    return {"digits_random10": common.quick(common.make(
        dataset="digits", model="cnn", methods=common.ABLATIONS,
        scenario="random", forget_ratio=0.1))}
  return {"cifar10_random10": common.make(
      dataset="cifar10", model="resnet18", bits="w4a8",
      methods=common.ABLATIONS, scenario="random", forget_ratio=0.1),
          # CPU: the digits class-3 table's setting (its checkpoints reused).
          "digits_class3": common.make(
              dataset="digits", model="cnn", methods=common.ABLATIONS,
              scenario="class", forget_class=3)}
