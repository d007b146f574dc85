"""The command line's arguments as a :class:`RunConfig`: checks and builds.

``run`` and ``audit`` read the same experiment flags; both build their
configuration here, after :func:`check_ranges` has named any bad flag. The
budgets a flag leaves unset come from :mod:`oeu_jax.defaults` through
:func:`oeu_jax.runner.config.default_train` / ``default_unlearn``.
Importing this module imports no JAX: the builders import the runner's
config when they run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Optional

from oeu_jax import defaults
from oeu_jax.data import RATIO_SCENARIOS

if TYPE_CHECKING:
  from oeu_jax.runner import config as config_lib


class CliError(Exception):
  """A user error: printed as one line, exit status 2."""


def check_ranges(args) -> None:
  """Range checks that name the flag (the library names only the field)."""
  checks = (
      ("--epochs", args.epochs, lambda v: v >= 0, ">= 0"),
      ("--batch-size", args.batch_size, lambda v: v > 0, "> 0"),
      ("--unlearn-epochs", args.unlearn_epochs, lambda v: v >= 0, ">= 0"),
      ("--unlearn-batch-size", args.unlearn_batch_size, lambda v: v > 0,
       "> 0"),
      ("--unlearn-lr", args.unlearn_lr,
       lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
      ("--max-examples", args.max_examples, lambda v: v > 0, "> 0"),
      ("--forget-ratio", args.forget_ratio, lambda v: 0 < v < 1,
       "in (0, 1)"),
      ("--forget-class", args.forget_class, lambda v: v >= 0, ">= 0"),
      ("--stop-every", args.stop_every, lambda v: v > 0, "> 0"),
      ("--cost-cap", getattr(args, "cost_cap", None),
       lambda v: math.isfinite(v) and 0 < v <= 1, "in (0, 1]"),
  )
  for flag, value, ok, want in checks:
    if value is not None and not ok(value):
      raise CliError(f"{flag} must be {want}, got {value}")
  if args.epochs == 0 and not args.allow_untrained:
    raise CliError("--epochs 0 trains nothing (Original and Retrain would be "
                   "their random initialization); add --allow-untrained to "
                   "run it anyway")
  if given_budget(args) and getattr(args, "budgets", None) is not None:
    raise CliError("--budgets is for runs without --unlearn-epochs/"
                   "--unlearn-lr (those give every method one budget)")
  if given_budget(args) and getattr(args, "cost_cap", None) is not None:
    raise CliError("--cost-cap caps the protocol defaults; with "
                   "--unlearn-epochs/--unlearn-lr the budget is the one given")
  if args.stop_when is not None:
    from oeu_jax.engine import stopping
    try:
      stopping.parse(args.stop_when)
    except ValueError as e:
      raise CliError(f"--stop-when: {e}") from None
  for flag, values in (("--seeds", args.seeds), ("--methods", args.methods)):
    dups = sorted({str(v) for v in values if values.count(v) > 1})
    if dups:
      raise CliError(f"{flag} lists {', '.join(dups)} more than once")
  if any(s < 0 for s in args.seeds):
    raise CliError(f"--seeds must be >= 0, got "
                   f"{','.join(str(s) for s in args.seeds)}")
  if args.data_dir is not None:
    check_dir("--data-dir", Path(args.data_dir))


def check_dir(flag: str, path: Path) -> None:
  if not path.exists():
    raise CliError(f"{flag} {path} does not exist")
  if not path.is_dir():
    raise CliError(f"{flag} {path} is not a directory")
  if not os.access(path, os.R_OK | os.X_OK):
    raise CliError(f"{flag} {path} is not readable")


def given_budget(args) -> bool:
  """Did the user give the unlearning budget (epochs or lr) by flags?"""
  return args.unlearn_epochs is not None or args.unlearn_lr is not None


def base_unlearn(cfg: config_lib.RunConfig):
  """The UnlearnConfig the flags modify: the given one, the harness budget,
  or under the protocol defaults the shared base (batch 256)."""
  from oeu_jax.engine import unlearn as unlearn_lib
  from oeu_jax.runner import config as config_lib
  if cfg.unlearn is not None:
    return cfg.unlearn
  if cfg.budgets == "harness":
    return config_lib.default_unlearn(cfg.dataset, cfg.scenario)
  return unlearn_lib.UnlearnConfig()


def quick(cfg: config_lib.RunConfig) -> config_lib.RunConfig:
  """At most QUICK_* epochs (protocol defaults: the cap then shrinks the
  unlearning budget with the training epochs)."""
  from oeu_jax.runner import config as config_lib
  t = cfg.train or config_lib.default_train(cfg.dataset)
  t = dataclasses.replace(t, epochs=min(t.epochs,
                                        defaults.QUICK_TRAIN_EPOCHS))
  if cfg.budgets == "protocol" or (cfg.budgets is None
                                    and cfg.unlearn is None):
    return dataclasses.replace(cfg, train=t)
  u = base_unlearn(cfg)
  return dataclasses.replace(
      cfg, train=t,
      unlearn=dataclasses.replace(
          u, epochs=min(u.epochs, defaults.QUICK_UNLEARN_EPOCHS)))


def loop_options(cfg: config_lib.RunConfig, *,
                  checkpoint_every: Optional[int],
                  skip_nonfinite: bool) -> config_lib.RunConfig:
  """Applies the checkpoint and non-finite flags to both loops."""
  from oeu_jax.runner import config as config_lib
  t = cfg.train or config_lib.default_train(cfg.dataset)
  u = base_unlearn(cfg)
  extra = {"skip_nonfinite": True} if skip_nonfinite else {}
  if checkpoint_every is not None:
    extra["checkpoint_every"] = checkpoint_every
  mode = cfg.budgets or ("protocol" if cfg.unlearn is None else "given")
  return dataclasses.replace(cfg, train=dataclasses.replace(t, **extra),
                             unlearn=dataclasses.replace(u, **extra),
                             budgets=mode)


def demo_configs(seed: int) -> list:
  """The demo's two experiments: class-wise and 10% random forgetting."""
  from oeu_jax.runner import config as config_lib
  base = config_lib.RunConfig(dataset="digits", model="cnn", bits="w4a8",
                              seeds=(seed,))
  return [dataclasses.replace(
              base, scenario="class", forget_ratio=None,
              forget_class=defaults.DEMO_FORGET_CLASS,
              methods=("oeu", defaults.DEMO_BASELINE["class"])),
          dataclasses.replace(
              base, scenario="random", forget_ratio=defaults.FORGET_RATIO,
              methods=("oeu", defaults.DEMO_BASELINE["random"]))]


