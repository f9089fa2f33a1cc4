"""Plots of a fit and model comparison by LOO."""

import dataclasses
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
    with pytest.raises(ValueError, match="round_to"):
        compare([result, result], round_to="two")


def _gcamp6s(k_off: float) -> tuple[cainfer.CellModel, cainfer.CellModel]:
    ind = cainfer.get_indicator("GCaMP6s")
    ind = ind.with_(k_off=k_off, k_on=k_off / ind.kd**ind.hill, kinetics_source="test value")
    return (
        cainfer.single_compartment(ind, indicator_kinetics="kinetic"),
        cainfer.single_compartment(ind),
    )


def _binding_fits(
    generator: str, n: int, stimulus: cainfer.Stimulus, draws: int
) -> dict[str, cainfer.Fit]:
    kin, eq = _gcamp6s(1.0)
    t = np.arange(n) / 30.0
    truth = {"gamma": 500.0, "influx_amplitude": 3.0}
    src, values = (kin, {**truth, "k_off": 1.0}) if generator == "kinetic" else (eq, truth)
    rng = np.random.default_rng(5)
    y = src.simulate(values, t, stimulus).dff.values + rng.normal(0, 0.03, n)
    kw = dict(stimulus=stimulus, time=t, draws=draws, tune=draws, chains=2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cainfer.infer.FitWarning)
        return {
            "kinetic": fit(y, kin, free=["gamma", "influx_amplitude", "k_off"], **kw),
            "equilibrium": fit(y, eq, free=["gamma", "influx_amplitude"], **kw),
        }


@pytest.mark.slow
def test_compare_tells_slow_kinetic_binding_from_equilibrium():
    # events at times off the frame clock, as spikes are; GCaMP6s unbinding at 1/s
    rng = np.random.default_rng(5)
    stim = cainfer.Stimulus(events=np.sort(rng.uniform(1.0, 13.0, 8)))
    table = compare(_binding_fits("kinetic", 450, stim, 300), round_to="none")
    assert table.index[0] == "kinetic", table
    row = table.loc["equilibrium"]
    assert abs(row["elpd_diff"]) > 4 * row["dse"] and row["weight"] < 0.05, table
    # data from instant binding: the extra rate buys the kinetic model nothing
    table = compare(_binding_fits("equilibrium", 450, stim, 300), round_to="none")
    worse = table.index[1]
    row = table.loc[worse]
    assert worse == "kinetic" or abs(row["elpd_diff"]) < 2 * row["dse"], table


@pytest.mark.slow
def test_compare_warns_when_events_sit_on_frames_and_binding_differs():
    on = cainfer.Stimulus(events=[0.5, 1.0])  # frames every 1/30 s: on the clock
    fits = _binding_fits("kinetic", 60, on, 30)
    with pytest.warns(cainfer.infer.FitWarning, match=r"2 stimulus event\(s\) fall exactly"):
        compare(fits)
    # the same fits as if the events had been 10 ms later: no warning
    off = {
        k: dataclasses.replace(f, settings={**f.settings, "stimulus_events": [0.51, 1.01]})
        for k, f in fits.items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", cainfer.infer.FitWarning)
        compare(off)
    # the same binding in both: nothing to warn about
    with warnings.catch_warnings():
        warnings.simplefilter("error", cainfer.infer.FitWarning)
        compare([fits["kinetic"], fits["kinetic"]])
