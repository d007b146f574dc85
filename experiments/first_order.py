"""OEU's first-order claim, measured (issue 13, item 1).

The claim (METHOD.md section 2): a step ``-eta g_f_perp`` changes the retain
loss by ``O(eta^2)``, while the unprojected ``-eta g_f`` changes it by
``O(eta)``. Here, from an Original model:

* **One step.** ``g_f`` (minus the entropy on D_f) and ``g_r`` (CE on one
  retain batch of 256) at the Original's parameters; one step along each arm
  for a sweep of step sizes ``eta``, measuring ``Delta L_r`` on that retain
  batch (the batch the projection used), on all of D_r, and ``Delta L_f``
  on D_f. Fitted log-log slopes of ``|Delta|`` against ``eta``. Arms:
  ``g_f``, ``g_f_perp`` (OEU's projection of the optimizer's input) and, for
  momentum and Adam, ``post`` (the optimizer's output projected off ``g_r``,
  :func:`oeu_jax.algorithm.variants.project_after` with ``beta = 0``).
  Optimizers: plain SGD, SGD momentum 0.9 and Adam (no weight decay). The retain
  gradient is left out of the step (``beta = 0``): the claim is about the
  forget direction alone.
* **Warm state.** Momentum and Adam are measured from a warmed state, as in
  the middle of a run: :data:`WARM_STEPS` optimizer updates at the
  Original's parameters (which are not moved), each on the same arm's
  direction computed on a fresh random pair (64 forget, 256 retain
  examples). The state of SGD's trace and of Adam's moments does not depend
  on the learning rate, so one warm state serves every ``eta``.
* **Whole run.** The default unlearning budget of
  :class:`oeu_jax.engine.unlearn.UnlearnConfig` (10 epochs, batch 256, lr 0.01,
  SGD momentum 0.9, weight decay 5e-4, cosine) for ``oeu_no_proj``, ``oeu``
  and ``oeu_post``, with ``beta = 1`` (the default) and ``beta = 0``: the
  cumulative per-step rise of each step's own retain-batch loss, and the
  change of the loss on all of D_r over the run.

Float and W4A8 CNNs (their own QAT Originals, trained with
:func:`oeu_jax.engine.train.fit` and checkpointed under ``--out``). Command::

  python -m experiments.first_order --dataset digits --out runs/first_order

writes ``first_order.json``, ``first_order.md`` and ``first_order.png`` to
``--out``; the results are in ``results/first_order.md``.
"""

import argparse
import datetime
import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from oeu_jax import data as data_lib
from oeu_jax.algorithm import losses
from oeu_jax.algorithm import methods
from oeu_jax.algorithm import transforms
from oeu_jax.algorithm import variants
from oeu_jax.data import splits
from oeu_jax.engine import train
from oeu_jax.engine import unlearn
from oeu_jax.nn import models

ETAS = tuple(float(v) for v in np.logspace(-4, -1, 7))
ADAM_ETAS = tuple(float(v) for v in np.logspace(-5.5, -2.5, 7))
OPTIMIZERS = ("sgd", "momentum", "adam")
WARM_STEPS = 20
RUN_METHODS = ("oeu_no_proj", "oeu", "oeu_post")
# |Delta| below this multiple of float32 epsilon times |L| is rounding.
FLOOR = 100 * float(np.finfo(np.float32).eps)


def make_optimizer(name: str, eta: float) -> optax.GradientTransformation:
  """Plain SGD, SGD momentum 0.9 or Adam at learning rate ``eta``."""
  if name == "sgd":
    return optax.sgd(eta)
  if name == "momentum":
    return optax.sgd(eta, momentum=0.9)
  if name == "adam":
    return optax.adam(eta)
  raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def arms(name: str) -> tuple:
  """The arms measured for optimizer ``name`` (``post`` needs a state)."""
  return ("g_f", "g_f_perp") + (() if name == "sgd" else ("post",))


