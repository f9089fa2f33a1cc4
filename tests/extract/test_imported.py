"""Suite2p plane folders and CaImAn HDF5 files read as traces, against what they were built from.

The fixtures are written in each package's documented layout: Suite2p's
``F.npy``/``Fneu.npy``/``iscell.npy`` and the pickled ``stat.npy``/``ops.npy``;
CaImAn's ``CNMF.save`` HDF5 (its estimates and parameters as groups, sparse
matrices as ``data``/``indices``/``indptr``/``shape``, None as the string
``"NoneType"``).
"""

import json

import h5py
import numpy as np
import pytest
from scipy import sparse

from cainfer.extract import extract_traces
from cainfer.extract.imported import load_caiman, load_suite2p, load_traces, trace_format
from cainfer.extract.traces import baseline_and_dff


def write_suite2p(plane, F, Fneu, masks, *, fs, iscell=None, neucoeff=0.7, mean=None):
    """A Suite2p plane folder holding these traces and ROIs."""
    plane.mkdir(parents=True, exist_ok=True)
    n, ly, lx = masks.shape
    iscell = np.ones((n, 2)) if iscell is None else iscell
    stat = []
    for m in masks:
        ys, xs = np.nonzero(m)
        stat.append({"ypix": ys.astype(np.int32), "xpix": xs.astype(np.int32),
                     "lam": np.full(ys.size, 1.0 / ys.size, np.float32), "npix": ys.size,
                     "med": [int(np.median(ys)), int(np.median(xs))],
                     "overlap": np.zeros(ys.size, bool)})  # fmt: skip
    mean = np.zeros((ly, lx), np.float32) if mean is None else mean
    ops = {"fs": fs, "Ly": ly, "Lx": lx, "nframes": F.shape[1], "neucoeff": neucoeff,
           "meanImg": mean, "tau": 1.0}  # fmt: skip
    np.save(plane / "F.npy", F.astype(np.float32))
    np.save(plane / "Fneu.npy", Fneu.astype(np.float32))
    np.save(plane / "spks.npy", np.zeros_like(F, dtype=np.float32))
    np.save(plane / "iscell.npy", iscell)
    np.save(plane / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(plane / "ops.npy", np.array(ops, dtype=object), allow_pickle=True)


def _save(h5, path, item):
    """As CaImAn's ``recursively_save_dict_contents_to_group``."""
    if isinstance(item, dict):
        for k, v in item.items():
            _save(h5, f"{path}/{k}", v)
    elif sparse.issparse(item):
        csc = sparse.csc_matrix(item)
        for k in ("data", "indptr", "indices"):
            h5[f"{path}/{k}"] = getattr(csc, k)
        h5[f"{path}/shape"] = csc.shape
    elif item is None:
        h5[path] = "NoneType"
    else:
        h5[path] = item


def write_caiman(path, A, C, YrA, b, f, dims, *, fr, idx_components=None):
    """A CaImAn results file as ``CNMF.save`` writes one."""
    est = {"A": sparse.csc_matrix(A), "C": C, "YrA": YrA, "b": b, "f": f, "S": np.zeros_like(YrA),
           "F_dff": None, "idx_components": idx_components, "idx_components_bad": None,
           "dims": np.array(dims)}  # fmt: skip
    with h5py.File(path, "w") as h5:
        _save(h5, "/estimates", est)
        _save(h5, "/params", {"data": {"fr": float(fr), "dims": np.array(dims),
                                       "fnames": np.array([b"movie.tif"])}})  # fmt: skip
        _save(h5, "/dims", np.array(dims))
        _save(h5, "/dview", None)


def test_a_suite2p_folder_of_extracted_traces_reads_back_as_the_same_traces(
    movie_with_truth, tmp_path
):
    """extract_traces → Suite2p layout → load_suite2p: the same F, neuropil, F0, ΔF/F, ROIs."""
    paths, _ = movie_with_truth
    ds = extract_traces(paths.movie, rois=paths.rois, baseline_window=10.0)
    n = ds.sizes["roi"]
    iscell = np.column_stack([np.arange(n) % 4 != 1, np.linspace(0.2, 0.9, n)]).astype(float)
    write_suite2p(tmp_path / "suite2p" / "plane0", ds.F.values, ds.F_neu.values,
                  ds.masks.values, fs=ds.attrs["frame_rate"], iscell=iscell)  # fmt: skip
    assert trace_format(tmp_path) == "suite2p"
    got = load_traces(tmp_path, baseline_window=10.0)
    with pytest.raises(ValueError, match=r"options \['series'\] do not apply to suite2p traces"):
        load_traces(tmp_path, series="Plane1")  # an NWB option, named rather than a TypeError
    keep = np.flatnonzero(iscell[:, 0] > 0)
    assert got.roi.values.tolist() == keep.tolist()  # Suite2p's indices, the cells only
    # float32 on disk: F to its rounding, F0 and ΔF/F computed again from it
    np.testing.assert_allclose(got.F.values, ds.F.values[keep], rtol=1e-6)
    np.testing.assert_allclose(got.F_neu.values, ds.F_neu.values[keep], rtol=1e-6)
    np.testing.assert_allclose(got.F0.values, ds.F0.values[keep], rtol=1e-5)
    np.testing.assert_allclose(got.dff.values, ds.dff.values[keep], atol=1e-4)
    np.testing.assert_array_equal(got.masks.values, ds.masks.values[keep])
    np.testing.assert_allclose(got.centroid_y, ds.centroid_y[keep])
    np.testing.assert_allclose(got.time, ds.time, rtol=1e-12)
    np.testing.assert_allclose(got.iscell_probability, iscell[keep, 1])
    assert got.attrs["source_format"] == "suite2p"
    assert json.loads(got.attrs["neuropil_prior"]) == [0.7, 0.2]
    assert load_suite2p(tmp_path, cells_only=False).sizes["roi"] == n


def test_suite2p_neucoeff_sets_the_ratio_and_its_prior(tmp_path, rng):
    T = 300
    Fneu = 100 + 10 * rng.standard_normal((2, T))
    F = 300 + 0.5 * Fneu
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:6, 3:8] = masks[1, 10:15, 20:26] = True
    write_suite2p(tmp_path, F, Fneu, masks, fs=15.0, neucoeff=0.5)
    ds = load_suite2p(tmp_path, baseline="constant")
    # F − 0.5·F_neu is flat: ΔF/F 0 to float32 rounding
    assert np.abs(ds.dff.values).max() < 1e-6
    assert json.loads(ds.attrs["neuropil_prior"]) == [0.5, 0.2]
    assert ds.attrs["frame_rate"] == 15.0 and ds.time.values[-1] == pytest.approx((T - 1) / 15)
    np.testing.assert_array_equal(ds.n_pixels, [20, 30])
    ds = load_suite2p(tmp_path, neuropil=0.0, baseline="constant", frame_rate=30.0)
    assert np.abs(ds.dff.values).max() > 0.01 and ds.attrs["frame_rate"] == 30.0


