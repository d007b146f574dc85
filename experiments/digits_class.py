"""Class-wise forgetting (class 3) on scikit-learn digits, small CNN, W4A8.

Mirrors SalUn's class-wise forgetting table and Q-MUL's class-wise W4A8
results, offline on CPU: all baselines, Q-MUL and OEU. TA is on the nine
remaining classes; the forgotten class's test accuracy is reported beside.

Command::

    python -m experiments.run digits_class
    python -m experiments.run digits_class --quick

Result here (2026-11-25, 3 seeds, RESULTS.md): Avg. gap OEU 5.81 ± 6.96,
best baseline RL 0.52 ± 0.23, Q-MUL 1.82 ± 0.70; OEU's D_f outputs are
near uniform (H/log K 0.995) so its argmax is noise-limited.
``class3-tuned``: OEU 1.62 ± 0.18, RL 0.27 ± 0.07, SalUn 0.65.
"""

from experiments import common

FORGET_CLASS = 3


def configs(quick: bool = False) -> dict:
  cfg = common.make(dataset="digits", model="cnn", methods=common.BASELINES,
                    scenario="class", forget_class=FORGET_CLASS)
  if quick:
    return {f"class{FORGET_CLASS}": common.quick(cfg)}
  return {f"class{FORGET_CLASS}": cfg,
          f"class{FORGET_CLASS}-tuned": common.tuned(cfg)}
