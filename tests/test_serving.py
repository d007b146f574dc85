"""Tests for oeu_jax.serving: integer weights that predict like training.

A small CNN is trained on scikit-learn's digits (3 epochs, W8A8 and W4A8);
its converted (int8 / int4) form must give the same logits as the
fake-quantized evaluation, bit for bit, on the whole test set.
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from oeu_jax import checkpointing
from oeu_jax import data as data_lib
from oeu_jax import models
from oeu_jax import quantization
from oeu_jax import serving
from oeu_jax import train
from oeu_jax import unlearn
from oeu_jax.quantization import QuantSpec

_RECIPE = train.TrainConfig(epochs=3, batch_size=64, lr=0.05)
_RUN = {"w8a8": "digits-cnn-w8a8-0123456789",
        "w4a8": "digits-cnn-w4a8-abcdef0123"}


@pytest.fixture(scope="module")
def digits():
  return data_lib.load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
  """Two trained CNNs, checkpointed in a pipeline-style work directory."""
  workdir = tmp_path_factory.mktemp("workdir")
  out = {"workdir": workdir}
  for bits, run in _RUN.items():
    model = models.build_model("cnn", num_classes=digits.num_classes,
                               bits=bits)
    ckpt = workdir / "checkpoints" / run / "seed0" / "original"
    res = train.fit(model, digits.train_x, digits.train_y, config=_RECIPE,
                    seed=0, checkpoint_dir=str(ckpt))
    out[bits] = (model, res.state.params, res.state.batch_stats)
  return out


def _values(variables):
  """{layer: (int values, scales)} of a converted tree."""
  return {name: (layer["AqtDotGeneral_0"]["qrhs"]["value"],
                 layer["AqtDotGeneral_0"]["qrhs"]["scale"])
          for name, layer in variables["aqt"].items()}


@pytest.mark.parametrize("bits", ["w8a8", "w4a8"])
def test_predictions_equal_on_digits_test_set(trained, digits, bits):
  model, params, stats = trained[bits]
  variables, _ = serving.convert(model, params, stats)
  for batch_size in (512, 64):  # One batch; several with a padded last one.
    want = train.predict(model, params, stats, digits.test_x,
                         batch_size=batch_size)
    got = serving.predict(model, variables, digits.test_x,
                          batch_size=batch_size)
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got, want)  # Bit for bit, in fact.
  assert (want.argmax(-1) == digits.test_y).mean() > 0.8  # It did train.


@pytest.mark.parametrize("bits, dtype, limit",
                         [("w8a8", jnp.int8, 127), ("w4a8", jnp.int4, 7)])
def test_stored_weights_are_integers(trained, bits, dtype, limit):
  model, params, stats = trained[bits]
  variables, info = serving.convert(model, params, stats)
  assert info["weight_dtype"] == jnp.dtype(dtype).name
  assert info["quantized_layers"] == ["conv2", "fc1"]  # float_ends.
  for name, (value, scale) in _values(variables).items():
    assert value.dtype == dtype, name
    v = np.asarray(value, np.int32)
    assert np.abs(v).max() <= limit and np.abs(v).max() >= limit - 1
    assert scale.dtype == jnp.float32
    assert scale.size == value.shape[-1]  # One scale per output channel.
    assert "kernel" not in variables["params"][name]  # No float copy.
  for name in ("conv1", "head"):  # Float ends keep their float kernels.
    assert variables["params"][name]["kernel"].dtype == jnp.float32


@pytest.mark.parametrize("bits", ["w8a8", "w4a8"])
def test_integers_are_aqts_rounding_of_the_kernel(trained, bits):
  # Independent NumPy float32 replay of AQT's weight quantization: absmax
  # per output channel, scale = absmax / (2**(b-1) - 0.5), multiply by the
  # reciprocal, clip to +-(2**(b-1) - 1), round half to even.
  model, params, stats = trained[bits]
  variables, _ = serving.convert(model, params, stats)
  b = quantization.preset(bits).weight_bits
  for name, (value, scale) in _values(variables).items():
    kernel = np.asarray(params[name]["kernel"], np.float32)
    w = kernel.reshape(-1, kernel.shape[-1])  # (kh*kw*C_in, C_out)
    absmax = np.abs(w).max(axis=0, keepdims=True)
    absmax = np.where(absmax == 0, np.float32(1), absmax)
    s = absmax / np.float32(2.0 ** (b - 1) - 0.5)
    limit = np.float32(2 ** (b - 1) - 1)
    q = np.round(np.clip(w * (np.float32(1) / s), -limit, limit))
    np.testing.assert_array_equal(np.asarray(value, np.int32), q, name)
    # XLA may divide by the constant via its reciprocal: 1 ulp apart.
    np.testing.assert_allclose(np.asarray(scale).reshape(-1), s.reshape(-1),
                               rtol=2e-7, atol=0, err_msg=name)


def test_sizes(trained):
  _, params, stats = trained["w8a8"]
  v8, i8 = serving.convert(*trained["w8a8"])
  v4, i4 = serving.convert(*trained["w4a8"])
  assert i8["float_bytes"] == serving.model_size_bytes(params)
  assert i8["quantized_float_bytes"] == 4 * sum(
      params[n]["kernel"].size for n in ("conv2", "fc1"))
  # int8 values + float32 scales: about 4x smaller than float32 kernels.
  assert 3.9 < i8["quantized_float_bytes"] / i8["quantized_int_bytes"] <= 4
  assert i8["serving_bytes"] == serving.model_size_bytes(v8)
  assert i8["serving_bytes"] < i8["float_bytes"] / 3.5
  # int4 takes a byte in memory, half of one packed.
  assert i4["quantized_int_bytes"] == i8["quantized_int_bytes"]
  assert 7.5 < i4["quantized_float_bytes"] / i4["quantized_packed_bytes"] <= 8
  assert i4["serving_packed_bytes"] == serving.model_size_bytes(v4,
                                                                packed=True)


def test_model_size_bytes():
  tree = {"a": jnp.zeros((3, 5), jnp.float32), "b": [np.zeros(7, np.int8)],
          "c": jnp.zeros((5,), jnp.int4), "d": jnp.zeros((), jnp.bfloat16)}
  assert serving.model_size_bytes(tree) == 60 + 7 + 5 + 2
  assert serving.model_size_bytes(tree, packed=True) == 60 + 7 + 3 + 2
  assert serving.model_size_bytes({}) == 0


class _Grouped(nn.Module):
  """A grouped conv (a dot-general batch dimension) and a dense head."""

  quant: QuantSpec | None = None
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train):
    del train
    x = models.QConv(8, (3, 3), feature_group_count=4, quant=self.quant,
                     name="grouped")(x)
    x = nn.relu(x).reshape((x.shape[0], -1))
    return models.QDense(self.num_classes, quant=self.quant, name="head")(x)


@pytest.mark.parametrize("bits", ["w8a8", "w4a4"])
def test_grouped_conv_and_quantized_head(bits):
  model = _Grouped(quant=quantization.preset(bits))
  params, _ = models.init_model(model, jax.random.key(0), (6, 6, 4))
  x = jax.random.normal(jax.random.key(1), (5, 6, 6, 4))
  variables, info = serving.convert(model, params, input_shape=(6, 6, 4))
  assert info["quantized_layers"] == ["grouped", "head"]
  want, _ = jax.jit(models.apply_model, static_argnums=0,
                    static_argnames="train")(model, params, {}, x,
                                             train=False)
  np.testing.assert_array_equal(serving.serving_apply(model, variables, x),
                                want)


def test_quant_spec_modes():
  spec = quantization.preset("w8a8")
  assert spec.mode == "train" and spec == QuantSpec(8, 8)
  assert not quantization.serves_frozen_weights(spec)
  assert quantization.serves_frozen_weights(spec._replace(mode="serve"))
  # Float weights have nothing frozen, whatever the mode.
  assert not quantization.serves_frozen_weights(QuantSpec(None, 8, "serve"))
  with pytest.raises(ValueError, match="mode"):
    quantization.validate_spec(QuantSpec(8, 8, "int8"))
  with pytest.raises(ValueError, match="mode"):
    models.build_model("cnn", num_classes=3, bits=QuantSpec(8, 8, "freeze"))


def test_convert_errors(trained):
  model, params, stats = trained["w8a8"]
  for bits in ("float", QuantSpec(None, 8)):
    float_model = models.build_model("cnn", num_classes=10, bits=bits)
    with pytest.raises(ValueError, match="nothing to convert"):
      serving.convert(float_model, params, stats)
    with pytest.raises(ValueError, match="nothing to convert"):
      serving.serving_model(float_model)
  with pytest.raises(ValueError, match="mode 'train'"):
    serving.convert(serving.serving_model(model), params)
  with pytest.raises(Exception, match="kernel"):  # A missing weight.
    serving.convert(model, {k: v for k, v in params.items() if k != "fc1"}
                    | {"fc1": {"bias": params["fc1"]["bias"]}})


def test_export_round_trip(trained, digits, tmp_path):
  workdir = trained["workdir"]
  # An unlearned model (an UnlearnState with a typed PRNG key) and a float
  # run sit next to the originals, as the pipeline lays them out.
  model, params, stats = trained["w4a8"]
  params_u = jax.tree.map(lambda p: p * 0.9, params)
  state = unlearn.UnlearnState(
      params_u, stats, optax.sgd(0.1, momentum=0.9).init(params_u), (),
      jnp.int32(7), jax.random.key(3))
  udir = (workdir / "checkpoints" / _RUN["w4a8"] / "seed0" /
          "oeu-random0.1-feedbeef00")
  checkpointing.save_checkpoint(udir, 7, state)
  fdir = workdir / "checkpoints" / "digits-cnn-float-0000000000" / "seed0"
  checkpointing.save_checkpoint(fdir / "original", 1, {"params": params})

  out = tmp_path / "serving"
  record = serving.export(workdir, out)
  assert [e["dest"] for e in record["models"]] == [
      f"{_RUN['w4a8']}/seed0/oeu-random0.1-feedbeef00",
      f"{_RUN['w4a8']}/seed0/original",
      f"{_RUN['w8a8']}/seed0/original"]
  assert [s["source"] for s in record["skipped"]] == [
      str(fdir.resolve() / "original")]
  assert json.loads((out / serving.EXPORT_JSON).read_text()) == json.loads(
      json.dumps(record))
  for entry in record["models"]:
    assert entry["argmax_equal"] and entry["max_abs_diff"] == 0.0
    assert entry["float_ends"] and entry["architecture_from"] == "inferred"
    assert entry["model_kwargs"] == {"features": [32, 64], "hidden": 128}
    assert entry["serving_bytes"] < entry["float_bytes"] / 3.5

  for entry, model, variables in serving.load_exported(out):
    bits = entry["bits"]
    unlearned = not entry["dest"].endswith("/original")
    src_params = params_u if unlearned else trained[bits][1]
    want = train.predict(trained[bits][0], src_params, {}, digits.test_x)
    got = serving.predict(model, variables, digits.test_x)
    np.testing.assert_array_equal(got, want)
    assert variables["aqt"]["fc1"]["AqtDotGeneral_0"]["qrhs"][
        "value"].dtype == (jnp.int4 if bits == "w4a8" else jnp.int8)

  # A second export into the same folder replaces the first.
  again = serving.export(workdir / "checkpoints" / _RUN["w8a8"], out)
  assert [e["dest"] for e in again["models"]] == [
      f"{_RUN['w8a8']}/seed0/original"]
  assert not (out / _RUN["w4a8"]).exists()
  assert len(serving.load_exported(out)) == 1


def test_export_errors(trained, tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
    serving.export(tmp_path / "missing", tmp_path / "out")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError,
                     match=f"No checkpoints found under {tmp_path / 'empty'}"):
    serving.export(tmp_path / "empty", tmp_path / "out")
  _, params, _ = trained["w8a8"]
  floats = tmp_path / "floats" / "checkpoints" / "digits-cnn-float-0a0b0c0d0e"
  checkpointing.save_checkpoint(floats / "seed0" / "original", 1,
                                {"params": params})
  with pytest.raises(ValueError, match="Only float models under .*floats"):
    serving.export(tmp_path / "floats", tmp_path / "out")
  stray = tmp_path / "stray" / "run"
  checkpointing.save_checkpoint(stray, 1, {"params": params})
  with pytest.raises(ValueError, match=f"Cannot tell the model of .*{stray}"):
    serving.export(tmp_path / "stray", tmp_path / "out")
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match=f"{busy} is not empty"):
    serving.export(trained["workdir"], busy)
  assert (busy / "notes.txt").read_text() == "mine"
  with pytest.raises(FileNotFoundError, match="No export.json"):
    serving.load_exported(tmp_path / "empty")


def test_export_reads_model_json(trained, tmp_path):
  # float_ends leaves no trace in the parameters: model.json says it.
  _, params, _ = trained["w8a8"]
  run = tmp_path / "wd" / "checkpoints" / "digits-cnn-w8a8-00aa11bb22"
  checkpointing.save_checkpoint(run / "seed1" / "original", 5,
                                {"params": params})
  (run / serving.MODEL_JSON).write_text(json.dumps(
      {"model": "cnn", "bits": "w8a8", "num_classes": 10,
       "float_ends": False, "model_kwargs": {}}))
  record = serving.export(tmp_path / "wd", tmp_path / "out")
  (entry,) = record["models"]
  assert entry["architecture_from"] == str(run / serving.MODEL_JSON)
  assert not entry["float_ends"] and entry["step"] == 5
  assert entry["quantized_layers"] == ["conv1", "conv2", "fc1", "head"]
  assert entry["argmax_equal"] and entry["max_abs_diff"] == 0.0
  (run / serving.MODEL_JSON).write_text("{}")
  with pytest.raises(ValueError, match="not a valid model record"):
    serving.export(tmp_path / "wd", tmp_path / "out")
