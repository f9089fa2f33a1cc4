"""The two-channel observation model of a ratiometric recording (Fura-2)."""

import json
import warnings

import numpy as np
import pytest
import xarray as xr

import cainfer
from cainfer.extract import extract_ratio
from cainfer.forward import get_ratiometric
from cainfer.infer.fit import _bound_fraction, _observed, _Problem, _pymc_model
from cainfer.infer.observation import ObservedData, noise_scale, ratio_expected
from cainfer.synthetic import simulate_movie
from tests.infer.conftest import assert_compact_round_trip

DYE = get_ratiometric("Fura-2")
CAL = DYE.calibration(r_min=0.4, r_max=7.5, beta=9.0)
MODEL = cainfer.single_compartment(DYE.indicator(CAL, channel=0))
STIM = cainfer.Stimulus(events=[1.0, 3.0, 3.05, 5.0, 7.0, 7.05, 7.1])
TRUTH = {"gamma": 300.0, "influx_amplitude": 40.0, "c_rest": 0.08}
# the bundled example's cells and protocol (data_examples/make_example.py)
PUMPS = cainfer.pumps_model(DYE.indicator(CAL, channel=0))
EXAMPLE_STIM = cainfer.Stimulus(
    events=[2.0, 5.0, 5.05, 8.0, 11.0, 11.05, 11.1, 14.0, 17.0, 17.05, 20.0]
)


def test_bound_fraction_from_the_models_dff_is_the_dyes_occupancy():
    t = np.arange(240) / 30.0
    sim = MODEL.simulate(TRUTH, t, STIM)
    f, f_rest = _bound_fraction(np, sim.dff.values, 0.08, DYE.kd, 1.0, MODEL.indicator.rf)
    ca = sim.ca.values
    np.testing.assert_allclose(f, ca / (ca + DYE.kd), rtol=1e-10)
    assert f_rest == pytest.approx(0.08 / (0.08 + DYE.kd))


def test_expected_channels_give_the_calibrated_ratio():
    # noise-free channels at the calibration's own constants, no background, no
    # baseline drift: their ratio is R(c) and the denominator rests at F0
    t = np.arange(240) / 30.0
    sim = MODEL.simulate(TRUTH, t, STIM)
    f, f_rest = _bound_fraction(np, sim.dff.values, 0.08, DYE.kd, 1.0, MODEL.indicator.rf)
    y = np.full((1, t.size), 500.0)
    data = ObservedData("ratio", y, None, np.array([500.0]), y.copy(), None, CAL)
    one = np.ones((1, 1))
    nuis = {"F0": 500.0 * one, "R_min": np.array([0.4]), "R_max": np.array([7.5]),
            "beta": np.array([9.0]), "sigma": one, "sigma_den": one,
            "noise_exponent": 0.5 * one}  # fmt: skip
    mu1, mu2, sd1, sd2 = ratio_expected(f[None, :], np.array([f_rest]), data, nuis, 0, None)
    np.testing.assert_allclose(mu1[0] / mu2[0], CAL.to_ratio(sim.ca.values), rtol=1e-12)
    assert mu2[0, 0] == pytest.approx(500.0, rel=1e-12)
    assert np.all(sd1 > 0) and np.all(sd2 > 0)


def _fura_traces(folder, *, background: bool) -> tuple[xr.Dataset, xr.Dataset]:
    files = simulate_movie(
        folder / "fura.tif", MODEL, stimulus=STIM, n_cells=2, shape=(64, 64), n_frames=300,
        brightness=800.0, params=TRUTH, seed=2, calibration=CAL, motion_sd=0.0, motion_max=0.0,
        neuropil_brightness=150.0 if background else 1e-9,
    )  # fmt: skip
    truth = xr.open_dataset(files.truth, engine="h5netcdf")
    ds = extract_ratio(
        files.movie, rois=files.rois, calibration=CAL, dark_level=100.0,
        background=1.0 if background else None,
    )  # fmt: skip
    return ds, truth


