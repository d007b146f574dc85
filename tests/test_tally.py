"""Tests for oeu_jax.engine.tally: a run's seconds and metric means across
resumes."""

import json

import numpy as np

from oeu_jax.engine import tally


def _rows(values, finite=None):
  values = np.asarray(values, np.float32)
  finite = np.ones(len(values), bool) if finite is None else np.asarray(finite)
  return {"loss": values, "finite": finite}


def test_means_over_finite_steps_and_skipped_count():
  t = tally.advance(tally.empty(), [_rows([1.0, 2.0]),
                                    _rows([9.0, 3.0], [False, True])],
                    seconds=2.5, compile_seconds=1.0)
  assert (t["first_step"], t["step"]) == (0, 4)
  assert (t["finite_steps"], t["skipped_steps"]) == (3, 1)
  assert t["seconds"] == 2.5 and t["compile_seconds"] == 1.0
  assert tally.means(t) == {"loss": 2.0, "skipped_steps": 1}
  assert tally.means(tally.empty()) == {} and tally.means(None) == {}


def test_a_resumed_tally_equals_the_straight_one_bit_for_bit():
  rng = np.random.default_rng(0)
  chunks = [_rows(rng.normal(size=5)) for _ in range(4)]
  straight = tally.empty()
  for i in range(0, 4, 2):  # Checkpoints after every two chunks.
    straight = tally.advance(straight, chunks[i:i + 2], seconds=i,
                             compile_seconds=0)
  first = tally.advance(tally.empty(), chunks[:2], seconds=0,
                        compile_seconds=0)
  # Stored as JSON in the manifest, restored after an interruption.
  stored = json.loads(json.dumps({"tally": first}))
  resumed = tally.advance(tally.restored(stored, 10), chunks[2:], seconds=2,
                          compile_seconds=0)
  assert resumed == straight


def test_restored_without_a_tally_counts_from_the_restored_step():
  assert tally.restored(None, 0) == tally.empty()
  assert tally.restored({}, 8)["first_step"] == 8
  # A tally of another step (e.g. a foreign meta) is not continued.
  assert tally.restored({"tally": dict(tally.empty(), step=4)}, 8) == (
      tally.empty(8))
