"""The house: layers import only downward, no circle, no module too long.

Each subpackage of ``oeu_jax`` is a layer with a rank; a module may import
modules of its own layer or of lower ones. Read from the source with
``ast`` (nothing is imported), so a new upward import fails here.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "oeu_jax"
# Low to high. ``defaults`` is a leaf every layer reads.
LAYERS = ("defaults", "data", "nn", "algorithm", "engine", "evaluation",
          "runner", "cli", "__init__", "__main__")
MAX_LINES = 400


def _layer(module: str) -> str:
  """``oeu_jax.engine.loop`` -> ``engine``."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def _modules():
  for path in sorted(ROOT.rglob("*.py")):
    rel = path.relative_to(ROOT.parent).with_suffix("")
    name = ".".join(rel.parts)
    if name.endswith(".__init__"):
      name = name[: -len(".__init__")]
    yield name, path


def _imports(name: str, path: Path) -> set:
  """The ``oeu_jax`` modules ``path`` imports (at any depth of the file)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module == "oeu_jax" or node.module.startswith("oeu_jax.")):
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        out.add(full if _is_module(full) else node.module)
    elif isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.startswith("oeu_jax"))
  out.discard(name)
  return out


def _is_module(dotted: str) -> bool:
  p = ROOT.parent.joinpath(*dotted.split("."))
  return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


MODULES = dict(_modules())
GRAPH = {n: _imports(n, p) for n, p in MODULES.items()}


def test_the_layers_are_the_subpackages():
  layers = {_layer(n) for n in MODULES if n != "oeu_jax"}
  assert layers <= set(LAYERS), layers - set(LAYERS)


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_no_import_from_a_higher_layer(name):
  if name == "oeu_jax":
    return  # The public API re-exports every layer.
  rank = LAYERS.index(_layer(name))
  up = sorted(m for m in GRAPH[name]
              if m != "oeu_jax" and LAYERS.index(_layer(m)) > rank)
  assert not up, f"{name} imports higher layers: {up}"


def test_no_circle():
  state = {}

  def visit(n, stack):
    if state.get(n) == 1:
      raise AssertionError(f"import circle: {' -> '.join(stack + [n])}")
    if state.get(n) == 2:
      return
    state[n] = 1
    for m in GRAPH.get(n, ()):
      if m in GRAPH and m != "oeu_jax":
        visit(m, stack + [n])
    state[n] = 2

  for n in GRAPH:
    visit(n, [])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_the_limit(name):
  lines = len(MODULES[name].read_text().splitlines())
  assert lines <= MAX_LINES, f"{name}: {lines} lines > {MAX_LINES}"
