"""Forget / retain splits and epoch orders, pure functions of their seeds.

A split is a pure function of (dataset name, scenario, forget ratio or class,
seed), as the unlearning protocol requires: it hashes those with SHA-256 (not
Python's salted ``hash``), so every process and machine draws the same forget
set. An epoch's example order is a pure function of (seed, epoch), so a resumed
run replays the order it would have seen. Everything here is NumPy on index
arrays; the datasets themselves come from :mod:`oeu_jax.data`, which
re-exports these names.

References:
  Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight
  Saliency in Both Image Classification and Generation", ICLR 2024.
  https://arxiv.org/abs/2310.12508
"""

from __future__ import annotations

import hashlib
import numbers
from typing import NamedTuple
from typing import Protocol

import numpy as np

__all__ = [
    "SCENARIOS",
    "Split",
    "RATIO_SCENARIOS",
    "make_split",
    "training_labels",
    "mia_shadow_indices",
    "epoch_order",
]

SCENARIOS = ("random", "class", "mislabel")
# Scenarios whose forget set is a random fraction of the training set.
RATIO_SCENARIOS = ("random", "mislabel")


class Split(NamedTuple):
  """A forget / retain partition of a training set.

  Attributes:
    forget_idx: Sorted int64 indices into the training set (D_f).
    retain_idx: Sorted int64 indices into the training set (D_r), the
      complement of ``forget_idx``.
    train_y: The training labels the Original learns from, when they are
      not the dataset's: the ``mislabel`` scenario's, where D_f carries
      wrong labels (D_r's are the true ones). None: the dataset's labels.
  """

  forget_idx: np.ndarray
  retain_idx: np.ndarray
  train_y: np.ndarray | None = None


class _Labelled(Protocol):
  """What ``make_split`` reads of an :class:`oeu_jax.data.Dataset`."""

  name: str
  train_y: np.ndarray
  num_classes: int


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _stable_seed(*parts) -> int:
  """A seed from ``parts`` that is identical across runs and machines."""
  digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "little")


