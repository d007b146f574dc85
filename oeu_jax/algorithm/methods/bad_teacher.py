"""Bad Teacher: distil from an incompetent teacher on D_f, the Original on D_r.

The student starts from the Original. On a batch that mixes forget and
retain examples, its softmax at temperature ``T`` is pulled toward the
softmax of a *randomly initialized* copy of the model (the incompetent
teacher) on the forget rows and toward the Original's (the competent
teacher) on the retain rows, by ``KL(p_teacher^T || p_student^T)``. Both
teachers run in eval mode, the student in train mode.

References:
  Chundawat, Tarun, Mandal and Kankanhalli, Can Bad Teaching Induce
  Forgetting? Unlearning in Deep Networks Using an Incompetent Teacher,
  AAAI 2023, arXiv:2205.08096. Code: ``vikram2000b/bad-teaching-unlearning``
  at ``f1aa988f71cccf1be6d50e0c6f7b2b905e4c9126``, ``unlearn.py#L9-L88``
  (``UnlearnerLoss``, ``unlearning_step``, ``blindspot_unlearner``).
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from oeu_jax.algorithm import losses
from oeu_jax.algorithm.methods import base
from oeu_jax.nn import models

Array = jax.Array

REDUCTIONS = ("mean", "batchmean")


@dataclasses.dataclass(frozen=True)
class BadTeacherConfig:
  """Bad Teacher's hyperparameters, defaults from its public code.

  Paths are in ``vikram2000b/bad-teaching-unlearning`` at ``f1aa988f71cc``
  (BAD) unless marked QM (``Green-Edge-AI-Group/MU-Q-MUL`` at
  ``c46290034a5d``, ``Classification/``).

  Attributes:
    temperature: ``KL_temperature``; 1 (BAD
      ``CIFARSuper20_Rocket_Unlearn.ipynb`` raw JSON line 314, and the SSD
      repository's ``blindspot``). The loss has no ``T**2`` factor.
    retain_fraction: the reference trains on D_f plus a random
      ``int(0.3 * |D_r|)`` of D_r (notebook line 148), shuffled together in
      batches of 256, so a batch holds on average a share ``phi = |D_f| /
      (|D_f| + int(0.3 |D_r|))`` of forget rows. The paired step here
      weighs its forget rows to that share (see :func:`bad_teacher_loss`),
      making each step's loss an unbiased estimate of the reference's. None:
      no weighting, the plain mean over the concatenated batch (the
      reference's arithmetic on that batch). Q-MUL's ``BT`` uses all of
      D_r (QM ``unlearn/BT.py#L19-L28``): 1.0.
    reduction: ``"mean"`` (default): ``F.kl_div``'s default, the mean over
      all ``N * K`` entries (BAD ``unlearn.py#L19``); ``"batchmean"``: the
      sum over classes, mean over rows, i.e. ``K`` times larger, the scale
      of Q-MUL's ``DistributionLoss`` (a soft-target cross-entropy, equal
      to this KL plus a constant; QM ``utils_loss.py#L16-L45``).
  """
  temperature: float = 1.0
  retain_fraction: Optional[float] = 0.3
  reduction: str = "mean"

  def __post_init__(self):
    base.check_positive(self.temperature, "temperature")
    if self.retain_fraction is not None:
      base.check_positive(self.retain_fraction, "retain_fraction")
      if self.retain_fraction > 1:
        raise ValueError(f"retain_fraction must be in (0, 1] or None, got "
                         f"{self.retain_fraction!r}")
    base.check_choice(self.reduction, REDUCTIONS, "reduction")


def forget_share(num_forget: int, num_retain: int,
                 retain_fraction: Optional[float]) -> Optional[float]:
  """``|D_f| / (|D_f| + int(retain_fraction * |D_r|))``, or None.

  Examples:
    >>> round(forget_share(5000, 45000, 0.3), 4)  # CIFAR-10, one class.
    0.2703
  """
  if retain_fraction is None:
    return None
  return num_forget / (num_forget + int(retain_fraction * num_retain))


def bad_teacher_loss(student_logits: Array, competent_logits: Array,
                     incompetent_logits: Array, is_forget: Array, *,
                     temperature: float, weights: Array,
                     reduction: str = "mean") -> Array:
  """``sum_n w_n KL(softmax(t_n / T) || softmax(s_n / T))`` (/ K if mean).

  ``t_n`` is the incompetent teacher's logits on forget rows and the
  competent one's on retain rows (BAD ``unlearn.py#L9-L19``: the teacher's
  probabilities are selected row by row). With ``w_n = 1/N`` and
  ``reduction="mean"`` this is ``F.kl_div(log_softmax(s/T), p_t)`` with its
  default reduction.

  Args:
    student_logits: ``(N, K)``.
    competent_logits: ``(N, K)``, the Original's.
    incompetent_logits: ``(N, K)``, the random teacher's.
    is_forget: ``(N,)`` bool.
    temperature: ``T``.
    weights: ``(N,)`` row weights (summing to 1 for a mean).
    reduction: ``"mean"`` (divide by K) or ``"batchmean"``.

  Returns:
    A float32 scalar.
  """
  t = float(temperature)
  teacher = jnp.where(is_forget[:, None], incompetent_logits,
                      competent_logits).astype(jnp.float32)
  kl = losses.kl_divergence(student_logits.astype(jnp.float32) / t,
                            teacher / t)
  total = jnp.sum(weights * kl)
  return total / student_logits.shape[-1] if reduction == "mean" else total


def bad_teacher(model, config: BadTeacherConfig = BadTeacherConfig(),
                optimizer: base.OptimizerConfig = base.OptimizerConfig(),
                name: str = "bad_teacher") -> base.Method:
  """Bad Teacher: a paired step on the concatenated forget + retain batch.

  ``prepare`` keeps the Original (the competent teacher) and draws the
  incompetent teacher, ``models.init_model(model, rng)`` from its rng
  (deterministic: a resumed run draws the same one). Each step runs the
  student (train mode, one forward pass, so BatchNorm sees the mixed batch
  as in the reference) and both teachers (eval mode) on ``[x_f; x_r]`` and
  descends :func:`bad_teacher_loss`; forget rows weigh ``phi / B_f`` each
  and retain rows ``(1 - phi) / B_r`` with ``phi`` from
  :func:`forget_share`, or ``1 / (B_f + B_r)`` each with
  ``retain_fraction=None``.

  Mapping of the reference's loop (``blindspot_unlearner``: one shuffled
  pass over D_f ∪ 30% of D_r in batches of 256, Adam lr 1e-4, 1 epoch,
  notebook lines 309-320): the paired schedule draws the forget and retain
  rows of a step separately instead of one shuffled mixed batch, and visits
  all of D_r rather than a fixed 30% subset; the subset's effect on the
  loss, the forget share of a batch, is kept by the row weights. The
  optimizer is the shared one (``optimizer``), like every method here;
  ``OptimizerConfig(name="adam", weight_decay=0.0)`` at lr 1e-4 is the
  reference's (up to oeu_jax's cosine schedule). The random teacher is
  Flax's default initialization of the model, not PyTorch's.

  Args:
    model: the Flax module (student, and the random teacher's architecture).
    config: temperature, retain fraction and reduction
      (:class:`BadTeacherConfig`).
    optimizer: the shared optimizer (the reference's is Adam, above).
    name: the method's name in results.

  Returns:
    A :class:`~oeu_jax.algorithm.methods.base.Method` whose state holds both
    teachers.

  References:
    Chundawat et al., arXiv:2205.08096; ``vikram2000b/bad-teaching-
    unlearning@f1aa988f71cc:unlearn.py#L9-L88``.
  """

  def prepare(inputs):
    random_params, random_stats = models.init_model(
        inputs.model, inputs.rng, inputs.forget_x.shape[1:])
    state = {"teacher_params": inputs.params,
             "teacher_batch_stats": inputs.batch_stats,
             "random_params": random_params,
             "random_batch_stats": random_stats}
    if config.retain_fraction is not None:
      state["forget_share"] = jnp.float32(forget_share(
          int(inputs.forget_x.shape[0]), int(inputs.retain_x.shape[0]),
          config.retain_fraction))
    return state

  def teacher(params, stats, x):
    logits, _ = models.apply_model(model, params, stats, x, train=False)
    return jax.lax.stop_gradient(logits)

  def grads(params, batch_stats, mstate, fb, rb, rng, step):
    del rng, step
    bf, br = fb.x.shape[0], rb.x.shape[0]
    x = jnp.concatenate([fb.x, rb.x])
    is_forget = jnp.arange(bf + br) < bf
    if config.retain_fraction is None:
      weights = jnp.full((bf + br,), 1.0 / (bf + br), jnp.float32)
    else:
      phi = mstate["forget_share"]
      weights = jnp.where(is_forget, phi / bf, (1.0 - phi) / br)
    competent = teacher(mstate["teacher_params"],
                        mstate["teacher_batch_stats"], x)
    incompetent = teacher(mstate["random_params"],
                          mstate["random_batch_stats"], x)

    def loss(p):
      s, bs = base.forward(model, p, batch_stats, x)
      return bad_teacher_loss(s, competent, incompetent, is_forget,
                              temperature=config.temperature,
                              weights=weights,
                              reduction=config.reduction), bs

    (lv, new_bs), g = jax.value_and_grad(loss, has_aux=True)(params)
    return base.StepOutput(g, {}, new_bs, mstate, {"distill_loss": lv})

  return base.Method(name, prepare, grads, base.simple_tx(optimizer))
