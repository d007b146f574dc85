"""Tests for oeu_jax.nn.serving and oeu_jax.runner.export.

A small CNN is trained on scikit-learn's digits (3 epochs, W8A8 and W4A8);
its converted (int8 / int4) form must give the same logits as the
fake-quantized evaluation, bit for bit, on the whole test set. The export
of a work directory reads each run's ``model.json``.
"""

import dataclasses
import doctest
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from oeu_jax import data as data_lib
from oeu_jax.engine import checkpointing
from oeu_jax.engine import train
from oeu_jax.engine import unlearn
from oeu_jax.nn import inference
from oeu_jax.nn import models
from oeu_jax.nn import quantization
from oeu_jax.nn import serving
from oeu_jax.nn.quantization import QuantSpec
from oeu_jax.runner import export
from oeu_jax.runner import layout

_RECIPE = train.TrainConfig(epochs=3, batch_size=64, lr=0.05)
_RUN = {"w8a8": "digits-cnn-w8a8-0123456789",
        "w4a8": "digits-cnn-w4a8-abcdef0123"}
_SHAPE = (8, 8, 1)


def _model_json(run_dir, bits: str, **changes) -> None:
  """The record the pipeline writes beside a run's seeds."""
  spec = {"dataset": "digits", "model": "cnn", "bits": bits,
          "num_classes": 10, "float_ends": True, "model_kwargs": {},
          "input_shape": list(_SHAPE)}
  spec.update(changes)
  layout.write_json(run_dir / layout.MODEL_JSON, spec)


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
    _model_json(ckpt.parent.parent, bits)
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
  variables, _ = serving.convert(model, params, stats, input_shape=_SHAPE)
  for batch_size in (512, 64):  # One batch; several with a padded last one.
    want = inference.predict(model, params, stats, digits.test_x,
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
  variables, info = serving.convert(model, params, stats, input_shape=_SHAPE)
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
  variables, _ = serving.convert(model, params, stats, input_shape=_SHAPE)
  b = quantization.preset(bits).weight_bits
  for name, (value, scale) in _values(variables).items():
    kernel = np.asarray(params[name]["kernel"], np.float32)
    w = kernel.reshape(-1, kernel.shape[-1])  # (kh*kw*C_in, C_out)
    absmax = np.abs(w).max(axis=0, keepdims=True)
    absmax = np.where(absmax == 0, np.float32(1), absmax)
    s = absmax / np.float32(2.0 ** (b - 1) - 0.5)
    limit = np.float32(2 ** (b - 1) - 1)
    x = np.clip(w * (np.float32(1) / s), -limit, limit)
    q = np.round(x)
    got = np.asarray(value, np.int32)
    # The scale may be 1 ulp apart (below), which can move a weight lying on
    # a rounding tie (k + 0.5, to float32 precision) by one step; no other
    # weight may differ.
    off = got != q
    tie = np.abs(np.abs(x - np.floor(x)) - 0.5) <= 1e-5 * np.maximum(
        np.abs(x), 1)
    assert np.all(np.abs(got - q)[off] == 1), name
    assert np.all(tie[off]), (name, x[off])
    assert off.sum() <= 2, name
    # XLA may divide by the constant via its reciprocal: 1 ulp apart.
    np.testing.assert_allclose(np.asarray(scale).reshape(-1), s.reshape(-1),
                               rtol=2e-7, atol=0, err_msg=name)


def test_sizes(trained):
  _, params, stats = trained["w8a8"]
  v8, i8 = serving.convert(*trained["w8a8"], input_shape=_SHAPE)
  v4, i4 = serving.convert(*trained["w4a8"], input_shape=_SHAPE)
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
  assert quantization.serves_frozen_weights(
      dataclasses.replace(spec, mode="serve"))
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
      serving.convert(float_model, params, stats, input_shape=_SHAPE)
    with pytest.raises(ValueError, match="nothing to convert"):
      serving.serving_model(float_model)
  with pytest.raises(ValueError, match="mode 'train'"):
    serving.convert(serving.serving_model(model), params,
                    input_shape=_SHAPE)
  with pytest.raises(Exception, match="kernel"):  # A missing weight.
    serving.convert(model, {k: v for k, v in params.items() if k != "fc1"}
                    | {"fc1": {"bias": params["fc1"]["bias"]}},
                    input_shape=_SHAPE)


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
  _model_json(fdir.parent, "float")

  out = tmp_path / "serving"
  record = export.export(workdir, out)
  assert [e["dest"] for e in record["models"]] == [
      f"{_RUN['w4a8']}/seed0/oeu-random0.1-feedbeef00",
      f"{_RUN['w4a8']}/seed0/original",
      f"{_RUN['w8a8']}/seed0/original"]
  assert [s["source"] for s in record["skipped"]] == [
      str(fdir.resolve() / "original")]
  assert json.loads((out / export.EXPORT_JSON).read_text()) == json.loads(
      json.dumps(record))
  for entry in record["models"]:
    assert entry["argmax_equal"] and entry["max_abs_diff"] == 0.0
    run = workdir / "checkpoints" / entry["dest"].split("/")[0]
    assert entry["float_ends"] and entry["architecture_from"] == str(
        run / layout.MODEL_JSON)
    assert entry["model_kwargs"] == {} and entry["dataset"] == "digits"
    assert entry["input_shape"] == list(_SHAPE)
    assert entry["serving_bytes"] < entry["float_bytes"] / 3.5

  for entry, model, variables in export.load_exported(out):
    bits = entry["bits"]
    unlearned = not entry["dest"].endswith("/original")
    src_params = params_u if unlearned else trained[bits][1]
    want = inference.predict(trained[bits][0], src_params, {}, digits.test_x)
    got = serving.predict(model, variables, digits.test_x)
    np.testing.assert_array_equal(got, want)
    assert variables["aqt"]["fc1"]["AqtDotGeneral_0"]["qrhs"][
        "value"].dtype == (jnp.int4 if bits == "w4a8" else jnp.int8)

  # A second export into the same folder replaces the first.
  again = export.export(workdir / "checkpoints" / _RUN["w8a8"], out)
  assert [e["dest"] for e in again["models"]] == [
      f"{_RUN['w8a8']}/seed0/original"]
  assert not (out / _RUN["w4a8"]).exists()
  assert len(export.load_exported(out)) == 1


def test_export_errors(trained, tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
    export.export(tmp_path / "missing", tmp_path / "out")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError,
                     match=f"No checkpoints found under {tmp_path / 'empty'}"):
    export.export(tmp_path / "empty", tmp_path / "out")
  _, params, _ = trained["w8a8"]
  floats = tmp_path / "floats" / "checkpoints" / "digits-cnn-float-0a0b0c0d0e"
  checkpointing.save_checkpoint(floats / "seed0" / "original", 1,
                                {"params": params})
  _model_json(floats, "float")
  with pytest.raises(ValueError, match="Only float models under .*floats"):
    export.export(tmp_path / "floats", tmp_path / "out")
  stray = tmp_path / "stray" / "run"
  checkpointing.save_checkpoint(stray, 1, {"params": params})
  with pytest.raises(ValueError,
                     match=f"Cannot tell the model of .*{stray}: no model"):
    export.export(tmp_path / "stray", tmp_path / "out")
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match=f"{busy} is not empty"):
    export.export(trained["workdir"], busy)
  assert (busy / "notes.txt").read_text() == "mine"
  with pytest.raises(FileNotFoundError, match="No export.json"):
    export.load_exported(tmp_path / "empty")


