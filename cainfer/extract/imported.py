"""Traces from other tools' results: Suite2p plane folders and CaImAn HDF5 files.

Each loader returns the traces Dataset :func:`cainfer.extract_traces` returns
(``F``, ``F_neu``, ``F0``, ``dff`` over ``(roi, time)``, ``masks``, per-ROI
centroids and pixel counts), so that a fit sees the raw fluorescence and the
background under the cell and infers the contamination ratio, rather than
taking the other tool's ΔF/F as exact. The Dataset's ``neuropil_prior``
attribute (JSON ``[mean, sd]``) centres the fit's prior on the ratio where
the tool's own convention differs from the usual 0.7.

Formats, as the packages write them:

- **Suite2p** (Pachitariu et al. 2017, doi:10.1101/061507), a plane folder
  (``suite2p/plane0``): ``F.npy`` and ``Fneu.npy`` ``(roi, time)``,
  ``iscell.npy`` ``(roi, 2)`` (label, probability), ``stat.npy`` (one dict per
  ROI with ``ypix``, ``xpix``, ``npix``) and ``ops.npy`` (a dict with the frame
  rate ``fs``, the frame size ``Ly``, ``Lx``, the mean image ``meanImg`` and
  the neuropil coefficient ``neucoeff``).
- **CaImAn** (Giovannucci et al. 2019, doi:10.7554/eLife.38173), the HDF5
  file ``CNMF.save`` writes: ``estimates/A`` (footprints, a sparse CSC matrix
  stored as ``data``, ``indices``, ``indptr``, ``shape``; pixels in Fortran
  order), ``estimates/C`` (denoised traces), ``estimates/YrA`` (residuals),
  ``estimates/b`` and ``estimates/f`` (background), ``estimates/idx_components``
  (accepted components), ``dims`` and ``params/data/fr`` (frame rate).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from scipy import sparse

from cainfer.extract.baseline import BASELINE_METHODS, BaselineMethod
from cainfer.extract.traces import baseline_and_dff

TraceFormat = Literal["auto", "netcdf", "suite2p", "caiman", "nwb"]
TRACE_FORMATS: tuple[str, ...] = ("auto", "netcdf", "suite2p", "caiman", "nwb")
#: the files a Suite2p plane folder needs
SUITE2P_FILES = ("F.npy", "Fneu.npy", "iscell.npy", "stat.npy", "ops.npy")
#: prior of the ratio of CaImAn's background under a footprint: the background is
#: fitted, so the ratio is 1 up to the background model's error
CAIMAN_NEUROPIL_PRIOR = (1.0, 0.1)
#: prior sd of the ratio around a tool's own coefficient (Suite2p's ``neucoeff``, the
#: ratio an NWB file's traces are read with), as around the usual 0.7
NEUROPIL_PRIOR_SD = 0.2


def trace_format(path: str | os.PathLike[str]) -> str:
    """Which traces file ``path`` is: ``"suite2p"``, ``"caiman"``, ``"nwb"`` or ``"netcdf"``.

    A folder holding ``F.npy`` and ``stat.npy`` (or holding ``suite2p/plane0``)
    is a Suite2p plane; an HDF5 file with an ``estimates`` group is CaImAn's,
    one with an ``nwb_version`` attribute an NWB file; any other file is taken
    for a NetCDF traces file.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "F.npy").is_file() or (p / "stat.npy").is_file():
            return "suite2p"
        if (p / "suite2p" / "plane0").is_dir():
            return "suite2p"
        raise ValueError(
            f"{p}: a folder, but not a Suite2p plane folder (no F.npy or stat.npy, no "
            "suite2p/plane0)"
        )
    if not p.is_file():
        raise ValueError(f"{p}: no such file or folder")
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        import h5py

        with h5py.File(p, "r") as h5:
            if "estimates" in h5:
                return "caiman"
            if "nwb_version" in h5.attrs:
                return "nwb"
    return "netcdf"


