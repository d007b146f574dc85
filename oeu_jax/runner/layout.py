"""Where a run's files go, and the JSON files beside its checkpoints.

A work directory holds ``results.json`` and ``checkpoints/``::

  checkpoints/<dataset>-<model>-<bits>-<model fingerprint>/
    model.json                      how to rebuild the model (export reads it)
    seed<N>/original/               Original model, orbax steps + timing.json
    seed<N>/retrain-<scenario>/     Retrain on D_r
    seed<N>/<method>-<scenario>-<method fingerprint>/

``<scenario>`` is ``class<C>`` or ``random<ratio>``. The model fingerprint
hashes what the Original and Retrain models depend on (dataset, example
cap, model, bits, float ends, model attributes, training recipe); the
method fingerprint what an unlearning run depends on (method, its
hyperparameters, unlearning budget, optimizer). Checkpoint cadence is left
out of both (a run checkpointed more often is the same run). Each is the
first 10 hex digits of the SHA-1 of the ``repr`` of those values, configs
included: a config class that gains a field changes the fingerprints, so
older directories are then ignored (retrained), never mixed in.

``timing.json`` (``seconds``, ``compile_seconds``) is written when a model
first finishes, so that a reused model reports the time it took to make.
"""

import contextlib
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any
from typing import Optional
from typing import Sequence

import jax
import numpy as np

from oeu_jax import data as data_lib
from oeu_jax.algorithm import methods as methods_lib
from oeu_jax.engine import stopping
from oeu_jax.engine import unlearn as unlearn_lib
from oeu_jax.nn import models
from oeu_jax.nn import quantization
from oeu_jax.runner import config as config_lib

CHECKPOINTS = "checkpoints"
MODEL_JSON = "model.json"
RESULTS_JSON = "results.json"
TIMING_JSON = "timing.json"
# Keys every model.json has; model.json files written before "dataset" and
# "input_shape" were added are refused by read_model_json.
MODEL_KEYS = ("dataset", "model", "bits", "num_classes", "float_ends",
              "model_kwargs", "input_shape")


# UnlearnConfig fields a fingerprint names only where they differ from their
# defaults (None, "paired"), so that workdirs written before these fields
# existed keep their names (and are reused) while a run under another
# schedule or stopping rule gets directories of its own.
_NAMED_IF_SET = ("schedule", "forget_batch_size", "forget_epochs",
                 "stop_when", "max_steps")


def config_repr(config: Any) -> str:
  """The text a fingerprint (and a stored tuning trial) holds for a part:
  ``repr(config)``, but an :class:`~oeu_jax.engine.unlearn.UnlearnConfig`
  without its schedule and stopping fields at their defaults (and without
  ``stop_every`` when there is no rule)."""
  if not isinstance(config, unlearn_lib.UnlearnConfig):
    return repr(config)
  parts = [f"{f.name}={getattr(config, f.name)!r}"
           for f in dataclasses.fields(config)
           if not (f.name in _NAMED_IF_SET
                   and getattr(config, f.name) in (None, "paired"))
           and not (f.name == "stop_every" and config.stop_when is None)]
  return f"UnlearnConfig({', '.join(parts)})"


def fingerprint(*parts: Any) -> str:
  """10 hex digits of the SHA-1 of ``parts`` written as a tuple's repr,
  each part by :func:`config_repr`."""
  text = "(" + ", ".join(config_repr(p) for p in parts) + (
      "," if len(parts) == 1 else "") + ")"
  return hashlib.sha1(text.encode()).hexdigest()[:10]


def scenario_tag(cfg: config_lib.RunConfig) -> str:
  """``class<C>``, ``random<ratio>`` or ``mislabel<ratio>``."""
  if cfg.scenario == "class":
    return f"class{cfg.forget_class}"
  return f"{cfg.scenario}{cfg.forget_ratio:g}"


@dataclasses.dataclass(frozen=True)
class Layout:
  """The checkpoint directories of one resolved :class:`RunConfig`.

  Examples:
    >>> cfg = config_lib.resolve(config_lib.RunConfig())
    >>> Layout.of(cfg, "/w").run_dir.name
    'digits-cnn-w4a8-5b270538b7'
  """
  run_dir: Path
  cfg: config_lib.RunConfig

  @classmethod
  def of(cls, cfg: config_lib.RunConfig, workdir: str | Path) -> "Layout":
    """The layout of ``cfg`` (resolved: budgets filled) under ``workdir``."""
    # A backend other than AQT trains other (if nearly equal) models; AQT,
    # the backend of every run before the choice existed, adds nothing, so
    # their fingerprints hold.
    impl = () if cfg.quant_backend == "aqt" else (cfg.quant_backend,)
    tag = fingerprint(cfg.dataset, cfg.max_examples, cfg.model, cfg.bits,
                      cfg.float_ends, cfg.model_kwargs,
                      dataclasses.replace(cfg.train, checkpoint_every=0), *impl)
    root = Path(workdir).resolve() / CHECKPOINTS
    return cls(root / f"{cfg.dataset}-{cfg.model}-{cfg.bits}-{tag}", cfg)

  def checkpoint_dir(self, seed: int, stage: str) -> Path:
    """Where ``stage`` (original, retrain or a method) of ``seed`` goes."""
    cfg, root = self.cfg, self.run_dir / f"seed{seed}"
    if stage == "original":
      # A mislabel scenario's Original learns its own (corrupted) labels.
      return root / ("original" if cfg.scenario != "mislabel"
                     else f"original-{scenario_tag(cfg)}")
    if stage == "retrain":
      return root / f"retrain-{scenario_tag(cfg)}"
    hparams = {k: dict(v) for k, v in cfg.method_hparams}
    # The schedule the run will use (the method's reference one where the
    # config says None): a run under another schedule never reuses these
    # checkpoints. Paired runs keep the names they had before schedules.
    method = methods_lib.build_method(stage, None,
                                      **hparams.get(stage, {}))
    unlearn = unlearn_lib.resolve(
        dict(cfg.method_unlearn).get(stage, cfg.unlearn), method)
    auto = ((stopping.AUTO_RULE_ID,) if unlearn.stop_when == stopping.AUTO
            else ())
    tag = fingerprint(
        stage, hparams.get(stage),
        dataclasses.replace(unlearn, checkpoint_every=0), cfg.optimizer,
        *auto)
    return root / f"{stage}-{scenario_tag(cfg)}-{tag}"