def test_export_reads_model_json(trained, tmp_path):
  # float_ends leaves no trace in the parameters: model.json says it.
  _, params, _ = trained["w8a8"]
  run = tmp_path / "wd" / "checkpoints" / "digits-cnn-w8a8-00aa11bb22"
  checkpointing.save_checkpoint(run / "seed1" / "original", 5,
                                {"params": params})
  _model_json(run, "w8a8", float_ends=False)
  record = export.export(tmp_path / "wd", tmp_path / "out")
  (entry,) = record["models"]
  assert entry["architecture_from"] == str(run / layout.MODEL_JSON)
  assert not entry["float_ends"] and entry["step"] == 5
  assert entry["quantized_layers"] == ["conv1", "conv2", "fc1", "head"]
  assert entry["argmax_equal"] and entry["max_abs_diff"] == 0.0
  # A model.json of an older version (no dataset, no input shape) is
  # refused with the way out, never guessed from.
  old = {"model": "cnn", "bits": "w8a8", "num_classes": 10,
         "float_ends": True, "model_kwargs": {}}
  layout.write_json(run / layout.MODEL_JSON, old)
  with pytest.raises(ValueError,
                     match="lacks dataset, input_shape .* rerun the run/demo"):
    export.export(tmp_path / "wd", tmp_path / "out")
  (run / layout.MODEL_JSON).write_text("{not json")
  with pytest.raises(ValueError, match="not a valid model record"):
    export.export(tmp_path / "wd", tmp_path / "out")
  _model_json(run, "w8a8", input_shape="8x8")
  with pytest.raises(ValueError, match="not a valid model record"):
    export.export(tmp_path / "wd", tmp_path / "out")


def test_load_variables_reads_any_state_through_its_manifest(trained,
                                                             tmp_path):
  _, params, stats = trained["w4a8"]
  state = unlearn.UnlearnState(params, stats, optax.sgd(0.1).init(params),
                               (), jnp.int32(3), jax.random.key(1))
  checkpointing.save_checkpoint(tmp_path / "u", 3, state)
  got = export.load_variables(tmp_path / "u")
  assert set(got) == {"params", "batch_stats"}
  for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(FileNotFoundError, match="No complete checkpoint"):
    export.load_variables(tmp_path / "nothing")


def test_doctests():
  assert doctest.testmod(serving).failed == 0
  assert doctest.testmod(layout).failed == 0
