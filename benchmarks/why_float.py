"""Why oeu_jax's float step costs more CPU time than PyTorch eager's.

Issue 12, item 5. The CNN (28x28, batch 256: conv3x3(32)-ReLU-pool-
conv3x3(64)-ReLU-pool-dense(128)-dense(10)) is taken apart and each piece is
timed on both sides, interleaved (JAX, torch, JAX, ...), medians after
warm-up, in one process pinned to one core with one XLA and one torch
thread (as ``torch_side --threads 1``):

* ``step``: oeu_jax's compiled FT step (cross-entropy, backward, SGD with
  momentum and weight decay; :class:`timing.StepTimer`) against torch's;
* ``forward``: the model's forward pass alone (JAX jitted, torch under
  ``no_grad``);
* ``conv1`` / ``conv2`` / ``fc1``: one layer, forward and backward
  (gradients of the output's sum with respect to input and kernel);
* ``pool``: one 2x2 max-pool, forward and backward, on conv1's output.
  The JAX side is Flax's ``nn.max_pool`` (``reduce_window``, whose gradient
  XLA builds as ``select_and_scatter``); ``pool_reshape`` is the same pool
  written as a reshape and a max over the two window axes (a plain
  reduction, whose gradient is an equality mask, split among ties), and
  ``pool_mask`` is :func:`oeu_jax.nn.models.max_pool_2x2` (what the CNN uses
  since this investigation: the window's first maximum picked by a one-hot
  mask, ``reduce_window``'s values and gradients bit for bit), both JAX
  only, against the same torch pool;
* ``conv1_patches``: conv1 (one input channel) written as nine shifted
  slices concatenated and one matmul, JAX only, against torch's conv1;
* ``conv2_wgrad`` / ``conv2_xgrad``: conv2's kernel gradient alone and its
  input gradient alone (XLA lowers each as its own convolution).

In a loop body: each of conv1's kernel gradient and conv2's forward, input
gradient and kernel gradient (batch 64, JAX only) is timed at the top level
of a program and as the body of a ``lax.scan`` of ``LOOP_STEPS`` steps
(``loop`` in the output: seconds per step each way), which is how the
scanned executors would run it.

Every setting in ``--flags`` runs in its own child process (XLA reads
``XLA_FLAGS`` once, at start-up) with those XLA flags added; torch is the
same in every child, so ``jax / torch`` across settings shows what each
flag changes. Each child also reports its HLO: the number of instructions
of the compiled FT step's entry computation and of its convolutions and
``select-and-scatter`` ops.

Usage::

    python benchmarks/why_float.py --cpu 0 --repeats 7 --json why.json
    python benchmarks/why_float.py --quick      # tiny shapes: runs, not data

Not part of the test suite (no timing assertions there). Needs torch
(``benchmarks/requirements.txt``).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLAGS = {
    "default": "",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "onednn": "--xla_cpu_use_onednn=true",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "no_fusion_emitters": "--xla_cpu_use_fusion_emitters=false",
}
LOOP_STEPS = 5
PIECES = ("step", "forward", "conv1", "conv1_patches", "conv2",
          "conv2_wgrad", "conv2_xgrad", "pool", "pool_reshape", "pool_mask",
          "fc1")


def _pieces(batch: int, side: int):
  """``{piece: (jax_fn, torch_fn)}`` (no-argument closures, results ready)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import timing
  import torch
  import torch_side
  from flax import linen as nn

  from oeu_jax.algorithm import methods
  from oeu_jax.engine import unlearn
  from oeu_jax.nn import models

  F = torch.nn.functional
  rng = np.random.default_rng(0)
  model, params, stats, udata = timing.model_setup(
      "cnn", "float", (side, side, 1), n=2 * batch, forget=batch)
  step = timing.StepTimer(methods.build_method("ft", model), model, params,
                          stats, udata, unlearn.UnlearnConfig(
                              batch_size=batch), 10, 1)
  tmodel = torch_side.torch_models(torch)["cnn"](False, 1, side)
  x_np = np.asarray(udata.retain_x[:batch])
  tx = torch.from_numpy(np.ascontiguousarray(np.transpose(x_np,
                                                          (0, 3, 1, 2))))
  ty = torch.from_numpy(np.asarray(udata.retain_y[:batch])).long()
  tstep = torch_side.torch_step(torch, tmodel, "ft")
  out = {"step": (step, lambda: tstep(tx, tx, ty))}

  fwd = jax.jit(lambda p, x: models.apply_model(model, p, stats, x,
                                                train=False))
  xj = jnp.asarray(x_np)

  def tfwd():
    with torch.no_grad():
      tmodel(tx)
  out["forward"] = (lambda: jax.block_until_ready(fwd(params, xj)), tfwd)

  def layer(fn, x_shape, w_shape, tfn, wrt=(0, 1)):
    """fn(x, w) and tfn(x, w) on random NHWC/HWIO (JAX) and NCHW/OIHW
    (torch) arrays; forward and the gradients of the sum along ``wrt``."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (0.1 * rng.standard_normal(w_shape)).astype(np.float32)
    g = jax.jit(jax.grad(lambda x, w: jnp.sum(fn(x, w)), argnums=wrt))
    xa, wa = jnp.asarray(x), jnp.asarray(w)
    perm_w = (3, 2, 0, 1) if len(w_shape) == 4 else (1, 0)
    tx_ = torch.from_numpy(np.ascontiguousarray(
        np.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x))
    tw_ = torch.from_numpy(np.ascontiguousarray(np.transpose(w, perm_w)))
    tx_.requires_grad_(0 in wrt)
    tw_.requires_grad_(1 in wrt)

    def trun():
      tfn(tx_, tw_).sum().backward()
      for t in (tx_, tw_):
        t.grad = None
    return (lambda: jax.block_until_ready(g(xa, wa)), trun)

  def conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def conv_patches(x, w):  # 3x3, stride 1, padding 1: 9 shifted slices.
    b, hh, ww, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + hh, j:j + ww] for i in range(3)
                            for j in range(3)], axis=-1)
    return cols @ w.reshape(9 * c, -1)

  def tconv(x, w):
    return F.conv2d(x, w, padding=1)

  h = side // 2 if side >= 16 else side
  out["conv1"] = layer(conv, (batch, side, side, 1), (3, 3, 1, 32), tconv)
  out["conv1_patches"] = layer(conv_patches, (batch, side, side, 1),
                               (3, 3, 1, 32), tconv)
  out["conv2"] = layer(conv, (batch, h, h, 32), (3, 3, 32, 64), tconv)
  out["conv2_wgrad"] = layer(conv, (batch, h, h, 32), (3, 3, 32, 64), tconv,
                             wrt=(1,))
  out["conv2_xgrad"] = layer(conv, (batch, h, h, 32), (3, 3, 32, 64), tconv,
                             wrt=(0,))
  d = 64 * (h // 2) ** 2
  out["fc1"] = layer(lambda x, w: x @ w, (batch, d), (d, 128),
                     lambda x, w: x @ w.T)

  def pool(x, _):  # The CNN's pool before this investigation.
    return nn.max_pool(x, (2, 2), strides=(2, 2))

  def pool_reshape(x, _):
    b, hh, ww, c = x.shape
    return jnp.max(x.reshape(b, hh // 2, 2, ww // 2, 2, c), axis=(2, 4))

  def tpool(x, _):
    return F.max_pool2d(x, 2)

  shape = (batch, side, side, 32)
  out["pool"] = layer(pool, shape, (1, 1), tpool, wrt=(0,))
  out["pool_reshape"] = layer(pool_reshape, shape, (1, 1), tpool, wrt=(0,))
  out["pool_mask"] = layer(lambda x, _: models.max_pool_2x2(x), shape,
                           (1, 1), tpool, wrt=(0,))
  return out, step


def _loop_pieces(batch: int, side: int) -> dict:
  """``{piece: (top_fn, scan_fn)}``: one call each; the scan runs
  ``LOOP_STEPS`` steps, the top-level function once."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  def conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  rng = np.random.default_rng(0)
  h = side // 2 if side >= 16 else side
  cases = {"conv1_wgrad": ((batch, side, side, 1), (3, 3, 1, 32), (1,)),
           "conv2_fwd": ((batch, h, h, 32), (3, 3, 32, 64), ()),
           "conv2_xgrad": ((batch, h, h, 32), (3, 3, 32, 64), (0,)),
           "conv2_wgrad": ((batch, h, h, 32), (3, 3, 32, 64), (1,))}
  out = {}
  for name, (xs, ws, wrt) in cases.items():
    x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
    w = jnp.asarray(0.1 * rng.standard_normal(ws), jnp.float32)

    def f(x, w, wrt=wrt):
      loss = lambda x, w: jnp.sum(jnp.tanh(conv(x, w)))  # noqa: E731
      if not wrt:
        return loss(x, w)
      return sum(jnp.sum(g) for g in jax.grad(loss, argnums=wrt)(x, w))

    top = jax.jit(f)
    scan = jax.jit(lambda x, w, f=f: jax.lax.scan(
        lambda c, _: (c + f(x + c * 1e-9, w), None), 0.0, None,
        length=LOOP_STEPS)[0])
    out[name] = (lambda top=top, x=x, w=w: top(x, w).block_until_ready(),
                 lambda scan=scan, x=x, w=w: scan(x, w).block_until_ready())
  return out


