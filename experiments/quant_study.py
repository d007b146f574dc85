"""Does forgetting survive quantization? Float unlearning, then PTQ, vs QAT.

Most users unlearn a float model with a float library and quantize the
result for the device. Work on LLMs found that 4-bit quantization of an
unlearned model brings forgotten knowledge back (Zhang et al., ICLR 2025;
DurableUn, arXiv 2605.02196). This experiment asks the same of the image
classifiers here:

* **float -> PTQ**: a float Original (QAT recipe, no quantization), unlearned
  in float by each method at its protocol pick (the ``tuned.json`` entry of
  :mod:`experiments.table`, no stopping rule), then post-training quantized:
  the same float weights evaluated at W8A8, W4A8 and W4A4 (per-output-channel
  weight scales, per-tensor dynamic activation scales, first conv and
  classifier float: the QAT scheme; the quantized model is also scored in its
  integer serving form, ``served``).
* **QAT**: Originals trained quantization-aware at each of those bits,
  unlearned at the same bits by the same method and pick (OEU's setting).

Each record carries ``arm`` (``float``, ``ptq`` or ``qat``), ``quant``
(``float``, ``w8a8``, ...), the metrics and ``served``. ``quant_study.md``
reports, per method and bits, UA/MIA-efficacy (and, for mislabel, the accuracy
on D_f's true labels) before and after PTQ with the paired difference over
the units (seed x class) and its t-test, beside the QAT-unlearned model's.

A scenario tuned on digits only (mislabel) runs on MNIST with
``--picks-from digits``: the digits picks under the library's transfer
rule, MNIST's own training recipe.

Usage::

    python -m experiments.quant_study --dataset digits --scenario class
        --classes 3,7 --seeds 0,1,2,3,4 --workdir runs/quant-study
        --records results/quant_study/digits-class.json

Backend: ``fake`` (the library default; AQT's numerics at float cost).
Checkpoints live in ``--workdir``; ``--records`` keeps every record in a file
meant to be committed and skips what is already there, so a study can be
built over several sessions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np

from experiments import common
from experiments import table as table_lib
from experiments import tune
from oeu_jax import data as data_lib
from oeu_jax.evaluation import significance
from oeu_jax.nn import models
from oeu_jax.nn import quantization
from oeu_jax.nn import serving
from oeu_jax.runner import config as config_lib
from oeu_jax.runner import evaluate as evaluate_lib
from oeu_jax.runner import export
from oeu_jax.runner import layout as layout_lib
from oeu_jax.runner import pipeline
from oeu_jax.runner import workdir as workdir_lib

METHODS = ("oeu", "qmul", "salun", "rl", "neggrad_plus", "scrub")
QUANT = ("w8a8", "w4a8", "w4a4")
BACKEND = "fake"
KEYS = ("ua", "ra", "ta", "mia_efficacy")


def _config(entry, method, bits, args, fc, split, train):
  # Picks transferred from another dataset: their epochs are recomputed
  # under the compute cap for this dataset's set sizes (the transfer rule of
  # oeu_jax.defaults.pick).
  cfg = table_lib.method_config(
      entry, method, dataset=args.dataset, scenario=args.scenario,
      forget_class=fc, forget_ratio=None if fc is not None
      else entry["forget_ratio"], seeds=args.seeds, data_dir=args.data_dir,
      model=entry["model"], bits=bits, train=train,
      max_examples=entry.get("max_examples"),
      num_forget=len(split.forget_idx), num_retain=len(split.retain_idx),
      recap=args.picks_from is not None)
  return dataclasses.replace(cfg, quant_backend=BACKEND)


def _quantized(cfg, bits: str, dataset):
  """The run's architecture quantized at ``bits`` (fake backend)."""
  return models.build_model(
      cfg.model, num_classes=dataset.num_classes,
      bits=dataclasses.replace(quantization.preset(bits), backend=BACKEND),
      float_ends=cfg.float_ends, **dict(cfg.model_kwargs))


