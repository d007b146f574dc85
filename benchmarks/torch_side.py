"""PyTorch eager against oeu_jax: the same networks and steps, interleaved.

What a user would run instead of oeu_jax: the same CNN and ResNet-18 layer
for layer in PyTorch eager, float and W4A8 with Q-MUL-style straight-through
fake quantization (symmetric, weights one absmax scale per output channel,
activations one per tensor, ``x + (q(x) - x).detach()``; ends in float as in
oeu_jax's default), the same SGD (momentum 0.9, weight decay 5e-4). Steps:

* ``ft``: one retain batch, cross-entropy, backward, SGD update;
* ``oeu``: one forget batch (negative entropy) and one retain batch
  (cross-entropy), two backward passes, ``g_f - (g_f.g_r / |g_r|^2) g_r +
  g_r`` over the whole parameter vector, SGD update.

The JAX side is oeu_jax's compiled step (:class:`timing.StepTimer`; W4A8
with ``QuantSpec.backend`` from ``--quant-backend``, default ``fake``: AQT's
quantizers before native convolutions, the training mode at float cost).
Both sides run in one process, in turns (JAX, torch, 2048^2 matmul, JAX,
...), and each reports the median of ``--repeats`` after warm-up; the
matmul gives each step's floor (:mod:`floor`). XLA fixes its thread pool
when JAX starts, so there is one process per thread setting:

* 1 thread: ``--threads 1 --pin 0`` pins the process to CPU 0 (what
  ``taskset -c 0`` does) and sets ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=
  false intra_op_parallelism_threads=1``, ``OMP_NUM_THREADS=1`` and
  ``torch.set_num_threads(1)``, all before JAX and torch are imported;
* 2 threads: ``--threads 2`` (XLA's default pool on 2 cores, torch 2).

``benchmarks/bench.py --only torch`` runs both (:func:`side_by_side`) and
names the ratios; ``--no-torch`` times only the JAX side and its floor
(``bench.py --only floor``). Needs ``torch`` (``benchmarks/requirements.txt``;
never a library requirement) unless ``--no-torch``.

Prints ``RESULT {json}``: ``{case: {"jax_s", "torch_s", "floor_s", "flops",
"jax_compile_s"}}`` and ``"_matmul_gflops_per_s"``.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name: (model, bits, step, (h, w, c), batch, steps per call)
CASES = {
    "cnn8_w4a8_oeu": ("cnn", "w4a8", "oeu", (8, 8, 1), 256, 5),
    "cnn28_w4a8_oeu": ("cnn", "w4a8", "oeu", (28, 28, 1), 256, 2),
    "cnn28_float_oeu": ("cnn", "float", "oeu", (28, 28, 1), 256, 2),
    "resnet18_float_ft": ("resnet18", "float", "ft", (32, 32, 3), 32, 1),
    "resnet18_w4a8_ft": ("resnet18", "w4a8", "ft", (32, 32, 3), 32, 1),
}
TAGS = {1: "1core", 2: "2threads"}


def _configure_threads(threads: int, pin) -> None:
  # Before JAX and torch start their pools.
  if pin is not None:
    os.sched_setaffinity(0, {pin})  # taskset -c PIN
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + (
      " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
      if threads == 1 else "")).strip()
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(threads)


def torch_models(torch):
  """``{name: factory(quant) -> nn.Module}`` matching oeu_jax.nn.models."""
  nn = torch.nn
  F = torch.nn.functional

  def fq(x, bits, dims):
    q = 2 ** (bits - 1) - 1
    scale = x.detach().abs().amax(dim=dims, keepdim=True).clamp_min(
        1e-12) / q
    return x + (torch.clamp(torch.round(x / scale), -q, q) * scale
                - x).detach()

  class QConv(nn.Conv2d):
    def __init__(self, *a, quant=False, **k):
      super().__init__(*a, **k)
      self.quant = quant

    def forward(self, x):
      if not self.quant:
        return super().forward(x)
      return self._conv_forward(fq(x, 8, None),
                                fq(self.weight, 4, (1, 2, 3)), self.bias)

  class QLinear(nn.Linear):
    def __init__(self, *a, quant=False, **k):
      super().__init__(*a, **k)
      self.quant = quant

    def forward(self, x):
      if not self.quant:
        return super().forward(x)
      return F.linear(fq(x, 8, None), fq(self.weight, 4, (1,)), self.bias)

  class CNN(nn.Module):
    def __init__(self, quant, in_ch=1, side=28):
      super().__init__()
      self.stem_pool = side >= 16
      self.conv1 = QConv(in_ch, 32, 3, padding=1)
      self.conv2 = QConv(32, 64, 3, padding=1, quant=quant)
      side = side // 2 // (2 if self.stem_pool else 1)
      self.fc1 = QLinear(64 * side * side, 128, quant=quant)
      self.head = QLinear(128, 10)

    def forward(self, x):
      x = F.relu(self.conv1(x))
      if self.stem_pool:
        x = F.max_pool2d(x, 2)
      x = F.max_pool2d(F.relu(self.conv2(x)), 2)
      return self.head(F.relu(self.fc1(x.flatten(1))))

  class Block(nn.Module):
    def __init__(self, cin, cout, stride, quant):
      super().__init__()
      self.conv1 = QConv(cin, cout, 3, stride, 1, bias=False, quant=quant)
      self.bn1 = nn.BatchNorm2d(cout)
      self.conv2 = QConv(cout, cout, 3, 1, 1, bias=False, quant=quant)
      self.bn2 = nn.BatchNorm2d(cout)
      self.short = None
      if stride != 1 or cin != cout:
        self.short = nn.Sequential(
            QConv(cin, cout, 1, stride, bias=False, quant=quant),
            nn.BatchNorm2d(cout))

    def forward(self, x):
      y = F.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return F.relu((x if self.short is None else self.short(x)) + y)

  class ResNet18(nn.Module):
    def __init__(self, quant, width=1.0):
      super().__init__()
      w = [max(1, int(c * width)) for c in (64, 128, 256, 512)]
      self.stem = QConv(3, w[0], 3, 1, 1, bias=False)
      self.bn = nn.BatchNorm2d(w[0])
      blocks, cin = [], w[0]
      for c, s in zip(w, (1, 2, 2, 2)):
        blocks += [Block(cin, c, s, quant), Block(c, c, 1, quant)]
        cin = c
      self.blocks = nn.Sequential(*blocks)
      self.head = QLinear(cin, 10)

    def forward(self, x):
      x = self.blocks(F.relu(self.bn(self.stem(x))))
      return self.head(x.mean((2, 3)))

  return {"cnn": CNN, "resnet18": ResNet18}


def torch_step(torch, model, kind: str):
  """One ``kind`` step (``ft`` or ``oeu``) as a no-argument closure."""
  F = torch.nn.functional
  opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9,
                        weight_decay=5e-4)
  params = [p for p in model.parameters() if p.requires_grad]

  def grads(loss):
    return torch.autograd.grad(loss, params)

  def run(fx, rx, ry):
    model.train()
    if kind == "ft":
      opt.zero_grad(set_to_none=True)
      F.cross_entropy(model(rx), ry).backward()
    else:
      logp = F.log_softmax(model(fx), -1)
      g_f = grads((logp.exp() * logp).sum(-1).mean())  # -entropy
      g_r = grads(F.cross_entropy(model(rx), ry))
      dot = sum((a * b).sum() for a, b in zip(g_f, g_r))
      nrm = sum((b * b).sum() for b in g_r)
      c = dot / nrm.clamp_min(1e-12)
      for p, a, b in zip(params, g_f, g_r):
        p.grad = a - c * b + b
    opt.step()
  return run


def _time_cases(args) -> dict:
  """The child: every case of ``args.cases``, interleaved (see module)."""
  import numpy as np

  sys.path.insert(0, str(HERE))
  import floor  # noqa: E402  (after the thread flags)
  import timing

  from oeu_jax.algorithm import methods
  from oeu_jax.engine import unlearn
  from oeu_jax.nn import quantization

  torch = None
  if not args.no_torch:
    import torch
    torch.set_num_threads(args.threads)
    zoo = torch_models(torch)
  matmul = floor.MatmulTimer(512 if args.quick else 2048)
  w4a8 = dataclasses.replace(quantization.preset("w4a8"),
                             backend=args.quant_backend)
  out = {}
  for case in args.cases:
    name, bits, kind, shape, batch, k = CASES[case]
    kw = {}
    if args.quick:
      batch, k = min(batch, 64), 1
      kw = {"width": 0.25} if name == "resnet18" else {}
    model, params, stats, udata = timing.model_setup(
        name, "float" if bits == "float" else w4a8, shape, n=2 * batch,
        forget=batch, **kw)
    jax_timer = timing.StepTimer(
        methods.build_method(kind, model), model, params, stats, udata,
        unlearn.UnlearnConfig(batch_size=batch), 10, k)
    fns = {"jax": jax_timer, "matmul": matmul}
    if torch is not None:
      quant = bits != "float"
      tmodel = (zoo["cnn"](quant, shape[2], shape[0]) if name == "cnn"
                else zoo["resnet18"](quant, kw.get("width", 1.0)))
      x = np.transpose(np.asarray(udata.retain_x[:batch]), (0, 3, 1, 2))
      rx = torch.from_numpy(np.array(x, copy=True))
      fx = rx.clone()
      ry = torch.from_numpy(np.array(udata.retain_y[:batch])).long()
      step = torch_step(torch, tmodel, kind)

      def torch_k(step=step, fx=fx, rx=rx, ry=ry, k=k):
        for _ in range(k):
          step(fx, rx, ry)
      torch_k()  # Warm-up.
      fns["torch"] = torch_k
    t = timing.median_interleaved(fns, args.repeats)
    flops = floor.step_flops(jax_timer.compiled)
    rate = matmul.flops / t["matmul"]
    out[case] = {"jax_s": t["jax"] / k, "floor_s": flops / rate,
                 "flops": flops, "jax_compile_s": jax_timer.compile_s,
                 "batch": batch, "width": kw.get("width", 1.0)}
    if "torch" in t:
      out[case]["torch_s"] = t["torch"] / k
    print(f"{case} ({args.threads} thread(s)): jax "
          f"{timing.fmt_s(t['jax'] / k)}, torch "
          f"{timing.fmt_s(t['torch'] / k) if 'torch' in t else '-'}, floor "
          f"{timing.fmt_s(flops / rate)} ({flops / 1e9:.2f} GFLOP at "
          f"{rate / 1e9:.1f} GFLOP/s)", file=sys.stderr, flush=True)
  out["_matmul_gflops_per_s"] = matmul.flops / timing.median_interleaved(
      {"m": matmul}, args.repeats)["m"] / 1e9
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--threads", type=int, choices=(1, 2), default=1)
  p.add_argument("--pin", type=int, default=None, metavar="CPU",
                 help="pin this process to one CPU (as taskset -c CPU)")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--quick", action="store_true",
                 help="batch <= 64, ResNet-18 at width 0.25, 512^2 matmul")
  p.add_argument("--cases", default=",".join(CASES),
                 help=f"comma-separated subset of {','.join(CASES)}")
  p.add_argument("--quant-backend", choices=("fake", "aqt", "qwix"),
                 default="fake")
  p.add_argument("--no-torch", action="store_true",
                 help="only the JAX side and its floor")
  args = p.parse_args(argv)
  args.cases = [c for c in args.cases.split(",") if c]
  for c in args.cases:
    if c not in CASES:
      p.error(f"unknown case {c!r}; valid: {', '.join(CASES)}")
  if args.repeats < 1:
    p.error(f"--repeats must be at least 1, got {args.repeats}")
  _configure_threads(args.threads, args.pin)
  print("RESULT " + json.dumps(_time_cases(args)), flush=True)
  return 0


def side_by_side(args, rows, notes, figures, *, cases, with_torch) -> None:
  """Runs the child once per thread setting in ``args.threads``; names
  ``torch_over_jax_{case}_{1core|2threads}``, ``jax_over_floor_...``,
  ``torch_over_floor_...`` and, from the 1-core run (else the first),
  ``jax_over_floor_resnet18_float_ft``."""
  from timing import fmt_s as _fmt  # The parent has JAX already.

  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
             PYTHONPATH=os.pathsep.join(
                 [str(HERE.parent)] + [p for p in os.environ.get(
                     "PYTHONPATH", "").split(os.pathsep) if p]))
  for threads in args.threads:
    tag = TAGS[threads]
    cmd = [sys.executable, str(HERE / "torch_side.py"), "--threads",
           str(threads), "--repeats", str(args.repeats), "--cases",
           ",".join(cases), "--quant-backend", args.quant_backend]
    cmd += ["--pin", "0"] if threads == 1 else []
    cmd += [] if with_torch else ["--no-torch"]
    cmd += ["--quick"] if args.quick else []
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode:
      raise RuntimeError(f"{' '.join(cmd[1:])} failed (exit "
                         f"{proc.returncode}); its stderr is above")
    line = next(s for s in proc.stdout.splitlines()
                if s.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    notes.append(f"{tag}: {res.pop('_matmul_gflops_per_s'):.1f} GFLOP/s "
                 f"(f32 {'512' if args.quick else '2048'}^2 matmul)")
    for case, r in res.items():
      figures[f"jax_over_floor_{case}_{tag}"] = r["jax_s"] / r["floor_s"]
      width = f", width {r['width']}" if r["width"] != 1.0 else ""
      label = f"{case}, batch {r['batch']}{width}, {tag}"
      floor_note = (f"floor {_fmt(r['floor_s'])} ({r['flops'] / 1e9:.2f} "
                    f"GFLOP); oeu_jax / floor "
                    f"{r['jax_s'] / r['floor_s']:.2f}")
      if "torch_s" in r:
        ratio = r["torch_s"] / r["jax_s"]
        figures[f"torch_over_jax_{case}_{tag}"] = ratio
        figures[f"torch_over_floor_{case}_{tag}"] = r["torch_s"] / r[
            "floor_s"]
        rows.append((f"torch eager / oeu_jax step ({label})",
                     f"{ratio:.2f} (torch {_fmt(r['torch_s'])} / oeu_jax "
                     f"{_fmt(r['jax_s'])}); {floor_note}; torch / floor "
                     f"{r['torch_s'] / r['floor_s']:.2f}",
                     ">= 1.0" if threads == 1 else "report",
                     ratio >= 1.0 if threads == 1 else None))
      else:
        rows.append((f"oeu_jax step / floor ({label})",
                     f"{_fmt(r['jax_s'])}; {floor_note}", "report", None))
      notes.append(f"compile (oeu_jax, {label}): "
                   f"{r['jax_compile_s']:.1f} s")
  for tag in (TAGS[t] for t in sorted(args.threads)):
    key = f"jax_over_floor_resnet18_float_ft_{tag}"
    if key in figures:
      figures["jax_over_floor_resnet18_float_ft"] = figures[key]
      v = figures[key]
      rows.append((f"oeu_jax float step / floor (resnet18_float_ft, {tag})",
                   f"{v:.2f}", "<= 1.5", v <= 1.5))
      break


if __name__ == "__main__":
  sys.exit(main())
