"""What an experiment is: :class:`RunConfig`, its defaults and validation.

Every budget default is built here, once, from the numbers of
:mod:`oeu_jax.runner.catalog` (which the command line reads without
importing JAX): :data:`TRAIN_DEFAULTS` (the Original/Retrain recipe per
dataset), :data:`UNLEARN_DEFAULTS` (the unlearning budget per dataset and
scenario) and :data:`CPU_BUDGETS` (the smaller budgets the CPU tables of
``experiments/`` were run with). :func:`resolve` fills the defaults into a
config and checks every field.
"""

import dataclasses
from typing import NamedTuple
from typing import Optional

import numpy as np

from oeu_jax import data as data_lib
from oeu_jax import defaults
from oeu_jax.algorithm import methods as methods_lib
from oeu_jax.engine import train as train_lib
from oeu_jax.engine import unlearn as unlearn_lib
from oeu_jax.nn import models
from oeu_jax.nn import quantization


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One experiment. Every key has its default here, in one place.

  Attributes:
    dataset: a name from :data:`oeu_jax.data.DATASETS`.
    data_dir: folder for ``mnist_idx`` or a prepared TFDS data dir.
    model: a name from :data:`oeu_jax.nn.models.MODELS`.
    bits: a preset from :data:`oeu_jax.nn.quantization.BITS`.
    quant_backend: the quantization backend, from
      :data:`oeu_jax.nn.quantization.BACKENDS` (``QuantSpec.backend``;
      default ``defaults.QUANT_BACKEND``, ``"fake"``). The protocol
      tables of RESULTS.md were made with ``"aqt"``.
    float_ends: keep the first conv and the classifier in float (Q-MUL).
    model_kwargs: extra model attributes (e.g. ``(("width", 0.25),)``).
    scenario: ``"random"``, ``"class"`` or ``"mislabel"`` (a random
      fraction gets wrong labels before the Original trains; D_f is those
      examples with their wrong labels, Retrain trains on the clean rest).
    forget_ratio: fraction forgotten in the random and mislabel scenarios.
    forget_class: class forgotten in the class scenario.
    methods: unlearning methods to run (``"retrain"`` is always evaluated).
    seeds: one Original model, split and unlearning run per seed.
    train: the Original/Retrain recipe; ``None``: :func:`default_train`.
    unlearn: the unlearning budget; ``None``: :func:`default_unlearn`.
    optimizer: the optimizer behind every unlearning method.
    method_hparams: ``((method, ((key, value), ...)), ...)`` overrides.
    max_examples: cap train and test sizes (quick runs).
    allow_untrained: accept ``train.epochs == 0`` (Original and Retrain are
      then the seed's initialization; :func:`resolve` refuses it otherwise).
    mia_exclude_forget_class: class-wise MIA-efficacy with the forgotten
      class removed from the shadow non-members (SalUn's class-wise test
      set drops it: ``dataset.py``); default False keeps the whole test set
      as non-members. The protocol tables (``experiments/table.py``) set
      it.
    budgets: where the unlearning budgets come from, one of
      :data:`BUDGETS`. ``"protocol"`` (what ``None`` means when
      ``unlearn`` is None): each method at its protocol pick, capped at
      ``cost_cap`` x the Original's training cost, the open-ended methods
      stopped by ``stop_when`` (:mod:`oeu_jax.runner.budgets`, numbers in
      :mod:`oeu_jax.defaults`); ``unlearn`` is then the shared base (batch
      size, checkpoints, non-finite handling). ``"given"`` (what ``None``
      means when ``unlearn`` is given): every method runs ``unlearn``.
      ``"harness"``: every method runs the per-dataset harness budget
      (:func:`default_unlearn`), as before the protocol defaults.
    cost_cap: with protocol defaults, the unlearning budget as a fraction
      of the Original's training cost (examples through a forward and
      backward pass).
    stop_when: with protocol defaults, the stopping rule of the open-ended
      methods: ``"auto"`` (the Retrain-free targets,
      :mod:`oeu_jax.engine.stopping`), a rule, or None (run the capped
      budget, as the references do).
    stop_every: steps between checks of ``stop_when``.
    method_unlearn: ``((method, UnlearnConfig), ...)``, per-method budgets
      that replace ``unlearn`` (filled by the protocol defaults).
  """
  dataset: str = defaults.DATASET
  data_dir: Optional[str] = None
  model: str = defaults.MODEL
  bits: str = defaults.BITS
  quant_backend: str = defaults.QUANT_BACKEND
  float_ends: bool = True
  model_kwargs: tuple = ()
  scenario: str = defaults.SCENARIO
  forget_ratio: Optional[float] = defaults.FORGET_RATIO
  forget_class: Optional[int] = None
  methods: tuple = defaults.METHODS
  seeds: tuple = defaults.SEEDS
  train: Optional[train_lib.TrainConfig] = None
  unlearn: Optional[unlearn_lib.UnlearnConfig] = None
  optimizer: methods_lib.OptimizerConfig = methods_lib.OptimizerConfig()
  method_hparams: tuple = ()
  max_examples: Optional[int] = None
  allow_untrained: bool = False
  mia_exclude_forget_class: bool = False
  budgets: Optional[str] = None
  cost_cap: float = defaults.COST_CAP
  stop_when: Optional[str] = defaults.STOP_WHEN
  stop_every: int = defaults.AUTO_STOP_EVERY
  method_unlearn: tuple = ()


BUDGETS = ("protocol", "given", "harness")

# Budgets scaled to each dataset (the numbers and their provenance:
# oeu_jax.runner.catalog).
TRAIN_DEFAULTS = {d: train_lib.TrainConfig(**kw)
                  for d, kw in defaults.TRAIN.items()}
# Unlearning budgets per (dataset, scenario); others use the Q-MUL harness
# default ``UnlearnConfig()`` (SGD 0.01, batch 256, 10 epochs).
UNLEARN_DEFAULTS = {key: unlearn_lib.UnlearnConfig(**kw)
                    for key, kw in defaults.UNLEARN.items()}


class Budget(NamedTuple):
  """A whole budget: both recipes and the number of examples kept."""
  train: train_lib.TrainConfig
  unlearn: unlearn_lib.UnlearnConfig
  max_examples: Optional[int] = None


# The budgets that fit this project's 2-core CPU machines
# (oeu_jax.defaults.CPU).
CPU_BUDGETS = {d: Budget(train_lib.TrainConfig(**t),
                         unlearn_lib.UnlearnConfig(**u), max_examples=n)
               for d, (t, u, n) in defaults.CPU.items()}


def default_train(dataset: str) -> train_lib.TrainConfig:
  """The Original/Retrain recipe for ``dataset`` (:data:`TRAIN_DEFAULTS`)."""
  return TRAIN_DEFAULTS.get(dataset, train_lib.TrainConfig())


def default_unlearn(dataset: str,
                    scenario: str = "random") -> unlearn_lib.UnlearnConfig:
  """The unlearning budget for ``dataset`` and ``scenario``.

  Args:
    dataset: a dataset name.
    scenario: ``"random"`` or ``"class"``.

  Returns:
    The tuned entry of :data:`UNLEARN_DEFAULTS`, else the Q-MUL harness
    default (SGD 0.01, batch 256, 10 epochs).
  """
  return UNLEARN_DEFAULTS.get((dataset, scenario),
                              unlearn_lib.UnlearnConfig())


def cpu_budget(dataset: str) -> Budget:
  """The CPU budget of ``dataset`` (:data:`CPU_BUDGETS`); KeyError if none."""
  if dataset not in CPU_BUDGETS:
    raise KeyError(f"no CPU budget for {dataset!r}; have "
                   f"{', '.join(CPU_BUDGETS)}")
  return CPU_BUDGETS[dataset]


def quant_spec(config: RunConfig) -> quantization.QuantSpec:
  """The model's :class:`~oeu_jax.nn.quantization.QuantSpec`: ``bits`` and
  ``quant_backend``."""
  return dataclasses.replace(quantization.preset(config.bits),
                             backend=config.quant_backend)


def _check_name(kind: str, value: str, valid) -> None:
  if value not in valid:
    raise ValueError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


def resolve(config: RunConfig) -> RunConfig:
  """Fills default budgets and checks every field.

  Args:
    config: the experiment as given.

  Returns:
    ``config`` with ``train`` and ``unlearn`` filled in.

  Raises:
    ValueError: naming the first bad field, or ``train.epochs == 0``
      without ``allow_untrained``.
  """
  _check_name("dataset", config.dataset, data_lib.DATASETS)
  _check_name("model", config.model, models.MODELS)
  _check_name("bits", config.bits, quantization.BITS)
  _check_name("quant_backend", config.quant_backend, quantization.BACKENDS)
  _check_name("scenario", config.scenario, data_lib.SCENARIOS)
  for m in config.methods:
    _check_name("method", m, methods_lib.METHODS)
  if not config.seeds:
    raise ValueError("need at least one seed")
  for s in config.seeds:
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
      raise ValueError(f"seeds must be integers >= 0, got {s!r}")
  mode = config.budgets or ("protocol" if config.unlearn is None
                             else "given")
  _check_name("budgets", mode, BUDGETS)
  if mode == "given" and config.unlearn is None:
    raise ValueError("budgets='given' needs an unlearn config")
  if (isinstance(config.cost_cap, bool) or not isinstance(
      config.cost_cap, (int, float)) or not 0 < config.cost_cap <= 1):
    raise ValueError(f"cost_cap must be in (0, 1], got {config.cost_cap!r}")
  unlearn = config.unlearn or (
      default_unlearn(config.dataset, config.scenario) if mode == "harness"
      else unlearn_lib.UnlearnConfig())
  cfg = dataclasses.replace(
      config, budgets=mode,
      train=config.train or default_train(config.dataset),
      unlearn=unlearn,
      stop_when=(None if config.stop_when is None
                 or str(config.stop_when).strip().lower() == "none"
                 else config.stop_when))
  unlearn_lib.validate_config(dataclasses.replace(
      unlearn_lib.UnlearnConfig(), stop_when=cfg.stop_when,
      stop_every=cfg.stop_every))
  train_lib.validate_config(cfg.train)
  if cfg.train.epochs == 0 and not cfg.allow_untrained:
    raise ValueError(
        "train.epochs is 0: the Original and Retrain models would be "
        "untrained (their initialization); set allow_untrained=True to run "
        "this anyway")
  unlearn_lib.validate_config(cfg.unlearn)
  _check_name("optimizer", cfg.optimizer.name, methods_lib.OPTIMIZERS)
  for name, ucfg in cfg.method_unlearn:
    if name not in cfg.methods:
      raise ValueError(f"a budget given for {name!r}, which is not among "
                       f"the methods {cfg.methods}")
    unlearn_lib.validate_config(ucfg)
  for name, _ in cfg.method_hparams:
    if name not in cfg.methods:
      raise ValueError(f"hyperparameters given for {name!r}, which is not "
                       f"among the methods {cfg.methods}")
  return cfg