def ptq_records(cfg: config_lib.RunConfig, records: list, workdir: Path,
                dataset: data_lib.Dataset, quant=QUANT) -> list:
  """The float run's models post-training quantized at each of ``quant``.

  Every record (Original, Retrain, the method) of the float run ``cfg`` is
  re-evaluated with its float checkpoint's weights in a model of the same
  architecture quantized at each bits (fake backend; ``served``: its
  integer serving form).
  """
  cfg = config_lib.resolve(cfg)
  layout = layout_lib.Layout.of(cfg, workdir)
  fc = cfg.forget_class if cfg.scenario == "class" else None
  out = []
  for q in quant:
    model = _quantized(cfg, q, dataset)
    for r in records:
      split = data_lib.make_split(
          dataset, cfg.scenario, seed=r["seed"], forget_class=fc,
          forget_ratio=cfg.forget_ratio if fc is None else None)
      v = export.load_variables(layout.checkpoint_dir(r["seed"], r["method"]))
      rec = {k: r[k] for k in ("method", "seed", "config", "scenario",
                               "dataset", "model", "forget_class",
                               "forget_ratio", "num_forget")}
      rec.update(evaluate_lib.evaluate(
          model, v["params"], v["batch_stats"], dataset, split,
          forget_class=fc,
          mia_exclude_forget_class=cfg.mia_exclude_forget_class))
      rec.update(arm="ptq", quant=q, bits="float")
      out.append(rec)
  return out


def integer_changes(cfg: config_lib.RunConfig, records: list, workdir: Path,
                    dataset: data_lib.Dataset, quant=QUANT) -> list:
  """How much of the Original's integer weights unlearning in float moved.

  For each bits of ``quant`` and each unlearned float model of ``records``:
  the share of the quantized layers' integer weights (the serving form,
  :func:`oeu_jax.nn.serving.convert`) that differ from the float Original's
  at the same bits. Where unlearning changes the weights by less than a
  quantization step, PTQ rounds the change away and serves the Original
  again: the mechanism behind forgetting undone by quantization in LLMs.
  """
  cfg = config_lib.resolve(cfg)
  layout = layout_lib.Layout.of(cfg, workdir)
  out = []
  for q in quant:
    model = _quantized(cfg, q, dataset)

    def integers(stage, seed):
      v = export.load_variables(layout.checkpoint_dir(seed, stage))
      frozen, _ = serving.convert(model, v["params"], v["batch_stats"],
                                  input_shape=dataset.train_x.shape[1:])
      return [np.asarray(x.astype(np.int8)) for x in jax.tree.leaves(
          frozen[serving.collection(model)]) if x.dtype.kind == "i"
              or "int" in str(x.dtype)]

    for r in records:
      if r["method"] in ("original", "retrain"):
        continue
      before, after = integers("original", r["seed"]), integers(
          r["method"], r["seed"])
      moved = sum(int(np.sum(a != b)) for a, b in zip(before, after))
      total = sum(a.size for a in before)
      out.append({k: r[k] for k in ("method", "seed", "config",
                                    "forget_class")}
                 | {"arm": "integers", "quant": q,
                    "int_changed": moved / total})
  return out


def _done(kept, cid, arm, quant, method, seeds) -> list | None:
  recs = [r for r in kept if r.get("config") == cid and r["arm"] == arm
          and r["quant"] == quant and r["method"] in (method, "original",
                                                      "retrain")
          and r["seed"] in seeds]
  have = {(r["method"], r["seed"]) for r in recs}
  want = {(m, s) for m in (method, "original", "retrain") for s in seeds}
  return recs if have >= want else None


