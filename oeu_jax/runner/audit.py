"""The per-example forgetting audit: populations of models, then the score.

:func:`run_audit` trains one Original (seed 0) on the whole training set,
N retrained models (seeds 1..N: their own initialization and batch order)
on D_r, and for each method N unlearning runs from that one Original
(seeds 1..N: their own batch order and rng), all with the same forget set
(the split of seed 0). Each population is made ``chunk`` seeds at a time
through the vmapped-seeds stages of
:func:`oeu_jax.runner.pipeline.stage_runner`
(:func:`oeu_jax.engine.seeds.fit_seeds`,
:func:`oeu_jax.engine.seeds.unlearn_seeds`), so a chunk is one compiled program
and memory holds ``chunk`` models at a time.

Then each population is scored against the retrained one with
:mod:`oeu_jax.evaluation.audit` (the NeurIPS 2023 unlearning-challenge score).
Two references come with every audit:

* ``original``: N copies of the Original's own outputs (no unlearning, a
  deterministic reference: its confidences have zero spread, so the 1%-range
  rule caps every epsilon and it scores 0);
* ``retrain``: the first half of the retrained population scored against the
  second half (N // 2 models each; it needs N >= 6 for any bin to earn
  points, since the bins end at ``ceil(log(N // 2 - 1))``).

Files (``DIR`` the work directory)::

  DIR/audit/checkpoints/...           every model, as the ``run`` layout
  .../<model dir>/audit-<scenario>.npz its D_f logits, RA, TA and times
  DIR/audit.json  DIR/audit.md  DIR/audit_eps_<method>.png

Resuming: a model whose ``audit-<scenario>.npz`` exists is not touched
again (a chunk whose models all have one is skipped: nothing is trained,
loaded or compiled); a finished checkpoint without it is loaded and
evaluated; an interrupted one continues with ``resume=True``.
``audit.json`` holds the latest audit of ``DIR`` (one configuration).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any
from typing import Callable
from typing import Mapping
from typing import NamedTuple
from typing import Optional
from typing import Sequence

import numpy as np

from oeu_jax import data as data_lib
from oeu_jax.algorithm import methods as methods_lib
from oeu_jax.engine import unlearn as unlearn_lib
from oeu_jax.evaluation import audit as audit_lib
from oeu_jax.evaluation import metrics
from oeu_jax.nn import inference
from oeu_jax.nn import models
from oeu_jax.runner import config as config_lib
from oeu_jax.runner import layout as layout_lib
from oeu_jax.runner import pipeline
from oeu_jax.runner import workdir as workdir_lib

MIN_MODELS = 4
ORIGINAL_SEED = 0
AUDIT_DIR = "audit"
DEFAULT_SETTINGS = "library defaults"
Log = Callable[[str], None]


class Population(NamedTuple):
  """The outputs of one population on the audit's split.

  Attributes:
    logits: ``[m, n_forget, K]`` float32 logits on D_f.
    ra: ``[m]`` retain accuracies (%).
    ta: ``[m]`` test accuracies (%; class-wise: the other classes).
    seconds: ``[m]`` each model's training or unlearning time (s, without
      compilation; a vmapped chunk's time divided by its seeds).
  """
  logits: np.ndarray
  ra: np.ndarray
  ta: np.ndarray
  seconds: np.ndarray


def _outputs_path(ckpt_dir: Path, cfg: config_lib.RunConfig) -> Path:
  return ckpt_dir / f"audit-{layout_lib.scenario_tag(cfg)}.npz"


def _load(path: Path, forget_idx: np.ndarray) -> Optional[dict]:
  """A model's stored outputs, or None (absent, or of another forget set)."""
  if not path.is_file():
    return None
  with np.load(path) as z:
    if not np.array_equal(z["forget_idx"], forget_idx):
      return None
    return {k: z[k] for k in z.files}


def _save(path: Path, out: dict) -> None:
  tmp = path.with_name(path.stem + ".tmp.npz")
  np.savez(tmp, **out)
  tmp.replace(path)


