"""Tables and plots from the records of :func:`oeu_jax.runner.pipeline.run`.

* :func:`format_table`: the command line's table, mean ± std of each
  metric over seeds.
* :func:`salun_table`: the Markdown table in the SalUn layout: UA, RA, TA,
  MIA-Efficacy, Avg. Gap and RTE, mean ± std over seeds, each metric's gap
  to Retrain in parentheses.
* :func:`diagnostics_table`: the forgetting-by-uncertainty diagnostics
  (mean normalized entropy on D_f, confident mispredictions, entropy of the
  predicted-class histogram).
* :func:`variant_table`: one metric across the variants of a sweep (e.g.
  bit widths).
* :func:`plot_entropy_histograms`, :func:`plot_pred_histograms`: PNGs of
  the normalized-entropy histogram (``entropy_hist``: counts over 20 equal
  bins of [0, 1]) and the predicted-class histogram (``pred_hist``) on D_f,
  one panel per method, summed over seeds.
* :func:`write_report`: ``table.md`` plus the PNGs in a folder.

Records are plain dicts (one per method × seed); only the keys a function
needs are read.

References:
  Fan et al., SalUn, arXiv:2310.12508 (table layout); OEU,
  arXiv:2602.00567 (diagnostics).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from typing import Mapping
from typing import Optional
from typing import Sequence

import numpy as np

from oeu_jax.evaluation import metrics

SALUN_COLUMNS = (("ua", "UA"), ("ra", "RA"), ("ta", "TA"),
                 ("mia_efficacy", "MIA-Efficacy"))
DIAGNOSTIC_COLUMNS = (("forget_entropy", "H/log K on D_f"),
                      ("confident_wrong", "Confident wrong (%)"),
                      ("pred_hist_entropy", "Pred.-hist. entropy"))
REFERENCE = "retrain"
ENTROPY_PNG = "entropy_hist.png"
PRED_PNG = "pred_hist.png"


def _method_order(records: Sequence[Mapping[str, Any]],
                  methods: Optional[Sequence[str]],
                  include_original: bool) -> list[str]:
  present = []
  for r in records:
    if r["method"] not in present:
      present.append(r["method"])
  if methods is not None:
    missing = [m for m in methods if m not in present]
    if missing:
      raise KeyError(f"no records for methods {missing}; have {present}")
    return list(methods)
  order = [REFERENCE] if REFERENCE in present else []
  order += [m for m in present if m != REFERENCE
            and (include_original or m != "original")]
  return order


def _fmt(mean: float, std: float, n: int, digits: int) -> str:
  if n > 1 and math.isfinite(std):
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
  return f"{mean:.{digits}f}"


def format_table(records: Sequence[Mapping[str, Any]],
                 keys: Sequence[str] = ("ua", "ra", "ta", "mia_efficacy",
                                        "avg_gap", "rte_s", "forget_entropy",
                                        "confident_wrong")) -> str:
  """A Markdown table, mean ± std over seeds per method (every method).

  Methods whose records say ``unlearn_epochs == 0`` are labelled ``(no
  unlearning)`` (their rows are the Original model), and Original and
  Retrain ``(untrained)`` when ``train_epochs == 0``; a note under the table
  says so.
  """
  summary = metrics.summarize(records, keys)
  head = "| method | " + " | ".join(keys) + " |"
  sep = "|" + "---|" * (len(keys) + 1)
  lines = [head, sep]
  not_unlearned = {r["method"] for r in records
                   if r.get("unlearn_epochs") == 0}
  untrained = {r["method"] for r in records if r.get("train_epochs") == 0
               and r["method"] in ("original", "retrain")}
  for method, s in summary.items():
    cells = []
    for k in keys:
      mean, std = s["mean"][k], s["std"][k]
      cells.append(f"{mean:.2f}" if s["n"] == 1 else f"{mean:.2f} ± {std:.2f}")
    label = method + (" (no unlearning)" if method in not_unlearned else "")
    label += " (untrained)" if method in untrained else ""
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  if not_unlearned:
    lines.append("\n(no unlearning): 0 unlearning epochs; these rows are "
                 "the Original model.")
  if untrained:
    lines.append("\n(untrained): 0 training epochs; Original and Retrain "
                 "are the initialization.")
  return "\n".join(lines)

def salun_table(records: Sequence[Mapping[str, Any]], *,
                methods: Optional[Sequence[str]] = None,
                include_original: bool = False, digits: int = 2) -> str:
  """The SalUn-style Markdown table.

  Each metric cell is ``mean ± std`` over seeds (population std; the ``±``
  part is omitted for a single seed) followed by ``(gap)``, the absolute
  difference between the method's mean and Retrain's mean. The Avg. Gap
  column is the mean ± std over seeds of each record's ``avg_gap`` (the
  per-seed mean of the four gaps, :func:`oeu_jax.evaluation.metrics.avg_gap`);
  RTE is the unlearning wall-clock time in seconds (Retrain's: its training
  time). Retrain's own row carries no gaps.

  Args:
    records: one dict per (method, seed) with ``method``, ``ua``, ``ra``,
      ``ta``, ``mia_efficacy``, ``avg_gap`` and ``rte_s``.
    methods: rows, in order (default: Retrain first, then the order of
      appearance; ``original`` left out unless ``include_original``).
    include_original: add the Original model's row.
    digits: decimals.

  Returns:
    The table as a Markdown string (no trailing newline).

  Raises:
    KeyError: a record lacks a needed key, or ``methods`` names a method
      without records.

  Examples:
    >>> recs = [{"method": "retrain", "ua": 5.0, "ra": 100.0, "ta": 94.0,
    ...          "mia_efficacy": 12.0, "avg_gap": 0.0, "rte_s": 10.0},
    ...         {"method": "oeu", "ua": 4.0, "ra": 99.0, "ta": 93.0,
    ...          "mia_efficacy": 10.0, "avg_gap": 1.25, "rte_s": 1.0}]
    >>> salun_table(recs).splitlines()[-1].split(" | ")[1:5]
    ['4.00 (1.00)', '99.00 (1.00)', '93.00 (1.00)', '10.00 (2.00)']
  """
  order = _method_order(records, methods, include_original)
  keys = [k for k, _ in SALUN_COLUMNS] + ["avg_gap", "rte_s"]
  summary = metrics.summarize([r for r in records if r["method"] in order],
                              keys)
  ref = summary.get(REFERENCE)
  head = ("| Method | " + " | ".join(t for _, t in SALUN_COLUMNS)
          + " | Avg. Gap | RTE (s) |")
  lines = [head, "|---" * (len(SALUN_COLUMNS) + 3) + "|"]
  for m in order:
    s = summary[m]
    cells = []
    for k, _ in SALUN_COLUMNS:
      cell = _fmt(s["mean"][k], s["std"][k], s["n"], digits)
      if ref is not None and m != REFERENCE:
        cell += f" ({abs(s['mean'][k] - ref['mean'][k]):.{digits}f})"
      cells.append(cell)
    cells.append(_fmt(s["mean"]["avg_gap"], s["std"]["avg_gap"], s["n"],
                      digits))
    cells.append(_fmt(s["mean"]["rte_s"], s["std"]["rte_s"], s["n"], digits))
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def diagnostics_table(records: Sequence[Mapping[str, Any]], *,
                      methods: Optional[Sequence[str]] = None,
                      include_original: bool = True,
                      digits: int = 3) -> str:
  """Forgetting-by-uncertainty diagnostics, mean ± std over seeds.

  Columns: mean normalized entropy on D_f (a fraction), confident
  mispredictions (%), entropy of the predicted-class histogram on D_f
  (a fraction; near 0 when predictions collapse onto one class).
  """
  order = _method_order(records, methods, include_original)
  keys = [k for k, _ in DIAGNOSTIC_COLUMNS]
  summary = metrics.summarize([r for r in records if r["method"] in order],
                              keys)
  lines = ["| Method | " + " | ".join(t for _, t in DIAGNOSTIC_COLUMNS)
           + " |", "|---" * (len(keys) + 1) + "|"]
  for m in order:
    s = summary[m]
    lines.append(f"| {m} | " + " | ".join(
        _fmt(s["mean"][k], s["std"][k], s["n"], digits) for k in keys)
        + " |")
  return "\n".join(lines)


def variant_table(records: Sequence[Mapping[str, Any]], *,
                  key: str = "avg_gap", by: str = "variant",
                  digits: int = 2) -> str:
  """One metric, methods × variants (e.g. ``avg_gap`` across bit widths).

  Args:
    records: records with ``method``, ``by`` and ``key``.
    key: the metric.
    by: the record key naming the variant.
    digits: decimals.

  Returns:
    A Markdown table; a missing (method, variant) cell is ``–``.
  """
  variants, methods = [], []
  for r in records:
    if r[by] not in variants:
      variants.append(r[by])
    if r["method"] not in methods and r["method"] != "original":
      methods.append(r["method"])
  if REFERENCE in methods:
    methods.remove(REFERENCE)
    methods.insert(0, REFERENCE)
  lines = ["| Method | " + " | ".join(str(v) for v in variants) + " |",
           "|---" * (len(variants) + 1) + "|"]
  for m in methods:
    cells = []
    for v in variants:
      vals = [float(r[key]) for r in records
              if r["method"] == m and r[by] == v]
      cells.append(_fmt(float(np.mean(vals)), float(np.std(vals)),
                        len(vals), digits) if vals else "–")
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _summed(records, order, key):
  out = {}
  for m in order:
    hists = [np.asarray(r[key], np.float64) for r in records
             if r["method"] == m and r.get(key) is not None]
    if hists:
      out[m] = np.sum(hists, axis=0)
  return out


def _grid(n: int):
  cols = min(n, 4)
  return int(math.ceil(n / cols)), cols


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save_grid(plt, fig, axes, used: int, xlabel: str,
               path: str | Path) -> bool:
  """Hides unused panels, labels the outer axes, writes the PNG."""
  for ax in axes.flat[used:]:
    ax.axis("off")
  for ax in axes[-1]:
    ax.set_xlabel(xlabel, fontsize=8)
  for ax in axes[:, 0]:
    ax.set_ylabel("fraction of D_f", fontsize=8)
  fig.tight_layout()
  Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


def plot_entropy_histograms(records: Sequence[Mapping[str, Any]],
                            path: str | Path, *,
                            methods: Optional[Sequence[str]] = None) -> bool:
  """Per-method histogram of the normalized entropy on D_f (``entropy_hist``).

  Bars are fractions of D_f (counts summed over seeds, then normalized); the
  bins split [0, 1] evenly. Methods whose records lack ``entropy_hist`` are
  left out.

  Returns:
    True if a PNG was written (False: no record had the histogram).
  """
  order = _method_order(records, methods, include_original=True)
  hists = _summed(records, order, "entropy_hist")
  if not hists:
    return False
  plt = _pyplot()
  rows, cols = _grid(len(hists))
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows),
                           sharex=True, sharey=True, squeeze=False)
  for ax, (m, h) in zip(axes.flat, hists.items()):
    edges = np.linspace(0.0, 1.0, len(h) + 1)
    frac = h / max(h.sum(), 1.0)
    ax.bar(edges[:-1], frac, width=np.diff(edges), align="edge",
           color="tab:blue", edgecolor="white", linewidth=0.3)
    ax.set_title(m, fontsize=9)
    ax.set_xlim(0, 1)
  return _save_grid(plt, fig, axes, len(hists), "H(p) / log K on D_f", path)


def plot_pred_histograms(records: Sequence[Mapping[str, Any]],
                         path: str | Path, *,
                         methods: Optional[Sequence[str]] = None) -> bool:
  """Per-method predicted-class histogram on D_f (``pred_hist``).

  A collapse onto one wrong class (the bias of label-based forgetting) shows
  as one tall bar. Fractions of D_f, summed over seeds.

  Returns:
    True if a PNG was written.
  """
  order = _method_order(records, methods, include_original=True)
  hists = _summed(records, order, "pred_hist")
  if not hists:
    return False
  plt = _pyplot()
  rows, cols = _grid(len(hists))
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows),
                           sharey=True, squeeze=False)
  for ax, (m, h) in zip(axes.flat, hists.items()):
    ax.bar(np.arange(len(h)), h / max(h.sum(), 1.0), color="tab:orange")
    ax.set_title(m, fontsize=9)
    if len(h) <= 20:
      ax.set_xticks(np.arange(len(h)))
      ax.tick_params(labelsize=7)
  return _save_grid(plt, fig, axes, len(hists), "predicted class on D_f",
                    path)


def write_report(records: Sequence[Mapping[str, Any]], outdir: str | Path, *,
                 title: Optional[str] = None) -> dict:
  """Writes ``table.md`` and the PNG plots into ``outdir``.

  Args:
    records: the run's records (one per method × seed).
    outdir: created if missing.
    title: a heading for ``table.md``.

  Returns:
    ``{"table": path, "entropy_hist": path or None, "pred_hist": path or
    None}``.
  """
  outdir = Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  parts = [f"# {title}\n"] if title else []
  seeds = sorted({r.get("seed") for r in records if "seed" in r})
  parts.append(f"Mean ± std over seeds {seeds}; (gap) = |mean - Retrain "
               "mean|. RTE: seconds, without compilation.\n")
  parts.append(salun_table(records))
  if all(all(k in r for k, _ in DIAGNOSTIC_COLUMNS) for r in records):
    parts.append("\n## Forgetting by uncertainty (D_f)\n")
    parts.append(diagnostics_table(records))
  if any(r.get("forget_class_ta") is not None for r in records):
    ft = [r for r in records if r.get("forget_class_ta") is not None]
    summary = metrics.summarize(ft, ["forget_class_ta"])
    parts.append("\n## Test accuracy on the forgotten class\n")
    parts.append("| Method | TA (forgotten class) |\n|---|---|")
    for m, s in summary.items():
      parts.append(f"| {m} | " + _fmt(s["mean"]["forget_class_ta"],
                                       s["std"]["forget_class_ta"], s["n"],
                                       2) + " |")
  table = outdir / "table.md"
  tmp = table.with_suffix(".md.tmp")
  tmp.write_text("\n".join(parts) + "\n")
  tmp.replace(table)
  ent = outdir / ENTROPY_PNG
  pred = outdir / PRED_PNG
  return {"table": table,
          "entropy_hist": ent if plot_entropy_histograms(records, ent)
          else None,
          "pred_hist": pred if plot_pred_histograms(records, pred) else None}

