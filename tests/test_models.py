"""Tests for oeu_jax.nn.models: quantized layers and the three classifiers.

Everything runs jitted with the (hashable) module as a static argument: on a
slow CPU, eager AQT dispatch compiles dozens of tiny programs per call, while
a jitted call compiles once per module and shape.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import cosine
from reference import fake_quant
from reference import rel_err

from oeu_jax.nn import models
from oeu_jax.nn.models import QConv
from oeu_jax.nn.models import QDense
from oeu_jax.nn.quantization import QuantSpec
from oeu_jax.nn.quantization import preset

# Tiny shapes: XLA's optimization passes cost more than they save here.
pytestmark = pytest.mark.usefixtures("fast_compile")


@functools.partial(jax.jit, static_argnums=0)
def _init(layer, key, x):
  return layer.init(key, x)


@functools.partial(jax.jit, static_argnums=0)
def _apply(layer, params, x):
  return layer.apply(params, x)


@functools.partial(jax.jit, static_argnums=0)
def _grads(layer, params, x, target):
  return jax.grad(lambda p, x: jnp.sum(layer.apply(p, x) * target),
                  argnums=(0, 1))(params, x)


_apply_model = jax.jit(models.apply_model, static_argnums=0,
                       static_argnames="train")


def _conv_input(channels=8, size=8, batch=2):
  return jax.random.normal(jax.random.key(0), (batch, size, size, channels))


# ---------------------------------------------------------------- layers ---

@pytest.mark.parametrize("kwargs", [
    dict(features=16, kernel_size=(3, 3)),
    dict(features=16, kernel_size=(3, 3), strides=(2, 2), padding="VALID",
         use_bias=False),
    dict(features=4, kernel_size=(1, 1), strides=2, padding=0),
    dict(features=8, kernel_size=(3, 3), feature_group_count=8),
    dict(features=16, kernel_size=(3, 3), strides=2, feature_group_count=4),
])
def test_float_qconv_is_nn_conv(kwargs):
  x = _conv_input()
  q = QConv(**kwargs)
  ref = nn.Conv(**kwargs)
  params = _init(q, jax.random.key(1), x)
  ref_params = _init(ref, jax.random.key(1), x)
  # Same names, shapes and initial values.
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  expected = _apply(ref, params, x)
  np.testing.assert_array_equal(_apply(q, params, x), expected)
  np.testing.assert_array_equal(
      _apply(QConv(**kwargs, quant=QuantSpec(None, None)), params, x),
      expected)


def test_float_qdense_is_nn_dense():
  x = jax.random.normal(jax.random.key(0), (4, 3, 16))
  params = QDense(8).init(jax.random.key(1), x)
  ref_params = nn.Dense(8).init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  np.testing.assert_array_equal(QDense(8).apply(params, x),
                                nn.Dense(8).apply(params, x))
  no_bias = QDense(8, use_bias=False).init(jax.random.key(1), x)
  np.testing.assert_array_equal(
      QDense(8, use_bias=False).apply(no_bias, x),
      nn.Dense(8, use_bias=False).apply(no_bias, x))


@pytest.mark.parametrize("groups,features", [(1, 16), (8, 8)])
def test_quantized_conv_error_grows_with_fewer_bits(groups, features):
  x = _conv_input()
  layer = dict(features=features, kernel_size=(3, 3),
               feature_group_count=groups)
  params = _init(QConv(**layer), jax.random.key(1), x)
  ref = _apply(QConv(**layer), params, x)
  errors = {name: rel_err(_apply(QConv(**layer, quant=preset(name)), params,
                                  x), ref)
            for name in ("w8a8", "w4a8", "w4a4")}
  assert 0.0 < errors["w8a8"] < 0.03  # Quantization is really applied.
  assert errors["w8a8"] < errors["w4a8"] < errors["w4a4"] < 0.4


@pytest.mark.parametrize("groups,strides,padding", [
    (1, 1, "SAME"), (1, 2, 1), (8, 1, "SAME"), (8, 2, "SAME"), (4, 1, 0)])
def test_quantized_conv_matches_fake_quant_reference(groups, strides, padding):
  """Patches + dot_general == float conv of fake-quantized x and kernel."""
  spec = QuantSpec(4, 8)
  x = _conv_input()
  layer = dict(features=8, kernel_size=(3, 3), strides=strides,
               padding=padding, feature_group_count=groups)
  params = _init(QConv(**layer), jax.random.key(1), x)
  out = _apply(QConv(**layer, quant=spec), params, x)
  kernel = params["params"]["kernel"]
  xq = fake_quant(x, spec.act_bits, axes=None)  # Per tensor.
  kq = fake_quant(kernel, spec.weight_bits, axes=(0, 1, 2))  # Per out chan.
  ref = _apply(nn.Conv(**layer),
               {"params": {"kernel": jnp.asarray(kq, jnp.float32),
                           "bias": params["params"]["bias"]}},
               jnp.asarray(xq, jnp.float32))
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_activation_scale_ignores_pixels_the_conv_skips():
  """The per-tensor scale is calibrated on the patches, i.e. on the pixels

  the convolution reads: a stride-2 1x1 conv never reads odd rows, so a huge
  value there changes neither the scale nor the output.
  """
  x = _conv_input()
  layer = dict(features=8, kernel_size=(1, 1), strides=2, padding=0,
               quant=QuantSpec(None, 4))
  conv = QConv(**layer)
  params = _init(conv, jax.random.key(1), x)
  out = _apply(conv, params, x)
  out_skipped = _apply(conv, params, x.at[:, 1, 1, :].set(1e3))
  out_read = _apply(conv, params, x.at[:, 2, 2, :].set(1e3))
  np.testing.assert_array_equal(out, out_skipped)
  assert not np.allclose(out[:, 0, 0], out_read[:, 0, 0])


@pytest.mark.parametrize("groups,features", [(1, 16), (8, 8)])
@pytest.mark.parametrize("name", ["w8a8", "w4a8", "w4a4"])
def test_quantized_conv_gradients(name, groups, features):
  """Kernel and input get straight-through gradients (not AQT conv's zeros)."""
  x = _conv_input()
  layer = dict(features=features, kernel_size=(3, 3), strides=2,
               feature_group_count=groups)
  params = _init(QConv(**layer), jax.random.key(1), x)
  target = jax.random.normal(jax.random.key(2), (2, 4, 4, features))
  gp_f, gx_f = _grads(QConv(**layer), params, x, target)
  gp_q, gx_q = _grads(QConv(**layer, quant=preset(name)), params, x, target)
  gk_f, gk_q = gp_f["params"]["kernel"], gp_q["params"]["kernel"]
  assert float(jnp.linalg.norm(gk_q)) > 0.1 * float(jnp.linalg.norm(gk_f))
  assert float(jnp.linalg.norm(gx_q)) > 0.1 * float(jnp.linalg.norm(gx_f))
  assert cosine(gk_q, gk_f) > 0.9
  assert cosine(gx_q, gx_f) > 0.9


def test_qconv_rejects_bad_inputs():
  with pytest.raises(ValueError, match="NHWC"):
    QConv(4).init(jax.random.key(0), jnp.zeros((8, 8, 3)))
  with pytest.raises(ValueError, match="feature_group_count"):
    QConv(4, feature_group_count=3).init(jax.random.key(0),
                                         jnp.zeros((1, 8, 8, 4)))
  with pytest.raises(ValueError, match="padding"):
    QConv(4, padding="FULL").init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)))


