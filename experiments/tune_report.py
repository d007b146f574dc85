"""The tuning table of ``python -m experiments.tune --report``.

Reads one ``[dataset][scenario]`` entry of the tuning JSON written by
:mod:`experiments.tune`: per method its search space, pick, tuning score,
diverged and out-of-range trials, and (when tuned) its stopping rule.
"""

from experiments import protocol
from oeu_jax.algorithm import methods as methods_lib


def _stop_cell(stop) -> str:
  if not stop or stop.get("base") is None:
    return "-"
  steps = {c["rule"]: c["mean_steps"] for c in stop["candidates"]}
  base = stop["base"]["mean_steps"]
  if stop["pick"] is None:
    return f"none ({len(steps)} tried)"
  return f"{stop['pick']} ({steps[stop['pick']]:g} of {base:g} steps)"


def _range_cell(trials) -> str:
  checked = [t for t in trials if "metrics" in t]
  out = sum(bool(t.get("out_of_range")) for t in checked)
  return f"{out} of {len(checked)} checked"


def _knob_cell(knob) -> str:
  """``name [values]``; several names (SSD's alpha and lam) joined by /."""
  if knob is None:
    return "-"
  names = knob[0] if isinstance(knob[0], str) else "/".join(knob[0])
  return f"{names} {list(knob[1])}"


def markdown(entry: dict, *, title: str) -> str:
  """The tuning table: search space, pick and its tuning score per method."""
  lines = [f"### Tuning: {title}", "",
           "lr grid: the base grid, `+` extensions (bracketing rule), `~` "
           "refinements at the pick's knob value.", "",
           f"Tuning seeds {entry['seeds']} (class-wise: class = seed % K), "
           f"compute cap {entry['cap']:.0%} of Retrain's, criterion mean "
           f"Avg. gap to Retrain; a setting whose RA on a tuning unit is "
           f"more than {protocol.RA_DROP:g} points below Retrain's is "
           "rejected (working range; 'checked': trials whose per-unit "
           "metrics were recorded, the rest were tuned before the rule and "
           "scored worse than a checked pick). Command: "
           f"`{entry['command']}` ({entry['date']}).", ""]
  stops = any("stop" in e for e in entry["methods"].values())
  if stops:
    lines += ["Stopping rule: the pick rerun under each candidate rule; the "
              "rule that stops earliest among those within "
              f"{protocol.STOP_TOL:g} gap points of the pick without a rule"
              " (mean unlearning steps of the tuning units shown), else "
              "none.", ""]
  lines += ["| method | schedule | lr grid | knob grid | pick: lr | pick: "
            "knob | epochs | tuning gap | diverged | out of range |"
            + (" stop pick |" if stops else ""),
            "|---|---|---|---|---|---|---|---|---|---|"
            + ("---|" if stops else "")]
  for m, e in entry["methods"].items():
    pick = e["pick"] or {}
    knob = e["space"]["knob"]
    sched = methods_lib.build_method(m, None, **dict(
        protocol.FIXED.get(m, ()))).schedule
    ext = e["space"].get("extended_lr") or []
    grid = ", ".join(f"{v:g}" for v in e["space"]["lr"]) + "".join(
        f", +{v:g}" for v in ext) + "".join(
        f", ~{v:g}" for v in e["space"].get("refined_lr") or [])
    lines.append(
        f"| {m} | {sched} | {grid}"
        f" | {_knob_cell(knob)}"
        f" | {pick.get('lr', '-')} | {pick.get('hparams') or '-'} | "
        f"{pick.get('epochs', '-')} | {pick.get('score', float('nan')):.2f}"
        f" | {sum(t['diverged'] for t in e['trials'])} of "
        f"{len(e['trials'])} | {_range_cell(e['trials'])} |"
        + (f" {_stop_cell(e.get('stop'))} |" if stops else ""))
  return "\n".join(lines)
