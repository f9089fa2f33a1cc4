import json

import numpy as np
import pytest
import tifffile
import xarray as xr
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from cainfer.forward import Stimulus, pumps_model, single_compartment
from cainfer.synthetic import camera_counts, simulate_movie, simulate_traces


def test_traces_equal_forward_model_plus_seeded_noise():
    model = single_compartment()
    t = np.arange(3000) / 30.0
    stim = Stimulus(events=[1.0, 20.0, 40.0])
    params = [{"influx_amplitude": 5.0}, {"influx_amplitude": 15.0}]
    ds = simulate_traces(model, params, t, stim, noise_sd=0.05, seed=3)
    assert ds.dff.dims == ("roi", "time") and ds.sizes["roi"] == 2
    for i, p in enumerate(params):
        np.testing.assert_array_equal(ds.dff_true[i], model.simulate(p, t, stim).dff)
    resid = (ds.dff - ds.dff_true).values
    assert resid.std() == pytest.approx(0.05, rel=0.05)
    np.testing.assert_array_equal(ds.drift, 0.0)
    again = simulate_traces(model, params, t, stim, noise_sd=0.05, seed=3)
    np.testing.assert_array_equal(ds.dff, again.dff)
    assert json.loads(ds.attrs["parameters"])[1]["influx_amplitude"] == 15.0


def test_traces_drift_is_slow_and_bounded():
    t = np.arange(1800) / 30.0
    ds = simulate_traces(single_compartment(), None, t, noise_sd=0.0, drift=0.2, seed=1)
    d = ds.drift.values[0]
    assert np.abs(d).max() == pytest.approx(0.2)
    assert d[0] == 0.0
    assert np.abs(np.diff(d)).max() < 0.2 * 12 / t.size  # no frame-to-frame jumps
    np.testing.assert_allclose(ds.dff, ds.dff_true + ds.drift)


@pytest.fixture(scope="module")
def clean_movie(tmp_path_factory):
    out = tmp_path_factory.mktemp("movie") / "m.tif"
    paths = simulate_movie(
        out,
        pumps_model(),
        stimulus=Stimulus(events=[1.0, 4.0, 4.05]),
        n_cells=4,
        shape=(48, 48),
        n_frames=200,
        chunk=64,
        noise=False,
        seed=5,
    )
    return paths


def test_movie_files_and_metadata(clean_movie):
    p = clean_movie
    with tifffile.TiffFile(p.movie) as tf:
        assert tf.is_imagej
        assert tf.imagej_metadata["finterval"] == pytest.approx(1 / 30)
        mv = tf.asarray()
    assert mv.shape == (200, 48, 48) and mv.dtype == np.uint16
    labels = tifffile.imread(p.rois)
    truth = xr.open_dataset(p.truth, engine="h5netcdf")
    for i in range(4):
        np.testing.assert_array_equal(labels == i + 1, truth.masks[i].values.astype(bool))
    np.testing.assert_allclose(Stimulus.from_csv(p.stimulus).events, [1.0, 4.0, 4.05])
    assert not list(p.movie.parent.glob("*.tmp"))


def test_undoing_true_shifts_recovers_true_traces(clean_movie):
    truth, means = _unshifted_mask_means(clean_movie)
    for i in range(4):
        expected = truth.F[i] + truth.F_neuropil[i] + truth.attrs["offset"]
        np.testing.assert_allclose(means[i], expected, atol=0.5)


def test_true_shifts_are_the_displacement_of_the_content(clean_movie):
    truth = xr.open_dataset(clean_movie.truth, engine="h5netcdf")
    mv = tifffile.imread(clean_movie.movie).astype(float)
    for k in (50, 120, 199):
        # phase_cross_correlation returns the shift that registers the moving image
        shift, _, _ = phase_cross_correlation(mv[0], mv[k], upsample_factor=20)
        np.testing.assert_allclose(
            -shift, truth.shifts.values[k] - truth.shifts.values[0], atol=0.1
        )


def test_movie_bad_input():
    with pytest.raises(ValueError, match="outside the recording"):
        simulate_movie(
            "/nonexistent/x.tif", pumps_model(), stimulus=Stimulus(events=[100.0]), n_frames=30
        )
    with pytest.raises(ValueError, match="cannot place 50 cells"):
        simulate_movie(
            "/nonexistent/x.tif",
            pumps_model(),
            stimulus=Stimulus(),
            n_cells=50,
            shape=(20, 20),
            n_frames=30,
        )


