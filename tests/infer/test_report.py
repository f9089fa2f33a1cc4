"""Plots of a fit and model comparison by LOO."""

import warnings

import matplotlib
import numpy as np
import pytest

import cainfer
from cainfer.infer import compare, fit
from cainfer.infer.plots import _band, plot_pairs, plot_posteriors, plot_trace
from cainfer.synthetic import simulate_traces
from tests.infer.conftest import STIM, TIME, TRUTH

matplotlib.use("Agg")


@pytest.mark.slow
def test_predictive_band_covers_the_data_at_its_level(recovery):
    _, result = recovery
    pp = result.idata["posterior_predictive"]
    y = np.asarray(result.idata["observed_data"]["y"])
    ok = np.isfinite(y)
    for prob in (0.5, 0.94):
        lo, _, hi = _band(pp["y"], prob)
        inside = ((y >= lo) & (y <= hi))[ok].mean()
        assert abs(inside - prob) < 0.06, (prob, inside)


@pytest.mark.slow
def test_plots_are_written(recovery, tmp_path):
    _, result = recovery
    fig = plot_trace(result, path=tmp_path / "trace.png")
    ax1, ax2 = fig.axes
    assert ax1.get_ylabel() == "ΔF/F" and "Ca" in ax2.get_ylabel()
    # the free-Ca median drawn is the posterior-predictive median
    median = np.median(
        np.asarray(result.idata["posterior_predictive"]["ca"]).reshape(-1, TIME.size), axis=0
    )
    np.testing.assert_allclose(ax2.lines[0].get_ydata(), median)
    fig = plot_posteriors(result, path=tmp_path / "posteriors.png")
    titles = {ax.get_title() for ax in fig.axes}
    assert {"log10 gamma", "log10 influx_amplitude"} <= titles
    result.plot_pairs(path=tmp_path / "pairs.pdf")
    for name in ("trace.png", "posteriors.png", "pairs.pdf"):
        assert (tmp_path / name).stat().st_size > 1000
    assert not list(tmp_path.glob(".*"))


@pytest.mark.slow
def test_plot_options_are_checked(recovery):
    _, result = recovery
    with pytest.raises(ValueError, match="ci_prob"):
        plot_trace(result, ci_prob=1.5)
    with pytest.raises(ValueError, match="one trace"):
        plot_trace(result, roi=0)
    with pytest.raises(ValueError, match=r"\['nope'\] are not in the posterior"):
        plot_pairs(result, var_names=["nope"])


@pytest.mark.slow
def test_compare_prefers_the_model_that_generated_the_data(recovery):
    model, right = recovery
    y = right.idata["observed_data"]["y"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cainfer.infer.SamplerWarning)
        wrong = fit(
            y,
            model,
            stimulus=STIM,
            free=["influx_amplitude"],
            fixed={"gamma": 0.5 * TRUTH["gamma"]},
            draws=300,
            tune=300,
            chains=2,
            seed=2,
        )
    table = compare({"true pump rate free": right, "pump rate off by 2x": wrong})
    assert table.index[0] == "true pump rate free"
    row = table.loc["pump rate off by 2x"]
    # arviz reports elpd_diff ≤ 0 for the worse model
    assert abs(row["elpd_diff"]) > 4 * row["dse"] and row["weight"] < 0.05


def test_compare_rejects_fits_of_different_data(recovery):
    _, result = recovery
    model = cainfer.single_compartment("OGB-1")
    other = simulate_traces(model, TRUTH, TIME, STIM, noise_sd=0.03, seed=9).dff.isel(roi=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cainfer.infer.SamplerWarning)
        f2 = fit(other, model, stimulus=STIM, free=["gamma"], draws=50, tune=50, chains=1)
    with pytest.raises(ValueError, match="different data"):
        compare([result, f2])
    with pytest.raises(ValueError, match="at least two"):
        compare([result])
    with pytest.raises(ValueError, match="allowed: stacking"):
        compare([result, result], method="aic")