def run_unit(entry, method, args, fc, dataset, train, workdir, kept):
  """Float + PTQ and QAT records of one (method, class); reuses ``kept``."""
  split = data_lib.make_split(
      dataset, args.scenario, seed=args.seeds[0], forget_class=fc,
      forget_ratio=None if fc is not None else entry["forget_ratio"])
  new = []
  plan = [("float", "float")] + [("qat", q) for q in args.quant]
  for arm, q in plan:
    cfg = _config(entry, method, q, args, fc, split, train)
    cid = workdir_lib.config_id(config_lib.resolve(cfg))
    if _done(kept, cid, arm, q, method, args.seeds) is not None and (
        arm != "float" or _done(kept, cid, "ptq", args.quant[-1], method,
                                args.seeds) is not None):
      if arm == "float" and not any(
          r["arm"] == "integers" and r.get("config") == cid
          and r["method"] == method for r in kept):
        float_recs = [r for r in kept if r.get("config") == cid
                      and r["arm"] == "float" and r["seed"] in args.seeds
                      and r["method"] in (method, "original")]
        new += integer_changes(cfg, float_recs, workdir, dataset,
                               args.quant)
      continue
    recs = pipeline.run(cfg, workdir, resume=True, log=lambda *_: None)
    for r in recs:
      r.update(arm=arm, quant=q)
    new += recs
    if arm == "float":
      new += ptq_records(cfg, recs, workdir, dataset, args.quant)
      new += integer_changes(cfg, recs, workdir, dataset, args.quant)
  return new


def _units(records, arm, quant, method, key):
  """``{(seed, class): value}`` of ``key``."""
  return {(r["seed"], r.get("forget_class")): r[key] for r in records
          if r["arm"] == arm and r["quant"] == quant and r["method"] == method}


