"""NWB files: traces written and read back, files in other tools' layouts, nwbinspector."""

import json
import os
from datetime import UTC, datetime

import numpy as np
import pytest
import xarray as xr

from cainfer.extract import extract_traces, load_nwb, load_traces, trace_format, write_nwb
from cainfer.forward import Stimulus

pynwb = pytest.importorskip("pynwb")
SUBJECT = {"subject_id": "m1", "species": "Mus musculus", "sex": "F", "age": "P90D"}


def _critical(path):
    from nwbinspector import Importance, inspect_nwbfile

    return [m for m in inspect_nwbfile(nwbfile_path=str(path))
            if m.importance == Importance.CRITICAL]  # fmt: skip


def test_traces_written_to_nwb_read_back_and_pass_nwbinspector(movie_with_truth, tmp_path):
    paths, _ = movie_with_truth
    ds = extract_traces(paths.movie, rois=paths.rois, baseline_window=10.0)
    stim = Stimulus.from_csv(paths.stimulus)
    names = ("pmca_vmax", "influx_amplitude")
    summary = [{"recording": "rec", "roi": int(r), "parameter": p, "mean": 1.0 + i, "sd": 0.1}
               for i, r in enumerate(ds.roi.values) for p in names]  # fmt: skip
    out = write_nwb(ds, tmp_path / "rec.nwb", stimulus=stim, summary=summary, subject=SUBJECT,
                    indicator="OGB-1")  # fmt: skip
    assert out == tmp_path / "rec.nwb" and [p.name for p in tmp_path.iterdir()] == ["rec.nwb"]
    assert _critical(out) == []
    assert trace_format(out) == "nwb"
    back = load_traces(out, baseline_window=10.0)
    np.testing.assert_array_equal(back.roi, ds.roi)
    np.testing.assert_allclose(back.F, ds.F, rtol=1e-12)
    np.testing.assert_allclose(back.F_neu, ds.F_neu, rtol=1e-12)
    np.testing.assert_allclose(back.dff, ds.dff, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(back.masks, ds.masks)
    assert back.attrs["frame_rate"] == pytest.approx(ds.attrs["frame_rate"])
    assert json.loads(back.attrs["neuropil_prior"]) == [0.7, 0.2]
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        np.testing.assert_allclose(nwb.stimulus["stimulus_events"].timestamps[:], stim.events)
        table = nwb.processing["misc"]["posterior_summaries"].to_dataframe()
        assert len(table) == 2 * ds.sizes["roi"] and set(table.parameter) == {
            "pmca_vmax", "influx_amplitude"}  # fmt: skip
        assert nwb.subject.species == "Mus musculus"


def _session(indicator, rate):
    """An NWB file with one imaging plane, an ``ophys`` module and an empty segmentation."""
    from pynwb.ophys import ImageSegmentation, OpticalChannel

    nwb = pynwb.NWBFile(session_description="s", identifier="x",
                        session_start_time=datetime(2024, 1, 1, tzinfo=UTC))  # fmt: skip
    dev = nwb.create_device(name="Microscope")
    plane = nwb.create_imaging_plane(
        name="ImagingPlane", optical_channel=OpticalChannel(name="c", description="green",
                                                            emission_lambda=520.0),
        description="p", device=dev, excitation_lambda=920.0, indicator=indicator,
        location="V1", imaging_rate=rate,
    )  # fmt: skip
    ophys = nwb.create_processing_module(name="ophys", description="optical physiology")
    seg = ImageSegmentation()
    ophys.add(seg)
    ps = seg.create_plane_segmentation(name="PlaneSegmentation", description="cells",
                                       imaging_plane=plane)  # fmt: skip
    return nwb, plane, ophys, ps


def _suite2p_style_nwb(path, F, Fneu, pixels, fs, *, dff_only=False):
    """An NWB file as Suite2p's exporter lays one out: pixel masks, Fluorescence/Neuropil."""
    from pynwb.ophys import DfOverF, Fluorescence

    nwb, _, ophys, ps = _session("GCaMP6s", fs)
    for pix in pixels:
        ps.add_roi(pixel_mask=[(int(q[1]), int(q[0]), q[2] if len(q) > 2 else 1.0) for q in pix])
    region = ps.create_roi_table_region(region=list(range(len(pixels))), description="all")
    t = np.arange(F.shape[1]) / fs
    if dff_only:
        dfof = DfOverF()
        ophys.add(dfof)
        dfof.create_roi_response_series(name="RoiResponseSeries", data=F.T, rois=region,
                                        unit="n.a.", timestamps=t)  # fmt: skip
    else:
        fl = Fluorescence()
        ophys.add(fl)
        fl.create_roi_response_series(name="Fluorescence", data=F.T, rois=region,
                                      unit="lumens", timestamps=t)  # fmt: skip
        fl.create_roi_response_series(name="Neuropil", data=Fneu.T, rois=region,
                                      unit="lumens", timestamps=t)  # fmt: skip
        dec = Fluorescence(name="Deconvolved")
        ophys.add(dec)
        dec.create_roi_response_series(name="Deconvolved", data=np.zeros_like(F.T), rois=region,
                                       unit="lumens", timestamps=t)  # fmt: skip
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_an_nwb_file_in_suite2p_layout_loads_its_raw_traces_and_pixel_masks(tmp_path, rng):
    T, fs = 240, 15.0
    Fneu = 100 + 5 * rng.standard_normal((2, T))
    F = 300 + 0.5 * Fneu
    pixels = [[(2, 3), (2, 4), (3, 3)], [(10, 20), (11, 20), (11, 21), (12, 21)]]
    _suite2p_style_nwb(tmp_path / "s2p.nwb", F, Fneu, pixels, fs)
    ds = load_nwb(tmp_path / "s2p.nwb", neuropil=0.5, baseline="constant")
    np.testing.assert_allclose(ds.F, F)
    np.testing.assert_allclose(ds.F_neu, Fneu)
    assert np.abs(ds.dff.values).max() < 1e-12  # F − 0.5·F_neu is flat
    assert ds.attrs["frame_rate"] == pytest.approx(fs) and ds.attrs["nwb_series"] == "Fluorescence"
    for k, pix in enumerate(pixels):
        assert sorted(zip(*np.nonzero(ds.masks.values[k]), strict=True)) == sorted(pix)
    # the same pixel masks as ROIs for a movie of that shape
    from cainfer.io import read_rois

    rois = read_rois(tmp_path / "s2p.nwb", shape=(32, 32))
    for k, pix in enumerate(pixels):
        assert sorted(zip(*np.nonzero(rois[k]), strict=True)) == sorted(pix)
    with pytest.raises(ValueError, match="pixel masks need the frame shape"):
        read_rois(tmp_path / "s2p.nwb")
    # ΔF/F alone: fitted as ΔF/F
    _suite2p_style_nwb(tmp_path / "dff.nwb", F / 300 - 1, None, pixels, fs, dff_only=True)
    only = load_traces(tmp_path / "dff.nwb")
    assert "F" not in only and only.dff.shape == (2, T)


def test_pixel_masks_leave_out_pixels_of_zero_weight_in_both_readers(tmp_path, rng):
    """A (x, y, weight) row of weight 0 is not in the ROI: the traces and the ROI reader agree."""
    T, fs = 60, 15.0
    F, Fneu = 300 + rng.standard_normal((2, T)), 100 + rng.standard_normal((2, T))
    pixels = [[(2, 3), (2, 4, 0.0), (3, 3, 0.5)], [(10, 20), (11, 20, 0.0)]]
    inside = [[(2, 3), (3, 3)], [(10, 20)]]
    _suite2p_style_nwb(tmp_path / "w.nwb", F, Fneu, pixels, fs)
    ds = load_nwb(tmp_path / "w.nwb", neuropil=0.5, baseline="constant")
    from cainfer.io import read_rois

    rois = read_rois(tmp_path / "w.nwb", shape=(24, 24))
    for k, pix in enumerate(inside):
        assert sorted(zip(*np.nonzero(ds.masks.values[k]), strict=True)) == sorted(pix)
        assert sorted(zip(*np.nonzero(rois[k]), strict=True)) == sorted(pix)
    with pytest.raises(ValueError, match=r"w\.nwb.*ROI 1 has pixel \(x=20, y=10\) outside the 8x8"):
        read_rois(tmp_path / "w.nwb", shape=(8, 8))


def _two_plane_nwb(path, rng, T=60, fs=15.0):
    """Two planes (segmentations of 2 and 3 ROIs), each with its raw series and neuropil."""
    from pynwb.ophys import Fluorescence

    nwb, plane, ophys, ps0 = _session("GCaMP6s", fs)
    ps1 = ophys["ImageSegmentation"].create_plane_segmentation(
        name="Plane1", description="cells", imaging_plane=plane
    )
    fl = Fluorescence()
    ophys.add(fl)
    t = np.arange(T) / fs
    out = {}
    for k, (ps, n) in enumerate(((ps0, 2), (ps1, 3))):
        for i in range(n):
            ps.add_roi(pixel_mask=[(i, 5 * k, 1.0), (i, 5 * k + 1, 1.0)])
        region = ps.create_roi_table_region(region=list(range(n)), description="all")
        F, Fneu = 300 + 100 * k + rng.standard_normal((n, T)), 50 + rng.standard_normal((n, T))
        fl.create_roi_response_series(name=f"Plane{k}", data=F.T, rois=region, unit="lumens",
                                      timestamps=t)  # fmt: skip
        region = ps.create_roi_table_region(region=list(range(n)), description="all")
        fl.create_roi_response_series(name=f"Neuropil{k}", data=Fneu.T, rois=region,
                                      unit="lumens", timestamps=t)  # fmt: skip
        out[k] = (F, Fneu)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return out


def test_an_nwb_file_with_several_raw_series_is_read_by_the_one_named(tmp_path, rng):
    truth = _two_plane_nwb(tmp_path / "planes.nwb", rng)
    with pytest.raises(ValueError, match=r"2 raw fluorescence series \(Fluorescence/Plane0, "
                       r"Fluorescence/Plane1\); choose one with series="):  # fmt: skip
        load_nwb(tmp_path / "planes.nwb")
    for name, k in (("Plane1", 1), ("Fluorescence/Plane0", 0)):
        ds = load_nwb(tmp_path / "planes.nwb", series=name, baseline="constant")
        np.testing.assert_allclose(ds.F, truth[k][0])
        np.testing.assert_allclose(ds.F_neu, truth[k][1])  # that plane's neuropil
        assert ds.sizes["roi"] == truth[k][0].shape[0]
        assert ds.attrs["nwb_series"] == f"Plane{k}"
    # through load_traces, as the pipeline reads it
    assert load_traces(tmp_path / "planes.nwb", series="Plane1").sizes["roi"] == 3
    # and as `cainfer fit --series` reads it
    from cainfer.cli import _read_traces

    read = _read_traces(tmp_path / "planes.nwb", "nwb", "Plane1")
    np.testing.assert_allclose(read.F, truth[1][0])
    # and as a pipeline config names it
    from cainfer.pipeline import load_config

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[inputs]\nfiles = ["{tmp_path / "planes.nwb"}"]\nformat = "nwb"\n'
                   'series = "Plane1"\n[stimulus]\nevents = [1.0]\n')  # fmt: skip
    opts = load_config(cfg).import_options()
    assert opts["series"] == "Plane1"
    np.testing.assert_allclose(load_traces(tmp_path / "planes.nwb", **opts).F, truth[1][0])
    with pytest.raises(ValueError, match=r"no RoiResponseSeries named 'Plane2'"):
        load_nwb(tmp_path / "planes.nwb", series="Plane2")
    with pytest.raises(ValueError, match="is a neuropil trace"):
        load_nwb(tmp_path / "planes.nwb", series="Neuropil0")
    with pytest.raises(ValueError, match="name of a RoiResponseSeries"):
        load_nwb(tmp_path / "planes.nwb", series=3)


