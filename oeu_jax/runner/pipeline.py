"""The experiment: Original, Retrain and unlearning methods, evaluated.

:func:`run` takes one :class:`~oeu_jax.runner.config.RunConfig` through
its stages: the Original model of every seed, Retrain on each seed's D_r,
then each method from that seed's Original weights. A stage runs for all
seeds either one seed at a time (:func:`oeu_jax.engine.train.fit`,
:func:`oeu_jax.engine.unlearn.unlearn`) or as one vmapped program
(:func:`oeu_jax.engine.seeds.fit_seeds`,
:func:`oeu_jax.engine.seeds.unlearn_seeds`); :func:`stage_runner` makes that
choice once, and both write the same checkpoint directories
(:mod:`oeu_jax.runner.layout`), so a run may be continued either way. Every
model is evaluated as soon as its stage ends; the records come out per seed:
``original``, ``retrain``, then the methods.

A run holds the work directory's lock (:func:`oeu_jax.runner.workdir.lock`)
and claims each checkpoint directory for its configuration before using it
(a checkpoint copied from another configuration is refused). ``rte_s`` and
``train_metrics`` come from the tally stored with the final checkpoint
(:mod:`oeu_jax.engine.tally`): they cover every step of a run that was
interrupted and resumed, and a finished run reused later reports them unchanged.
"""

import logging
from pathlib import Path
from typing import Any
from typing import Callable
from typing import NamedTuple
from typing import Optional
from typing import Sequence

import jax

from oeu_jax import data as data_lib
from oeu_jax.algorithm import methods as methods_lib
from oeu_jax.engine import budget as budget_lib
from oeu_jax.engine import checkpointing
from oeu_jax.engine import executors
from oeu_jax.engine import seeds as seeds_lib
from oeu_jax.engine import stopping
from oeu_jax.engine import tally as tally_lib
from oeu_jax.engine import train as train_lib
from oeu_jax.engine import unlearn as unlearn_lib
from oeu_jax.evaluation import estimate
from oeu_jax.evaluation import metrics
from oeu_jax.nn import models
from oeu_jax.runner import budgets
from oeu_jax.runner import config as config_lib
from oeu_jax.runner import evaluate as evaluate_lib
from oeu_jax.runner import layout as layout_lib
from oeu_jax.runner import workdir as workdir_lib

RECORD_KEYS = ("method", "seed", "scenario", "ua", "ra", "ta", "mia_efficacy",
               "avg_gap", "rte_s", "forget_entropy", "confident_wrong")
# What identifies a record's configuration besides its method and seed.
CONFIG_KEYS = ("config", "dataset", "model", "bits", "scenario",
               "forget_class", "forget_ratio")

Log = Callable[[str], None]
# One seed's result of a stage (TrainResult or UnlearnResult) and what it
# took: {"seconds", "compile_seconds", "metrics"} over all its steps.
Timed = tuple[Any, dict]


class StageRunner(NamedTuple):
  """Runs a stage for a list of seeds; each returns one :data:`Timed` each.

  Attributes:
    fit: ``(stage, seeds, subsets, labels=None) -> [Timed]``: trains
      ``stage`` (``"original"`` or ``"retrain"``) per seed on
      ``train_x[subsets[seed]]`` (all of it when ``subsets`` is None), with
      the dataset's labels or ``labels[seed]`` (the mislabel scenario).
    unlearn: ``(name, method, seeds, originals, data_of, config,
      stop_rules) -> [Timed]``: runs method ``name`` under ``config`` (an
      UnlearnConfig) from ``originals[seed]`` (a TrainState) on
      ``data_of(seed)``, stopped by ``stop_rules[seed]`` where the config
      says ``auto``.
  """
  fit: Callable[..., list]
  unlearn: Callable[..., list]


def _accounted(ckpt_dir: Path, result: Any, stored: Optional[dict]) -> dict:
  """What a finished stage took, over all its steps.

  The tally of its final checkpoint when it covers the whole run; else (a
  run checkpointed before tallies existed) the ``timing.json`` written when
  it first finished, or this call's result.
  """
  last = checkpointing.latest_step(ckpt_dir)
  t = (checkpointing.read_manifest(ckpt_dir, step=last)["meta"].get("tally")
       if last is not None else None)
  if t is not None and t["first_step"] == 0 and t["step"] == last:
    out = {"seconds": t["seconds"], "compile_seconds": t["compile_seconds"],
           "metrics": tally_lib.means(t), "stop_step": t.get("stopped_at")}
  else:
    out = dict(stored or {"seconds": result.seconds,
                          "compile_seconds": result.compile_seconds},
               metrics=getattr(result, "metrics", {}))
    out["stop_step"] = out["metrics"].get("stop_step")
  if stored is None and last is not None:  # For readers of timing.json.
    layout_lib.write_json(ckpt_dir / layout_lib.TIMING_JSON,
                          {"seconds": out["seconds"],
                           "compile_seconds": out["compile_seconds"]})
  return out


