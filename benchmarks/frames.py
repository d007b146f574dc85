"""Python frames from ``python -m oeu_jax run`` (``cli.main``) down to the
unlearning step function, recorded while JAX traces the step for the
executor (a tiny digits run). Works on this checkout and on older ones with
the flat layout (run it with ``PYTHONPATH=/path/to/old``)::

    python benchmarks/frames.py

Not part of the test suite.
"""

import importlib
import os
import tempfile
import traceback


def _module(old: bool, flat: str, layered: str):
  return importlib.import_module(f"oeu_jax.{flat if old else layered}")


def main() -> None:
  root = os.path.dirname(importlib.import_module("oeu_jax").__file__)
  old = os.path.exists(os.path.join(root, "transforms.py"))  # Flat layout.
  transforms = _module(old, "transforms", "algorithm.transforms")
  executors = _module(old, "executors", "engine.executors")
  cli = importlib.import_module("oeu_jax.cli")
  stacks, finite = [], transforms.tree_is_finite

  def spy(tree):
    stacks.append(traceback.extract_stack()[:-1])
    return finite(tree)

  transforms.tree_is_finite = spy  # Called inside the unlearning step.
  # Its own trace of the step would come first (and be the one cached).
  executors.loops_slow_convs = lambda *a, **k: True
  with tempfile.TemporaryDirectory() as d:
    cli.main(["run", "--dataset", "digits", "--methods", "oeu", "--epochs",
              "1", "--unlearn-epochs", "1", "--max-examples", "300",
              "--workdir", d, "--no-progress"])
  for st in stacks:
    names = [f"{f.filename.split('/oeu_jax/')[-1]}:{f.name}"
             if "/oeu_jax/" in f.filename else f"(jax) {f.name}" for f in st]
    step = [k for k, n in enumerate(names) if n.endswith("unlearn.py:step")]
    if not step or not any(n.endswith("executors.py:__call__")
                           for n in names):
      continue
    i = names.index("cli.py:main")
    ours = [n for n in names[i:step[0] + 1] if not n.startswith("(jax)")]
    print(f"frames cli.main -> step: {step[0] - i} in all, {len(ours)} in "
          "oeu_jax")
    print("\n".join(ours))
    return


if __name__ == "__main__":
  main()