def _evaluate(model, state, dataset: data_lib.Dataset,
              split: data_lib.Split, forget_class: Optional[int]) -> dict:
  """D_f logits, RA and TA of one model (TA as ``run`` reports it)."""
  logits = inference.predict(model, state.params, state.batch_stats,
                             dataset.train_x)
  test = inference.predict(model, state.params, state.batch_stats,
                           dataset.test_x)
  keep = (np.ones(len(dataset.test_y), bool) if forget_class is None
          else dataset.test_y != forget_class)
  y = dataset.train_y
  return {"forget_logits": logits[split.forget_idx],
          "forget_idx": split.forget_idx,
          "ra": metrics.accuracy(logits[split.retain_idx],
                                 y[split.retain_idx]),
          "ta": metrics.accuracy(test[keep], dataset.test_y[keep])}


def _chunks(seeds: Sequence[int], size: int) -> list:
  return [list(seeds[i:i + size]) for i in range(0, len(seeds), size)]


def make_population(layout: layout_lib.Layout, stage: str,
                    seeds: Sequence[int], make: Callable[[list], list], *,
                    evaluate: Callable[[Any], dict], forget_idx: np.ndarray,
                    chunk: int, log: Log = logging.info) -> Population:
  """Makes (or reuses) ``stage`` for ``seeds``, ``chunk`` seeds at a time.

  Args:
    layout: where the models of the stage go.
    stage: ``original``, ``retrain`` or a method name.
    seeds: the population's seeds.
    make: ``seeds -> [Timed]`` (a stage of
      :class:`~oeu_jax.runner.pipeline.StageRunner`, other arguments bound).
    evaluate: ``state -> outputs`` (:func:`_evaluate` bound).
    forget_idx: the audit's D_f (stored outputs of another are redone).
    chunk: seeds per vmapped program.
    log: progress lines.

  Returns:
    The :class:`Population`.
  """
  outs = {}
  for part in _chunks(list(seeds), chunk):
    paths = {s: _outputs_path(layout.checkpoint_dir(s, stage), layout.cfg)
             for s in part}
    for s in part:
      stored = _load(paths[s], forget_idx)
      if stored is not None:
        outs[s] = stored
    todo = [s for s in part if s not in outs]
    if not todo:
      log(f"[{stage}] seeds {part[0]}-{part[-1]}: outputs reused")
      continue
    for s, (res, t) in zip(todo, make(todo)):
      out = evaluate(res.state)
      out.update(seconds=float(t["seconds"]),
                 compile_seconds=float(t["compile_seconds"]))
      _save(paths[s], out)
      outs[s] = out
  order = [outs[s] for s in seeds]
  return Population(
      logits=np.stack([o["forget_logits"] for o in order]),
      ra=np.array([float(o["ra"]) for o in order]),
      ta=np.array([float(o["ta"]) for o in order]),
      seconds=np.array([float(o["seconds"]) for o in order]))


def _record(name: str, unlearned: Population, retrained: Population,
            labels: np.ndarray, **extra) -> dict:
  confs = [audit_lib.logit_scaled_confidence(p.logits, labels)
           for p in (unlearned, retrained)]
  score = audit_lib.score_populations(*confs)
  ra, ta = float(np.mean(unlearned.ra)), float(np.mean(unlearned.ta))
  # UA as in ``run`` (100 - accuracy on D_f), population mean.
  ua = 100.0 - float(np.mean([metrics.accuracy(lg, labels)
                              for lg in unlearned.logits]))
  return {"method": name, "n_models": score.n_models,
          "forget_score": score.forget_score,
          "final_score": audit_lib.final_score(
              score.forget_score, ra_unlearned=ra,
              ra_retrained=float(np.mean(retrained.ra)), ta_unlearned=ta,
              ta_retrained=float(np.mean(retrained.ta))),
          "ua": ua, "ra": ra, "ta": ta,
          "eps_hist": audit_lib.eps_histogram(score.epsilons,
                                              score.n_models),
          "mean_epsilon": float(np.mean(score.epsilons)),
          # Where and how widely the population puts D_f: the median over
          # examples of each example's median confidence across models,
          # and the mean over examples of its range across models.
          "conf_median": float(np.median(np.median(confs[0], axis=0))),
          "conf_range": float(np.mean(np.ptp(confs[0], axis=0))),
          "seconds_per_model": float(np.mean(unlearned.seconds)), **extra}


