"""Data sources, IDX parsing, TFDS via data_source, and forget/retain splits."""

import gzip
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from oeu_jax import data

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_T10K = Path(__file__).resolve().parents[2] / "shared/data/mnist-t10k"
needs_mnist = pytest.mark.skipif(
    not MNIST_T10K.is_dir(), reason=f"{MNIST_T10K} not available"
)


def _synthetic(n=50, num_classes=5, name="synthetic"):
  y = (np.arange(n) % num_classes).astype(np.int32)
  x = np.zeros((n, 2, 2, 1), np.float32)
  return data.Dataset(name, x, y, x[:4], y[:4], num_classes)


def _assert_well_formed(ds, shape, num_classes):
  for x, y in ((ds.train_x, ds.train_y), (ds.test_x, ds.test_y)):
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.shape[1:] == shape and x.shape[0] == y.shape[0] > 0
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert 0 <= y.min() and y.max() < num_classes
  assert ds.num_classes == num_classes


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
  return data.load_dataset("digits")


def test_digits_shapes_ranges(digits):
  _assert_well_formed(digits, (8, 8, 1), 10)
  assert digits.name == "digits"
  assert len(digits.train_y) + len(digits.test_y) == 1797
  # Stratified 80/20: every class in both splits, test about 20%.
  assert abs(len(digits.test_y) - 0.2 * 1797) <= 10
  assert set(np.unique(digits.test_y)) == set(range(10))
  assert digits.train_x.max() == 1.0  # 16/16


def test_digits_deterministic(digits):
  again = data.load_dataset("digits")
  for a, b in zip(digits, again):
    np.testing.assert_array_equal(a, b)


def test_max_examples(digits):
  small = data.load_dataset("digits", max_examples=30)
  assert len(small.train_y) == len(small.test_y) == 30
  np.testing.assert_array_equal(small.train_x, digits.train_x[:30])
  with pytest.raises(ValueError, match="max_examples"):
    data.load_dataset("digits", max_examples=0)


def test_unknown_dataset_lists_names():
  with pytest.raises(ValueError, match="cifar10.*fashion_mnist"):
    data.load_dataset("imagenet")


# ---------------------------------------------------------------- mnist_idx


@needs_mnist
def test_mnist_idx_real_t10k():
  ds = data.load_dataset("mnist_idx", data_dir=MNIST_T10K)
  _assert_well_formed(ds, (28, 28, 1), 10)
  assert len(ds.train_y) + len(ds.test_y) == 10_000
  assert abs(len(ds.test_y) - 2000) <= 10
  assert set(np.unique(ds.train_y)) == set(range(10))
  assert set(np.unique(ds.test_y)) == set(range(10))
  again = data.load_dataset("mnist_idx", data_dir=str(MNIST_T10K))
  np.testing.assert_array_equal(ds.train_y, again.train_y)
  np.testing.assert_array_equal(ds.test_x, again.test_x)


def _write_idx(folder, prefix, images, labels, *, gz=True, img_magic=2051,
               lbl_magic=2049, n_labels=None, cut=0):
  folder.mkdir(parents=True, exist_ok=True)
  n, h, w = images.shape
  img = struct.pack(">4i", img_magic, n, h, w) + images.tobytes()
  n_labels = len(labels) if n_labels is None else n_labels
  lbl = struct.pack(">2i", lbl_magic, n_labels) + labels.tobytes()
  if cut:
    img = img[:-cut]
  for stem, payload in ((f"{prefix}-images-idx3-ubyte", img),
                        (f"{prefix}-labels-idx1-ubyte", lbl)):
    if gz:
      (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
    else:
      (folder / stem).write_bytes(payload)


def _fake_mnist(n, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
  labels = (np.arange(n) % 10).astype(np.uint8)
  return images, labels


def test_mnist_idx_raw_and_train_files(tmp_path):
  images, labels = _fake_mnist(40)
  _write_idx(tmp_path, "t10k", images[:20], labels[:20], gz=False)
  ds = data.load_dataset("mnist_idx", data_dir=tmp_path)
  assert len(ds.train_y) + len(ds.test_y) == 20  # split of t10k only
  _write_idx(tmp_path, "train", images[20:], labels[20:])
  ds = data.load_dataset("mnist_idx", data_dir=tmp_path)
  np.testing.assert_array_equal(ds.train_y, labels[20:])
  np.testing.assert_array_equal(ds.test_y, labels[:20])
  np.testing.assert_allclose(ds.test_x[..., 0] * 255, images[:20], atol=1e-3)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(img_magic=2049), r"t10k-images.*wrong IDX magic number 2049"),
        (dict(lbl_magic=2051), r"t10k-labels.*wrong IDX magic number 2051"),
        (dict(cut=5), r"t10k-images.*truncated"),
        (dict(n_labels=19), r"t10k-labels.*truncated or corrupt"),
    ],
)
def test_mnist_idx_malformed(tmp_path, kwargs, pattern):
  images, labels = _fake_mnist(20)
  _write_idx(tmp_path, "t10k", images, labels, **kwargs)
  with pytest.raises(ValueError, match=pattern):
    data.load_dataset("mnist_idx", data_dir=tmp_path)


