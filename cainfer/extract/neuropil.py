"""Neuropil annuli around ROIs."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def neuropil_masks(
    masks: np.ndarray, *, inner: float = 2.0, min_pixels: int = 50, max_radius: float = 50.0
) -> np.ndarray:
    """An annulus around each ROI that excludes every ROI pixel.

    The annulus starts ``inner`` pixels outside the ROI (so that the ROI's own
    out-of-focus light is not counted as neuropil) and grows outward until it
    holds at least ``min_pixels`` pixels. Pixels within ``inner`` of any ROI
    are excluded.

    Parameters
    ----------
    masks : numpy.ndarray
        ROI masks ``(n, y, x)``.
    inner : float
        Gap between ROI and annulus (pixels).
    min_pixels : int
        Minimum annulus size (pixels).
    max_radius : float
        Largest outer distance tried (pixels).

    Returns
    -------
    numpy.ndarray
        Boolean annuli ``(n, y, x)``.

    Raises
    ------
    ValueError
        If an annulus cannot reach ``min_pixels`` within ``max_radius``.
    """
    m = np.asarray(masks, bool)
    if inner < 0 or min_pixels < 1:
        raise ValueError("neuropil inner must be ≥ 0 pixels and min_pixels ≥ 1")
    union = m.any(axis=0)
    # distance of every pixel to the nearest ROI pixel
    excluded = ndimage.distance_transform_edt(~union) <= inner
    out = np.zeros_like(m)
    h, w = union.shape
    for i, mi in enumerate(m):
        ys, xs = np.nonzero(mi)
        pad = int(np.ceil(max_radius)) + 1
        y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)
        x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, w)
        dist = ndimage.distance_transform_edt(~mi[y0:y1, x0:x1])
        allowed = ~excluded[y0:y1, x0:x1]
        candidates = np.sort(dist[allowed & (dist > inner) & (dist <= max_radius)])
        if candidates.size < min_pixels:
            raise ValueError(
                f"neuropil annulus of ROI {i} holds {candidates.size} pixels within "
                f"{max_radius:g} px, fewer than min_pixels = {min_pixels}"
            )
        outer = candidates[min_pixels - 1]
        out[i, y0:y1, x0:x1] = allowed & (dist > inner) & (dist <= outer)
    return out