def _half(p: Population, part: slice) -> Population:
  return Population(*(v[part] for v in p))


def _copies(p: Population, n: int) -> Population:
  return Population(*(np.repeat(v, n, axis=0) for v in p))


def method_configs(base: config_lib.RunConfig, methods: Sequence[str],
                   given: Optional[Mapping[str, config_lib.RunConfig]] = None
                   ) -> dict:
  """Each method's resolved config: ``given[m]`` or ``base`` running ``m``.

  Raises:
    ValueError: an unknown method, or a given config whose Original would
      differ from ``base``'s (another dataset, model or training recipe).
  """
  given = dict(given or {})
  ref = layout_lib.Layout.of(base, "/").run_dir.name
  out = {}
  for m in methods:
    if m not in methods_lib.METHODS:
      raise ValueError(f"unknown method {m!r}; valid: "
                       f"{', '.join(methods_lib.METHODS)}")
    cfg = config_lib.resolve(dataclasses.replace(
        given.get(m, base), methods=(m,), seeds=(ORIGINAL_SEED,)))
    if layout_lib.Layout.of(cfg, "/").run_dir.name != ref or (
        layout_lib.scenario_tag(cfg) != layout_lib.scenario_tag(base)):
      raise ValueError(f"the config of {m!r} has another Original or "
                       "scenario than the audit's")
    out[m] = cfg
  return out


def run_audit(config: config_lib.RunConfig, workdir: str | Path, *,
              n_models: int, chunk: int = 8,
              configs: Optional[Mapping[str, config_lib.RunConfig]] = None,
              settings: str = DEFAULT_SETTINGS, progress: bool = False,
              resume: bool = False, mesh=None,
              log: Log = logging.info) -> list[dict]:
  """Runs the audit of ``config.methods`` and returns its records.

  Args:
    config: dataset, model, bits, scenario, training recipe and methods
      (``retrain`` among them is the reference, always scored); its seeds
      are ignored.
    workdir: models under ``workdir/audit``; nothing else is written here
      (:func:`write_audit` writes the results).
    n_models: N, models per population (>= 4).
    chunk: seeds per vmapped program (memory holds this many models).
    configs: per method, a config to take its budget and hyperparameters
      from (e.g. tuned ones; same Original as ``config``); others use
      ``config``'s.
    settings: how the methods were set, copied into their records.
    progress: tqdm bars.
    resume: continue interrupted trainings and unlearning runs.
    mesh: data parallelism (:func:`oeu_jax.engine.mesh.make_mesh`).
    log: progress lines.

  Returns:
    Records ``{method, n_models, forget_score, final_score, ua, ra, ta,
    eps_hist, mean_epsilon, seconds_per_model, reference, settings, ...}``:
    ``original``, ``retrain`` (the split), then each method.

  Raises:
    ValueError: N < 4, chunk < 1, an unknown name, a missing class, or
      any bad field of the config.
  """
  if isinstance(n_models, bool) or not isinstance(n_models, int) or (
      n_models < MIN_MODELS):
    raise ValueError(f"the audit needs at least {MIN_MODELS} models per "
                     f"population, got {n_models}")
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
    raise ValueError(f"chunk must be an int >= 1, got {chunk}")
  names = [m for m in dict.fromkeys(config.methods) if m != "retrain"]
  base = config_lib.resolve(dataclasses.replace(
      config, methods=tuple(names), seeds=(ORIGINAL_SEED,)))
  cfgs = method_configs(base, names, configs)
  with workdir_lib.lock(workdir):
    return _audit(base, cfgs, Path(workdir), n_models=n_models, chunk=chunk,
                  settings=settings, progress=progress, resume=resume,
                  mesh=mesh, log=log)


