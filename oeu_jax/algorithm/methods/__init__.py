"""Unlearning methods: each one is a gradient function plus an optax chain.

Every method is a :class:`~oeu_jax.algorithm.methods.base.Method` (``prepare``,
``grads``, ``make_tx``; see :mod:`oeu_jax.algorithm.methods.base`) built by name
with :func:`build_method`. :data:`REGISTRY` is the one table of names: the
factory, the hyperparameter dataclass (where every default lives) and the
fields an ablation pins.

=============== ==========================================================
``oeu``         entropy forget loss, ``g_f`` projected orthogonal to ``g_r``
``ft``          cross-entropy on D_r (SalUn ``FT``)
``ga``          gradient ascent on the D_f cross-entropy (SalUn ``GA``)
``rl``          random wrong labels on D_f + CE on D_r (SalUn ``RL``)
``neggrad_plus`` ``beta CE(D_r) - (1 - beta) CE(D_f)`` (SCRUB's NegGrad+)
``l1_sparse``   FT + decaying l1 penalty (SalUn ``FT_prune``)
``salun``       RL on the top-50% saliency weights only (SalUn)
``scrub``       teacher-student max/min KL (SCRUB)
``qmul``        similar labels + adaptive gradient reweighting (Q-MUL)
``ssd``         training-free dampening of D_f-specific weights (SSD)
``bad_teacher`` KL to a random teacher on D_f, the Original on D_r (BT)
``oeu_no_proj`` ablation: entropy, no projection
``oeu_scalar``  ablation: entropy + Q-MUL's scalar reweighting
``rl_proj``     ablation: random labels + projection
``sl_proj``     ablation: similar labels + projection
``oeu_ema``     variant: ``g_f`` projected off a moving average of ``g_r``
``oeu_subspace`` variant: off the span of the last ``k`` retain gradients
``oeu_post``    variant: the optimizer's output projected (after momentum)
``oeu_complement`` variant: target uniform over the other classes
``oeu_renorm``  variant: target the Original's renormalized other classes
=============== ==========================================================

The unlearning budget (10 epochs, batch 256, lr 0.01, SGD momentum 0.9,
weight decay 5e-4, cosine schedule) is shared by all methods
(``UnlearnConfig`` / :class:`OptimizerConfig`, the Q-MUL harness); the
config dataclasses hold the public harness defaults of each method. The
hyperparameter grid run on digits, and the picks used by the ``-tuned``
tables, are in ``experiments/grid.py`` and ``experiments/common.py``.
``retrain`` is run by the trainer.

References:
  OEU: arXiv:2602.00567. SalUn: arXiv:2310.12508 (code: OPTML-Group/
  Unlearn-Saliency). Q-MUL: arXiv:2503.13917 (ICCV 2025). SCRUB:
  arXiv:2302.09880. l1-sparse: arXiv:2304.04934. SSD: arXiv:2308.07707
  (AAAI 2024). Bad Teacher: arXiv:2205.08096 (AAAI 2023).
"""

import dataclasses
import importlib
import types
from typing import Any
from typing import Callable
from typing import Mapping
from typing import NamedTuple
from typing import Optional

_NONE = types.MappingProxyType({})


class MethodSpec(NamedTuple):
  """One row of :data:`REGISTRY`: where a method's code is, by name (the
  module is imported when the method is built, so the names are known
  without importing JAX: the command line reads them).

  Attributes:
    module: the submodule of :mod:`oeu_jax.algorithm.methods`.
    factory_name: ``factory(model, config, optimizer=, name=) -> Method``;
      without a config class, ``factory(model, optimizer=, name=)``.
    config_name: the hyperparameter dataclass's name, or None (none).
    pinned: fields this name fixes (an ablation); overriding one is an
      error.
  """
  module: str
  factory_name: str
  config_name: Optional[str] = None
  pinned: Mapping[str, Any] = _NONE

  @property
  def factory(self) -> Callable[..., Any]:
    return getattr(_submodule(self.module), self.factory_name)

  @property
  def config(self) -> Optional[type]:
    return (None if self.config_name is None
            else getattr(_submodule(self.module), self.config_name))