def test_suite2p_problems_name_the_file(tmp_path, rng):
    with pytest.raises(ValueError, match="no such folder"):
        load_suite2p(tmp_path / "nothing")
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :2, :2] = masks[1, 4:, 4:] = True
    F = rng.uniform(100, 200, (2, 50))
    write_suite2p(tmp_path / "p", F, F, masks, fs=10.0)
    (tmp_path / "p" / "iscell.npy").unlink()
    with pytest.raises(ValueError, match=r"p: not a Suite2p plane folder, missing iscell\.npy"):
        load_suite2p(tmp_path / "p")
    write_suite2p(tmp_path / "q", F, F[:, :40], masks, fs=10.0)
    with pytest.raises(ValueError, match=r"Fneu\.npy: shape \(2, 40\), F\.npy has \(2, 50\)"):
        load_suite2p(tmp_path / "q")
    write_suite2p(tmp_path / "r", F, F, masks, fs=0.0)
    with pytest.raises(ValueError, match=r"ops\.npy: no frame rate \(fs\); give frame_rate"):
        load_suite2p(tmp_path / "r")
    write_suite2p(tmp_path / "s", F, F, masks, fs=10.0, iscell=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="no ROI is labelled a cell"):
        load_suite2p(tmp_path / "s")
    bad = F.copy()
    bad[1, 7] = np.nan
    write_suite2p(tmp_path / "t", bad, F, masks, fs=10.0)
    with pytest.raises(ValueError, match="ROI 1 is not finite at frame 7"):
        load_suite2p(tmp_path / "t")
    with pytest.raises(ValueError, match="baseline 'median'; allowed"):
        load_suite2p(tmp_path / "p", baseline="median")


def _caiman_scene(rng, dims=(12, 20), T=200):
    """Three non-overlapping footprints, one background, a movie Y = A·C + b·f + noise."""
    yy, xx = np.mgrid[0 : dims[0], 0 : dims[1]]
    centres = [(3, 4), (8, 10), (4, 16)]
    foot = [np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0) for cy, cx in centres]
    foot = [np.where(f > 0.1, f, 0.0) for f in foot]
    A = np.stack([f.reshape(-1, order="F") for f in foot], axis=1)  # CaImAn: Fortran order
    A /= np.sqrt((A**2).sum(axis=0))  # unit-norm columns, as CaImAn keeps them
    t = np.arange(T)
    C = np.stack([20 * np.exp(-((t - s) % 60) / 8.0) for s in (10, 30, 45)])
    b = (50 + 10 * rng.uniform(size=dims)).reshape(-1, 1, order="F")
    f = (1 + 0.1 * np.sin(t / 30.0))[None, :]
    Y = A @ C + b @ f + rng.normal(0, 0.5, (A.shape[0], T))
    YrA = (A.T @ (Y - A @ C - b @ f)) / (A**2).sum(axis=0)[:, None]
    return A, C, YrA, b, f, Y, foot


