"""Tests for benchmarks/bench.py: it runs and writes the keys it names.

Each test runs the benchmark's quick mode on tiny shapes in a subprocess
and checks the ``--json`` object: the expected keys, each a finite positive
number. Nothing is timed here (no assertions on speed); the figures
themselves are BENCHMARKS.md's business. The PyTorch comparison is skipped
where torch is not installed (it is a benchmark requirement only,
``benchmarks/requirements.txt``); the library never imports it.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks" / "bench.py"


def _bench(tmp_path, *argv) -> tuple[dict, subprocess.CompletedProcess]:
  out = tmp_path / "figures.json"
  # One XLA thread: on a loaded machine a 2-thread pool can stall for
  # minutes waiting on a descheduled worker (seen here at load 8).
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
      os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
      " intra_op_parallelism_threads=1").strip())
  proc = subprocess.run(
      [sys.executable, str(BENCH), "--quick", "--repeats", "1", "--json",
       str(out), *argv], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=900)  # A hang guard only; ~30 s on 2 idle cores.
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text()), proc


def _check_positive(figures: dict, keys: set) -> None:
  assert keys <= set(figures), sorted(keys - set(figures))
  for k in keys:
    assert isinstance(figures[k], (int, float)), (k, figures[k])
    assert math.isfinite(figures[k]) and figures[k] > 0, (k, figures[k])


def test_step_ratio_keys_are_finite_positive(tmp_path):
  figures, proc = _bench(tmp_path, "--only", "step_ratio",
                         "--step-models", "cnn")
  _check_positive(figures, {"oeu_over_ft_cnn_w4a8", "proj_share_cnn_w4a8"})
  assert "| OEU step / FT step (cnn w4a8 fake" in proc.stdout


def test_torch_against_jax_cnn_keys(tmp_path):
  pytest.importorskip("torch")
  case = "cnn28_w4a8_oeu"
  figures, proc = _bench(tmp_path, "--only", "torch", "--threads", "1",
                         "--torch-cases", case)
  _check_positive(figures, {f"torch_over_jax_{case}_1core",
                            f"jax_over_floor_{case}_1core",
                            f"torch_over_floor_{case}_1core"})
  # Only the case and thread setting asked for.
  assert not [k for k in figures if "2threads" in k or "resnet18" in k]
  assert f"torch eager / oeu_jax step ({case}" in proc.stdout


def test_bad_arguments_get_one_clear_line(tmp_path):
  for argv, words in ((["--only", "nope"], "unknown section 'nope'"),
                      (["--threads", "3"], "--threads must be"),
                      (["--torch-cases", "cnn99"], "unknown --torch-cases"),
                      (["--repeats", "0"], "--repeats must be at least 1"),
                      (["--mnist-stop-every", "0"],
                       "--mnist-stop-every must be at least 1")):
    proc = subprocess.run([sys.executable, str(BENCH), *argv], cwd=REPO,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, (argv, proc.stderr)
    assert words in proc.stderr, (argv, proc.stderr)
    assert "Traceback" not in proc.stderr


def test_why_float_rejects_unknown_flag_settings():
  proc = subprocess.run([sys.executable, str(BENCH.parent / "why_float.py"),
                         "--flags", "default,nope"], cwd=REPO,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2, proc.stderr
  assert "unknown setting(s) ['nope']" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_library_does_not_import_torch():
  code = ("import sys, oeu_jax, oeu_jax.runner.pipeline, oeu_jax.cli; "
          "print('torch' in sys.modules)")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "False"
