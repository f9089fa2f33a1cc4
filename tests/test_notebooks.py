"""The notebooks, opened as notebooks (jupytext) and run cell by cell in a Jupyter kernel."""

from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_a_kernel(path, monkeypatch):
    monkeypatch.setenv("CAINFER_QUICK", "1")  # short sampler runs; the kernel inherits it
    nb = jupytext.read(path)
    assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    # the kernel starts in the notebook's folder, as JupyterLab starts it (the notebooks
    # find data_examples/ from there; none writes a file)
    client = NotebookClient(nb, kernel_name="python3", timeout=900,
                            resources={"metadata": {"path": str(path.parent)}})  # fmt: skip
    client.execute()  # a cell that raises fails the test with its traceback
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    # what a notebook shows: its figures as images (matplotlib's inline backend)
    shown = [o for o in outputs if o.output_type in ("display_data", "execute_result")]
    assert any("image/png" in o.get("data", {}) for o in shown), path.name


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "extraction", "er_fit", "forward_model"}
