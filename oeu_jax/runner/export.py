"""``python -m oeu_jax export``: a work directory in integer serving form.

Every checkpoint found under a work directory is restored, converted with
:func:`oeu_jax.nn.serving.convert` and written with
:mod:`oeu_jax.engine.checkpointing` at the same relative path, plus an
``export.json`` listing every model with its architecture, input shape and
sizes. What each checkpoint is comes from two records, never from folder
names or parameter shapes: the run's ``model.json``
(:func:`oeu_jax.runner.layout.read_model_json`: model, bits, classes, float
ends, model attributes and the input shape of the data it was trained on)
and the checkpoint's manifest
(:func:`oeu_jax.engine.checkpointing.read_manifest`: the saved tree, so no
optimizer or method state needs to be rebuilt).
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from oeu_jax.engine import checkpointing
from oeu_jax.nn import models
from oeu_jax.nn import serving
from oeu_jax.runner import layout as layout_lib

EXPORT_JSON = "export.json"
FORMAT = "oeu_jax.nn.serving/1"


# --------------------------------------------------------------------------
# Reading checkpoints without knowing their optimizer state.


class _Attrs:
  """A pytree node whose children are attributes (``.name`` in keystr)."""

  def __init__(self, items: dict):
    self.items = items

  def __getitem__(self, name):
    return self.items[name]

  def __contains__(self, name):
    return name in self.items


jax.tree_util.register_pytree_with_keys(
    _Attrs,
    lambda a: (tuple((jax.tree_util.GetAttrKey(k), v)
                     for k, v in a.items.items()), tuple(a.items)),
    lambda names, children: _Attrs(dict(zip(names, children))),
    flatten_func=lambda a: (tuple(a.items.values()), tuple(a.items)))

_TOKEN = re.compile(
    r"\.(?P<attr>[A-Za-z_]\w*)|\[(?P<index>-?\d+)\]"
    r"|\[(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]")


def _parse_keystr(path: str) -> list[tuple[str, Any]]:
  keys, pos = [], 0
  while pos < len(path):
    m = _TOKEN.match(path, pos)
    if m is None:
      raise ValueError(f"cannot parse key path {path!r}")
    if m.group("attr") is not None:
      keys.append(("attr", m.group("attr")))
    elif m.group("index") is not None:
      keys.append(("item", int(m.group("index"))))
    else:
      keys.append(("item", ast.literal_eval(m.group("str"))))
    pos = m.end()
  return keys


def _target_from_manifest(entries: list[dict]) -> Any:
  """A pytree whose key paths, shapes and dtypes are the manifest's."""
  root: dict = {}
  kinds: dict[int, str] = {}

  def leaf(entry):
    shape = tuple(entry["shape"])
    if entry["kind"] == "key":
      stored = tuple(entry["stored_shape"])
      return jax.eval_shape(lambda: jax.random.wrap_key_data(
          jnp.zeros(stored, jnp.uint32), impl=entry["impl"]))
    return jax.ShapeDtypeStruct(shape, jnp.dtype(entry["dtype"]))

  for entry in entries:
    keys = _parse_keystr(entry["path"])
    if not keys:
      raise ValueError("a checkpoint whose root is a single array")
    node = root
    for depth, (kind, key) in enumerate(keys):
      if kinds.setdefault(id(node), kind) != kind:
        raise ValueError(f"mixed attribute and item keys at {entry['path']}")
      if depth == len(keys) - 1:
        node[key] = leaf(entry)
      else:
        node = node.setdefault(key, {})

  def build(node):
    if not isinstance(node, dict):
      return node
    children = {k: build(v) for k, v in node.items()}
    return _Attrs(children) if kinds.get(id(node)) == "attr" else children

  return build(root)


def _plain(tree: Any) -> Any:
  if isinstance(tree, _Attrs):
    return {k: _plain(v) for k, v in tree.items.items()}
  if isinstance(tree, dict):
    return {k: _plain(v) for k, v in tree.items()}
  return tree