def one_step(loss_fns: dict, params, g_f, g_r, *, optimizer: str,
             etas=ETAS, warm: tuple = ()) -> dict:
  """``Delta L`` of one step of each arm, for each ``eta``.

  Args:
    loss_fns: name -> ``loss(params)``, the losses to measure.
    params: where the step starts.
    g_f: the forget gradient there.
    g_r: the retain gradient there (what ``g_f_perp`` is orthogonal to).
    optimizer: one of :data:`OPTIMIZERS`.
    etas: step sizes (learning rates).
    warm: ``(g_f_i, g_r_i)`` pairs the optimizer state is warmed on, each
      turned into the arm's direction (``post`` warms like ``g_f``: its
      optimizer sees ``g_f``).

  Returns:
    ``{arm: {loss name: [Delta for each eta]}}`` (floats).
  """
  base = {k: float(f(params)) for k, f in loss_fns.items()}
  direction = {"g_f": lambda f, r: f, "post": lambda f, r: f,
               "g_f_perp": transforms.project_pytree}
  out = {}
  for arm in arms(optimizer):
    opt = make_optimizer(optimizer, 1.0)
    state = opt.init(params)
    for f, r in warm:
      _, state = opt.update(direction[arm](f, r), state, params)
    rows = {k: [] for k in loss_fns}
    for eta in etas:
      opt = make_optimizer(optimizer, eta)
      if arm == "post":
        tx = variants.project_after(opt, beta=0.0)
        u, _ = tx.update(g_f, variants.AfterState(state), params,
                         reference=g_r)
      else:
        u, _ = opt.update(direction[arm](g_f, g_r), state, params)
      new = optax.apply_updates(params, u)
      for k, f in loss_fns.items():
        rows[k].append(float(f(new)) - base[k])
    out[arm] = rows
  return out


def loglog_slope(etas, deltas, *, scale: float = 1.0) -> float:
  """Least-squares slope of ``log |Delta|`` against ``log eta``.

  Points with ``|Delta|`` at float32 rounding level (below ``FLOOR *
  scale``, ``scale`` the loss's magnitude) are left out; NaN when fewer than
  three remain.
  """
  e, d = np.asarray(etas, np.float64), np.abs(np.asarray(deltas, np.float64))
  keep = d > FLOOR * max(abs(scale), 1e-3)
  if keep.sum() < 3:
    return float("nan")
  return float(np.polyfit(np.log(e[keep]), np.log(d[keep]), 1)[0])


# --------------------------------------------------------------------------
# The Original and its gradients.


def _original(dataset, bits: str, out: Path, epochs: int):
  model = models.build_model("cnn", num_classes=dataset.num_classes,
                             bits=bits)
  cfg = train.TrainConfig(epochs=epochs, batch_size=64, lr=0.05)
  res = train.fit(model, dataset.train_x, dataset.train_y, config=cfg,
                  seed=0, checkpoint_dir=str((out / f"original-{bits}")
                                             .resolve()))
  return model, res.state.params, res.state.batch_stats


def _losses(model, bs):
  def logits(p, xb):
    return models.apply_model(model, p, bs, xb, train=True)[0]

  ce = jax.jit(lambda p, xb, yb: losses.mean_cross_entropy(logits(p, xb), yb))
  ent = jax.jit(lambda p, xb: losses.forget_loss(logits(p, xb)))
  return ce, ent


def measure_one_step(model, params, bs, data, *, rng: np.random.Generator,
                     etas=ETAS, adam_etas=ADAM_ETAS) -> dict:
  """:func:`one_step` for every optimizer at the Original's parameters."""
  ce, ent = _losses(model, bs)
  g_ce, g_ent = jax.jit(jax.grad(ce)), jax.jit(jax.grad(ent))
  fx, rx, ry = data.forget_x, data.retain_x, data.retain_y
  ri = rng.choice(len(ry), min(256, len(ry)), replace=False)
  g_f, g_r = g_ent(params, fx), g_ce(params, rx[ri], ry[ri])
  warm = []
  for _ in range(WARM_STEPS):
    fi = rng.choice(len(fx), min(64, len(fx)), replace=False)
    wi = rng.choice(len(ry), min(256, len(ry)), replace=False)
    warm.append((g_ent(params, fx[fi]), g_ce(params, rx[wi], ry[wi])))
  fns = {"L_r batch": lambda p: ce(p, rx[ri], ry[ri]),
         "L_r D_r": lambda p: ce(p, rx, ry),
         "L_f": lambda p: ent(p, fx)}
  base = {k: float(f(params)) for k, f in fns.items()}
  out = {"base": base, "cos_fr": float(transforms.cosine(g_f, g_r))}
  for name in OPTIMIZERS:
    e = adam_etas if name == "adam" else etas
    d = one_step(fns, params, g_f, g_r, optimizer=name, etas=e,
                 warm=() if name == "sgd" else tuple(warm))
    out[name] = {"etas": list(e), "deltas": d, "slopes": {
        arm: {k: loglog_slope(e, v, scale=base[k]) for k, v in rows.items()}
        for arm, rows in d.items()}}
  return out


