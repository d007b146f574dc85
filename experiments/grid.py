"""Hyper-parameter grid of every method on digits (how defaults are picked).

For each method, each value of its grid (:data:`GRID`) is run with
everything else at its default, on seed 0 of the two digits tables (class 3
and random 10%, small CNN, W4A8, the tables' shared unlearning budgets).
The selection criterion is the mean of the two Avg. gaps to Retrain (lower
is better). Original and Retrain are trained once per scenario (shared
checkpoints); a rerun resumes.

Command::

    python -m experiments.grid --workdir runs/grid        # ~30 min on 2 cores
    python -m experiments.grid --workdir runs/grid --quick

Writes ``WORKDIR/results.json`` (every record, with ``setting``) and
``WORKDIR/grid.md`` (one row per method × setting; the best setting of each
method in bold).

Result here (2026-11-25; ** = best of each method):

  | Method | Setting | Avg. gap class 3 | Avg. gap random 10% | Mean |
  |---|---|---|---|---|
  | ga | lr_scale=1.0 | diverged | 0.42 | diverged |
  | ga | lr_scale=0.1 | diverged | 0.42 | diverged |
  | ga | **lr_scale=0.01** | 50.16 | 0.35 | **25.25** |
  | ga | lr_scale=0.001 | 50.16 | 0.35 | 25.25 |
  | neggrad_plus | **beta=0.9** | 43.76 | 0.35 | **22.05** |
  | neggrad_plus | beta=0.99 | 49.38 | 0.35 | 24.86 |
  | neggrad_plus | beta=0.999 | 50.23 | 0.35 | 25.29 |
  | rl | **forget_weight=0.5** | 0.29 | 3.95 | **2.12** |
  | rl | forget_weight=1.0 | 0.21 | 45.58 | 22.90 |
  | rl | forget_weight=2.0 | 0.83 | 70.07 | 35.45 |
  | l1_sparse | alpha=1e-05 | 50.23 | 0.35 | 25.29 |
  | l1_sparse | alpha=0.0001 | 49.89 | 0.42 | 25.15 |
  | l1_sparse | alpha=0.0005 | 49.05 | 0.42 | 24.73 |
  | l1_sparse | **alpha=0.001** | 47.00 | 0.35 | **23.67** |
  | salun | **sparsity=0.1** | 0.70 | 32.41 | **16.55** |
  | salun | sparsity=0.5 | 0.35 | 52.64 | 26.50 |
  | salun | sparsity=0.9 | 0.29 | 47.02 | 23.66 |
  | scrub | **msteps=1** | 43.76 | 0.42 | **22.09** |
  | scrub | msteps=2 | 43.78 | 0.42 | 22.10 |
  | scrub | msteps=5 | 43.84 | 89.43 | 66.63 |
  | qmul | **first_epoch=step0** | 2.80 | 0.42 | **1.61** |
  | qmul | first_epoch=equal | 0.16 | 13.77 | 6.96 |
  | oeu | **alpha=0.5** | 1.79 | 0.69 | **1.24** |
  | oeu | alpha=1.0 | 1.09 | 1.72 | 1.41 |
  | oeu | alpha=2.0 | 12.31 | 3.22 | 7.77 |

The defaults of :mod:`oeu_jax.algorithm.methods` stay the public harness values
(so the tables match the public harnesses); the grid's picks where they beat
the default by more than a tie (0.05) are ``experiments.common.TUNED`` and
the ``-tuned`` table variants. GA at lr_scale >= 0.1 diverges (non-finite
weights) on class 3, and so does NegGrad+ at beta=0.9 on seed 1 (TUNED
takes 0.99). SCRUB's max steps at the shared lr collapse RA on class 3 for
every msteps.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional
from typing import Sequence

import numpy as np

from experiments import common
from oeu_jax.runner import pipeline

# method -> (field, values); the harness default is one of the values.
GRID = {
    "ga": ("lr_scale", (1.0, 0.1, 0.01, 0.001)),
    "neggrad_plus": ("beta", (0.9, 0.99, 0.999)),
    "rl": ("forget_weight", (0.5, 1.0, 2.0)),
    "l1_sparse": ("alpha", (1e-5, 1e-4, 5e-4, 1e-3)),
    "salun": ("sparsity", (0.1, 0.5, 0.9)),
    "scrub": ("msteps", (1, 2, 5)),
    "qmul": ("first_epoch", ("step0", "equal")),
    "oeu": ("alpha", (0.5, 1.0, 2.0)),
}
SCENARIOS = ("class", "random")


def grid_configs(quick: bool = False) -> list:
  """``[(method, setting, RunConfig)]`` for the grid on seed 0."""
  out = []
  for method, (field, values) in GRID.items():
    for value in values:
      for scenario in SCENARIOS:
        cfg = common.make(dataset="digits", model="cnn", methods=(method,),
                          scenario=scenario, forget_ratio=0.1,
                          forget_class=3, seeds=(0,))
        hp = common.method_hparams((method,), cfg.unlearn,
                                   ((method, ((field, value),)),))
        cfg = dataclasses.replace(cfg, method_hparams=hp)
        if quick:
          cfg = common.quick(cfg, train_epochs=2, unlearn_epochs=1,
                             max_examples=400)
        out.append((method, f"{field}={value}", cfg))
  return out


def _cell(gap: float) -> str:
  return "diverged" if not np.isfinite(gap) else f"{gap:.2f}"


def grid_table(records: Sequence[dict]) -> str:
  """Markdown: Avg. gap per scenario and their mean; best per method bold.

  Args:
    records: records with ``method``, ``setting``, ``scenario``,
      ``avg_gap`` (``inf`` for a run that diverged).

  Returns:
    One row per (method, setting), in the order first seen.
  """
  rows = {}
  for r in records:
    if r["method"] in ("original", "retrain"):
      continue
    rows.setdefault((r["method"], r["setting"]), {})[r["scenario"]] = float(
        r["avg_gap"])
  best = {}
  for (m, s), gaps in rows.items():
    mean = float(np.mean([gaps[k] for k in SCENARIOS if k in gaps]))
    if m not in best or mean < best[m][1]:
      best[m] = (s, mean)
  lines = ["| Method | Setting | Avg. gap class 3 | Avg. gap random 10% "
           "| Mean |", "|---|---|---|---|---|"]
  for (m, s), gaps in rows.items():
    cells = [_cell(gaps[k]) if k in gaps else "–" for k in SCENARIOS]
    mean = float(np.mean([gaps[k] for k in SCENARIOS if k in gaps]))
    mark = "**" if best[m][0] == s else ""
    lines.append(f"| {m} | {mark}{s}{mark} | " + " | ".join(cells)
                 + f" | {mark}{_cell(mean)}{mark} |")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(prog="python -m experiments.grid")
  p.add_argument("--workdir", default="runs/grid")
  p.add_argument("--quick", action="store_true")
  p.add_argument("--only", default=None,
                 help="comma-separated methods (default: all of GRID)")
  args = p.parse_args(argv)
  only = set(args.only.split(",")) if args.only else set(GRID)
  bad = only - set(GRID)
  if bad:
    print(f"error: unknown methods {sorted(bad)}; valid: {sorted(GRID)}",
          file=sys.stderr)
    return 2
  workdir = Path(args.workdir)
  records = []
  for method, setting, cfg in grid_configs(args.quick):
    if method not in only:
      continue
    print(f"[grid] {method} {setting} {cfg.scenario}", file=sys.stderr,
          flush=True)
    try:
      recs = pipeline.run(cfg, workdir, resume=True)
    except FloatingPointError as e:  # A diverging setting is a result.
      print(f"[grid] diverged: {e}", file=sys.stderr, flush=True)
      recs = [{"method": method, "scenario": cfg.scenario,
               "avg_gap": float("inf")}]
    records.extend(dict(r, setting=setting) for r in recs)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "results.json").write_text(json.dumps(records, indent=1))
  table = grid_table(records)
  (workdir / "grid.md").write_text(
      "# Hyper-parameter grid, digits seed 0\n\n" + table + "\n")
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