def load_variables(ckpt_dir: str | os.PathLike, *,
                   step: int | None = None) -> dict:
  """The model variables of any checkpoint of this project, as nested dicts.

  The checkpoint's manifest gives the tree (``TrainState``, ``UnlearnState``
  or an exported ``{"params", "batch_stats", <collection>}`` dict), so no
  optimizer or method state needs to be rebuilt; checksums are verified by
  :func:`oeu_jax.engine.checkpointing.restore_checkpoint`.

  Args:
    ckpt_dir: a checkpoint directory (the one holding step directories).
    step: the step; the latest complete one when ``None``.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` is ``{}`` when
    the model has none) plus the backend's collection (``"aqt"``,
    ``"qwix"``) for an exported model.

  Raises:
    FileNotFoundError: no complete checkpoint in ``ckpt_dir``.
    ValueError: the checkpoint holds no ``params``.
    CheckpointError: a corrupt checkpoint.
  """
  ckpt_dir = Path(ckpt_dir).resolve()
  if step is None:
    step = checkpointing.latest_step(ckpt_dir)
    if step is None:
      raise FileNotFoundError(f"No complete checkpoint in {ckpt_dir}.")
  manifest = checkpointing.read_manifest(ckpt_dir, step=step)
  target = _target_from_manifest(manifest["leaves"])
  tree = _plain(checkpointing.restore_checkpoint(ckpt_dir, target, step=step))
  if not isinstance(tree, dict) or "params" not in tree:
    raise ValueError(f"The checkpoint {ckpt_dir / str(step)} holds no model"
                     " parameters ('params').")
  out = {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}
  out.update({k: v for k, v in tree.items()
              if k in serving.frozen_collections()})
  return out


# --------------------------------------------------------------------------
# Export of a work directory.


def _is_checkpoint_dir(path: Path) -> bool:
  """Holds step directories (``0``, ``1``, ...): a checkpoint, not a run."""
  try:
    return any(c.name.isdigit() and c.is_dir() for c in path.iterdir())
  except OSError:
    return False


def find_checkpoints(path: str | os.PathLike, *,
                     exclude: str | os.PathLike | None = None) -> list[Path]:
  """Checkpoint directories at or under ``path``, sorted.

  Args:
    path: a work directory (its ``checkpoints/`` folder is searched when it
      has one), any folder above checkpoints, or one checkpoint directory.
    exclude: a folder not to search (the export's own output).

  Returns:
    Absolute directories that hold a complete checkpoint.

  Raises:
    FileNotFoundError: if ``path`` does not exist or is not a directory.
  """
  path = Path(path).resolve()
  if not path.exists():
    raise FileNotFoundError(f"No workdir or checkpoint directory at {path}.")
  if not path.is_dir():
    raise FileNotFoundError(f"{path} is not a directory.")
  exclude = Path(exclude).resolve() if exclude is not None else None
  checkpoints = path / layout_lib.CHECKPOINTS
  root = checkpoints if checkpoints.is_dir() else path
  found = []
  for dirpath, dirnames, _ in os.walk(root):
    here = Path(dirpath)
    if exclude is not None and (here == exclude or exclude in here.parents):
      dirnames[:] = []
      continue
    if _is_checkpoint_dir(here):
      dirnames[:] = []  # Step directories are not runs.
      if checkpointing.latest_step(here) is not None:
        found.append(here)
    else:
      dirnames.sort()
  return sorted(found)


def _model_spec(ckpt: Path) -> tuple[Path, dict]:
  """The run folder above ``ckpt`` and its ``model.json``."""
  run_dir = layout_lib.find_run_dir(ckpt)
  if run_dir is None:
    raise ValueError(
        f"Cannot tell the model of the checkpoint {ckpt}: no"
        f" {layout_lib.MODEL_JSON} at or above it (the pipeline writes one"
        " per run).")
  return run_dir, layout_lib.read_model_json(run_dir)


