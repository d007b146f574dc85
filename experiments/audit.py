"""The per-example forgetting audit with the tuned settings of ``tuned.json``.

``python -m oeu_jax audit`` runs every method with the library defaults;
this runs it with each method's pick from ``experiments/tuned.json``
(learning rate, knob, capped epochs, schedule: as
:func:`experiments.table.method_config` builds it), the Original and Retrain
with the tuned training recipe. The records say which (``settings``).

Usage::

    python -m experiments.audit --dataset digits --scenario class \\
        --forget-class 3 --methods oeu,rl,salun,scrub,qmul --models 8 \\
        --workdir runs/audit-digits-class3

The result it produced here: ``results/audit.md``.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from experiments import common
from experiments import table
from experiments import tune
from oeu_jax import data as data_lib
from oeu_jax.runner import audit as audit_lib
from oeu_jax.runner import audit_report
from oeu_jax.runner import config as config_lib


def configs(entry: dict, *, dataset: str, scenario: str, forget_class,
            forget_ratio, methods, data_dir) -> tuple:
  """The audit's base config and each method's tuned config."""
  train = dataclasses.replace(
      config_lib.default_train(dataset),
      **{k: v for k, v in entry["train"].items()
         if k in ("epochs", "batch_size", "lr")})
  base = config_lib.RunConfig(
      dataset=dataset, data_dir=data_dir, model=entry["model"],
      bits=entry["bits"], quant_backend=common.QUANT_BACKEND,
      scenario=scenario, forget_class=forget_class,
      forget_ratio=forget_ratio, methods=tuple(methods), train=train,
      max_examples=entry.get("max_examples"))
  ds = data_lib.load_dataset(dataset, data_dir=data_dir,
                             max_examples=entry.get("max_examples"))
  split = data_lib.make_split(ds, scenario, seed=audit_lib.ORIGINAL_SEED,
                              forget_class=forget_class,
                              forget_ratio=forget_ratio)
  recap = (scenario == "random" and entry.get("forget_ratio") is not None
           and abs(forget_ratio - entry["forget_ratio"]) > 1e-12)
  tuned = {}
  for m in methods:
    if m == "retrain":
      continue
    if m not in entry["methods"]:
      raise ValueError(f"{m!r} has no tuned setting; tuned: "
                       f"{', '.join(entry['methods'])}")
    tuned[m] = table.method_config(
        entry, m, dataset=dataset, scenario=scenario,
        forget_class=forget_class, forget_ratio=forget_ratio,
        seeds=(audit_lib.ORIGINAL_SEED,), data_dir=data_dir,
        model=entry["model"], bits=entry["bits"], train=train,
        max_examples=entry.get("max_examples"),
        num_forget=len(split.forget_idx), num_retain=len(split.retain_idx),
        recap=recap)
  return base, tuned


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m experiments.audit")
  p.add_argument("--dataset", required=True, choices=data_lib.DATASETS)
  p.add_argument("--scenario", required=True, choices=data_lib.SCENARIOS)
  p.add_argument("--forget-class", type=int, default=None)
  p.add_argument("--forget-ratio", type=float, default=None)
  p.add_argument("--methods", default="oeu,rl,salun,scrub,qmul")
  p.add_argument("--models", type=int, default=8)
  p.add_argument("--chunk", type=int, default=8)
  p.add_argument("--tuned", default=str(tune.TUNED_JSON))
  p.add_argument("--data-dir", default=None)
  p.add_argument("--workdir", required=True)
  p.add_argument("--resume", action="store_true")
  args = p.parse_args(argv)
  if args.scenario == "class" and args.forget_class is None:
    print("error: --scenario class needs --forget-class", file=sys.stderr)
    return 2
  ratio = (None if args.scenario == "class"
           else args.forget_ratio if args.forget_ratio is not None else 0.1)
  if args.data_dir is None and args.dataset == "mnist_idx":
    args.data_dir = str(common.MNIST_T10K)
  try:
    entry = json.loads(Path(args.tuned).read_text())[
        args.dataset][args.scenario]
  except KeyError:
    print(f"error: {args.tuned} has no tuning for {args.dataset} "
          f"{args.scenario}", file=sys.stderr)
    return 2
  methods = [m for m in args.methods.split(",") if m]
  try:
    base, tuned = configs(entry, dataset=args.dataset,
                          scenario=args.scenario,
                          forget_class=args.forget_class,
                          forget_ratio=ratio, methods=methods,
                          data_dir=args.data_dir)
    t0 = time.perf_counter()
    records = audit_lib.run_audit(
        base, args.workdir, n_models=args.models, chunk=args.chunk,
        configs=tuned, resume=args.resume,
        settings=f"tuned ({Path(args.tuned).name} {args.dataset}/"
        f"{args.scenario}, {entry.get('date', '?')})",
        log=lambda s: print(s, file=sys.stderr, flush=True))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  wall = time.perf_counter() - t0
  scen = (f"class {args.forget_class}" if args.scenario == "class"
          else f"random {ratio:g}")
  out = audit_report.write_audit(
      records, args.workdir, title=f"Audit: {args.dataset} / "
      f"{entry['model']} / {entry['bits']} / {scen}, N = {args.models}, "
      "tuned settings")
  print(out["markdown"])
  print(f"audit wall time {wall:.0f} s; wrote {out['json']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
