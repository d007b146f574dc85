"""Integer serving: quantized models with int8 / int4 weights on disk.

A model trained (or unlearned) with fake quantization keeps float kernels;
every quantized matmul re-quantizes them on each forward pass. Serving needs
only the integers and their scales. :func:`convert` asks AQT's own freezer
for them: the model runs once with ``QuantSpec.mode="convert"``, and each
``AqtDotGeneral`` writes its weight as integers (``int8``, or ``jnp.int4``
for 4-bit weights) with one float32 scale per output channel into the
``"aqt"`` variable collection, computed by the very code that quantizes the
weights in training (same absmax scale, same round-to-nearest-even and clip).
The serving model (:func:`serving_model`, ``mode="serve"``) reads them back
and has no float copy of those kernels; float layers (the first convolution
and the classifier with ``float_ends``), biases and BatchNorm stay float.

Serving computes exactly what evaluation computes: activations are still
quantized on the fly (per-tensor absmax over the whole batch), the matmul is
the same integer ``dot_general`` with int32 accumulation, and the outputs are
rescaled by the same scales. Logits are bit-identical to
``train.predict``'s (checked on digits, W8A8 and W4A8) *when the batches are
the same*: because the activation scale is shared by the whole batch, a
prediction depends on the other examples in its batch (and on the zero rows
padding the last batch). :func:`predict` batches exactly like
:func:`oeu_jax.train.predict` (fixed ``batch_size``, last batch zero-padded);
serve with the same ``batch_size`` to reproduce the evaluated predictions.

:func:`export` converts every checkpoint under a work directory (layout of
:mod:`oeu_jax.pipeline`) and writes the serving variables with
:mod:`oeu_jax.checkpointing` plus an ``export.json`` with sizes.

References:
  AQT freezer (QuantMode.CONVERT / SERVE): https://github.com/google/aqt
"""

from __future__ import annotations

import ast
import functools
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from oeu_jax import checkpointing
from oeu_jax import data as data_lib
from oeu_jax import models
from oeu_jax import quantization
from oeu_jax import train as train_lib

__all__ = [
    "AQT_COLLECTION",
    "EXPORT_JSON",
    "MODEL_JSON",
    "serving_model",
    "convert",
    "serving_apply",
    "predict",
    "model_size_bytes",
    "find_checkpoints",
    "load_variables",
    "export",
    "load_exported",
]

AQT_COLLECTION = "aqt"
EXPORT_JSON = "export.json"
# Optional architecture record next to a run's checkpoints (see _model_spec).
MODEL_JSON = "model.json"
FORMAT = "oeu_jax.serving/1"

_RUN_DIR = re.compile(r"^(?P<dataset>.+)-(?P<model>[^-]+)-(?P<bits>[^-]+)"
                      r"-(?P<tag>[0-9a-f]+)$")


# --------------------------------------------------------------------------
# Conversion and serving.


def _weight_spec(model: nn.Module) -> quantization.QuantSpec:
  """The model's spec; ValueError when no weight is quantized."""
  spec = getattr(model, "quant", None)
  if spec is None or spec.weight_bits is None:
    raise ValueError(
        f"{type(model).__name__} has float weights (quant={spec!r}): nothing"
        " to convert to integers. Build it with a quantized preset (e.g."
        " bits='w8a8' or 'w4a8').")
  return spec


def serving_model(model: nn.Module) -> nn.Module:
  """The serving twin of a quantized model (``QuantSpec.mode="serve"``).

  Its quantized layers take their weights from the ``"aqt"`` collection
  written by :func:`convert` and have no float ``kernel`` parameter.

  Args:
    model: a module from :func:`oeu_jax.models.build_model` with quantized
      weights.

  Returns:
    ``model.clone`` with the serve mode.

  Raises:
    ValueError: if the model's weights are float.
  """
  spec = _weight_spec(model)
  return model.clone(quant=spec._replace(mode="serve"))