def _submodule(name: str):
  return importlib.import_module(f"{__name__}.{name}")


# Names are resolved once, at the edge. Order: the order of METHODS.
REGISTRY = types.MappingProxyType({
    "oeu": MethodSpec("oeu", "oeu", "OEUConfig"),
    # OEU's ablations: one field of its config (or of Q-MUL's) pinned.
    "oeu_no_proj": MethodSpec("oeu", "oeu", "OEUConfig",
                              {"project": False, "forget": "entropy"}),
    "rl_proj": MethodSpec("oeu", "oeu", "OEUConfig", {"forget": "random"}),
    "sl_proj": MethodSpec("oeu", "oeu", "OEUConfig", {"forget": "similar"}),
    # OEU's variants (oeu_jax.algorithm.methods.oeu's docstring says
    # what each changes and why).
    "oeu_ema": MethodSpec("oeu", "oeu", "OEUConfig",
                          {"reference": "ema", "project": True}),
    "oeu_subspace": MethodSpec("oeu", "oeu", "OEUConfig",
                               {"reference": "subspace", "project": True}),
    "oeu_post": MethodSpec("oeu", "oeu", "OEUConfig",
                           {"project_at": "update", "project": True}),
    "oeu_complement": MethodSpec("oeu", "oeu", "OEUConfig",
                                 {"target": "complement",
                                  "forget": "entropy"}),
    "oeu_renorm": MethodSpec("oeu", "oeu", "OEUConfig",
                             {"target": "renormalized",
                              "forget": "entropy"}),
    "ft": MethodSpec("baselines", "ft"),
    "ga": MethodSpec("baselines", "ga", "GAConfig"),
    "rl": MethodSpec("baselines", "rl", "RLConfig"),
    "neggrad_plus": MethodSpec("baselines", "neggrad_plus",
                               "NegGradPlusConfig"),
    "l1_sparse": MethodSpec("baselines", "l1_sparse", "L1SparseConfig"),
    "salun": MethodSpec("salun", "salun", "SalUnConfig"),
    "scrub": MethodSpec("scrub", "scrub", "SCRUBConfig"),
    "qmul": MethodSpec("qmul", "qmul", "QMULConfig"),
    "oeu_scalar": MethodSpec("qmul", "qmul", "QMULConfig",
                             {"forget": "entropy"}),
    "ssd": MethodSpec("ssd", "ssd", "SSDConfig"),
    "bad_teacher": MethodSpec("bad_teacher", "bad_teacher",
                              "BadTeacherConfig"),
})

METHODS = tuple(REGISTRY) + ("retrain",)
OPTIMIZERS = ("sgd", "adam", "adamw")
# Method name -> its hyperparameter dataclass (None: none), from REGISTRY.
# Other public names of this package -> the submodule defining them (loaded
# on first use, PEP 562, so importing the package imports no JAX).
_HOMES = {
    "BadTeacherConfig": "bad_teacher",
    "Batch": "base",
    "FIRST_EPOCH_WEIGHTS": "qmul",
    "FORGET_OBJECTIVES": "base",
    "GAConfig": "baselines",
    "L1SparseConfig": "baselines",
    "Method": "base",
    "NegGradPlusConfig": "baselines",
    "OEUConfig": "oeu",
    "OptimizerConfig": "base",
    "PrepareInputs": "base",
    "QMULConfig": "qmul",
    "RLConfig": "baselines",
    "SCRUBConfig": "scrub",
    "SSDConfig": "ssd",
    "SalUnConfig": "salun",
    "StepOutput": "base",
    "bad_teacher": "bad_teacher",
    "bad_teacher_loss": "bad_teacher",
    "dampening_factor": "ssd",
    "distill_kl": "scrub",
    "forget_gradient": "salun",
    "ft": "baselines",
    "ga": "baselines",
    "l1_coefficient": "baselines",
    "l1_sparse": "baselines",
    "make_optimizer": "base",
    "mask_updates": "salun",
    "neggrad_plus": "baselines",
    "oeu": "oeu",
    "qmul": "qmul",
    "qmul_weights": "qmul",
    "random_wrong_labels": "base",
    "rl": "baselines",
    "saliency_mask": "salun",
    "salun": "salun",
    "scrub": "scrub",
    "scrub_is_max_step": "scrub",
    "similar_labels": "base",
    "ssd": "ssd",
}


