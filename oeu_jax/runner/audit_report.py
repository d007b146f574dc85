"""The audit's report: ``audit.json``, the ``audit.md`` table and one
per-example epsilon histogram per method (``audit_eps_<method>.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from typing import Mapping
from typing import Sequence

import numpy as np

from oeu_jax.runner import layout as layout_lib
from oeu_jax.runner import report

AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"


def _bins_text(hist: dict) -> str:
  """``a/b/c/d + e``: examples per bin of points, then past the last."""
  return "/".join(str(c) for c in hist["counts"]) + f" + {hist['beyond']}"


def markdown(records: Sequence[Mapping[str, Any]], *, title: str) -> str:
  """The audit table with the meaning of its columns."""
  edges = records[0]["eps_hist"]["edges"] if records else []
  lines = [f"### {title}", "",
           "| method | models | forget score F | final score | UA | RA | TA | "
           "mean ε | ε per bin (+ beyond) | median conf. | conf. range | "
           "s / model | settings |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in records:
    lines.append(
        f"| {r['method']} | {r['n_models']} | {r['forget_score']:.3f} | "
        f"{r['final_score']:.3f} | {r['ua']:.2f} | {r['ra']:.2f} | "
        f"{r['ta']:.2f} | "
        f"{r['mean_epsilon']:.2f} | {_bins_text(r['eps_hist'])} | "
        f"{r.get('conf_median', float('nan')):.2f} | "
        f"{r.get('conf_range', float('nan')):.2f} | "
        f"{r['seconds_per_model']:.2f} | "
        f"{r.get('settings', 'reference')} |")
  lines += ["", "F: NeurIPS 2023 unlearning-challenge forget score (1: "
            "indistinguishable from Retrain per example, 0: separable); "
            "final = F x (RA_u / RA_r) x (TA_u / TA_r). ε bins: "
            f"[{', '.join(f'{e:g}' for e in edges)}) per method's N "
            "(the retrain split has N/2 models per side, so fewer bins). "
            "Confidence: log p_y - log(1 - p_y) on D_f; median conf.: median "
            "over examples of the per-example median across models; conf. "
            "range: mean over examples of the range across models."]
  lines += [f"- {r['method']}: {r['reference']}" for r in records[:2]]
  return "\n".join(lines)


def plot_eps_histogram(record: Mapping[str, Any], path: str | Path) -> bool:
  """One method's ε histogram (fractions of D_f per bin, then beyond)."""
  hist = record["eps_hist"]
  counts = np.array(hist["counts"] + [hist["beyond"]], np.float64)
  edges = hist["edges"]
  labels = [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])]
  labels.append(f">={edges[-1]:g}")
  plt = report._pyplot()  # pylint: disable=protected-access
  fig, axes = plt.subplots(1, 1, figsize=(4.0, 2.8), squeeze=False)
  ax = axes[0, 0]
  ax.bar(np.arange(len(counts)), counts / max(counts.sum(), 1.0),
         color="tab:blue")
  ax.set_xticks(np.arange(len(counts)))
  ax.set_xticklabels(labels, fontsize=7)
  ax.set_title(f"{record['method']} (N={record['n_models']}): F = "
               f"{record['forget_score']:.3f}", fontsize=9)
  return report._save_grid(  # pylint: disable=protected-access
      plt, fig, axes, 1, "per-example ε", path)


def write_audit(records: Sequence[Mapping[str, Any]], workdir: str | Path,
                *, title: str) -> dict:
  """Writes ``audit.json``, ``audit.md`` and one PNG per method.

  Returns:
    ``{"json": path, "table": path, "markdown": text, "png": [paths]}``.
  """
  workdir = Path(workdir)
  layout_lib.write_json(workdir / AUDIT_JSON, list(records))
  text = markdown(records, title=title)
  table = workdir / AUDIT_MD
  tmp = table.with_suffix(".md.tmp")
  tmp.write_text(text + "\n")
  tmp.replace(table)
  pngs = []
  for r in records:
    png = workdir / f"audit_eps_{r['method']}.png"
    if plot_eps_histogram(r, png):
      pngs.append(png)
  return {"json": workdir / AUDIT_JSON, "table": table, "markdown": text,
          "png": pngs}
