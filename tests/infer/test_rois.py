"""Several ROIs: independent fits and a hierarchical fit with pooled parameters."""

import numpy as np
import pytest
import xarray as xr

import cainfer
from cainfer.infer import fit_hierarchical, fit_rois, load_fit
from cainfer.synthetic import simulate_traces
from tests.infer.conftest import assert_compact_round_trip

TIME = np.arange(450) / 30.0
STIM = cainfer.Stimulus(events=[1.0, 4.0, 4.05, 8.0, 11.0, 11.05, 11.1])
GAMMA = {"a": 400.0, "b": 520.0, "c": 650.0}
AMPLITUDE = 15.0
FREE = ["gamma", "influx_amplitude"]


def _traces() -> xr.DataArray:
    model = cainfer.single_compartment("OGB-1")
    rows = [
        simulate_traces(
            model, {"gamma": g, "influx_amplitude": AMPLITUDE}, TIME, STIM, noise_sd=0.03, seed=i
        ).dff.isel(roi=0)
        for i, g in enumerate(GAMMA.values())
    ]
    return xr.concat(rows, dim="roi").assign_coords(roi=list(GAMMA))


@pytest.fixture(scope="module")
def hierarchical():
    model = cainfer.single_compartment("OGB-1")
    return fit_hierarchical(
        _traces(),
        model,
        stimulus=STIM,
        free=FREE,
        pooled=["gamma"],
        draws=1000,
        tune=500,
        chains=2,
        seed=1,
        target_accept=0.9,
    )


@pytest.mark.slow
def test_hierarchical_recovers_each_cell_and_the_population(hierarchical):
    s = hierarchical.summary(round_to="none")
    for label, g in GAMMA.items():
        assert s.loc[f"gamma[{label}]", "hdi94_lb"] <= g <= s.loc[f"gamma[{label}]", "hdi94_ub"]
        row = s.loc[f"influx_amplitude[{label}]"]
        assert row["hdi94_lb"] <= AMPLITUDE <= row["hdi94_ub"]
    assert (s["r_hat"].astype(float) <= 1.01).all(), s["r_hat"]
    # the population median lies among the cells it was drawn from
    log_median = s.loc["gamma_pop_log_median", "mean"]
    assert np.log(400.0) < log_median < np.log(650.0)
    assert hierarchical.rois == ["a", "b", "c"]
    pp = hierarchical.idata["posterior_predictive"]
    assert pp["ca"].dims == ("chain", "draw", "roi", "time")
    assert hierarchical.idata["log_likelihood"]["y"].shape == (2, 1000, 3 * TIME.size)
    means = hierarchical.posterior_mean()["gamma"]
    np.testing.assert_allclose(means, list(GAMMA.values()), rtol=0.03)
    pred = hierarchical.predict(TIME, STIM, draws=20)
    assert pred["ca"].dims == ("sample", "roi", "time") and list(pred.roi.values) == ["a", "b", "c"]
    # a faster pump, a faster decay: the cells' predicted calcium is ordered by their gamma
    tail = pred.ca_median.sel(time=slice(STIM.events[-1] + 0.3, None)).sum("time").values
    assert tail[0] > tail[1] > tail[2]
    table, corr = hierarchical.identifiability()
    assert "gamma[b]" in table.index and corr.shape == (6, 6)


@pytest.mark.slow
def test_hierarchical_fit_round_trips(hierarchical, tmp_path):
    back = load_fit(hierarchical.save(tmp_path / "h.nc"))
    assert_compact_round_trip(hierarchical, tmp_path / "h2.nc")
    assert back.rois == ["a", "b", "c"] and back.settings["pooled"] == ["gamma"]
    np.testing.assert_allclose(
        back.posterior_mean()["gamma"], hierarchical.posterior_mean()["gamma"]
    )


@pytest.mark.slow
def test_a_hierarchical_fit_shows_each_roi_s_prior_in_jupyter(hierarchical):
    """ROI labels that are numbers: the table's "gamma[1]" finds ROI 1's prior draws."""
    import dataclasses

    tree = hierarchical.idata.copy()
    for group in ("posterior", "prior"):
        tree[group] = tree[group].to_dataset().assign_coords(roi=[0, 1, 2])
    numbered = dataclasses.replace(hierarchical, idata=tree, rois=[0, 1, 2])
    text = numbered._repr_html_()
    lo, hi = np.quantile(np.asarray(tree["prior"]["gamma"].sel(roi=1)).ravel(), [0.03, 0.97])
    assert ">gamma[1]<" in text and f"[{lo:.4g}, {hi:.4g}]" in text
    # and the population's own variables (no ROI) with theirs
    pop = np.asarray(tree["prior"]["gamma_pop_log_median"]).ravel()
    lo, hi = np.quantile(pop, [0.03, 0.97])
    assert ">gamma_pop_log_median<" in text and f"[{lo:.4g}, {hi:.4g}]" in text


@pytest.mark.slow
def test_independent_fits_per_roi():
    fits = fit_rois(
        _traces(),
        cainfer.single_compartment("OGB-1"),
        stimulus=STIM,
        rois=["a", "c"],
        free=FREE,
        draws=400,
        tune=400,
        chains=2,
        seed=3,
    )
    assert list(fits) == ["a", "c"]
    for label, f in fits.items():
        s = f.summary(round_to="none")
        assert s.loc["gamma", "hdi94_lb"] <= GAMMA[label] <= s.loc["gamma", "hdi94_ub"]
        assert f.settings["roi"] == label and f.rois is None
    assert fits["a"].settings["seed"] != fits["c"].settings["seed"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pooled": ["kappa_s"]}, r"pooled parameter\(s\) \['kappa_s'\] are not free"),
        ({"rois": ["a"]}, "at least two ROIs"),
        ({"rois": ["a", "z"]}, r"no ROI\(s\) \['z'\]"),
        ({"pool_sd": 0.0}, "pool_sd"),
        (
            {"priors": {"gamma": cainfer.forward.Prior("uniform", 1.0, 900.0)}},
            "need a log-normal prior",
        ),
    ],
)
def test_hierarchical_bad_input(kwargs, match):
    args = {"stimulus": STIM, "free": FREE, "pooled": ["gamma"]} | kwargs
    with pytest.raises(ValueError, match=match):
        fit_hierarchical(_traces(), cainfer.single_compartment("OGB-1"), **args)


def test_all_nan_roi_is_named():
    da = _traces().copy()
    da.loc[{"roi": "b"}] = np.nan
    with pytest.raises(ValueError, match="ROI 'b' is all NaN"):
        fit_rois(da, cainfer.single_compartment("OGB-1"), stimulus=STIM, free=FREE)


def test_single_fit_asks_which_roi():
    with pytest.raises(ValueError, match="traces hold 3 ROIs"):
        cainfer.fit(_traces(), cainfer.single_compartment("OGB-1"), stimulus=STIM)
