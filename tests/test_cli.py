"""The command line: every bad input gives one line naming it, never a trace.

Most cases call :func:`oeu_jax.cli.main` in-process (fast); one runs
``python -m oeu_jax`` in a real subprocess. The interrupted-run test covers
``--resume``: an unfinished run is refused without it, continued with it,
reused once finished, and a corrupt checkpoint is reported by path.
"""

import argparse
import gzip
import io
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from oeu_jax import cli
from oeu_jax import data
from oeu_jax import defaults
from oeu_jax.algorithm import methods
from oeu_jax.engine import checkpointing
from oeu_jax.engine import loop
from oeu_jax.engine import progress
from oeu_jax.engine.train import TrainConfig
from oeu_jax.engine.unlearn import UnlearnConfig
from oeu_jax.nn import models
from oeu_jax.nn import quantization
from oeu_jax.runner import args as args_lib
from oeu_jax.runner import catalog
from oeu_jax.runner import config
from oeu_jax.runner import pipeline

RUN = ["run", "--dataset", "digits", "--no-progress"]
IDX = ["run", "--dataset", "mnist_idx", "--data-dir", "{tmp}/idx",
       "--no-progress"]


def _idx(path: Path, magic: int, dims: tuple, payload: bytes | None = None,
         gz: bool = True) -> None:
  header = struct.pack(f">{1 + len(dims)}I", magic, *dims)
  if payload is None:
    payload = bytes(int(np.prod(dims)))
  raw = header + payload
  path.parent.mkdir(parents=True, exist_ok=True)
  if gz:
    with gzip.open(f"{path}.gz", "wb") as f:
      f.write(raw)
  else:
    path.write_bytes(raw)


def _mnist(tmp: Path, *, images=None, labels=None) -> None:
  """A valid 5-example t10k pair, with one file replaced when asked."""
  d = tmp / "idx"
  (images or (lambda p: _idx(p, 2051, (5, 28, 28))))(
      d / "t10k-images-idx3-ubyte")
  (labels or (lambda p: _idx(p, 2049, (5,))))(d / "t10k-labels-idx1-ubyte")


