"""oeu_jax: Orthogonal Entropy Unlearning for quantized JAX/Flax models.

The public API. Names load on first use (PEP 562), so importing a JAX-free
submodule (``python -m oeu_jax --help``) does not import JAX.

* The algorithm: ``forget_loss`` (minus the mean prediction entropy),
  ``mean_cross_entropy``, the optax transforms ``project_orthogonal`` and
  ``add_reference`` (compose them in front of any optimizer).
* Methods: ``METHODS``, ``build_method`` (OEU, its variants, the baselines).
* Runs: ``fit`` (QAT training), ``make_data`` / ``unlearn`` /
  ``UnlearnConfig`` (one unlearning run), ``unlearning_metrics`` (UA, RA,
  TA, MIA-efficacy), ``build_model`` (our CNN / ResNet-18 / MobileNetV2).

Examples:
  Unlearning a user's own Flax model (not one of ours) on their own arrays:
  forget the examples of class 0.

  >>> import flax.linen as nn, jax, numpy as np, oeu_jax
  >>> class MLP(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x, train=False):
  ...     return nn.Dense(3)(nn.relu(nn.Dense(16)(x.reshape(len(x), -1))))
  >>> rng = np.random.default_rng(0)
  >>> x = rng.random((60, 4, 4, 1), np.float32)
  >>> y = (np.arange(60) % 3).astype(np.int32)
  >>> model = MLP()
  >>> params = model.init(jax.random.key(0), x[:1])["params"]
  >>> data = oeu_jax.make_data(x, y, np.flatnonzero(y == 0),
  ...                          np.flatnonzero(y != 0))
  >>> method = oeu_jax.build_method("oeu", model)
  >>> out = oeu_jax.unlearn(method, model, params, {}, data, num_classes=3,
  ...                       config=oeu_jax.UnlearnConfig(epochs=2,
  ...                                                    batch_size=10))
  >>> int(out.state.step)
  8
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_HOMES = {
    "add_reference": "oeu_jax.algorithm.transforms",
    "project_orthogonal": "oeu_jax.algorithm.transforms",
    "forget_loss": "oeu_jax.algorithm.losses",
    "mean_cross_entropy": "oeu_jax.algorithm.losses",
    "METHODS": "oeu_jax.algorithm.methods",
    "build_method": "oeu_jax.algorithm.methods",
    "build_model": "oeu_jax.nn.models",
    "fit": "oeu_jax.engine.train",
    "TrainConfig": "oeu_jax.engine.train",
    "make_data": "oeu_jax.engine.unlearn",
    "unlearn": "oeu_jax.engine.unlearn",
    "UnlearnConfig": "oeu_jax.engine.unlearn",
    "unlearning_metrics": "oeu_jax.evaluation.metrics",
}

__all__ = tuple(sorted(_HOMES))


def __getattr__(name):
  if name in _HOMES:
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'oeu_jax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))
