"""What a run cost, how it stopped, what serving changes, and the demo's
one-sentence reading.

Read from the records of :func:`oeu_jax.runner.pipeline.run`: ``rte_s``
against Retrain's, ``cost_fraction`` (share of the Original's training
cost), ``stop_rule`` / ``stop_step``, the Retrain-free ``est_avg_gap`` and
the integer-served model's metrics (``served``, ``served_max_diff``).
"""

from __future__ import annotations

from typing import Any
from typing import Mapping
from typing import Sequence

import numpy as np

REFERENCE = "retrain"


def cost_lines(records: Sequence[Mapping[str, Any]]) -> str:
  """Per unlearning method: its cost against Retrain's and the Original's,
  how it stopped, and its Retrain-free estimated gap (means over seeds)."""
  by: dict[str, list] = {}
  for r in records:
    by.setdefault(r["method"], []).append(r)
  retrain = [r["rte_s"] for r in by.get(REFERENCE, [])]
  lines = []
  for m, recs in by.items():
    if m in ("original", REFERENCE):
      continue
    ratio = (np.mean([r["rte_s"] for r in recs]) / np.mean(retrain)
             if retrain and np.mean(retrain) > 0 else float("nan"))
    fracs = [r["cost_fraction"] for r in recs
             if r.get("cost_fraction") is not None]
    stops = [r.get("stop_step") for r in recs]
    rule = recs[0].get("stop_rule")
    how = ("ran its whole budget" if not rule else
           f"stopped by {rule} in {sum(s is not None for s in stops)} of "
           f"{len(recs)} seed(s)" if any(s is not None for s in stops) else
           f"never met {rule} within its budget")
    est = [r["est_avg_gap"] for r in recs if "est_avg_gap" in r]
    lines.append(
        f"- {m}: wall time {ratio:.3f} x Retrain's"
        + (f", {np.mean(fracs):.3f} of the Original's training cost"
           if fracs else "")
        + f"; {how}; estimated gap {np.mean(est):.2f} (no Retrain needed)"
        if est else f"- {m}: wall time {ratio:.3f} x Retrain's; {how}")
  return "\n".join(lines + [served_line(records)] if any(
      "served" in r for r in records) else lines)


def served_line(records: Sequence[Mapping[str, Any]]) -> str:
  """One line: does the integer-served model score what the trained one
  scores (UA, RA, TA, MIA-efficacy)?"""
  served = [r for r in records if "served" in r]
  moved = [r for r in served if r["served_max_diff"] > 0]
  if not moved:
    return (f"- integer-served models (export path): UA/RA/TA/MIA equal to "
            f"the trained models' in all {len(served)} records")
  worst = max(moved, key=lambda r: r["served_max_diff"])
  return (f"- integer-served models (export path): {len(moved)} of "
          f"{len(served)} records differ from the trained model, at most "
          f"{worst['served_max_diff']:.2f} points ({worst['method']}, seed "
          f"{worst.get('seed')})")


def demo_story(records: Sequence[Mapping[str, Any]], baseline: str) -> str:
  """What a reader of the demo should see, in one sentence."""
  gap = {m: np.mean([r["avg_gap"] for r in records if r["method"] == m])
         for m in ("original", "oeu", baseline)}
  rte = {m: np.mean([r["rte_s"] for r in records if r["method"] == m])
         for m in (REFERENCE, "oeu", baseline)}
  return (f"Read: at its defaults OEU ends {gap['oeu']:.2f} gap points from "
          f"Retrain (the untouched Original: {gap['original']:.2f}) in "
          f"{rte['oeu'] / rte[REFERENCE]:.2f} of Retrain's wall time; "
          f"{baseline}, the best baseline of the protocol tables here, ends "
          f"{gap[baseline]:.2f} in {rte[baseline] / rte[REFERENCE]:.2f}. "
          "Neither used a Retrain: each stopped or ran by the Retrain-free "
          "defaults (oeu_jax/defaults.py).")
