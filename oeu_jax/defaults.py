"""Every default of oeu_jax in one place, with where it came from.

The budgets (the Original/Retrain recipe per dataset, the unlearning budget
per dataset and scenario, the smaller CPU budgets of ``experiments/``), the
optimizer behind every method, the command line's defaults and the text
``run --help`` prints for them. The config types read their field defaults
from here (:class:`oeu_jax.engine.train.TrainConfig`,
:class:`oeu_jax.engine.unlearn.UnlearnConfig`,
:class:`oeu_jax.runner.config.RunConfig`), the command line reads them to
build its parser, and no other module restates a number. A method's own
hyperparameters live in its config dataclass (its module), beside the
reference code they come from.

Plain Python, no imports: the command line reads it without JAX.
"""

# The command line and the RunConfig it builds.
DATASET = "digits"
MODEL = "cnn"
BITS = "w4a8"
# How quantized layers train (oeu_jax/nn/quantization/backends/): "fake",
# AQT's quantizers then native float convolutions, the same forward outputs
# as AQT's integer dot at float cost (BENCHMARKS.md aqt_over_fake_*: AQT's
# path makes a ResNet-18 W4A8 step 1.9x slower). The protocol tables were
# made with "aqt" and pin it (experiments/protocol.QUANT_BACKEND).
QUANT_BACKEND = "fake"
SCENARIO = "random"
FORGET_RATIO = 0.1
METHODS = ("oeu",)
SEEDS = (0,)
WORKDIR = "runs/demo"
DEMO_FORGET_CLASS = 3
# The demo's baseline per scenario: the best baseline of the protocol tables
# on digits (RESULTS.md summary, 2026-12-06: Q-MUL class-wise, l1-sparse
# random 10%).
DEMO_BASELINE = {"class": "qmul", "random": "l1_sparse"}
# --quick (CI smoke runs): at most this many training / unlearning epochs.
QUICK_TRAIN_EPOCHS = 3
QUICK_UNLEARN_EPOCHS = 2
# Steps between checkpoints (a run's checkpoints are its resume points).
TRAIN_CHECKPOINT_EVERY = 200
UNLEARN_CHECKPOINT_EVERY = 50
# Steps between checks of a stopping rule (--stop-when).
STOP_EVERY = 10
# ... and of the protocol defaults' auto rule: every 5 steps (digits
# class-wise, hidden classes 2/7, seeds 5/6: OEU stops at step 5 with gap
# 0.36 in 0.108 of Retrain's wall time, against step 10, gap 0.24, 0.186;
# experiments/validate_defaults.py, 2026-12-07).
AUTO_STOP_EVERY = 5
# A rule is checked on at most this many examples of D_f (evenly spaced):
# a check costs about one step whatever |D_f| (UA's standard error at 99%
# on 1,024 examples: 0.3 points).
STOP_SAMPLE = 1024
# The optimizer behind every unlearning method (the Q-MUL / SalUn harness:
# torch.optim.SGD(momentum=0.9, weight_decay=5e-4); experiments/REFERENCES.md).
OPTIMIZER = dict(name="sgd", momentum=0.9, weight_decay=5e-4)
# The Original/Retrain optimizer (SGD, momentum 0.9, weight decay 5e-4).
TRAIN_MOMENTUM = 0.9
TRAIN_WEIGHT_DECAY = 5e-4

