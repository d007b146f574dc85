"""Tunes every method by one protocol (:mod:`experiments.protocol`).

Usage::

    python -m experiments.tune --dataset digits --scenario class
        [--methods ft,ga,...] [--seeds 100,101] [--cap 0.15]
        [--workdir runs/tune-digits-class] [--out experiments/tuned.json]
        [--data-dir DIR] [--max-examples N] [--train-epochs E]
        [--stop-when 'ua>=90,ua>=95,entropy>=0.9'] [--stop-every K]
    python -m experiments.tune --dataset digits --scenario class --report

For each method, each setting of its search space (learning rate x key
knob) runs on every tuning unit (tuning seed; class-wise: forgetting class
``seed % K``) with the method's reference schedule and as many epochs as the
compute cap allows; a grid that does not bracket its best setting is
extended by half-decades (:func:`experiments.protocol.extension`) and
refined at the log-midpoints around its pick
(:func:`experiments.protocol.refinement`); the setting with the lowest mean
Avg. gap to Retrain among those in the working range
(:func:`experiments.protocol.in_working_range`) is picked. Original and
Retrain are trained once per unit and reused from checkpoints across the
whole grid (``--workdir``); a rerun reuses every finished trial. The search
space, every trial (diverged ones flagged) and the picks go to ``--out``
under ``[dataset][scenario]``, which :mod:`experiments.table` reads.

Stopping rule (:mod:`oeu_jax.engine.stopping`): the default is none; every
method runs its capped budget, as its reference code does (no reference has a
stopping rule), and the grid above is always tuned without one. Given
``--stop-when`` candidates, each method's pick is then rerun on the tuning
units under each rule, checked every ``--stop-every`` steps (:func:`tune_stop`),
and scored the same way; the rule kept is the one with the fewest mean
unlearning steps among those that stop before the budget and score at most
``protocol.STOP_TOL`` gap points worse than the pick without a rule
(:func:`experiments.protocol.stop_pick`), else none. The method's entry gets
``"stop": {"rules", "every", "tol", "base", "candidates", "pick"}``: the
candidates are trials (rule, score, gaps, per-unit metrics with
``stop_step`` and ``rte_s``, ``mean_steps``, mean ``rte_s``), ``base`` the
same summary of the pick without a rule, ``pick`` the rule or null;
``experiments.table --stop-when tuned`` runs each method under it. Stop
trials are stored like the others and reused by a rerun; a rerun without
``--stop-when`` keeps (and revalidates) the rules tuned before.
"""

import argparse
import dataclasses
import datetime
import json
import logging
import math
import sys
from pathlib import Path
from typing import Optional

from experiments import common
from experiments import protocol
from experiments import tune_report
from oeu_jax import data as data_lib
from oeu_jax.algorithm import methods as methods_lib
from oeu_jax.engine import stopping
from oeu_jax.engine import unlearn as unlearn_lib
from oeu_jax.nn import models
from oeu_jax.runner import config as config_lib
from oeu_jax.runner import layout as layout_lib
from oeu_jax.runner import pipeline

TUNED_JSON = Path(__file__).resolve().parent / "tuned.json"
DEFAULT_METHODS = common.BASELINES


def units(dataset: data_lib.Dataset, scenario: str, seeds, ratio: float):
  """``[(seed, forget_class or None, split)]`` of the tuning units."""
  out = []
  for s in seeds:
    fc = s % dataset.num_classes if scenario == "class" else None
    split = data_lib.make_split(
        dataset, scenario, seed=s, forget_class=fc,
        forget_ratio=None if scenario == "class" else ratio)
    out.append((s, fc, split))
  return out


