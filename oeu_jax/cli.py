"""Command line: ``python -m oeu_jax {demo,run} ...``.

``demo`` needs no network: scikit-learn's digits, the small CNN at W4A8,
class-wise and 10% random forgetting, Original vs Retrain vs OEU. ``run`` is
the general experiment. Both print a table and write ``DIR/results.json``.
Bad input gives one line naming the problem and exit status 2.
"""

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from oeu_jax import data as data_lib
from oeu_jax import methods as methods_lib
from oeu_jax import models, pipeline, quantization

DEMO_FORGET_CLASS = 3


class CliError(Exception):
  """A user error: printed as one line, exit status 2."""


def _int_list(text: str) -> tuple:
  try:
    values = tuple(int(v) for v in text.split(",") if v.strip() != "")
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected comma-separated integers, got {text!r}") from None
  if not values:
    raise argparse.ArgumentTypeError("expected at least one integer")
  return values


def _name_list(text: str) -> tuple:
  values = tuple(v.strip() for v in text.split(",") if v.strip())
  if not values:
    raise argparse.ArgumentTypeError("expected at least one name")
  return values


class _Parser(argparse.ArgumentParser):

  def error(self, message):  # One line, no usage dump, exit 2.
    raise CliError(message)


def build_parser() -> argparse.ArgumentParser:
  """The argument parser of ``python -m oeu_jax``."""
  p = _Parser(prog="python -m oeu_jax",
              description="Orthogonal Entropy Unlearning for quantized models")
  sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

  def common(sp):
    sp.add_argument("--workdir", default="runs/demo",
                    help="where checkpoints, results.json and tables go")
    sp.add_argument("--no-progress", action="store_true",
                    help="hide progress bars")
    sp.add_argument("--quick", action="store_true",
                    help="tiny budget (CI smoke runs)")

  demo = sub.add_parser("demo", help="offline demo on scikit-learn digits")
  common(demo)
  demo.add_argument("--seed", type=int, default=0)

  r = sub.add_parser("run", help="a general experiment")
  common(r)
  r.add_argument("--dataset", required=True, choices=data_lib.DATASETS)
  r.add_argument("--data-dir", default=None)
  r.add_argument("--model", default="cnn", choices=models.MODELS)
  r.add_argument("--bits", default="w4a8", choices=quantization.BITS)
  r.add_argument("--quantize-ends", action="store_true",
                 help="also quantize the first conv and the classifier")
  r.add_argument("--scenario", default="random", choices=data_lib.SCENARIOS)
  r.add_argument("--forget-ratio", type=float, default=None)
  r.add_argument("--forget-class", type=int, default=None)
  r.add_argument("--methods", type=_name_list, default=("oeu",))
  r.add_argument("--seeds", type=_int_list, default=(0,))
  r.add_argument("--epochs", type=int, default=None,
                 help="Original/Retrain training epochs")
  r.add_argument("--batch-size", type=int, default=None,
                 help="Original/Retrain batch size")
  r.add_argument("--unlearn-epochs", type=int, default=None)
  r.add_argument("--unlearn-batch-size", type=int, default=None)
  r.add_argument("--unlearn-lr", type=float, default=None)
  r.add_argument("--optimizer", default="sgd",
                 choices=methods_lib.OPTIMIZERS)
  r.add_argument("--max-examples", type=int, default=None,
                 help="cap train and test sizes")
  return p


def _quick(cfg: pipeline.RunConfig) -> pipeline.RunConfig:
  t = cfg.train or pipeline.default_train(cfg.dataset)
  u = cfg.unlearn or pipeline.default_unlearn(cfg.dataset)
  return dataclasses.replace(
      cfg, train=t._replace(epochs=min(t.epochs, 3)),
      unlearn=dataclasses.replace(u, epochs=min(u.epochs, 2)))


