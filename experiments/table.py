"""The comparison table under the protocol, from ``experiments/tuned.json``.

Usage::

    python -m experiments.table --dataset digits --scenario class
        [--classes 0,1,...,9] [--forget-ratio 0.1] [--seeds 0,1,2,3,4]
        [--methods ...] [--workdir runs/table-digits-class]
        [--records results/protocol/digits-class.json]
        [--stop-when RULE|tuned] [--stop-every K]

Every method runs with its picks from ``tuned.json`` (learning rate, knob,
capped epochs, reference schedule) on the table seeds (disjoint from the
tuning seeds) and, class-wise, every listed class; non-finite steps are
skipped and such rows flagged rather than aborting the table. Writes
``WORKDIR/results.json`` (every record) and ``WORKDIR/table.md``: mean ± std
and the 95% CI half-width per metric, Avg. gap of the means (SalUn) beside
the mean of per-unit gaps, RTE against Retrain's, the units that skipped a
non-finite step (``flagged``) or whose RA fell out of the working range
(``collapsed``: more than ``protocol.RA_DROP`` points below the same unit's
Retrain), and for OEU a paired t-test against the best baseline over the
(seed, class) units. ``--stop-when RULE`` stops every method by one rule
(:mod:`oeu_jax.engine.stopping`); ``--stop-when tuned`` each by its tuned one
(:func:`stop_rules`); the ``stopped`` column counts the units it stopped.

``--records FILE`` keeps every record in a file meant to be committed: a
(class, method) whose records for every seed are already there, under the
same configuration id (:func:`oeu_jax.runner.workdir.config_id`: dataset,
model fingerprint, scenario, unlearning budget and hyperparameters), is
reused instead of rerun, and the file is rewritten after each (class,
method). Checkpoints live in ``--workdir``, which is not kept between
sessions; the records file lets a table be built over several sessions.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from experiments import common
from experiments import protocol
from experiments import tune
from oeu_jax import data as data_lib
from oeu_jax.algorithm import methods as methods_lib
from oeu_jax.engine import stopping
from oeu_jax.evaluation import significance
from oeu_jax.evaluation import stats
from oeu_jax.nn import models
from oeu_jax.runner import config as config_lib
from oeu_jax.runner import layout as layout_lib
from oeu_jax.runner import pipeline
from oeu_jax.runner import workdir as workdir_lib

KEYS = ("ua", "ra", "ta", "mia_efficacy")


def method_config(entry: dict, method: str, *, dataset: str, scenario: str,
                  forget_class, forget_ratio, seeds, data_dir, model, bits,
                  train, max_examples, num_forget: int, num_retain: int,
                  recap: bool = False, stop_when: Optional[str] = None,
                  stop_every: int = 10) -> config_lib.RunConfig:
  """The RunConfig of ``method`` with its tuned pick.

  ``recap``: the forget set differs in size from the tuned one (another
  forget ratio), so the epochs are recomputed under the compute cap instead
  of taken from the pick. ``stop_when``: a stopping rule
  (:mod:`oeu_jax.engine.stopping`) applied to the method's run, checked every
  ``stop_every`` steps; the budget stays the capped one.
  """
  pick = entry["methods"][method]["pick"]
  if pick is None:
    raise ValueError(f"{method}: every tuned setting diverged")
  hp = dict(protocol.FIXED.get(method, ())) | pick["hparams"]
  built = methods_lib.build_method(method, models.build_model(
      model, num_classes=10, bits=bits), **hp)
  ucfg = protocol.unlearn_config(
      built, num_forget, num_retain,
      base=protocol.BASE, lr=pick["lr"],
      train_epochs=train.epochs, epochs=None if recap else pick["epochs"])
  ucfg = dataclasses.replace(ucfg, skip_nonfinite=True)
  if stop_when is not None:
    ucfg = dataclasses.replace(ucfg, stop_when=stop_when,
                               stop_every=stop_every)
  if method == "l1_sparse":
    hp["epochs"] = ucfg.epochs
  return config_lib.RunConfig(
      dataset=dataset, data_dir=data_dir, model=model, bits=bits,
      quant_backend=common.QUANT_BACKEND,
      scenario=scenario, forget_class=forget_class,
      forget_ratio=forget_ratio, methods=(method,), seeds=tuple(seeds),
      train=train, unlearn=ucfg,
      method_hparams=((method, tuple(sorted(hp.items()))),) if hp else (),
      max_examples=max_examples, mia_exclude_forget_class=True)


def stop_rules(entry: dict, methods, stop_when: Optional[str],
               stop_every: Optional[int]) -> dict:
  """``{method: (rule or None, every)}`` for ``--stop-when``.

  An explicit rule applies to every method, checked every ``stop_every``
  steps (default 10). ``"tuned"``: each method's stop pick from its tuning
  entry (:func:`experiments.tune.tune_stop`; null: no rule), checked as
  often as in the tuning unless ``stop_every`` is given.

  Raises:
    ValueError: ``"tuned"`` for a method whose stopping rule was not tuned
      (or that has no tuning entry), in one line.
  """
  if stop_when != "tuned":
    return {m: (stop_when, stop_every or 10) for m in methods}
  out = {}
  for m in methods:
    stop = entry.get("methods", {}).get(m, {}).get("stop")
    if stop is None:
      raise ValueError(f"'tuned': method {m!r} has no tuned stopping rule;"
                       " run experiments.tune with --stop-when RULES first")
    out[m] = (stop["pick"], stop_every or stop["every"])
  return out


def stored(records: list, cfg: config_lib.RunConfig) -> Optional[list]:
  """The records of ``cfg`` (its method, Original and Retrain, every seed)
  among ``records``, or None when any is missing."""
  cid = workdir_lib.config_id(config_lib.resolve(cfg))
  fc = cfg.forget_class if cfg.scenario == "class" else None
  want = {(m, int(s)) for m in ("original", "retrain") + tuple(cfg.methods)
          for s in cfg.seeds}
  have = {(r["method"], r["seed"]): r for r in records
          if r.get("config") == cid and r.get("forget_class") == fc}
  return [have[k] for k in sorted(want)] if want <= set(have) else None


def _cell(values) -> str:
  s = stats.summary(values)
  ci = "" if s.n < 2 else f" [±{s.ci_half_width:.2f}]"
  return f"{s.mean:.2f} ± {s.std:.2f}{ci}"


def _stopped(recs: list) -> str:
  steps = [r["stop_step"] for r in recs if r.get("stop_step") is not None]
  if not steps:
    return "-"
  return f"{len(steps)}/{len(recs)}, {float(np.median(steps)):g}"


def collapsed(recs: list, retrain: list) -> int:
  """Units whose RA is out of the working range of the same unit's Retrain
  (:func:`experiments.protocol.in_working_range`)."""
  ref = {(r["seed"], r.get("forget_class")): r["ra"] for r in retrain}
  return sum(1 for r in recs if not protocol.in_working_range(
      r["ra"], ref[(r["seed"], r.get("forget_class"))]))


def markdown(records: list, *, title: str) -> str:
  """The table: metrics, gaps, RTE and OEU's significance marker."""
  by = stats.by_method(records)
  retrain = by["retrain"]
  stops = any(r.get("stop_step") is not None for r in records)
  lines = [f"### {title}", "",
           "| method | UA | RA | TA | MIA-efficacy | Avg. gap (of means) |"
           " mean per-unit gap | RTE (s) | flagged | collapsed |"
           + (" stopped (units, median step) |" if stops else ""),
           "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if stops
                                                      else "")]
  best = stats.best_baseline(records)
  test = None
  if "oeu" in by and best:
    test = significance.paired_test(by["oeu"], by[best], retrain)
  for m, recs in by.items():
    gap = stats.avg_gap_of_means(recs, retrain)
    per = stats.mean_per_seed_gap(recs, retrain)
    mark = ""
    if m == "oeu" and test is not None:
      mark = " " + (significance.marker(test) or "*")
    if m == best:
      mark = " (best baseline)"
    flagged = sum(1 for r in recs
                  if r.get("train_metrics", {}).get("skipped_steps")
                  or r.get("nonfinite_logits"))
    lines.append(
        f"| {m}{mark} | " + " | ".join(_cell([r[k] for r in recs])
                                      for k in KEYS)
        + f" | {gap:.2f} | {per.mean:.2f} ± {per.std:.2f} | "
        f"{_cell([r['rte_s'] for r in recs])} | {flagged} | "
        f"{collapsed(recs, retrain)} |"
        + (f" {_stopped(recs)} |" if stops else ""))
  if test is not None:
    verdict = ("significant" if test.significant else "not significant")
    lines += ["", f"OEU vs best baseline ({best}), paired over "
              f"{test.n} (seed, class) units: mean difference of per-unit "
              f"Avg. gaps {test.mean_diff:+.2f} (95% bootstrap CI "
              f"[{test.ci_low:+.2f}, {test.ci_high:+.2f}]), paired t-test "
              f"p = {test.p_t:.3g}, bootstrap p = {test.p_boot:.3g}: "
              f"{verdict} at 0.05. `*` = significant, `≈` = not."]
  return "\n".join(lines)