def test_nwb_problems_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_nwb(tmp_path / "none.nwb")
    (tmp_path / "text.nwb").write_text("not NWB")
    with pytest.raises(ValueError, match=r"text\.nwb: not an NWB file"):
        load_nwb(tmp_path / "text.nwb")
    nwb = pynwb.NWBFile(session_description="s", identifier="x",
                        session_start_time=datetime(2024, 1, 1, tzinfo=UTC))  # fmt: skip
    with pynwb.NWBHDF5IO(str(tmp_path / "empty.nwb"), "w") as io:
        io.write(nwb)
    with pytest.raises(ValueError, match=r"empty\.nwb: no 'ophys' processing module"):
        load_nwb(tmp_path / "empty.nwb")
    ds = xr.Dataset({"dff": (("roi", "time"), np.zeros((1, 5)))},
                    coords={"roi": [0], "time": np.arange(5) / 10.0})  # fmt: skip
    with pytest.raises(ValueError, match="traces need 'masks'"):
        write_nwb(ds, tmp_path / "x.nwb")


def _movie_nwb(path, frames, masks, rate, *, external=None):
    """An NWB file holding a TwoPhotonSeries (or one naming TIFF files) and its ROIs."""
    from pynwb.ophys import TwoPhotonSeries

    nwb, plane, _, ps = _session("OGB-1", rate)
    if external is None:
        series = TwoPhotonSeries(name="TwoPhotonSeries", data=frames, imaging_plane=plane,
                                 rate=rate, unit="n.a.")  # fmt: skip
    else:
        series = TwoPhotonSeries(name="TwoPhotonSeries", external_file=external, format="external",
                                 starting_frame=[0], imaging_plane=plane, rate=rate,
                                 unit="n.a.", dimension=list(frames.shape[1:]),
                                 num_samples=frames.shape[0])  # fmt: skip
    nwb.add_acquisition(series)
    for m in masks:
        ps.add_roi(image_mask=m.astype(float))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_a_movie_and_its_rois_in_nwb_extract_as_from_tiff(movie_with_truth, tmp_path):
    from cainfer.io import MovieError, load_movie, read_rois

    paths, _ = movie_with_truth
    with load_movie(paths.movie) as movie:
        frames, rate = movie.read(0, len(movie)), movie.frame_rate
    masks = read_rois(paths.rois)
    path = _movie_nwb(tmp_path / "movie.nwb", frames, masks, rate)
    with load_movie(path) as movie:
        assert movie.shape == frames.shape and movie.frame_rate == pytest.approx(rate)
        np.testing.assert_array_equal(movie.read(100, 164), frames[100:164])
    np.testing.assert_array_equal(read_rois(path, shape=frames.shape[1:]), masks)
    kw = dict(baseline_window=10.0, chunk=100)
    want = extract_traces(paths.movie, rois=paths.rois, **kw)
    got = extract_traces(path, rois=path, **kw)
    np.testing.assert_allclose(got.F, want.F, rtol=1e-12)
    np.testing.assert_allclose(got.dff, want.dff, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["shifts"], want["shifts"], atol=1e-12)
    # a series that names its TIFF file: the frames come from there, at the series' rate
    ext = _movie_nwb(tmp_path / "ext.nwb", frames, masks, 2 * rate,
                     external=[os.path.relpath(paths.movie, tmp_path)])  # fmt: skip
    with load_movie(ext) as movie:
        assert movie.frame_rate == pytest.approx(2 * rate)
        np.testing.assert_array_equal(movie.read(0, 10), frames[:10])
    # a file of traces only is not a movie
    traces_only = write_nwb(want, tmp_path / "traces.nwb", subject=SUBJECT)
    with pytest.raises(MovieError, match="holds no TwoPhotonSeries"):
        load_movie(traces_only)