def model_record(cfg: config_lib.RunConfig,
                 dataset: data_lib.Dataset) -> dict:
  """The ``model.json`` of a run: enough to rebuild and feed its model."""
  return {"dataset": cfg.dataset, "model": cfg.model, "bits": cfg.bits,
          "quant_backend": cfg.quant_backend,
          "num_classes": dataset.num_classes, "float_ends": cfg.float_ends,
          "model_kwargs": dict(cfg.model_kwargs),
          "input_shape": [int(d) for d in dataset.train_x.shape[1:]]}


def read_model_json(run_dir: str | Path) -> dict:
  """``run_dir/model.json``, checked, with model attributes as tuples.

  Raises:
    FileNotFoundError: there is none.
    ValueError: it lacks a key of :data:`MODEL_KEYS` (written by an older
      version: rerunning the command that made the run rewrites it and
      reuses the finished models) or is malformed.
  """
  path = Path(run_dir) / MODEL_JSON
  if not path.is_file():
    raise FileNotFoundError(f"No {MODEL_JSON} in {path.parent}.")
  try:
    spec = json.loads(path.read_text())
    missing = [k for k in MODEL_KEYS if k not in spec]
  except (ValueError, TypeError) as e:
    raise ValueError(f"{path} is not a valid model record: {e!r}") from e
  if missing:
    raise ValueError(
        f"{path} lacks {', '.join(missing)} (written by an older oeu_jax); "
        "rerun the run/demo command on this workdir to rewrite it (finished "
        "models are reused), then export again.")
  try:
    return {"dataset": str(spec["dataset"]), "model": str(spec["model"]),
            "bits": str(spec["bits"]),
            # Files written before the key existed: aqt or fake models,
            # both served through AQT.
            "quant_backend": str(spec.get("quant_backend", "aqt")),
            "num_classes": int(spec["num_classes"]),
            "float_ends": bool(spec["float_ends"]),
            "model_kwargs": {k: tuple(v) if isinstance(v, list) else v
                             for k, v in spec["model_kwargs"].items()},
            "input_shape": tuple(int(d) for d in spec["input_shape"])}
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"{path} is not a valid model record: {e!r}") from e


def model_of(spec: dict):
  """The model a :func:`read_model_json` record describes, as trained:
  architecture, bits and quantization backend."""
  bits = dataclasses.replace(quantization.preset(spec["bits"]),
                             backend=spec["quant_backend"])
  return models.build_model(spec["model"], num_classes=spec["num_classes"],
                            bits=bits, float_ends=spec["float_ends"],
                            **spec["model_kwargs"])


def find_run_dir(ckpt_dir: str | Path) -> Optional[Path]:
  """The nearest folder at or above ``ckpt_dir`` with a ``model.json``."""
  ckpt_dir = Path(ckpt_dir).resolve()
  for folder in (ckpt_dir, *ckpt_dir.parents):
    if (folder / MODEL_JSON).is_file():
      return folder
  return None


def read_timing(ckpt_dir: Path) -> Optional[dict]:
  """The stored ``{"seconds", "compile_seconds"}``, or None if not yet."""
  path = Path(ckpt_dir) / TIMING_JSON
  return json.loads(path.read_text()) if path.exists() else None


def write_timing(ckpt_dir: Path, result: Any) -> dict:
  """Stores a finished result's ``seconds`` and ``compile_seconds``."""
  seconds = {"seconds": result.seconds,
             "compile_seconds": result.compile_seconds}
  write_json(Path(ckpt_dir) / TIMING_JSON, seconds)
  return seconds


def write_results(records: Sequence[dict], path: str | Path) -> None:
  """Writes records as JSON atomically (write to a temp file, then rename)."""
  write_json(path, list(records))


def write_json(path: str | Path, obj: Any) -> None:
  """Writes ``obj`` as JSON atomically; NumPy and JAX scalars allowed.

  Raises:
    OSError: naming ``path`` and the cause (a full disk, a read-only
      folder); ``path`` is then unchanged and no temporary file is left.
  """
  path = Path(path)
  text = json.dumps(obj, indent=1, default=_json_default)
  tmp = path.with_suffix(path.suffix + ".tmp")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text)
    tmp.replace(path)
  except OSError as e:
    with contextlib.suppress(OSError):
      tmp.unlink(missing_ok=True)
    raise OSError(e.errno, e.strerror or str(e), str(path)) from e


def _json_default(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating, jax.Array)):
    return float(x)
  raise TypeError(f"not JSON serializable: {type(x)}")