def test_camera_counts_noise_free_rounds_offsets_and_clips():
    photons = np.array([[0.4, 0.6], [-3.0, 1e6]])
    got = camera_counts(photons, None, offset=100.0, read_noise=3.0)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, [[100, 101], [100, 65535]])


def test_camera_counts_have_shot_plus_read_noise():
    """Mean offset + λ, variance λ + read² + 1/12 (rounding), per level; seeded, 4-se tolerances."""
    rng = np.random.default_rng(5)
    n = 200_000
    for lam in (0.0, 7.0, 400.0):
        got = camera_counts(np.full(n, lam), rng, offset=50.0, read_noise=3.0).astype(float)
        var = lam + 9.0 + 1.0 / 12.0
        assert got.mean() == pytest.approx(50.0 + lam, abs=4 * np.sqrt(var / n))
        # sd of a sample variance: √(2/n)·var for near-normal counts (Poisson λ ≥ 7 or read noise)
        assert got.var() == pytest.approx(var, abs=4 * np.sqrt(2.0 / n) * var + 0.02)
    a = camera_counts(np.full((4, 4), 20.0), np.random.default_rng([1, 2]))
    b = camera_counts(np.full((4, 4), 20.0), np.random.default_rng([1, 2]))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="read_noise"):
        camera_counts(np.ones(3), rng, read_noise=-1.0)
    with pytest.raises(ValueError, match="offset"):
        simulate_movie("/nonexistent/x.tif", pumps_model(), stimulus=Stimulus(), n_frames=30,
                       offset=float("nan"))  # fmt: skip


def _unshifted_mask_means(paths):
    truth = xr.open_dataset(paths.truth, engine="h5netcdf")
    mv = tifffile.imread(paths.movie).astype(float)
    back = np.stack(
        [
            np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(f), -s)).real
            for f, s in zip(mv, truth.shifts.values, strict=True)
        ]
    )
    means = np.stack([back[:, truth.masks[i].values.astype(bool)].mean(axis=1)
                      for i in range(truth.sizes["cell"])])  # fmt: skip
    return truth, means


def test_displaced_neuropil_and_its_own_events_are_in_movie_and_truth(tmp_path):
    cells = [{"influx_amplitude": a, "pmca_vmax": v} for a, v in ((8.0, 80.0), (20.0, 150.0))]
    kw = dict(stimulus=Stimulus(events=[1.0, 4.0]), n_cells=2, shape=(40, 40), n_frames=200,
              chunk=64, noise=False, seed=6, cell_params=cells)  # fmt: skip
    full = simulate_movie(tmp_path / "full.tif", pumps_model(), **kw)
    part = simulate_movie(tmp_path / "part.tif", pumps_model(), neuropil_ratio=[0.5, 0.9],
                          neuropil_events=0.5, **kw)  # fmt: skip
    t_full, _ = _unshifted_mask_means(full)
    t_part, means = _unshifted_mask_means(part)
    # the truth describes the movie: mask mean = cell + neuropil under it + offset
    np.testing.assert_allclose(means, t_part.F + t_part.F_neuropil + t_part.attrs["offset"],
                               atol=0.5)  # fmt: skip
    np.testing.assert_allclose(t_part.neuropil_ratio, [0.5, 0.9])
    np.testing.assert_allclose(t_part.influx_amplitude, [8.0, 20.0])
    # the cell displaces neuropil: under its mask (footprint ≥ 0.5) between ratio and 1
    level = [t.F_neuropil / (1.0 + t.neuropil_dff) for t in (t_part, t_full)]
    seen = (level[0] / level[1]).isel(time=0).values
    assert 0.5 < seen[0] < 0.75 and 0.9 < seen[1] < 0.97
    # the neuropil's own events change its ΔF/F, and nothing else
    assert np.abs(t_part.neuropil_dff - t_full.neuropil_dff).max() > 0.05
    np.testing.assert_array_equal(t_part.shifts, t_full.shifts)
    np.testing.assert_array_equal(t_part.dff, t_full.dff)


def test_movie_bad_neuropil_and_cell_params(tmp_path):
    kw = dict(stimulus=Stimulus(), n_cells=2, shape=(40, 40), n_frames=30)
    with pytest.raises(ValueError, match="neuropil_ratio"):
        simulate_movie(tmp_path / "a.tif", pumps_model(), neuropil_ratio=1.5, **kw)
    with pytest.raises(ValueError, match="cell_params has 1 entries for 2 cells"):
        simulate_movie(tmp_path / "b.tif", pumps_model(), cell_params=[{}], **kw)
