"""The defaults where nothing was tuned: defaults against pick against Retrain.

On cases no tuning saw (seeds outside the tuning's 100/101 and the tables'
0-4; class-wise, classes other than the tuning's 0/1; random forgetting at
20%, a ratio nobody tuned), each method runs under two settings:

* **defaults**: no tuning flags (``RunConfig`` with ``unlearn=None``): the
  protocol pick or its transfer, capped at ``cost_cap`` x the Original's
  training cost, the open-ended methods stopped by the Retrain-free ``auto``
  rule;
* **pick**: the protocol pick as the tables run it (its epochs under the
  tuning's cap, no stopping rule; :func:`experiments.table.method_config`);

and Retrain is trained for the true gap. Writes the records and a Markdown
table (means over the units; RTE as a fraction of Retrain's wall time).

  python -m experiments.validate_defaults --workdir /root/oeu-runs/validate \\
      --out results/validate_defaults.json
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from experiments import common
from experiments import table as table_lib
from experiments import tune
from oeu_jax import data as data_lib
from oeu_jax.runner import config as config_lib
from oeu_jax.runner import layout as layout_lib
from oeu_jax.runner import pipeline

METHODS = ("oeu", "ft", "ga", "rl", "neggrad_plus", "l1_sparse", "salun",
           "scrub", "qmul", "ssd", "bad_teacher")
MNIST_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / \
    "data" / "mnist"
# The official split is costly on a CPU: OEU, the best baselines of the
# 4,000-image tables and FT.
MNIST_METHODS = ("oeu", "qmul", "salun", "rl", "ft")
# name -> (dataset, data dir, tuning file, scenario, forget classes, ratio,
# seeds, methods): cases no tuning or table used.
CASES = {
    "digits-class": ("digits", None, "digits-class", "class", (2, 7), None,
                     (5, 6), METHODS),
    "digits-random20": ("digits", None, "digits-random", "random", (None,),
                        0.2, (5, 6), METHODS),
    "mnist-class6": ("mnist_idx", MNIST_DIR, "mnist_idx-class", "class",
                     (6,), None, (5,), MNIST_METHODS),
}


def run_case(name, workdir) -> list:
  """Both settings of every method on the units of case ``name``."""
  dataset, data_dir, tuning, scenario, classes, fr, seeds, methods = (
      CASES[name])
  data_dir = None if data_dir is None else str(data_dir)
  entry = json.loads((tune.TUNED_JSON.parent / "tuning" /
                      f"{tuning}.json").read_text())[dataset][scenario]
  ds = data_lib.load_dataset(dataset, data_dir=data_dir)
  # The dataset's own Original recipe (the tuning may have used a smaller
  # one on a subset: the picks transfer, the recipe is the user's).
  train = config_lib.default_train(dataset)
  out = []
  for fc in classes:
    base = config_lib.RunConfig(
        dataset=dataset, data_dir=data_dir, scenario=scenario,
        quant_backend=common.QUANT_BACKEND, forget_class=fc, forget_ratio=fr,
        seeds=seeds, train=train,
        methods=methods, mia_exclude_forget_class=True)
    recs = pipeline.run(base, workdir, resume=True, log=lambda *_: None)
    out += [dict(r, setting="defaults", case=name) for r in recs]
    split = data_lib.make_split(ds, scenario, seed=seeds[0],
                                forget_class=fc, forget_ratio=fr)
    for m in methods:
      if entry["methods"].get(m, {}).get("pick") is None:
        continue
      cfg = table_lib.method_config(
          entry, m, dataset=dataset, scenario=scenario, forget_class=fc,
          forget_ratio=fr, seeds=seeds, data_dir=data_dir, model="cnn",
          bits="w4a8", train=train, max_examples=None,
          num_forget=len(split.forget_idx),
          num_retain=len(split.retain_idx),
          recap=(scenario != "class" and fr != entry["forget_ratio"])
          or train.epochs != entry["train"]["epochs"])
      recs = pipeline.run(cfg, workdir, resume=True, log=lambda *_: None)
      out += [dict(r, setting="pick", case=name) for r in recs
              if r["method"] == m]
    print(f"{name}: unit {fc if fc is not None else fr} done", flush=True)
  return out


def markdown(records) -> str:
  lines = []
  for case in dict.fromkeys(r["case"] for r in records):
    recs = [r for r in records if r["case"] == case]
    rte = {}
    for r in recs:
      if r["method"] == "retrain" and r["setting"] == "defaults":
        rte[(r["seed"], r.get("forget_class"))] = r["rte_s"]
    lines += [f"#### {case}", "",
              "| method | setting | UA | RA | TA | MIA | Avg. gap | "
              "est. gap | RTE / Retrain | cost / Original | stopped |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = []
    for r in recs:
      k = (r["method"], r["setting"])
      if k not in keys and not (r["method"] in ("original", "retrain")
                                and r["setting"] == "pick"):
        keys.append(k)
    for m, s in keys:
      rs = [r for r in recs if (r["method"], r["setting"]) == (m, s)]
      mean = lambda k: float(np.mean([r[k] for r in rs]))  # noqa: E731
      ratio = float(np.mean([r["rte_s"] / rte[(r["seed"],
                                                r.get("forget_class"))]
                             for r in rs]))
      cost = [r["cost_fraction"] for r in rs
              if r.get("cost_fraction") is not None]
      stops = sum(r.get("stop_step") is not None for r in rs)
      lines.append(
          f"| {m} | {s if m not in ('original', 'retrain') else '-'} | "
          f"{mean('ua'):.2f} | {mean('ra'):.2f} | {mean('ta'):.2f} | "
          f"{mean('mia_efficacy'):.2f} | {mean('avg_gap'):.2f} | "
          f"{mean('est_avg_gap'):.2f} | {ratio:.3f} | "
          + (f"{np.mean(cost):.3f}" if cost else "-") + " | "
          + (f"{stops}/{len(rs)}" if m not in ("original", "retrain")
             else "-") + " |")
    lines.append("")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m experiments.validate_defaults")
  p.add_argument("--cases", default="digits-class,digits-random20",
                 help=f"comma-separated, from {', '.join(CASES)}")
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)
  names = args.cases.split(",")
  bad = [n for n in names if n not in CASES]
  if bad:
    print(f"error: unknown case {', '.join(bad)}; valid: "
          f"{', '.join(CASES)}", file=sys.stderr)
    return 2
  records = []
  for name in names:
    records += run_case(name, Path(args.workdir))
    layout_lib.write_results(records, args.out)
  md = markdown(records)
  Path(args.out).with_suffix(".md").write_text(
      f"Command: `python -m experiments.validate_defaults "
      f"{' '.join(argv if argv is not None else sys.argv[1:])}`, "
      f"{datetime.date.today().isoformat()}\n\n{md}\n")
  print(md)
  return 0


if __name__ == "__main__":
  sys.exit(main())
