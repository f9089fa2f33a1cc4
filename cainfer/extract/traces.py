"""From a movie and ROIs to F, neuropil, F0 and ΔF/F traces, streamed in chunks."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import xarray as xr
from scipy import ndimage, sparse

from cainfer.extract.baseline import BASELINE_METHODS, BaselineMethod
from cainfer.extract.baseline import baseline as compute_baseline
from cainfer.extract.detect import detect_rois
from cainfer.extract.neuropil import neuropil_masks
from cainfer.extract.registration import (
    _beyond_message,
    _register,
    make_reference,
    reference_fft,
    search_bound,
    shift_frame,
)
from cainfer.extract.summary import MeanAccumulator, SummaryAccumulator
from cainfer.io import Movie, check_masks, load_movie, masks_from_labels, read_rois


class ExtractionWarning(UserWarning):
    """Something in the extracted traces needs the user's attention."""


RoiSource = str | os.PathLike[str] | np.ndarray | Literal["auto"]


def _roi_masks(rois: RoiSource, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
    if isinstance(rois, np.ndarray):
        m = masks_from_labels(rois) if rois.ndim == 2 else check_masks(rois)
        if m.shape[1:] != shape:
            raise ValueError(f"rois are {m.shape[1:]} pixels but frames are {shape}")
        return m, "array"
    return read_rois(rois, shape=shape), str(rois)


def _weights(masks: np.ndarray) -> sparse.csr_array:
    """Sparse (n_masks, n_pixels) matrix whose rows average the pixels of each mask."""
    n = masks.shape[0]
    flat = masks.reshape(n, -1)
    rows, cols = np.nonzero(flat)
    counts = flat.sum(axis=1)
    return sparse.csr_array((1.0 / counts[rows], (rows, cols)), shape=flat.shape)


def _sample(
    frames: np.ndarray, displacements: np.ndarray | None, ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """Pixel values ``(n_frames, n_pixels)`` at (ys, xs), registered if displacements are given.

    The registered frame at p is the raw frame at p + displacement, by cubic
    B-spline interpolation with edges extended (as ``scipy.ndimage.shift(order=3,
    mode="nearest")`` of the whole frame, read at the ROI pixels only). Not
    bilinear: on a simulated movie with 0.3-pixel jitter, bilinear
    interpolation's shift-dependent blur put about 1 % of a cell's brightness
    into each frame as noise (residual sd at ΔF/F > 8: 20–30 counts against
    7.7 of shot noise); cubic splines left 1–3 counts.
    """
    if displacements is None:
        return frames.reshape(len(frames), -1)[:, ys * frames.shape[2] + xs].astype(np.float64)
    out = np.empty((len(frames), ys.size))
    for j, (dy, dx) in enumerate(np.asarray(displacements, dtype=float).tolist()):
        out[j] = ndimage.map_coordinates(
            np.asarray(frames[j], np.float64), [ys + dy, xs + dx], order=3, mode="nearest"
        )
    return out


def _check_finite(mv: Movie, first: int, data: np.ndarray) -> None:
    """Registration needs finite pixels: name the file and frame that has others."""
    if data.dtype.kind != "f" or np.isfinite(data).all():
        return
    bad = first + int(np.flatnonzero(~np.isfinite(data).all(axis=(1, 2)))[0])
    raise ValueError(
        f"{mv.files[0] if len(mv.files) == 1 else mv.files}: frame {bad} holds NaN or infinite "
        "pixels; motion correction needs finite pixels (fix the file, or register=False / "
        "--no-register / [extraction] register = false)"
    )


def baseline_and_dff(
    F: np.ndarray,
    F_neu: np.ndarray,
    ratio: float,
    frame_rate: float,
    *,
    method: BaselineMethod = "percentile",
    window: float = 60.0,
    percentile: float = 8.0,
    sigma: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Baseline F0 of ``F − ratio·F_neu``, ΔF/F, and which ROIs have F0 > 0 throughout.

    Parameters
    ----------
    F, F_neu : numpy.ndarray
        ``(roi, time)`` ROI and neuropil fluorescence (counts).
    ratio : float
        Neuropil contamination ratio r (0: no correction).
    frame_rate : float
        Frames per second.
    method, window, percentile, sigma
        The baseline's method and options (see :func:`cainfer.extract.baseline`).

    Returns
    -------
    F0, dff : numpy.ndarray
        ``(roi, time)``; ΔF/F is NaN where F0 ≤ 0.
    f0_valid : numpy.ndarray
        ``(roi,)`` bool: F0 > 0 in every frame.

    Warns
    -----
    ExtractionWarning
        Naming the ROIs (by position) whose F0 ≤ 0 somewhere.
    """
    Fc = F - ratio * F_neu
    F0 = compute_baseline(
        Fc, frame_rate, method=method, window=window, percentile=percentile, sigma=sigma
    )
    bad = F0 <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        dff = np.where(bad, np.nan, (Fc - F0) / np.where(bad, 1.0, F0))
    f0_valid = ~bad.any(axis=1)
    if not f0_valid.all():
        idx = np.flatnonzero(~f0_valid).tolist()
        warnings.warn(
            f"ROI(s) {idx}: baseline F0 ≤ 0 in some frames (neuropil ratio {ratio:g} may be too "
            "large); their ΔF/F is NaN there and f0_valid is False",
            ExtractionWarning,
            stacklevel=3,
        )
    return F0, dff, f0_valid


def extract_traces(
    movie: Movie | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    rois: RoiSource = "auto",
    register: bool = True,
    neuropil: float | None = 0.7,
    dark_level: float = 0.0,
    baseline: BaselineMethod = "percentile",
    baseline_window: float = 60.0,
    baseline_percentile: float = 8.0,
    baseline_sigma: float = 1.0,
    neuropil_inner: float = 4.0,
    neuropil_min_pixels: int = 350,
    min_area: int = 20,
    max_area: int = 400,
    reference_frames: int = 50,
    upsample: int = 20,
    max_shift: float | None = None,
    chunk: int = 128,
    frame_rate: float | None = None,
    shifts: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> xr.Dataset:
    """Extract ΔF/F traces of ROIs from a recording.

    Reads the movie in chunks of ``chunk`` frames (memory does not grow with
    the number of frames): one pass to register (and build summary images
    when ROIs are detected), one pass to average each ROI and its neuropil
    annulus. With ROIs given, registration and extraction share one pass.

    Parameters
    ----------
    movie : Movie or path(s)
        A :class:`~cainfer.io.Movie`, or what :func:`~cainfer.io.load_movie` takes.
    rois : path, array or "auto"
        ROI file (label image or mask stack as ``.npy``/``.tif``, ImageJ
        ``.roi``/``.zip``), a label image ``(y, x)`` or masks ``(n, y, x)``, or
        ``"auto"`` to detect them in the local-correlation image.
    register : bool
        Rigid sub-pixel motion correction (upsampled cross-correlation in
        Fourier space, :func:`skimage.registration.phase_cross_correlation`).
    neuropil : float or None
        Contamination ratio r in ``F_c = F − r·F_neu`` (0.7 by default); None
        or 0 for no neuropil correction.
    dark_level : float
        What every pixel reads with no light (counts): the camera's or the
        digitiser's offset, as frames taken with the shutter closed show; 0
        (default) when the acquisition already subtracted it. Subtracted from
        ``F`` and ``F_neu`` before anything else: the offset does not scale
        with the cell's fluorescence, so left in it shrinks ΔF/F and biases
        the neuropil ratio a fit infers.
    baseline : {"percentile", "maximin", "constant"}
        Baseline method (see :func:`cainfer.extract.baseline`).
    baseline_window : float
        Baseline window (s).
    baseline_percentile : float
        Percentile for ``"percentile"`` and ``"constant"`` (0-100).
    baseline_sigma : float
        Smoothing for ``"maximin"`` (s).
    neuropil_inner : float
        Gap between ROI and annulus (pixels). 4 by default: a cell's own light
        still reaches 1-3 pixels past the edge of its mask (its blurred edge,
        registration's interpolation), and an annulus that holds it carries
        the cell's transients into the neuropil trace.
    neuropil_min_pixels : int
        Minimum annulus size (pixels); 350 by default, as Suite2p
        (Pachitariu et al. 2017, doi:10.1101/061507). The neuropil trace's own
        noise enters a fit through ``r·F_neu``; from a small annulus it is
        large enough to pull a fitted neuropil ratio down (measured on the
        bundled example: r 0.78 from 54 pixels, 0.90 from 350, truth ≈ 1).
    min_area, max_area : int
        Size limits of detected ROIs (pixels).
    reference_frames : int
        Leading frames averaged into the registration reference.
    upsample : int
        Registration precision, 1/upsample pixel.
    max_shift : float, optional
        Largest displacement the registration searches along each axis
        (pixels, > 0); default a tenth of the frame's larger side (Suite2p's
        ``maxregshift``). Raise it for small frames that move a lot; a frame
        whose best match lies beyond it is registered within it, with a
        warning (see :func:`~cainfer.extract.register_frames`).
    chunk : int
        Frames read at a time.
    frame_rate : float, optional
        Frames per second, when ``movie`` is a path without that metadata.
    shifts : numpy.ndarray, optional
        ``(time, 2)`` displacements (y, x; pixels) to undo instead of
        estimating them, for example another channel's ``shifts`` (needs
        ``register=True``).
    progress : callable, optional
        Called as ``progress(done, total)`` after each chunk, counting frames
        over all passes (for a progress bar).

    Returns
    -------
    xarray.Dataset
        Dims ``(roi, time)``: ``F`` (ROI mean), ``F_neu`` (annulus mean),
        ``F0`` (baseline of the corrected F), ``dff`` (ΔF/F), and per ROI
        ``centroid_y``/``centroid_x`` (pixels), ``n_pixels`` and ``f0_valid``;
        ``masks`` (and ``neuropil_masks``) ``(roi, y, x)``; ``shifts``
        ``(time, axis)`` when registered; ``mean_image`` (and
        ``correlation_image`` when detected). Attrs record the source files,
        frame rate and every method and parameter used.

    Warns
    -----
    ExtractionWarning
        When F0 ≤ 0 for some ROI: those frames get ΔF/F NaN (not inf) and the
        ROI's ``f0_valid`` is False. Once, with the number of frames, when
        frames matched the reference best beyond the registration's search
        bound (``max_shift``) and were registered within it.
    """
    if baseline not in BASELINE_METHODS:
        raise ValueError(f"baseline {baseline!r}; allowed: {', '.join(BASELINE_METHODS)}")
    if neuropil is not None and not (np.isfinite(neuropil) and neuropil >= 0):
        raise ValueError(f"neuropil = {neuropil!r} must be None or a ratio ≥ 0")
    if not np.isfinite(dark_level):
        raise ValueError(f"dark_level = {dark_level!r} must be a finite number of counts")
    if chunk < 1 or upsample < 1 or reference_frames < 1:
        raise ValueError("chunk, upsample and reference_frames must be ≥ 1")
    search_bound((1,), max_shift)  # checked before the movie is read
    given = None
    if shifts is not None:
        if not register:
            raise ValueError("shifts were given but register=False: nothing would apply them")
        given = np.asarray(shifts, dtype=float)
        if given.ndim != 2 or given.shape[1] != 2 or not np.all(np.isfinite(given)):
            raise ValueError(f"shifts must be finite, shape (time, 2); got {given.shape}")

    def _run(mv: Movie) -> xr.Dataset:
        T, h, w = mv.shape
        shape = (h, w)

        ref_fft = None
        shifts = np.zeros((T, 2)) if register else None
        if given is not None:
            if given.shape[0] != T:
                raise ValueError(f"shifts has {given.shape[0]} rows for a {T}-frame movie")
            shifts = given.copy()
        elif register:
            if mv.dtype.kind == "f":  # integer pixels are finite: no second read of these
                _check_finite(mv, 0, mv.read(0, min(reference_frames, T)))
            ref = make_reference(
                mv, n_frames=reference_frames, upsample=upsample, max_shift=max_shift
            )
            ref_fft = reference_fft(ref)

        bound = search_bound(shape, max_shift)
        n_beyond = 0  # frames registered within the bound

        def estimate(a: int, data: np.ndarray) -> np.ndarray | None:
            if shifts is None:
                return None
            if given is not None:
                return shifts[a : a + len(data)]
            _check_finite(mv, a, data)
            # the frames beyond the search bound are counted over the whole movie and
            # reported once (below), not once per chunk
            nonlocal n_beyond
            shifts[a : a + len(data)], n, _ = _register(
                data, np.empty(0), upsample=upsample, reference_fft=ref_fft, max_shift=bound
            )
            n_beyond += n
            return shifts[a : a + len(data)]

        auto = isinstance(rois, str) and rois == "auto"
        total = T * (2 if auto else 1)
        done = 0

        def tick(n_frames: int) -> None:
            nonlocal done
            done += n_frames
            if progress is not None:
                progress(done, total)

        mean = MeanAccumulator(shape)
        corr_image = None
        if auto:
            # pass 1: register and accumulate summary images of the registered frames
            summary = SummaryAccumulator(shape)
            for a, data in mv.iter_chunks(chunk):
                d = estimate(a, data)
                summary.add(
                    data
                    if d is None
                    else np.stack([shift_frame(f, di) for f, di in zip(data, d, strict=True)])
                )
                tick(len(data))
            corr_image = summary.correlation_image()
            masks = detect_rois(
                corr_image, summary.mean_image(), min_area=min_area, max_area=max_area
            )
            roi_source = "auto"
        else:
            masks, roi_source = _roi_masks(rois, shape)
        n = masks.shape[0]
        use_np = bool(neuropil)
        np_masks = (
            neuropil_masks(masks, inner=neuropil_inner, min_pixels=neuropil_min_pixels)
            if use_np
            else None
        )
        W = _weights(np.concatenate([masks, np_masks]) if np_masks is not None else masks)
        # Only the pixels some ROI or annulus uses are read out of each frame; with
        # registration they are sampled at their displaced positions (cubic spline),
        # which equals shifting whole frames but reads out only these pixels.
        cols = np.unique(W.indices)
        W = W[:, cols]
        ys, xs = np.unravel_index(cols, shape)

        # pass 2 (the only one when ROIs are given): traces and the mean image
        out = np.empty((W.shape[0], T))
        for a, data in mv.iter_chunks(chunk):
            d = None
            if shifts is not None:
                d = shifts[a : a + len(data)] if auto else estimate(a, data)
            mean.add(data, d)
            values = _sample(data, d, ys, xs)
            out[:, a : a + len(data)] = W @ values.T
            tick(len(data))
        if n_beyond:
            where = mv.files[0] if len(mv.files) == 1 else mv.files
            warnings.warn(
                f"{where}: {_beyond_message(n_beyond, bound)}",
                ExtractionWarning,
                stacklevel=2,
            )
        F = out[:n] - dark_level
        F_neu = out[n:] - dark_level if use_np else np.zeros_like(F)
        r = float(neuropil) if neuropil else 0.0
        F0, dff, f0_valid = baseline_and_dff(
            F, F_neu, r, mv.frame_rate, method=baseline, window=baseline_window,
            percentile=baseline_percentile, sigma=baseline_sigma,
        )  # fmt: skip

        cy, cx = (np.array([np.nonzero(m)[k].mean() for m in masks]) for k in (0, 1))
        data_vars: dict[str, tuple] = {
            "F": (
                ("roi", "time"),
                F,
                {"long_name": "ROI mean fluorescence − dark level", "units": "counts"},
            ),
            "F_neu": (
                ("roi", "time"),
                F_neu,
                {"long_name": "neuropil annulus mean − dark level", "units": "counts"},
            ),
            "F0": (
                ("roi", "time"),
                F0,
                {"long_name": "baseline of F − r·F_neu", "units": "counts"},
            ),
            "dff": (("roi", "time"), dff, {"long_name": "ΔF/F = (F_c − F0)/F0"}),
            "f0_valid": ("roi", f0_valid),
            "n_pixels": ("roi", masks.reshape(n, -1).sum(axis=1)),
            "masks": (("roi", "y", "x"), masks),
            "mean_image": (("y", "x"), mean.mean()),
        }
        if np_masks is not None:
            data_vars["neuropil_masks"] = (("roi", "y", "x"), np_masks)
        if roi_source == "auto":
            data_vars["correlation_image"] = (("y", "x"), corr_image)
        if shifts is not None:
            data_vars["shifts"] = (
                ("time", "axis"),
                shifts,
                {"units": "pixel", "long_name": "displacement (y, x) undone"},
            )
        attrs = {
            "source_files": json.dumps([str(f) for f in mv.files]),
            "frame_rate": mv.frame_rate,
            "channel": mv.channel,
            "roi_source": roi_source,
            "registration": json.dumps(
                {
                    "method": "skimage phase_cross_correlation, normalization=None"
                    if given is None
                    else "shifts given",
                    "reference_frames": reference_frames,
                    "upsample": upsample,
                    "max_shift_px": bound,
                    "interpolation": "cubic spline (traces), bilinear (mean image)",
                }
                if register
                else None
            ),
            "dark_level": float(dark_level),
            "neuropil": json.dumps(
                {"ratio": r, "inner": neuropil_inner, "min_pixels": neuropil_min_pixels}
                if use_np
                else None
            ),
            "baseline": json.dumps(
                {
                    "method": baseline,
                    "window_s": baseline_window,
                    "percentile": baseline_percentile,
                    "sigma_s": baseline_sigma,
                }
            ),
            "detection": json.dumps({"min_area": min_area, "max_area": max_area})
            if roi_source == "auto"
            else "null",
        }
        return xr.Dataset(
            data_vars,
            coords={
                "roi": np.arange(n),
                "time": ("time", mv.time, {"units": "s"}),
                "axis": ["y", "x"],
                "centroid_y": ("roi", cy, {"units": "pixel"}),
                "centroid_x": ("roi", cx, {"units": "pixel"}),
            },
            attrs=attrs,
        )

    if isinstance(movie, Movie):
        return _run(movie)
    with load_movie(movie, frame_rate=frame_rate) as opened:  # closed on the way out
        return _run(opened)
