"""Baseline fluorescence F0 of traces ``(roi, time)``."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

BaselineMethod = Literal["percentile", "maximin", "constant"]
BASELINE_METHODS: tuple[str, ...] = ("percentile", "maximin", "constant")


def baseline(
    F: np.ndarray,
    frame_rate: float,
    *,
    method: BaselineMethod = "percentile",
    window: float = 60.0,
    percentile: float = 8.0,
    sigma: float = 1.0,
) -> np.ndarray:
    """Baseline F0 of each trace.

    Parameters
    ----------
    F : numpy.ndarray
        Traces ``(roi, time)`` (any fluorescence unit).
    frame_rate : float
        Frames per second.
    method : {"percentile", "maximin", "constant"}
        ``"percentile"``: rolling ``percentile`` over ``window`` seconds,
        evaluated every 1/20 window and interpolated in between (cost linear in
        the number of frames). ``"maximin"``: Gaussian smoothing (``sigma``
        seconds), then a rolling minimum and a rolling maximum over ``window``
        seconds (Pachitariu et al. 2017, Suite2p, doi:10.1101/061507).
        ``"constant"``: the ``percentile`` of the whole trace.
    window : float
        Window length (s).
    percentile : float
        Percentile (0-100) for ``"percentile"`` and ``"constant"``.
    sigma : float
        Smoothing for ``"maximin"`` (s).

    Returns
    -------
    numpy.ndarray
        F0 with the shape of ``F``.
    """
    if method not in BASELINE_METHODS:
        raise ValueError(f"baseline method {method!r}; allowed: {', '.join(BASELINE_METHODS)}")
    if not (0 <= percentile <= 100):
        raise ValueError(f"baseline percentile = {percentile} must lie in [0, 100]")
    if not (window > 0 and frame_rate > 0 and sigma >= 0):
        raise ValueError("baseline window (s) and frame_rate must be > 0, sigma ≥ 0")
    F = np.asarray(F, dtype=np.float64)
    T = F.shape[-1]
    if method == "constant":
        return np.broadcast_to(np.nanpercentile(F, percentile, axis=-1)[..., None], F.shape).copy()
    w = max(1, round(window * frame_rate))
    if method == "maximin":
        s = (
            ndimage.gaussian_filter1d(F, sigma * frame_rate, axis=-1, mode="nearest")
            if sigma > 0
            else F
        )
        lo = ndimage.minimum_filter1d(s, w, axis=-1, mode="nearest")
        return ndimage.maximum_filter1d(lo, w, axis=-1, mode="nearest")
    if w >= T:
        return baseline(F, frame_rate, method="constant", percentile=percentile)
    hop = max(1, w // 20)
    centres = np.arange(0, T, hop)
    if centres[-1] != T - 1:
        centres = np.append(centres, T - 1)
    half = w // 2
    values = np.empty((*F.shape[:-1], centres.size))
    for k, c in enumerate(centres):
        a, b = max(0, c - half), min(T, c + half + 1)
        values[..., k] = np.nanpercentile(F[..., a:b], percentile, axis=-1)
    t = np.arange(T)
    flat = values.reshape(-1, centres.size)
    out = np.stack([np.interp(t, centres, v) for v in flat])
    return out.reshape(F.shape)
