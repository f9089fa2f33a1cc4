"""Automatic ROI detection from summary images (scikit-image)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import regionprops
from skimage.segmentation import watershed


def detect_rois(
    correlation: np.ndarray,
    mean: np.ndarray | None = None,
    *,
    min_area: int = 20,
    max_area: int = 400,
    smooth: float = 1.0,
    threshold: float | None = None,
) -> np.ndarray:
    """Find cell-like regions in a local-correlation image (and optionally a mean image).

    Active cells correlate with their neighbours; the correlation image
    (weighted by the normalised, background-subtracted mean image when given)
    is smoothed, thresholded (Otsu unless ``threshold`` is given), split into
    cells by a watershed from its local maxima, and regions outside the size
    limits are dropped.

    Parameters
    ----------
    correlation : numpy.ndarray
        Local correlation image ``(y, x)``.
    mean : numpy.ndarray, optional
        Mean image ``(y, x)``.
    min_area, max_area : int
        Allowed ROI size (pixels).
    smooth : float
        Gaussian smoothing of the score image (pixels).
    threshold : float, optional
        Score threshold; Otsu's by default.

    Returns
    -------
    numpy.ndarray
        Boolean masks ``(n_rois, y, x)``, ordered top to bottom, left to right.

    Raises
    ------
    ValueError
        If the size limits are inconsistent or no ROI is found.
    """
    if not (0 < min_area <= max_area):
        raise ValueError(f"need 0 < min_area ≤ max_area, got {min_area}, {max_area}")
    score = np.nan_to_num(np.asarray(correlation, dtype=np.float64))
    if mean is not None:
        m = np.asarray(mean, dtype=np.float64)
        background = ndimage.gaussian_filter(m, sigma=4 * np.sqrt(max_area / np.pi))
        detail = np.clip(m - background, 0, None)
        if detail.max() > 0:
            score = score * (0.5 + 0.5 * detail / detail.max())
    score = ndimage.gaussian_filter(score, smooth) if smooth > 0 else score
    level = threshold_otsu(score) if threshold is None else float(threshold)
    foreground = score > level
    radius = max(1, int(np.sqrt(min_area / np.pi)))
    peaks = peak_local_max(score, min_distance=radius, labels=foreground.astype(int))
    markers = np.zeros(score.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-score, markers, mask=foreground)
    keep = [r.label for r in regionprops(labels) if min_area <= r.area <= max_area]
    if not keep:
        raise ValueError(
            f"no ROI of {min_area}-{max_area} pixels found (threshold {level:.3g}); "
            "check the size limits or give ROIs"
        )
    masks = labels[None] == np.array(keep)[:, None, None]
    centroids = np.array([ndimage.center_of_mass(m) for m in masks])
    return masks[np.lexsort((centroids[:, 1], centroids[:, 0]))]
