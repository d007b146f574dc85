"""oeu_jax: Orthogonal Entropy Unlearning for quantized JAX/Flax models."""

from oeu_jax.losses import cross_entropy
from oeu_jax.losses import entropy
from oeu_jax.losses import forget_loss
from oeu_jax.losses import mean_cross_entropy
from oeu_jax.transforms import add_reference
from oeu_jax.transforms import oeu_direction
from oeu_jax.transforms import project_orthogonal
from oeu_jax.transforms import project_pytree

__version__ = "0.1.0"

__all__ = (
    "add_reference",
    "cross_entropy",
    "entropy",
    "forget_loss",
    "mean_cross_entropy",
    "oeu_direction",
    "project_orthogonal",
    "project_pytree",
)
