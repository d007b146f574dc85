"""Tests for oeu_jax.nn.quantization: presets, validation, AQT dot-general."""

import aqt.jax.v2.flax.aqt_flax as aqt_flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import cosine
from reference import fake_quant
from reference import rel_err

from oeu_jax.nn import quantization
from oeu_jax.nn.quantization import BITS
from oeu_jax.nn.quantization import QuantSpec
from oeu_jax.nn.quantization.backends import aqt as aqt_backend


class _Dense(nn.Module):
  """nn.Dense with an injected dot_general, as a user would write it."""

  spec: QuantSpec | None

  @nn.compact
  def __call__(self, x):
    dg = aqt_backend.make_dot_general(self.spec)
    if dg is None:
      return nn.Dense(8)(x)
    return nn.Dense(8, dot_general=dg)(x)


def _dense_setup():
  x = jax.random.normal(jax.random.key(0), (16, 32))
  params = _Dense(None).init(jax.random.key(1), x)
  return x, params


def test_bits_names():
  assert BITS == ("float", "w8a8", "w4a8", "w4a4")


@pytest.mark.parametrize("name,expected", [
    ("float", QuantSpec(None, None)),
    ("w8a8", QuantSpec(8, 8)),
    ("w4a8", QuantSpec(4, 8)),
    ("w4a4", QuantSpec(4, 4)),
    ("W4A8", QuantSpec(4, 8)),
])
def test_preset(name, expected):
  spec = quantization.preset(name)
  assert spec == expected
  assert (spec.weight_bits, spec.act_bits) == (expected.weight_bits,
                                               expected.act_bits)


@pytest.mark.parametrize("name", ["w3a3", "int8", "", "fp32"])
def test_unknown_preset_raises_and_lists_valid(name):
  with pytest.raises(ValueError) as err:
    quantization.preset(name)
  message = str(err.value)
  assert repr(name) in message
  for valid in BITS:
    assert valid in message


@pytest.mark.parametrize("spec", [
    QuantSpec(1, 8), QuantSpec(9, 8), QuantSpec(8, 0), QuantSpec(8, 16),
    QuantSpec(4.0, 8), QuantSpec("8", 8), QuantSpec(True, 8),
    QuantSpec(8, -4),
])
def test_invalid_bits_raise(spec):
  with pytest.raises(ValueError, match="bits"):
    quantization.validate_spec(spec)
  with pytest.raises(ValueError, match="bits"):
    aqt_backend.make_dot_general(spec)


def test_non_spec_raises():
  with pytest.raises(ValueError, match="QuantSpec"):
    quantization.validate_spec((8, 8))


@pytest.mark.parametrize("spec", [QuantSpec(2, 2), QuantSpec(8, None),
                                  QuantSpec(None, 8), QuantSpec(4, 8)])
def test_valid_bits_accepted(spec):
  assert quantization.validate_spec(spec) == spec
  assert quantization.is_quantized(spec)


def test_float_gives_no_dot_general():
  assert aqt_backend.make_dot_general(None) is None
  assert aqt_backend.make_dot_general(QuantSpec(None, None)) is None
  assert aqt_backend.make_dot_general(quantization.preset("float")) is None
  assert not quantization.is_quantized(None)
  assert not quantization.is_quantized(QuantSpec(None, None))


@pytest.mark.parametrize("name", ["w8a8", "w4a8", "w4a4"])
def test_dot_general_config(name):
  spec = quantization.preset(name)
  dg = aqt_backend.make_dot_general(spec)
  assert isinstance(dg, aqt_flax.AqtDotGeneral)
  assert dg.prng_name is None  # No rng needed: no stochastic rounding.
  fwd = dg.cfg.fwd.dg_quantizer
  assert fwd.lhs.numerics.bits == spec.act_bits
  assert fwd.rhs.numerics.bits == spec.weight_bits
  assert fwd.lhs.calib_shared_axes == "per_tensor"
  assert fwd.rhs.calib_shared_axes is None  # Contracting axes: per channel.
  assert fwd.lhs.numerics.noise_fn is None
  # Backward pass in float (straight-through estimator).
  for raw in (dg.cfg.dlhs, dg.cfg.drhs):
    for q in (raw.dg_quantizer.lhs, raw.dg_quantizer.rhs):
      assert type(q.numerics).__name__ == "NoNumerics"


