"""Dataset sources: in-memory train / test arrays, and their validation.

Every source returns a :class:`Dataset` of NumPy arrays: images as float32
NHWC scaled to ``[0, 1]`` (no per-channel mean/std normalization; a model that
wants it normalizes inside its forward pass) and labels as int32.

Sources:

* ``digits``: scikit-learn's 8x8 digits (ships with scikit-learn, offline).
* ``mnist_idx``: a local folder of MNIST IDX files (gzip or raw), e.g. only
  the 10,000-image test set ``t10k-*``.
* ``cifar10``, ``cifar100``, ``svhn_cropped``, ``mnist``, ``fashion_mnist``:
  TensorFlow Datasets through ``tfds.data_source`` (array_record random
  access), which needs no TensorFlow. TFDS must find the dataset already
  prepared; it is never downloaded from here.

The forget / retain splits and epoch orders (``SCENARIOS``, ``Split``,
``make_split``, ``mia_shadow_indices``, ``epoch_order``) live in
:mod:`oeu_jax.data.splits` and are re-exported here.
"""

from __future__ import annotations

import gzip
import numbers
from pathlib import Path
from typing import NamedTuple

import numpy as np

from oeu_jax.data.splits import SCENARIOS
from oeu_jax.data.splits import Split
from oeu_jax.data.splits import epoch_order
from oeu_jax.data.splits import make_split
from oeu_jax.data.splits import mia_shadow_indices

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "validate_arrays",
    # Re-exported from oeu_jax.data.splits.
    "SCENARIOS",
    "Split",
    "make_split",
    "mia_shadow_indices",
    "epoch_order",
]

DATASETS = (
    "digits",
    "mnist_idx",
    "cifar10",
    "cifar100",
    "svhn_cropped",
    "mnist",
    "fashion_mnist",
)

# Fixed seed and test fraction of the local train/test splits (digits, t10k).
_LOCAL_SPLIT_SEED = 0
_LOCAL_TEST_FRACTION = 0.2
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049


class Dataset(NamedTuple):
  """An image classification dataset held in memory.

  Attributes:
    name: The dataset name, one of ``DATASETS``.
    train_x: Training images, float32, shape (N, H, W, C), values in [0, 1].
    train_y: Training labels, int32, shape (N,).
    test_x: Test images, float32, shape (M, H, W, C), values in [0, 1].
    test_y: Test labels, int32, shape (M,).
    num_classes: Number of classes K; labels lie in [0, K).
  """

  name: str
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# --------------------------------------------------------------------------
# Loading.


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    max_examples: int | None = None,
) -> Dataset:
  """Loads a dataset into memory.

  ``digits`` and ``mnist_idx`` have no official train/test split of their
  own here, so a deterministic stratified split is made: 80% train, 20% test,
  per class, with NumPy's ``default_rng(0)``. For ``mnist_idx``, when the
  folder also holds ``train-*`` files, those are the training set and
  ``t10k-*`` the test set (no split is made).

  Args:
    name: One of ``DATASETS``.
    data_dir: ``mnist_idx``: the folder holding the IDX files (required).
      TFDS datasets: the TFDS data directory (``None``: TFDS's default,
      ``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``). Ignored by ``digits``.
    max_examples: If given, keep only the first ``max_examples`` examples of
      the training set and of the test set (for quick runs).

  Returns:
    The :class:`Dataset`.

  Raises:
    ValueError: Unknown name, bad ``max_examples``, a missing ``data_dir`` for
      ``mnist_idx``, or malformed IDX files.
    FileNotFoundError: The IDX folder or files are missing, or the TFDS
      dataset is not prepared in ``data_dir``.

  Examples:
    >>> ds = load_dataset("digits")
    >>> ds.train_x.shape[1:], ds.num_classes
    ((8, 8, 1), 10)
  """
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; valid names: {DATASETS}.")
  if max_examples is not None and (
      not _is_int(max_examples) or max_examples < 1
  ):
    raise ValueError(
        f"max_examples must be a positive int or None, got {max_examples!r}."
    )
  if name == "digits":
    ds = _load_digits()
  elif name == "mnist_idx":
    if data_dir is None:
      raise ValueError(
          "Dataset 'mnist_idx' needs data_dir: a folder with "
          "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]."
      )
    ds = _load_mnist_idx(Path(data_dir))
  else:
    ds = _load_tfds(name, data_dir, max_examples)
  if max_examples is not None:
    ds = ds._replace(
        train_x=ds.train_x[:max_examples],
        train_y=ds.train_y[:max_examples],
        test_x=ds.test_x[:max_examples],
        test_y=ds.test_y[:max_examples],
    )
  return ds


