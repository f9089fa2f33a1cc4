import runpy
import warnings
from pathlib import Path

import matplotlib
import pytest

from cainfer.infer.result import SamplerWarning

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAINFER_QUICK", "1")  # short sampler runs
    with warnings.catch_warnings():
        # short runs may fall below the ESS the fits warn about; that is not the test
        warnings.simplefilter("default", SamplerWarning)
        runpy.run_path(str(path), run_name="__main__")
    import matplotlib.pyplot as plt

    plt.close("all")


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "extraction", "er_fit", "forward_model"}
