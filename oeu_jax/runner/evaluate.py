"""Evaluation of one model on one split: its metrics record.

Runs the quantized forward pass (eval mode) over the training and test sets,
then hands logits to the pure functions of :mod:`oeu_jax.evaluation.metrics`:
UA, RA and TA (accuracies in percent; UA = 100 - accuracy on D_f), MIA-efficacy
(the percent of D_f that SalUn's SVC membership attack on the true-class
confidence calls non-members) and the forgetting-by-uncertainty
diagnostics. A quantized model is scored twice: as trained (the
fake-quantized forward pass of quantization-aware training) and as an edge
device runs it, converted to integers through the export path
(:func:`oeu_jax.nn.serving.convert`, :func:`oeu_jax.nn.serving.predict`):
``served`` holds the second model's UA, RA, TA and MIA-efficacy.

References:
  Fan et al., SalUn, arXiv:2310.12508 (metrics); OEU, arXiv:2602.00567.
"""

from typing import Any
from typing import Optional

import numpy as np

from oeu_jax import data as data_lib
from oeu_jax.evaluation import estimate
from oeu_jax.evaluation import metrics
from oeu_jax.nn import inference
from oeu_jax.nn import quantization
from oeu_jax.nn import serving

# The metrics the integer-served model is scored on.
SERVED_KEYS = ("ua", "ra", "ta", "mia_efficacy")

ENTROPY_BINS = 20


def evaluate(model, params: Any, batch_stats: Any, dataset: data_lib.Dataset,
             split: data_lib.Split, *, forget_class: Optional[int] = None,
             batch_size: int = 512,
             mia_exclude_forget_class: bool = False,
             targets_for: Optional[tuple] = None) -> dict:
  """UA, RA, TA, MIA-efficacy and the forgetting diagnostics of one model.

  Args:
    model: the Flax module.
    params: parameters to evaluate.
    batch_stats: BatchNorm statistics (``{}`` when none).
    dataset: the dataset.
    split: the forget/retain split of its training set.
    forget_class: the forgotten class in class-wise forgetting (TA is then on
      the remaining classes and ``forget_class_ta`` is added).
    batch_size: evaluation batch size.
    mia_exclude_forget_class: with ``forget_class``, drop that class from
      the MIA's shadow non-members (SalUn's class-wise convention).
    targets_for: ``(scenario, seed)``: this model is the Original; add its
      Retrain-free targets (:func:`oeu_jax.evaluation.estimate.targets`) as
      ``est_targets``.

  Returns:
    A dict of metrics (accuracies and MIA-efficacy in percent; UA on D_f's
    training labels, and, in the mislabel scenario, ``forget_true_acc``:
    D_f's accuracy against its true labels), plus the
    predicted-class histogram on D_f (``pred_hist``) and a histogram of the
    normalized entropy on D_f (``entropy_hist``: ``ENTROPY_BINS`` counts over
    ``[0, 1]``). A model whose logits are not finite (a diverged run) is
    scored on logits clipped to +-1e4 (NaN: 0) and flagged with
    ``nonfinite_logits: True``. A model with quantized weights adds
    ``served`` (:data:`SERVED_KEYS` of its integer serving form, same
    batches) and ``served_max_diff`` (the largest absolute difference of
    those metrics to the trained model's, in points).
  """
  def predict(x):
    return inference.predict(model, params, batch_stats, x,
                             batch_size=batch_size)

  train_logits, test_logits, finite = _logits(predict, dataset)
  score = _scorer(dataset, split, forget_class, mia_exclude_forget_class)
  record = score(train_logits, test_logits)
  if not finite:
    record["nonfinite_logits"] = True
  spec = getattr(model, "quant", None)
  if quantization.is_quantized(spec) and spec.weight_bits is not None:
    frozen, _ = serving.convert(model, params, batch_stats,
                                input_shape=dataset.train_x.shape[1:])
    served = score(*_logits(lambda x: serving.predict(
        model, frozen, x, batch_size=batch_size), dataset)[:2])
    record["served"] = {k: served[k] for k in SERVED_KEYS}
    record["served_max_diff"] = float(max(
        abs(served[k] - record[k]) for k in SERVED_KEYS))
  y = data_lib.training_labels(dataset, split)
  forget_logits = train_logits[split.forget_idx]
  if split.train_y is not None:  # Mislabel: what a clean model recovers.
    record["forget_true_acc"] = metrics.accuracy(
        forget_logits, dataset.train_y[split.forget_idx])
  if targets_for is not None:
    shadow = data_lib.mia_shadow_indices(split, len(dataset.test_y))
    scenario, seed = targets_for
    record["est_targets"] = estimate.targets(
        scenario, ra=record["ra"], ta=record["ta"], test_logits=test_logits,
        test_labels=dataset.test_y, member_logits=train_logits[shadow],
        member_labels=y[shadow], seed=seed)
  counts, _ = np.histogram(metrics.normalized_entropy(forget_logits),
                           bins=ENTROPY_BINS, range=(0.0, 1.0))
  record["entropy_hist"] = [int(c) for c in counts]
  return record


def _logits(predict, dataset: data_lib.Dataset):
  """Train and test logits of ``predict``, clipped where not finite."""
  train_logits = predict(dataset.train_x)
  test_logits = predict(dataset.test_x)
  finite = bool(np.isfinite(train_logits).all()
                and np.isfinite(test_logits).all())
  if not finite:  # A diverged model: scored on clipped logits, flagged.
    train_logits, test_logits = (
        np.nan_to_num(v, nan=0.0, posinf=1e4, neginf=-1e4)
        for v in (train_logits, test_logits))
  return train_logits, test_logits, finite


def _scorer(dataset, split, forget_class, mia_exclude_forget_class):
  """``score(train_logits, test_logits)``: the metrics of one model."""
  shadow = data_lib.mia_shadow_indices(split, len(dataset.test_y))
  # The labels the Original trained on (mislabel: D_f's are wrong).
  y = data_lib.training_labels(dataset, split)

  def score(train_logits, test_logits):
    return metrics.unlearning_metrics(
        forget_logits=train_logits[split.forget_idx],
        forget_labels=y[split.forget_idx],
        retain_logits=train_logits[split.retain_idx],
        retain_labels=y[split.retain_idx],
        test_logits=test_logits, test_labels=dataset.test_y,
        shadow_member_logits=train_logits[shadow],
        shadow_member_labels=y[shadow],
        forget_class=forget_class,
        shadow_exclude_class=(forget_class if mia_exclude_forget_class
                              else None))

  return score

