"""The exploration notebook runs top to bottom on a subset of the real data."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import KVASIR, REPO

pytestmark = pytest.mark.data  # reads images from ../shared/data


def test_exploration_notebook_executes(monkeypatch):
    monkeypatch.setenv("POLYPSEG_NOTEBOOK_LIMIT", "40")
    monkeypatch.setenv("POLYPSEG_DATA_ROOT", str(KVASIR))
    notebook = nbformat.read(REPO / "notebooks" / "exploration.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute()
    outputs = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    ]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("samples validated" in o.get("text", "") for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
    assert os.environ["POLYPSEG_NOTEBOOK_LIMIT"] == "40"