# Original/Retrain recipes per dataset (TrainConfig fields). Paper-scale
# entries follow the Q-MUL harness (SGD 0.1, 182 epochs for CIFAR).
TRAIN = {
    "digits": dict(epochs=30, batch_size=64, lr=0.05),
    "mnist_idx": dict(epochs=15, batch_size=128, lr=0.05),
    "mnist": dict(epochs=15, batch_size=128, lr=0.05),
    "fashion_mnist": dict(epochs=30, batch_size=128, lr=0.05),
    "cifar10": dict(epochs=182, batch_size=256, lr=0.1, augment=True),
    "cifar100": dict(epochs=182, batch_size=256, lr=0.1, augment=True),
    "svhn_cropped": dict(epochs=50, batch_size=256, lr=0.1),
}
# What ``TrainConfig()`` and ``UnlearnConfig()`` default to (the budget of a
# dataset without an entry; the Q-MUL harness's unlearning default: SGD
# 0.01, batch 256, 10 epochs).
TRAIN_FALLBACK = dict(epochs=30, batch_size=64, lr=0.05)
UNLEARN_FALLBACK = dict(epochs=10, batch_size=256, lr=0.01)
# Unlearning budgets per (dataset, scenario) (UnlearnConfig fields). As in
# the SalUn and Q-MUL harnesses the budget is tuned per scenario. Digits
# grid (OEU, seed 0, w4a8 CNN; see RESULTS.md): batch {64, 128, 256} x lr
# {0.01, 0.02, 0.05}. Class-wise: the 256-example batch gives only 60 steps
# and UA 85 (Retrain 100); batch 64 / lr 0.02 gives UA 100 (seeds 0-2: 100,
# 92.5, 97.3). Random 10%: batch 64 over-forgets (MIA 22-43 vs Retrain 1-4),
# while the harness default keeps MIA at 4.9 and the avg gap at 1.35.
UNLEARN = {
    ("digits", "class"): dict(epochs=10, batch_size=64, lr=0.02),
}
# The budgets that fit this project's 2-core CPU machines for 3 seeds x 9
# methods x 2 scenarios (the ``cpu`` variants of experiments/): for MNIST,
# the first 4,000 of the 8,000 training images, 8 training epochs and 3
# unlearning epochs (the harness's batch 256, lr 0.01).
CPU = {
    "mnist_idx": (dict(epochs=8, batch_size=128, lr=0.05),
                  dict(epochs=3, batch_size=256, lr=0.01), 4000),
}


def train_budget(dataset: str) -> dict:
  """The Original/Retrain recipe of ``dataset`` as TrainConfig fields."""
  return dict(TRAIN.get(dataset, TRAIN_FALLBACK))


def unlearn_budget(dataset: str, scenario: str) -> dict:
  """The unlearning budget as UnlearnConfig fields."""
  return dict(UNLEARN.get((dataset, scenario), UNLEARN_FALLBACK))


def defaults_text(datasets, scenarios) -> str:
  """Per-dataset defaults of the budget flags, for ``run --help``."""
  lines = ["per-dataset defaults, as epochs/batch size/learning rate:",
           "  training: --epochs/--batch-size (and lr; +aug: augmented)",
           "  unlearning per scenario: --unlearn-epochs/--unlearn-batch-size/"
           "--unlearn-lr", ""]
  width = max(len(d) for d in datasets)
  for d in datasets:
    t = train_budget(d)
    train = (f"{t['epochs']}/{t['batch_size']}/{t['lr']:g}"
             + (" +aug" if t.get("augment") else ""))
    unlearn = "  ".join(
        f"{s} {u['epochs']}/{u['batch_size']}/{u['lr']:g}"
        for s, u in ((s, unlearn_budget(d, s)) for s in scenarios))
    lines.append(f"  {d:<{width}}  {train:<16}  {unlearn}")
  return "\n".join(lines)



# --- Unlearning without a Retrain: protocol picks, compute cap, stopping ---
#
# A user unlearns because retraining costs too much, so the defaults never
# need a Retrain model. When no budget flag is given (RunConfig.unlearn is
# None and RunConfig.defaults == "protocol"), every method runs
#
# * at its protocol pick (PICKS): the learning rate and key knob that the
#   one tuning protocol of experiments/protocol.py chose on the tuning
#   seeds 100/101 (never a table seed), on the shared harness base (SGD
#   momentum 0.9, weight decay 5e-4, batch 256, cosine) and the method's
#   reference schedule;
# * for as many epochs as fit under COST_CAP (a fraction of the Original's
#   training cost, counted in examples through a forward and backward pass;
#   oeu_jax.engine.budget), cut to whole steps when one epoch is already
#   over it;
# * with the Retrain-free stopping rule STOP_WHEN ("auto": stop once D_f
#   meets the estimated Retrain's UA, oeu_jax.evaluation.estimate and
#   oeu_jax.engine.stopping), checked every AUTO_STOP_EVERY steps (where
#   an epoch ends under a sequential schedule: after its D_r pass), for the
#   methods of OPEN_ENDED: those whose forgetting term has no end of its
#   own (an ascent, a relabelling, an entropy or distillation target). FT,
#   l1-sparse, SCRUB (msteps ends its max steps) and SSD (one step) run
#   their capped budget, as their references do.
#
# Transfer rule for a (dataset, scenario) without a pick: the picks of the
# same scenario on PICK_FAMILY[dataset] (MNIST-like and larger data take the
# 4,000-image MNIST picks, the largest tuned), else the digits pick of the
# scenario (mislabel has only digits picks), else the method's reference
# learning rate (REFERENCE_LR) and its own knob defaults. The learning rate
# is taken as picked at batch 256 (the protocol's); with another
# --unlearn-batch-size give the lr too (the linear scaling rule, lr x
# batch / 256, is the usual starting point). The budget needs no transfer:
# the cap is relative to the Original's cost, so it scales with the data
# and the training recipe.
COST_CAP = 0.15
STOP_WHEN = "auto"
OPEN_ENDED = ("oeu", "oeu_no_proj", "rl_proj", "sl_proj", "oeu_scalar",
              "oeu_ema", "oeu_subspace", "oeu_post", "oeu_complement",
              "oeu_renorm", "ga", "rl", "neggrad_plus", "salun", "qmul",
              "bad_teacher")
