"""Two-channel (ratiometric) extraction: both channels, one registration, the ratio."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Protocol

import numpy as np
import xarray as xr

from cainfer.extract.traces import RoiSource, extract_traces
from cainfer.io import load_movie


class _Calibration(Protocol):
    """What extraction needs of a :class:`cainfer.forward.RatioCalibration` (a dataclass)."""

    def to_calcium(self, ratio: Any) -> np.ndarray: ...


def extract_ratio(
    movie: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    rois: RoiSource = "auto",
    channels: tuple[int, int] = (0, 1),
    register: bool = True,
    register_channel: int = 1,
    background: float | None = 1.0,
    dark_level: float = 0.0,
    calibration: _Calibration | None = None,
    frame_rate: float | None = None,
    chunk: int = 128,
    progress: Callable[[int, int], None] | None = None,
    **options: float,
) -> xr.Dataset:
    """Extract both channels of a ratiometric recording and their ratio per ROI.

    The movie is registered once, on one channel, and the same shifts are
    undone in the other; ROIs (given, or detected in the registration
    channel) are the same in both. Each channel's ROI mean has the dark level
    and ``background`` times its local background (the annulus around the ROI,
    as :func:`extract_traces` builds for neuropil) subtracted, and the ratio is
    numerator over denominator. With a ``calibration`` the ratio is also
    converted to free calcium (Grynkiewicz et al. 1985, see
    :mod:`cainfer.forward.ratiometric`).

    Parameters
    ----------
    movie : path, folder or sequence of paths
        A multi-channel recording (an ImageJ hyperstack ``TCYX``, an OME-TIFF
        with channels), as :func:`cainfer.load_movie` reads.
    rois : path, array or "auto"
        As for :func:`extract_traces`.
    channels : (int, int)
        The numerator and denominator channels (0-based), for example
        (340 nm, 380 nm) excitation of Fura-2.
    register : bool
        Rigid motion correction.
    register_channel : {0, 1}
        Which of ``channels`` to register (and detect ROIs) on: 1, the
        denominator, by default (Fura-2's 380-nm image is the brighter at rest).
    background : float or None
        Multiple of the local background annulus subtracted from each channel
        (1 by default: the light around the cell is taken as what lies under
        it); None or 0 for none.
    dark_level : float
        Camera offset (counts), subtracted from both channels.
    calibration : RatioCalibration, optional
        The setup's R_min, R_max, β and the dye's K_d: adds ``ca`` (µM).
    frame_rate : float, optional
        Frames per second, when the files do not record it.
    chunk : int
        Frames read at a time.
    progress : callable, optional
        ``progress(done, total)`` over both channels' passes.
    **options
        Further :func:`extract_traces` settings (``neuropil_inner``,
        ``neuropil_min_pixels``, ``min_area``, ``max_area``, ``upsample``,
        ``reference_frames``).

    Returns
    -------
    xarray.Dataset
        Dims ``(roi, channel, time)``: ``F`` (ROI mean − dark level),
        ``F_bg`` (background annulus mean − dark level), ``F_c`` (``F −
        background·F_bg``); ``(roi, time)``: ``ratio`` (``F_c`` numerator over
        denominator; NaN where the denominator is not positive) and, with a
        calibration, ``ca``; ``masks``, ``shifts`` and per-channel
        ``mean_image``. Attrs record both channels' extraction settings and
        the calibration.

    Raises
    ------
    ValueError
        A bad channel choice, or a movie with fewer than two channels.
    """
    if len(channels) != 2 or channels[0] == channels[1] or min(channels) < 0:
        raise ValueError(f"channels = {channels!r} must be two different channel indices ≥ 0")
    if register_channel not in (0, 1):
        raise ValueError(f"register_channel = {register_channel!r}; allowed: 0, 1")
    if background is not None and not (np.isfinite(background) and background >= 0):
        raise ValueError(f"background = {background!r} must be None or a multiple ≥ 0")
    allowed = {"neuropil_inner", "neuropil_min_pixels", "min_area", "max_area", "upsample",
               "reference_frames", "max_shift"}  # fmt: skip
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
    movies = [load_movie(movie, frame_rate=frame_rate, channel=c) for c in channels]
    try:
        n = movies[0].shape[0]
        total = 2 * n + (n if isinstance(rois, str) and rois == "auto" else 0)
        done = 0

        def tick(k: int, _total: int) -> None:
            nonlocal done
            if progress is not None:
                progress(done + k, total)

        common: dict[str, Any] = dict(
            neuropil=background or None, dark_level=dark_level, chunk=chunk, **options
        )
        first = extract_traces(
            movies[register_channel], rois=rois, register=register, progress=tick, **common
        )
        done = n * (2 if isinstance(rois, str) and rois == "auto" else 1)
        second = extract_traces(
            movies[1 - register_channel],
            rois=first["masks"].values,
            register=register,
            shifts=first["shifts"].values if register else None,
            progress=tick,
            **common,
        )
    finally:
        for m in movies:
            m.close()
    num, den = (first, second) if register_channel == 0 else (second, first)
    b = float(background or 0.0)
    F = np.stack([num["F"].values, den["F"].values], axis=1)
    F_bg = np.stack([num["F_neu"].values, den["F_neu"].values], axis=1)
    Fc = F - b * F_bg
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(Fc[:, 1] > 0, Fc[:, 0] / Fc[:, 1], np.nan)
    data_vars: dict[str, Any] = {
        "F": (("roi", "channel", "time"), F, {"units": "counts",
              "long_name": "ROI mean fluorescence − dark level"}),
        "F_bg": (("roi", "channel", "time"), F_bg, {"units": "counts",
                 "long_name": "background annulus mean − dark level"}),
        "F_c": (("roi", "channel", "time"), Fc, {"units": "counts",
                "long_name": "F − background·F_bg"}),
        "ratio": (("roi", "time"), ratio, {"long_name": "F_c numerator / F_c denominator"}),
        "masks": first["masks"],
        "mean_image": (("channel", "y", "x"),
                       np.stack([num["mean_image"].values, den["mean_image"].values])),
    }  # fmt: skip
    if "shifts" in first:
        data_vars["shifts"] = first["shifts"]
    if "correlation_image" in first:
        data_vars["correlation_image"] = first["correlation_image"]
    attrs = {
        "kind": "ratiometric",
        "channels": json.dumps(list(channels)),
        "register_channel": int(channels[register_channel]),
        "background": b,
        "calibration": json.dumps(asdict(calibration) if calibration is not None else None),  # type: ignore[call-overload]
        "numerator": json.dumps(dict(num.attrs), default=str),
        "denominator": json.dumps(dict(den.attrs), default=str),
        "frame_rate": first.attrs["frame_rate"],
        "dark_level": float(dark_level),
        "roi_source": first.attrs["roi_source"],
    }
    ds = xr.Dataset(
        data_vars,
        coords={
            "roi": first["roi"].values,
            "channel": ["numerator", "denominator"],
            "time": first["time"],
            "centroid_y": first["centroid_y"],
            "centroid_x": first["centroid_x"],
        },
        attrs=attrs,
    )
    if calibration is not None:
        ds["ca"] = (
            ("roi", "time"),
            calibration.to_calcium(ratio),
            {"units": "µM", "long_name": "free calcium (Grynkiewicz)"},
        )
    return ds