def run_curve(name: str, model, params, bs, data, *, beta: float,
              num_classes: int, config: unlearn.UnlearnConfig) -> dict:
  """One unlearning run; the retain loss around every step."""
  method = methods.build_method(name, model, beta=beta)
  state, tx = unlearn.init_state(method, model, params, bs, data,
                                 config=config, num_classes=num_classes,
                                 seed=0)
  step = jax.jit(unlearn.make_step(method, tx))
  ce, _ = _losses(model, bs)
  nf, nr = len(data.forget_y), len(data.retain_y)
  total = unlearn.total_steps(data, config)
  rise, curve = 0.0, [float(ce(state.params, data.retain_x, data.retain_y))]
  for s in range(total):
    fi, ri = unlearn.step_indices(nf, nr, config, 0, s)
    xb, yb = data.retain_x[ri], data.retain_y[ri]
    before = float(ce(state.params, xb, yb))
    state, _ = step(state, *data, fi, ri)
    rise += float(ce(state.params, xb, yb)) - before
    curve.append(float(ce(state.params, data.retain_x, data.retain_y)))
  # Whether it forgot: D_f's normalized entropy and UA after the run.
  logits = models.apply_model(model, state.params, bs, data.forget_x,
                              train=False)[0]
  h = losses.entropy(logits) / math.log(num_classes)
  ua = 100.0 * (1.0 - jnp.mean(jnp.argmax(logits, -1) == data.forget_y))
  return {"batch_rise": rise, "dr_change": curve[-1] - curve[0],
          "curve": curve, "forget_entropy": float(jnp.mean(h)),
          "ua": float(ua)}


# --------------------------------------------------------------------------
# Report.


def _fmt(v: float) -> str:
  return "n/a" if not math.isfinite(v) else f"{v:.2f}"