def _truncated_gzip(p: Path) -> None:
  _idx(p, 2051, (5, 28, 28))
  blob = Path(f"{p}.gz").read_bytes()
  Path(f"{p}.gz").write_bytes(blob[:len(blob) // 2])


SETUPS = {
    "empty_dir": lambda t: (t / "idx").mkdir(),
    "a_file": lambda t: (t / "idx").write_text("not a folder"),
    "wrong_magic": lambda t: _mnist(t, images=lambda p: _idx(
        p, 2049, (5, 28, 28))),
    "short_payload": lambda t: _mnist(t, images=lambda p: _idx(
        p, 2051, (5, 28, 28), payload=bytes(100), gz=False)),
    "short_header": lambda t: _mnist(t, labels=lambda p: (
        p.parent.mkdir(parents=True, exist_ok=True),
        p.write_bytes(b"\x00\x00\x08"))),
    "truncated_gzip": lambda t: _mnist(t, images=_truncated_gzip),
    "count_mismatch": lambda t: _mnist(t, labels=lambda p: _idx(
        p, 2049, (4,))),
    "bad_label": lambda t: _mnist(t, labels=lambda p: _idx(
        p, 2049, (5,), payload=bytes([0, 1, 12, 3, 4]))),
    "workdir_file": lambda t: (t / "w").write_text("x"),
    "parent_file": lambda t: (t / "f").write_text("x"),
}

# (id, argv, setup, exit status, regex the one error line must match).
# On digits' training split the first 10 labels miss class 9, and the first
# one is a 0 (the split is fixed, see oeu_jax.data).
CASES = [
    # Names, with the valid ones listed.
    ("unknown_dataset", ["run", "--dataset", "foo"], None, 2,
     r"--dataset: invalid choice: 'foo'.*digits.*mnist_idx"),
    ("unknown_model", RUN + ["--model", "vgg"], None, 2,
     r"--model: invalid choice: 'vgg'.*cnn.*resnet18"),
    ("unknown_bits", RUN + ["--bits", "w3a3"], None, 2,
     r"--bits: invalid choice: 'w3a3'.*float.*w8a8.*w4a8"),
    ("unknown_scenario", RUN + ["--scenario", "sample"], None, 2,
     r"--scenario: invalid choice: 'sample'.*random.*class"),
    ("unknown_method", RUN + ["--methods", "oeu,magic"], None, 2,
     r"unknown method 'magic'; valid: oeu, .*retrain"),
    ("unknown_optimizer", RUN + ["--optimizer", "lion"], None, 2,
     r"--optimizer: invalid choice: 'lion'.*sgd"),
    ("unknown_command", ["train"], None, 2,
     r"invalid choice: 'train'.*demo.*run"),
    ("no_command", [], None, 2, r"required: command"),
    ("missing_dataset", ["run"], None, 2, r"required: --dataset"),
    ("unknown_flag", RUN + ["--lr", "0.1"], None, 2,
     r"unrecognized arguments: --lr 0.1"),
    # Stopping rule.
    ("stop_bad_rule", RUN + ["--stop-when", "ua=95"], None, 2,
     r"--stop-when: stop rule 'ua=95' must read METRIC>=THRESHOLD"),
    ("stop_bad_metric", RUN + ["--stop-when", "loss>=1"], None, 2,
     r"unknown metric 'loss'; valid: ua, entropy"),
    ("stop_out_of_range", RUN + ["--stop-when", "entropy>=2"], None, 2,
     r"entropy threshold must be in \[0, 1\]"),
    ("cost_cap_zero", RUN + ["--cost-cap", "0"], None, 2,
     r"--cost-cap must be in \(0, 1\], got 0.0"),
    ("cost_cap_with_lr", RUN + ["--unlearn-lr", "0.1", "--cost-cap", "0.2"],
     None, 2, r"--cost-cap caps the protocol defaults"),
    ("budgets_with_epochs", RUN + ["--unlearn-epochs", "2", "--budgets",
                                   "harness"], None, 2,
     r"--budgets is for runs without --unlearn-epochs"),
    ("stop_auto_typo", RUN + ["--stop-when", "automatic"], None, 2,
     r"--stop-when: stop rule 'automatic' must read METRIC>=THRESHOLD"),
    ("stop_every_zero", RUN + ["--stop-when", "ua>=95", "--stop-every", "0"],
     None, 2, r"--stop-every must be > 0, got 0"),
    # Forget ratio and class.
    ("ratio_one", RUN + ["--forget-ratio", "1"], None, 2,
     r"--forget-ratio must be in \(0, 1\), got 1.0"),
    ("ratio_zero", RUN + ["--forget-ratio", "0"], None, 2,
     r"--forget-ratio must be in \(0, 1\), got 0.0"),
    ("ratio_negative", RUN + ["--forget-ratio", "-0.2"], None, 2,
     r"--forget-ratio must be in \(0, 1\), got -0.2"),
    ("ratio_nan", RUN + ["--forget-ratio", "nan"], None, 2,
     r"--forget-ratio must be in \(0, 1\), got nan"),
    ("ratio_text", RUN + ["--forget-ratio", "half"], None, 2,
     r"--forget-ratio: invalid float value: 'half'"),
    ("ratio_with_class", RUN + ["--scenario", "class", "--forget-class", "3",
                                "--forget-ratio", "0.1"], None, 2,
     r"--forget-ratio is for --scenario random"),
    ("class_with_random", RUN + ["--forget-class", "3"], None, 2,
     r"--forget-class is for --scenario class"),
    ("class_missing", RUN + ["--scenario", "class"], None, 2,
     r"--scenario class needs --forget-class"),
    ("class_too_large", RUN + ["--scenario", "class", "--forget-class", "10"],
     None, 2, r"forget_class must be an int in \[0, 10\), got 10"),
    ("class_negative", RUN + ["--scenario", "class", "--forget-class", "-1"],
     None, 2, r"--forget-class must be >= 0, got -1"),
    ("class_absent", RUN + ["--scenario", "class", "--forget-class", "9",
                            "--max-examples", "10"], None, 2,
     r"forget_class=9 has no training examples"),
    ("class_is_everything", RUN + ["--scenario", "class", "--forget-class",
                                   "0", "--max-examples", "1"], None, 2,
     r"forget_class=0 covers the whole training set"),
    ("ratio_is_everything", RUN + ["--forget-ratio", "0.9",
                                   "--max-examples", "2"], None, 2,
     r"forget_ratio=0.9 of 2 training examples would forget the whole"),
    # Budgets.
    ("batch_zero", RUN + ["--batch-size", "0"], None, 2,
     r"--batch-size must be > 0, got 0"),
    ("batch_negative", RUN + ["--batch-size", "-8"], None, 2,
     r"--batch-size must be > 0, got -8"),
    ("unlearn_batch_zero", RUN + ["--unlearn-batch-size", "0"], None, 2,
     r"--unlearn-batch-size must be > 0, got 0"),
    ("epochs_negative", RUN + ["--epochs", "-1"], None, 2,
     r"--epochs must be >= 0, got -1"),
    ("epochs_zero", RUN + ["--epochs", "0"], None, 2,
     r"--epochs 0 trains nothing \(Original and Retrain would be their "
     r"random initialization\); add --allow-untrained to run it anyway"),
    ("unlearn_epochs_negative", RUN + ["--unlearn-epochs", "-2"], None, 2,
     r"--unlearn-epochs must be >= 0, got -2"),
    ("epochs_float", RUN + ["--epochs", "1.5"], None, 2,
     r"--epochs: invalid int value: '1.5'"),
    ("lr_zero", RUN + ["--unlearn-lr", "0"], None, 2,
     r"--unlearn-lr must be a finite number > 0, got 0.0"),
    ("lr_inf", RUN + ["--unlearn-lr", "inf"], None, 2,
     r"--unlearn-lr must be a finite number > 0, got inf"),
    ("max_examples_zero", RUN + ["--max-examples", "0"], None, 2,
     r"--max-examples must be > 0, got 0"),
    ("checkpoint_every_zero", RUN + ["--checkpoint-every", "0"], None, 2,
     r"--checkpoint-every must be > 0, got 0"),
    ("seeds_text", RUN + ["--seeds", "0,one"], None, 2,
     r"--seeds: expected comma-separated integers, got '0,one'"),
    ("seeds_empty", RUN + ["--seeds", ","], None, 2,
     r"--seeds: expected at least one integer"),
    ("seeds_negative", RUN + ["--seeds", "0,-1"], None, 2,
     r"--seeds must be >= 0, got 0,-1"),
    ("seeds_repeated", RUN + ["--seeds", "1,2,1"], None, 2,
     r"--seeds lists 1 more than once"),
    ("methods_repeated", RUN + ["--methods", "oeu,ft,oeu"], None, 2,
     r"--methods lists oeu more than once"),
    ("demo_seed_negative", ["demo", "--seed", "-3"], None, 2,
     r"--seed must be >= 0, got -3"),
    # Data folders and files.
    ("idx_without_data_dir", ["run", "--dataset", "mnist_idx"], None, 2,
     r"'mnist_idx' needs data_dir"),
    ("data_dir_missing", IDX, None, 2, r"--data-dir .*/idx does not exist"),
    ("data_dir_is_file", IDX, "a_file", 2,
     r"--data-dir .*/idx is not a directory"),
    ("idx_files_missing", IDX, "empty_dir", 2,
     r"t10k-images-idx3-ubyte\[\.gz\] not found"),
    ("idx_wrong_magic", IDX, "wrong_magic", 2,
     r"t10k-images-idx3-ubyte.gz: wrong IDX magic number 2049, expected 2051"),
    ("idx_truncated_payload", IDX, "short_payload", 2,
     r"t10k-images-idx3-ubyte: IDX payload has 100 bytes, dims \(5, 28, 28\)"),
    ("idx_truncated_header", IDX, "short_header", 2,
     r"t10k-labels-idx1-ubyte: truncated IDX header \(3 bytes, need 8\)"),
    ("idx_truncated_gzip", IDX, "truncated_gzip", 2,
     r"t10k-images-idx3-ubyte.gz: corrupt or truncated gzip file"),
    ("idx_count_mismatch", IDX, "count_mismatch", 2,
     r"has 5 images but .*t10k-labels-idx1-ubyte.gz has 4 labels"),
    ("idx_label_out_of_range", IDX, "bad_label", 2,
     r"label 12 out of range \[0, 10\)"),
    ("tfds_not_prepared", ["run", "--dataset", "cifar10", "--data-dir",
                           "{tmp}/idx"], "empty_dir", 2,
     r"TFDS dataset 'cifar10' .* is not prepared"),
    # Work directory.
    ("workdir_is_file", RUN + ["--workdir", "{tmp}/w"], "workdir_file", 2,
     r"--workdir .*/w exists and is not a directory"),
    ("workdir_under_file", RUN + ["--workdir", "{tmp}/f/w"], "parent_file", 2,
     r"--workdir .*/f/w cannot be created: Not a directory"),
]


def _run_main(argv, capsys):
  status = cli.main(argv)
  out, err = capsys.readouterr()
  return status, out, err


def _assert_one_error_line(err: str, pattern: str, *,
                           alone: bool = True) -> str:
  """The error is one line (the last; ``alone``: the only one), no trace."""
  assert "Traceback" not in err
  lines = err.strip().splitlines()
  if alone:
    assert len(lines) == 1, err
  assert [ln for ln in lines if ln.startswith("error")] == lines[-1:], err
  assert re.search(pattern, lines[-1]), (pattern, lines[-1])
  return lines[-1]


@pytest.mark.parametrize("name,argv,setup,status,pattern", CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input(name, argv, setup, status, pattern, tmp_path, capsys):
  del name
  if setup:
    SETUPS[setup](tmp_path)
  argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
  if "--workdir" not in argv and argv and argv[0] in ("run", "demo"):
    argv += ["--workdir", str(tmp_path / "work")]
  got, out, err = _run_main(argv, capsys)
  assert got == status, err
  _assert_one_error_line(err, pattern)
  assert out == ""
  # Input is checked before anything is trained or written.
  assert not (tmp_path / "work" / "checkpoints").exists()


def test_unreadable_data_dir(tmp_path, capsys, monkeypatch):
  # Tests run as root here, where chmod cannot make a folder unreadable.
  folder = tmp_path / "idx"
  folder.mkdir()
  real_access = os.access
  monkeypatch.setattr(cli.os, "access", lambda p, mode: Path(p) != folder
                      and real_access(p, mode))
  status, _, err = _run_main(IDX[:4] + [str(folder), "--workdir",
                                        str(tmp_path / "w")], capsys)
  assert status == 2
  _assert_one_error_line(err, r"--data-dir .*/idx is not readable")


def test_help_exits_zero(capsys):
  assert cli.main(["run", "--help"]) == 0
  out = capsys.readouterr().out
  assert "--resume" in out and "--skip-nonfinite" in out


@pytest.mark.parametrize("error,status", [
    (FloatingPointError("oeu: non-finite loss or update at unlearning step "
                        "7; the last good checkpoint is step 5 in /w/x"), 1),
    (checkpointing.CheckpointError("Checksum mismatch for leaf [0] in "
                                   "/w/x/5/state:\nthe files are corrupt."), 1),
    (OSError(28, "No space left on device", "/w/results.json"), 1),
    (ValueError("bad\nvalue  spread over lines"), 2),
    (FileNotFoundError("no such thing"), 2),
])
def test_failures_during_a_run_are_one_line(error, status, tmp_path, capsys,
                                            monkeypatch):
  def failing_run(*args, **kwargs):
    raise error
  monkeypatch.setattr(pipeline, "run", failing_run)
  got, _, err = _run_main(RUN + ["--workdir", str(tmp_path)], capsys)
  assert got == status
  line = _assert_one_error_line(err, ".")
  if isinstance(error, OSError) and error.filename:
    assert line == "error: /w/results.json: No space left on device"
  else:
    assert " ".join(str(error).split()) in line


def test_subprocess_prints_one_line_and_no_traceback(tmp_path):
  SETUPS["wrong_magic"](tmp_path)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "oeu_jax", "run", "--dataset", "mnist_idx",
       "--data-dir", str(tmp_path / "idx"), "--workdir", str(tmp_path / "w")],
      capture_output=True, text=True, env=env, timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr
  assert proc.stdout == ""
  _assert_one_error_line(proc.stderr, r"wrong IDX magic number 2049")


def _flip_a_byte(step_dir: Path) -> None:
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
  biggest = max(files, key=lambda p: p.stat().st_size)
  blob = bytearray(biggest.read_bytes())
  blob[len(blob) // 2] ^= 0xFF
  biggest.write_bytes(bytes(blob))


def test_interrupted_run_needs_resume(tmp_path, capsys, monkeypatch):
  # No training (--epochs 0, the Original is the initialization): the run is
  # interrupted during unlearning, which resumes like training does
  # (tests/test_resume.py kills both loops for real).
  work = tmp_path / "w"
  argv = ["run", "--dataset", "digits", "--max-examples", "200", "--epochs",
          "0", "--allow-untrained", "--batch-size", "32", "--unlearn-epochs",
          "1",
          "--unlearn-batch-size", "32", "--checkpoint-every", "2",
          "--no-progress", "--workdir", str(work)]
  real_save = checkpointing.save_checkpoint

  def save_then_interrupt(*args, **kwargs):
    real_save(*args, **kwargs)
    raise KeyboardInterrupt  # Ctrl-C right after the first checkpoint.

  monkeypatch.setattr(checkpointing, "save_checkpoint", save_then_interrupt)
  status, _, err = _run_main(argv, capsys)
  monkeypatch.undo()
  assert status == 130
  assert "rerun the same command with --resume" in err

  # 180 retain examples in batches of 32: 6 steps, saved at step 2.
  status, _, err = _run_main(argv, capsys)
  assert status == 2
  line = _assert_one_error_line(
      err, r"/oeu-random0.1-\w+ holds an unfinished run \(checkpoint at step "
      r"2 of 6\): rerun with --resume to continue it, or delete that "
      r"directory to start over$", alone=False)
  assert "resume=True" not in line  # The API's words stay in the API.
  unlearned = Path(re.search(r"error: (\S+/oeu-\S+) ", line).group(1))
  assert unlearned.is_relative_to(work)

  status, out, _ = _run_main(argv + ["--resume"], capsys)
  assert status == 0
  records = json.loads((work / "results.json").read_text())
  assert [r["method"] for r in records] == ["original", "retrain", "oeu"]
  assert checkpointing.latest_step(unlearned) == 6

  # Finished runs are reused without --resume (nothing is retrained).
  status, _, _ = _run_main(argv, capsys)
  assert status == 0
  again = json.loads((work / "results.json").read_text())
  assert [r["ua"] for r in again] == [r["ua"] for r in records]

  _flip_a_byte(unlearned / "6")
  status, _, err = _run_main(argv, capsys)
  assert status == 1
  _assert_one_error_line(err, re.escape(str(unlearned / "6")), alone=False)


# Issue 15, item 7: a fast and complete command line.

_HELP_WITHOUT_JAX = """
import sys
from oeu_jax import cli
code = cli.main(sys.argv[1:])
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("jax", "flax", "optax", "orbax", "aqt"))
print("heavy modules:", heavy, file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"],
                                  ["demo", "--help"], ["export", "--help"]])
def test_help_imports_no_jax(argv):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _HELP_WITHOUT_JAX, *argv],
                        capture_output=True, text=True, env=env, timeout=60,
                        check=False)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("usage: python -m oeu_jax")
  assert proc.stderr.strip() == "heavy modules: []"


def test_python_m_oeu_jax_help_imports_no_jax():
  code = ("import runpy, sys; sys.argv = ['oeu_jax', 'run', '--help']\n"
          "try:\n  runpy.run_module('oeu_jax', run_name='__main__')\n"
          "except SystemExit:\n  pass\n"
          "print('jax' in sys.modules, file=sys.stderr)")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=60, check=False)
  assert proc.stderr.strip() == "False", proc.stderr
  assert "--unlearn-lr" in proc.stdout


def _actions(parser):
  for action in parser._actions:  # pylint: disable=protected-access
    if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
      for sub in action.choices.values():
        yield from _actions(sub)
    else:
      yield parser.prog, action


def test_every_flag_has_help():
  missing = [(prog, a.option_strings) for prog, a in _actions(
      cli.build_parser()) if a.option_strings and not a.help]
  assert not missing


def test_run_help_prints_the_per_dataset_defaults(capsys):
  assert cli.main(["run", "--help"]) == 0
  out = capsys.readouterr().out
  for dataset in ("digits", "cifar10", "mnist_idx"):
    t = config.default_train(dataset)
    u = {s: config.default_unlearn(dataset, s) for s in ("random", "class")}
    row = next(ln for ln in out.splitlines()
               if ln.startswith(f"  {dataset} "))
    assert f" {t.epochs}/{t.batch_size}/{t.lr:g}" in row, row
    for s, c in u.items():
      assert f"{s} {c.epochs}/{c.batch_size}/{c.lr:g}" in row, row


def test_catalog_reads_the_modules_tables_and_defaults():
  # The very tables the modules use, not copies to keep equal.
  assert catalog.DATASETS is data.DATASETS
  assert catalog.SCENARIOS is data.SCENARIOS
  assert catalog.MODELS is models.MODELS
  assert catalog.BITS is quantization.BITS
  assert catalog.METHODS is methods.METHODS
  assert catalog.OPTIMIZERS is methods.OPTIMIZERS
  assert methods.METHODS == tuple(methods.REGISTRY) + ("retrain",)
  fallback = {k: getattr(TrainConfig(), k) for k in defaults.TRAIN_FALLBACK}
  assert fallback == defaults.TRAIN_FALLBACK
  fallback = {k: getattr(UnlearnConfig(), k)
              for k in defaults.UNLEARN_FALLBACK}
  assert fallback == defaults.UNLEARN_FALLBACK
  for d in data.DATASETS:
    assert config.default_train(d) == TrainConfig(**defaults.train_budget(d))
    for s in data.SCENARIOS:
      assert config.default_unlearn(d, s) == UnlearnConfig(
          **defaults.unlearn_budget(d, s))


class _Terminal:
  def __init__(self):
    self.text = ""

  def isatty(self):
    return True

  def write(self, text):
    self.text += text

  def flush(self):
    pass


def test_progress_bar_only_on_a_terminal():
  log = io.StringIO()
  bar = progress.bar(400, "oeu", file=log, every=0.0)
  assert isinstance(bar, progress.Lines)
  bar.update(120)
  bar.update(280)  # The end: one line at close, not at the last update.
  bar.close()
  lines = log.getvalue().splitlines()
  assert [ln.split(",")[0] for ln in lines] == [
      "oeu: 120/400 steps (30%)", "oeu: 400/400 steps (100%)"]
  assert "\r" not in log.getvalue()
  tty = _Terminal()
  bar = progress.bar(10, "oeu", file=tty)
  assert not isinstance(bar, progress.Lines)  # tqdm.
  bar.update(10)
  bar.close()
  assert "\r" in tty.text


def _readme_snippet() -> str:
  text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
  section = text.split("## The method in twelve lines", 1)[1]
  return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_snippet_runs_as_written():
  namespace = {}
  exec(compile(_readme_snippet(), "README.md", "exec"), namespace)  # pylint: disable=exec-used
  before, after = namespace["params0"], namespace["params"]
  assert jax.tree.structure(before) == jax.tree.structure(after)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(after))
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(before), jax.tree.leaves(after)))


def test_unfinished_run_message_names_the_api_argument(tmp_path):
  checkpointing.save_checkpoint(tmp_path, 2, {"x": 1})
  with pytest.raises(loop.UnfinishedRunError) as info:
    loop.resume_step(str(tmp_path), 6, resume=False)
  assert "pass resume=True to continue it" in str(info.value)
  assert "--resume" not in str(info.value)
  assert (info.value.step, info.value.total) == (2, 6)


def test_stop_flags_reach_the_unlearning_config():
  args = cli.build_parser().parse_args(
      RUN + ["--stop-when", "entropy>=0.9", "--stop-every", "4"])
  # Protocol defaults (no budget flag): the rule of the open-ended methods.
  cfg = args_lib.run_config_from_args(args)
  assert (cfg.budgets, cfg.stop_when, cfg.stop_every) == (
      "protocol", "entropy>=0.9", 4)
  plain = args_lib.run_config_from_args(cli.build_parser().parse_args(RUN))
  assert (plain.budgets, plain.stop_when, plain.unlearn) == (
      "protocol", "auto", UnlearnConfig())
  # A given budget: the rule goes into it, and none unless asked.
  given = args_lib.run_config_from_args(cli.build_parser().parse_args(
      RUN + ["--unlearn-lr", "0.02", "--stop-when", "ua>=95"]))
  assert given.budgets == "given"
  assert (given.unlearn.lr, given.unlearn.stop_when) == (0.02, "ua>=95")
  bare = args_lib.run_config_from_args(cli.build_parser().parse_args(
      RUN + ["--unlearn-epochs", "2"]))
  assert bare.unlearn.stop_when is None and bare.unlearn.epochs == 2
  harness = args_lib.run_config_from_args(cli.build_parser().parse_args(
      RUN + ["--budgets", "harness", "--stop-when", "none"]))
  assert harness.budgets == "harness" and harness.unlearn.stop_when is None
