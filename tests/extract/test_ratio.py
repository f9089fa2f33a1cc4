"""Two-channel extraction against a simulated Fura-2 movie with known ratio and calcium."""

import numpy as np
import pytest
import xarray as xr

import cainfer
from cainfer.extract import extract_ratio, extract_traces
from cainfer.forward import get_ratiometric
from cainfer.synthetic import simulate_movie

DYE = get_ratiometric("Fura-2")
CAL = DYE.calibration(r_min=0.4, r_max=7.5, beta=9.0)


@pytest.fixture(scope="module")
def fura_movie(tmp_path_factory):
    model = cainfer.single_compartment(DYE.indicator(CAL, channel=0))
    stim = cainfer.Stimulus(events=[1.0, 2.5, 2.55, 3.5])
    path = tmp_path_factory.mktemp("fura") / "fura.tif"
    files = simulate_movie(
        path, model, stimulus=stim, n_cells=2, shape=(48, 48), n_frames=150, brightness=1500.0,
        params={"influx_amplitude": 40.0}, seed=5, calibration=CAL,
    )  # fmt: skip
    return files, xr.open_dataset(files.truth, engine="h5netcdf")


def test_ratio_and_calcium_follow_the_truth(fura_movie):
    files, truth = fura_movie
    # the numerator's resting brightness is the resting ratio times the denominator's
    f = truth["F_channels"].values
    np.testing.assert_allclose(f[0] / f[1], truth["ratio"].values, rtol=1e-12)
    assert truth["ratio"].values.max() > 1.5 * truth["ratio"].values.min()
    ds = extract_ratio(files.movie, rois=files.rois, calibration=CAL, dark_level=100.0)
    assert ds["F"].dims == ("roi", "channel", "time") and ds.sizes["roi"] == 2
    for c in range(2):
        rel = np.abs(ds["ratio"].values[c] / truth["ratio"].values[c] - 1.0)
        assert np.median(rel) < 0.02, np.median(rel)
        assert np.corrcoef(ds["ca"].values[c], truth["ca"].values[c])[0, 1] > 0.99
    # one registration, undone in both channels: the movie's displacement, recovered
    err = ds["shifts"].values - truth["shifts"].values
    err -= err.mean(axis=0)
    assert np.abs(err).max() < 0.3


def test_given_shifts_are_used_as_they_are(fura_movie):
    files, _ = fura_movie
    movie = cainfer.load_movie(files.movie, channel=1)
    est = extract_traces(movie, rois=files.rois)
    again = extract_traces(movie, rois=files.rois, shifts=est["shifts"].values)
    np.testing.assert_allclose(again["F"].values, est["F"].values, rtol=1e-12)
    assert "shifts given" in again.attrs["registration"]
    zero = extract_traces(movie, rois=files.rois, shifts=np.zeros((150, 2)))
    assert np.abs(zero["F"].values - est["F"].values).max() > 1.0
    with pytest.raises(ValueError, match="shifts has 3 rows for a 150-frame movie"):
        extract_traces(movie, rois=files.rois, shifts=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="register=False"):
        extract_traces(movie, rois=files.rois, register=False, shifts=np.zeros((150, 2)))
    movie.close()


def test_bad_choices_are_named(fura_movie):
    files, _ = fura_movie
    with pytest.raises(ValueError, match="two different channel"):
        extract_ratio(files.movie, rois=files.rois, channels=(1, 1))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['baseline'\]"):
        extract_ratio(files.movie, rois=files.rois, baseline="maximin")
    with pytest.raises(ValueError, match="register_channel"):
        extract_ratio(files.movie, rois=files.rois, register_channel=2)
    with pytest.raises(ValueError, match="channel"):
        extract_ratio(files.movie, rois=files.rois, channels=(0, 2))


def test_simulated_ratio_movie_needs_the_numerator_indicator(tmp_path):
    wrong = cainfer.single_compartment(DYE.indicator(CAL, channel=1))
    with pytest.raises(ValueError, match="numerator channel range"):
        simulate_movie(
            tmp_path / "x.tif", wrong, stimulus=cainfer.Stimulus(events=[0.5]), n_cells=1,
            n_frames=30, calibration=CAL,
        )  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_a_background_that_holds_the_dye_moves_as_the_dye_does(tmp_path):
    """neuropil_dye: the annulus brightens at 340 nm and dims at 380 nm with activity."""
    model = cainfer.single_compartment(DYE.indicator(CAL, channel=0))
    stim = cainfer.Stimulus(events=[1.0, 1.05, 1.1, 3.0, 3.05, 3.1])
    corr = {}
    for dye in (False, True):
        files = simulate_movie(
            tmp_path / f"dye{dye}.tif", model, stimulus=stim, n_cells=2, shape=(48, 48),
            n_frames=150, params={"influx_amplitude": 40.0}, seed=5, calibration=CAL,
            noise=False, bleach=0.0, motion_sd=0.0, motion_max=0.0, neuropil_dff=1.0,
            neuropil_dye=dye,
        )  # fmt: skip
        ds = extract_ratio(files.movie, rois=files.rois, calibration=CAL, dark_level=100.0)
        bg = ds["F_bg"].values[0]
        corr[dye] = np.corrcoef(bg[0], bg[1])[0, 1]
        rel = np.abs(ds["ratio"].values[0] / xr.open_dataset(files.truth)["ratio"].values[0] - 1)
        assert np.median(rel) < 0.02  # the annulus is subtracted either way
    assert corr[False] > 0.9 and corr[True] < -0.9, corr
    with pytest.raises(ValueError, match="neuropil_dye needs a ratiometric movie"):
        simulate_movie(tmp_path / "x.tif", model, stimulus=stim, n_cells=1, n_frames=30,
                       neuropil_dye=True)  # fmt: skip