def _stratified_split(
    labels: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Sorted (train_idx, test_idx); round(test_fraction * n_c) of class c."""
  rng = np.random.default_rng(seed)
  test = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    n_test = int(round(test_fraction * idx.size))
    test.append(rng.permutation(idx)[:n_test])
  test_idx = np.sort(np.concatenate(test)).astype(np.int64)
  train_idx = np.setdiff1d(np.arange(labels.size), test_idx).astype(np.int64)
  return train_idx, test_idx


def _from_split(name, x, y, num_classes) -> Dataset:
  train_idx, test_idx = _stratified_split(
      y, test_fraction=_LOCAL_TEST_FRACTION, seed=_LOCAL_SPLIT_SEED
  )
  return Dataset(
      name, x[train_idx], y[train_idx], x[test_idx], y[test_idx], num_classes
  )


def _load_digits() -> Dataset:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  bunch = load_digits()
  x = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]
  y = np.asarray(bunch.target, np.int32)
  return _from_split("digits", x, y, 10)


def _read_bytes(path: Path) -> bytes:
  try:
    if path.suffix == ".gz":
      with gzip.open(path, "rb") as f:
        return f.read()
    return path.read_bytes()
  except (EOFError, gzip.BadGzipFile) as err:
    raise ValueError(
        f"{path}: corrupt or truncated gzip file ({err})."
    ) from err


def _parse_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
  """Parses an unsigned-byte IDX file with the given magic and rank."""
  raw = _read_bytes(path)
  header = 4 * (1 + ndim)
  if len(raw) < header:
    raise ValueError(
        f"{path}: truncated IDX header ({len(raw)} bytes, need {header})."
    )
  fields = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
  if int(fields[0]) != magic:
    raise ValueError(
        f"{path}: wrong IDX magic number {int(fields[0])}, expected {magic}."
    )
  dims = tuple(int(d) for d in fields[1:])
  expected = int(np.prod(dims))
  if len(raw) - header != expected:
    raise ValueError(
        f"{path}: IDX payload has {len(raw) - header} bytes, dims {dims} "
        f"need {expected} (truncated or corrupt file)."
    )
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
  for candidate in (folder / stem, folder / f"{stem}.gz"):
    if candidate.is_file():
      return candidate
  return None


def _read_idx_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads ``{prefix}-images-idx3-ubyte`` and labels; validates them."""
  paths = {}
  for kind, stem in (
      ("images", f"{prefix}-images-idx3-ubyte"),
      ("labels", f"{prefix}-labels-idx1-ubyte"),
  ):
    path = _find_idx(folder, stem)
    if path is None:
      raise FileNotFoundError(
          f"{folder / stem}[.gz] not found (MNIST IDX {kind} file)."
      )
    paths[kind] = path
  images = _parse_idx(paths["images"], _IDX_IMAGES_MAGIC, 3)
  labels = _parse_idx(paths["labels"], _IDX_LABELS_MAGIC, 1)
  if images.shape[0] != labels.shape[0]:
    raise ValueError(
        f"{paths['images']} has {images.shape[0]} images but "
        f"{paths['labels']} has {labels.shape[0]} labels."
    )
  if labels.size and labels.max() > 9:
    raise ValueError(
        f"{paths['labels']}: label {int(labels.max())} out of range [0, 10)."
    )
  x = (images.astype(np.float32) / 255.0)[..., None]
  return x, labels.astype(np.int32)


def _load_mnist_idx(folder: Path) -> Dataset:
  if not folder.is_dir():
    raise FileNotFoundError(f"MNIST IDX folder {folder} does not exist.")
  test_x, test_y = _read_idx_pair(folder, "t10k")
  has_train = any(
      _find_idx(folder, s) is not None
      for s in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
  )
  if has_train:
    train_x, train_y = _read_idx_pair(folder, "train")
    return Dataset("mnist_idx", train_x, train_y, test_x, test_y, 10)
  return _from_split("mnist_idx", test_x, test_y, 10)


def _load_tfds(name: str, data_dir, max_examples: int | None) -> Dataset:
  """Reads both splits of a prepared TFDS dataset through ``data_source``."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  arrays = []
  num_classes = None
  for split in ("train", "test"):
    try:
      # download=False: we never reach the network; an unprepared dataset
      # surfaces as KeyError (no splits) or NotImplementedError (no
      # array_record files), which we translate below.
      source = tfds.data_source(
          name,
          split=split,
          data_dir=None if data_dir is None else str(data_dir),
          download=False,
      )
    except (KeyError, NotImplementedError, OSError) as err:
      where = data_dir if data_dir is not None else "the default TFDS data dir"
      raise FileNotFoundError(
          f"TFDS dataset {name!r} (split {split!r}) is not prepared in "
          f"array_record format under {where}. Prepare it on a machine with "
          f"network: `tfds build {name} --file_format=array_record "
          f"--data_dir DIR`, copy DIR here and pass data_dir=DIR "
          f"(--data-dir DIR on the command line). TFDS said: {err}"
      ) from err
    n = len(source)
    if max_examples is not None:
      n = min(n, max_examples)
    # One record at a time: `__getitems__` is broken under
    # tfds.testing.mock_data (4.9.10), and decoding dominates anyway.
    records = [source[i] for i in range(n)]
    x = np.stack([np.asarray(r["image"]) for r in records]).astype(np.float32)
    y = np.asarray([int(r["label"]) for r in records], dtype=np.int32)
    arrays += [x / 255.0, y]
    num_classes = int(source.dataset_info.features["label"].num_classes)
  return Dataset(name, *arrays, num_classes)


# --------------------------------------------------------------------------
# Validation.


def validate_arrays(
    x, y, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
  """Checks user-supplied images and labels.

  Args:
    x: Images, shape (N, H, W, C), real-valued and finite.
    y: Integer labels, shape (N,), in [0, num_classes).
    num_classes: Number of classes, an int >= 2.

  Returns:
    ``(x, y)`` as float32 and int32 NumPy arrays.

  Raises:
    ValueError: Wrong rank or shape, non-numeric or non-finite images,
      non-integer or out-of-range labels, or differing counts.

  Examples:
    >>> x, y = validate_arrays(np.zeros((2, 8, 8, 1)), [0, 1], 10)
    >>> x.dtype, y.dtype
    (dtype('float32'), dtype('int32'))
  """
  if not _is_int(num_classes) or num_classes < 2:
    raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
  x = np.asarray(x)
  y = np.asarray(y)
  if x.ndim != 4:
    raise ValueError(
        f"images must have shape (N, H, W, C), got shape {x.shape}."
    )
  if min(x.shape[1:], default=0) < 1:
    raise ValueError(f"images have an empty dimension: shape {x.shape}.")
  if not (np.issubdtype(x.dtype, np.floating)
          or np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f"images must be numeric, got dtype {x.dtype}.")
  if not np.all(np.isfinite(x)):
    raise ValueError("images contain non-finite values (NaN or inf).")
  if y.ndim != 1:
    raise ValueError(f"labels must have shape (N,), got shape {y.shape}.")
  if y.size and not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"labels must be integers, got dtype {y.dtype}.")
  if x.shape[0] != y.shape[0]:
    raise ValueError(
        f"{x.shape[0]} images but {y.shape[0]} labels; counts must match."
    )
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    bad = int(y.min()) if y.min() < 0 else int(y.max())
    raise ValueError(f"label {bad} out of range [0, {num_classes}).")
  return x.astype(np.float32), y.astype(np.int32)