def trial_config(args, method: str, seed: int, fc, split, lr: float,
                 knob: dict, train, *, stop_when: Optional[str] = None,
                 stop_every: int = 10) -> config_lib.RunConfig:
  """The RunConfig of one trial (one setting on one tuning unit), under
  the stopping rule ``stop_when`` checked every ``stop_every`` steps if
  given (:mod:`oeu_jax.engine.stopping`)."""
  model = models.build_model(args.model, num_classes=args.num_classes,
                             bits=args.bits)
  built = methods_lib.build_method(method, model, **dict(
      protocol.FIXED.get(method, ())), **knob)
  base = protocol.BASE
  ucfg = protocol.unlearn_config(
      built, len(split.forget_idx), len(split.retain_idx), base=base,
      lr=lr, train_epochs=train.epochs, cap=args.cap)
  if stop_when is not None:
    ucfg = dataclasses.replace(ucfg, stop_when=stop_when,
                               stop_every=stop_every)
  hp = dict(protocol.FIXED.get(method, ())) | knob
  if method == "l1_sparse":
    hp["epochs"] = ucfg.epochs
  return config_lib.RunConfig(
      dataset=args.dataset, data_dir=args.data_dir, model=args.model,
      bits=args.bits, quant_backend=common.QUANT_BACKEND,
      scenario=args.scenario,
      forget_ratio=None if fc is not None else args.forget_ratio,
      forget_class=fc, methods=(method,), seeds=(seed,), train=train,
      unlearn=ucfg, method_hparams=((method, tuple(sorted(hp.items()))),)
      if hp else (), max_examples=args.max_examples,
      mia_exclude_forget_class=True)


def _key(lr, knob, rule=None) -> str:
  """A trial's key in ``done``: its setting, and its stopping rule if any."""
  return json.dumps([lr, knob] + ([rule] if rule else []), sort_keys=True)


def _unlearn(args, method, unit_list, train, lr, knob, stop=None) -> str:
  """The first unit's resolved unlearning config, as its repr.

  A stored trial is reused only when this matches, so a change of the
  protocol (a schedule, a forget batch, the cap) reruns the trials it
  affects instead of reusing stale scores.
  """
  seed, fc, split = unit_list[0]
  return layout_lib.config_repr(trial_config(
      args, method, seed, fc, split, lr, knob, train, **(stop or {})).unlearn)


def _cached(done, key, args, method, unit_list, train, lr, knob,
            on_trial=None, *, need_metrics: bool = False,
            stop: Optional[dict] = None) -> dict:
  """The stored trial of ``key`` if still valid, else a fresh run (then
  ``on_trial(done)`` is called, so progress can be saved trial by trial).

  ``need_metrics``: a stored trial without per-unit metrics (tuned before
  the working-range rule) is run again to get them. ``stop``: the
  stopping rule, ``{"stop_when": RULE, "stop_every": K}``, part of the
  resolved config a stored trial must match.
  """
  current = _unlearn(args, method, unit_list, train, lr, knob, stop)
  trial = done.get(key)
  if (trial is None or trial.get("unlearn") != current
      or (need_metrics and "metrics" not in trial)):
    trial = _trial(args, method, unit_list, train, lr, knob, stop=stop)
    trial["unlearn"] = current
    done[key] = trial
    if on_trial is not None:
      on_trial(done)
  return trial


_METRICS = ("ua", "ra", "ta", "mia_efficacy")


def _trial(args, method, unit_list, train, lr, knob, *, stop=None) -> dict:
  """One setting on every tuning unit; diverged settings and settings out
  of the working range (:func:`experiments.protocol.in_working_range`) are
  rejected (score +inf). Per unit it keeps the metrics, the unlearning
  time ``rte_s`` and the step a stopping rule ended the run at
  (``stop_step``, None when it ran its whole budget)."""
  gaps, metrics, diverged, epochs = [], [], False, None
  rule = (stop or {}).get("stop_when")
  for seed, fc, split in unit_list:
    cfg = trial_config(args, method, seed, fc, split, lr, knob, train,
                       **(stop or {}))
    epochs = cfg.unlearn.epochs
    try:
      recs = pipeline.run(cfg, args.workdir, resume=True,
                          log=lambda *_: None)
    except FloatingPointError as e:
      logging.warning("%s lr=%g %s diverged: %s", method, lr, knob, e)
      diverged = True
      break
    rec = next(r for r in recs if r["method"] == method)
    ref = next(r for r in recs if r["method"] == "retrain")
    gaps.append(rec["avg_gap"])
    metrics.append({k: rec[k] for k in _METRICS} | {
        "retrain_ra": ref["ra"], "rte_s": rec["rte_s"],
        "stop_step": rec.get("stop_step")})
  out = not diverged and not all(
      protocol.in_working_range(m["ra"], m["retrain_ra"]) for m in metrics)
  score = math.inf if diverged or out else sum(gaps) / len(gaps)
  print(f"{method:13s} lr={lr:<9g} {knob} epochs={epochs} "
        f"{'stop ' + rule + ' ' if rule else ''}"
        f"gap={sum(gaps) / max(1, len(gaps)):.2f}"
        f"{' DIVERGED' if diverged else ''}"
        f"{' OUT OF RANGE' if out else ''}", flush=True)
  return {"lr": lr, "hparams": knob, "epochs": epochs, "gaps": gaps,
          "metrics": metrics, "score": score, "diverged": diverged,
          "out_of_range": out} | ({"rule": rule} if rule else {})


