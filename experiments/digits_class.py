"""Class-wise forgetting (class 3) on scikit-learn digits, small CNN, W4A8.

Mirrors SalUn's class-wise forgetting table and Q-MUL's class-wise W4A8
results, offline on CPU: all baselines, Q-MUL and OEU. TA is on the nine
remaining classes; the forgotten class's test accuracy is reported beside.

Command::

    python -m experiments.run digits_class
    python -m experiments.run digits_class --quick

Result here: not run yet at full budget.
"""

from experiments import common

FORGET_CLASS = 3


def configs(quick: bool = False) -> dict:
  cfg = common.make(dataset="digits", model="cnn", methods=common.BASELINES,
                    scenario="class", forget_class=FORGET_CLASS)
  if quick:
    cfg = common.quick(cfg)
  return {f"class{FORGET_CLASS}": cfg}