def export(path: str | os.PathLike, out_dir: str | os.PathLike, *,
           verify: bool = True) -> dict:
  """Converts every checkpoint under ``path`` to integer serving form.

  Each checkpoint directory found (``checkpoints/<run>/seed<N>/{original,
  retrain-*, <method>-*}``, see :mod:`oeu_jax.runner.layout`) is restored,
  converted with :func:`oeu_jax.nn.serving.convert`, and written with
  :mod:`oeu_jax.engine.checkpointing` to ``out_dir`` at the same relative path
  and step, as the tree ``{"params", "batch_stats", <collection>}`` (read it
  back with :func:`load_exported`). The model is rebuilt from the run's
  ``model.json``. Float models (bits ``float``) have nothing to convert and
  are listed under ``skipped``. A second export into the same ``out_dir``
  replaces the first.

  Args:
    path: a work directory, or any directory at or under its
      ``checkpoints/`` folder (e.g. one run's checkpoint directory).
    out_dir: where to write; created; must be new, empty, or an earlier
      export.
    verify: check that serving logits equal the fake-quantized forward pass
      on a batch of random inputs (recorded as ``max_abs_diff`` and
      ``argmax_equal``); a mismatch raises.

  Returns:
    The ``export.json`` record: ``{"format", "source", "out_dir", "models":
    [...], "skipped": [...]}``; each model has ``source``, ``dest`` (relative
    to ``out_dir``), ``step``, ``dataset``, ``model``, ``bits``,
    ``num_classes``, ``float_ends``, ``model_kwargs``, ``architecture_from``
    (the ``model.json`` read), ``input_shape``, ``weight_dtype``,
    ``quantized_layers`` and the byte counts ``float_bytes``,
    ``serving_bytes``, ``serving_packed_bytes``, ``quantized_float_bytes``,
    ``quantized_int_bytes``, ``quantized_packed_bytes``.

  Raises:
    FileNotFoundError: ``path`` does not exist, or holds no checkpoint.
    ValueError: a checkpoint with no ``model.json`` above it, an invalid or
      outdated ``model.json``, only float models, or a non-empty ``out_dir``
      that is not an export (each naming the path).
    CheckpointError: a corrupt checkpoint.
    AssertionError: serving logits differ from the fake-quantized ones.
  """
  path = Path(path).resolve()
  out_dir = Path(out_dir).resolve()
  found = find_checkpoints(path, exclude=out_dir)
  if not found:
    raise FileNotFoundError(f"No checkpoints found under {path}.")
  plans, skipped = [], []
  for ckpt in found:
    run_dir, spec = _model_spec(ckpt)
    if spec["bits"] == "float":
      skipped.append({"source": str(ckpt),
                      "reason": "float model: nothing to convert"})
    else:
      plans.append((ckpt, run_dir, spec))
  if not plans:
    raise ValueError(
        f"Only float models under {path} ({len(skipped)} checkpoints):"
        " nothing to convert to integers.")
  if out_dir.exists() and not out_dir.is_dir():
    raise ValueError(f"{out_dir} exists and is not a directory.")
  _remove_previous(out_dir)

  entries = []
  for ckpt, run_dir, spec in plans:
    step = checkpointing.latest_step(ckpt)
    variables = load_variables(ckpt, step=step)
    if serving.frozen_collections() & set(variables):
      raise ValueError(f"{ckpt} is already an exported (serving) model.")
    model = layout_lib.model_of(spec)
    frozen, info = serving.convert(model, variables["params"],
                                   variables["batch_stats"],
                                   input_shape=spec["input_shape"])
    rel = ckpt.relative_to(run_dir.parent)  # <run>/seed<N>/<name>
    tree = dict(frozen)
    tree.setdefault("batch_stats", {})
    checkpointing.save_checkpoint(out_dir / rel, step, tree, max_to_keep=1)
    entry = {"source": str(ckpt), "dest": str(rel), "step": step,
             "dataset": spec["dataset"], "model": spec["model"],
             "bits": spec["bits"], "quant_backend": spec["quant_backend"],
             "num_classes": spec["num_classes"],
             "float_ends": spec["float_ends"],
             "model_kwargs": dict(spec["model_kwargs"]),
             "architecture_from": str(run_dir / layout_lib.MODEL_JSON)}
    entry.update(info)
    if verify:
      entry.update(_verify(model, variables, frozen, info["input_shape"],
                           ckpt))
    entries.append(entry)
  record = {"format": FORMAT, "source": str(path), "out_dir": str(out_dir),
            "models": entries, "skipped": skipped}
  layout_lib.write_json(out_dir / EXPORT_JSON, record)
  # What the file says (tuples become lists).
  return json.loads((out_dir / EXPORT_JSON).read_text())


