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
import types
from typing import Any
from typing import Callable
from typing import Mapping
from typing import NamedTuple
from typing import Optional

from oeu_jax.algorithm.methods.bad_teacher import BadTeacherConfig
from oeu_jax.algorithm.methods.bad_teacher import bad_teacher
from oeu_jax.algorithm.methods.bad_teacher import bad_teacher_loss
from oeu_jax.algorithm.methods.base import FORGET_OBJECTIVES
from oeu_jax.algorithm.methods.base import OPTIMIZERS
from oeu_jax.algorithm.methods.base import Batch
from oeu_jax.algorithm.methods.base import Method
from oeu_jax.algorithm.methods.base import OptimizerConfig
from oeu_jax.algorithm.methods.base import PrepareInputs
from oeu_jax.algorithm.methods.base import StepOutput
from oeu_jax.algorithm.methods.base import make_optimizer
from oeu_jax.algorithm.methods.base import random_wrong_labels
from oeu_jax.algorithm.methods.base import similar_labels
from oeu_jax.algorithm.methods.baselines import GAConfig
from oeu_jax.algorithm.methods.baselines import L1SparseConfig
from oeu_jax.algorithm.methods.baselines import NegGradPlusConfig
from oeu_jax.algorithm.methods.baselines import RLConfig
from oeu_jax.algorithm.methods.baselines import ft
from oeu_jax.algorithm.methods.baselines import ga
from oeu_jax.algorithm.methods.baselines import l1_coefficient
from oeu_jax.algorithm.methods.baselines import l1_sparse
from oeu_jax.algorithm.methods.baselines import neggrad_plus
from oeu_jax.algorithm.methods.baselines import rl
from oeu_jax.algorithm.methods.oeu import OEUConfig
from oeu_jax.algorithm.methods.oeu import oeu
from oeu_jax.algorithm.methods.qmul import FIRST_EPOCH_WEIGHTS
from oeu_jax.algorithm.methods.qmul import QMULConfig
from oeu_jax.algorithm.methods.qmul import qmul
from oeu_jax.algorithm.methods.qmul import qmul_weights
from oeu_jax.algorithm.methods.salun import SalUnConfig
from oeu_jax.algorithm.methods.salun import forget_gradient
from oeu_jax.algorithm.methods.salun import mask_updates
from oeu_jax.algorithm.methods.salun import saliency_mask
from oeu_jax.algorithm.methods.salun import salun
from oeu_jax.algorithm.methods.scrub import SCRUBConfig
from oeu_jax.algorithm.methods.scrub import distill_kl
from oeu_jax.algorithm.methods.scrub import scrub
from oeu_jax.algorithm.methods.scrub import scrub_is_max_step
from oeu_jax.algorithm.methods.ssd import SSDConfig
from oeu_jax.algorithm.methods.ssd import dampening_factor
from oeu_jax.algorithm.methods.ssd import ssd

_NONE = types.MappingProxyType({})


class MethodSpec(NamedTuple):
  """One row of :data:`REGISTRY`.

  Attributes:
    factory: ``factory(model, config, optimizer=, name=) -> Method``;
      without a ``config`` class, ``factory(model, optimizer=, name=)``.
    config: the hyperparameter dataclass, or None (no hyperparameters).
    pinned: fields this name fixes (an ablation); overriding one is an
      error.
  """
  factory: Callable[..., Method]
  config: Optional[type] = None
  pinned: Mapping[str, Any] = _NONE


# Names are resolved once, at the edge. Order: the order of METHODS.
REGISTRY = types.MappingProxyType({
    "oeu": MethodSpec(oeu, OEUConfig),
    # OEU's ablations: one field of its config (or of Q-MUL's) pinned.
    "oeu_no_proj": MethodSpec(oeu, OEUConfig,
                              {"project": False, "forget": "entropy"}),
    "rl_proj": MethodSpec(oeu, OEUConfig, {"forget": "random"}),
    "sl_proj": MethodSpec(oeu, OEUConfig, {"forget": "similar"}),
    # OEU's variants (oeu_jax.algorithm.methods.oeu's docstring says
    # what each changes and why).
    "oeu_ema": MethodSpec(oeu, OEUConfig,
                          {"reference": "ema", "project": True}),
    "oeu_subspace": MethodSpec(oeu, OEUConfig,
                               {"reference": "subspace", "project": True}),
    "oeu_post": MethodSpec(oeu, OEUConfig,
                           {"project_at": "update", "project": True}),
    "oeu_complement": MethodSpec(oeu, OEUConfig,
                                 {"target": "complement",
                                  "forget": "entropy"}),
    "oeu_renorm": MethodSpec(oeu, OEUConfig,
                             {"target": "renormalized",
                              "forget": "entropy"}),
    "ft": MethodSpec(ft),
    "ga": MethodSpec(ga, GAConfig),
    "rl": MethodSpec(rl, RLConfig),
    "neggrad_plus": MethodSpec(neggrad_plus, NegGradPlusConfig),
    "l1_sparse": MethodSpec(l1_sparse, L1SparseConfig),
    "salun": MethodSpec(salun, SalUnConfig),
    "scrub": MethodSpec(scrub, SCRUBConfig),
    "qmul": MethodSpec(qmul, QMULConfig),
    "oeu_scalar": MethodSpec(qmul, QMULConfig, {"forget": "entropy"}),
    "ssd": MethodSpec(ssd, SSDConfig),
    "bad_teacher": MethodSpec(bad_teacher, BadTeacherConfig),
})

METHODS = tuple(REGISTRY) + ("retrain",)
# Method name -> its hyperparameter dataclass (None: none), from REGISTRY.
HPARAM_DEFAULTS = {name: spec.config for name, spec in REGISTRY.items()}


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


def build_method(name: str, model, *,
                 optimizer: OptimizerConfig = OptimizerConfig(),
                 **hparams) -> Method:
  """Builds the method called ``name`` (``retrain`` is run by the trainer).

  Args:
    name: one of :data:`METHODS` except ``"retrain"``.
    model: the Flax module.
    optimizer: the optimizer behind the method's direction.
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
