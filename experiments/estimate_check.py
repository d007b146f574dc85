"""How well the Retrain-free estimated gap tracks the true gap.

For every unit (seed, forgotten class or ratio) of the protocol tables in
``results/protocol``, rebuilds that seed's Original (same recipe and seed as
the table: training is deterministic, so it is the table's Original),
computes the Retrain-free targets of :mod:`oeu_jax.evaluation.estimate`
from it, and scores every stored record against them. Reports per table,
over the methods' mean gaps (Original and Retrain left out): Spearman's rho
between the estimated and the true mean gap, the mean absolute error of the
estimate per record, and the same for the crude targets (class-wise UA =
MIA = 100; random, UA = 100 - the Original's TA and MIA left out), then
pooled over the tables.

  python -m experiments.estimate_check --workdir /root/oeu-runs/estimate \\
      --out results/estimate_check.json

Originals are cached under ``--workdir`` (one per dataset and seed).
"""

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats as sp_stats

from experiments import common
from oeu_jax import data as data_lib
from oeu_jax.engine import train as train_lib
from oeu_jax.evaluation import estimate
from oeu_jax.evaluation import metrics
from oeu_jax.nn import inference
from oeu_jax.nn import models
from oeu_jax.runner import config as config_lib

PROTOCOL = common.REPO_ROOT / "results" / "protocol"
TUNING = common.REPO_ROOT / "experiments" / "tuning"
# Table file -> the tuning entry its recipe came from.
TABLES = {
    "digits-class": "digits-class",
    "digits-random": "digits-random",
    "digits-random1": "digits-random",
    "digits-random50": "digits-random",
    "mnist_idx-class": "mnist_idx-class",
    "mnist_idx-random": "mnist_idx-random",
    "digits-mislabel": "digits-mislabel",
}
SKIP = ("original", "retrain")


def _entry(name: str) -> dict:
  table = json.loads((TUNING / f"{name}.json").read_text())
  (dataset, scenarios), = table.items()
  (_, entry), = scenarios.items()
  return dict(entry, dataset=dataset)


def _original_logits(entry: dict, seed: int, workdir: Path, cache: dict):
  key = (entry["dataset"], entry.get("max_examples"), seed,
         json.dumps(entry["train"], sort_keys=True), entry.get("scenario_y"))
  if key in cache:
    return cache[key]
  data_dir = (str(common.MNIST_T10K) if entry["dataset"] == "mnist_idx"
              else None)
  ds = data_lib.load_dataset(entry["dataset"], data_dir=data_dir,
                             max_examples=entry.get("max_examples"))
  train = dataclasses.replace(
      config_lib.default_train(entry["dataset"]),
      **{k: v for k, v in entry["train"].items()
         if k in ("epochs", "batch_size", "lr")})
  model = models.build_model(entry.get("model", "cnn"),
                             num_classes=ds.num_classes,
                             bits=config_lib.quant_spec(config_lib.RunConfig(
                                 bits=entry.get("bits", "w4a8"),
                                 quant_backend=common.QUANT_BACKEND)))
  y = ds.train_y if entry.get("scenario_y") is None else entry["scenario_y"]
  tag = f"{entry['dataset']}-{entry.get('max_examples')}-s{seed}"
  if entry.get("label_tag"):
    tag += "-" + entry["label_tag"]
  res = train_lib.fit(model, ds.train_x, np.asarray(y), config=train,
                      seed=seed, checkpoint_dir=str(workdir / tag),
                      resume=True)
  st = res.state
  out = (ds, inference.predict(model, st.params, st.batch_stats,
                               ds.train_x),
         inference.predict(model, st.params, st.batch_stats, ds.test_x))
  cache[key] = out
  return out


def crude_targets(scenario: str, original: dict) -> tuple[dict, tuple]:
  """The issue's crude targets and the keys they cover."""
  if scenario == "class":
    return (dict(ua=100.0, mia_efficacy=100.0, ra=original["ra"],
                 ta=original["ta"]), metrics.GAP_KEYS)
  return (dict(ua=100.0 - original["ta"], ra=original["ra"],
               ta=original["ta"]), ("ua", "ra", "ta"))