def _infer_input_shape(model: nn.Module, params: Any) -> tuple[int, int, int]:
  """An input shape that fits ``params`` (conversion only needs shapes).

  The frozen weights do not depend on the input; the input only has to flow
  through the network: channels from the first conv, and for the CNN the
  spatial size its ``fc1`` layer implies.
  """
  if isinstance(model, models.CNN):
    c_in = params["conv1"]["kernel"].shape[2]
    pooled = params["fc1"]["kernel"].shape[0] // model.features[-1]
    side = math.isqrt(pooled)
    if side * side != pooled:
      raise ValueError(
          "Cannot infer the CNN's input size from its fc1 layer; pass"
          " input_shape=(H, W, C).")
    return (2 * side, 2 * side, c_in)
  if "stem_conv" in params:
    # Overall stride 8: an 8x8 input reaches the pooling at 1x1.
    return (8, 8, params["stem_conv"]["kernel"].shape[2])
  raise ValueError(
      f"Cannot infer the input shape of {type(model).__name__}; pass"
      " input_shape=(H, W, C).")


def _paths(tree: Any) -> dict[str, Any]:
  return {jax.tree_util.keystr(p): leaf
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _restrict(tree: Any, like: Any) -> Any:
  """The leaves of nested dict ``tree`` at the key paths of ``like``."""
  if not isinstance(like, dict):
    return tree
  return {k: _restrict(tree[k], v) for k, v in like.items()}


def model_size_bytes(tree: Any, *, packed: bool = False) -> int:
  """Bytes of the arrays in a pytree.

  Args:
    tree: a pytree of arrays (or ``jax.ShapeDtypeStruct``).
    packed: count sub-byte integers (``jnp.int4``) at their bit width, as a
      packed file format would store them. ``False`` counts the bytes the
      arrays occupy in memory, where JAX and NumPy hold one int4 per byte.

  Returns:
    The total number of bytes.

  Examples:
    >>> model_size_bytes({"w": jnp.zeros((4, 4), jnp.float32),
    ...                   "q": jnp.zeros((4, 4), jnp.int4)})
    80
    >>> model_size_bytes({"q": jnp.zeros((4, 4), jnp.int4)}, packed=True)
    8
  """
  total = 0
  for leaf in jax.tree.leaves(tree):
    dtype = jnp.dtype(leaf.dtype)
    size = int(np.prod(np.shape(leaf), dtype=np.int64))
    if packed and jnp.issubdtype(dtype, jnp.integer):
      total += -(-size * jnp.iinfo(dtype).bits // 8)
    else:
      total += size * dtype.itemsize
  return total


@functools.partial(jax.jit, static_argnums=0)
def _convert_aqt(convert_model: nn.Module, variables: Any, x: jax.Array):
  # batch_stats is mutable only so that a model converted without its
  # BatchNorm statistics still runs (the frozen weights do not depend on
  # them); params are not mutable, so a missing weight is an error.
  _, state = convert_model.apply(variables, x, train=False,
                                 mutable=[AQT_COLLECTION, "batch_stats"])
  return state[AQT_COLLECTION]


def convert(model: nn.Module, params: Any, batch_stats: Any = None, *,
            input_shape: tuple[int, int, int] | None = None
            ) -> tuple[dict, dict]:
  """Freezes a quantized model's weights as integers plus scales.

  AQT computes the integer weights in ``"convert"`` mode, with the code that
  fake-quantizes them in training: per-output-channel absmax scale
  ``absmax / (2**(bits-1) - 0.5)``, round to nearest even, clip to
  ``+-(2**(bits-1) - 1)``, stored as ``int8`` (``jnp.int4`` for 4 bits) with
  float32 scales. Kernels of float layers (``float_ends``), biases and
  BatchNorm statistics are kept as they are.

  Args:
    model: a module from :func:`oeu_jax.models.build_model` with quantized
      weights (``mode="train"``, as trained).
    params: its trained or unlearned parameters.
    batch_stats: its BatchNorm statistics (``{}`` or ``None`` when none);
      copied into the result.
    input_shape: one example's ``(H, W, C)``; inferred from ``params`` when
      ``None`` (any shape that fits gives the same weights).

  Returns:
    ``(variables, info)``: ``variables`` is ``{"params": ..., "aqt": ...}``
    (plus ``"batch_stats"`` when the model has BatchNorm) for
    :func:`serving_apply` / :func:`predict`: ``params`` without the kernels
    of the quantized layers, ``aqt`` with each quantized layer's
    ``AqtDotGeneral_0/qrhs/{value,scale}``. ``info`` holds the weight dtype,
    the converted layers and sizes in bytes (see :func:`model_size_bytes`):
    ``float_bytes`` (params + batch_stats as given), ``serving_bytes`` and
    ``serving_packed_bytes`` (int4 at 4 bits), and, for the quantized layers
    alone, ``quantized_float_bytes`` (their float kernels) and
    ``quantized_int_bytes`` / ``quantized_packed_bytes`` (integers + scales).

  Raises:
    ValueError: if the model's weights are float, or the input shape cannot
      be inferred.

  Examples:
    >>> model = models.build_model("cnn", num_classes=3, bits="w8a8",
    ...                            features=(4, 8), hidden=8)
    >>> params, stats = models.init_model(model, jax.random.key(0), (8, 8, 1))
    >>> variables, info = convert(model, params, stats)
    >>> variables["aqt"]["fc1"]["AqtDotGeneral_0"]["qrhs"]["value"].dtype
    dtype('int8')
    >>> info["quantized_layers"]
    ['conv2', 'fc1']
  """
  spec = _weight_spec(model)
  if spec.mode != "train":
    raise ValueError(
        f"convert expects the model as trained (mode 'train'), got mode"
        f" {spec.mode!r}.")
  batch_stats = batch_stats or {}
  if input_shape is None:
    input_shape = _infer_input_shape(model, params)
  x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  convert_model = model.clone(quant=spec._replace(mode="convert"))
  aqt = _convert_aqt(convert_model, variables, x)

  serve = serving_model(model)
  declared = jax.eval_shape(
      functools.partial(serve.init, train=False), jax.random.key(0), x)
  frozen = {k: v for k, v in variables.items()}
  frozen["params"] = _restrict(params, declared["params"])
  frozen[AQT_COLLECTION] = aqt
  wanted = _paths(declared[AQT_COLLECTION])
  got = _paths(aqt)
  if {k: (v.shape, v.dtype) for k, v in wanted.items()} != {
      k: (v.shape, v.dtype) for k, v in got.items()}:
    raise AssertionError(  # An AQT change; not a user error.
        f"AQT's converted weights {sorted(got)} do not match what the serving"
        f" model reads {sorted(wanted)}.")

  layers = sorted(
      "/".join(str(getattr(k, "key", k)) for k in path[:-3])
      for path, _ in jax.tree_util.tree_flatten_with_path(aqt)[0]
      if getattr(path[-1], "key", None) == "value")
  removed = {k: v for k, v in _paths(params).items()
             if k not in _paths(frozen["params"])}
  dtype = next(leaf.dtype for path, leaf in
               jax.tree_util.tree_flatten_with_path(aqt)[0]
               if getattr(path[-1], "key", None) == "value")
  info = {
      "bits": f"w{spec.weight_bits}a{spec.act_bits or 'f'}",
      "weight_bits": spec.weight_bits,
      "act_bits": spec.act_bits,
      "weight_dtype": jnp.dtype(dtype).name,
      "quantized_layers": layers,
      "input_shape": list(input_shape),
      "float_bytes": model_size_bytes({"p": params, "b": batch_stats}),
      "serving_bytes": model_size_bytes(frozen),
      "serving_packed_bytes": model_size_bytes(frozen, packed=True),
      "quantized_float_bytes": model_size_bytes(removed),
      "quantized_int_bytes": model_size_bytes(aqt),
      "quantized_packed_bytes": model_size_bytes(aqt, packed=True),
  }
  return frozen, info


@functools.partial(jax.jit, static_argnums=0)
def _serve_logits(serve: nn.Module, variables: Any, x: jax.Array):
  # One compilation per (model, shape), as train._eval_logits.
  return serve.apply(variables, x, train=False)


def serving_apply(model: nn.Module, variables: Any, x: jax.Array) -> jax.Array:
  """Logits of one batch from converted variables (jitted).

  Equal to ``apply_model(model, params, batch_stats, x, train=False)[0]``
  (jitted) on the same batch ``x``; the batch is one activation-scale group.

  Args:
    model: the model as trained (the one given to :func:`convert`) or its
      :func:`serving_model`.
    variables: the first output of :func:`convert`.
    x: ``(N, H, W, C)`` float images.

  Returns:
    ``(N, num_classes)`` logits.

  Raises:
    ValueError: if the model's weights are float or ``x`` is not NHWC float.
  """
  if jnp.ndim(x) != 4 or not jnp.issubdtype(jnp.result_type(x),
                                            jnp.floating):
    raise ValueError(f"x must be 4-D (NHWC) floats, got shape {jnp.shape(x)}"
                     f" and dtype {jnp.result_type(x)}.")
  spec = _weight_spec(model)
  serve = model if spec.mode == "serve" else serving_model(model)
  return _serve_logits(serve, variables, x)


def predict(model: nn.Module, variables: Any, x: np.ndarray, *,
            batch_size: int = 512) -> np.ndarray:
  """Serving logits of ``x`` batched exactly like :func:`train.predict`.

  Batches of ``batch_size`` in order, the last one zero-padded to full size.
  With the same ``batch_size`` the logits equal ``train.predict``'s bit for
  bit (the activation scale is per batch, so other batchings may differ).

  Args:
    model: the model as trained, or its :func:`serving_model`.
    variables: the first output of :func:`convert`.
    x: ``(N, H, W, C)`` images.
    batch_size: compiled batch size.

  Returns:
    ``(N, K)`` float32 NumPy logits.

  Raises:
    ValueError: on an empty input or a float model.
  """
  return train_lib.batched(lambda c: serving_apply(model, variables, c), x,
                           batch_size=batch_size)


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


def _read_manifest(directory: Path, step: int) -> list[dict]:
  # The item names are checkpointing's; its format is versioned in FORMAT.
  options = ocp.CheckpointManagerOptions(create=False)
  try:
    with ocp.CheckpointManager(directory, options=options) as mngr:
      manifest = mngr.restore(step, args=ocp.args.Composite(**{
          checkpointing._MANIFEST: ocp.args.JsonRestore()}))[
              checkpointing._MANIFEST]
  except Exception as e:  # orbax raises many types.
    raise checkpointing.CheckpointError(
        f"Cannot read the manifest of {directory / str(step)}: "
        f"{type(e).__name__}: {e}") from e
  if not isinstance(manifest, dict) or not isinstance(
      manifest.get("leaves"), list):
    raise checkpointing.CheckpointError(
        f"{directory / str(step)} has no oeu_jax checkpoint manifest.")
  return manifest["leaves"]


def load_variables(ckpt_dir: str | os.PathLike, *,
                   step: int | None = None) -> dict:
  """The model variables of any checkpoint of this project, as nested dicts.

  The checkpoint's manifest gives the tree (``TrainState``, ``UnlearnState``
  or an exported ``{"params", "batch_stats", "aqt"}`` dict), so no optimizer
  or method state needs to be rebuilt; checksums are verified by
  :func:`oeu_jax.checkpointing.restore_checkpoint`.

  Args:
    ckpt_dir: a checkpoint directory (the one holding step directories).
    step: the step; the latest complete one when ``None``.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` is ``{}`` when
    the model has none) plus ``"aqt"`` for an exported model.

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
  target = _target_from_manifest(_read_manifest(ckpt_dir, step))
  tree = _plain(checkpointing.restore_checkpoint(ckpt_dir, target, step=step))
  if not isinstance(tree, dict) or "params" not in tree:
    raise ValueError(f"The checkpoint {ckpt_dir / str(step)} holds no model"
                     " parameters ('params').")
  out = {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}
  if AQT_COLLECTION in tree:
    out[AQT_COLLECTION] = tree[AQT_COLLECTION]
  return out


# --------------------------------------------------------------------------
# Export of a work directory.


def _is_checkpoint_dir(path: Path) -> bool:
  try:
    return any(c.name.isdigit() and (c / checkpointing._MANIFEST).is_dir()
               for c in path.iterdir())
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
  root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
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


def _run_identity(ckpt_dir: Path) -> tuple[Path, dict]:
  """The ``<dataset>-<model>-<bits>-<tag>`` folder above a checkpoint."""
  for folder in (ckpt_dir, *ckpt_dir.parents):
    m = _RUN_DIR.match(folder.name)
    if (m and m["dataset"] in data_lib.DATASETS and m["model"] in models.MODELS
        and m["bits"] in quantization.BITS):
      return folder, m.groupdict()
  raise ValueError(
      f"Cannot tell the model of the checkpoint {ckpt_dir}: it is not under a"
      " <dataset>-<model>-<bits>-<hash> folder (the pipeline's layout).")


def _shapes(tree: Any) -> dict[str, tuple]:
  return {k: tuple(np.shape(v)) for k, v in _paths(tree).items()}


def _candidate_kwargs(name: str, params: Any) -> list[dict]:
  """Model attributes that may have produced ``params``; checked by shape."""
  if name == "cnn":
    return [{"features": (params["conv1"]["kernel"].shape[-1],
                          params["conv2"]["kernel"].shape[-1]),
             "hidden": params["fc1"]["kernel"].shape[-1]}]
  stem = params["stem_conv"]["kernel"].shape[-1]
  if name == "resnet18":
    return [{"width": stem / 64}]
  last = params["block16"]["project_conv"]["kernel"].shape[-1]
  widths = [0.5, stem / 32, last / 320] + [k / 32 for k in range(1, 65)]
  return [{"width": w} for w in dict.fromkeys(widths)]


def _model_spec(run_dir: Path, ident: dict, params: Any,
                float_ends: bool) -> dict:
  """Rebuild arguments of the model behind ``params``.

  ``run_dir/model.json`` (keys ``model``, ``bits``, ``num_classes``,
  ``float_ends``, ``model_kwargs``) is used when present. Otherwise the
  model name and bits come from the folder name, the classes and widths from
  the parameter shapes, and ``float_ends`` from the argument: it leaves no
  trace in the parameters.
  """
  record = run_dir / MODEL_JSON
  if record.is_file():
    try:
      spec = json.loads(record.read_text())
      spec = {"model": spec["model"], "bits": spec["bits"],
              "num_classes": int(spec["num_classes"]),
              "float_ends": bool(spec["float_ends"]),
              "model_kwargs": {k: tuple(v) if isinstance(v, list) else v
                               for k, v in spec.get("model_kwargs",
                                                    {}).items()}}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      raise ValueError(f"{record} is not a valid model record: {e!r}") from e
    spec["source"] = str(record)
    return spec
  name = ident["model"]
  num_classes = int(params["head"]["bias"].shape[0])
  wanted = _shapes(params)
  for kwargs in _candidate_kwargs(name, params):
    model = models.build_model(name, num_classes=num_classes, bits="float",
                               **kwargs)
    shape = _infer_input_shape(model, params)
    got = jax.eval_shape(lambda m=model, s=shape: models.init_model(
        m, jax.random.key(0), s))[0]
    if _shapes(got) == wanted:
      return {"model": name, "bits": ident["bits"],
              "num_classes": num_classes, "float_ends": float_ends,
              "model_kwargs": kwargs, "source": "inferred"}
  raise ValueError(
      f"Cannot rebuild the {name} behind {run_dir} from its parameter shapes;"
      f" write {run_dir / MODEL_JSON} with its model_kwargs.")


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


def export(path: str | os.PathLike, out_dir: str | os.PathLike, *,
           float_ends: bool = True, verify: bool = True) -> dict:
  """Converts every checkpoint under ``path`` to integer serving form.

  Each checkpoint directory found (``checkpoints/<dataset>-<model>-<bits>-
  <hash>/seed<N>/{original, retrain-*, <method>-*}``) is restored, converted
  with :func:`convert`, and written with :mod:`oeu_jax.checkpointing` to
  ``out_dir`` at the same relative path and step, as the tree
  ``{"params", "batch_stats", "aqt"}`` (read it back with
  :func:`load_exported`). ``out_dir/export.json`` lists every model with its
  architecture, the weight dtype and the sizes of :func:`convert`'s info.
  Float models (bits ``float``) have nothing to convert and are listed under
  ``skipped``. A second export into the same ``out_dir`` replaces the first.

  The architecture comes from the folder name (dataset, model, bits) and the
  parameter shapes; ``float_ends`` cannot be seen in the parameters and is
  taken from the argument (the pipeline's default, ``True``) unless a
  ``model.json`` next to the run's seeds says otherwise.

  Args:
    path: a work directory, or any directory at or under its
      ``checkpoints/`` folder (e.g. one run's checkpoint directory).
    out_dir: where to write; created; must be new, empty, or an earlier
      export.
    float_ends: whether the first conv and the classifier were float.
    verify: check that serving logits equal the fake-quantized forward pass
      on a batch of random inputs (recorded as ``max_abs_diff`` and
      ``argmax_equal``); a mismatch raises.

  Returns:
    The ``export.json`` record: ``{"format", "source", "out_dir", "models":
    [...], "skipped": [...]}``; each model has ``source``, ``dest`` (relative
    to ``out_dir``), ``step``, ``dataset``, ``model``, ``bits``,
    ``num_classes``, ``float_ends``, ``model_kwargs``, ``weight_dtype``,
    ``quantized_layers`` and the byte counts ``float_bytes``,
    ``serving_bytes``, ``serving_packed_bytes``, ``quantized_float_bytes``,
    ``quantized_int_bytes``, ``quantized_packed_bytes``.

  Raises:
    FileNotFoundError: ``path`` does not exist, or holds no checkpoint.
    ValueError: a checkpoint outside the pipeline's layout, a model that
      cannot be rebuilt, only float models, or a non-empty ``out_dir`` that
      is not an export (each naming the path).
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
    run_dir, ident = _run_identity(ckpt)
    if ident["bits"] == "float":
      skipped.append({"source": str(ckpt),
                      "reason": "float model: nothing to convert"})
    else:
      plans.append((ckpt, run_dir, ident))
  if not plans:
    raise ValueError(
        f"Only float models under {path} ({len(skipped)} checkpoints):"
        " nothing to convert to integers.")
  if out_dir.exists() and not out_dir.is_dir():
    raise ValueError(f"{out_dir} exists and is not a directory.")
  _remove_previous(out_dir)

  entries = []
  for ckpt, run_dir, ident in plans:
    step = checkpointing.latest_step(ckpt)
    variables = load_variables(ckpt, step=step)
    spec = _model_spec(run_dir, ident, variables["params"], float_ends)
    model = models.build_model(spec["model"], num_classes=spec["num_classes"],
                               bits=spec["bits"],
                               float_ends=spec["float_ends"],
                               **spec["model_kwargs"])
    if AQT_COLLECTION in variables:
      raise ValueError(f"{ckpt} is already an exported (serving) model.")
    frozen, info = convert(model, variables["params"],
                           variables["batch_stats"])
    rel = ckpt.relative_to(run_dir.parent)  # <run>/seed<N>/<name>
    tree = dict(frozen)
    tree.setdefault("batch_stats", {})
    checkpointing.save_checkpoint(out_dir / rel, step, tree, max_to_keep=1)
    entry = {"source": str(ckpt), "dest": str(rel), "step": step,
             "dataset": ident["dataset"], "model": spec["model"],
             "bits": spec["bits"], "num_classes": spec["num_classes"],
             "float_ends": spec["float_ends"],
             "model_kwargs": dict(spec["model_kwargs"]),
             "architecture_from": spec["source"]}
    entry.update(info)
    if verify:
      entry.update(_verify(model, variables, frozen, info["input_shape"],
                           ckpt))
    entries.append(entry)
  record = {"format": FORMAT, "source": str(path), "out_dir": str(out_dir),
            "models": entries, "skipped": skipped}
  text = json.dumps(record, indent=1, default=_json_default)
  out_dir.mkdir(parents=True, exist_ok=True)
  tmp = out_dir / (EXPORT_JSON + ".tmp")
  tmp.write_text(text)
  tmp.replace(out_dir / EXPORT_JSON)
  return json.loads(text)  # What the file says (tuples become lists).


def _json_default(x):
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, np.floating):
    return float(x)
  raise TypeError(f"not JSON serializable: {type(x)}")


def _verify(model, variables, frozen, input_shape, ckpt) -> dict:
  x = jax.random.uniform(jax.random.key(0), (16,) + tuple(input_shape))
  want = _eval_logits(model, variables["params"], variables["batch_stats"], x)
  got = serving_apply(model, frozen, x)
  diff = float(jnp.max(jnp.abs(want - got)))
  same = bool(jnp.all(jnp.argmax(want, -1) == jnp.argmax(got, -1)))
  if not same or not np.allclose(want, got, rtol=1e-5, atol=1e-5):
    raise AssertionError(
        f"Serving logits of {ckpt} differ from the fake-quantized ones (max"
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
    the model as trained (give it to :func:`predict`), and the serving
    variables.

  Raises:
    FileNotFoundError: no ``export.json`` in ``out_dir``.
  """
  out_dir = Path(out_dir).resolve()
  record = out_dir / EXPORT_JSON
  if not record.is_file():
    raise FileNotFoundError(f"No {EXPORT_JSON} in {out_dir}.")
  loaded = []
  for entry in json.loads(record.read_text())["models"]:
    kwargs = {k: tuple(v) if isinstance(v, list) else v
              for k, v in entry["model_kwargs"].items()}
    model = models.build_model(entry["model"],
                               num_classes=entry["num_classes"],
                               bits=entry["bits"],
                               float_ends=entry["float_ends"], **kwargs)
    variables = load_variables(out_dir / entry["dest"], step=entry["step"])
    if not variables["batch_stats"]:
      del variables["batch_stats"]
    loaded.append((entry, model, variables))
  return loaded