def _remove_previous(out_dir: Path) -> None:
  """Deletes the folders a previous export into ``out_dir`` wrote."""
  record = out_dir / EXPORT_JSON
  if not out_dir.exists():
    return
  if not record.is_file():
    if any(out_dir.iterdir()):
      raise ValueError(
          f"{out_dir} is not empty and holds no {EXPORT_JSON}; export into a"
          " new or empty folder.")
    return
  previous = json.loads(record.read_text())
  for entry in previous.get("models", []):
    dest = (out_dir / entry["dest"]).resolve()
    if out_dir in dest.parents and dest.is_dir():
      shutil.rmtree(dest)
      for parent in dest.parents:  # Folders left empty: <run>/seed<N>.
        if parent == out_dir or any(parent.iterdir()):
          break
        parent.rmdir()
  record.unlink()


def _verify(model, variables, frozen, input_shape, ckpt) -> dict:
  x = jax.random.uniform(jax.random.key(0), (16,) + tuple(input_shape))
  want = _eval_logits(model, variables["params"], variables["batch_stats"], x)
  got = serving.serving_apply(model, frozen, x)
  diff = float(jnp.max(jnp.abs(want - got)))
  same = bool(jnp.all(jnp.argmax(want, -1) == jnp.argmax(got, -1)))
  if not same or not np.allclose(want, got, rtol=1e-5, atol=1e-5):
    raise AssertionError(
        f"Serving logits of {ckpt} differ from the quantized ones (max"
        f" |diff| {diff:.3g}).")
  return {"max_abs_diff": diff, "argmax_equal": same}


@functools.partial(jax.jit, static_argnums=0)
def _eval_logits(model, params, batch_stats, x):
  return models.apply_model(model, params, batch_stats, x, train=False)[0]


def load_exported(out_dir: str | os.PathLike) -> list[tuple[dict, nn.Module,
                                                            dict]]:
  """Reads back every model of an export.

  Args:
    out_dir: the ``out_dir`` of :func:`export`.

  Returns:
    ``[(entry, model, variables), ...]`` in ``export.json`` order: the entry,
    the model as trained (give it to :func:`oeu_jax.nn.serving.predict`), and
    the serving variables.

  Raises:
    FileNotFoundError: no ``export.json`` in ``out_dir``.
  """
  out_dir = Path(out_dir).resolve()
  record = out_dir / EXPORT_JSON
  if not record.is_file():
    raise FileNotFoundError(f"No {EXPORT_JSON} in {out_dir}.")
  loaded = []
  for entry in json.loads(record.read_text())["models"]:
    model = layout_lib.model_of({
        **entry, "quant_backend": entry.get("quant_backend", "aqt"),
        "model_kwargs": {k: tuple(v) if isinstance(v, list) else v
                         for k, v in entry["model_kwargs"].items()}})
    variables = load_variables(out_dir / entry["dest"], step=entry["step"])
    if not variables["batch_stats"]:
      del variables["batch_stats"]
    loaded.append((entry, model, variables))
  return loaded
