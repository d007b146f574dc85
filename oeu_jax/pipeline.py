"""The experiment runner: Original, Retrain and unlearning methods, evaluated.

One :class:`RunConfig` describes an experiment (dataset, model, bits,
scenario, methods, seeds, budgets). :func:`run` trains (or reuses from
checkpoints) the Original model and Retrain for every seed, runs each method
from the Original weights, evaluates all of them and returns one record per
(method, seed). Every trained or unlearned model is checkpointed under the
work directory; a second run reuses what is complete and, with
``resume=True``, continues what was interrupted.
"""

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any
from typing import Callable
from typing import Optional
from typing import Sequence

import jax
import numpy as np

from oeu_jax import data as data_lib
from oeu_jax import evaluate as evaluate_lib
from oeu_jax import methods as methods_lib
from oeu_jax import metrics
from oeu_jax import models
from oeu_jax import quantization
from oeu_jax import seeds as seeds_lib
from oeu_jax import train as train_lib
from oeu_jax import unlearn as unlearn_lib

RECORD_KEYS = ("method", "seed", "scenario", "ua", "ra", "ta", "mia_efficacy",
               "avg_gap", "rte_s", "forget_entropy", "confident_wrong")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One experiment. Every key has its default here, in one place.

  Attributes:
    dataset: a name from :data:`oeu_jax.data.DATASETS`.
    data_dir: folder for ``mnist_idx`` or a prepared TFDS data dir.
    model: a name from :data:`oeu_jax.models.MODELS`.
    bits: a preset from :data:`oeu_jax.quantization.BITS`.
    float_ends: keep the first conv and the classifier in float (Q-MUL).
    model_kwargs: extra model attributes (e.g. ``(("width", 0.25),)``).
    scenario: ``"random"`` or ``"class"``.
    forget_ratio: fraction forgotten in the random scenario.
    forget_class: class forgotten in the class scenario.
    methods: unlearning methods to run (``"retrain"`` is always evaluated).
    seeds: one Original model, split and unlearning run per seed.
    train: the Original/Retrain recipe; ``None``: :func:`default_train`.
    unlearn: the unlearning budget; ``None``: :func:`default_unlearn`.
    optimizer: the optimizer behind every unlearning method.
    method_hparams: ``((method, ((key, value), ...)), ...)`` overrides.
    max_examples: cap train and test sizes (quick runs).
  """
  dataset: str = "digits"
  data_dir: Optional[str] = None
  model: str = "cnn"
  bits: str = "w4a8"
  float_ends: bool = True
  model_kwargs: tuple = ()
  scenario: str = "random"
  forget_ratio: Optional[float] = 0.1
  forget_class: Optional[int] = None
  methods: tuple = ("oeu",)
  seeds: tuple = (0,)
  train: Optional[train_lib.TrainConfig] = None
  unlearn: Optional[unlearn_lib.UnlearnConfig] = None
  optimizer: methods_lib.OptimizerConfig = methods_lib.OptimizerConfig()
  method_hparams: tuple = ()
  max_examples: Optional[int] = None


# Budgets scaled to each dataset. Paper-scale entries follow the Q-MUL
# harness (SGD 0.1, 182 epochs for CIFAR; unlearning 10 epochs at 0.01).
_TRAIN_DEFAULTS = {
    "digits": train_lib.TrainConfig(epochs=30, batch_size=64, lr=0.05),
    "mnist_idx": train_lib.TrainConfig(epochs=15, batch_size=128, lr=0.05),
    "mnist": train_lib.TrainConfig(epochs=15, batch_size=128, lr=0.05),
    "fashion_mnist": train_lib.TrainConfig(epochs=30, batch_size=128,
                                           lr=0.05),
    "cifar10": train_lib.TrainConfig(epochs=182, batch_size=256, lr=0.1,
                                     augment=True),
    "cifar100": train_lib.TrainConfig(epochs=182, batch_size=256, lr=0.1,
                                      augment=True),
    "svhn_cropped": train_lib.TrainConfig(epochs=50, batch_size=256, lr=0.1),
}
# Unlearning budgets per (dataset, scenario); others use METHOD.md §2 (SGD
# 0.01, batch 256, 10 epochs). As in the SalUn and Q-MUL harnesses the budget
# is tuned per scenario. Digits grid (OEU, seed 0, w4a8 CNN; see RESULTS.md):
# batch {64, 128, 256} x lr
# {0.01, 0.02, 0.05}. Class-wise: the 256-example batch gives only 60 steps
# and UA 85 (Retrain 100); batch 64 / lr 0.02 gives UA 100 (seeds 0-2: 100,
# 92.5, 97.3). Random 10%: batch 64 over-forgets (MIA 22-43 vs Retrain 1-4),
# while the METHOD default keeps MIA at 4.9 and the avg gap at 1.35.
_UNLEARN_DEFAULTS = {
    ("digits", "class"): unlearn_lib.UnlearnConfig(epochs=10, batch_size=64,
                                                   lr=0.02),
}


def default_train(dataset: str) -> train_lib.TrainConfig:
  """The Original/Retrain recipe for ``dataset``."""
  return _TRAIN_DEFAULTS.get(dataset, train_lib.TrainConfig())


def default_unlearn(dataset: str,
                    scenario: str = "random") -> unlearn_lib.UnlearnConfig:
  """The unlearning budget for ``dataset`` and ``scenario``.

  Args:
    dataset: a dataset name.
    scenario: ``"random"`` or ``"class"``.

  Returns:
    The tuned entry of ``_UNLEARN_DEFAULTS``, else METHOD.md §2's default.
  """
  return _UNLEARN_DEFAULTS.get((dataset, scenario),
                               unlearn_lib.UnlearnConfig())


def resolve(config: RunConfig) -> RunConfig:
  """Fills default budgets and checks every field; raises ValueError."""
  if config.dataset not in data_lib.DATASETS:
    raise ValueError(f"unknown dataset {config.dataset!r}; valid: "
                     f"{', '.join(data_lib.DATASETS)}")
  if config.model not in models.MODELS:
    raise ValueError(f"unknown model {config.model!r}; valid: "
                     f"{', '.join(models.MODELS)}")
  if config.bits not in quantization.BITS:
    raise ValueError(f"unknown bits {config.bits!r}; valid: "
                     f"{', '.join(quantization.BITS)}")
  if config.scenario not in data_lib.SCENARIOS:
    raise ValueError(f"unknown scenario {config.scenario!r}; valid: "
                     f"{', '.join(data_lib.SCENARIOS)}")
  for m in config.methods:
    if m not in methods_lib.METHODS:
      raise ValueError(f"unknown method {m!r}; valid: "
                       f"{', '.join(methods_lib.METHODS)}")
  if not config.seeds:
    raise ValueError("need at least one seed")
  for s in config.seeds:
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
      raise ValueError(f"seeds must be integers >= 0, got {s!r}")
  cfg = dataclasses.replace(
      config,
      train=config.train or default_train(config.dataset),
      unlearn=config.unlearn or default_unlearn(config.dataset,
                                                     config.scenario))
  train_lib.validate_config(cfg.train)
  unlearn_lib.validate_config(cfg.unlearn)
  if cfg.optimizer.name not in methods_lib.OPTIMIZERS:
    raise ValueError(f"unknown optimizer {cfg.optimizer.name!r}; valid: "
                     f"{', '.join(methods_lib.OPTIMIZERS)}")
  return cfg


def _fingerprint(*parts: Any) -> str:
  return hashlib.sha1(repr(parts).encode()).hexdigest()[:10]


def _scenario_tag(cfg: RunConfig) -> str:
  if cfg.scenario == "class":
    return f"class{cfg.forget_class}"
  return f"random{cfg.forget_ratio:g}"


def _timed_checkpoint(ckpt_dir: Path, fn: Callable[[], Any]) -> tuple:
  """Runs ``fn`` (which resumes/saves in ``ckpt_dir``); remembers its time.

  A finished run leaves ``timing.json``; a later call returns the stored
  seconds instead of the (near-zero) time of a no-op resume.
  """
  timing = ckpt_dir / "timing.json"
  done = timing.exists()
  result = fn()
  if not done:
    seconds = {"seconds": result.seconds,
               "compile_seconds": result.compile_seconds}
    _write_json(timing, seconds)
  else:
    seconds = json.loads(timing.read_text())
  return result, seconds


def run(config: RunConfig, workdir: str | Path, *, progress: bool = False,
        resume: bool = False, vmap_seeds: bool = False,
        log: Callable[[str], None] = logging.info) -> list[dict]:
  """Runs the experiment; returns one record per (method, seed).

  Args:
    config: the experiment.
    workdir: checkpoints go to ``workdir/checkpoints``.
    progress: tqdm bars for training and unlearning.
    resume: continue trainings and unlearning runs interrupted under
      ``workdir`` from their last checkpoints (bit-identical to an
      uninterrupted run). False: finished ones are still reused, and an
      unfinished one raises ValueError naming its directory.
    vmap_seeds: train the Original models, the Retrain models and each
      method for all seeds as one vmapped program per stage
      (:func:`run_stages`); same checkpoints, and the same
      results up to float rounding. ``rte_s`` is then the joint run's time
      divided by the number of seeds.
    log: where to report progress lines.

  Returns:
    Records with :data:`RECORD_KEYS` and extra diagnostics, ``original`` and
    ``retrain`` rows included.

  Raises:
    ValueError / FileNotFoundError: bad configuration or data.
  """
  cfg = resolve(config)
  workdir = Path(workdir).resolve()
  dataset = data_lib.load_dataset(cfg.dataset, data_dir=cfg.data_dir,
                                  max_examples=cfg.max_examples)
  model = models.build_model(cfg.model, num_classes=dataset.num_classes,
                             bits=cfg.bits, float_ends=cfg.float_ends,
                             **dict(cfg.model_kwargs))
  hparams = {k: dict(v) for k, v in cfg.method_hparams}
  for name in hparams:
    if name not in cfg.methods:
      raise ValueError(f"hyperparameters given for {name!r}, which is not "
                       f"among the methods {cfg.methods}")
  built = {m: methods_lib.build_method(m, model, optimizer=cfg.optimizer,
                                       **hparams.get(m, {}))
           for m in cfg.methods if m != "retrain"}
  model_tag = _fingerprint(cfg.dataset, cfg.max_examples, cfg.model, cfg.bits,
                           cfg.float_ends, cfg.model_kwargs,
                           cfg.train._replace(checkpoint_every=0))
  records = []
  run_dir = (workdir / "checkpoints"
             / f"{cfg.dataset}-{cfg.model}-{cfg.bits}-{model_tag}")
  tag = _scenario_tag(cfg)
  splits = {int(s): data_lib.make_split(
      dataset, cfg.scenario, seed=int(s),
      forget_ratio=cfg.forget_ratio if cfg.scenario == "random" else None,
      forget_class=cfg.forget_class if cfg.scenario == "class" else None)
      for s in cfg.seeds}

  def ckpt_dir(seed: int, stage: str) -> Path:
    root = run_dir / f"seed{seed}"
    if stage == "original":
      return root / "original"
    if stage == "retrain":
      return root / f"retrain-{tag}"
    mtag = _fingerprint(
        stage, hparams.get(stage),
        dataclasses.replace(cfg.unlearn, checkpoint_every=0), cfg.optimizer)
    return root / f"{stage}-{tag}-{mtag}"

  pre = {}  # (stage, seed) -> result, when the seeds run vmapped.
  if vmap_seeds:
    pre = run_stages(
        model, dataset, splits, built, train_config=cfg.train,
        unlearn_config=cfg.unlearn,
        checkpoint_dir=lambda s, stage: str(ckpt_dir(s, stage)),
        progress=progress, resume=resume, log=log)
  for seed in cfg.seeds:
    seed = int(seed)
    split = splits[seed]
    _write_json(run_dir / "model.json", {
        "model": cfg.model, "bits": cfg.bits,
        "num_classes": dataset.num_classes, "float_ends": cfg.float_ends,
        "model_kwargs": dict(cfg.model_kwargs)})
    fc = cfg.forget_class if cfg.scenario == "class" else None

    def record(method, params, batch_stats, seconds, compile_seconds,
               extra=None):
      rec = {"method": method, "seed": seed, "scenario": cfg.scenario,
             "dataset": cfg.dataset, "model": cfg.model, "bits": cfg.bits,
             "forget_ratio": cfg.forget_ratio if fc is None else None,
             "forget_class": fc, "num_forget": int(len(split.forget_idx))}
      rec.update(evaluate_lib.evaluate(model, params, batch_stats, dataset,
                                       split, forget_class=fc))
      rec["rte_s"] = float(seconds)
      rec["rte_with_compile_s"] = float(seconds + compile_seconds)
      rec.update(extra or {})
      return rec

    log(f"[seed {seed}] Original: {cfg.model} {cfg.bits} on {cfg.dataset}")
    odir = ckpt_dir(seed, "original")
    orig, t_orig = _timed_checkpoint(odir, lambda: pre.get(
        ("original", seed)) or train_lib.fit(
        model, dataset.train_x, dataset.train_y, config=cfg.train, seed=seed,
        checkpoint_dir=str(odir), progress=progress,
        desc=f"original s{seed}", resume=resume))
    ostate = orig.state
    rows = [record("original", ostate.params, ostate.batch_stats,
                   t_orig["seconds"], t_orig["compile_seconds"])]

    rdir = ckpt_dir(seed, "retrain")
    log(f"[seed {seed}] Retrain on D_r ({len(split.retain_idx)} examples)")
    retr, t_retr = _timed_checkpoint(rdir, lambda: pre.get(
        ("retrain", seed)) or train_lib.fit(
        model, dataset.train_x[split.retain_idx],
        dataset.train_y[split.retain_idx], config=cfg.train, seed=seed,
        checkpoint_dir=str(rdir), progress=progress,
        desc=f"retrain s{seed}", resume=resume))
    rows.append(record("retrain", retr.state.params, retr.state.batch_stats,
                       t_retr["seconds"], t_retr["compile_seconds"]))

    udata = unlearn_lib.make_data(dataset.train_x, dataset.train_y,
                                  split.forget_idx, split.retain_idx)
    for name, method in built.items():
      udir = ckpt_dir(seed, name)
      log(f"[seed {seed}] {name}")
      res, t_un = _timed_checkpoint(udir, lambda: pre.get(
          (name, seed)) or unlearn_lib.unlearn(
          method, model, ostate.params, ostate.batch_stats, udata,
          config=cfg.unlearn, num_classes=dataset.num_classes, seed=seed,
          checkpoint_dir=str(udir), progress=progress, resume=resume))
      rows.append(record(name, res.state.params, res.state.batch_stats,
                         t_un["seconds"], t_un["compile_seconds"],
                         {"train_metrics": res.metrics}))
    retrain_row = rows[1]
    for r in rows:
      r["avg_gap"] = metrics.avg_gap(r, retrain_row)
    records.extend(rows)
  return records


def run_stages(model, dataset: data_lib.Dataset, splits: dict, methods: dict,
               *, train_config: train_lib.TrainConfig,
               unlearn_config: unlearn_lib.UnlearnConfig,
               checkpoint_dir: Callable[[int, str], str],
               progress: bool = False, resume: bool = False,
               log: Callable[[str], None] = logging.info,
               mesh: Optional[jax.sharding.Mesh] = None) -> dict:
  """Original, Retrain and every method for all seeds, each stage vmapped.

  The vmapped counterpart of the per-seed loop of
  :func:`oeu_jax.pipeline.run`: three kinds of stages, each one program
  over the seeds, with the same checkpoint directories (so a run may be
  continued either way).

  Args:
    model: the Flax module.
    dataset: the loaded dataset.
    splits: ``{seed: Split}``.
    methods: ``{name: Method}`` (``retrain`` excluded).
    train_config: the Original/Retrain recipe.
    unlearn_config: the unlearning budget.
    checkpoint_dir: ``(seed, stage) -> directory``; ``stage`` is
      ``"original"``, ``"retrain"`` or a method name.
    progress: tqdm bars.
    resume: continue unfinished runs (finished ones are always reused).
    log: progress lines.
    mesh: data parallelism over devices.

  Returns:
    ``{(stage, seed): TrainResult or UnlearnResult}``.
  """
  seeds = [int(s) for s in splits]
  tag = ",".join(str(s) for s in seeds)
  out = {}
  log(f"[seeds {tag}] Original: vmapped over {len(seeds)} seeds")
  res = seeds_lib.fit_seeds(model, dataset.train_x, dataset.train_y,
                  config=train_config, seeds=seeds,
                  checkpoint_dirs=[checkpoint_dir(s, "original")
                                   for s in seeds],
                  progress=progress, desc="original", resume=resume,
                  mesh=mesh)
  out.update({("original", s): r for s, r in zip(seeds, res)})
  log(f"[seeds {tag}] Retrain on D_r: vmapped")
  res = seeds_lib.fit_seeds(model, dataset.train_x, dataset.train_y,
                  config=train_config, seeds=seeds,
                  subsets=[splits[s].retain_idx for s in seeds],
                  checkpoint_dirs=[checkpoint_dir(s, "retrain")
                                   for s in seeds],
                  progress=progress, desc="retrain", resume=resume,
                  mesh=mesh)
  out.update({("retrain", s): r for s, r in zip(seeds, res)})
  datas = [unlearn_lib.make_data(dataset.train_x, dataset.train_y,
                                 splits[s].forget_idx, splits[s].retain_idx)
           for s in seeds]
  originals = [out[("original", s)].state for s in seeds]
  for name, method in methods.items():
    log(f"[seeds {tag}] {name}: vmapped")
    res = seeds_lib.unlearn_seeds(
        method, model, [o.params for o in originals],
        [o.batch_stats for o in originals], datas, config=unlearn_config,
        num_classes=dataset.num_classes, seeds=seeds,
        checkpoint_dirs=[checkpoint_dir(s, name) for s in seeds],
        progress=progress, resume=resume, mesh=mesh)
    out.update({(name, s): r for s, r in zip(seeds, res)})
  return out


def write_results(records: Sequence[dict], path: str | Path) -> None:
  """Writes records as JSON atomically (write to a temp file, then rename)."""
  _write_json(path, list(records))


def _write_json(path: str | Path, obj: Any) -> None:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
  tmp.replace(path)


def _json_default(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating, jax.Array)):
    return float(x)
  raise TypeError(f"not JSON serializable: {type(x)}")


def format_table(records: Sequence[dict],
                 keys: Sequence[str] = ("ua", "ra", "ta", "mia_efficacy",
                                        "avg_gap", "rte_s", "forget_entropy",
                                        "confident_wrong")) -> str:
  """A Markdown table, mean ± std over seeds per method."""
  summary = metrics.summarize(records, keys)
  head = "| method | " + " | ".join(keys) + " |"
  sep = "|" + "---|" * (len(keys) + 1)
  lines = [head, sep]
  for method, s in summary.items():
    cells = []
    for k in keys:
      mean, std = s["mean"][k], s["std"][k]
      cells.append(f"{mean:.2f}" if s["n"] == 1 else f"{mean:.2f} ± {std:.2f}")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines)