def _best(trials):
  finite = [t for t in trials if math.isfinite(t["score"])]
  return min(finite, key=lambda t: t["score"]) if finite else None


def _checked_best(trials, run_again) -> Optional[dict]:
  """The best trial, its working range checked.

  Trials stored before the working-range rule have no per-unit metrics;
  the best of them is run again (``run_again(trial)`` returns the fresh
  trial, which replaces it in ``trials``) until the best trial has been
  checked. The rule only rejects settings, so checking the candidates for
  the pick in score order finds the pick a full rerun would; the bracketing
  and refinement that follow see the rejected ones at +inf.
  """
  while True:
    best = _best(trials)
    if best is None or "metrics" in best:
      return best
    trials[trials.index(best)] = run_again(best)


def tune_method(args, method: str, unit_list, train, done: dict, *,
                max_extensions: int = protocol.MAX_EXTENSIONS,
                refine: bool = True, on_trial=None) -> dict:
  """Runs the method's grid, extended until it brackets the pick
  (:func:`experiments.protocol.extension`), then refined around it
  (:func:`experiments.protocol.refinement`); returns its ``tuned.json``
  entry. ``done``: finished trials by key (reused); ``on_trial(done)``
  runs after each new trial."""
  if method in protocol.LR_FREE:  # One (unread) learning rate: no search.
    max_extensions, refine = 0, False
  space = protocol.grid(method)
  base_lrs = sorted({lr for lr, _ in space})
  knobs = list({json.dumps(kv, sort_keys=True): kv
                for _, kv in space}.values())
  trials, extended = [], []

  def run_again(t):
    key = _key(t["lr"], t["hparams"])
    return _cached(done, key, args, method, unit_list, train, t["lr"],
                   t["hparams"], on_trial, need_metrics=True)

  while True:
    for lr, knob in space:
      key = _key(lr, knob)
      trials.append(_cached(done, key, args, method, unit_list, train, lr,
                            knob, on_trial))
    _checked_best(trials, run_again)
    lr = protocol.extension(trials, base_lrs,
                            max_extensions=max_extensions)
    if lr is None:
      break
    extended.append(lr)
    space = [(lr, kv) for kv in knobs]
  best = _checked_best(trials, run_again)
  refined = protocol.refinement(trials, best) if best and refine else []
  for lr in refined:
    key = _key(lr, best["hparams"])
    trials.append(_cached(done, key, args, method, unit_list, train, lr,
                          best["hparams"], on_trial))
  best = _checked_best(trials, run_again)
  spec = {"lr": base_lrs, "extended_lr": extended, "refined_lr": refined,
          "knob": protocol.KNOBS.get(method),
          "fixed": dict(protocol.FIXED.get(method, ()))}
  return {"space": spec, "trials": trials, "pick": best}


def rules_arg(text: str) -> list:
  """The candidate rules of ``--stop-when`` (comma-separated), canonical.

  Raises:
    ValueError: an empty list or a malformed rule, in one line.
  """
  rules = []
  for part in text.split(","):
    rule = stopping.parse(part)
    if rule is None:
      raise ValueError(f"an empty or 'none' rule in {text!r} (the pick "
                       "without a rule is always compared)")
    canon = f"{rule.metric}>={rule.threshold:g}"
    if canon not in rules:
      rules.append(canon)
  return rules


