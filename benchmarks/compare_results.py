"""Compares two ``results.json`` files record by record, timing fields
aside (``rte_s``, ``rte_with_compile_s``): every other field must be equal,
floats bit for bit. For checking that a change of the code left a run's
metrics unchanged::

    python benchmarks/compare_results.py OLD/results.json NEW/results.json

Exits 1 when any record or field differs.
"""

import json
import sys

TIMING = ("rte_s", "rte_with_compile_s")


def _key(r: dict) -> tuple:
  return tuple(str(r.get(k)) for k in ("dataset", "scenario", "forget_class",
                                       "forget_ratio", "method", "seed"))


def main(old: str, new: str) -> int:
  with open(old) as f:
    a = {_key(r): r for r in json.load(f)}
  with open(new) as f:
    b = {_key(r): r for r in json.load(f)}
  if set(a) != set(b):
    print(f"records differ: {sorted(set(a) ^ set(b))}")
    return 1
  diffs = [(k, f, v, b[k].get(f)) for k in sorted(a) for f, v in a[k].items()
           if f not in TIMING and b[k].get(f) != v]
  for d in diffs:
    print("differs:", *d)
  print(f"{len(a)} records, {len(diffs)} differences outside {TIMING}")
  return 1 if diffs else 0


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit(__doc__)
  sys.exit(main(*sys.argv[1:]))