def _timed_all(dirs: Sequence[Path], make: Callable[[], list]) -> list:
  stored = [layout_lib.read_timing(d) for d in dirs]
  results = make()
  return [(r, _accounted(d, r, t)) for d, r, t in zip(dirs, results, stored)]


def stage_runner(model, dataset: data_lib.Dataset, layout: layout_lib.Layout,
                 *, vmapped: bool, progress: bool = False,
                 resume: bool = False,
                 mesh: Optional[jax.sharding.Mesh] = None,
                 log: Log = logging.info) -> StageRunner:
  """The stages of one run, sequential over seeds or vmapped.

  Args:
    model: the Flax module.
    dataset: the loaded dataset.
    layout: checkpoint directories (its config gives the budgets).
    vmapped: one vmapped, jitted program per stage for all seeds (results
      equal the sequential ones up to float rounding; ``seconds`` are the
      joint run's divided by the number of seeds). False: one seed at a
      time, each model timed on its own.
    progress: tqdm bars.
    resume: continue unfinished runs (finished ones are always reused).
    mesh: data parallelism over devices (:func:`oeu_jax.engine.mesh.make_mesh`).
    log: progress lines.

  Returns:
    A :class:`StageRunner`.
  """
  cfg = layout.cfg
  x, y = dataset.train_x, dataset.train_y
  programs = executors.Programs()  # Each seed reuses the compiled steps.

  def dirs(seeds, stage):
    out = [layout.checkpoint_dir(s, stage) for s in seeds]
    for s, d in zip(seeds, out):
      checkpointing.claim(d, workdir_lib.run_label(layout, s, stage))
    return out

  def fit_sequential(stage, seeds, subsets, labels=None):
    out = []
    for s in seeds:
      sub = None if subsets is None else subsets[s]
      ys = y if labels is None else labels[s]
      log(f"[seed {s}] {stage}: {cfg.model} {cfg.bits} on {cfg.dataset}, "
          f"{len(x) if sub is None else len(sub)} examples")
      d, = dirs([s], stage)
      stored = layout_lib.read_timing(d)  # A reused model keeps its time.
      # All of x on the device, the subset as indices: Retrain's step has
      # the Original's shapes (one program when their step counts agree).
      result = train_lib.fit(
          model, x, ys, config=cfg.train, seed=s, subset=sub,
          checkpoint_dir=str(d), progress=progress,
          desc=f"{stage} s{s}", resume=resume, mesh=mesh,
          programs=programs)
      out.append((result, _accounted(d, result, stored)))
    return out

  def unlearn_sequential(name, method, seeds, originals, data_of, config,
                         stop_rules):
    out = []
    for s in seeds:
      log(f"[seed {s}] {name}")
      d, = dirs([s], name)
      stored = layout_lib.read_timing(d)
      result = unlearn_lib.unlearn(
          method, model, originals[s].params, originals[s].batch_stats,
          data_of(s), config=config, num_classes=dataset.num_classes,
          seed=s, checkpoint_dir=str(d), progress=progress, resume=resume,
          mesh=mesh, programs=programs, stop_rule=stop_rules.get(s))
      out.append((result, _accounted(d, result, stored)))
    return out

  def fit_vmapped(stage, seeds, subsets, labels=None):
    if labels is None:
      return _fit_vmapped(stage, seeds, subsets, y)
    # One label array per seed (fit_seeds shares one): a program per seed.
    return [t for s in seeds
            for t in _fit_vmapped(stage, [s], subsets, labels[s])]

  def _fit_vmapped(stage, seeds, subsets, ys):
    log(f"[seeds {','.join(map(str, seeds))}] {stage}: vmapped over "
        f"{len(seeds)} seeds")
    ds = dirs(seeds, stage)
    return _timed_all(ds, lambda: seeds_lib.fit_seeds(
        model, x, ys, config=cfg.train, seeds=seeds,
        subsets=None if subsets is None else [subsets[s] for s in seeds],
        checkpoint_dirs=[str(d) for d in ds], progress=progress, desc=stage,
        resume=resume, mesh=mesh, programs=programs))

  def unlearn_vmapped(name, method, seeds, originals, data_of, config,
                      stop_rules):
    log(f"[seeds {','.join(map(str, seeds))}] {name}: vmapped")
    ds = dirs(seeds, name)
    return _timed_all(ds, lambda: seeds_lib.unlearn_seeds(
        method, model, [originals[s].params for s in seeds],
        [originals[s].batch_stats for s in seeds],
        [data_of(s) for s in seeds], config=config,
        num_classes=dataset.num_classes, seeds=seeds,
        checkpoint_dirs=[str(d) for d in ds], progress=progress,
        resume=resume, mesh=mesh, programs=programs,
        stop_rules=[stop_rules.get(s) for s in seeds]))

  if vmapped:
    return StageRunner(fit_vmapped, unlearn_vmapped)
  return StageRunner(fit_sequential, unlearn_sequential)


