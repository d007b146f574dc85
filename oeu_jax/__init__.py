"""oeu_jax: Orthogonal Entropy Unlearning for quantized JAX/Flax models.

The public names are loaded on first use (PEP 562), so that importing a
JAX-free submodule (``python -m oeu_jax --help``) does not import JAX.
"""

import importlib

__version__ = "0.1.0"

__all__ = (
    "add_reference",
    "forget_loss",
    "mean_cross_entropy",
    "project_orthogonal",
)

# Public name -> the module that defines it.
_HOMES = {
    "add_reference": "oeu_jax.transforms",
    "forget_loss": "oeu_jax.losses",
    "mean_cross_entropy": "oeu_jax.losses",
    "project_orthogonal": "oeu_jax.transforms",
}


def __getattr__(name):
  if name in _HOMES:
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'oeu_jax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))