def test_fresh_module_per_call():
  spec = quantization.preset("w8a8")
  assert (aqt_backend.make_dot_general(spec)
          is not aqt_backend.make_dot_general(spec))


def test_aqt_adds_no_variables_and_needs_no_rng():
  x, params = _dense_setup()
  model = _Dense(quantization.preset("w4a8"))
  variables = model.init(jax.random.key(1), x)
  assert jax.tree.structure(variables) == jax.tree.structure(params)
  out = jax.jit(model.apply)(params, x)
  assert out.shape == (16, 8)


def test_w8a8_close_and_w4a4_further():
  x, params = _dense_setup()
  ref = _Dense(None).apply(params, x)
  errors = {name: rel_err(_Dense(quantization.preset(name)).apply(params, x),
                           ref) for name in ("w8a8", "w4a8", "w4a4")}
  assert 0.0 < errors["w8a8"] < 0.03
  assert errors["w8a8"] < errors["w4a8"] < errors["w4a4"] < 0.4


@pytest.mark.parametrize("name", ["w8a8", "w4a8", "w4a4"])
def test_dense_matches_numpy_fake_quant(name):
  spec = quantization.preset(name)
  x, params = _dense_setup()
  out = _Dense(spec).apply(params, x)
  kernel = params["params"]["Dense_0"]["kernel"]
  bias = params["params"]["Dense_0"]["bias"]
  xq = fake_quant(x, spec.act_bits, axes=None)  # One scale per tensor.
  wq = fake_quant(kernel, spec.weight_bits, axes=0)  # Per output channel.
  np.testing.assert_allclose(out, xq @ wq + np.asarray(bias), rtol=1e-4,
                             atol=1e-5)


def test_weight_scales_are_per_output_channel():
  # A column 1000x smaller than the others survives per-channel W4 scales;
  # a per-tensor scale would round it to zero.
  x, params = _dense_setup()
  layer = params["params"]["Dense_0"]
  kernel = layer["kernel"].at[:, 0].multiply(1e-3)
  params = {"params": {"Dense_0": {"kernel": kernel, "bias": layer["bias"]}}}
  ref = _Dense(None).apply(params, x)
  out = _Dense(QuantSpec(4, None)).apply(params, x)
  assert rel_err(out[:, 0], ref[:, 0]) < 0.3


def test_activation_scale_is_per_tensor():
  # One shared activation scale: enlarging example 1 coarsens example 0.
  x, params = _dense_setup()
  model = _Dense(QuantSpec(None, 4))
  out = model.apply(params, x)
  out_big = model.apply(params, x.at[1].multiply(100.0))
  assert not np.allclose(out[0], out_big[0])
  float_out = _Dense(None).apply(params, x.at[1].multiply(100.0))
  np.testing.assert_allclose(float_out[0], _Dense(None).apply(params, x)[0],
                             rtol=1e-6)


@pytest.mark.parametrize("name", ["w8a8", "w4a8", "w4a4"])
def test_straight_through_gradients(name):
  x, params = _dense_setup()
  target = jax.random.normal(jax.random.key(2), (16, 8))

  def loss(p, x, spec):
    return jnp.sum(_Dense(spec).apply(p, x) * target)

  g_float = jax.grad(loss, argnums=(0, 1))(params, x, None)
  g_quant = jax.grad(loss, argnums=(0, 1))(params, x,
                                           quantization.preset(name))
  k_float = g_float[0]["params"]["Dense_0"]["kernel"]
  k_quant = g_quant[0]["params"]["Dense_0"]["kernel"]
  assert float(jnp.linalg.norm(k_quant)) > 0.0
  assert float(jnp.linalg.norm(g_quant[1])) > 0.0
  assert cosine(k_quant, k_float) > 0.9
  assert cosine(g_quant[1], g_float[1]) > 0.9