def run(config: config_lib.RunConfig, workdir: str | Path, *,
        progress: bool = False, resume: bool = False,
        vmap_seeds: bool = False, mesh: Optional[jax.sharding.Mesh] = None,
        log: Log = logging.info) -> list[dict]:
  """Runs the experiment; returns one record per (method, seed).

  Every trained or unlearned model is checkpointed under
  ``workdir/checkpoints``; a second run reuses what is complete.

  Args:
    config: the experiment.
    workdir: checkpoints go to ``workdir/checkpoints``.
    progress: tqdm bars for training and unlearning.
    resume: continue trainings and unlearning runs interrupted under
      ``workdir`` from their last checkpoints (bit-identical to an
      uninterrupted run). False: finished ones are still reused, and an
      unfinished one raises ValueError naming its directory.
    vmap_seeds: each stage as one vmapped program over the seeds (see
      :func:`stage_runner`); same checkpoints, and the same results up to
      float rounding. ``rte_s`` is then the joint run's time divided by the
      number of seeds.
    mesh: data parallelism over devices (:func:`oeu_jax.engine.mesh.make_mesh`);
      None: one device. The checkpoints are the same either way.
    log: where to report progress lines.

  Returns:
    Records with :data:`RECORD_KEYS`, :data:`CONFIG_KEYS`, ``train_epochs``
    (and ``unlearn_epochs`` for the methods: 0 means the method's row is
    the Original model) and extra diagnostics, ``original`` and ``retrain``
    rows included.

  Raises:
    ValueError / FileNotFoundError: bad configuration or data.
    WorkdirBusy: another process runs in ``workdir``.
    CheckpointError: a checkpoint that is corrupt, of another
      configuration, or cannot be written (naming the path).
  """
  cfg = config_lib.resolve(config)
  with workdir_lib.lock(workdir):
    return _run(cfg, workdir, progress=progress, resume=resume,
                vmap_seeds=vmap_seeds, mesh=mesh, log=log)