def check_table(name: str, workdir: Path, cache: dict) -> dict:
  """Estimated against true gaps on one protocol table."""
  records = json.loads((PROTOCOL / f"{name}.json").read_text())
  entry = _entry(TABLES[name])
  units = {}
  for r in records:
    units.setdefault((r["seed"], r.get("forget_class"),
                      r.get("forget_ratio"), r["config"]), []).append(r)
  rows = []
  for (seed, fc, ratio, _), recs in sorted(
      units.items(), key=lambda kv: (kv[0][0], str(kv[0][1:]))):
    orig = next((r for r in recs if r["method"] == "original"), None)
    if orig is None:
      continue
    scenario = orig["scenario"]
    if scenario == "mislabel":
      ds0 = data_lib.load_dataset(entry["dataset"], max_examples=entry.get(
          "max_examples"))
      split = data_lib.make_split(ds0, scenario, seed=seed,
                                  forget_ratio=ratio)
      ent = dict(entry, scenario_y=split.train_y,
                 label_tag=f"mislabel{ratio:g}")
    else:
      ent = entry
    ds, train_logits, test_logits = _original_logits(ent, seed, workdir,
                                                     cache)
    split = data_lib.make_split(ds, scenario, seed=seed, forget_class=fc,
                                forget_ratio=ratio if fc is None else None)
    y = data_lib.training_labels(ds, split)
    shadow = data_lib.mia_shadow_indices(split, len(ds.test_y))
    target = estimate.targets(
        scenario, ra=orig["ra"], ta=orig["ta"], test_logits=test_logits,
        test_labels=ds.test_y, member_logits=train_logits[shadow],
        member_labels=y[shadow], seed=seed)
    crude, crude_keys = crude_targets(scenario, orig)
    retrain = next(r for r in recs if r["method"] == "retrain")
    for r in recs:
      rows.append(dict(
          method=r["method"], seed=seed, unit=str(fc if fc is not None
                                                  else ratio),
          true=r["avg_gap"], est=estimate.estimated_gap(r, target),
          crude=metrics.avg_gap(r, crude, crude_keys),
          target=target, retrain={k: retrain[k] for k in metrics.GAP_KEYS}))
  return summarize(rows) | {"rows": rows}


def _means(rows, key):
  out = {}
  for r in rows:
    if r["method"] not in SKIP:
      out.setdefault(r["method"], []).append(r[key])
  return {m: float(np.mean(v)) for m, v in out.items()}


def summarize(rows: list) -> dict:
  """Spearman's rho over method means and the per-record MAE."""
  true, est, crude = (_means(rows, k) for k in ("true", "est", "crude"))
  ms = sorted(true)
  kept = [r for r in rows if r["method"] not in SKIP]
  rho = lambda a: float(sp_stats.spearmanr([true[m] for m in ms],  # noqa
                                           [a[m] for m in ms])[0])
  return {"methods": ms, "true_mean": true, "est_mean": est,
          "crude_mean": crude, "rho_est": rho(est), "rho_crude": rho(crude),
          "mae_est": float(np.mean([abs(r["est"] - r["true"])
                                    for r in kept])),
          "mae_crude": float(np.mean([abs(r["crude"] - r["true"])
                                      for r in kept])),
          "units": len({(r["seed"], r["unit"]) for r in rows})}


def pooled(results: dict) -> dict:
  """Spearman's rho over every (table, method) mean pair."""
  t, e, c = [], [], []
  for res in results.values():
    for m in res["methods"]:
      t.append(res["true_mean"][m])
      e.append(res["est_mean"][m])
      c.append(res["crude_mean"][m])
  return {"rho_est": float(sp_stats.spearmanr(t, e)[0]),
          "rho_crude": float(sp_stats.spearmanr(t, c)[0]), "pairs": len(t)}


def markdown(results: dict, pool: dict) -> str:
  lines = ["| table | units | rho (estimate) | rho (crude) | MAE (estimate)"
           " | MAE (crude) |", "|---|---|---|---|---|---|"]
  for name, r in results.items():
    lines.append(f"| {name} | {r['units']} | {r['rho_est']:.3f} | "
                 f"{r['rho_crude']:.3f} | {r['mae_est']:.2f} | "
                 f"{r['mae_crude']:.2f} |")
  lines.append(f"| pooled ({pool['pairs']} method means) | | "
               f"{pool['rho_est']:.3f} | {pool['rho_crude']:.3f} | | |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m experiments.estimate_check")
  p.add_argument("--tables", default=",".join(
      t for t in TABLES if (PROTOCOL / f"{t}.json").exists()))
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  names = args.tables.split(",")
  bad = [n for n in names if n not in TABLES
         or not (PROTOCOL / f"{n}.json").exists()]
  if bad:
    print(f"error: no protocol table {', '.join(bad)}; have "
          f"{', '.join(TABLES)}", file=sys.stderr)
    return 2
  cache, results = {}, {}
  for n in names:
    results[n] = check_table(n, Path(args.workdir).resolve(), cache)
    r = results[n]
    print(f"{n}: rho est {r['rho_est']:.3f} crude {r['rho_crude']:.3f}; "
          f"MAE est {r['mae_est']:.2f} crude {r['mae_crude']:.2f}",
          flush=True)
  pool = pooled(results)
  print(markdown(results, pool))
  if args.out:
    Path(args.out).write_text(json.dumps(
        {"date": datetime.date.today().isoformat(),
         "command": "python -m experiments.estimate_check " + " ".join(
             argv if argv is not None else sys.argv[1:]),
         "pooled": pool,
         "tables": {k: {kk: vv for kk, vv in v.items() if kk != "rows"}
                    for k, v in results.items()}}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
