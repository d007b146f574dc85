"""Random-data forgetting (10%) on scikit-learn digits, small CNN, W4A8.

Mirrors the layout of SalUn's Table (random data forgetting, CIFAR-10) and
Q-MUL's W4A8 comparison, on an offline dataset that runs on CPU: Retrain,
FT, GA, RL, NegGrad+, l1-sparse, SalUn, SCRUB, Q-MUL and OEU; UA, RA, TA,
MIA-efficacy, Avg. gap, RTE, mean ± std over 3 seeds.

Command::

    python -m experiments.run digits_random            # 3 seeds
    python -m experiments.run digits_random --quick    # 1 seed, CPU minutes

Result here (2026-11-25, 3 seeds, RESULTS.md): Avg. gap OEU 1.11 ± 0.50,
best FT / NegGrad+ 0.88, Q-MUL 0.93; the Original model already scores
0.90 (digits D_f generalizes like Retrain's test set). ``random10-tuned``:
OEU 0.65 ± 0.17 (best), FT / NegGrad+ 0.88.
"""

from experiments import common


def configs(quick: bool = False) -> dict:
  cfg = common.make(dataset="digits", model="cnn", methods=common.BASELINES,
                    scenario="random", forget_ratio=0.1)
  if quick:
    return {"random10": common.quick(cfg)}
  return {"random10": cfg, "random10-tuned": common.tuned(cfg)}