def test_mnist_idx_count_mismatch(tmp_path):
  images, labels = _fake_mnist(20)
  _write_idx(tmp_path, "t10k", images, labels[:15])
  with pytest.raises(ValueError, match="20 images but .* 15 labels"):
    data.load_dataset("mnist_idx", data_dir=tmp_path)


def test_mnist_idx_truncated_gzip(tmp_path):
  images, labels = _fake_mnist(20)
  _write_idx(tmp_path, "t10k", images, labels)
  path = tmp_path / "t10k-images-idx3-ubyte.gz"
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
    data.load_dataset("mnist_idx", data_dir=tmp_path)


def test_mnist_idx_missing(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(FileNotFoundError, match="nowhere"):
    data.load_dataset("mnist_idx", data_dir=missing)
  images, labels = _fake_mnist(20)
  _write_idx(tmp_path, "t10k", images, labels)
  (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
    data.load_dataset("mnist_idx", data_dir=tmp_path)
  with pytest.raises(ValueError, match="data_dir"):
    data.load_dataset("mnist_idx")


# ---------------------------------------------------------------- TFDS


@pytest.mark.parametrize(
    "name, shape, k",
    [("cifar10", (32, 32, 3), 10), ("mnist", (28, 28, 1), 10),
     ("cifar100", (32, 32, 3), 100)],
)
def test_tfds_mock(name, shape, k, tmp_path):
  with tfds.testing.mock_data(num_examples=12):
    ds = data.load_dataset(name, data_dir=tmp_path)
    small = data.load_dataset(name, data_dir=tmp_path, max_examples=5)
  _assert_well_formed(ds, shape, k)
  assert len(ds.train_y) == len(ds.test_y) == 12
  assert len(small.train_y) == len(small.test_y) == 5
  assert ds.name == name


def test_tfds_not_prepared_is_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
    data.load_dataset("cifar10", data_dir=tmp_path)
  assert not (tmp_path / "downloads").exists()  # never tried to download


def test_tfds_path_without_tensorflow(tmp_path):
  # Hide tensorflow from every import finder, as if it were not installed
  # (even where it is). Neither sys.modules["tensorflow"] = None nor a finder
  # that raises will do: tfds and etils probe with importlib.util.find_spec.
  code = textwrap.dedent(f"""
      import sys

      class HideTensorFlow:
        def __init__(self, finder):
          self.finder = finder

        def find_spec(self, name, path=None, target=None):
          if name.split(".")[0] == "tensorflow":
            return None
          find = getattr(self.finder, "find_spec", None)
          return find(name, path, target) if find else None

        def invalidate_caches(self):
          getattr(self.finder, "invalidate_caches", lambda: None)()

      sys.meta_path[:] = [HideTensorFlow(f) for f in sys.meta_path]
      import tensorflow_datasets as tfds
      from oeu_jax import data
      with tfds.testing.mock_data(num_examples=4):
        ds = data.load_dataset("cifar10", data_dir={str(tmp_path)!r})
      assert ds.train_x.shape == (4, 32, 32, 3), ds.train_x.shape
      assert "tensorflow" not in sys.modules
  """)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(
                 [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]


# ---------------------------------------------------------------- arrays


def test_validate_arrays():
  x, y = data.validate_arrays(np.zeros((3, 4, 4, 1), np.float64), [0, 1, 2], 3)
  assert x.dtype == np.float32 and y.dtype == np.int32
  good = np.zeros((3, 4, 4, 1))
  bad_cases = [
      (np.zeros((3, 4, 4)), [0, 1, 2], 3, "shape"),
      (np.full((3, 4, 4, 1), np.nan), [0, 1, 2], 3, "non-finite"),
      (good, [0, 1, 3], 3, "label 3 out of range"),
      (good, [0, -1, 2], 3, "label -1 out of range"),
      (good, [0, 1], 3, "3 images but 2 labels"),
      (good, [0.5, 1, 2], 3, "integers"),
      (good, [[0, 1, 2]], 3, "labels must have shape"),
      (good, [0, 1, 2], 1, "num_classes"),
  ]
  for x, y, k, pattern in bad_cases:
    with pytest.raises(ValueError, match=pattern):
      data.validate_arrays(x, y, k)


# ---------------------------------------------------------------- splits


def _check_partition(split, n):
  f, r = split.forget_idx, split.retain_idx
  assert f.dtype == r.dtype == np.int64
  assert np.all(np.diff(f) > 0) and np.all(np.diff(r) > 0)
  assert np.intersect1d(f, r).size == 0
  np.testing.assert_array_equal(np.union1d(f, r), np.arange(n))


def test_random_split(digits):
  n = len(digits.train_y)
  split = data.make_split(digits, "random", forget_ratio=0.1, seed=0)
  _check_partition(split, n)
  assert len(split.forget_idx) == round(0.1 * n)
  same = data.make_split(digits, "random", forget_ratio=0.1, seed=0)
  np.testing.assert_array_equal(split.forget_idx, same.forget_idx)
  other = data.make_split(digits, "random", forget_ratio=0.1, seed=1)
  assert not np.array_equal(split.forget_idx, other.forget_idx)
  renamed = data.make_split(digits._replace(name="x"), "random",
                            forget_ratio=0.1, seed=0)
  assert not np.array_equal(split.forget_idx, renamed.forget_idx)
  tiny = data.make_split(_synthetic(n=20), "random", forget_ratio=0.01)
  assert len(tiny.forget_idx) == 1  # at least one example


def test_random_split_stable_across_processes(digits):
  # Guards against Python's salted hash(): a fresh process, same split.
  code = ("from oeu_jax import data; ds = data.load_dataset('digits'); "
          "print(data.make_split(ds, 'random', forget_ratio=0.1, seed=3)"
          ".forget_idx[:20].tolist())")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONHASHSEED="123",
             PYTHONPATH=str(REPO_ROOT))
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  here = data.make_split(digits, "random", forget_ratio=0.1, seed=3)
  assert out.stdout.strip().splitlines()[-1] == str(
      here.forget_idx[:20].tolist())


def test_class_split(digits):
  split = data.make_split(digits, "class", forget_class=3)
  _check_partition(split, len(digits.train_y))
  assert np.all(digits.train_y[split.forget_idx] == 3)
  assert not np.any(digits.train_y[split.retain_idx] == 3)
  assert len(split.forget_idx) == np.sum(digits.train_y == 3)
  again = data.make_split(digits, "class", forget_class=np.int64(3), seed=7)
  np.testing.assert_array_equal(split.forget_idx, again.forget_idx)


@pytest.mark.parametrize(
    "scenario, kwargs, pattern",
    [
        ("bogus", dict(forget_ratio=0.1), r"'bogus'.*random.*class"),
        ("random", dict(), "forget_ratio"),
        ("random", dict(forget_ratio=0.0), "0.0"),
        ("random", dict(forget_ratio=1.0), "1.0"),
        ("random", dict(forget_ratio=-0.2), "-0.2"),
        ("random", dict(forget_ratio="0.1"), "'0.1'"),
        ("random", dict(forget_ratio=0.99), "whole training set"),
        ("random", dict(forget_ratio=0.1, seed=-1), "seed"),
        ("random", dict(forget_ratio=0.1, forget_class=1), "not both"),
        ("random", dict(forget_class=1), "forget_ratio"),
        ("class", dict(), "forget_class"),
        ("class", dict(forget_class=5), r"forget_class.*\[0, 5\).*5"),
        ("class", dict(forget_class=-1), "-1"),
        ("class", dict(forget_class=1.0), "1.0"),
        ("class", dict(forget_class=True), "True"),
        ("class", dict(forget_ratio=0.1), "forget_class"),
    ],
)
def test_split_bad_inputs(scenario, kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    data.make_split(_synthetic(n=50), scenario, **kwargs)


def test_class_split_empty_or_everything():
  ds = _synthetic(n=10, num_classes=3)
  ds = ds._replace(train_y=np.where(ds.train_y == 2, 0, ds.train_y))
  with pytest.raises(ValueError, match="no training examples"):
    data.make_split(ds, "class", forget_class=2)
  ds = ds._replace(train_y=np.zeros(10, np.int32))
  with pytest.raises(ValueError, match="whole training set"):
    data.make_split(ds, "class", forget_class=0)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 300),
    ratio=st.floats(0.0, 1.0, exclude_min=True, exclude_max=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_split_property(n, ratio, seed):
  ds = _synthetic(n=n, num_classes=3)
  n_forget = max(1, round(ratio * n))
  if n_forget >= n:
    with pytest.raises(ValueError, match="whole training set"):
      data.make_split(ds, "random", forget_ratio=ratio, seed=seed)
    return
  split = data.make_split(ds, "random", forget_ratio=ratio, seed=seed)
  _check_partition(split, n)
  assert len(split.forget_idx) == n_forget
  again = data.make_split(ds, "random", forget_ratio=ratio, seed=seed)
  np.testing.assert_array_equal(split.forget_idx, again.forget_idx)


def test_mia_shadow_indices():
  split = data.Split(np.array([0, 3]), np.array([1, 2, 4, 5]))
  np.testing.assert_array_equal(data.mia_shadow_indices(split, 3), [1, 2, 4])
  np.testing.assert_array_equal(data.mia_shadow_indices(split, 9), [1, 2, 4, 5])
  with pytest.raises(ValueError, match="num_test"):
    data.mia_shadow_indices(split, 0)


def test_epoch_order():
  a = data.epoch_order(100, 0, 0)
  np.testing.assert_array_equal(np.sort(a), np.arange(100))
  np.testing.assert_array_equal(a, data.epoch_order(100, 0, 0))
  assert not np.array_equal(a, data.epoch_order(100, 0, 1))
  assert not np.array_equal(a, data.epoch_order(100, 1, 0))
  assert data.epoch_order(0, 0, 0).size == 0
  with pytest.raises(ValueError, match="epoch"):
    data.epoch_order(10, 0, -1)