def make_split(
    dataset: _Labelled,
    scenario: str,
    *,
    forget_ratio: float | None = None,
    forget_class: int | None = None,
    seed: int = 0,
) -> Split:
  """Partitions the training set into forget (D_f) and retain (D_r) sets.

  ``random``: ``max(1, round(forget_ratio * N))`` training examples chosen
  uniformly without replacement, with ``np.random.default_rng`` seeded by a
  SHA-256 hash of ``(dataset.name, scenario, forget_ratio, seed)`` (not
  Python's salted ``hash``), so the split is the same in every process.
  ``class``: every training example labelled ``forget_class``; ``seed`` plays
  no role. ``mislabel`` (Corrective Machine Unlearning, Goel et al., TMLR
  2024): D_f is drawn as in ``random`` (its own hash), and each of its
  examples gets a wrong label, uniform over the other ``K - 1`` classes,
  fixed per seed (``Split.train_y``); the Original trains on those labels,
  Retrain on the clean D_r.

  Args:
    dataset: The dataset; only ``name``, ``train_y`` and ``num_classes`` are
      used.
    scenario: One of ``SCENARIOS``.
    forget_ratio: Fraction of the training set to forget (``mislabel``: to
      mislabel), in (0, 1); required for ``random`` and ``mislabel``,
      forbidden for ``class``.
    forget_class: Class to forget, an int in [0, num_classes); required for
      ``class`` and forbidden for the others.
    seed: Non-negative int selecting the random split.

  Returns:
    A :class:`Split` of sorted, disjoint int64 index arrays covering
    ``range(N)``.

  Raises:
    ValueError: Unknown scenario; both or the wrong one of ``forget_ratio`` /
      ``forget_class``; a ratio outside (0, 1); a class that is not an int in
      range or has no training example; a forget set that would be empty or
      the whole training set; a negative seed.

  Examples:
    >>> from oeu_jax.data import load_dataset
    >>> ds = load_dataset("digits")
    >>> split = make_split(ds, "random", forget_ratio=0.1, seed=0)
    >>> len(split.forget_idx) + len(split.retain_idx) == len(ds.train_y)
    True
  """
  if scenario not in SCENARIOS:
    raise ValueError(f"Unknown scenario {scenario!r}; valid: {SCENARIOS}.")
  if forget_ratio is not None and forget_class is not None:
    raise ValueError(
        f"Give forget_ratio ({forget_ratio!r}) or forget_class "
        f"({forget_class!r}), not both."
    )
  labels = np.asarray(dataset.train_y)
  n = labels.shape[0]
  train_y = None
  if scenario in RATIO_SCENARIOS:
    if forget_class is not None:
      raise ValueError(
          f"forget_class={forget_class!r} is for scenario 'class'; scenario "
          f"{scenario!r} takes forget_ratio."
      )
    if forget_ratio is None:
      raise ValueError(f"Scenario {scenario!r} needs forget_ratio in (0, 1).")
    if (
        isinstance(forget_ratio, bool)
        or not isinstance(forget_ratio, numbers.Real)
        or not 0.0 < float(forget_ratio) < 1.0
    ):
      raise ValueError(f"forget_ratio must be in (0, 1), got {forget_ratio!r}.")
    if not _is_int(seed) or seed < 0:
      raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    ratio = float(forget_ratio)
    n_forget = max(1, int(round(ratio * n)))
    if n_forget >= n:
      raise ValueError(
          f"forget_ratio={forget_ratio!r} of {n} training examples would "
          "forget the whole training set."
      )
    rng = np.random.default_rng(
        _stable_seed(dataset.name, scenario, ratio, int(seed))
    )
    forget = np.sort(rng.choice(n, size=n_forget, replace=False))
    if scenario == "mislabel":
      if dataset.num_classes < 2:
        raise ValueError("Scenario 'mislabel' needs at least 2 classes.")
      shift = rng.integers(1, dataset.num_classes, size=n_forget)
      train_y = labels.copy()
      train_y[forget] = (labels[forget] + shift) % dataset.num_classes
  else:
    if forget_ratio is not None:
      raise ValueError(
          f"forget_ratio={forget_ratio!r} is for scenarios {RATIO_SCENARIOS}; "
          "scenario 'class' takes forget_class."
      )
    if forget_class is None:
      raise ValueError("Scenario 'class' needs forget_class.")
    if (
        not _is_int(forget_class)
        or not 0 <= forget_class < dataset.num_classes
    ):
      raise ValueError(
          f"forget_class must be an int in [0, {dataset.num_classes}), "
          f"got {forget_class!r}."
      )
    forget = np.flatnonzero(labels == forget_class)
    if forget.size == 0:
      raise ValueError(
          f"forget_class={forget_class!r} has no training examples."
      )
    if forget.size == n:
      raise ValueError(
          f"forget_class={forget_class!r} covers the whole training set."
      )
  forget = forget.astype(np.int64)
  retain = np.setdiff1d(np.arange(n, dtype=np.int64), forget)
  return Split(forget_idx=forget, retain_idx=retain, train_y=train_y)


def training_labels(dataset: _Labelled, split: Split) -> np.ndarray:
  """The labels the Original trains on: ``split.train_y`` or the dataset's."""
  return dataset.train_y if split.train_y is None else split.train_y


def mia_shadow_indices(split: Split, num_test: int) -> np.ndarray:
  """Shadow members for the MIA: the first ``num_test`` retain examples.

  Following the SalUn protocol, the membership attack is fit on the first
  |D_t| examples of D_r (members) against D_t (non-members).

  Args:
    split: The forget / retain split.
    num_test: |D_t|, a positive int.

  Returns:
    ``split.retain_idx[:num_test]`` (all of D_r if it is smaller), int64.

  Raises:
    ValueError: ``num_test`` is not a positive int.

  Examples:
    >>> s = Split(np.array([1]), np.array([0, 2, 3]))
    >>> mia_shadow_indices(s, 2)
    array([0, 2])
  """
  if not _is_int(num_test) or num_test < 1:
    raise ValueError(f"num_test must be a positive int, got {num_test!r}.")
  return np.sort(np.asarray(split.retain_idx, dtype=np.int64))[:num_test]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  """The example order of one epoch, a pure function of (seed, epoch).

  A resumed run therefore replays exactly the order it would have seen.

  Args:
    n: Number of examples.
    seed: Non-negative int.
    epoch: Non-negative int.

  Returns:
    A permutation of ``range(n)``, int64.

  Raises:
    ValueError: A negative or non-int argument.

  Examples:
    >>> bool(np.all(epoch_order(5, 0, 1) == epoch_order(5, 0, 1)))
    True
  """
  for arg_name, value in (("n", n), ("seed", seed), ("epoch", epoch)):
    if not _is_int(value) or value < 0:
      raise ValueError(f"{arg_name} must be a non-negative int, got {value!r}.")
  return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))
