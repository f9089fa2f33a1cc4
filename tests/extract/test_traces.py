import warnings

import numpy as np
import pytest
import tifffile
import xarray as xr

from cainfer.extract import ExtractionWarning, extract_traces
from cainfer.io import Movie, load_movie


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_recovered_shifts_within_a_tenth_of_a_pixel(movie_with_truth):
    paths, truth = movie_with_truth
    ds = extract_traces(paths.movie, rois=paths.rois, reference_frames=50)
    # the reference is the average of the first 50 frames: shifts are relative to it
    expected = truth.shifts.values - truth.shifts.values[:50].mean(axis=0)
    np.testing.assert_allclose(ds.shifts.values, expected, atol=0.1)


def test_dff_correlates_with_truth_per_roi(movie_with_truth):
    paths, truth = movie_with_truth
    ds = extract_traces(paths.movie, rois=paths.rois, baseline_window=10.0)
    assert ds.sizes["roi"] == 10
    for i in range(10):
        r = np.corrcoef(ds.dff[i], truth.dff[i])[0, 1]
        assert r >= 0.99, (i, r)
    np.testing.assert_allclose(ds.centroid_y, truth.centroids[:, 0], atol=0.5)


def test_automatic_detection_finds_most_cells(movie_with_truth):
    paths, truth = movie_with_truth
    ds = extract_traces(paths.movie, rois="auto", baseline_window=10.0)
    found = ds.masks.values
    true_masks = truth.masks.values.astype(bool)
    best = [max(_iou(t, f) for f in found) for t in true_masks]
    assert np.mean(np.array(best) >= 0.5) >= 0.9, best
    assert "correlation_image" in ds and ds.attrs["roi_source"] == "auto"


def test_neuropil_correction_removes_known_contamination(tmp_path, rng):
    T, h, w = 400, 48, 48
    t = np.arange(T) / 20.0
    neuropil = 200.0 * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))  # surround signal
    yy, xx = np.mgrid[0:h, 0:w]
    cell = (yy - 24) ** 2 + (xx - 24) ** 2 <= 25
    frames = np.empty((T, h, w))
    frames[:] = neuropil[:, None, None]
    # the silent cell shows 0.7 of the neuropil on top of its own constant light
    frames[:, cell] = 500.0 + 0.7 * neuropil[:, None]
    tifffile.imwrite(tmp_path / "np.tif", frames.astype(np.float32))
    kw = dict(rois=cell[None], register=False, baseline="constant", frame_rate=20.0)
    corrected = extract_traces(tmp_path / "np.tif", neuropil=0.7, **kw)
    raw = extract_traces(tmp_path / "np.tif", neuropil=None, **kw)
    assert np.ptp(raw.dff.values) > 0.2
    assert np.ptp(corrected.dff.values) < 1e-5
    np.testing.assert_allclose(corrected.F_neu[0], neuropil, rtol=1e-6)
    assert not corrected.neuropil_masks.values[0][cell].any()


def test_nonpositive_baseline_warns_and_marks_rois(movie_with_truth):
    paths, _ = movie_with_truth
    with pytest.warns(ExtractionWarning, match=r"baseline F0 ≤ 0"):
        ds = extract_traces(paths.movie, rois=paths.rois, register=False, neuropil=5.0)
    assert not ds.f0_valid.values.all()
    assert not np.isinf(ds.dff.values).any()
    bad = ~ds.f0_valid.values
    assert np.isnan(ds.dff.values[bad]).any()


def test_streams_in_chunks(movie_with_truth, monkeypatch):
    paths, _ = movie_with_truth
    sizes = []
    original = Movie.read

    def spy(self, start, stop):
        sizes.append(stop - start)
        return original(self, start, stop)

    monkeypatch.setattr(Movie, "read", spy)
    extract_traces(paths.movie, rois=paths.rois, register=True, chunk=64, reference_frames=20)
    assert max(sizes) <= 64
    # one pass over the movie (registration shares it when ROIs are given) + the reference
    assert sum(sizes) == 600 + 20


def test_netcdf_round_trip_and_provenance(movie_with_truth, tmp_path):
    paths, _ = movie_with_truth
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = extract_traces(
            load_movie(paths.movie), rois=paths.rois, baseline="maximin", baseline_window=5.0
        )
    assert set(ds.dims) >= {"roi", "time", "y", "x"}
    assert ds.attrs["frame_rate"] == pytest.approx(30.0)
    assert '"method": "maximin"' in ds.attrs["baseline"]
    assert str(paths.movie) in ds.attrs["source_files"]
    ds.to_netcdf(tmp_path / "traces.nc", engine="h5netcdf")
    back = xr.open_dataset(tmp_path / "traces.nc", engine="h5netcdf").load()
    xr.testing.assert_identical(ds, back)


def test_bad_options(movie_with_truth):
    paths, truth = movie_with_truth
    with pytest.raises(
        ValueError, match="baseline 'median'; allowed: percentile, maximin, constant"
    ):
        extract_traces(paths.movie, rois=paths.rois, baseline="median")
    with pytest.raises(ValueError, match="neuropil"):
        extract_traces(paths.movie, rois=paths.rois, neuropil=-1.0)
    with pytest.raises(ValueError, match=r"rois are \(10, 10\) pixels but frames are \(96, 96\)"):
        extract_traces(paths.movie, rois=np.ones((1, 10, 10), bool))
    empty = truth.masks.values.astype(bool).copy()
    empty[3] = False
    with pytest.raises(ValueError, match=r"ROI\(s\) \[3\] are empty"):
        extract_traces(paths.movie, rois=empty)


def test_max_shift_widens_the_registration_search_for_small_frames_that_move_far(tmp_path):
    """A 40-px frame allows 4 px by default; frames moved 6 px are registered within
    that bound (wrongly, with a warning) unless ``max_shift`` is raised."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:40, 0:40]
    cell = np.exp(-((yy - 20) ** 2 + (xx - 18) ** 2) / (2 * 3.0**2))
    texture = 20 * ndimage.gaussian_filter(rng.normal(size=(40, 40)), 1.5)
    still = 200 + texture + 300 * cell
    true = np.zeros((60, 2))
    true[40:] = (6.0, -5.5)  # the stage drifts away for the last 20 frames
    frames = np.stack([ndimage.shift(still, s, order=3, mode="nearest") for s in true])
    frames += rng.normal(0, 2, frames.shape)
    tifffile.imwrite(tmp_path / "m.tif", frames.astype(np.float32))
    kw = dict(rois=(cell > 0.5)[None], neuropil=None, frame_rate=10.0, reference_frames=20)
    with pytest.warns(ExtractionWarning, match=r"m.tif: .*20 frame\(s\) .* max_shift = 4 px"):
        bounded = extract_traces(tmp_path / "m.tif", **kw)
    assert np.abs(bounded.shifts.values[40:] - true[40:]).max() > 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide = extract_traces(tmp_path / "m.tif", max_shift=8, **kw)
    np.testing.assert_allclose(wide.shifts.values, true, atol=0.1)
    assert '"max_shift_px": 8.0' in wide.attrs["registration"]
    for bad in (0, -2.0, float("inf"), True):
        with pytest.raises(ValueError, match="max_shift"):
            extract_traces(tmp_path / "no_such.tif", max_shift=bad, **kw)
