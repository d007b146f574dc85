"""Command line: ``python -m oeu_jax {demo,run,export,audit} ...``.

``demo`` needs no network: scikit-learn's digits, the small CNN at W4A8,
class-wise and 10% random forgetting, Original vs Retrain vs OEU vs the best
baseline of the protocol tables, each at its Retrain-free defaults. ``run`` is
the general experiment (without ``--unlearn-*`` flags, each method at its
protocol default: :mod:`oeu_jax.runner.budgets`). Both print a table and
write ``DIR/results.json``;
``--devices N`` runs them data-parallel over the first N devices (a
:func:`oeu_jax.engine.mesh.make_mesh` mesh; the checkpoints are the same as on
one device). ``export`` writes the quantized models of a work directory in
integer serving form (:mod:`oeu_jax.runner.export`). ``audit`` scores
forgetting per example (:mod:`oeu_jax.runner.audit_command`).

Errors: bad input (an unknown name, a value out of range, a missing or
malformed data folder, an unfinished run without ``--resume``) prints one
line ``error: ...`` naming the problem and exits with status 2; a run that
fails (a non-finite loss, a corrupt checkpoint, an I/O error) prints one line
and exits with status 1. Neither prints a traceback.

Checkpoints and resuming: every trained or unlearned model is checkpointed
under ``--workdir`` every ``--checkpoint-every`` steps and when it finishes.
Rerunning a command reuses every *finished* model found there (no
retraining). A model whose run was interrupted (Ctrl-C, SIGKILL, a crash) is
continued from its last checkpoint only with ``--resume``, which gives the
same final parameters, bit for bit, as an uninterrupted run; without
``--resume`` the command stops with one line naming the unfinished
checkpoint directory, so that a stale partial run is never continued by
accident (delete that directory to start it over instead).

Examples::

  python -m oeu_jax demo --workdir runs/demo
  python -m oeu_jax run --dataset mnist_idx \\
      --data-dir ../shared/data/mnist-t10k \\
      --scenario class --forget-class 3 --workdir runs/mnist
  python -m oeu_jax run ... --workdir runs/mnist --resume  # after a kill
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Optional
from typing import Sequence

# Only JAX-free modules at import time: ``--help`` answers at once. The
# commands import the runner (and JAX) when they run.
from oeu_jax import defaults
from oeu_jax.runner import args as args_lib
from oeu_jax.runner import audit_command
from oeu_jax.runner import catalog

if TYPE_CHECKING:
  from jax.sharding import Mesh

  from oeu_jax.runner import config as config_lib

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


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
    raise args_lib.CliError(message)


def build_parser() -> argparse.ArgumentParser:
  """The argument parser of ``python -m oeu_jax`` (imports no JAX)."""
  p = _Parser(prog="python -m oeu_jax",
              description="Orthogonal Entropy Unlearning for quantized models")
  sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

  def common(sp):
    sp.add_argument("--workdir", default=defaults.WORKDIR,
                    help="where checkpoints, results.json and tables go "
                         f"(default: {defaults.WORKDIR}); one run at a time "
                         "per workdir, results of every configuration kept")
    sp.add_argument("--resume", action="store_true",
                    help="continue runs interrupted in --workdir from their "
                         "last checkpoint (finished runs are always reused)")
    sp.add_argument("--checkpoint-every", type=int, default=None,
                    metavar="STEPS",
                    help="steps between checkpoints (default: training "
                         f"{defaults.TRAIN_CHECKPOINT_EVERY}, unlearning "
                         f"{defaults.UNLEARN_CHECKPOINT_EVERY})")
    sp.add_argument("--skip-nonfinite", action="store_true",
                    help="skip updates with a non-finite loss or gradient "
                         "instead of stopping")
    sp.add_argument("--no-progress", action="store_true",
                    help="no progress output (a bar on a terminal, a line "
                         "every 30 s otherwise)")
    sp.add_argument("--quick", action="store_true",
                    help="tiny budget (CI smoke runs): at most "
                         f"{defaults.QUICK_TRAIN_EPOCHS} training and "
                         f"{defaults.QUICK_UNLEARN_EPOCHS} unlearning epochs")
    sp.add_argument("--vmap-seeds", action="store_true",
                    help="run all seeds as one vmapped program per stage "
                         "(Original, Retrain, each method); same results up "
                         "to float rounding")
    sp.add_argument("--devices", type=int, default=None, metavar="N",
                    help="data-parallel over the first N devices (default: "
                         "one device); same checkpoints, same results up to "
                         "float rounding")

  demo = sub.add_parser(
      "demo", help="offline demo on scikit-learn digits",
      description="Digits, the small CNN at W4A8, class-wise (class "
      f"{defaults.DEMO_FORGET_CLASS}) and 10% random forgetting: Original, "
      "Retrain, OEU and the best baseline of the protocol tables, each at "
      "its defaults (no tuning flags, no Retrain used), with each method's "
      "cost against Retrain's.")
  common(demo)
  demo.add_argument("--seed", type=int, default=defaults.SEEDS[0],
                    help="seed of the model, split and unlearning run "
                         f"(default: {defaults.SEEDS[0]})")

  ex = sub.add_parser("export", help="convert the quantized models of a "
                      "workdir to integer-stored serving checkpoints")
  ex.add_argument("--workdir", required=True,
                  help="a workdir of demo/run (or a folder under its "
                       "checkpoints/)")
  ex.add_argument("--out", default=None,
                  help="output folder (default WORKDIR/serving)")

  r = sub.add_parser("run", help="a general experiment",
                     description="Original, Retrain and unlearning methods "
                     "on one dataset, model,\nbit width and scenario.",
                     epilog=catalog.defaults_text(),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
  common(r)
  r.add_argument("--dataset", required=True, choices=catalog.DATASETS,
                 help="digits runs offline; mnist_idx reads --data-dir; the "
                      "others are prepared TFDS datasets in --data-dir")
  r.add_argument("--data-dir", default=None,
                 help="folder of MNIST IDX files (mnist_idx) or a prepared "
                      "TFDS data dir")
  catalog.add_model_arguments(r)
  r.add_argument("--quantize-ends", action="store_true",
                 help="also quantize the first conv and the classifier")
  r.add_argument("--scenario", default=defaults.SCENARIO,
                 choices=catalog.SCENARIOS,
                 help="random: forget a random fraction; class: forget one "
                      "class; mislabel: a random fraction gets wrong labels "
                      "before the Original trains, then is forgotten "
                      f"(default: {defaults.SCENARIO})")
  r.add_argument("--forget-ratio", type=float, default=None,
                 help="fraction forgotten (mislabel: mislabelled), in (0, 1) "
                      f"(random, mislabel; default {defaults.FORGET_RATIO:g})")
  r.add_argument("--forget-class", type=int, default=None,
                 help="class forgotten (class scenario)")
  r.add_argument("--methods", type=_name_list, default=defaults.METHODS,
                 help=f"comma-separated (default: {','.join(defaults.METHODS)}"
                      "), from "
                      f"{', '.join(catalog.METHODS)}")
  r.add_argument("--seeds", type=_int_list, default=defaults.SEEDS,
                 help="comma-separated seeds, one Original model, split and "
                      "unlearning run each (default: "
                      f"{','.join(map(str, defaults.SEEDS))})")
  r.add_argument("--epochs", type=int, default=None,
                 help="Original/Retrain training epochs (default: per "
                      "dataset, below; 0 needs --allow-untrained)")
  r.add_argument("--allow-untrained", action="store_true",
                 help="accept --epochs 0: Original and Retrain are then the "
                      "initialization (smoke tests)")
  r.add_argument("--batch-size", type=int, default=None,
                 help="Original/Retrain batch size (default: per dataset)")
  r.add_argument("--unlearn-epochs", type=int, default=None,
                 help="unlearning epochs for every method (default: each "
                      "method's protocol default, capped by --cost-cap); 0:"
                      " no unlearning, the method rows are the Original "
                      "model")
  r.add_argument("--unlearn-batch-size", type=int, default=None,
                 help="examples per forget batch and per retain batch "
                      f"(default: {defaults.UNLEARN_FALLBACK['batch_size']}"
                      ", the protocol's)")
  r.add_argument("--unlearn-lr", type=float, default=None,
                 help="peak learning rate of the unlearning cosine schedule"
                      " for every method (default: each method's protocol "
                      "pick, oeu_jax/defaults.py)")
  r.add_argument("--budgets", default=None, choices=("protocol", "harness"),
                 help="without --unlearn-epochs/--unlearn-lr: 'protocol' "
                      "(default): each method at its protocol pick, capped "
                      "at --cost-cap of the Original's training cost, the "
                      "open-ended methods stopped by --stop-when; 'harness':"
                      " the per-dataset harness budget for every method")
  r.add_argument("--cost-cap", type=float, default=None, metavar="FRACTION",
                 help="protocol defaults: unlearning budget as a fraction of"
                      " the Original's training cost (default "
                      f"{defaults.COST_CAP:g})")
  r.add_argument("--stop-when", default=None, metavar="RULE",
                 help="stop a method's unlearning once D_f meets RULE, "
                      "checked every --stop-every steps: 'auto' (the "
                      "Retrain-free targets: D_f's UA reaches what a model "
                      "that never saw it would show), 'ua>=T' (UA in "
                      "percent), 'entropy>=T' (mean normalized forget "
                      "entropy) or 'none' (the whole budget runs, as the "
                      "references do); default: auto for the open-ended "
                      "methods under the protocol defaults, else none")
  r.add_argument("--stop-every", type=int, default=None, metavar="STEPS",
                 help="steps between checks of --stop-when (default "
                      f"{defaults.AUTO_STOP_EVERY} under the protocol "
                      f"defaults, else {defaults.STOP_EVERY})")
  r.add_argument("--optimizer", default=defaults.OPTIMIZER["name"],
                 choices=catalog.OPTIMIZERS,
                 help="optimizer behind every unlearning method (default: "
                      f"{defaults.OPTIMIZER['name']})")
  r.add_argument("--max-examples", type=int, default=None,
                 help="cap train and test sizes")
  audit_command.add_parser(sub)
  return p


def execute(configs: Sequence[config_lib.RunConfig], workdir: Path, *,
            progress: bool, resume: bool = False, vmap_seeds: bool = False,
            mesh: Optional[Mesh] = None, story: bool = False) -> list:
  """Runs experiments, prints their tables, merges them into results.json.

  The work directory stays locked throughout; each configuration's records
  are merged into ``results.json`` as soon as it finishes (records of other
  configurations already there are kept).
  """
  from oeu_jax.runner import config as config_lib
  from oeu_jax.runner import costs
  from oeu_jax.runner import layout as layout_lib
  from oeu_jax.runner import pipeline
  from oeu_jax.runner import report
  from oeu_jax.runner import workdir as workdir_lib

  for cfg in configs:
    config_lib.resolve(cfg)  # Fail fast, before any training.
  results = workdir / layout_lib.RESULTS_JSON
  records = []
  with workdir_lib.lock(workdir):
    workdir_lib.read_results(results)  # Unreadable: refused before running.
    for cfg in configs:
      if cfg.unlearn is not None and cfg.unlearn.epochs == 0:
        print("note: 0 unlearning epochs: no unlearning, the method rows "
              "are the Original model", file=sys.stderr)
      recs = pipeline.run(cfg, workdir, progress=progress, resume=resume,
                          vmap_seeds=vmap_seeds, mesh=mesh,
                          log=lambda s: print(s, file=sys.stderr, flush=True))
      print(f"\n## {args_lib.title(cfg)}\n\n{report.format_table(recs)}\n"
            f"\n{costs.cost_lines(recs)}\n", flush=True)
      if story and cfg.scenario in defaults.DEMO_BASELINE:
        print(costs.demo_story(recs, defaults.DEMO_BASELINE[cfg.scenario])
              + "\n", flush=True)
      workdir_lib.merge_results(recs, results)
      records.extend(recs)
  print(f"wrote {results}")
  return records


def _configs_from_args(args) -> list:
  if args.checkpoint_every is not None and args.checkpoint_every <= 0:
    raise args_lib.CliError(f"--checkpoint-every must be > 0, got "
                   f"{args.checkpoint_every}")
  if args.devices is not None and args.devices <= 0:
    raise args_lib.CliError(f"--devices must be >= 1, got {args.devices}")
  if args.command == "demo":
    if args.seed < 0:
      raise args_lib.CliError(f"--seed must be >= 0, got {args.seed}")
    configs = args_lib.demo_configs(args.seed)
  else:
    configs = [args_lib.run_config_from_args(args)]
  if args.quick:
    configs = [args_lib.quick(c) for c in configs]
  return [args_lib.loop_options(c, checkpoint_every=args.checkpoint_every,
                        skip_nonfinite=args.skip_nonfinite) for c in configs]


def _mesh(devices: Optional[int]) -> Optional[Mesh]:
  """``--devices N``: a mesh over the first N devices; None: one device."""
  if devices is None:
    return None
  from oeu_jax.engine import mesh as mesh_lib
  try:
    return mesh_lib.make_mesh(devices)
  except ValueError as e:
    raise args_lib.CliError(f"--devices {devices}: {e}") from None


def export(args) -> int:
  """``export``: integer-stored serving checkpoints of every quantized run."""
  # Only this command needs AQT's freezer.
  from oeu_jax.runner import export as export_lib
  workdir = Path(args.workdir).resolve()
  if not workdir.is_dir():
    raise FileNotFoundError(f"--workdir {workdir} is not a directory")
  out = Path(args.out).resolve() if args.out else workdir / "serving"
  summary = export_lib.export(workdir, out)
  for e in summary.get("models", []):
    ratio = e["float_bytes"] / max(e["serving_packed_bytes"], 1)
    print(f"{e['dest']}  {e['weight_dtype']}  {e['float_bytes']} -> "
          f"{e['serving_bytes']} B ({e['serving_packed_bytes']} packed), "
          f"x{ratio:.1f}")
  for e in summary.get("skipped", []):
    print(f"skipped {e['source']}: {e['reason']}")
  print(f"wrote {out / 'export.json'}")
  return 0


def _loaded(module: str, name: str) -> tuple:
  """``module.name`` as a one-class tuple if that module is loaded (an
  exception of a module never imported cannot have been raised)."""
  mod = sys.modules.get(module)
  return (getattr(mod, name),) if mod is not None else ()


def _status(error: BaseException) -> Optional[int]:
  """The exit status of an error, or None for a bug (re-raised)."""
  failed = (FloatingPointError, AssertionError,
            *_loaded("oeu_jax.engine.checkpoint_io", "CheckpointError"),
            *_loaded("oeu_jax.runner.workdir", "WorkdirBusy"))
  if isinstance(error, failed):
    return EXIT_FAILED
  if isinstance(error, (args_lib.CliError, ValueError, FileNotFoundError,
                        NotADirectoryError)):
    return EXIT_BAD_INPUT
  if isinstance(error, OSError):  # Disk full, permissions, ...
    return EXIT_FAILED
  return None


def _one_line(error: BaseException) -> str:
  """``error: ...`` in the command line's words, on one line."""
  unfinished = _loaded("oeu_jax.engine.loop", "UnfinishedRunError")
  if unfinished and isinstance(error, unfinished):
    text = (f"{error.directory} holds an unfinished run (checkpoint at step "
            f"{error.step} of {error.total}): rerun with --resume to "
            "continue it, or delete that directory to start over")
  elif (isinstance(error, OSError) and error.filename
        and not isinstance(error, FileNotFoundError)):
    text = f"{error.filename}: {error.strerror or error}"
  else:
    text = str(error)
  return f"error: {' '.join(text.split()) or type(error).__name__}"


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point; returns the exit status (0, 1, 2 or 130)."""
  logging.basicConfig(level=os.environ.get("OEU_LOGLEVEL", "WARNING"))
  try:
    try:
      args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help.
      return e.code if isinstance(e.code, int) else 0
    if args.command == "export":
      return export(args)
    if args.command == "audit":
      return audit_command.main(args)
    configs = _configs_from_args(args)
    mesh = _mesh(args.devices)
    workdir = args_lib.workdir(args.workdir)
    execute(configs, workdir, progress=not args.no_progress,
            resume=args.resume, vmap_seeds=args.vmap_seeds, mesh=mesh,
            story=args.command == "demo")
  except KeyboardInterrupt:
    print("interrupted; rerun the same command with --resume to continue "
          "from the last checkpoints", file=sys.stderr)
    return EXIT_INTERRUPTED
  except Exception as e:
    status = _status(e)
    if status is None:
      raise
    print(_one_line(e), file=sys.stderr)
    return status
  return 0