def load_traces(
    path: str | os.PathLike[str], *, format: TraceFormat = "auto", **options: Any
) -> xr.Dataset:
    """Traces of a recording from a cainfer NetCDF file, a Suite2p folder or a CaImAn file.

    Parameters
    ----------
    path : path
        A traces NetCDF file (``cainfer extract``), a Suite2p plane folder (or
        the folder holding ``suite2p/plane0``), a CaImAn HDF5 results file or
        an NWB file with ROI responses.
    format : {"auto", "netcdf", "suite2p", "caiman", "nwb"}
        ``"auto"`` tells them apart by their content (:func:`trace_format`).
    **options
        Passed to :func:`load_suite2p`, :func:`load_caiman` or
        :func:`cainfer.extract.nwb.load_nwb`.

    Returns
    -------
    xarray.Dataset
        As :func:`cainfer.extract_traces` returns.
    """
    if format not in TRACE_FORMATS:
        raise ValueError(f"format {format!r}; allowed: {', '.join(TRACE_FORMATS)}")
    kind = trace_format(path) if format == "auto" else format
    if kind in ("suite2p", "caiman", "nwb"):
        loader: Callable[..., xr.Dataset]
        if kind == "nwb":
            from cainfer.extract.nwb import load_nwb  # imports back from this module

            loader = load_nwb
        else:
            loader = load_suite2p if kind == "suite2p" else load_caiman
        known = [
            name
            for name, par in inspect.signature(loader).parameters.items()
            if par.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        unknown = sorted(k for k in options if k not in known)
        if unknown:
            raise ValueError(f"{path}: options {unknown} do not apply to {kind} traces")
        ds = loader(path, **options)
    else:
        if options:
            raise ValueError(f"{path}: options {sorted(options)} apply to imported traces only")
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such file")
        try:
            with xr.open_dataset(path, engine="h5netcdf") as opened:
                ds = opened.load()
        except Exception as e:  # h5py/h5netcdf raise OSError, ValueError or their own types
            why = f"{type(e).__name__}: {e}"
            raise ValueError(f"{path}: not a NetCDF traces file ({why})") from None
    if "dff" not in ds:
        raise ValueError(
            f"{path}: no 'dff' variable; a traces file from cainfer extract holds dff (and F, "
            f"F_neu, F0) over (roi, time); this one holds {sorted(map(str, ds.data_vars))}"
        )
    if ds["dff"].dims != ("roi", "time"):
        raise ValueError(f"{path}: 'dff' has dimensions {ds['dff'].dims}; expected (roi, time)")
    if ds.sizes["roi"] == 0 or ds.sizes["time"] < 2:
        raise ValueError(f"{path}: {ds.sizes['roi']} ROIs × {ds.sizes['time']} frames")
    return ds


def load_suite2p(
    folder: str | os.PathLike[str],
    *,
    cells_only: bool = True,
    neuropil: float | None = None,
    dark_level: float = 0.0,
    baseline: BaselineMethod = "percentile",
    baseline_window: float = 60.0,
    baseline_percentile: float = 8.0,
    baseline_sigma: float = 1.0,
    frame_rate: float | None = None,
) -> xr.Dataset:
    """The traces of a Suite2p plane folder, as :func:`cainfer.extract_traces` returns them.

    ``stat.npy`` and ``ops.npy`` are pickled Python objects, which numpy
    loads only when told to (``allow_pickle``): load folders you trust, as
    Suite2p itself does.

    Parameters
    ----------
    folder : path
        The plane folder (``.../suite2p/plane0``), or a folder holding
        ``suite2p/plane0``.
    cells_only : bool
        Keep the ROIs ``iscell.npy`` labels as cells (True) or all of them.
        The ROI labels are Suite2p's indices either way.
    neuropil : float, optional
        Neuropil ratio r of the ΔF/F computed here (``F − r·F_neu``) and the
        centre of the fit's prior on it; default ``ops["neucoeff"]`` (0.7
        when absent).
    dark_level : float
        Counts a pixel reads with no light, subtracted from ``F`` and
        ``F_neu`` (Suite2p does not subtract it).
    baseline, baseline_window, baseline_percentile, baseline_sigma
        The baseline F0 (see :func:`cainfer.extract.baseline`; window and
        sigma in s).
    frame_rate : float, optional
        Frames per second; default ``ops["fs"]``.

    Returns
    -------
    xarray.Dataset
        ``F``, ``F_neu`` (counts), ``F0``, ``dff`` over ``(roi, time)``,
        ``masks`` ``(roi, y, x)``, ``mean_image``, ``n_pixels``, ``f0_valid``,
        ``iscell_probability``; attrs ``frame_rate``, ``source_format``
        ``"suite2p"``, ``source_files``, ``neuropil`` and ``neuropil_prior``.
    """
    _check_baseline(baseline, dark_level)
    plane = _suite2p_plane(Path(folder))
    arrays = {}
    for name in SUITE2P_FILES:
        try:
            arrays[name] = np.load(plane / name, allow_pickle=name in ("stat.npy", "ops.npy"))
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{plane / name}: not a Suite2p file ({e})") from None
    F, Fneu, iscell, stat = (arrays[k] for k in ("F.npy", "Fneu.npy", "iscell.npy", "stat.npy"))
    ops = arrays["ops.npy"]
    ops = ops.item() if isinstance(ops, np.ndarray) and ops.dtype == object else ops
    if not isinstance(ops, dict):
        raise ValueError(f"{plane / 'ops.npy'}: holds {type(ops).__name__}, not Suite2p's dict")
    if F.ndim != 2 or F.shape[1] < 2:
        raise ValueError(f"{plane / 'F.npy'}: shape {F.shape}; expected (roi, time ≥ 2)")
    n = F.shape[0]
    if Fneu.shape != F.shape:
        raise ValueError(f"{plane / 'Fneu.npy'}: shape {Fneu.shape}, F.npy has {F.shape}")
    if iscell.ndim != 2 or iscell.shape[0] != n:
        raise ValueError(f"{plane / 'iscell.npy'}: shape {iscell.shape}; expected ({n}, 2)")
    if stat.shape != (n,):
        raise ValueError(f"{plane / 'stat.npy'}: {stat.shape} ROIs, F.npy has {n}")
    fs = _frame_rate(frame_rate, ops.get("fs"), plane / "ops.npy", "fs")
    ly, lx = (int(ops.get(k, 0)) for k in ("Ly", "Lx"))
    if ly < 1 or lx < 1:
        raise ValueError(f"{plane / 'ops.npy'}: no frame size (Ly, Lx)")
    keep = np.flatnonzero(iscell[:, 0] > 0.5) if cells_only else np.arange(n)
    if keep.size == 0:
        raise ValueError(
            f"{plane / 'iscell.npy'}: no ROI is labelled a cell (load with cells_only=False)"
        )
    masks = np.zeros((keep.size, ly, lx), dtype=bool)
    for i, k in enumerate(keep):
        s = stat[k]
        try:
            ys, xs = np.asarray(s["ypix"], dtype=np.intp), np.asarray(s["xpix"], dtype=np.intp)
        except (KeyError, TypeError, IndexError):
            raise ValueError(f"{plane / 'stat.npy'}: ROI {k} has no ypix/xpix") from None
        inside = (ys >= 0) & (ys < ly) & (xs >= 0) & (xs < lx)
        masks[i, ys[inside], xs[inside]] = True
        if not masks[i].any():
            raise ValueError(f"{plane / 'stat.npy'}: ROI {k} has no pixel inside the frame")
    r = float(ops.get("neucoeff", 0.7)) if neuropil is None else float(neuropil)
    if not (np.isfinite(r) and r >= 0):
        raise ValueError(f"neuropil = {r!r} must be a ratio ≥ 0")
    mean = np.asarray(ops.get("meanImg", np.zeros((ly, lx))), dtype=float)
    if mean.shape != (ly, lx):
        mean = np.zeros((ly, lx))
    ds = _dataset(
        F[keep].astype(float) - dark_level, Fneu[keep].astype(float) - dark_level, masks,
        labels=keep, frame_rate=fs, ratio=r, mean_image=mean,
        baseline=dict(method=baseline, window=baseline_window, percentile=baseline_percentile,
                      sigma=baseline_sigma),
        where=plane,
    )  # fmt: skip
    ds["iscell_probability"] = ("roi", iscell[keep, 1].astype(float) if iscell.shape[1] > 1
                                else np.ones(keep.size))  # fmt: skip
    ds.attrs.update(
        source_format="suite2p",
        source_files=json.dumps([str(plane / f) for f in SUITE2P_FILES]),
        dark_level=float(dark_level),
        neuropil=json.dumps({"ratio": r, "source": "Suite2p Fneu"}),
        neuropil_prior=json.dumps([r, NEUROPIL_PRIOR_SD]),
    )
    return ds


def load_caiman(
    path: str | os.PathLike[str],
    *,
    accepted_only: bool = True,
    baseline: BaselineMethod = "percentile",
    baseline_window: float = 60.0,
    baseline_percentile: float = 8.0,
    baseline_sigma: float = 1.0,
    frame_rate: float | None = None,
) -> xr.Dataset:
    """The traces of a CaImAn results file, as :func:`cainfer.extract_traces` returns them.

    CaImAn models the movie as ``A·C + b·f`` plus residuals. Each ROI's
    ``F`` here is the movie's footprint-weighted mean over the ROI,
    ``F = (A_kᵀ A_k (C_k + YrA_k) + B_k)/Σ A_k`` with ``B_k = A_kᵀ b f`` (counts,
    like a pixel). CNMF cannot tell a cell's steady light from the background
    (only what varies is the cell's), so, as CaImAn's own ΔF/F
    (``detrend_df_f``) does, the background's level under the footprint
    counts as the cell's resting light, and ``F_neu`` is the background's
    variation, ``(B_k − median_t B_k)/Σ A_k``, seen through the footprint in
    full: its ratio's prior is 1.0 ± 0.1, and the fit infers it instead of
    taking CaImAn's ΔF/F as exact.

    Parameters
    ----------
    path : path
        The HDF5 file ``CNMF.save`` wrote.
    accepted_only : bool
        Keep the components ``estimates/idx_components`` accepted (True; all
        of them when the file has no such list) or all of them. The ROI
        labels are CaImAn's component indices either way.
    baseline, baseline_window, baseline_percentile, baseline_sigma
        The baseline F0 of ``F − F_neu`` (see :func:`cainfer.extract.baseline`).
    frame_rate : float, optional
        Frames per second; default ``params/data/fr``.

    Returns
    -------
    xarray.Dataset
        As :func:`load_suite2p` (without ``iscell_probability``);
        ``source_format`` ``"caiman"``; ``masks`` are the footprints' support,
        ``footprints`` their weights.
    """
    import h5py

    _check_baseline(baseline, 0.0)
    p = Path(path)
    try:
        h5 = h5py.File(p, "r")
    except OSError as e:
        raise ValueError(f"{p}: not an HDF5 file ({e})") from None
    with h5:
        if "estimates" not in h5:
            raise ValueError(f"{p}: no 'estimates' group; not a CaImAn results file")
        est = h5["estimates"]
        need = ("A", "C", "YrA", "b", "f")
        missing = [k for k in need if k not in est or _is_none(est[k])]
        if missing:
            raise ValueError(f"{p}: estimates/{', estimates/'.join(missing)} missing")
        A = _sparse(est["A"], p)
        C, YrA = np.asarray(est["C"], dtype=float), np.asarray(est["YrA"], dtype=float)
        b, f = np.atleast_2d(np.asarray(est["b"], dtype=float)), np.asarray(est["f"], dtype=float)
        if b.shape[0] != A.shape[0] and b.T.shape[0] == A.shape[0]:
            b = b.T
        f = np.atleast_2d(f)
        dims = _caiman_dims(h5, A.shape[0], p)
        fr = h5["params/data/fr"][()] if "params/data/fr" in h5 else None
        accepted = None
        if "idx_components" in est and not _is_none(est["idx_components"]):
            accepted = np.asarray(est["idx_components"], dtype=np.intp).reshape(-1)
    n, T = C.shape if C.ndim == 2 else (0, 0)
    if C.ndim != 2 or A.shape[1] != n or YrA.shape != C.shape:
        raise ValueError(
            f"{p}: estimates/A has {A.shape[1]} components, C {C.shape}, YrA {YrA.shape}"
        )
    if T < 2 or f.shape[1] != T or b.shape != (A.shape[0], f.shape[0]):
        raise ValueError(f"{p}: background b {b.shape} and f {f.shape} do not match A and C")
    fs = _frame_rate(frame_rate, fr, p, "params/data/fr")
    keep = np.arange(n)
    if accepted_only and accepted is not None:
        if accepted.size and (accepted.min() < 0 or accepted.max() >= n):
            raise ValueError(f"{p}: estimates/idx_components names components outside 0..{n - 1}")
        keep = np.unique(accepted)
        if keep.size == 0:
            raise ValueError(f"{p}: no component accepted (load with accepted_only=False)")
    A = A[:, keep]
    total = np.asarray(A.sum(axis=0)).reshape(-1)
    if np.any(total <= 0):
        raise ValueError(f"{p}: a kept component's footprint sums to ≤ 0")
    norm2 = np.asarray(A.multiply(A).sum(axis=0)).reshape(-1)
    F_bg = (A.T @ b) @ f / total[:, None]
    F_cell = (norm2 / total)[:, None] * (C[keep] + YrA[keep])
    F_var = F_bg - np.median(F_bg, axis=1, keepdims=True)
    weights = A.toarray().T.reshape((keep.size, *dims), order="F")
    masks = weights > 0
    ds = _dataset(
        F_cell + F_bg, F_var, masks, labels=keep, frame_rate=fs, ratio=1.0,
        mean_image=(b @ f.mean(axis=1) + A @ C[keep].mean(axis=1)).reshape(dims, order="F"),
        baseline=dict(method=baseline, window=baseline_window, percentile=baseline_percentile,
                      sigma=baseline_sigma),
        where=p,
    )  # fmt: skip
    ds["footprints"] = (("roi", "y", "x"), weights, {"long_name": "CaImAn footprint A"})
    ds.attrs.update(
        source_format="caiman",
        source_files=json.dumps([str(p)]),
        dark_level=0.0,
        neuropil=json.dumps(
            {"ratio": 1.0, "source": "CaImAn background b·f under each footprint, less its median"}
        ),
        neuropil_prior=json.dumps(list(CAIMAN_NEUROPIL_PRIOR)),
    )
    return ds


def _check_baseline(baseline: str, dark_level: float) -> None:
    if baseline not in BASELINE_METHODS:
        raise ValueError(f"baseline {baseline!r}; allowed: {', '.join(BASELINE_METHODS)}")
    if not np.isfinite(dark_level):
        raise ValueError(f"dark_level = {dark_level!r} must be a finite number of counts")


def _suite2p_plane(folder: Path) -> Path:
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder (a Suite2p plane folder)")
    if not (folder / "F.npy").is_file() and (folder / "suite2p" / "plane0").is_dir():
        folder = folder / "suite2p" / "plane0"
    missing = [f for f in SUITE2P_FILES if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"{folder}: not a Suite2p plane folder, missing {', '.join(missing)}")
    return folder


def _frame_rate(given: float | None, stored: Any, where: Path, key: str) -> float:
    if given is not None:
        fs = float(given)
        if not (np.isfinite(fs) and fs > 0):
            raise ValueError(f"frame_rate = {given!r} must be > 0 frames/s")
        return fs
    try:
        fs = float(np.asarray(stored).reshape(-1)[0]) if stored is not None else float("nan")
    except (TypeError, ValueError, IndexError):
        fs = float("nan")
    if not (np.isfinite(fs) and fs > 0):
        raise ValueError(f"{where}: no frame rate ({key}); give frame_rate (frames/s)")
    return fs


def _is_none(node: Any) -> bool:
    """CaImAn writes None as the string 'NoneType'."""
    import h5py

    if not isinstance(node, h5py.Dataset) or node.dtype.kind not in "SOU":
        return False
    value = node[()]
    return (value.decode() if isinstance(value, bytes) else str(value)) == "NoneType"


def _sparse(group: Any, where: Path) -> sparse.csc_array:
    import h5py

    if isinstance(group, h5py.Dataset):  # saved dense
        return sparse.csc_array(np.asarray(group, dtype=float))
    try:
        shape = tuple(int(x) for x in np.asarray(group["shape"]))
        return sparse.csc_array(
            (np.asarray(group["data"], dtype=float), np.asarray(group["indices"]),
             np.asarray(group["indptr"])), shape=shape,
        )  # fmt: skip
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{where}: estimates/A is not a sparse matrix ({e})") from None


def _caiman_dims(h5: Any, d: int, where: Path) -> tuple[int, int]:
    for key in ("dims", "estimates/dims", "params/data/dims"):
        if key in h5 and not _is_none(h5[key]):
            dims = [int(x) for x in np.asarray(h5[key]).reshape(-1)]
            if len(dims) == 2 and dims[0] * dims[1] == d:
                return dims[0], dims[1]
    raise ValueError(f"{where}: no frame size (dims) matching the {d} pixels of estimates/A")


def _dataset(
    F: np.ndarray,
    F_neu: np.ndarray,
    masks: np.ndarray,
    *,
    labels: np.ndarray,
    frame_rate: float,
    ratio: float,
    mean_image: np.ndarray,
    baseline: dict[str, Any],
    where: Path,
) -> xr.Dataset:
    """The traces Dataset of :func:`cainfer.extract_traces` from its parts."""
    bad = ~np.isfinite(F) | ~np.isfinite(F_neu)
    if bad.any():
        roi, frame = np.argwhere(bad)[0]
        raise ValueError(
            f"{where}: ROI {int(labels[roi])} is not finite at frame {int(frame)} (F or neuropil)"
        )
    F0, dff, f0_valid = baseline_and_dff(F, F_neu, ratio, frame_rate, **baseline)
    T = F.shape[1]
    cy, cx = (np.array([np.nonzero(m)[k].mean() for m in masks]) for k in (0, 1))
    return xr.Dataset(
        {
            "F": (("roi", "time"), F, {"long_name": "ROI fluorescence", "units": "counts"}),
            "F_neu": (("roi", "time"), F_neu, {"long_name": "neuropil under the ROI",
                                               "units": "counts"}),
            "F0": (("roi", "time"), F0, {"long_name": "baseline of F − r·F_neu",
                                         "units": "counts"}),
            "dff": (("roi", "time"), dff, {"long_name": "ΔF/F = (F_c − F0)/F0"}),
            "f0_valid": ("roi", f0_valid),
            "n_pixels": ("roi", masks.reshape(masks.shape[0], -1).sum(axis=1)),
            "masks": (("roi", "y", "x"), masks),
            "mean_image": (("y", "x"), np.asarray(mean_image, dtype=float)),
        },
        coords={
            "roi": np.asarray(labels, dtype=np.int64),
            "time": ("time", np.arange(T) / frame_rate, {"units": "s"}),
            "centroid_y": ("roi", cy, {"units": "pixel"}),
            "centroid_x": ("roi", cx, {"units": "pixel"}),
        },
        attrs={
            "frame_rate": float(frame_rate),
            "baseline": json.dumps({
                "method": baseline["method"], "window_s": baseline["window"],
                "percentile": baseline["percentile"], "sigma_s": baseline["sigma"],
            }),
        },
    )  # fmt: skip
