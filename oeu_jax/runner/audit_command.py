"""``python -m oeu_jax audit``: the per-example forgetting audit.

Its arguments and its run, kept out of :mod:`oeu_jax.cli` (which registers
them and dispatches here). Importing this module imports no JAX; the
command imports the runner when it runs.

Examples::

  python -m oeu_jax audit --dataset digits --scenario class \\
      --forget-class 3 --methods oeu,rl,salun,scrub,qmul --models 8 \\
      --workdir runs/audit-digits-class3
"""

from __future__ import annotations

import argparse
import sys

from oeu_jax import defaults
from oeu_jax.runner import args as args_lib
from oeu_jax.runner import catalog

DEFAULT_MODELS = 8
DEFAULT_CHUNK = 8


# The audit compares N unlearned models with N retrained ones from one
# Original; a mislabel scenario's Original depends on its seed's labels.
AUDIT_SCENARIOS = ("random", "class")

def _names(text: str) -> tuple:
  values = tuple(v.strip() for v in text.split(",") if v.strip())
  if not values:
    raise argparse.ArgumentTypeError("expected at least one name")
  return values


def add_parser(sub) -> argparse.ArgumentParser:
  """Adds the ``audit`` subcommand to ``sub`` (an argparse subparsers)."""
  a = sub.add_parser(
      "audit", help="per-example forgetting audit (NeurIPS 2023 "
      "unlearning-challenge score) from populations of models",
      description="One Original, N retrained models and N unlearning runs "
      "per method (vmapped, in chunks), scored per forget example against "
      "the retrained population. Writes DIR/audit.json, DIR/audit.md and "
      "DIR/audit_eps_<method>.png; rerunning reuses every finished model.")
  a.add_argument("--workdir", required=True,
                 help="models under DIR/audit, results in DIR")
  a.add_argument("--dataset", required=True, choices=catalog.DATASETS,
                 help="digits runs offline; mnist_idx reads --data-dir")
  a.add_argument("--data-dir", default=None,
                 help="MNIST IDX folder (mnist_idx) or TFDS data dir")
  catalog.add_model_arguments(a)
  a.add_argument("--scenario", default=defaults.SCENARIO,
                 choices=AUDIT_SCENARIOS,
                 help="random or class forgetting (default: random)")
  a.add_argument("--forget-ratio", type=float, default=None,
                 help="fraction forgotten (random; default 0.1)")
  a.add_argument("--forget-class", type=int, default=None,
                 help="class forgotten (class scenario)")
  a.add_argument("--methods", type=_names, required=True,
                 help="comma-separated, from "
                      f"{', '.join(catalog.METHODS)} (retrain: the "
                      "reference, always scored); library default "
                      "settings (tuned ones: python -m experiments.audit)")
  a.add_argument("--models", type=int, default=DEFAULT_MODELS, metavar="N",
                 help=f"models per population, >= 4 (default "
                      f"{DEFAULT_MODELS}; the challenge used 512)")
  a.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                 help=f"seeds per vmapped program (default {DEFAULT_CHUNK})")
  a.add_argument("--epochs", type=int, default=None,
                 help="Original/Retrain training epochs (default: per "
                      "dataset)")
  a.add_argument("--unlearn-epochs", type=int, default=None,
                 help="unlearning epochs (default: per dataset and "
                      "scenario)")
  a.add_argument("--max-examples", type=int, default=None,
                 help="cap train and test sizes")
  a.add_argument("--checkpoint-every", type=int, default=None,
                 metavar="STEPS", help="steps between checkpoints")
  a.add_argument("--resume", action="store_true",
                 help="continue interrupted trainings and unlearning runs")
  a.add_argument("--quick", action="store_true",
                 help="at most 3 training and 2 unlearning epochs")
  a.add_argument("--no-progress", action="store_true",
                 help="no progress bars")
  # What ``args.run_config_from_args`` reads and the audit does not offer:
  # every method at the harness budget (or --unlearn-epochs), no stopping
  # rule, as the audit's reference runs are.
  a.set_defaults(seeds=(0,), quantize_ends=False, allow_untrained=False,
                 batch_size=None, unlearn_batch_size=None, unlearn_lr=None,
                 stop_when=None, stop_every=None, optimizer="sgd",
                 skip_nonfinite=False, budgets=None, budget_default="harness",
                 cost_cap=None)
  return a


def main(args) -> int:
  """Runs ``audit``; bad input raises ValueError (one line in the CLI)."""
  if args.models < 4:
    raise ValueError(f"--models must be >= 4 (each half of the retrain "
                     f"split needs 2), got {args.models}")
  if args.chunk < 1:
    raise ValueError(f"--chunk must be >= 1, got {args.chunk}")
  if args.checkpoint_every is not None and args.checkpoint_every <= 0:
    raise ValueError(f"--checkpoint-every must be > 0, got "
                     f"{args.checkpoint_every}")
  for m in args.methods:
    if m not in catalog.METHODS:
      raise ValueError(f"--methods: unknown method {m!r}; valid: "
                       f"{', '.join(catalog.METHODS)}")
  cfg = args_lib.run_config_from_args(args)
  if args.quick:
    cfg = args_lib.quick(cfg)
  cfg = args_lib.loop_options(
      cfg, checkpoint_every=args.checkpoint_every, skip_nonfinite=False)
  workdir = args_lib.workdir(args.workdir)
  from oeu_jax.runner import audit as audit_lib
  from oeu_jax.runner import audit_report
  records = audit_lib.run_audit(
      cfg, workdir, n_models=args.models, chunk=args.chunk,
      progress=not args.no_progress, resume=args.resume,
      log=lambda s: print(s, file=sys.stderr, flush=True))
  title = (f"Audit: {args_lib.title(cfg)}, N = "
           f"{args.models}")
  out = audit_report.write_audit(records, workdir, title=title)
  print(out["markdown"], flush=True)
  print(f"wrote {out['json']}, {out['table']} and {len(out['png'])} PNGs")
  return 0
