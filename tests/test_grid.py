"""The hyper-parameter grid: every setting is a valid config; the table."""

import math

from experiments import grid
from oeu_jax.algorithm import methods
from oeu_jax.runner import config as config_lib


def test_every_grid_setting_builds_its_method():
  cfgs = grid.grid_configs()
  assert len(cfgs) == 2 * sum(len(v) for _, v in grid.GRID.values())
  for method, setting, cfg in cfgs:
    config_lib.resolve(cfg)  # Unknown fields or values raise here.
    field, value = setting.split("=")
    hp = dict(dict(cfg.method_hparams)[method])
    assert str(hp[field]) == value
    methods.build_method(method, None, **hp)


def test_grid_table_marks_the_lowest_mean_gap():
  recs = [
      dict(method="retrain", setting="a=1", scenario="class", avg_gap=0.0),
      dict(method="ga", setting="a=1", scenario="class", avg_gap=4.0),
      dict(method="ga", setting="a=1", scenario="random", avg_gap=2.0),
      dict(method="ga", setting="a=2", scenario="class", avg_gap=1.0),
      dict(method="ga", setting="a=2", scenario="random", avg_gap=3.0),
      dict(method="ga", setting="a=3", scenario="class",
           avg_gap=math.inf),
  ]
  lines = grid.grid_table(recs).splitlines()
  assert len(lines) == 2 + 3  # Header, rule, one row per ga setting.
  assert lines[2] == "| ga | a=1 | 4.00 | 2.00 | 3.00 |"
  assert lines[3] == "| ga | **a=2** | 1.00 | 3.00 | **2.00** |"
  assert lines[4] == "| ga | a=3 | diverged | – | diverged |"