# Class-wise, the auto rule stops at UA >= 100 - CLASS_SLACK (the target is
# 100: a model that never saw the class never predicts it).
CLASS_SLACK = 1.0
# ... and, in every scenario, only once RA on a D_r sample is at least the
# Original's minus RA_SLACK points (never stop in a damaged state).
RA_SLACK = 1.0
# The protocol's fixed per-method settings (experiments/protocol.py FIXED):
# GA's lr is given directly; Bad Teacher's KL at the batchmean scale.
FIXED_HPARAMS = {"ga": (("lr_scale", 1.0),),
                 "bad_teacher": (("reduction", "batchmean"),)}
# SCRUB's forget batch: D_f in this many max steps per epoch (its
# large-scale notebook: 5,000 images at batch 512).
FORGET_STEPS = {"scrub": 10}
# Reference learning rates (experiments/REFERENCES.md), the fallback where
# no pick transfers.
REFERENCE_LR = {
    "ft": 0.01, "ga": 3e-4, "rl": 0.01, "neggrad_plus": 0.01,
    "l1_sparse": 0.01, "salun": 0.013, "scrub": 5e-4, "qmul": 0.01,
    "oeu": 0.01, "oeu_no_proj": 0.01, "rl_proj": 0.01, "sl_proj": 0.01,
    "oeu_scalar": 0.01, "oeu_ema": 0.01, "oeu_subspace": 0.01,
    "oeu_post": 0.01, "oeu_complement": 0.01, "oeu_renorm": 0.01,
    "bad_teacher": 0.01,
}
PICK_FAMILY = {"digits": "digits"}
PICK_FALLBACK_FAMILY = "mnist_idx"
# Where each pick comes from: the tuning file (its command and its trials
# are in it), the date it finished, and the tuning budget.
PICK_SOURCES = {
    ("digits", "class"): "experiments/tuning/digits-class.json, 2026-12-06"
                         " (seeds 100/101, classes 0/1, 30-epoch Originals)",
    ("digits", "random"): "experiments/tuning/digits-random.json, "
                          "2026-12-06 (seeds 100/101, random 10%)",
    ("digits", "mislabel"): "experiments/tuning/digits-mislabel.json, "
                            "2026-12-07 (seeds 100/101, mislabel 10%)",
    ("mnist_idx", "class"): "experiments/tuning/mnist_idx-class.json, "
                            "2026-12-06 (4,000 images, 8-epoch Originals, "
                            "seeds 100/101, classes 0/1)",
    ("mnist_idx", "random"): "experiments/tuning/mnist_idx-random.json, "
                             "2026-12-06 (4,000 images, 8-epoch Originals, "
                             "seeds 100/101, random 10%)",
}
# {(dataset, scenario): {method: (lr, ((knob, value), ...))}}, copied from
# the tuning files' picks (tests/test_defaults_picks.py keeps them equal).
PICKS = {
    ('digits', 'class'): {
        'ft': (0.00562, ()),
        'ga': (0.000533, ()),
        'l1_sparse': (0.562, (('alpha', 0.0005),)),
        'neggrad_plus': (0.562, (('beta', 0.95),)),
        'oeu': (0.178, (('alpha', 0.5),)),
        'oeu_complement': (0.001, (('alpha', 1.0),)),
        'oeu_ema': (0.178, (('alpha', 0.5),)),
        'oeu_no_proj': (0.178, (('alpha', 0.5),)),
        'oeu_post': (0.178, (('alpha', 0.5),)),
        'oeu_renorm': (0.00178, (('alpha', 0.5),)),
        'oeu_subspace': (0.316, (('alpha', 0.5),)),
        'qmul': (0.01, ()),
        'rl': (0.00562, (('forget_weight', 0.5),)),
        'salun': (0.00231, (('sparsity', 0.5),)),
        'scrub': (0.00889, (('msteps', 1),)),
    },
    ('digits', 'random'): {
        'ft': (0.562, ()),
        'ga': (0.0169, ()),
        'l1_sparse': (0.562, (('alpha', 0.0005),)),
        'neggrad_plus': (0.562, (('beta', 0.95),)),
        'oeu': (0.178, (('alpha', 0.5),)),
        'oeu_complement': (0.00178, (('alpha', 1.0),)),
        'oeu_ema': (0.178, (('alpha', 0.5),)),
        'oeu_no_proj': (0.0562, (('alpha', 1.0),)),
        'oeu_post': (0.178, (('alpha', 0.5),)),
        'oeu_renorm': (0.00178, (('alpha', 0.5),)),
        'oeu_subspace': (0.178, (('alpha', 0.5),)),
        'qmul': (0.000563, ()),
        'rl': (0.0178, (('forget_weight', 1.0),)),
        'salun': (0.00231, (('sparsity', 0.3),)),
        'scrub': (8.89e-05, (('msteps', 2),)),
    },
    ('digits', 'mislabel'): {
        'bad_teacher': (0.562, (('temperature', 1.0),)),
        'ft': (0.562, ()),
        'ga': (0.000533, ()),
        'l1_sparse': (0.562, (('alpha', 0.0005),)),
        'neggrad_plus': (0.562, (('beta', 0.9999),)),
        'oeu': (0.178, (('alpha', 1.0),)),
        'qmul': (0.316, ()),
        'rl': (0.1, (('forget_weight', 1.0),)),
        'salun': (0.231, (('sparsity', 0.3),)),
        'scrub': (0.005, (('msteps', 2),)),
    },
    ('mnist_idx', 'class'): {
        'ft': (0.316, ()),
        'ga': (0.00534, ()),
        'l1_sparse': (0.316, (('alpha', 0.0005),)),
        'neggrad_plus': (0.178, (('beta', 0.95),)),
        'oeu': (0.0178, (('alpha', 1.0),)),
        'oeu_complement': (0.00178, (('alpha', 0.5),)),
        'oeu_ema': (0.0178, (('alpha', 1.0),)),
        'oeu_no_proj': (0.0316, (('alpha', 0.5),)),
        'oeu_post': (0.0316, (('alpha', 0.5),)),
        'oeu_renorm': (0.00562, (('alpha', 0.5),)),
        'oeu_subspace': (0.0178, (('alpha', 1.0),)),
        'qmul': (0.0178, ()),
        'rl': (0.00562, (('forget_weight', 0.5),)),
        'salun': (0.00731, (('sparsity', 0.3),)),
        'scrub': (0.005, (('msteps', 2),)),
    },
    ('mnist_idx', 'random'): {
        'ft': (0.178, ()),
        'ga': (0.0095, ()),
        'l1_sparse': (0.178, (('alpha', 0.0001),)),
        'neggrad_plus': (0.316, (('beta', 0.95),)),
        'oeu': (0.0316, (('alpha', 1.0),)),
        'oeu_complement': (0.00562, (('alpha', 0.5),)),
        'oeu_ema': (0.178, (('alpha', 0.5),)),
        'oeu_no_proj': (0.178, (('alpha', 0.5),)),
        'oeu_post': (0.0316, (('alpha', 1.0),)),
        'oeu_renorm': (0.00562, (('alpha', 0.5),)),
        'oeu_subspace': (0.0316, (('alpha', 1.0),)),
        'qmul': (0.01, ()),
        'rl': (0.00562, (('forget_weight', 1.0),)),
        'salun': (0.00411, (('sparsity', 0.5),)),
        'scrub': (0.0158, (('msteps', 2),)),
    },
}


def pick(dataset: str, scenario: str, method: str):
  """``(lr, hparams, source)``: ``method``'s default setting on ``dataset``
  and ``scenario`` by the transfer rule above (``hparams`` includes the
  fixed ones; ``source`` says where the setting came from)."""
  fixed = dict(FIXED_HPARAMS.get(method, ()))
  family = PICK_FAMILY.get(dataset, PICK_FALLBACK_FAMILY)
  for key in ((family, scenario), ("digits", scenario)):
    if method in PICKS.get(key, {}):
      lr, hp = PICKS[key][method]
      via = "" if key[0] == dataset else f" (transferred to {dataset})"
      return (lr, fixed | dict(hp),
              f"protocol pick {key[0]}/{key[1]}: {PICK_SOURCES[key]}{via}")
  return (REFERENCE_LR.get(method, UNLEARN_FALLBACK["lr"]), fixed,
          f"reference lr of {method} (no protocol pick for {scenario})")