@pytest.fixture(scope="module")
def fura_traces(tmp_path_factory):
    return _fura_traces(tmp_path_factory.mktemp("fura_fit"), background=True)


def test_ratiometric_traces_are_read_as_two_channels(fura_traces):
    ds, _ = fura_traces
    data, t, labels = _observed(ds, None, 1, several=False)
    assert data.kind == "ratio" and labels == [1] and t.size == 300
    np.testing.assert_array_equal(data.y2[0], ds["F"].values[1, 1])
    assert data.calibration == CAL and data.neuropil is not None
    # these backgrounds vary little beside their noise: they enter smoothed (a noisy
    # regressor dilutes its scale), with the noise left in them stated, below the raw
    # trace's, and the trace kept within it
    for k, (bg, sd) in enumerate(((data.neuropil, data.neuropil_sd),
                                  (data.neuropil2, data.neuropil2_sd))):  # fmt: skip
        raw = ds["F_bg"].values[1, k]
        assert sd[0] < 0.9 * noise_scale(raw)
        assert np.std(bg[0] - raw) < 1.5 * noise_scale(raw)
    bare = ds.copy()
    bare.attrs["calibration"] = "null"
    with pytest.raises(ValueError, match="carry no calibration"):
        _observed(bare, None, 0, several=False)
    with pytest.raises(ValueError, match="use observation='ratio'"):
        _observed(ds, None, 0, several=False, observation="fluorescence")
    with pytest.raises(ValueError, match="two-channel Dataset"):
        _observed(ds[["ratio"]], None, 0, several=False, observation="ratio")


def test_background_scale_is_centred_on_the_multiple_the_extraction_subtracted(fura_traces):
    import pymc as pm

    ds, _ = fura_traces
    assert ds.attrs["background"] == 1.0
    opts = {"substeps": 1, "coordinates": "per_buffer", "likelihood": "normal",
            "residuals": "ar1", "drift": "smooth", "drift_timescale": 20.0}  # fmt: skip
    for multiple in (1.0, 0.6):
        sub = ds.copy()
        sub.attrs["background"] = multiple
        data, t, _ = _observed(sub, None, 0, several=False)
        assert data.background == multiple and data.select([0]).background == multiple
        problem = _Problem(MODEL, data, t, None, STIM, ["gamma", "c_rest"], {}, {})
        model = _pymc_model(problem, opts)
        r = pm.draw(model["background_ratio"], 4000, random_seed=3)
        # prior: normal around the multiple, relative sd 0.2 (4000 draws: ±2 % of it)
        assert np.mean(r) == pytest.approx(multiple, rel=0.02)
        assert np.std(r) == pytest.approx(0.2 * multiple, rel=0.05)
    bad = ds.copy()
    bad.attrs["background"] = -1.0
    with pytest.raises(ValueError, match=r"attrs\['background'\]"):
        _observed(bad, None, 0, several=False)


