"""Every quantization backend computes the same quantized network.

Backends: ``fake`` (the default), ``aqt`` and ``qwix``
(:mod:`oeu_jax.nn.quantization.backends`). Held to, on the CNN, ResNet-18
and MobileNetV2 at W8A8 and W4A8 (per-output-channel weights, per-tensor
activations, first conv and classifier float):

* forward outputs: ``aqt`` equals ``fake`` bit for bit here; ``qwix`` equals
  them bit for bit where no integer falls at the negative end of the range,
  and otherwise stays within the stated tolerance. Qwix clips to
  ``[-2**(b-1), 2**(b-1) - 1]``, AQT to ``+-(2**(b-1) - 1)``: a channel whose
  largest magnitude is negative gets -8 (Qwix) instead of -7 (AQT) at 4
  bits. Measured per layer (signed inputs): up to 0.15% at W8A8 and 6% at
  W4A8 (relative norm of the difference); whole models at these tiny widths
  up to 6% (W8A8) and 8.3% (W4A8, MobileNetV2); tolerance 10%, argmax
  agreeing on at least 3 of 4 examples.
* gradients: every quantized layer's kernel gets a non-zero gradient, and so
  does the input (AQT's own conv returns zeros: never train through it), per
  layer kind on every backend and through whole models.
* serving: the converted integer model predicts what the trained model
  predicts (argmax identical, logits equal here).

Shapes are tiny so that the file runs in about a minute.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_fake_quant import LAYERS  # one table of layer shapes

from oeu_jax import cli
from oeu_jax.nn import models
from oeu_jax.nn import quantization
from oeu_jax.nn import serving
from oeu_jax.nn.quantization import QuantSpec
from oeu_jax.nn.quantization.backends import qwix as qwix_backend

BACKENDS = quantization.BACKENDS
MODEL_TOL = 0.10

MODELS = {"cnn": (dict(features=(4, 8), hidden=16), (8, 8, 1)),
          "resnet18": (dict(width=4), (16, 16, 3)),
          "mobilenetv2": (dict(width=0.25), (16, 16, 3))}


def _spec(bits: str, backend: str) -> QuantSpec:
  return dataclasses.replace(quantization.preset(bits), backend=backend)


def _rel(a, b) -> float:
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_backends_are_the_files_of_the_package():
  assert BACKENDS == ("aqt", "fake", "qwix")
  for name in BACKENDS:
    module = quantization.backend(QuantSpec(8, 8, backend=name))
    assert module.__name__.endswith(f".backends.{name}")
    assert isinstance(module.COLLECTION, str)
    assert callable(module.dense) and callable(module.conv)
  assert QuantSpec(8, 8).backend == "fake"


@pytest.mark.parametrize("bits", [(8, 8), (4, 8), (4, 4)])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_layers_equal_where_no_integer_hits_the_negative_end(layer, bits):
  """Non-negative inputs and kernels: the three backends agree bit for
  bit, so Qwix's rounding and scales are AQT's."""
  make, shape = LAYERS[layer]
  x = jax.random.uniform(jax.random.key(1), shape)
  # The absmax on a pixel every convolution here reads (Qwix calibrates the
  # activation scale over the whole input, AQT over the pixels read).
  x = x.at[(0,) * len(shape)].set(2.0)
  out = {}
  for name in BACKENDS:
    module = make(QuantSpec(*bits, backend=name))
    params = jax.tree.map(jnp.abs, module.init(jax.random.key(0), x))
    out[name] = jax.jit(module.apply)(params, x)
  for name in BACKENDS:
    np.testing.assert_array_equal(out[name], out["fake"], err_msg=name)


@pytest.mark.parametrize("bits,tol", [((8, 8), 0.005), ((4, 8), 0.08)])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_layers_close_with_signed_values(layer, bits, tol):
  make, shape = LAYERS[layer]
  x = jax.random.normal(jax.random.key(1), shape)
  out = {}
  for name in BACKENDS:
    module = make(QuantSpec(*bits, backend=name))
    out[name] = jax.jit(module.apply)(module.init(jax.random.key(0), x), x)
  np.testing.assert_array_equal(out["aqt"], out["fake"])
  assert _rel(out["qwix"], out["fake"]) <= tol


def _model(name, bits, backend):
  kwargs, shape = MODELS[name]
  model = models.build_model(name, num_classes=5, bits=_spec(bits, backend),
                             **kwargs)
  params, stats = models.init_model(model, jax.random.key(0), shape)
  x = jax.random.uniform(jax.random.key(1), (8,) + shape)
  return model, params, stats, x, shape


# ResNet-18 and MobileNetV2 at W4A8 only: their compilations dominate.
MODEL_CASES = [("cnn", "w8a8"), ("cnn", "w4a8"), ("resnet18", "w4a8"),
               ("mobilenetv2", "w4a8")]


@pytest.mark.parametrize("name,bits", MODEL_CASES)
def test_models_agree_and_serve(name, bits):
  # AQT's whole-model equality with fake on the BatchNorm networks is
  # tests/test_fake_quant.py's; here the CNN takes every backend.
  backends = BACKENDS if name == "cnn" else ("fake", "qwix")
  logits = {}
  for backend in backends:
    model, params, stats, x, shape = _model(name, bits, backend)
    y = jax.jit(lambda p, s, x, m=model: models.apply_model(
        m, p, s, x, train=False)[0])(params, stats, x)
    logits[backend] = y
    if name != "cnn" and backend == "fake":
      continue  # tests/test_fake_quant.py serves these through AQT.
    # Serving predicts what the trained model predicts.
    frozen, info = serving.convert(model, params, stats, input_shape=shape)
    assert info["backend"] == backend
    assert serving.collection(model) in frozen
    served = serving.serving_apply(model, frozen, x)
    np.testing.assert_array_equal(jnp.argmax(served, -1), jnp.argmax(y, -1))
    np.testing.assert_allclose(served, y, rtol=0,
                               atol=1e-5 * float(jnp.max(jnp.abs(y))))
  if "aqt" in logits:
    np.testing.assert_array_equal(logits["aqt"], logits["fake"])
  assert _rel(logits["qwix"], logits["fake"]) <= MODEL_TOL
  agree = jnp.mean(jnp.argmax(logits["qwix"], -1)
                   == jnp.argmax(logits["fake"], -1))
  assert agree >= 0.75


# The CNN through every backend; MobileNetV2 (BatchNorm, strided and
# depthwise convs) through Qwix, whose grouped-convolution backward is this
# project's. ResNet-18's layers are test_layer_gradients' (the AQT and fake
# paths' model gradients are tests/test_fake_quant.py's and
# tests/test_models.py's).
GRAD_CASES = [("cnn", b) for b in BACKENDS] + [("mobilenetv2", "qwix")]


@pytest.mark.parametrize("name,backend", GRAD_CASES)
def test_gradients_reach_every_conv_and_the_input(name, backend):
  model, params, stats, x, _ = _model(name, "w4a8", backend)

  def loss(p, x):
    return jnp.mean(models.apply_model(model, p, stats, x, train=True)[0]
                    ** 2)

  g_params, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  kernels = {jax.tree_util.keystr(k): v for k, v in
             jax.tree_util.tree_flatten_with_path(g_params)[0]
             if k[-1].key == "kernel"}
  assert len(kernels) > 3
  dead = [k for k, v in kernels.items() if not jnp.any(v != 0)]
  assert not dead, dead
  assert jnp.any(g_x != 0)


@pytest.mark.parametrize("bits", [(8, 8), (4, 8)])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_layer_gradients_reach_kernel_and_input(layer, bits):
  """Every backend's straight-through gradients, on each layer kind (W8A8:
  Qwix's own backward passes; the others' are bits-independent)."""
  make, shape = LAYERS[layer]
  x = jax.random.normal(jax.random.key(1), shape)
  for name in BACKENDS if bits == (4, 8) else ("qwix",):
    module = make(QuantSpec(*bits, backend=name))
    params = module.init(jax.random.key(0), x)
    g_params, g_x = jax.jit(jax.grad(
        lambda p, x, m=module: jnp.sum(m.apply(p, x) ** 2),
        argnums=(0, 1)))(params, x)
    assert jnp.any(g_params["params"]["kernel"] != 0), name
    assert jnp.any(g_x != 0), name


def test_qwix_conv_backward_is_qwixs_where_qwixs_works():
  """The straight-through backward of the widened/grouped path equals
  Qwix's own ``conv_general_qt`` gradients on an ungrouped W8A8 conv."""
  from qwix._src.core import conv_general_qt  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
  dn = jax.lax.conv_dimension_numbers(x.shape, w.shape,
                                      ("NHWC", "HWIO", "NHWC"))
  config = conv_general_qt.ConvGeneralQtConfig(
      lhs_qtype=jnp.int8, rhs_qtype=jnp.int8,
      lhs_disable_channelwise_axes=True)
  ours = jax.grad(lambda a, b: jnp.sum(qwix_backend._conv_qt(  # pylint: disable=protected-access
      a, b, config, (1, 1), "SAME", dn, 1, 1, None) ** 2), (0, 1))(x, w)
  qwixs = jax.grad(lambda a, b: jnp.sum(conv_general_qt.conv_general_qt(
      a, b, config, (1, 1), "SAME", None, None, dn) ** 2), (0, 1))(x, w)
  for a, b in zip(ours, qwixs):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_qwix_stores_int4_weights():
  model, params, stats, _, shape = _model("cnn", "w4a8", "qwix")
  frozen, info = serving.convert(model, params, stats, input_shape=shape)
  value = frozen["qwix"]["conv2"]["qrhs"]["value"]
  assert value.dtype == jnp.int4 and info["weight_dtype"] == "int4"
  assert int(jnp.max(jnp.abs(value.astype(jnp.int8)))) <= 8
  assert info["quantized_layers"] == ["conv2", "fc1"]