def demo_configs(seed: int) -> list:
  """The demo's two experiments: class-wise and 10% random forgetting."""
  base = pipeline.RunConfig(dataset="digits", model="cnn", bits="w4a8",
                            methods=("oeu",), seeds=(seed,))
  return [dataclasses.replace(base, scenario="class", forget_ratio=None,
                              forget_class=DEMO_FORGET_CLASS),
          dataclasses.replace(base, scenario="random", forget_ratio=0.1)]


def run_config_from_args(args) -> pipeline.RunConfig:
  """Builds (and validates) a RunConfig from ``run`` arguments."""
  if args.scenario == "random":
    if args.forget_class is not None:
      raise CliError("--forget-class is for --scenario class; use "
                     "--forget-ratio with --scenario random")
    ratio = 0.1 if args.forget_ratio is None else args.forget_ratio
    fclass = None
  else:
    if args.forget_ratio is not None:
      raise CliError("--forget-ratio is for --scenario random; use "
                     "--forget-class with --scenario class")
    if args.forget_class is None:
      raise CliError("--scenario class needs --forget-class C")
    ratio, fclass = None, args.forget_class
  train = pipeline.default_train(args.dataset)
  if args.epochs is not None:
    train = train._replace(epochs=args.epochs)
  if args.batch_size is not None:
    train = train._replace(batch_size=args.batch_size)
  unl = pipeline.default_unlearn(args.dataset)
  for field, value in (("epochs", args.unlearn_epochs),
                       ("batch_size", args.unlearn_batch_size),
                       ("lr", args.unlearn_lr)):
    if value is not None:
      unl = dataclasses.replace(unl, **{field: value})
  if args.max_examples is not None and args.max_examples <= 0:
    raise CliError(f"--max-examples must be > 0, got {args.max_examples}")
  cfg = pipeline.RunConfig(
      dataset=args.dataset, data_dir=args.data_dir, model=args.model,
      bits=args.bits, float_ends=not args.quantize_ends,
      scenario=args.scenario, forget_ratio=ratio, forget_class=fclass,
      methods=args.methods, seeds=args.seeds, train=train, unlearn=unl,
      optimizer=methods_lib.OptimizerConfig(name=args.optimizer),
      max_examples=args.max_examples)
  return cfg


def execute(configs: Sequence[pipeline.RunConfig], workdir: Path, *,
            progress: bool) -> list:
  """Runs experiments, prints their tables, writes ``results.json``."""
  records = []
  for cfg in configs:
    pipeline.resolve(cfg)  # Fail fast, before any training.
  for cfg in configs:
    recs = pipeline.run(cfg, workdir, progress=progress,
                        log=lambda s: print(s, file=sys.stderr, flush=True))
    title = (f"{cfg.dataset} / {cfg.model} / {cfg.bits} / {cfg.scenario} "
             + (f"class {cfg.forget_class}" if cfg.scenario == "class"
                else f"{cfg.forget_ratio:g}"))
    print(f"\n## {title}\n\n{pipeline.format_table(recs)}\n", flush=True)
    records.extend(recs)
  pipeline.write_results(records, workdir / "results.json")
  print(f"wrote {workdir / 'results.json'}")
  return records


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point; returns the exit status."""
  logging.basicConfig(level=os.environ.get("OEU_LOGLEVEL", "WARNING"))
  try:
    args = build_parser().parse_args(argv)
    workdir = Path(args.workdir).resolve()
    if workdir.exists() and not workdir.is_dir():
      raise CliError(f"--workdir {workdir} exists and is not a directory")
    if args.command == "demo":
      if args.seed < 0:
        raise CliError(f"--seed must be >= 0, got {args.seed}")
      configs = demo_configs(args.seed)
    else:
      configs = [run_config_from_args(args)]
    if args.quick:
      configs = [_quick(c) for c in configs]
    execute(configs, workdir, progress=not args.no_progress)
  except (CliError, ValueError, FileNotFoundError, NotADirectoryError,
          FloatingPointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted; rerun the same command to resume from the last "
          "checkpoint", file=sys.stderr)
    return 130
  return 0