def report(records: list, scenario: str, quant=QUANT) -> str:
  """Markdown: per method and bits, before/after PTQ and QAT, paired."""
  keys = ["ua", "mia_efficacy", "ta"] + (["forget_true_acc"]
                                         if scenario == "mislabel" else [])
  methods = ["original", "retrain"] + [m for m in METHODS if any(
      r["method"] == m for r in records)]
  lines = []
  for key in keys:
    lines += [f"\n### {key}: float -> PTQ (paired over units), and QAT\n",
              "| method | float | " + " | ".join(
                  f"PTQ {q} (diff, p) | QAT {q}" for q in quant) + " |",
              "|---|---|" + "---|---|" * len(quant)]
    for m in methods:
      before = _units(records, "float", "float", m, key)
      if not before:
        continue
      cells = [m, f"{np.mean(list(before.values())):.2f}"]
      for q in quant:
        after = _units(records, "ptq", q, m, key)
        units = sorted(set(before) & set(after))
        if units:
          t = significance.paired_difference_test(
              [after[u] for u in units], [before[u] for u in units])
          cells.append(f"{np.mean([after[u] for u in units]):.2f} "
                       f"({t.mean_diff:+.2f}, p {t.p_t:.2g}"
                       f"{significance.marker(t)})")
        else:
          cells.append("-")
        qat = _units(records, "qat", q, m, key)
        cells.append(f"{np.mean(list(qat.values())):.2f}" if qat else "-")
      lines.append("| " + " | ".join(cells) + " |")
  moved = [r for r in records if r["arm"] == "integers"]
  if moved:
    lines += ["\n### Integer weights unlearning in float moved (share of the "
              "quantized layers' integers that differ from the Original's)\n",
              "| method | " + " | ".join(quant) + " |",
              "|---|" + "---|" * len(quant)]
    for m in METHODS:
      row = [np.mean([r["int_changed"] for r in moved
                      if r["method"] == m and r["quant"] == q] or [np.nan])
             for q in quant]
      if not np.all(np.isnan(row)):
        lines.append(f"| {m} | " + " | ".join(f"{100 * v:.1f}%"
                                               for v in row) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m experiments.quant_study",
                              description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="digits",
                 choices=("digits", "mnist_idx"))
  p.add_argument("--scenario", default="class",
                 choices=("class", "mislabel"))
  p.add_argument("--classes", default="3")
  p.add_argument("--seeds", default="0,1,2,3,4")
  p.add_argument("--methods", default=",".join(METHODS))
  p.add_argument("--tuned", default=None,
                 help="tuning file (default: experiments/tuned.json, or "
                      "experiments/tuning/<dataset>-mislabel.json)")
  p.add_argument("--quant", default=",".join(QUANT),
                 help=f"bits to quantize to (default {','.join(QUANT)})")
  p.add_argument("--picks-from", default=None, choices=("digits",),
                 help="take the method picks of this dataset's tuning (the "
                      "transfer rule of oeu_jax.defaults.pick: epochs "
                      "recomputed under the cap) and this dataset's "
                      "training recipe from tuned.json's class-wise entry")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--workdir", default="runs/quant-study")
  p.add_argument("--records", default=None)
  args = p.parse_args(argv)
  try:
    args.seeds = [int(s) for s in args.seeds.split(",")]
    classes = ([int(c) for c in args.classes.split(",")]
               if args.scenario == "class" else [None])
  except ValueError as e:
    print(f"error: --seeds/--classes must be comma-separated integers: {e}",
          file=sys.stderr)
    return 2
  args.quant = tuple(args.quant.split(","))
  if not args.quant or not set(args.quant) <= set(QUANT):
    print(f"error: --quant: {args.quant} not in {QUANT}", file=sys.stderr)
    return 2
  methods = args.methods.split(",")
  bad = sorted(set(methods) - set(METHODS))
  if bad:
    print(f"error: --methods: {bad} not in {METHODS}", file=sys.stderr)
    return 2
  source = args.picks_from or args.dataset
  tuned = Path(args.tuned or (
      tune.TUNED_JSON if args.scenario == "class" else
      common.REPO_ROOT / "experiments" / "tuning"
      / f"{source}-{args.scenario}.json"))
  try:
    entry = json.loads(tuned.read_text())[source][args.scenario]
    if args.picks_from is not None:  # This dataset's training recipe.
      own = json.loads(tune.TUNED_JSON.read_text())[args.dataset]["class"]
      entry = entry | {k: own[k] for k in ("train", "max_examples", "model",
                                           "bits")}
  except (OSError, KeyError) as e:
    print(f"error: no tuning of {source} {args.scenario} in {tuned}:"
          f" {e!r}", file=sys.stderr)
    return 2
  if set(args.seeds) & set(entry["seeds"]):
    print("error: table seeds overlap the tuning seeds", file=sys.stderr)
    return 2
  if args.data_dir is None and args.dataset == "mnist_idx":
    args.data_dir = str(common.MNIST_T10K)
  dataset = data_lib.load_dataset(args.dataset, data_dir=args.data_dir,
                                  max_examples=entry.get("max_examples"))
  train = dataclasses.replace(
      config_lib.default_train(args.dataset),
      **{k: v for k, v in entry["train"].items()
         if k in ("epochs", "batch_size", "lr")})
  workdir = Path(args.workdir)
  kept = workdir_lib.read_results(args.records) if args.records else []
  records = list(kept)
  for fc in classes:
    for m in methods:
      new = run_unit(entry, m, args, fc, dataset, train, workdir, records)
      records += new
      if args.records and new:
        layout_lib.write_results(records, args.records)
      print(f"[quant-study] class {fc} {m}: {len(new)} new records",
            flush=True)
  # Original/Retrain rows repeat per method: keep one per unit and arm.
  seen, unique = set(), []
  for r in records:
    key = (r["arm"], r["quant"], r["method"], r["seed"],
           r.get("forget_class"))
    if key not in seen:
      seen.add(key)
      unique.append(r)
  md = report(unique, args.scenario, args.quant)
  out = Path(args.records).with_suffix(".md") if args.records else (
      workdir / "quant_study.md")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(f"# Quantization study: {args.dataset} {args.scenario}\n"
                 f"{md}")
  print(md)
  return 0


if __name__ == "__main__":
  sys.exit(main())