def _run(cfg: config_lib.RunConfig, workdir: str | Path, *, progress: bool,
         resume: bool, vmap_seeds: bool, mesh: Optional[jax.sharding.Mesh],
         log: Log) -> list[dict]:
  dataset = data_lib.load_dataset(cfg.dataset, data_dir=cfg.data_dir,
                                  max_examples=cfg.max_examples)
  model = models.build_model(cfg.model, num_classes=dataset.num_classes,
                             bits=config_lib.quant_spec(cfg),
                             float_ends=cfg.float_ends,
                             **dict(cfg.model_kwargs))
  seeds = [int(s) for s in cfg.seeds]
  fc = cfg.forget_class if cfg.scenario == "class" else None
  splits = {s: data_lib.make_split(
      dataset, cfg.scenario, seed=s,
      forget_ratio=cfg.forget_ratio if fc is None else None,
      forget_class=fc) for s in seeds}
  first = splits[seeds[0]]  # Set sizes do not depend on the seed.
  nf, nr = len(first.forget_idx), len(first.retain_idx)
  cfg, sources = budgets.fill(cfg, num_forget=nf, num_retain=nr,
                              num_train=len(dataset.train_y))
  hparams = {k: dict(v) for k, v in cfg.method_hparams}
  built = {m: methods_lib.build_method(m, model, optimizer=cfg.optimizer,
                                       **hparams.get(m, {}))
           for m in cfg.methods if m != "retrain"}
  layout = layout_lib.Layout.of(cfg, workdir)
  for name, method in built.items():
    ucfg = unlearn_lib.resolve(budgets.unlearn_of(cfg, name), method)
    log(f"[budget] {name}: {ucfg.epochs} epoch(s), "
        f"{unlearn_lib.num_steps(nf, nr, ucfg)} steps at lr {ucfg.lr:g}, "
        f"stop {ucfg.stop_when or 'none'} ({sources[name]})")
  layout_lib.write_json(layout.run_dir / layout_lib.MODEL_JSON,
                        layout_lib.model_record(cfg, dataset))
  stages = stage_runner(model, dataset, layout, vmapped=vmap_seeds,
                        progress=progress, resume=resume, mesh=mesh, log=log)
  rows = {s: [] for s in seeds}
  config_id = workdir_lib.config_id(cfg)

  targets = {}
  n_train = len(dataset.train_y)

  def add(name: str, timed: list, with_metrics: bool = False,
          ucfg=None, rules=None) -> None:
    for s, (res, t) in zip(seeds, timed):
      split = splits[s]
      rec = {"method": name, "seed": s, "config": config_id,
             "scenario": cfg.scenario, "dataset": cfg.dataset,
             "model": cfg.model, "bits": cfg.bits,
             "forget_ratio": cfg.forget_ratio if fc is None else None,
             "forget_class": fc, "num_forget": int(len(split.forget_idx)),
             "train_epochs": int(cfg.train.epochs)}
      rec.update(evaluate_lib.evaluate(
          model, res.state.params, res.state.batch_stats, dataset, split,
          forget_class=fc,
          mia_exclude_forget_class=cfg.mia_exclude_forget_class,
          targets_for=(cfg.scenario, s) if name == "original" else None))
      if name == "original":
        targets[s] = rec.pop("est_targets")
      rec["rte_s"] = float(t["seconds"])
      rec["rte_with_compile_s"] = float(t["seconds"] + t["compile_seconds"])
      if with_metrics:
        rec["train_metrics"] = t["metrics"]
        # The step a stopping rule (UnlearnConfig.stop_when) ended it at.
        rec["stop_step"] = t.get("stop_step")
        rec["unlearn_epochs"] = int(ucfg.epochs)
        rec["stop_rule"] = rules.get(s) or ucfg.stop_when
        steps = rec["stop_step"] or unlearn_lib.num_steps(nf, nr, ucfg)
        rec["unlearn_steps"] = int(steps)
        # The share of the Original's training cost this run used.
        paid = budgets.original_cost(cfg.train.epochs, n_train)
        rec["cost_fraction"] = (budget_lib.cost_of_steps(nf, nr, ucfg, steps)
                                / paid if paid else None)
        rec["defaults"] = sources[name]
      rows[s].append(rec)

  # The mislabel scenario's Original learns D_f's wrong labels (per seed).
  corrupted = {s: sp.train_y for s, sp in splits.items()
               if sp.train_y is not None}
  originals = stages.fit("original", seeds, None, corrupted or None)
  add("original", originals)
  add("retrain", stages.fit("retrain", seeds,
                            {s: splits[s].retain_idx for s in seeds}))
  states = {s: res.state for s, (res, _) in zip(seeds, originals)}
  del originals

  def data_of(s: int) -> unlearn_lib.UnlearnData:
    return unlearn_lib.make_data(
        dataset.train_x, data_lib.training_labels(dataset, splits[s]),
        splits[s].forget_idx, splits[s].retain_idx)

  for name, method in built.items():
    ucfg = unlearn_lib.resolve(budgets.unlearn_of(cfg, name), method)
    auto = stopping.parse(ucfg.stop_when)
    rules = ({s: stopping.rule_text(stopping.auto_rule(
        targets[s], cfg.scenario, dataset.num_classes)) for s in seeds}
             if auto is not None and auto.metric == stopping.AUTO else {})
    add(name, stages.unlearn(name, method, seeds, states, data_of, ucfg,
                             rules), with_metrics=True, ucfg=ucfg,
        rules=rules)
  records = []
  for s in seeds:
    retrain_row = rows[s][1]
    for r in rows[s]:
      r["avg_gap"] = metrics.avg_gap(r, retrain_row)
      # The Retrain-free estimate (oeu_jax.evaluation.estimate).
      r["est_targets"] = dict(targets[s])
      r["est_avg_gap"] = estimate.estimated_gap(r, targets[s])
    records.extend(rows[s])
  return records
