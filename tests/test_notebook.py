"""The Colab quickstart notebook runs top to bottom (CPU, tiny budget).

``OEU_QUICK=1`` makes the notebook skip its pip install, shrink every
budget and read mock CIFAR-10 (``tfds.testing.mock_data``) instead of
downloading it; the kernel inherits this process's environment.
"""

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "experiments" / "colab_quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv("OEU_QUICK", "1")
  monkeypatch.setenv("OEU_WORKDIR", str(tmp_path / "runs"))
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  assert all(not c.get("outputs") for c in nb.cells
             if c.cell_type == "code"), "commit the notebook without outputs"
  client = nbclient.NotebookClient(
      nb, timeout=600, kernel_name="python3",
      resources={"metadata": {"path": str(REPO_ROOT)}})
  client.execute()  # Raises CellExecutionError naming the failing cell.

  records = json.loads((tmp_path / "runs" / "cifar10" /
                        "results.json").read_text())
  assert [r["method"] for r in records] == ["original", "retrain", "oeu"]
  demo = json.loads((tmp_path / "runs" / "demo" / "results.json").read_text())
  assert {r["method"] for r in demo} == {"original", "retrain", "oeu"}
  # The last cell showed the table and at least one plot.
  last = nb.cells[-1].outputs
  kinds = {k for o in last for k in o.get("data", {})}
  assert "text/markdown" in kinds and "image/png" in kinds
  assert (tmp_path / "runs" / "cifar10" / "report" / "table.md").exists()
  # Mock data: nothing was downloaded.
  assert not (tmp_path / "tfds" / "downloads").exists()
