"""Pairing several methods' records unit by unit, for paired statistics.

A unit is what two methods' results are paired over: a seed, or a
(seed, forgotten class) pair for class-wise tables averaged over classes.
Records are the dicts of ``results.json``; the pairing keys a record carries
(``PAIR_BY``) name its unit. :mod:`oeu_jax.evaluation.stats` re-exports these
names.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

__all__ = ["PAIR_BY", "paired_units"]

# Record keys that identify a paired unit; those present in the records are
# used (random forgetting records carry ``forget_class: None``, which is fine).
PAIR_BY = ("seed", "forget_class")


def _pair_keys(records: Sequence[Mapping[str, Any]], pair_by) -> tuple:
  """The keys of ``pair_by`` that the records carry (all or none of them)."""
  used = []
  for key in pair_by:
    has = [key in rec for rec in records]
    if all(has):
      used.append(key)
    elif any(has):
      raise ValueError(
          f"pairing key {key!r} is in some records but not in others."
      )
  if not used:
    raise ValueError(f"the records carry none of the pairing keys {pair_by}.")
  return tuple(used)


def _index_units(records, pair_keys, name) -> dict:
  index = {}
  for rec in records:
    unit = tuple(rec[k] for k in pair_keys)
    if unit in index:
      raise ValueError(
          f"{name} has two records for unit {dict(zip(pair_keys, unit))};"
          f" pair by more keys (pair_by) or drop duplicates."
      )
    index[unit] = rec
  return index


def _unit_sort_key(unit):
  return tuple((v is not None, v) for v in unit)


def paired_units(
    *record_lists: Sequence[Mapping[str, Any]],
    pair_by: Sequence[str] = PAIR_BY,
) -> tuple[tuple[str, ...], list, list]:
  """Pairs several methods' records by unit (seed, forgotten class, ...).

  Args:
    *record_lists: One list of records per method.
    pair_by: Candidate pairing keys; the ones present in every record are
      used (present in some records only is an error).

  Returns:
    ``(keys, units, rows)``: the pairing keys used, the sorted list of unit
    tuples, and for each list in ``record_lists`` its records in unit order.

  Raises:
    ValueError: If a list is empty, none of ``pair_by`` is present, a unit
      appears twice in a list, or the lists do not cover the same units.

  Examples:
    >>> a = [{"seed": 1, "ua": 1.0}, {"seed": 0, "ua": 2.0}]
    >>> b = [{"seed": 0, "ua": 3.0}, {"seed": 1, "ua": 4.0}]
    >>> keys, units, (a_rows, b_rows) = paired_units(a, b)
    >>> keys, units, [r["ua"] for r in a_rows]
    (('seed',), [(0,), (1,)], [2.0, 1.0])
  """
  for i, recs in enumerate(record_lists):
    if not recs:
      raise ValueError(f"record list {i} is empty.")
  keys = _pair_keys([r for recs in record_lists for r in recs], tuple(pair_by))
  indexes = [_index_units(recs, keys, f"record list {i}")
             for i, recs in enumerate(record_lists)]
  units = set(indexes[0])
  for i, index in enumerate(indexes[1:], start=1):
    if set(index) != units:
      only = sorted(set(index) ^ units, key=_unit_sort_key)
      raise ValueError(
          f"record list {i} and record list 0 differ in units {only}"
          f" (pairing keys {keys}); a paired statistic needs the same units."
      )
  units = sorted(units, key=_unit_sort_key)
  return keys, units, [[index[u] for u in units] for index in indexes]
