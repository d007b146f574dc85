"""Training-mode quantization at float cost: ``QuantSpec.backend="fake"``.

The fake path quantizes input and kernel with AQT's own quantizers and
contracts the integer-valued operands with native float convolutions. Per
layer its outputs are AQT's bit for bit (tolerance 0: the integer sums are
exact in float32 at these sizes) and its gradients equal AQT's
straight-through gradients up to rounding order (relative tolerance 1e-5,
measured about 3e-7). Integer serving (AQT CONVERT/SERVE, the fake
backend's serving) predicts what the fake forward pass predicts, for the CNN,
ResNet-18 and MobileNetV2 (argmax identical, logits within 1e-4 of their
scale). Shapes are tiny so that the file runs in well under a minute.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oeu_jax import cli
from oeu_jax.nn import models
from oeu_jax.nn import quantization
from oeu_jax.nn import serving
from oeu_jax.nn.layers import QConv
from oeu_jax.nn.layers import QDense
from oeu_jax.nn.quantization import QuantSpec
from oeu_jax.nn.quantization.backends import aqt as aqt_backend
from oeu_jax.nn.quantization.backends import fake
from oeu_jax.runner import args as args_lib
from oeu_jax.runner import catalog
from oeu_jax.runner import config as config_lib
from oeu_jax.runner import layout

GRAD_RTOL = 1e-5
LOGIT_RTOL = 1e-4

# name: (layer factory, input shape); the strided 1x1 shortcut and the
# stride-2 depthwise conv are ResNet-18's and MobileNetV2's.
LAYERS = {
    "dense": (lambda q: QDense(5, quant=q), (3, 12)),
    "conv3x3": (lambda q: QConv(6, (3, 3), quant=q), (2, 6, 6, 3)),
    "strided_1x1": (lambda q: QConv(6, (1, 1), strides=2, padding=0,
                                    use_bias=False, quant=q), (2, 7, 7, 3)),
    "depthwise_s2": (lambda q: QConv(6, (3, 3), strides=2, padding=1,
                                     feature_group_count=6, use_bias=False,
                                     quant=q), (2, 6, 6, 6)),
    "valid_s2": (lambda q: QConv(4, (3, 3), strides=2, padding="VALID",
                                 quant=q), (2, 8, 8, 3)),
}


def _rel(a, b) -> float:
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))


def _layer_outputs_and_grads(make, shape, spec, x=None):
  """The layer's outputs and the gradients of a scalar of them (jitted:
  one compilation instead of one per operation)."""
  x = jax.random.normal(jax.random.key(1), shape) if x is None else x
  params = make(None).init(jax.random.key(0), x)
  module = make(spec)

  def loss(p, x):
    y = module.apply(p, x)
    return jnp.sum(jnp.sin(y)), y

  grads, y = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(params, x)
  return y, grads


@pytest.mark.parametrize("bits", [(4, 8), (8, 8)])
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_equals_aqt(layer, bits):
  make, shape = LAYERS[layer]
  y_aqt, g_aqt = _layer_outputs_and_grads(
      make, shape, QuantSpec(*bits, backend="aqt"))
  y_fake, g_fake = _layer_outputs_and_grads(
      make, shape, QuantSpec(*bits, backend="fake"))
  np.testing.assert_array_equal(y_fake, y_aqt)
  for a, f in zip(jax.tree.leaves(g_aqt), jax.tree.leaves(g_fake)):
    assert float(jnp.linalg.norm(a)) > 0
    assert _rel(a, f) < GRAD_RTOL


@pytest.mark.parametrize("bits", [(4, None), (None, 8)])
def test_half_quantized_conv_close_to_aqt(bits):
  """One float operand: float sums, equal up to rounding order."""
  make, shape = LAYERS["conv3x3"]
  y_aqt, g_aqt = _layer_outputs_and_grads(
      make, shape, QuantSpec(*bits, backend="aqt"))
  y_fake, g_fake = _layer_outputs_and_grads(
      make, shape, QuantSpec(*bits, backend="fake"))
  np.testing.assert_allclose(y_fake, y_aqt, rtol=0,
                             atol=1e-6 * float(jnp.max(jnp.abs(y_aqt))))
  for a, f in zip(jax.tree.leaves(g_aqt), jax.tree.leaves(g_fake)):
    assert _rel(a, f) < GRAD_RTOL


def test_strided_1x1_scale_is_taken_over_the_pixels_read():
  """The largest input sits on a pixel the stride skips: AQT's patches never
  see it, so it must not set the activation scale."""
  make, shape = LAYERS["strided_1x1"]
  x = jax.random.normal(jax.random.key(1), shape).at[:, 1, 1, 0].set(50.0)
  spec = QuantSpec(4, 8, backend="fake")
  y_aqt, _ = _layer_outputs_and_grads(
      make, shape, QuantSpec(4, 8, backend="aqt"), x)
  y_fake, _ = _layer_outputs_and_grads(make, shape, spec, x)
  np.testing.assert_array_equal(y_fake, y_aqt)
  # Over the whole input the scale would differ, and so would the output.
  _, whole = fake.fake_quant_input(spec, x)
  _, read = fake.fake_quant_input(spec, x, reads=x[:, ::2, ::2])
  assert float(whole.squeeze()) > 10 * float(read.squeeze())


@pytest.mark.parametrize("layer", ["conv3x3", "strided_1x1", "depthwise_s2"])
def test_conv_kernels_get_gradients(layer):
  make, shape = LAYERS[layer]
  _, (g_params, g_x) = _layer_outputs_and_grads(
      make, shape, QuantSpec(4, 8, backend="fake"))
  assert float(jnp.linalg.norm(g_params["params"]["kernel"])) > 0
  assert float(jnp.linalg.norm(g_x)) > 0


def test_cnn_training_step_equals_aqt():
  """The whole CNN (no BatchNorm): same logits, gradients up to rounding."""
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
  y = jnp.arange(4)
  out = {}
  for impl in ("aqt", "fake"):
    model = models.build_model("cnn", num_classes=4,
                               bits=QuantSpec(4, 8, backend=impl),
                               features=(4, 8), hidden=16)
    params, stats = models.init_model(model, jax.random.key(0), (8, 8, 1))

    def loss(p, model=model, stats=stats):
      logits, _ = models.apply_model(model, p, stats, x, train=True)
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y]), logits

    out[impl] = jax.jit(jax.grad(loss, has_aux=True))(params)
  (g_aqt, l_aqt), (g_fake, l_fake) = out["aqt"], out["fake"]
  np.testing.assert_array_equal(l_fake, l_aqt)
  for a, f in zip(jax.tree.leaves(g_aqt), jax.tree.leaves(g_fake)):
    assert _rel(a, f) < GRAD_RTOL


SERVED = {
    "cnn": ((8, 8, 1), {"features": (4, 8), "hidden": 16}),
    "resnet18": ((8, 8, 3), {"width": 0.0625}),
    "mobilenetv2": ((8, 8, 3), {"width": 0.1}),
}


# Whole models' forward passes on 16 tiny images: XLA's optimization passes
# cost more than they save. The module-scoped fixture stays on for the
# (non-numeric) tests after these ones.
@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("name", sorted(SERVED))
def test_serving_equals_fake_forward(name):
  """Integer serving (AQT CONVERT/SERVE) predicts what the training-mode
  fake forward pass predicts, batch for batch."""
  shape, kwargs = SERVED[name]
  model = models.build_model(name, num_classes=10,
                             bits=QuantSpec(4, 8, backend="fake"), **kwargs)
  params, stats = models.init_model(model, jax.random.key(0), shape)
  # Non-trivial running statistics, as after training.
  stats = jax.tree.map(
      lambda s: s + 0.1 * jax.random.uniform(jax.random.key(2), s.shape),
      stats)
  x = jax.random.normal(jax.random.key(1), (16,) + shape)
  fake, _ = jax.jit(lambda p, s, x: models.apply_model(
      model, p, s, x, train=False))(params, stats, x)
  variables, _ = serving.convert(model, params, stats, input_shape=shape)
  served = serving.serving_apply(model, variables, x)
  np.testing.assert_array_equal(jnp.argmax(served, -1), jnp.argmax(fake, -1))
  np.testing.assert_allclose(served, fake, rtol=0,
                             atol=LOGIT_RTOL * float(jnp.max(jnp.abs(fake))))


def test_serve_and_convert_modes_go_through_aqt():
  """The fake backend serves AQT's integers: convert writes AQT's freezer."""
  spec = QuantSpec(4, 8, backend="fake")
  assert quantization.backend(spec) is fake
  assert fake.COLLECTION == aqt_backend.COLLECTION == "aqt"
  model = models.build_model("cnn", num_classes=3, bits=spec,
                             features=(4, 8), hidden=8)
  params, stats = models.init_model(model, jax.random.key(0), (8, 8, 1))
  variables, info = serving.convert(model, params, stats,
                                    input_shape=(8, 8, 1))
  assert info["backend"] == "fake"
  assert "AqtDotGeneral_0" in variables["aqt"]["fc1"]


@pytest.mark.parametrize("name", ["int", "", None, "AQT"])
def test_bad_backend_is_refused(name):
  with pytest.raises(ValueError, match=r"QuantSpec.backend must be one of"):
    quantization.validate_spec(QuantSpec(4, 8, backend=name))
  with pytest.raises(ValueError, match=r"QuantSpec.backend must be one of"):
    models.build_model("cnn", num_classes=3, bits=QuantSpec(4, 8, backend=name))
  with pytest.raises(ValueError, match=r"unknown quant_backend"):
    config_lib.resolve(config_lib.RunConfig(quant_backend=name))


def test_cli_flag(capsys):
  base = ["run", "--dataset", "digits"]
  parse = cli.build_parser().parse_args
  assert args_lib.run_config_from_args(parse(base)).quant_backend == "fake"
  cfg = args_lib.run_config_from_args(parse(base + ["--quant-backend", "aqt"]))
  assert cfg.quant_backend == "aqt"
  assert config_lib.quant_spec(cfg) == QuantSpec(4, 8, backend="aqt")
  with pytest.raises(args_lib.CliError,
                     match=r"--quant-backend: invalid choice"):
    parse(base + ["--quant-backend", "int"])
  assert cli.main(base + ["--quant-backend", "int", "--no-progress"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "--quant-backend" in err[0], err
  assert catalog.QUANT_BACKENDS == quantization.BACKENDS == (
      "aqt", "fake", "qwix")
  assert isinstance(cli.build_parser(), argparse.ArgumentParser)


def test_aqt_fingerprints_unchanged():
  """Runs made with AQT before the backend choice existed keep their
  checkpoints; the default backend (fake) trains models of its own."""
  aqt = config_lib.resolve(config_lib.RunConfig(quant_backend="aqt"))
  assert layout.Layout.of(aqt, "/w").run_dir.name == (
      "digits-cnn-w4a8-7c1a6aa4ae")
  default = config_lib.resolve(config_lib.RunConfig())
  assert default.quant_backend == "fake"
  assert layout.Layout.of(default, "/w").run_dir.name != (
      "digits-cnn-w4a8-7c1a6aa4ae")
