"""Integer serving: quantized models with int8 / int4 weights, any backend.

A model trained (or unlearned) with quantization keeps float kernels; every
quantized matmul re-quantizes them on each forward pass. Serving needs only
the integers and their scales. :func:`convert` asks the model's backend
(:mod:`oeu_jax.nn.quantization.backends`) for them: the model runs once
with ``QuantSpec.mode="convert"``, and each quantized layer writes its
weight as integers (``int8``, or ``jnp.int4`` for 4-bit weights) with one
float32 scale per output channel into the backend's variable collection
(:func:`collection`: ``"aqt"`` for the ``aqt`` and ``fake`` backends,
whose integers are AQT's, ``"qwix"`` for ``qwix``), computed by the very code
that quantizes the weights in training. The serving model
(:func:`serving_model`, ``mode="serve"``) reads them back and has no float
copy of those kernels; float layers (the first convolution and the
classifier with ``float_ends``), biases and BatchNorm stay float.

Serving computes what evaluation computes: activations are still quantized
on the fly (per-tensor absmax over the whole batch), the contraction is an
integer one with int32 accumulation, and the outputs are rescaled by the
same scales. Logits equal ``inference.predict``'s (``tests/test_serving.py``,
``tests/test_backends.py``) *when the batches are the same*: because the
activation scale is shared by the whole batch, a prediction depends on the
other examples in its batch (and on the zero rows padding the last batch).
:func:`predict` batches exactly like :func:`oeu_jax.nn.inference.predict`
(fixed ``batch_size``, last batch zero-padded); serve with the same
``batch_size`` to reproduce the evaluated predictions.

Exporting a work directory's checkpoints in this form is
:mod:`oeu_jax.runner.export`.

References:
  AQT freezer (QuantMode.CONVERT / SERVE): https://github.com/google/aqt
  Qwix: https://github.com/google/qwix
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from oeu_jax.nn import inference
from oeu_jax.nn import quantization

__all__ = [
    "collection",
    "frozen_collections",
    "serving_model",
    "convert",
    "serving_apply",
    "predict",
    "model_size_bytes",
]



def collection(model: nn.Module) -> str:
  """The variable collection holding a quantized model's frozen weights.

  Raises:
    ValueError: if the model's weights are float.

  Examples:
    >>> from oeu_jax.nn import models
    >>> collection(models.build_model("cnn", num_classes=3, bits="w8a8"))
    'aqt'
  """
  return quantization.backend(_weight_spec(model)).COLLECTION


def frozen_collections() -> set[str]:
  """Every backend's serving collection (``"aqt"``, ``"qwix"``, ...)."""
  return {quantization.backend(quantization.QuantSpec(8, 8, backend=b))
          .COLLECTION for b in quantization.BACKENDS}


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

  Its quantized layers take their weights from the backend's collection
  (:func:`collection`) written by :func:`convert` and have no float
  ``kernel`` parameter.

  Args:
    model: a module from :func:`oeu_jax.nn.models.build_model` with quantized
      weights.

  Returns:
    ``model.clone`` with the serve mode.

  Raises:
    ValueError: if the model's weights are float.
  """
  spec = _weight_spec(model)
  return model.clone(quant=dataclasses.replace(spec, mode="serve"))


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


@functools.partial(jax.jit, static_argnums=(0, 1))
def _frozen_weights(convert_model: nn.Module, name: str, variables: Any,
                    x: jax.Array):
  # batch_stats is mutable only so that a model converted without its
  # BatchNorm statistics still runs (the frozen weights do not depend on
  # them); params are not mutable, so a missing weight is an error.
  _, state = convert_model.apply(variables, x, train=False,
                                 mutable=[name, "batch_stats"])
  return state[name]


def convert(model: nn.Module, params: Any, batch_stats: Any = None, *,
            input_shape: tuple[int, ...]) -> tuple[dict, dict]:
  """Freezes a quantized model's weights as integers plus scales.

  The backend computes the integer weights in ``"convert"`` mode, with the
  code that quantizes them in training: per-output-channel absmax scale
  ``absmax / (2**(bits-1) - 0.5)``, round to nearest even, clipped (AQT:
  to ``+-(2**(bits-1) - 1)``; Qwix: to ``[-2**(bits-1), 2**(bits-1) - 1]``),
  stored as ``int8`` (``jnp.int4`` for 4 bits) with float32 scales. Kernels
  of float layers (``float_ends``), biases and BatchNorm statistics are kept
  as they are.

  Args:
    model: a module from :func:`oeu_jax.nn.models.build_model` with quantized
      weights (``mode="train"``, as trained).
    params: its trained or unlearned parameters.
    batch_stats: its BatchNorm statistics (``{}`` or ``None`` when none);
      copied into the result.
    input_shape: one example's ``(H, W, C)``, as the model was trained on
      (recorded in ``info``; the frozen weights do not depend on it, but the
      input has to flow through the network).

  Returns:
    ``(variables, info)``: ``variables`` is ``{"params": ..., C: ...}``
    with ``C = collection(model)`` (plus ``"batch_stats"`` when the model
    has BatchNorm) for :func:`serving_apply` / :func:`predict`: ``params``
    without the kernels of the quantized layers, ``C`` with each quantized
    layer's integers and scales (AQT: ``AqtDotGeneral_0/qrhs/{value,scale}``;
    Qwix: ``qrhs/{value,scale}``). ``info`` holds the backend, the weight
    dtype,
    the converted layers and sizes in bytes (see :func:`model_size_bytes`):
    ``float_bytes`` (params + batch_stats as given), ``serving_bytes`` and
    ``serving_packed_bytes`` (int4 at 4 bits), and, for the quantized layers
    alone, ``quantized_float_bytes`` (their float kernels) and
    ``quantized_int_bytes`` / ``quantized_packed_bytes`` (integers + scales).

  Raises:
    ValueError: if the model's weights are float or not as trained.

  Examples:
    >>> from oeu_jax.nn import models
    >>> model = models.build_model("cnn", num_classes=3, bits="w8a8",
    ...                            features=(4, 8), hidden=8)
    >>> params, stats = models.init_model(model, jax.random.key(0), (8, 8, 1))
    >>> variables, info = convert(model, params, stats,
    ...                           input_shape=(8, 8, 1))
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
  x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  convert_model = model.clone(quant=dataclasses.replace(spec, mode="convert"))
  name = collection(model)
  written = _frozen_weights(convert_model, name, variables, x)

  serve = serving_model(model)
  declared = jax.eval_shape(
      functools.partial(serve.init, train=False), jax.random.key(0), x)
  frozen = {k: v for k, v in variables.items()}
  frozen["params"] = _restrict(params, declared["params"])
  frozen[name] = written
  wanted = _paths(declared[name])
  got = _paths(written)
  if {k: (v.shape, v.dtype) for k, v in wanted.items()} != {
      k: (v.shape, v.dtype) for k, v in got.items()}:
    raise AssertionError(  # A backend change; not a user error.
        f"The converted weights {sorted(got)} do not match what the serving"
        f" model reads {sorted(wanted)}.")

  removed_paths = [
      path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
      if jax.tree_util.keystr(path) not in _paths(frozen["params"])]
  layers = sorted("/".join(str(getattr(k, "key", k)) for k in path[:-1])
                  for path in removed_paths)
  removed = {k: v for k, v in _paths(params).items()
             if k not in _paths(frozen["params"])}
  dtype = next(leaf.dtype for path, leaf in
               jax.tree_util.tree_flatten_with_path(written)[0]
               if getattr(path[-1], "key", None) == "value")
  info = {
      "backend": spec.backend,
      "bits": f"w{spec.weight_bits}a{spec.act_bits or 'f'}",
      "weight_bits": spec.weight_bits,
      "act_bits": spec.act_bits,
      "weight_dtype": jnp.dtype(dtype).name,
      "quantized_layers": layers,
      "input_shape": [int(d) for d in input_shape],
      "float_bytes": model_size_bytes({"p": params, "b": batch_stats}),
      "serving_bytes": model_size_bytes(frozen),
      "serving_packed_bytes": model_size_bytes(frozen, packed=True),
      "quantized_float_bytes": model_size_bytes(removed),
      "quantized_int_bytes": model_size_bytes(written),
      "quantized_packed_bytes": model_size_bytes(written, packed=True),
  }
  return frozen, info


@functools.partial(jax.jit, static_argnums=0)
def _serve_logits(serve: nn.Module, variables: Any, x: jax.Array):
  # One compilation per (model, shape), as inference._eval_logits.
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
  """Serving logits of ``x`` batched exactly like :func:`inference.predict`.

  Batches of ``batch_size`` in order, the last one zero-padded to full size.
  With the same ``batch_size`` the logits equal ``inference.predict``'s bit for
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
  return inference.batched(lambda c: serving_apply(model, variables, c), x,
                           batch_size=batch_size)
