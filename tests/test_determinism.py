"""Same seed and config, two processes: identical results.json on CPU.

The two runs go through the command line in separate processes with
different ``PYTHONHASHSEED`` values, so that nothing may depend on Python's
salted ``hash``, on set or dict ordering, on the clock or on process state.
Every metric must be equal (not close); only the wall-clock timings differ.

To keep the suite fast the Original and Retrain are not trained (``--epochs
0 --allow-untrained``: both are the seed's initialization); the runs make the
split, unlearn with OEU and evaluate. That training itself is deterministic
across processes is asserted bit for bit by tests/test_resume.py, whose
uninterrupted process must match the killed-and-resumed ones.
"""

import json
import os
import subprocess
import sys

TIMING_KEYS = ("rte_s", "rte_with_compile_s")

ARGS = ["run", "--dataset", "digits", "--max-examples", "200", "--epochs",
        "0", "--allow-untrained", "--batch-size", "32", "--unlearn-epochs", "1",
        "--unlearn-batch-size", "32", "--seeds", "1", "--no-progress"]


def test_two_runs_write_identical_metrics(tmp_path):
  procs = []
  for i, hash_seed in enumerate(("0", "12345")):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONHASHSEED=hash_seed)
    # Each process compiles its own programs (no shared compilation cache,
    # see conftest.py), so XLA's compilation is part of what must agree.
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "oeu_jax"] + ARGS
        + ["--workdir", str(tmp_path / f"run{i}")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env))
  for p in procs:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
  runs = [json.loads((tmp_path / f"run{i}" / "results.json").read_text())
          for i in range(2)]
  assert [r["method"] for r in runs[0]] == ["original", "retrain", "oeu"]
  for a, b in zip(*runs):
    for key in TIMING_KEYS:
      assert a.pop(key) >= 0 and b.pop(key) >= 0
    assert a == b
  # Unlearning did change the model (the runs are not trivially equal).
  assert runs[0][0]["forget_entropy"] != runs[0][2]["forget_entropy"]
