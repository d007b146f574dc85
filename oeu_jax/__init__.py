"""oeu_jax: Orthogonal Entropy Unlearning for quantized JAX/Flax models."""

from oeu_jax.losses import forget_loss
from oeu_jax.losses import mean_cross_entropy
from oeu_jax.transforms import add_reference
from oeu_jax.transforms import project_orthogonal

__version__ = "0.1.0"

__all__ = (
    "add_reference",
    "forget_loss",
    "mean_cross_entropy",
    "project_orthogonal",
)