# ---------------------------------------------------------------- models ---

_CNN_SHAPES = [(8, 8, 1), (28, 28, 1), (32, 32, 3)]


@pytest.mark.parametrize("shape", _CNN_SHAPES)
def test_cnn_forward(shape):
  model = models.build_model("cnn", num_classes=10, bits="w4a8")
  params, batch_stats = models.init_model(model, jax.random.key(0), shape)
  assert batch_stats == {}
  x = jax.random.normal(jax.random.key(1), (3,) + shape)
  logits, new_stats = _apply_model(model, params, {}, x, train=True)
  assert logits.shape == (3, 10) and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  assert new_stats == {}


@pytest.mark.parametrize("shape", [(3, 8, 8, 5), (2, 7, 9, 3)])
def test_max_pool_2x2_is_flax_max_pool_bit_for_bit(shape):
  # Values in {0, 1, 2} (ReLU outputs with many ties): same maxima, and the
  # gradient goes to the same element of each window (the first maximum,
  # row-major) as reduce_window's select_and_scatter routes it.
  rng = np.random.default_rng(0)
  x = jnp.asarray(np.maximum(rng.integers(-2, 3, shape), 0), jnp.float32)
  out_shape = (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
  g = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
  ref, ref_vjp = jax.vjp(
      lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), x)
  out, out_vjp = jax.vjp(models.max_pool_2x2, x)
  assert out.shape == out_shape
  np.testing.assert_array_equal(out, ref)
  np.testing.assert_array_equal(out_vjp(g)[0], ref_vjp(g)[0])
  # One gradient entry per window, never split among ties.
  assert int(jnp.sum(out_vjp(jnp.ones_like(g))[0] != 0)) == g.size


