"""Rigid, sub-pixel motion correction by cross-correlation (scikit-image).

References
----------
.. [1] Guizar-Sicairos M, Thurman ST, Fienup JR (2008). Efficient subpixel image
   registration algorithms. Opt Lett 33:156-158. https://doi.org/10.1364/OL.33.000156
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import fft, ndimage
from skimage.registration import phase_cross_correlation
from threadpoolctl import threadpool_limits

from cainfer.extract.options import option_problem
from cainfer.io import Movie


def make_reference(
    movie: Movie,
    *,
    n_frames: int = 50,
    upsample: int = 20,
    iterations: int = 2,
    max_shift: float | None = None,
) -> np.ndarray:
    """Reference image from the first frames, refined by registering them to it.

    Parameters
    ----------
    movie : Movie
        The recording.
    n_frames : int
        Number of leading frames averaged.
    upsample : int
        Sub-pixel precision of the refinement (1/upsample pixel).
    iterations : int
        Register-and-average rounds after the plain mean.
    max_shift : float, optional
        Largest displacement searched (pixels); see :func:`register_frames`.

    Returns
    -------
    numpy.ndarray
        The reference image (float64).
    """
    if n_frames < 1 or iterations < 0:
        raise ValueError("n_frames must be ≥ 1 and iterations ≥ 0")
    first = movie.read(0, min(n_frames, len(movie))).astype(np.float64)
    ref = first.mean(axis=0)
    for _ in range(iterations):
        disp = register_frames(first, ref, upsample=upsample, max_shift=max_shift)
        ref = np.mean([shift_frame(f, d) for f, d in zip(first, disp, strict=True)], axis=0)
    return ref


def register_frames(
    frames: np.ndarray,
    reference: np.ndarray,
    *,
    upsample: int = 20,
    reference_fft: np.ndarray | None = None,
    batch: int = 16,
    max_shift: float | None = None,
) -> np.ndarray:
    """Displacement (dy, dx) in pixels of each frame's content relative to the reference.

    The correlation peak is searched within ``max_shift`` of no motion. A frame
    whose best match lies beyond it (a cell brightening many-fold can match a
    neighbouring cell of the reference better than itself) takes the best
    peak within the bound instead, refined to sub-pixel by a parabola through
    the peak and its neighbours, and a warning gives the number of such frames.

    Parameters
    ----------
    frames : numpy.ndarray
        Frames ``(n, y, x)``.
    reference : numpy.ndarray
        Reference image ``(y, x)``.
    upsample : int
        Sub-pixel precision: 1/upsample pixel.
    reference_fft : numpy.ndarray, optional
        ``scipy.fft.fft2(reference)``, to avoid recomputing it per chunk.
    batch : int
        Frames transformed at a time (bounds the memory of the transforms).
    max_shift : float, optional
        Largest displacement searched along each axis (pixels), > 0; default
        a tenth of the frame's larger side (Suite2p's ``maxregshift``,
        Pachitariu et al. 2017, doi:10.1101/061507).

    Returns
    -------
    numpy.ndarray
        ``(n, 2)``: the frame shows the reference moved by this much; undo it
        with :func:`shift_frame` (which moves content back by the displacement).
    """
    out, beyond, bound = _register(
        frames, reference, upsample=upsample, reference_fft=reference_fft, batch=batch,
        max_shift=max_shift,
    )  # fmt: skip
    if beyond:
        warnings.warn(_beyond_message(beyond, bound), stacklevel=2)
    return out


def _beyond_message(beyond: int, bound: float) -> str:
    return (
        f"registration: {beyond} frame(s) matched the reference best beyond "
        f"max_shift = {bound:g} px; their shifts were searched within it"
    )


def _register(
    frames: np.ndarray,
    reference: np.ndarray,
    *,
    upsample: int = 20,
    reference_fft: np.ndarray | None = None,
    batch: int = 16,
    max_shift: float | None = None,
) -> tuple[np.ndarray, int, float]:
    """:func:`register_frames` without its warning: shifts, frames beyond the bound, bound."""
    ref_f = (
        fft.fft2(np.asarray(reference, dtype=np.float32))
        if reference_fft is None
        else reference_fft
    )
    out = np.empty((len(frames), 2))
    bound = search_bound(np.shape(ref_f), max_shift)
    beyond = 0
    # one BLAS thread: skimage's upsampled DFT is a matrix product whose rounding
    # depends on the thread count, and a 1/upsample-pixel tie can flip with it; the
    # same movie must register identically in any process (a Dask worker included)
    with fft.set_workers(-1), threadpool_limits(limits=1, user_api="blas"):
        for a in range(0, len(frames), batch):
            mov_f = fft.fft2(np.asarray(frames[a : a + batch], dtype=np.float32), axes=(-2, -1))
            for j in range(len(mov_f)):
                shift, _, _ = phase_cross_correlation(
                    ref_f,
                    mov_f[j],
                    space="fourier",
                    upsample_factor=upsample,
                    normalization=None,
                )
                # skimage returns the correction; we report the displacement. Plain
                # cross-correlation (normalization=None) is several times more precise
                # than phase correlation on shot-noise-limited frames.
                if np.abs(shift).max() > bound:
                    shift = _bounded_peak(ref_f, mov_f[j], bound)
                    beyond += 1
                out[a + j] = -shift
    return out, beyond, bound


def search_bound(shape: tuple[int, ...], max_shift: object) -> float:
    """The registration's search bound (pixels) for frames of ``shape``, checked.

    ``max_shift``, or a tenth of the frame's larger side when it is None.

    Raises
    ------
    ValueError
        When ``max_shift`` is neither None nor a finite number of pixels > 0
        (the rule the config and the command line check, :mod:`cainfer.extract.options`).
    """
    if max_shift is None:
        return 0.1 * max(shape)
    problem: str | None = "must be a number"
    if isinstance(max_shift, int | float | np.integer | np.floating) and not isinstance(
        max_shift, bool
    ):
        value = float(max_shift)
        if (problem := option_problem("max_shift", value)) is None:
            return value
    raise ValueError(
        f"max_shift = {max_shift!r} {problem} (or None: a tenth of the frame's larger side)"
    )


def _bounded_peak(ref_f: np.ndarray, mov_f: np.ndarray, bound: float) -> np.ndarray:
    """The correction (as skimage returns it) at the cross-correlation peak within ``bound``.

    The same cross-correlation skimage's ``phase_cross_correlation`` takes with
    ``normalization=None``; skimage has no bound on the search, so the peak
    within it is taken here and refined by a parabola through its neighbours
    along each axis (within half a pixel, and within the bound).
    """
    cc = np.abs(fft.ifft2(ref_f * np.conj(mov_f)))
    lags = [np.fft.fftfreq(n, 1.0 / n) for n in cc.shape]  # 0, 1, …, −1 per axis
    inside = (np.abs(lags[0])[:, None] <= bound) & (np.abs(lags[1])[None, :] <= bound)
    peak = np.unravel_index(np.argmax(np.where(inside, cc, -np.inf)), cc.shape)
    shift = np.empty(2)
    for ax in range(2):
        n = cc.shape[ax]
        idx = list(peak)
        vals = []
        for step in (-1, 0, 1):
            idx[ax] = (peak[ax] + step) % n
            vals.append(cc[tuple(idx)])
        den = vals[0] - 2.0 * vals[1] + vals[2]
        delta = 0.5 * (vals[0] - vals[2]) / den if den < 0 else 0.0
        # a peak on the bound is no local maximum: its parabola's vertex can lie far
        # outside; the refinement stays within half a pixel and the shift within the bound
        shift[ax] = np.clip(lags[ax][peak[ax]] + np.clip(delta, -0.5, 0.5), -bound, bound)
    return shift


def reference_fft(reference: np.ndarray) -> np.ndarray:
    """Fourier transform of a reference image, as :func:`register_frames` takes it."""
    return fft.fft2(np.asarray(reference, dtype=np.float32))


def shift_frame(frame: np.ndarray, displacement: np.ndarray, *, order: int = 1) -> np.ndarray:
    """Move a frame's content back by ``displacement`` (dy, dx) pixels (bilinear by default)."""
    return ndimage.shift(
        np.asarray(frame, dtype=np.float64), -np.asarray(displacement), order=order, mode="nearest"
    )