@pytest.mark.slow
def test_ratiometric_fit_recovers_the_cell_and_the_resting_calcium(tmp_path):
    # no background and no motion: what is left between the cell and the numbers
    # is the observation model itself (photon and read noise, bleaching)
    ds, truth = _fura_traces(tmp_path, background=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cainfer.infer.SamplerWarning)
        res = cainfer.fit(ds, MODEL, roi=0, stimulus=STIM, free=list(TRUTH), draws=500,
                          tune=500, chains=2, seed=1)  # fmt: skip
    s = res.summary(round_to="none")
    cell = json.loads(truth.attrs["parameters"])[0]  # the influx amplitude varies per cell
    true = {name: cell[name] for name in TRUTH} | {"R_min": 0.4, "R_max": 7.5, "beta": 9.0}
    # each truth within 3 posterior sd: a bias of the model shows, a 6 % tail does not
    z = {name: (s.loc[name, "mean"] - value) / s.loc[name, "sd"] for name, value in true.items()}
    assert all(abs(v) < 3.0 for v in z.values()), (z, s)
    # and sharp: the physiological parameters to a few per cent
    for name in TRUTH:
        assert s.loc[name, "sd"] < 0.1 * abs(s.loc[name, "mean"]), s
    pp = res.idata["posterior_predictive"]
    assert {"y", "y_den", "ratio", "ca"} <= set(pp.data_vars)
    # both channels' frames are in the pointwise log-likelihood (for compare)
    assert res.idata["log_likelihood"]["y"].sizes["y_dim_0"] == 2 * 300
    fig = res.plot_trace(path=tmp_path / "trace.png")
    assert fig.axes[0].get_ylabel() == "ratio" and (tmp_path / "trace.png").stat().st_size > 1000
    ratio = pp["ratio"].median(("chain", "draw")).values
    rel = np.abs(ratio / truth["ratio"].values[0] - 1.0)
    assert np.median(rel) < 0.03
    # the same protocol predicted anew: the ratio (not the numerator's ΔF/F), with
    # the calibration's posterior, matches the fit's own model ratio
    pred = res.predict(ds.time.values, STIM, draws=250)
    assert {"ratio", "ratio_lower", "ratio_median", "ratio_upper"} <= set(pred.data_vars)
    np.testing.assert_allclose(pred["ratio_median"].values, ratio, rtol=0.01)
    assert np.all(pred["ratio_lower"].values < pred["ratio_upper"].values)
    rel = np.abs(pred["ratio_median"].values / truth["ratio"].values[0] - 1.0)
    assert np.median(rel) < 0.01 and rel.max() < 0.03


@pytest.mark.slow
def test_a_background_that_holds_the_dye_does_not_bias_the_fit(tmp_path):
    """Bath-loaded dye: the background's channels move apart as the cell's do.

    The background then trades off with the cell's own signal, and the
    annulus trace's photon noise, were it the regressor as measured, would
    dilute its scale: this cell (the bundled example's setup, cell 0) gave
    background_ratio 0.79 ± 0.08 for a truth of 1 (z −2.5), c_rest z +2.0 and
    pmca_vmax z −2.0 that way; smoothed, z +0.04, +0.7 and −0.3.
    """
    files = simulate_movie(
        tmp_path / "fura.tif", PUMPS, stimulus=EXAMPLE_STIM, n_cells=3, shape=(48, 48),
        n_frames=450, frame_rate=20.0, brightness=800.0, motion_sd=0.1, motion_max=0.5,
        params={"influx_amplitude": 25.0, "c_rest": 0.08}, seed=20261201, calibration=CAL,
        neuropil_dye=True,
    )  # fmt: skip
    truth = xr.open_dataset(files.truth, engine="h5netcdf")
    ds = extract_ratio(files.movie, rois=files.rois, calibration=CAL, dark_level=100.0)
    free = ["pmca_vmax", "influx_amplitude", "c_rest"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cainfer.infer.SamplerWarning)
        res = cainfer.fit(ds, PUMPS, roi=0, stimulus=EXAMPLE_STIM, free=free, draws=500,
                          tune=500, chains=2, seed=0, target_accept=0.9)  # fmt: skip
    s = res.summary(round_to="none")
    true = {name: json.loads(truth.attrs["parameters"])[0][name] for name in free}
    true["background_ratio"] = 1.0
    z = {name: (s.loc[name, "mean"] - value) / s.loc[name, "sd"] for name, value in true.items()}
    assert all(abs(v) < 1.5 for v in z.values()), (z, s)
    # saved compact, the two channels' backgrounds and their noise come back with it
    back = assert_compact_round_trip(res, tmp_path / "fit.nc")
    assert {"neuropil", "neuropil_den"} <= set(back.idata["observed_data"].data_vars)
