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

The JAX side is oeu_jax's compiled step (``benchmarks.bench.StepTimer``).
Both sides run in this one process, in turns (JAX, torch, JAX, ...), and
each reports the median of ``--repeats`` after warm-up. Threads: run this
script once per setting (``taskset -c 0`` with ``--threads 1``; two threads
with ``--threads 2``) since XLA fixes its thread pool at start-up;
``benchmarks/bench.py --only torch`` does both. Needs ``torch``
(``benchmarks/requirements.txt``; never a library requirement).

Prints ``RESULT {json}``: ``{case: {"jax_s", "torch_s"}}`` per step.
"""

import argparse
import json
import os
import sys
from pathlib import Path


def _configure_threads(threads: int) -> None:
  # Before JAX and torch start their pools.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + (
      " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
      if threads == 1 else "")).strip()
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(threads)


def torch_models(torch):
  """``{name: factory(quant) -> nn.Module}`` matching oeu_jax.models."""
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


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--quick", action="store_true",
                 help="ResNet-18 at width 0.25, fewer steps")
  args = p.parse_args(argv)
  _configure_threads(args.threads)
  import jax  # noqa: F401  (after the thread flags)
  import numpy as np
  import torch
  torch.set_num_threads(args.threads)
  sys.path.insert(0, str(Path(__file__).resolve().parent))
  import bench  # The JAX side: oeu_jax's compiled step.

  from oeu_jax import methods

  width = 0.25 if args.quick else 1.0
  cases = [  # name, model, bits, step, (h, w, c), batch, steps per call
      ("cnn8_w4a8_oeu", "cnn", "w4a8", "oeu", (8, 8, 1), 256, 5),
      ("cnn28_w4a8_oeu", "cnn", "w4a8", "oeu", (28, 28, 1), 256, 2),
      ("cnn28_float_oeu", "cnn", "float", "oeu", (28, 28, 1), 256, 2),
      ("resnet18_float_ft", "resnet18", "float", "ft", (32, 32, 3), 32, 1),
      ("resnet18_w4a8_ft", "resnet18", "w4a8", "ft", (32, 32, 3), 32, 1),
  ]
  zoo = torch_models(torch)
  out = {}
  for case, name, bits, kind, shape, batch, k in cases:
    kw = {"width": width} if name == "resnet18" else {}
    model, params, stats, udata = bench.model_setup(
        name, bits, shape, n=2 * batch, forget=batch, **kw)
    from oeu_jax import unlearn
    jax_timer = bench.StepTimer(
        methods.build_method(kind, model), model, params, stats, udata,
        unlearn.UnlearnConfig(batch_size=batch), 10, k)
    quant = bits != "float"
    tmodel = (zoo["cnn"](quant, shape[2], shape[0]) if name == "cnn"
              else zoo["resnet18"](quant, width))
    x = np.transpose(np.asarray(udata.retain_x[:batch]), (0, 3, 1, 2))
    rx = torch.from_numpy(np.array(x, copy=True))
    fx = rx.clone()
    ry = torch.from_numpy(np.asarray(udata.retain_y[:batch])).long()
    step = torch_step(torch, tmodel, kind)

    def torch_k(step=step, fx=fx, rx=rx, ry=ry, k=k):
      for _ in range(k):
        step(fx, rx, ry)
    torch_k()  # Warm-up.
    t = bench.median_interleaved({"jax": jax_timer, "torch": torch_k},
                                 args.repeats)
    out[case] = {"jax_s": t["jax"] / k, "torch_s": t["torch"] / k,
                 "jax_compile_s": jax_timer.compile_s}
    print(f"{case}: jax {t['jax'] / k * 1e3:.1f} ms, torch "
          f"{t['torch'] / k * 1e3:.1f} ms", file=sys.stderr, flush=True)
  print("RESULT " + json.dumps(out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
