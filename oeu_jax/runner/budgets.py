"""Each method's default budget when the user gives none (no Retrain needed).

Under ``RunConfig.budgets == "protocol"`` (what ``run`` does when no
``--unlearn-*`` budget flag is given) every method gets the setting of
:func:`oeu_jax.defaults.pick` (its protocol pick, or the transfer rule),
its reference schedule, as many epochs as fit under ``cost_cap`` x the
Original's training cost (:func:`oeu_jax.engine.budget.capped`) and, for the
open-ended methods (:data:`oeu_jax.defaults.OPEN_ENDED`), the stopping rule
``RunConfig.stop_when`` (``auto`` by default). The numbers and their
provenance live in :mod:`oeu_jax.defaults`; this module only applies them
to one run's set sizes.
"""

import dataclasses
import math
from typing import NamedTuple

from oeu_jax import defaults
from oeu_jax.algorithm import methods as methods_lib
from oeu_jax.engine import budget as budget_lib
from oeu_jax.engine import unlearn as unlearn_lib

# Methods that take one pass whatever the budget (SSD dampens once).
ONE_PASS = ("ssd",)


class Filled(NamedTuple):
  """What :func:`fill` decided: the config and, per method, its source."""
  config: object
  sources: dict


def original_cost(train_epochs: int, num_train: int) -> int:
  """The Original's training cost in examples (epochs x |D|)."""
  return int(train_epochs) * int(num_train)


def method_config(cfg, name: str, hparams: dict, *, num_forget: int,
                  num_retain: int, num_train: int):
  """``(UnlearnConfig, hparams, source)`` of method ``name`` under the
  protocol defaults of ``cfg`` (a resolved RunConfig)."""
  lr, hp, source = defaults.pick(cfg.dataset, cfg.scenario, name)
  hp = hp | hparams  # The user's hyperparameters win.
  method = methods_lib.build_method(name, None, **hp)
  ucfg = unlearn_lib.resolve(dataclasses.replace(cfg.unlearn, lr=lr),
                             method)
  if name in defaults.FORGET_STEPS:
    ucfg = dataclasses.replace(ucfg, forget_batch_size=max(
        1, math.ceil(num_forget / defaults.FORGET_STEPS[name])))
  cost = cfg.cost_cap * original_cost(cfg.train.epochs, num_train)
  if cost > 0:
    ucfg = budget_lib.capped(num_forget, num_retain, ucfg, budget=cost,
                             max_epochs=1 if name in ONE_PASS else None)
  else:  # An untrained Original (smoke runs): nothing to cap by.
    ucfg = dataclasses.replace(ucfg, epochs=1)
  stop = cfg.stop_when if name in defaults.OPEN_ENDED else None
  every = cfg.stop_every
  if ucfg.schedule == "sequential":
    # A D_f pass then a D_r pass: checked only where an epoch ends, after
    # the D_r pass has repaired what the D_f pass broke (Q-MUL stopped
    # inside its first D_f pass on digits: RA 90, MIA 0).
    every = unlearn_lib.steps_per_epoch(num_forget, num_retain, ucfg)
  ucfg = dataclasses.replace(ucfg, stop_when=stop, stop_every=every)
  if name == "l1_sparse":  # Its penalty decays over the run's epochs.
    hp = dict(hp, epochs=ucfg.epochs)
  cap = (f"cap {cfg.cost_cap:g} x the Original's cost: {ucfg.epochs} "
         f"epoch(s)" + (f", {ucfg.max_steps} steps" if ucfg.max_steps
                        else ""))
  return ucfg, hp, f"{source}; {cap}; stop {stop or 'none'}"


def fill(cfg, *, num_forget: int, num_retain: int, num_train: int) -> Filled:
  """``cfg`` with each method's protocol-default budget and settings.

  A config whose ``budgets`` is not ``"protocol"`` is returned unchanged
  (every method then runs ``cfg.unlearn``).
  """
  if cfg.budgets != "protocol":
    return Filled(cfg, {m: cfg.budgets for m in cfg.methods})
  given = {k: dict(v) for k, v in cfg.method_hparams}
  per, hps, sources = [], [], {}
  for m in cfg.methods:
    if m == "retrain":
      continue
    ucfg, hp, sources[m] = method_config(
        cfg, m, given.get(m, {}), num_forget=num_forget,
        num_retain=num_retain, num_train=num_train)
    per.append((m, ucfg))
    if hp:
      hps.append((m, tuple(sorted(hp.items()))))
  return Filled(dataclasses.replace(cfg, method_unlearn=tuple(per),
                                    method_hparams=tuple(hps)), sources)


def unlearn_of(cfg, name: str):
  """The UnlearnConfig method ``name`` runs under ``cfg``."""
  return dict(cfg.method_unlearn).get(name, cfg.unlearn)
