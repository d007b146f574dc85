"""Session-wide test setup: one XLA compilation cache for the whole run.

Most of the suite's time is XLA compiling the same small programs again: the
digits CNN's training, unlearning and evaluation steps are new closures in
every test (so JAX's in-memory cache misses), and the subprocess tests start
fresh interpreters. JAX's persistent compilation cache, in a temporary folder
that lives for this session only (empty at the start, deleted at the end),
lets each distinct program compile once. Every test still traces, lowers and
runs everything it did; only an identical XLA compilation is reused.
Subprocesses (the CLI, resume, multi-device and notebook tests) inherit the
folder through the environment, and so do pytest-xdist's workers (``-n 2``):
the controller imports this file before it starts them, so every worker
finds the folder set, shares it and leaves it to the controller to delete.
A cache folder set by the caller (``JAX_COMPILATION_CACHE_DIR``) is used as
it is and kept. Two workers writing one entry at once is harmless: JAX
warns about an entry it cannot read and compiles the program itself.
"""

import os
import shutil
import tempfile

import jax
import pytest

_OWN_CACHE = not os.environ.get("JAX_COMPILATION_CACHE_DIR")
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
      prefix="oeu_jax_tests_xla_")
# Cache every compilation, however quick (the default skips those < 1 s).
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
jax.config.update("jax_compilation_cache_dir",
                  os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(scope="module")
def fast_compile():
  """XLA's optimization passes off for the module's programs.

  For tests whose programs run a few tiny steps of large graphs (the models'
  layers, the paper configs on mock data): the passes cost more than they
  save. Every program is still traced, lowered, compiled and run. The flag
  is restored afterwards and the in-memory caches cleared, so that no
  unoptimized executable is reused by other test modules (the persistent
  cache keys include the flag).
  """
  previous = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)
  jax.clear_caches()


# Files collected first, the slowest first: ``-n 2 --dist loadfile`` hands
# whole files to the two workers in collection order, so the longest one
# (the paper configs on mock data, ~4 minutes) must not start last.
SLOW_FILES_FIRST = ("test_experiments.py", "test_backends.py",
                    "test_pipeline.py", "test_seeds.py")


def pytest_collection_modifyitems(session, config, items):
  del session, config
  rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