def test_quantized_model_differs_from_float_with_same_params():
  shape = (8, 8, 1)
  float_model = models.build_model("cnn", num_classes=10, bits="float")
  params, _ = models.init_model(float_model, jax.random.key(0), shape)
  x = jax.random.normal(jax.random.key(1), (4,) + shape)
  ref, _ = _apply_model(float_model, params, {}, x, train=False)
  errors = {}
  for bits in ("w8a8", "w4a4"):
    model = models.build_model("cnn", num_classes=10, bits=bits)
    q_params, _ = models.init_model(model, jax.random.key(0), shape)
    # AQT adds no variables: a float and a quantized model share params.
    jax.tree.map(np.testing.assert_array_equal, q_params, params)
    out, _ = _apply_model(model, params, {}, x, train=False)
    errors[bits] = rel_err(out, ref)
  assert 0.0 < errors["w8a8"] < errors["w4a4"]


def test_init_model_equals_direct_init():
  model = models.build_model("cnn", num_classes=10, bits="w4a4")
  params, _ = models.init_model(model, jax.random.key(3), (8, 8, 1))
  direct = jax.jit(model.init, static_argnames="train")(
      jax.random.key(3), jnp.zeros((1, 8, 8, 1)), train=False)
  assert set(direct) == {"params"}
  jax.tree.map(np.testing.assert_array_equal, params, direct["params"])


@functools.partial(jax.jit, static_argnums=0)
def _capture(model, params, x):
  logits, state = model.apply({"params": params}, x, train=False,
                              capture_intermediates=True,
                              mutable=["intermediates"])
  return logits, state["intermediates"]


@pytest.mark.parametrize("float_ends", [True, False])
def test_float_ends_controls_first_conv_and_head(float_ends):
  shape = (8, 8, 1)
  float_model = models.build_model("cnn", num_classes=10, bits="float")
  model = models.build_model("cnn", num_classes=10, bits="w4a4",
                             float_ends=float_ends)
  params, _ = models.init_model(float_model, jax.random.key(0), shape)
  x = jax.random.normal(jax.random.key(1), (4,) + shape)
  _, ref = _capture(float_model, params, x)
  logits, inter = _capture(model, params, x)
  conv1, conv1_ref = inter["conv1"]["__call__"][0], ref["conv1"]["__call__"][0]
  # The head in float: logits == relu(fc1 output) @ kernel + bias exactly.
  hidden = jax.nn.relu(inter["fc1"]["__call__"][0])
  head = _apply(QDense(10), {"params": params["head"]}, hidden)
  # The middle layers are quantized either way.
  conv2 = inter["conv2"]["__call__"][0]
  assert not np.allclose(conv2, ref["conv2"]["__call__"][0], atol=1e-5)
  if float_ends:
    np.testing.assert_array_equal(conv1, conv1_ref)
    np.testing.assert_allclose(logits, head, rtol=1e-6, atol=1e-6)
  else:
    assert not np.allclose(conv1, conv1_ref, atol=1e-5)
    assert not np.allclose(logits, head, atol=1e-5)


def test_cnn_vmap_over_params():
  model = models.build_model("cnn", num_classes=10, bits="w4a8")
  keys = jax.random.split(jax.random.key(0), 3)
  params, stats = jax.vmap(
      lambda k: models.init_model(model, k, (8, 8, 1)))(keys)
  assert stats == {}
  assert params["conv1"]["kernel"].shape == (3, 3, 3, 1, 32)
  x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
  logits, _ = jax.jit(jax.vmap(
      lambda p: models.apply_model(model, p, {}, x, train=False)))(params)
  assert logits.shape == (3, 3, 10)
  single = jax.tree.map(lambda leaf: leaf[1], params)
  expected, _ = _apply_model(model, single, {}, x, train=False)
  np.testing.assert_allclose(logits[1], expected, rtol=1e-5, atol=1e-5)
  assert not np.allclose(logits[0], logits[1])


def _all_kernel_grads_nonzero(grads):
  for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
    if "kernel" in jax.tree_util.keystr(path):
      assert float(jnp.linalg.norm(leaf)) > 0.0, jax.tree_util.keystr(path)


# "rbg" keys: on a slow CPU, compiling threefry's random-number code for each
# parameter shape dominates the initialization of the deep models.
def _fast_key(seed):
  return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def resnet():
  model = models.build_model("resnet18", num_classes=10, bits="w4a8",
                             width=0.125)
  params, batch_stats = models.init_model(model, _fast_key(0), (16, 16, 3))
  return model, params, batch_stats