def tune_stop(args, method: str, unit_list, train, done: dict, pick, rules,
              *, every: int = 10, on_trial=None) -> dict:
  """Tunes the method's stopping rule; returns its entry's ``"stop"``.

  ``pick`` (the method's tuned setting, found without a rule) is rerun on
  the tuning units under each rule of ``rules``, checked every ``every``
  steps, as trials scored like any other (same criterion, divergence and
  working-range rules; stored in ``done`` under the setting and the rule,
  so a rerun reuses them). :func:`experiments.protocol.stop_pick` keeps
  the rule that stops earliest (fewest mean unlearning steps) among those
  whose score is at most ``protocol.STOP_TOL`` worse than ``pick``'s and
  that stop before the whole budget; ``"pick"`` is that rule or None.
  Every candidate keeps its score, gaps, metrics, ``mean_steps`` and mean
  unlearning time ``rte_s``; ``"base"`` is the same for ``pick``.
  """
  out = {"every": every, "tol": protocol.STOP_TOL, "rules": list(rules),
         "candidates": [], "base": None, "pick": None}
  if pick is None:
    return out
  lr, knob = pick["lr"], pick["hparams"]
  budget = [unlearn_lib.num_steps(
      len(split.forget_idx), len(split.retain_idx),
      trial_config(args, method, seed, fc, split, lr, knob, train).unlearn)
            for seed, fc, split in unit_list]

  def summary(t):
    m = t.get("metrics") or []
    steps = [b if u.get("stop_step") is None else u["stop_step"]
             for b, u in zip(budget, m)] or budget
    rte = [u["rte_s"] for u in m if "rte_s" in u]
    return {"mean_steps": sum(steps) / len(steps),
            "rte_s": sum(rte) / len(rte) if m and len(rte) == len(m)
            else None}

  out["base"] = {"score": pick["score"], "gaps": pick["gaps"]} | summary(
      pick)
  for rule in rules:
    t = _cached(done, _key(lr, knob, rule), args, method, unit_list, train,
                lr, knob, on_trial, need_metrics=True,
                stop={"stop_when": rule, "stop_every": every})
    out["candidates"].append(dict(t, rule=rule) | summary(t))
  best = protocol.stop_pick(out["base"], out["candidates"])
  out["pick"] = best["rule"] if best else None
  return out


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m experiments.tune",
                              description=__doc__.split("\n")[0])
  p.add_argument("--dataset", choices=data_lib.DATASETS,
                 help="required unless --merge")
  p.add_argument("--scenario", choices=data_lib.SCENARIOS,
                 help="required unless --merge")
  p.add_argument("--forget-ratio", type=float, default=0.1,
                 help="random scenario: fraction forgotten (default 0.1)")
  p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                 help="comma-separated method names")
  p.add_argument("--seeds", default=",".join(
      map(str, protocol.TUNING_SEEDS)), help="tuning seeds (never a "
                 "table seed)")
  p.add_argument("--cap", type=float, default=protocol.CAP,
                 help="unlearning cost cap as a fraction of Retrain's")
  p.add_argument("--model", default="cnn")
  p.add_argument("--bits", default="w4a8")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--max-examples", type=int, default=None)
  p.add_argument("--train-epochs", type=int, default=None,
                 help="Original/Retrain epochs (default: the dataset's)")
  p.add_argument("--workdir", default=None)
  p.add_argument("--stop-when", default=None, metavar="RULES",
                 help="candidate stopping rules, comma-separated (e.g. "
                 "'ua>=90,ua>=95,entropy>=0.9'): each method's pick is "
                 "rerun under each and the earliest-stopping one within "
                 "protocol.STOP_TOL of its score kept; default: the rules "
                 "of an earlier run in --out, else none (no rule)")
  p.add_argument("--stop-every", type=int, default=None, metavar="STEPS",
                 help="steps between checks of a rule (default: an earlier"
                 " run's, else 10)")
  p.add_argument("--out", default=str(TUNED_JSON))
  p.add_argument("--merge", nargs="+", default=None, metavar="FILE",
                 help="merge these tuning files (e.g. scenarios tuned in "
                 "parallel) into --out, [dataset][scenario] entries "
                 "replacing, and exit")
  p.add_argument("--report", action="store_true",
                 help="print the tuning table of --out and exit")
  return p


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if not args.merge and (args.dataset is None or args.scenario is None):
    parser.error("--dataset and --scenario are required")
  if args.merge:
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.exists() else {}
    for f in args.merge:
      try:
        part = json.loads(Path(f).read_text())
      except (OSError, ValueError) as e:
        print(f"error: cannot read tuning file {f}: {e}", file=sys.stderr)
        return 2
      for dataset, scenarios in part.items():
        table.setdefault(dataset, {}).update(scenarios)
    out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return 0
  if args.report:
    entry = json.loads(Path(args.out).read_text())[args.dataset][
        args.scenario]
    print(tune_report.markdown(entry,
                               title=f"{args.dataset} {args.scenario}"))
    return 0
  seeds = tuple(int(s) for s in args.seeds.split(","))
  clash = set(seeds) & set(protocol.TABLE_SEEDS)
  if clash:
    print(f"error: tuning seeds {sorted(clash)} are table seeds",
          file=sys.stderr)
    return 2
  try:
    rules = None if args.stop_when is None else rules_arg(args.stop_when)
  except ValueError as e:
    print(f"error: --stop-when: {e}", file=sys.stderr)
    return 2
  if common.bad_stop_every(args.stop_every):
    return 2
  names = tuple(m for m in args.methods.split(",") if m)
  for m in names:
    if m not in protocol.REFERENCE_LR and m not in protocol.LR_FREE:
      print(f"error: no search space for method {m!r}; valid: "
            f"{', '.join(tuple(protocol.REFERENCE_LR) + protocol.LR_FREE)}",
            file=sys.stderr)
      return 2
  if args.data_dir is None and args.dataset == "mnist_idx":
    args.data_dir = str(common.MNIST_T10K)
  args.workdir = args.workdir or f"runs/tune-{args.dataset}-{args.scenario}"
  ds = data_lib.load_dataset(args.dataset, data_dir=args.data_dir,
                             max_examples=args.max_examples)
  args.num_classes = ds.num_classes
  train = config_lib.default_train(args.dataset)
  if args.train_epochs:
    train = dataclasses.replace(train, epochs=args.train_epochs)
  unit_list = units(ds, args.scenario, seeds, args.forget_ratio)
  out = Path(args.out)
  table = json.loads(out.read_text()) if out.exists() else {}
  entry = table.setdefault(args.dataset, {}).setdefault(args.scenario, {})
  def save():
    out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")

  command = "python -m experiments.tune " + " ".join(
      argv if argv is not None else sys.argv[1:])
  for m in names:
    # Finished trials of a finished method, or of one interrupted mid-grid
    # (``partial``, saved after every trial so a tuning spans sessions).
    prev = entry.get("methods", {}).get(m, {})
    prev_stop = prev.get("stop") or {}
    stored = (prev.get("trials", []) + prev_stop.get("candidates", [])
              + entry.get("partial", {}).get(m, []))
    done = {_key(t["lr"], t["hparams"], t.get("rule")): t for t in stored}

    def on_trial(d, m=m):
      entry.setdefault("partial", {})[m] = list(d.values())
      save()

    res = tune_method(args, m, unit_list, train, done, on_trial=on_trial)
    # Without --stop-when, the rules tuned before are kept (rerun only if
    # the pick moved).
    m_rules = rules if rules is not None else prev_stop.get("rules")
    if m_rules:
      res["stop"] = tune_stop(
          args, m, unit_list, train, done, res["pick"], m_rules,
          every=args.stop_every or prev_stop.get("every", 10),
          on_trial=on_trial)
    # Per method too: methods added to an entry later (e.g. the OEU
    # variants) keep their own command and date.
    res["command"] = command
    res["date"] = datetime.date.today().isoformat()
    entry.setdefault("methods", {})[m] = res
    entry.get("partial", {}).pop(m, None)
    if not entry.get("partial"):
      entry.pop("partial", None)
    entry.update({
        "seeds": list(seeds), "cap": args.cap, "model": args.model,
        "bits": args.bits, "train": dataclasses.asdict(train),
        "forget_ratio": (args.forget_ratio if args.scenario != "class"
                         else None),
        "max_examples": args.max_examples,
        "command": command, "date": datetime.date.today().isoformat()})
    save()
  return 0


if __name__ == "__main__":
  logging.basicConfig(level=logging.WARNING)
  sys.exit(main())