def markdown(results: dict, command: str) -> str:
  """The tables of ``first_order.md``."""
  lines = ["# OEU's first-order claim, measured", "",
           f"Command: `{command}`  ", f"Date: {results['date']}", "",
           "Fitted log-log slopes of |Delta L| against the step size eta "
           "for one step from the Original (1 = first order, 2 = second "
           "order). `L_r batch`: the retain batch whose gradient g_f_perp "
           "is orthogonal to; `L_r D_r`: all of D_r; `L_f`: minus the "
           "entropy on D_f. Momentum and Adam start from a state warmed by "
           f"{WARM_STEPS} updates on the same arm (module docstring).", "",
           "| bits | optimizer | arm | slope L_r batch | slope L_r D_r | "
           "slope L_f | Delta L_r batch at largest eta |",
           "|---|---|---|---|---|---|---|"]
  for bits, r in results["one_step"].items():
    for opt in OPTIMIZERS:
      for arm, s in r[opt]["slopes"].items():
        d = r[opt]["deltas"][arm]["L_r batch"][-1]
        lines.append(f"| {bits} | {opt} | {arm} | {_fmt(s['L_r batch'])} | "
                     f"{_fmt(s['L_r D_r'])} | {_fmt(s['L_f'])} | {d:+.2e} |")
  lines += ["", "At the Original: " + "; ".join(
      f"{b}: cos(g_f, g_r) {r['cos_fr']:+.3f}, L_r batch "
      f"{r['base']['L_r batch']:.4f}, L_r D_r {r['base']['L_r D_r']:.4f}, "
      f"L_f {r['base']['L_f']:.4f}" for b, r in results["one_step"].items()),
            "",
            "## Whole run", "",
            "Default budget (10 epochs, batch 256, lr 0.01, SGD momentum 0.9,"
            " weight decay 5e-4, cosine). `batch rise`: sum over steps of the"
            " change of that step's own retain-batch loss; `D_r change`: "
            "L_r(D_r) after minus before; `H/log K`: mean normalized entropy "
            "on D_f after the run; `UA`: 100 - accuracy on D_f after the run "
            "(%).", "",
            "| bits | beta | method | batch rise | D_r change | H/log K | UA |",
            "|---|---|---|---|---|---|---|"]
  for bits, per_beta in results["run"].items():
    for beta, per in per_beta.items():
      for m, v in per.items():
        lines.append(f"| {bits} | {beta} | {m} | {v['batch_rise']:+.4f} | "
                     f"{v['dr_change']:+.4f} | {v['forget_entropy']:.3f} | "
                     f"{v['ua']:.1f} |")
  return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
  """|Delta L_r batch| against eta per optimizer, and the run curves."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  bits_list = list(results["one_step"])
  fig, axes = plt.subplots(len(bits_list), 4, figsize=(16, 3.6 *
                                                       len(bits_list)),
                           squeeze=False)
  for row, bits in enumerate(bits_list):
    r = results["one_step"][bits]
    for col, opt in enumerate(OPTIMIZERS):
      ax = axes[row, col]
      e = np.asarray(r[opt]["etas"])
      for arm, d in r[opt]["deltas"].items():
        ax.loglog(e, np.maximum(np.abs(d["L_r batch"]), 1e-12), "o-",
                  label=f"{arm} ({_fmt(r[opt]['slopes'][arm]['L_r batch'])})")
      ax.loglog(e, e / e[0] * 1e-7, "k:", lw=0.8, label="slope 1")
      ax.loglog(e, (e / e[0]) ** 2 * 1e-7, "k--", lw=0.8, label="slope 2")
      ax.set(title=f"{bits}, {opt}", xlabel="eta",
             ylabel="|Delta L_r| (retain batch)")
      ax.legend(fontsize=7)
    ax = axes[row, 3]
    for beta, per in results["run"].get(bits, {}).items():
      for m, v in per.items():
        ax.plot(np.asarray(v["curve"]) - v["curve"][0],
                ls="-" if beta == "1.0" else "--", label=f"{m}, beta {beta}")
    ax.set(title=f"{bits}, whole run", xlabel="step",
           ylabel="L_r(D_r) - L_r(D_r) at start")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="digits",
                 choices=("digits", "mnist_idx"))
  p.add_argument("--data-dir", default=None)
  p.add_argument("--out", required=True)
  p.add_argument("--bits", nargs="+", default=["float", "w4a8"])
  p.add_argument("--forget-class", type=int, default=3)
  p.add_argument("--train-epochs", type=int, default=10)
  p.add_argument("--no-run", action="store_true",
                 help="skip the whole-run measurement")
  args = p.parse_args(argv)
  if args.dataset == "mnist_idx" and args.data_dir is None:
    from experiments import common  # pylint: disable=import-outside-toplevel
    args.data_dir = str(common.MNIST_T10K)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  ds = data_lib.load_dataset(args.dataset, data_dir=args.data_dir)
  split = splits.make_split(ds, "class", forget_class=args.forget_class)
  data = unlearn.make_data(ds.train_x, ds.train_y, split.forget_idx,
                           split.retain_idx)
  results = {"date": datetime.datetime.now(datetime.timezone.utc)
             .strftime("%Y-%m-%d %H:%M UTC"), "dataset": args.dataset,
             "forget_class": args.forget_class, "one_step": {}, "run": {}}
  for bits in args.bits:
    model, params, bs = _original(ds, bits, out, args.train_epochs)
    results["one_step"][bits] = measure_one_step(
        model, params, bs, data, rng=np.random.default_rng(0))
    if not args.no_run:
      results["run"][bits] = {
          str(beta): {m: run_curve(m, model, params, bs, data, beta=beta,
                                   num_classes=ds.num_classes,
                                   config=unlearn.UnlearnConfig())
                      for m in RUN_METHODS} for beta in (1.0, 0.0)}
  command = "python -m experiments.first_order " + " ".join(
      argv if argv is not None else sys.argv[1:])
  (out / "first_order.json").write_text(json.dumps(results, indent=1))
  (out / "first_order.md").write_text(markdown(results, command))
  plot(results, out / "first_order.png")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())


__all__ = ("ETAS", "OPTIMIZERS", "arms", "loglog_slope", "make_optimizer",
           "markdown", "measure_one_step", "one_step", "run_curve")