def _hlo_counts(compiled) -> dict:
  text = compiled.as_text()
  entry = text[text.find("ENTRY"):]
  body = entry[:entry.find("\n}")]
  return {"entry_instructions": body.count("\n"),
          "convolutions": text.count(" convolution("),
          "select_and_scatter": text.count("select-and-scatter("),
          "fusions": body.count(" fusion("),
          "xnn_or_onednn_calls": text.count("xnn") + text.count("onednn")}


def child(args) -> dict:
  """Times every piece, interleaved; returns ``{piece: {jax_s, torch_s}}``."""
  os.sched_setaffinity(0, {args.cpu})
  os.environ["XLA_FLAGS"] = (
      "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 "
      + FLAGS[args.child]).strip()
  os.environ["OMP_NUM_THREADS"] = "1"
  sys.path.insert(0, str(HERE))
  sys.path.insert(1, str(HERE.parent))
  import torch
  torch.set_num_threads(1)
  import timing

  batch, side = (32, 12) if args.quick else (256, 28)
  pieces, step = _pieces(batch, side)
  for jf, tf in pieces.values():  # Warm-up (and compile).
    jf()
    tf()
  fns = {}
  for name, (jf, tf) in pieces.items():
    fns[f"{name}/jax"], fns[f"{name}/torch"] = jf, tf
  t = timing.median_interleaved(fns, args.repeats)
  out = {name: {"jax_s": t[f"{name}/jax"], "torch_s": t[f"{name}/torch"]}
         for name in pieces}
  loops = _loop_pieces(16 if args.quick else 64, side)
  for top, scan in loops.values():
    top()
    scan()
  t = timing.median_interleaved(
      {f"{k}/{side_}": fn for k, fns in loops.items()
       for side_, fn in zip(("top", "scan"), fns)}, max(3, args.repeats // 2))
  out["_loop"] = {k: {"top_s": t[f"{k}/top"],
                      "scan_s": t[f"{k}/scan"] / LOOP_STEPS} for k in loops}
  out["_hlo"] = _hlo_counts(step.compiled)
  out["_xla_flags"] = os.environ["XLA_FLAGS"]
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--flags", default=",".join(FLAGS),
                 help=f"XLA flag settings, one child each: {', '.join(FLAGS)}")
  p.add_argument("--cpu", type=int, default=0, help="the core to pin to")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--quick", action="store_true")
  p.add_argument("--json", help="write {setting: {piece: times}} here")
  p.add_argument("--child", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.repeats < 1:
    p.error(f"--repeats must be >= 1, got {args.repeats}")
  if args.child:
    print("RESULT " + json.dumps(child(args)), flush=True)
    return 0
  settings = [s for s in args.flags.split(",") if s]
  bad = [s for s in settings if s not in FLAGS]
  if bad or not settings:
    p.error(f"--flags: unknown setting(s) {bad}; valid: {', '.join(FLAGS)}")
  results = {}
  for s in settings:
    cmd = [sys.executable, __file__, "--child", s, "--cpu", str(args.cpu),
           "--repeats", str(args.repeats)] + (["--quick"] if args.quick
                                              else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = [ln for ln in proc.stdout.splitlines()
            if ln.startswith("RESULT ")]
    if proc.returncode or not line:
      tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
      print(f"{s}: failed ({proc.returncode}): {tail[0]}", file=sys.stderr)
      results[s] = {"_error": tail[0]}
      continue
    results[s] = json.loads(line[0][len("RESULT "):])
    print(markdown(s, results[s]), flush=True)
  if args.json:
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
  return 0 if all("_error" not in r for r in results.values()) else 1


def markdown(setting: str, res: dict) -> str:
  lines = [f"#### `{setting}` ({res['_xla_flags']})", "",
           "| piece | oeu_jax | torch eager | jax / torch |",
           "|---|---|---|---|"]
  for name in PIECES:
    r = res[name]
    lines.append(f"| {name} | {r['jax_s'] * 1e3:.1f} ms | "
                 f"{r['torch_s'] * 1e3:.1f} ms | "
                 f"{r['jax_s'] / r['torch_s']:.2f} |")
  lines += ["", "| in a loop body (batch 64, JAX) | top level | in "
            "`lax.scan` (per step) | scan / top |", "|---|---|---|---|"]
  for name, r in res["_loop"].items():
    lines.append(f"| {name} | {r['top_s'] * 1e3:.1f} ms | "
                 f"{r['scan_s'] * 1e3:.1f} ms | "
                 f"{r['scan_s'] / r['top_s']:.1f} |")
  lines += ["", "HLO of the FT step: " + ", ".join(
      f"{k} {v}" for k, v in res["_hlo"].items()), ""]
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