# OEU and its variants and ablations (issue 13): compared with the best
# baseline and with OEU in the variants section.
FAMILY = tuple(m for m in stats.NON_BASELINES
               if m not in ("original", "retrain"))
DIAGNOSTICS = ("forget_entropy", "confident_wrong", "pred_hist_entropy")


def _test_cell(test) -> str:
  return (f"{test.mean_diff:+.2f} [{test.ci_low:+.2f}, {test.ci_high:+.2f}]"
          f", p = {test.p_t:.2g} {significance.marker(test) or '*'}")


def variants_markdown(records: list) -> str:
  """The ablation section, or ``""`` when only OEU of its family ran.

  Per method: SalUn's Avg. gap, each OEU-family method's paired difference
  of per-unit gaps to the best baseline and to OEU (95% bootstrap CI,
  paired t-test p; `*` significant at 0.05, `≈` not; negative: closer to
  Retrain), and the forgetting-by-uncertainty diagnostics on D_f (means
  over units): normalized forget entropy H/log K, confident mispredictions
  (%, max prob >= 0.9), entropy of the predicted-class histogram / log K.
  """
  by = stats.by_method(records)
  family = [m for m in by if m in FAMILY]
  if not family or family == ["oeu"]:
    return ""
  retrain = by["retrain"]
  best = stats.best_baseline(records)
  lines = ["| method | Avg. gap (of means) | vs best baseline"
           f" ({best or 'none'}) | vs OEU | forget entropy | confident wrong"
           " (%) | predicted-class entropy |", "|---|---|---|---|---|---|---|"]
  for m, recs in by.items():
    vs_best = vs_oeu = "-"
    if m in family and best:
      vs_best = _test_cell(significance.paired_test(recs, by[best], retrain))
    if m in family and m != "oeu" and "oeu" in by:
      vs_oeu = _test_cell(significance.paired_test(recs, by["oeu"], retrain))
    diag = " | ".join(
        f"{np.mean([r[k] for r in recs]):.2f}" if all(k in r for r in recs)
        else "-" for k in DIAGNOSTICS)
    lines.append(f"| {m} | {stats.avg_gap_of_means(recs, retrain):.2f} | "
                 f"{vs_best} | {vs_oeu} | {diag} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m experiments.table")
  p.add_argument("--dataset", required=True, choices=data_lib.DATASETS)
  p.add_argument("--scenario", required=True, choices=data_lib.SCENARIOS)
  p.add_argument("--classes", default=None,
                 help="class-wise: forgotten classes (default all)")
  p.add_argument("--forget-ratio", type=float, default=0.1)
  p.add_argument("--seeds", default=",".join(map(str,
                                                 protocol.TABLE_SEEDS)))
  p.add_argument("--methods", default=",".join(common.BASELINES))
  p.add_argument("--tuned", default=str(tune.TUNED_JSON))
  p.add_argument("--data-dir", default=None)
  p.add_argument("--workdir", default=None)
  p.add_argument("--records", default=None, metavar="FILE",
                 help="records file kept across sessions: (class, method) "
                 "runs already in it under the same configuration are "
                 "reused, new ones added after each run")
  p.add_argument("--stop-when", default=None, metavar="RULE",
                 help="a stopping rule for every method's unlearning "
                 "(oeu_jax.engine.stopping: 'ua>=T' or 'entropy>=T'), or "
                 "'tuned': each method's tuned rule (its tuning entry's stop "
                 "pick, none if null); default none, the capped budget runs")
  p.add_argument("--stop-every", type=int, default=None, metavar="STEPS",
                 help="steps between checks (default 10; with 'tuned', the"
                 " tuning's)")
  p.add_argument("--vmap-seeds", action="store_true",
                 help="run the seeds of each stage as one vmapped program "
                 "(one compilation for all seeds; equal to the sequential "
                 "runs up to float rounding)")
  args = p.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  if args.stop_when is not None and args.stop_when != "tuned":
    try:
      stopping.parse(args.stop_when)
    except ValueError as e:
      print(f"error: --stop-when: {e}", file=sys.stderr)
      return 2
  if common.bad_stop_every(args.stop_every):
    return 2
  table = json.loads(Path(args.tuned).read_text())
  try:
    entry = table[args.dataset][args.scenario]
  except KeyError:
    print(f"error: {args.tuned} has no tuning for {args.dataset} "
          f"{args.scenario}: run experiments.tune first", file=sys.stderr)
    return 2
  try:
    stops = stop_rules(entry, args.methods.split(","), args.stop_when,
                       args.stop_every)
  except ValueError as e:
    print(f"error: --stop-when: {e}", file=sys.stderr)
    return 2
  clash = set(seeds) & set(entry["seeds"])
  if clash:
    print(f"error: table seeds {sorted(clash)} were tuning seeds",
          file=sys.stderr)
    return 2
  if args.data_dir is None and args.dataset == "mnist_idx":
    args.data_dir = str(common.MNIST_T10K)
  stop_tag = ("" if args.stop_when is None else "-stop-" + "".join(
      c for c in args.stop_when if c.isalnum() or c == "."))
  workdir = Path(args.workdir or f"runs/table-{args.dataset}-"
                 f"{args.scenario}{stop_tag}")
  ds = data_lib.load_dataset(args.dataset, data_dir=args.data_dir,
                             max_examples=entry.get("max_examples"))
  classes = ([int(c) for c in args.classes.split(",")] if args.classes
             else list(range(ds.num_classes))) if args.scenario == "class" \
      else [None]
  train = dataclasses.replace(
      config_lib.default_train(args.dataset),
      **{k: v for k, v in entry["train"].items()
         if k in ("epochs", "batch_size", "lr")})
  recap = (args.scenario != "class"
           and abs(args.forget_ratio - entry["forget_ratio"]) > 1e-12)
  kept = []
  if args.records:
    try:
      kept = workdir_lib.read_results(args.records)
    except ValueError as e:
      print(f"error: --records: {e}", file=sys.stderr)
      return 2
  records = []
  for fc in classes:
    split = data_lib.make_split(
        ds, args.scenario, seed=seeds[0], forget_class=fc,
        forget_ratio=None if fc is not None else args.forget_ratio)
    for m in args.methods.split(","):
      cfg = method_config(
          entry, m, dataset=args.dataset, scenario=args.scenario,
          forget_class=fc, forget_ratio=None if fc is not None
          else args.forget_ratio, seeds=seeds, data_dir=args.data_dir,
          model=entry["model"], bits=entry["bits"], train=train,
          max_examples=entry.get("max_examples"),
          num_forget=len(split.forget_idx),
          num_retain=len(split.retain_idx), recap=recap,
          stop_when=stops[m][0], stop_every=stops[m][1])
      recs = stored(kept, cfg)
      reused = recs is not None
      if not reused:
        recs = pipeline.run(cfg, workdir, resume=True, log=lambda *_: None,
                            vmap_seeds=args.vmap_seeds)
        if args.records:
          kept = [r for r in kept if not any(
              r.get("config") == q["config"] and r["method"] == q["method"]
              and r["seed"] == q["seed"]
              and r.get("forget_class") == q.get("forget_class")
              for q in recs)] + recs
          layout_lib.write_results(kept, args.records)
      for r in recs:
        if r["method"] in ("original", "retrain") and any(
            q["method"] == r["method"] and q["seed"] == r["seed"]
            and q.get("forget_class") == r.get("forget_class")
            for q in records):
          continue
        records.append(r)
      print(f"class {fc} {m}: {'reused' if reused else 'done'}",
            flush=True)
      layout_lib.write_results(records, workdir / "results.json")
  title = (f"{args.dataset} {args.scenario}"
           + (f" (classes {classes})" if fc is not None
              else f" {args.forget_ratio:g}") + f", seeds {seeds}"
           + (f" (settings tuned at forget ratio {entry['forget_ratio']:g},"
              " epochs recomputed under the cap)" if recap else "")
           + (f", stopping rule {args.stop_when} every "
              f"{next(iter(stops.values()))[1]} "
              "steps" if args.stop_when not in (None, "tuned") else "")
           + (", each method's tuned stopping rule: " + ", ".join(
               f"{k} {r or 'none'}" for k, (r, _) in stops.items())
              if args.stop_when == "tuned" else ""))
  md = markdown(records, title=title)
  variants = variants_markdown(records)
  if variants:
    md += "\n\n#### OEU variants\n\n" + variants
  (workdir / "table.md").write_text(md + "\n")
  print(md)
  return 0


if __name__ == "__main__":
  sys.exit(main())