def _audit(base, cfgs, workdir: Path, *, n_models, chunk, settings, progress,
           resume, mesh, log) -> list[dict]:
  if base.scenario not in ("random", "class"):
    raise ValueError(f"the audit runs the random and class scenarios, not "
                     f"{base.scenario!r} (its Originals differ per seed)")
  dataset = data_lib.load_dataset(base.dataset, data_dir=base.data_dir,
                                  max_examples=base.max_examples)
  fc = base.forget_class if base.scenario == "class" else None
  split = data_lib.make_split(
      dataset, base.scenario, seed=ORIGINAL_SEED, forget_class=fc,
      forget_ratio=None if fc is not None else base.forget_ratio)
  model = models.build_model(base.model, num_classes=dataset.num_classes,
                             bits=base.bits, float_ends=base.float_ends,
                             **dict(base.model_kwargs))
  root = workdir / AUDIT_DIR
  layout = layout_lib.Layout.of(base, root)
  layout_lib.write_json(layout.run_dir / layout_lib.MODEL_JSON,
                        layout_lib.model_record(base, dataset))
  common = dict(progress=progress, resume=resume, mesh=mesh, log=log)
  stages = pipeline.stage_runner(model, dataset, layout, vmapped=True,
                                 **common)
  labels = dataset.train_y[split.forget_idx]

  def population(lay, stage, seeds, make):
    t0 = time.perf_counter()
    pop = make_population(
        lay, stage, seeds, make, forget_idx=split.forget_idx, chunk=chunk,
        evaluate=lambda st: _evaluate(model, st, dataset, split, fc),
        log=log)
    log(f"[{stage}] {len(seeds)} models ready in "
        f"{time.perf_counter() - t0:.1f} s")
    return pop

  states = {}

  def original_state():  # Loaded only when some unlearning run needs it.
    if "s" not in states:
      (res, _), = stages.fit("original", [ORIGINAL_SEED], None)
      states["s"] = res.state
    return states["s"]

  def fit_original(seeds):
    out = stages.fit("original", seeds, None)
    states["s"] = out[0][0].state
    return out

  seeds = list(range(1, n_models + 1))
  original = population(layout, "original", [ORIGINAL_SEED], fit_original)
  retrained = population(layout, "retrain", seeds, lambda ss: stages.fit(
      "retrain", ss, {s: split.retain_idx for s in ss}))
  tag = {"dataset": base.dataset, "model": base.model, "bits": base.bits,
         "scenario": base.scenario, "forget_class": fc,
         "forget_ratio": None if fc is not None else base.forget_ratio,
         "num_forget": int(len(split.forget_idx))}
  half = n_models // 2
  records = [
      _record("original", _copies(original, n_models), retrained, labels,
              reference=f"{n_models} copies of the Original's own outputs "
              f"(seed {ORIGINAL_SEED}, deterministic) vs {n_models} "
              "retrained", **tag),
      _record("retrain", _half(retrained, slice(0, half)),
              _half(retrained, slice(half, 2 * half)), labels,
              reference=f"retrained seeds 1-{half} vs {half + 1}-"
              f"{2 * half}", **tag)]
  data = None
  for name, mcfg in cfgs.items():
    if data is None:
      data = unlearn_lib.make_data(dataset.train_x, dataset.train_y,
                                   split.forget_idx, split.retain_idx)
    mlayout = layout_lib.Layout.of(mcfg, root)
    method = methods_lib.build_method(
        name, model, optimizer=mcfg.optimizer,
        **{k: dict(v) for k, v in mcfg.method_hparams}.get(name, {}))
    runner = pipeline.stage_runner(model, dataset, mlayout, vmapped=True,
                                   **common)
    pop = population(mlayout, name, seeds, lambda ss, r=runner, m=method: (
        r.unlearn(name, m, ss, {s: original_state() for s in ss},
                  lambda s: data, unlearn_lib.resolve(mcfg.unlearn, m), {})))
    records.append(_record(
        name, pop, retrained, labels, settings=settings,
        unlearn=layout_lib.config_repr(mcfg.unlearn),
        hparams=dict(dict(mcfg.method_hparams).get(name, ())),
        reference=f"{n_models} unlearning runs from the "
        f"Original vs {n_models} retrained", **tag))
  return records