def run_config_from_args(args) -> config_lib.RunConfig:
  """Builds (and validates) a RunConfig from ``run`` arguments."""
  check_ranges(args)
  if args.scenario in RATIO_SCENARIOS:
    if args.forget_class is not None:
      raise CliError(f"--forget-class is for --scenario class; use "
                     f"--forget-ratio with --scenario {args.scenario}")
    ratio = (defaults.FORGET_RATIO if args.forget_ratio is None
             else args.forget_ratio)
    fclass = None
  else:
    if args.forget_ratio is not None:
      raise CliError(f"--forget-ratio is for --scenario "
                     f"{' or '.join(RATIO_SCENARIOS)}; use --forget-class "
                     "with --scenario class")
    if args.forget_class is None:
      raise CliError("--scenario class needs --forget-class C")
    ratio, fclass = None, args.forget_class
  from oeu_jax.algorithm import methods as methods_lib
  from oeu_jax.runner import config as config_lib
  train = config_lib.default_train(args.dataset)
  if args.epochs is not None:
    train = dataclasses.replace(train, epochs=args.epochs)
  if args.batch_size is not None:
    train = dataclasses.replace(train, batch_size=args.batch_size)
  stop = {}
  if given_budget(args):  # One budget for every method, no rule unless set.
    mode = "given"
    unl = config_lib.default_unlearn(args.dataset, args.scenario)
    fields = (("epochs", args.unlearn_epochs),
              ("batch_size", args.unlearn_batch_size),
              ("lr", args.unlearn_lr),
              ("stop_when", None if str(args.stop_when).lower() == "none"
               else args.stop_when),
              ("stop_every", args.stop_every))
  else:
    from oeu_jax.engine import unlearn as unlearn_lib
    mode = args.budgets or getattr(args, "budget_default", "protocol")
    unl = (config_lib.default_unlearn(args.dataset, args.scenario)
           if mode == "harness" else unlearn_lib.UnlearnConfig())
    fields = (("batch_size", args.unlearn_batch_size),)
    if mode == "harness":
      fields += (("stop_when", None if str(args.stop_when).lower() == "none"
                  else args.stop_when), ("stop_every", args.stop_every))
    else:
      if args.stop_when is not None:
        stop["stop_when"] = args.stop_when
      if args.stop_every is not None:
        stop["stop_every"] = args.stop_every
      if args.cost_cap is not None:
        stop["cost_cap"] = args.cost_cap
  for field, value in fields:
    if value is not None:
      unl = dataclasses.replace(unl, **{field: value})
  return config_lib.RunConfig(
      dataset=args.dataset, data_dir=args.data_dir, model=args.model,
      bits=args.bits, quant_backend=args.quant_backend,
      float_ends=not args.quantize_ends,
      scenario=args.scenario, forget_ratio=ratio, forget_class=fclass,
      methods=args.methods, seeds=args.seeds, train=train, unlearn=unl,
      optimizer=methods_lib.OptimizerConfig(name=args.optimizer),
      max_examples=args.max_examples, allow_untrained=args.allow_untrained,
      budgets=mode, **stop)


def title(cfg: config_lib.RunConfig) -> str:
  return (f"{cfg.dataset} / {cfg.model} / {cfg.bits} / {cfg.scenario} "
          + (f"class {cfg.forget_class}" if cfg.scenario == "class"
             else f"{cfg.forget_ratio:g}"))


def workdir(text: str) -> Path:
  workdir = Path(text).resolve()
  if workdir.exists() and not workdir.is_dir():
    raise CliError(f"--workdir {workdir} exists and is not a directory")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise CliError(f"--workdir {workdir} cannot be created: "
                   f"{e.strerror or e}") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise CliError(f"--workdir {workdir} is not writable")
  return workdir