def test_resnet18_structure(resnet):
  _, params, batch_stats = resnet
  assert set(batch_stats) >= {"stem_bn", "layer1_0", "layer4_1"}
  assert params["stem_conv"]["kernel"].shape == (3, 3, 3, 8)
  assert params["layer4_1"]["conv2"]["kernel"].shape == (3, 3, 64, 64)
  assert "shortcut_conv" in params["layer2_0"]
  assert "shortcut_conv" not in params["layer1_0"]
  assert params["head"]["kernel"].shape == (64, 10)
  n_convs = sum("conv" in jax.tree_util.keystr(p) and "kernel" in
                jax.tree_util.keystr(p)
                for p, _ in jax.tree_util.tree_leaves_with_path(params))
  assert n_convs == 1 + 16 + 3  # stem, 8 blocks x 2, 3 shortcuts.


def test_resnet18_train_and_eval(resnet):
  model, params, batch_stats = resnet
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3)) + 1.0
  labels = jnp.arange(4)

  @jax.jit
  def train_step(params, batch_stats):
    def loss(p):
      logits, new_stats = models.apply_model(model, p, batch_stats, x,
                                             train=True)
      logp = jax.nn.log_softmax(logits)
      return -jnp.mean(logp[jnp.arange(4), labels]), (logits, new_stats)
    return jax.grad(loss, has_aux=True)(params)

  grads, (logits, new_stats) = train_step(params, batch_stats)
  assert logits.shape == (4, 10) and bool(jnp.all(jnp.isfinite(logits)))
  _all_kernel_grads_nonzero(grads)
  assert jax.tree.structure(new_stats) == jax.tree.structure(batch_stats)
  old_mean = batch_stats["stem_bn"]["mean"]
  assert not np.allclose(new_stats["stem_bn"]["mean"], old_mean)
  eval_logits, same_stats = _apply_model(model, params, new_stats, x,
                                         train=False)
  assert eval_logits.shape == (4, 10)
  assert bool(jnp.all(jnp.isfinite(eval_logits)))
  jax.tree.map(np.testing.assert_array_equal, same_stats, new_stats)


def test_mobilenetv2_forward():
  model = models.build_model("mobilenetv2", num_classes=10, bits="w4a8",
                             width=0.25)
  assert models.build_model("mobilenetv2", num_classes=10).width == 0.5
  params, batch_stats = models.init_model(model, _fast_key(0), (8, 8, 3))
  # Depthwise convs: one input channel per group. Their quantized gradients
  # are tested on the layer (test_quantized_conv_gradients).
  assert params["block1"]["depthwise_conv"]["kernel"].shape == (3, 3, 1, 48)
  assert params["last_conv"]["kernel"].shape[-1] == 1280
  assert len(params) == 2 + 17 + 2 + 1  # Stem conv+BN, blocks, last, head.
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  logits, new_stats = _apply_model(model, params, batch_stats, x, train=True)
  assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
  assert jax.tree.structure(new_stats) == jax.tree.structure(batch_stats)
  assert not np.allclose(new_stats["stem_bn"]["mean"],
                         batch_stats["stem_bn"]["mean"])


# ------------------------------------------------------------- factories ---

def test_models_names():
  assert models.MODELS == ("cnn", "resnet18", "mobilenetv2")


def test_build_model_quant_and_float_ends():
  model = models.build_model("resnet18", num_classes=10)
  assert model.quant == QuantSpec(4, 8) and model.float_ends
  assert models.build_model("cnn", num_classes=2, bits="float").quant is None
  model = models.build_model("cnn", num_classes=2, bits=QuantSpec(8, None),
                             float_ends=False)
  assert model.quant == QuantSpec(8, None) and not model.float_ends


def test_build_model_errors():
  with pytest.raises(ValueError) as err:
    models.build_model("vgg16", num_classes=10)
  assert "'vgg16'" in str(err.value)
  for name in models.MODELS:
    assert name in str(err.value)
  for k in (1, 0, 2.0):
    with pytest.raises(ValueError, match="num_classes"):
      models.build_model("cnn", num_classes=k)
  with pytest.raises(ValueError, match="w4a8"):
    models.build_model("cnn", num_classes=10, bits="int3")
  with pytest.raises(ValueError, match="bits"):
    models.build_model("cnn", num_classes=10, bits=QuantSpec(16, 8))


def test_shape_errors():
  model = models.build_model("cnn", num_classes=10, bits="float")
  with pytest.raises(ValueError, match="input_shape"):
    models.init_model(model, jax.random.key(0), (8, 8))
  params, stats = models.init_model(model, jax.random.key(0), (8, 8, 1))
  with pytest.raises(ValueError, match=r"\(2, 8, 8\)"):
    models.apply_model(model, params, stats, jnp.zeros((2, 8, 8)),
                       train=False)
  with pytest.raises(ValueError, match="floating"):
    models.apply_model(model, params, stats, jnp.zeros((2, 8, 8, 1), jnp.int32),
                       train=False)