def __getattr__(name: str) -> Any:
  if name == "HPARAM_DEFAULTS":  # Method name -> its hyperparameter class.
    return {n: spec.config for n, spec in REGISTRY.items()}
  if name in _HOMES:
    value = getattr(_submodule(_HOMES[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _pinned(name: str, spec: MethodSpec, kw: dict) -> dict:
  clash = sorted(k for k in kw if k in spec.pinned)
  if clash:
    raise TypeError(f"{name} fixes {clash}")
  return {**kw, **spec.pinned}


def default_hparams(name: str) -> dict:
  """The default hyperparameters of method ``name`` as a dict."""
  if name not in REGISTRY:
    raise ValueError(f"unknown method {name!r}; valid: "
                     f"{', '.join(REGISTRY)}")
  spec = REGISTRY[name]
  if spec.config is None:
    return {}
  return dict(spec.pinned) | {
      k: v for k, v in dataclasses.asdict(spec.config()).items()
      if k not in spec.pinned}


def build_method(name: str, model, *, optimizer: Optional[Any] = None,
                 **hparams) -> Any:
  """Builds the method called ``name`` (``retrain`` is run by the trainer).

  Args:
    name: one of :data:`METHODS` except ``"retrain"``.
    model: the Flax module.
    optimizer: the optimizer behind the method's direction
      (an :class:`OptimizerConfig`; None: its defaults).
    **hparams: method-specific hyperparameters (e.g. ``scope="per_leaf"``).

  Returns:
    A :class:`Method`.

  Raises:
    ValueError: unknown name (listing the valid ones) or hyperparameter.
  """
  if name not in REGISTRY:
    raise ValueError(f"unknown method {name!r}; valid: "
                     f"{', '.join(METHODS)}")
  spec = REGISTRY[name]
  if optimizer is None:
    optimizer = _submodule("base").OptimizerConfig()
  try:
    if spec.config is None:
      return spec.factory(model, optimizer=optimizer, name=name, **hparams)
    config = spec.config(**_pinned(name, spec, hparams))
    return spec.factory(model, config, optimizer=optimizer, name=name)
  except TypeError as e:
    raise ValueError(f"bad hyperparameters for method {name!r}: {e}") from e


__all__ = (
    "BadTeacherConfig",
    "FIRST_EPOCH_WEIGHTS",
    "FORGET_OBJECTIVES",
    "GAConfig",
    "HPARAM_DEFAULTS",
    "L1SparseConfig",
    "METHODS",
    "Batch",
    "Method",
    "MethodSpec",
    "NegGradPlusConfig",
    "OEUConfig",
    "OPTIMIZERS",
    "OptimizerConfig",
    "PrepareInputs",
    "QMULConfig",
    "REGISTRY",
    "RLConfig",
    "SCRUBConfig",
    "SSDConfig",
    "SalUnConfig",
    "StepOutput",
    "bad_teacher",
    "bad_teacher_loss",
    "build_method",
    "dampening_factor",
    "default_hparams",
    "distill_kl",
    "forget_gradient",
    "ft",
    "ga",
    "l1_coefficient",
    "l1_sparse",
    "make_optimizer",
    "mask_updates",
    "neggrad_plus",
    "oeu",
    "qmul",
    "qmul_weights",
    "random_wrong_labels",
    "rl",
    "saliency_mask",
    "salun",
    "scrub",
    "scrub_is_max_step",
    "similar_labels",
    "ssd",
)
