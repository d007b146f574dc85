"""Runs one experiment config and writes its results, tables and plots.

Usage::

    python -m experiments.run NAME [--quick] [--workdir DIR]
                              [--variant V] [--no-progress]

``NAME`` is a module of this package (see :data:`experiments.EXPERIMENTS`).
For each variant of the experiment it runs :func:`oeu_jax.runner.pipeline.run`
(checkpoints under ``DIR/checkpoints``, shared by the variants so the
Original model is trained once; a rerun resumes), then writes

* ``DIR/results.json``: every record (method × seed × variant);
* ``DIR/VARIANT/table.md``, ``entropy_hist.png``, ``pred_hist.png``
  (:func:`oeu_jax.runner.report.write_report`);
* ``DIR/summary.md`` when there are several variants: Avg. gap per method
  and variant.

The default ``DIR`` is ``runs/NAME`` (``runs/NAME-quick`` with ``--quick``).
Bad input prints one line and exits with status 2.
"""

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Optional
from typing import Sequence

from experiments import EXPERIMENTS
from oeu_jax.runner import config as config_lib
from oeu_jax.runner import layout as layout_lib
from oeu_jax.runner import pipeline
from oeu_jax.runner import report


class _Parser(argparse.ArgumentParser):

  def error(self, message):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
  p = _Parser(prog="python -m experiments.run",
              description="run an experiment config; write results.json, "
              "Markdown tables and PNG plots")
  p.add_argument("name", help=f"one of: {', '.join(EXPERIMENTS)}")
  p.add_argument("--quick", action="store_true",
                 help="the config's CPU-minutes variant")
  p.add_argument("--workdir", default=None,
                 help="default runs/NAME (runs/NAME-quick with --quick)")
  p.add_argument("--variant", action="append", default=None,
                 help="run only this variant (repeatable)")
  p.add_argument("--no-progress", action="store_true",
                 help="hide progress bars")
  p.add_argument("--resume", action="store_true",
                 help="continue interrupted runs from their checkpoints")
  return p


def load_configs(name: str, quick: bool) -> dict:
  """The variants of experiment ``name``; ValueError if unknown."""
  if name not in EXPERIMENTS:
    raise ValueError(f"unknown experiment {name!r}; valid: "
                     f"{', '.join(EXPERIMENTS)}")
  module = importlib.import_module(f"experiments.{name}")
  return module.configs(quick=quick)


def run_experiment(name: str, workdir: Path, *, quick: bool = False,
                   variants: Optional[Sequence[str]] = None,
                   progress: bool = True, resume: bool = False) -> list:
  """Runs the variants of ``name``; returns all records (with ``variant``)."""
  configs = load_configs(name, quick)
  if variants:
    unknown = [v for v in variants if v not in configs]
    if unknown:
      raise ValueError(f"unknown variants {unknown} of {name!r}; valid: "
                       f"{', '.join(configs)}")
    configs = {v: configs[v] for v in variants}
  for cfg in configs.values():
    config_lib.resolve(cfg)  # Fail fast, before any training.
  workdir = Path(workdir).resolve()
  records = []
  items = list(configs.items())
  it = items
  if progress and len(items) > 1:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    it = tqdm(items, desc=name)
  for variant, cfg in it:
    print(f"[{name}/{variant}] {cfg.dataset} {cfg.model} {cfg.bits} "
          f"{cfg.scenario}: {', '.join(cfg.methods)}; seeds {cfg.seeds}",
          file=sys.stderr, flush=True)
    recs = pipeline.run(cfg, workdir, progress=progress, resume=resume,
                        log=lambda s: print(s, file=sys.stderr, flush=True))
    for r in recs:
      r["experiment"] = name
      r["variant"] = variant
    records.extend(recs)
    title = f"{name} / {variant}" + (" (quick)" if quick else "")
    paths = report.write_report(recs, workdir / variant, title=title)
    print(f"\n## {title}\n\n{report.salun_table(recs)}\n", flush=True)
    print(f"wrote {paths['table']}", file=sys.stderr)
    # Results so far survive an interrupted later variant.
    layout_lib.write_results(records, workdir / layout_lib.RESULTS_JSON)
  if len(configs) > 1:
    summary = workdir / "summary.md"
    summary.write_text(f"# {name}: Avg. gap to Retrain\n\n"
                       + report.variant_table(records) + "\n")
    print(f"\n{report.variant_table(records)}\n", flush=True)
  print(f"wrote {workdir / layout_lib.RESULTS_JSON}", file=sys.stderr)
  return records


def main(argv: Optional[Sequence[str]] = None) -> int:
  logging.basicConfig(level=os.environ.get("OEU_LOGLEVEL", "WARNING"))
  args = build_parser().parse_args(argv)
  workdir = Path(args.workdir or (f"runs/{args.name}"
                                  + ("-quick" if args.quick else "")))
  try:
    if workdir.exists() and not workdir.is_dir():
      raise ValueError(f"--workdir {workdir} exists and is not a directory")
    run_experiment(args.name, workdir, quick=args.quick,
                   variants=args.variant, progress=not args.no_progress,
                   resume=args.resume)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted; rerun the same command with --resume to continue",
          file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
