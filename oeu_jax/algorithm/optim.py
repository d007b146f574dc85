"""The optimizer pieces every method and the trainer share.

``sgd`` is PyTorch's SGD (weight decay added to the gradient before
momentum), the optimizer of the Q-MUL and SalUn harnesses; ``cosine`` is
the learning-rate schedule of every run (Q-MUL's ``CosineAnnealingLR``,
stepped per step here).
"""

import optax


def sgd(lr: float | optax.Schedule, *, momentum: float,
        weight_decay: float) -> optax.GradientTransformation:
  """PyTorch-style SGD: weight decay added to the gradient before momentum."""
  parts = []
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.sgd(lr, momentum=momentum or None))
  return optax.chain(*parts)


def cosine(lr: float, total_steps: int) -> optax.Schedule:
  """Cosine decay from ``lr`` to 0 over ``total_steps`` (at least 1)."""
  return optax.cosine_decay_schedule(lr, max(int(total_steps), 1))