def test_qwix_refuses_float_weights():
  model = models.build_model("cnn", num_classes=3,
                             bits=QuantSpec(None, 8, backend="qwix"),
                             features=(4, 8), hidden=8)
  params, stats = models.init_model(model, jax.random.key(0), (8, 8, 1))
  with pytest.raises(ValueError, match="qwix backend quantizes weights"):
    models.apply_model(model, params, stats, jnp.zeros((1, 8, 8, 1)),
                       train=False)


def test_qwix_w4a8_trains_unlearns_and_exports(tmp_path, capsys):
  """``run --quant-backend qwix`` and ``export`` end to end on digits."""
  work = tmp_path / "w"
  assert cli.main(["run", "--dataset", "digits", "--scenario", "class",
                   "--forget-class", "3", "--methods", "oeu", "--seeds", "0",
                   "--quant-backend", "qwix", "--workdir", str(work),
                   "--no-progress"]) == 0
  records = json.loads((work / "results.json").read_text())
  by = {r["method"]: r for r in records}
  assert by["original"]["ta"] > 85
  assert by["oeu"]["ua"] > 90 and by["oeu"]["ra"] > 90
  for r in records:  # The integer-served model, scored through export.
    assert set(r["served"]) == {"ua", "ra", "ta", "mia_efficacy"}
    assert r["served_max_diff"] == max(abs(r["served"][k] - r[k])
                                       for k in r["served"])
  assert "integer-served models" in capsys.readouterr().out
  assert cli.main(["export", "--workdir", str(work)]) == 0
  exported = (work / "serving" / "export.json").read_text()
  assert '"backend": "qwix"' in exported and '"int4"' in exported