def test_a_caiman_file_gives_each_roi_its_footprint_weighted_fluorescence(tmp_path, rng):
    A, C, YrA, b, f, Y, foot = _caiman_scene(rng)
    dims = (12, 20)
    write_caiman(tmp_path / "cnm.hdf5", A, C, YrA, b, f, dims, fr=20.0)
    assert trace_format(tmp_path / "cnm.hdf5") == "caiman"
    ds = load_traces(tmp_path / "cnm.hdf5")
    with pytest.raises(ValueError, match=r"options \['neuropil'\] do not apply to caiman"):
        load_traces(tmp_path / "cnm.hdf5", neuropil=0.7)
    # the footprint-weighted mean of the movie, and its background's variation
    # (footprints apart: exact)
    want_F = (A.T @ Y) / A.sum(axis=0)[:, None]
    bg = (A.T @ (b @ f)) / A.sum(axis=0)[:, None]
    want_bg = bg - np.median(bg, axis=1, keepdims=True)
    np.testing.assert_allclose(ds.F.values, want_F, rtol=1e-10)
    np.testing.assert_allclose(ds.F_neu.values, want_bg, rtol=1e-10, atol=1e-10)
    _, dff, _ = baseline_and_dff(want_F, want_bg, 1.0, 20.0)
    np.testing.assert_allclose(ds.dff.values, dff, rtol=1e-10, atol=1e-12)
    # CaImAn's own ΔF/F (detrend_df_f): (F − F_d)/(B + F_d), F_d the cell's baseline
    Fc = (A.T @ A).diagonal()[:, None] * (C + YrA) / A.sum(axis=0)[:, None]
    Fd = np.percentile(Fc, 8, axis=1, keepdims=True)
    theirs = (Fc - Fd) / (np.median(bg, axis=1, keepdims=True) + Fd)
    np.testing.assert_allclose(ds.dff.values, theirs, atol=0.02 * np.abs(theirs).max())
    for k in range(3):  # pixels in Fortran order: each mask lies on its footprint
        np.testing.assert_array_equal(ds.masks.values[k], foot[k] > 0)
    assert ds.attrs["frame_rate"] == 20.0 and ds.attrs["source_format"] == "caiman"
    assert json.loads(ds.attrs["neuropil_prior"]) == [1.0, 0.1]
    # accepted components only, under their CaImAn indices
    write_caiman(tmp_path / "acc.hdf5", A, C, YrA, b, f, dims, fr=20.0, idx_components=[2, 0])
    acc = load_caiman(tmp_path / "acc.hdf5")
    assert acc.roi.values.tolist() == [0, 2]
    np.testing.assert_allclose(acc.F.values, want_F[[0, 2]], rtol=1e-10)
    assert load_caiman(tmp_path / "acc.hdf5", accepted_only=False).sizes["roi"] == 3


def test_caiman_problems_name_the_file(tmp_path, rng):
    A, C, YrA, b, f, _, _ = _caiman_scene(rng)
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = 1
    assert trace_format(tmp_path / "other.h5") == "netcdf"
    with pytest.raises(ValueError, match="no 'estimates' group; not a CaImAn results file"):
        load_caiman(tmp_path / "other.h5")
    write_caiman(tmp_path / "noc.hdf5", A, None, YrA, b, f, (12, 20), fr=20.0)
    with pytest.raises(ValueError, match="estimates/C missing"):
        load_caiman(tmp_path / "noc.hdf5")
    write_caiman(tmp_path / "dims.hdf5", A, C, YrA, b, f, (10, 20), fr=20.0)
    with pytest.raises(ValueError, match="no frame size"):
        load_caiman(tmp_path / "dims.hdf5")
    write_caiman(tmp_path / "fr.hdf5", A, C, YrA, b, f, (12, 20), fr=0.0)
    with pytest.raises(ValueError, match=r"no frame rate \(params/data/fr\)"):
        load_caiman(tmp_path / "fr.hdf5")
    assert load_caiman(tmp_path / "fr.hdf5", frame_rate=5.0).attrs["frame_rate"] == 5.0
    with pytest.raises(ValueError, match=r"other\.h5: no 'dff' variable"):
        load_traces(tmp_path / "other.h5")
    (tmp_path / "text.nc").write_text("not a file of traces")
    with pytest.raises(ValueError, match=r"text\.nc: not a NetCDF traces file"):
        load_traces(tmp_path / "text.nc")
    with pytest.raises(ValueError, match="format 'tiff'; allowed"):
        load_traces(tmp_path / "other.h5", format="tiff")
