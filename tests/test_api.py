"""The public API: every name resolves, and the docstring's example (a
user's own Flax model unlearned on their own arrays) runs."""

import doctest

import oeu_jax


def test_every_public_name_resolves():
  for name in oeu_jax.__all__:
    assert getattr(oeu_jax, name) is not None, name


def test_the_docstring_example_runs():
  result = doctest.testmod(oeu_jax)
  assert result.attempted > 5 and result.failed == 0
