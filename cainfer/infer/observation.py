"""Observation models: from the cell model's ΔF/F to the numbers the microscope recorded.

A fit is only as honest as what its likelihood assumes about the data. Every
quantity between the physics and the recorded numbers that extraction had to
estimate is a parameter here, with a prior centred on extraction's estimate:

``"fluorescence"`` (the default for traces from :func:`cainfer.extract_traces`)
    The ROI's mean fluorescence (counts),
    ``F(t) = F0 · b(t) · (1 + g · ΔF/F_model(t)) + r · F_neu(t) + ε(t)``:
    resting fluorescence of the cell ``F0`` (prior: log-normal around
    extraction's baseline, log-sd 0.5), neuropil contamination ``r`` of the
    measured annulus trace ``F_neu`` (prior: normal around the conventional
    0.7 of Chen et al. 2013, doi:10.1038/nature12354, sd 0.2; not truncated,
    so that a posterior pressed against 0 shows a bad annulus instead of
    hiding it), the ROI's ΔF/F gain ``g`` (log-normal, log-sd 0.05: light of
    other sources mixed into the ROI, registration's blur), and a slow
    multiplicative baseline ``b(t)`` (bleaching, focus drift; below).
``"dff"`` (the default for a plain ΔF/F trace)
    ``y(t) = a · ΔF/F_model(t) + o + s(t) + ε(t)``: a published or extracted
    ΔF/F carries a scale error ``a`` (its F0 and neuropil ratio were guesses;
    log-normal, log-sd 0.3), an offset ``o`` (its baseline percentile sits off
    the resting level; normal, sd 0.1) and a slow additive drift ``s(t)``.
``"dff_exact"``
    ``y(t) = ΔF/F_model(t) + ε(t)``: only for data made by the model itself.
``"ratio"`` (the default for traces from :func:`cainfer.extract.extract_ratio`)
    Both channels of a ratiometric dye, in counts, each with its own photon
    noise: ``F_1(t) = D · b(t) · (R_min + (R_max/β − R_min) f(t)) + r · B_1(t)``
    and ``F_2(t) = D · b(t) · (1 + (1/β − 1) f(t)) + r · B_2(t)`` (Grynkiewicz
    et al. 1985, doi:10.1016/S0021-9258(19)83641-4; ``f`` the dye's bound
    fraction from the cell model), with ``D`` set by the denominator's resting
    level ``F0`` (prior as for fluorescence, around its resting counts), the
    calibration constants ``R_min``, ``R_max`` and ``β`` shared by the ROIs
    of a fit with log-normal priors around the given calibration (log-sd 0.1),
    the local background ``B_λ`` scaled by ``r`` (normal around the multiple
    the extraction subtracted, 1 by default, relative sd 0.2)
    and one slow baseline ``b(t)`` for both channels (the dye bleaches as one).
    The numerator's resting level is then ``F0·R(c_rest)``: the ratio at rest
    carries the resting calcium.

The slow baseline (``b(t) = exp(s(t))`` for fluorescence) is a smooth random
function with a squared-exponential covariance of time scale ``ℓ`` (20 s by
default), in its Hilbert-space (cosine) approximation with Neumann boundaries
(Solin & Särkkä 2020, doi:10.1007/s11222-019-09886-w; Riutort-Mayol et al.
2023, doi:10.1007/s11222-022-10167-2): ``s(t) = A Σ_k w_k z_k φ_k(t)`` with
``φ_k(t) = √2 cos(πk(t − t_0)/T)``, ``z_k ~ N(0, 1)``, ``w_k ∝ exp(−(πkℓ/T)²/4)``,
plus a linear trend ``√3 x`` (``x`` from −1 to 1 over the recording) with the
weight of ``k = 1`` (cosines are flat at both ends; bleaching is steepest at
the start), normalised so that ``Σ w_k² = 1`` (so ``A`` is the prior sd of
``s(t)``: 0.3 in log fluorescence, 0.2 in ΔF/F). The basis has no constant term (``F0`` and
``o`` are the level) and no frequency above ``≈ 1.7/ℓ``: it cannot mimic a
transient that decays within seconds. Its amplitude is fixed, not a
hyperparameter, so the sampler meets no funnel. The sampled coordinates are
those of the basis rotated to rows orthogonal over the frames (same prior);
unrotated, the trend and the slowest cosine, nearly collinear, had a posterior
correlation of 1.00 on B1.

Noise ``ε`` grows with the signal: at frame ``t`` its sd is ``σ · x_t^p``,
with ``σ`` the sd at rest (half-normal, scale three times the robust noise
estimate), ``x_t`` the signal relative to rest (expected counts over their
resting level; ``1 + a·ΔF/F_model`` for ΔF/F input, so that the offset and
drift of a published trace, errors of its baseline, do not change its noise)
and ``p`` the exponent of the power-of-the-mean error model (uniform on
[0, 1]): 0 for read noise alone, 0.5 for shot noise, 1 for noise
proportional to the signal (laser power, residual motion). One exponent
rather than separate read, shot and proportional amplitudes: those trade off
with ``σ`` at rest (tried on three simulated GCaMP6f cells: a mixture of the
three with weights on the simplex mixed slowly, R-hat > 1.01 and bulk ESS <
400 for its weights, and moved no physical parameter). For fluorescence the
neuropil trace enters smoothed (:func:`denoised_background`: a noisy
regressor biases its coefficient ``r`` toward 0, and with it every parameter
``r`` trades off with), and the noise left in it adds ``(r σ_neu)²`` to the
variance; the same holds for both backgrounds of ``"ratio"``. Residuals are AR(1) by default: the
standardised residuals ``u_t = ε_t/sd_t`` follow
``u_t = ρ u_{t−1} + √(1 − ρ²) η_t`` with ``ρ`` uniform on [−0.5, 0.99] and
``η`` standard normal (or Student-t with ``ν`` degrees of freedom,
``likelihood="student_t"``); a frame whose predecessor is missing starts
afresh from the stationary distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, get_args

import numpy as np

from cainfer._options import Drift, Observation, Residuals

OBSERVATIONS = get_args(Observation)
RESIDUALS = get_args(Residuals)
DRIFTS = get_args(Drift)

NEUROPIL_PRIOR = (0.7, 0.2)  # mean, sd (Chen et al. 2013: 0.7); 0 lies 3.5 sd below
F0_LOG_SD = 0.5  # prior log-sd of F0 around extraction's baseline
GAIN_LOG_SD = 0.05  # prior log-sd of the ROI's ΔF/F gain (light of other sources mixed in)
SCALE_LOG_SD = 0.3  # prior log-sd of the scale of a ΔF/F input
OFFSET_SD = 0.1  # prior sd of the offset of a ΔF/F input
RHO_BOUNDS = (-0.5, 0.99)
NOISE_EXPONENT = (0.0, 1.0)  # bounds of p in sd ∝ signal^p (read noise .. proportional)
SLOW_AMPLITUDE = {"fluorescence": 0.3, "dff": 0.2, "ratio": 0.3}  # prior sd of s(t)
CALIBRATION_LOG_SD = 0.1  # prior log-sd of R_min, R_max and β around the given calibration
# relative sd of the background scale r of a ratiometric fit around the multiple the
# extraction subtracted (ObservedData.background): the annulus is a guess of what lies
# over the cell, as the neuropil is for a single channel
BACKGROUND_PRIOR_REL_SD = 0.2


@dataclass(frozen=True)
class ObservedData:
    """What a fit sees of the recording, per ROI.

    Attributes
    ----------
    kind : {"fluorescence", "dff", "dff_exact", "ratio"}
        The observation model.
    y : numpy.ndarray
        ``(roi, time)``: fluorescence F (counts) or ΔF/F (for ``"ratio"``,
        the numerator channel's counts); NaN where missing.
    neuropil : numpy.ndarray or None
        ``(roi, time)`` neuropil trace F_neu (counts) for ``"fluorescence"``
        (the numerator's background for ``"ratio"``); None when there is
        none (the term is then left out).
    f0 : numpy.ndarray or None
        ``(roi,)`` prior centre of the cell's resting fluorescence (counts;
        the denominator's for ``"ratio"``).
    y2, neuropil2 : numpy.ndarray or None
        ``"ratio"``: the denominator channel's counts and background.
    calibration : RatioCalibration or None
        ``"ratio"``: the prior centres of ``R_min``, ``R_max`` and ``β``.
    background : float
        ``"ratio"``: the multiple of the background annulus the extraction
        subtracted, the prior centre of the background scale ``r``.
    neuropil_sd, neuropil2_sd : numpy.ndarray or None
        ``(roi,)`` noise sd left in ``neuropil`` and ``neuropil2`` (counts)
        when they were smoothed (:func:`denoised_background`); None: the
        traces are as measured, their noise is estimated from them.
    neuropil_prior : (float, float)
        Mean and sd of the normal prior of the neuropil ratio (default
        :data:`NEUROPIL_PRIOR`; traces from another tool carry their own, see
        :mod:`cainfer.extract.imported`).
    """

    kind: str
    y: np.ndarray
    neuropil: np.ndarray | None = None
    f0: np.ndarray | None = None
    y2: np.ndarray | None = None
    neuropil2: np.ndarray | None = None
    calibration: Any = None
    background: float = 1.0
    neuropil_sd: np.ndarray | None = None
    neuropil2_sd: np.ndarray | None = None
    neuropil_prior: tuple[float, float] = NEUROPIL_PRIOR

    @cached_property
    def rest_level(self) -> np.ndarray:
        """``(roi,)`` resting level of the expected signal (counts, or 1 for ΔF/F)."""
        if self.kind in ("fluorescence", "ratio"):
            return np.array([float(np.nanmedian(row)) for row in self.y])
        return np.ones(self.y.shape[0])

    @cached_property
    def rest_level2(self) -> np.ndarray:
        """``(roi,)`` resting level of a ratiometric fit's denominator channel (counts)."""
        assert self.y2 is not None
        return np.array([float(np.nanmedian(row)) for row in self.y2])

    @cached_property
    def neuropil_noise(self) -> np.ndarray:
        """``(roi,)`` noise sd of the neuropil trace (counts; 0 without one)."""
        return _trace_noise(self.neuropil, self.neuropil_sd, self.y.shape[0])

    @cached_property
    def neuropil2_noise(self) -> np.ndarray:
        """``(roi,)`` noise sd of a ratiometric fit's denominator background (counts)."""
        return _trace_noise(self.neuropil2, self.neuropil2_sd, self.y.shape[0])

    def select(self, rows: Sequence[int]) -> ObservedData:
        """The same data restricted to some ROIs (by position)."""
        idx = list(rows)

        def sel(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return ObservedData(
            self.kind,
            self.y[idx],
            sel(self.neuropil),
            sel(self.f0),
            sel(self.y2),
            sel(self.neuropil2),
            self.calibration,
            self.background,
            sel(self.neuropil_sd),
            sel(self.neuropil2_sd),
            self.neuropil_prior,
        )


def _trace_noise(trace: np.ndarray | None, sd: np.ndarray | None, n_roi: int) -> np.ndarray:
    if trace is None:
        return np.zeros(n_roi)
    if sd is not None:
        return np.asarray(sd, dtype=float)
    return np.array([noise_scale(row) for row in trace])


def noise_scale(y: np.ndarray) -> float:
    """Robust noise sd from first differences (MAD), for the noise prior's scale."""
    d = np.diff(y[np.isfinite(y)])
    mad = float(np.median(np.abs(d - np.median(d)))) * 1.4826 / math.sqrt(2) if d.size else 0.0
    return max(mad, 1e-3 * max(float(np.nanstd(y)), 1e-6), 1e-6)


# Gaussian filter widths (sd, frames) among which denoised_background chooses; 0: none
SMOOTHING_WIDTHS = (0.0, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)


def denoised_background(trace: np.ndarray) -> tuple[np.ndarray, float]:
    """A background trace with as much of its own noise smoothed away as helps the fit.

    The neuropil term ``r·F_neu`` (and the ratiometric ``r·B_λ``) regresses
    the ROI on a trace that was itself measured with photon noise. A noisy
    regressor biases its coefficient toward 0 (regression dilution, the
    errors-in-variables problem: Fuller 1987, *Measurement Error Models*,
    ch. 1) by the fraction ``σ²/(V + σ²)`` of its variance that is noise,
    and adding the regressor's noise to the variance does not undo that.
    Where ``r`` trades off with the cell's own parameters (a background
    holding the same dye, its channels moving as the cell's do) a few per
    cent of dilution moves the cell's parameters by two posterior sds.
    Smoothing removes noise but blurs the background's own fast changes
    (a transient's onset), and what it blurs is left in the ROI's residuals
    as structure the noise model does not expect. So the width of a
    Gaussian filter (among :data:`SMOOTHING_WIDTHS`; 0: none) is the one
    that minimises the energy of the two errors the fit cannot account for,
    both in units of ``r²``:

    - the blur ``‖(I − S)B‖²``, estimated without bias as
      ``‖(I − S)y‖² − σ² tr((I − S)ᵀ(I − S))`` (the reasoning of Stein's
      unbiased risk estimate: Stein 1981, doi:10.1214/aos/1176345632);
    - the dilution left, ``T·(σ²Σw²)²/V``: the coefficient falls short by
      ``σ²Σw²/V`` of the trace's variance ``V``, leaving that fraction of
      the background in the residuals;

    with ``σ`` the trace's white-noise sd from its frame-to-frame
    differences, ``w`` the filter's weights and ``T`` the number of frames.
    A background that varies far more than its noise is left as it is (the
    dilution is negligible); a flat, noisy one is smoothed. NaN frames are
    filled by the same filter (normalised convolution).

    Parameters
    ----------
    trace : numpy.ndarray
        ``(time,)`` background counts; NaN where missing.

    Returns
    -------
    smoothed : numpy.ndarray
        ``(time,)`` the trace the model uses (counts).
    sd : float
        The noise sd that remains in it at each frame (counts):
        ``σ·√(Σ w²)`` for filter weights ``w``.
    """
    from scipy.ndimage import convolve1d, gaussian_filter1d

    b = np.asarray(trace, dtype=float)
    ok = np.isfinite(b)
    sigma = noise_scale(b)
    n = float(np.sum(ok))
    if n < 3:
        return b.copy(), sigma
    filled = np.where(ok, b, 0.0)
    weight = ok.astype(float)
    var = max(float(np.var(b[ok])) - sigma**2, 1e-6 * sigma**2)  # V: the trace less its noise
    best = (n * sigma**4 / var, b.copy(), sigma)  # no smoothing: all of the dilution
    for s in SMOOTHING_WIDTHS[1:]:
        if 4.0 * s >= b.size:
            break
        covered = gaussian_filter1d(weight, s, mode="constant")
        den = np.maximum(covered, 1e-12)
        sm = gaussian_filter1d(filled, s, mode="constant") / den
        impulse = np.zeros(2 * int(4.0 * s + 0.5) + 1)  # the filter's own truncation
        impulse[impulse.size // 2] = 1.0
        w = gaussian_filter1d(impulse, s, mode="constant")
        ww = float(w @ w)
        trace_s = float(np.sum(w[w.size // 2] / den[ok]))  # tr(S) of the normalised filter
        trace_sts = float(np.sum((convolve1d(weight, w**2, mode="constant") / den**2)[ok]))
        blur = float(np.sum((b[ok] - sm[ok]) ** 2))
        blur -= sigma**2 * (n - 2.0 * trace_s + trace_sts)
        loss = blur + n * (sigma**2 * ww) ** 2 / var
        if loss < best[0]:
            best = (loss, np.where(covered > 1e-12, sm, np.nan), sigma * math.sqrt(ww))
    return best[1], best[2]


def slow_basis(time: np.ndarray, timescale: float) -> np.ndarray:
    """Basis ``(K, time)`` of a smooth function of time scale ``timescale``.

    The weighted cosines ``w_k φ_k(t)`` and the trend (module docstring),
    rotated to rows orthogonal over the frames: ``z @ basis`` with
    ``z ~ N(0, I)`` has the same prior as with the unrotated rows (variance
    ≈ 1 at every frame), and the coordinates ``z`` are not tied together by
    the overlap of the trend with the slowest cosines. ``K`` stops where the
    weight falls below 1e-3 of the first.

    Parameters
    ----------
    time : numpy.ndarray
        Frame times (s), increasing.
    timescale : float
        Length scale ℓ of the squared-exponential covariance (s), > 0.
    """
    if not (math.isfinite(timescale) and timescale > 0):
        raise ValueError(f"drift_timescale = {timescale!r} must be a positive number of seconds")
    t = np.asarray(time, dtype=float)
    span = float(t[-1] - t[0]) if t.size > 1 else 0.0
    if span <= 0:
        return np.zeros((0, t.size))
    # exp(-(πkℓ/T)²/4) ≥ 1e-3 · its k=1 value  <=>  k² ≤ 1 + 4 ln(1000) (T/πℓ)²
    ratio = span / (math.pi * timescale)
    k_max = max(1, math.floor(math.sqrt(1 + 4 * math.log(1e3) * ratio**2)))
    k = np.arange(1, k_max + 1)
    w = np.exp(-((math.pi * k * timescale / span) ** 2) / 4)
    phi = math.sqrt(2) * np.cos(np.pi * k[:, None] * (t[None, :] - t[0]) / span)
    # a linear trend with the weight of the slowest cosine: the cosines have zero slope
    # at both ends (Neumann), and bleaching is steepest at the start
    x = 2.0 * (t - t[0]) / span - 1.0
    w = np.concatenate([[w[0]], w])
    phi = np.concatenate([math.sqrt(3) * x[None, :], phi])
    w /= np.sqrt(np.sum(w**2))
    basis = w[:, None] * phi
    # The trend and the first cosines overlap over the recording (the trend and
    # cos(πt/T) correlate at −0.99), so the data pin their sum and leave their
    # difference to the prior: a posterior correlation of 1 between two sampled
    # coordinates. Rotating the rows to orthogonal ones, U^T·basis with U from its
    # SVD, keeps the prior of s(t) exactly (z ~ N(0, I) is rotation invariant) and
    # decorrelates the coordinates a white-noise likelihood sees.
    _, s, vt = np.linalg.svd(basis, full_matrices=False)
    rows = s[:, None] * vt
    # a fixed sign per row (its largest entry positive), whatever the LAPACK build returns
    lead = rows[np.arange(rows.shape[0]), np.argmax(np.abs(rows), axis=1)]
    return rows * np.where(lead < 0, -1.0, 1.0)[:, None]


# ---------------------------------------------------------------- the likelihood


def _ar1_terms(xp: Any, u: Any, rho: Any, prev_ok: np.ndarray) -> tuple[Any, Any]:
    """Innovations ``η_t`` and their scales ``√(1 − ρ_t²)`` of standardised residuals ``u``.

    ``xp`` is numpy or pytensor.tensor; ``u`` has time last; ``rho`` broadcasts
    against ``u[..., :1]``; ``prev_ok[t]`` says frame t−1 exists and is observed.
    """
    u_prev = xp.concatenate([xp.zeros_like(u[..., :1]), u[..., :-1]], axis=-1)
    r = rho * prev_ok
    s = xp.sqrt(1.0 - r**2)
    return (u - r * u_prev) / s, s


def _std_logpdf(xp: Any, eta: Any, nu: Any) -> Any:
    """Log density of a standard normal (``nu`` None) or standard Student-t."""
    if nu is None:
        return -0.5 * eta**2 - 0.5 * math.log(2 * math.pi)
    if xp is np:
        from scipy.special import gammaln
    else:
        from pytensor.tensor import gammaln
    return (
        gammaln((nu + 1) / 2)
        - gammaln(nu / 2)
        - 0.5 * xp.log(nu * math.pi)
        - (nu + 1) / 2 * xp.log1p(eta**2 / nu)
    )


def pointwise_loglik(
    xp: Any,
    y: np.ndarray,
    mu: Any,
    sd: Any,
    rho: Any,
    nu: Any,
    mask: np.ndarray,
) -> Any:
    """Per-frame log-likelihood ``log p(y_t | y_{t−1})`` (zero where ``mask`` is False).

    ``xp`` is numpy (draws along leading axes) or pytensor.tensor. ``rho`` None
    means white residuals.
    """
    y0 = np.where(mask, y, 0.0)
    u = (y0 - mu) / sd
    if rho is None:
        eta, s = u, 1.0
    else:
        prev_ok = np.concatenate([[False], mask[:-1] & mask[1:]]).astype(float)
        eta, s = _ar1_terms(xp, u, rho, prev_ok)
    ll = _std_logpdf(xp, eta, nu) - xp.log(s) - xp.log(sd)
    return ll * mask


def total_loglik(
    y: np.ndarray,
    mu: Any,
    sd: Any,
    rho: Any,
    nu: Any,
    mask: np.ndarray,
    *,
    log_sd: Any = None,
) -> Any:
    """``Σ_t log p(y_t | y_{t−1})`` as one PyTensor scalar (the model's likelihood).

    The same sum as :func:`pointwise_loglik`; a trace with every frame
    observed (the usual case) takes a shorter graph: the AR(1) innovation
    scale ``√(1 − ρ²)`` is one scalar, not a vector, and nothing is masked.
    Fewer elementwise operations make each gradient evaluation cheaper.
    ``log_sd`` (optional, with every frame observed): the noise sd's
    logarithm per frame in place of ``sd`` (:func:`noise_log_sd`), which
    spares a power, a logarithm and their gradients per frame.
    """
    import pytensor.tensor as pt

    if log_sd is not None and mask.all() and mask.size >= 2:
        u = (y - mu) * pt.exp(-log_sd)
        sum_log_sd = pt.sum(log_sd)
    else:
        if sd is None:
            sd = pt.exp(log_sd)
        if not mask.all() or mask.size < 2:
            return pt.sum(pointwise_loglik(pt, y, mu, sd, rho, nu, mask))
        u = (y - mu) / sd
        sum_log_sd = pt.sum(pt.log(sd))
    if rho is None:
        return pt.sum(_std_logpdf(pt, u, nu)) - sum_log_sd
    s = pt.sqrt(1.0 - rho**2)
    eta = (u[1:] - rho * u[:-1]) / s
    first = _std_logpdf(pt, u[0], nu)
    return first + pt.sum(_std_logpdf(pt, eta, nu)) - (mask.size - 1) * pt.log(s) - sum_log_sd


def relative_signal(xp: Any, kind: str, mu: Any, level: float, dff: Any, scale: Any) -> Any:
    """The signal relative to its resting level, ``x_t``, which sets the noise.

    Fluorescence: the expected counts ``mu`` over their resting ``level``. ΔF/F
    input: ``1 + scale · dff`` from the cell model's ΔF/F (the recorded trace's
    offset and drift are errors of its baseline, not light). Floored at 1e-3
    (a signal at or below zero still has read noise).
    """
    x = mu / level if kind == "fluorescence" else 1.0 + scale * dff
    return xp.maximum(x, 1e-3)


def noise_sd(xp: Any, x: Any, sigma: Any, power: Any, extra_var: Any = 0.0) -> Any:
    """Noise sd per frame: ``√((σ · x^p)² + extra_var)``.

    ``x`` is the signal relative to rest (:func:`relative_signal`); ``power``
    (``p``) None means ``σ`` at every frame. ``extra_var`` is the variance the
    neuropil term brings with it, ``(r σ_neu)²``: ``F_neu`` is measured with
    noise, and without it in the variance the likelihood would pull ``r`` down
    to shed that noise (the errors-in-variables bias).
    """
    if power is None:
        sd = sigma * (xp.ones_like(x) if xp is np else 1.0 + 0.0 * x)
    else:
        sd = sigma * x**power
    if _no_extra(extra_var):
        return sd  # no neuropil noise: √(sd²) would cost two more operations and their gradient
    return xp.sqrt(sd**2 + extra_var)


def _no_extra(extra_var: Any) -> bool:
    """``extra_var`` is the number 0 (not a tensor): no variance to add."""
    return isinstance(extra_var, int | float) and extra_var == 0


def noise_log_sd(xp: Any, x: Any, sigma: Any, power: Any, extra_var: Any = 0.0) -> Any:
    """The logarithm of :func:`noise_sd`: ``log σ + p · log x`` without extra variance.

    With ``extra_var``, ``½ log(exp(2 (log σ + p log x)) + extra_var)``. In the
    likelihood's graph this takes one logarithm and one exponential per frame
    where the sd itself takes a power, a square root and the logarithm of the
    result, and their gradients as many again.
    """
    log_sd = xp.log(sigma) + power * xp.log(x)
    if _no_extra(extra_var):
        return log_sd
    return 0.5 * xp.log(xp.exp(2.0 * log_sd) + extra_var)


def neuropil_variance(data: ObservedData, r: int, ratio: Any) -> Any:
    """``(r σ_neu)²``: the neuropil trace's noise, carried into ROI ``r`` by ``r·F_neu``."""
    if data.kind != "fluorescence" or ratio is None or data.neuropil is None:
        return 0.0
    return (ratio * float(data.neuropil_noise[r])) ** 2


def simulate_residuals(
    rng: np.random.Generator, sd: np.ndarray, rho: np.ndarray | None, nu: np.ndarray | None
) -> np.ndarray:
    """Noise draws of shape ``sd.shape`` (draws first, time last) from the residual model."""
    shape = sd.shape
    if nu is None:
        eta = rng.standard_normal(shape)
    else:
        eta = rng.standard_t(np.broadcast_to(nu.reshape(-1, *[1] * (len(shape) - 1)), shape))
    if rho is None:
        return sd * eta
    r = rho.reshape(-1, *[1] * (len(shape) - 2)) if len(shape) > 1 else rho
    s = np.sqrt(1.0 - r**2)
    u = np.empty(shape)
    u[..., 0] = eta[..., 0]
    for t in range(1, shape[-1]):
        u[..., t] = r * u[..., t - 1] + s * eta[..., t]
    return sd * u


# ---------------------------------------------------------------- PyMC


@dataclass(frozen=True)
class Options:
    """Observation settings (validated)."""

    likelihood: str = "normal"
    residuals: str = "ar1"
    drift: str = "smooth"
    drift_timescale: float = 20.0


def check_options(options: Options) -> None:
    """Raise ValueError naming the allowed values of a bad setting."""
    for name, allowed in (
        ("likelihood", ("normal", "student_t")),
        ("residuals", RESIDUALS),
        ("drift", DRIFTS),
    ):
        value = getattr(options, name)
        if value not in allowed:
            hint = (
                " (the polynomial drift degree was replaced by a smooth baseline: "
                "drift='smooth' with drift_timescale in s)"
                if name == "drift" and isinstance(value, int | float)
                else ""
            )
            raise ValueError(f"{name} {value!r}; allowed: {', '.join(allowed)}{hint}")
    ts = options.drift_timescale
    if not (isinstance(ts, int | float) and math.isfinite(ts) and ts > 0):
        raise ValueError(f"drift_timescale = {ts!r} must be a positive number of seconds")


# the observation model's variables that summaries report (besides σ), in this order
REPORTED = ("F0", "dff_gain", "neuropil_ratio", "dff_scale", "dff_offset", "R_min", "R_max",
            "beta", "background_ratio", "sigma_den", "noise_exponent", "rho", "nu")  # fmt: skip


def _roi_helpers(several: bool) -> tuple[Any, Any]:
    """``pick(v, r)``: ROI ``r``'s value of a variable; ``per_roi(a)``: a prior's argument."""

    def pick(v: Any, r: int) -> Any:
        return None if v is None else (v[r] if several else v)

    def per_roi(values: np.ndarray) -> Any:
        return values if several else float(values[0])

    return pick, per_roi


def add_likelihood(
    dff_model: Sequence[Any],
    data: ObservedData,
    time: np.ndarray,
    options: Options,
    *,
    several: bool,
    bound: Sequence[tuple[Any, Any]] | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> None:
    """Add the observation model's priors and its log-likelihood to the current PyMC model.

    Parameters
    ----------
    dff_model : sequence of TensorVariable
        The cell model's ΔF/F of each ROI over all frames.
    data : ObservedData
        What was recorded.
    time : numpy.ndarray
        Frame times (s).
    options : Options
        Noise, residual and drift settings.
    several : bool
        One value per ROI (dims ``"roi"``) instead of scalars.
    bound : sequence of (TensorVariable, TensorVariable), optional
        ``"ratio"``: each ROI's bound fraction of the dye over all frames and
        at rest.
    inputs : mapping, optional
        One ROI's recording as graph inputs (shared variables, so that a
        compiled model takes another ROI's numbers without compiling again),
        by the names of :func:`shared_input_values`. ``data`` then only says what the
        recording holds (its kind, a neuropil trace, missing frames: none).
    """
    import pymc as pm
    import pytensor.tensor as pt

    kind = data.kind
    if inputs is not None and (several or kind == "ratio" or not np.isfinite(data.y).all()):
        raise ValueError("graph inputs are for one ROI with every frame recorded, not a ratio")
    if kind == "ratio":
        if bound is None:
            raise ValueError("a ratiometric observation needs the dye's bound fraction")
        _add_ratio_likelihood(bound, data, time, options, several=several)
        return
    n_roi = data.y.shape[0]
    dims = "roi" if several else None
    pick, per_roi = _roi_helpers(several)

    noise0 = np.array([noise_scale(row) for row in data.y])
    sigma_scale = 3.0 * (inputs["noise0"] if inputs is not None else per_roi(noise0))
    sigma = pm.HalfNormal("sigma", sigma=sigma_scale, dims=dims)
    power = None if kind == "dff_exact" else pm.Uniform("noise_exponent", *NOISE_EXPONENT,
                                                         dims=dims)  # fmt: skip
    rho = pm.Uniform("rho", *RHO_BOUNDS, dims=dims) if options.residuals == "ar1" else None
    nu = pm.Gamma("nu", alpha=2.0, beta=0.1) if options.likelihood == "student_t" else None
    basis = None
    if kind != "dff_exact" and options.drift == "smooth":
        basis = slow_basis(time, options.drift_timescale)
        if basis.shape[0] == 0:
            basis = None
    if basis is not None:
        shape = (n_roi, basis.shape[0]) if several else (basis.shape[0],)
        z = pm.Normal("drift_z", 0.0, 1.0, shape=shape)
        amp = SLOW_AMPLITUDE[kind]
    ratio = None  # the neuropil ratio: fluorescence with a neuropil trace only
    if kind == "fluorescence":
        if data.f0 is None:
            raise ValueError("fluorescence observations need a prior centre for F0")
        log_f0 = inputs["log_f0"] if inputs is not None else per_roi(np.log(data.f0))
        f0 = pm.LogNormal("F0", mu=log_f0, sigma=F0_LOG_SD, dims=dims)
        gain = pm.LogNormal("dff_gain", mu=0.0, sigma=GAIN_LOG_SD, dims=dims)
        if data.neuropil is not None:
            m, s = data.neuropil_prior
            if inputs is not None:
                m, s = inputs["neuropil_prior"][0], inputs["neuropil_prior"][1]
            ratio = pm.Normal("neuropil_ratio", mu=m, sigma=s, dims=dims)
    elif kind == "dff":
        ridge: dict[str, Any] = {} if inputs is None else {"g_ref": inputs["g_ref"]}
        scale, scale_logp = _scale_along_the_amplitude_ridge(
            dff_model, data, several=several, **ridge
        )
        offset = pm.Normal("dff_offset", mu=0.0, sigma=OFFSET_SD, dims=dims)
    levels = data.rest_level
    total = scale_logp if kind == "dff" else 0.0
    for r in range(n_roi):
        d = dff_model[r]
        slow = amp * pt.dot(pick(z, r), basis) if basis is not None else 0.0
        if kind == "fluorescence":
            mu = pick(f0, r) * pt.exp(slow) * (1.0 + pick(gain, r) * d)
            if ratio is not None and data.neuropil is not None:
                neu = data.neuropil[r] if inputs is None else inputs["neuropil"]
                mu = mu + pick(ratio, r) * neu
        elif kind == "dff":
            mu = pick(scale, r) * d + pick(offset, r) + slow
        else:
            mu = d
        extra = neuropil_variance(data, r, pick(ratio, r))
        if inputs is not None and ratio is not None and data.neuropil is not None:
            extra = (ratio * inputs["neuropil_noise"]) ** 2
        a = pick(scale, r) if kind == "dff" else 1.0
        level = float(levels[r]) if inputs is None else inputs["rest_level"]
        x = relative_signal(pt, kind, mu, level, d, a)
        mask = np.isfinite(data.y[r])
        y = data.y[r] if inputs is None else inputs["y"]
        if power is not None and mask.all():
            log_sd = noise_log_sd(pt, x, pick(sigma, r), pick(power, r), extra)
            total = total + total_loglik(y, mu, None, pick(rho, r), nu, mask, log_sd=log_sd)
        else:
            sd = noise_sd(pt, x, pick(sigma, r), pick(power, r), extra)
            total = total + total_loglik(y, mu, sd, pick(rho, r), nu, mask)
    pm.Potential("loglik", total)


def shared_input_values(data: ObservedData) -> dict[str, np.ndarray]:
    """The numbers of one ROI's recording a compiled model takes as inputs, by name.

    What :func:`add_likelihood` reads from ``inputs`` (``data`` holds one ROI).
    """
    y = data.y[0]
    nan = np.array(np.nan)
    return {
        "y": y,
        "neuropil": data.neuropil[0] if data.neuropil is not None else np.zeros_like(y),
        "neuropil_noise": np.array(float(data.neuropil_noise[0])),
        "rest_level": np.array(float(data.rest_level[0])),
        "noise0": np.array(noise_scale(y)),
        "log_f0": np.array(math.log(float(data.f0[0]))) if data.f0 is not None else nan,
        "neuropil_prior": np.asarray(data.neuropil_prior, dtype=float),
        "g_ref": np.array(log_spread(data.y)[0]),
    }


def log_spread(y: np.ndarray) -> np.ndarray:
    """``(roi,)`` log sd of each ROI's recorded numbers (floored at 1e-9)."""
    return np.array([math.log(max(float(np.nanstd(row)), 1e-9)) for row in y])


def _scale_along_the_amplitude_ridge(
    dff_model: Sequence[Any], data: ObservedData, *, several: bool, g_ref: Any = None
) -> tuple[Any, Any]:
    """``dff_scale`` (prior ``LogNormal(0, SCALE_LOG_SD)``) in coordinates the data pin.

    A ΔF/F input fixes the size of its transients, ``a · sd_t(d)`` (``a`` the
    scale, ``d`` the cell model's ΔF/F), far better than either factor: ``a``
    trades off with everything that sets the model's amplitude (the influx
    amplitude, κ_S, the indicator's kinetics), along a curved ridge a linear
    mass matrix does not follow. With ``log a = σ·ζ``, ``ζ ~ N(0, 1)``, the
    sampled variable is ``z = ζ + (g(θ) − g_ref)/σ``, ``g = log sd_t(d)`` and
    ``g_ref`` the log sd of the recording: given the cell's parameters θ,
    ``z ~ N((g(θ) − g_ref)/σ, 1)``. A shear with unit Jacobian, so the joint
    prior is exactly the stated one (``a`` stays ``LogNormal(0, σ)``
    independent of θ); only the sampler's coordinates change, as for
    :func:`_r_min_along_the_rest_ridge`.

    Returns the scale and the log density of ``z`` given θ, which the caller
    adds to the likelihood's potential: ``z`` itself is declared flat, so
    that every use of the model's ΔF/F lies in one term and its gradient
    costs one adjoint solve (as an ordinary prior, PyMC builds that term
    apart from the likelihood, and the gradient then runs the adjoint twice:
    1.5× the cost per gradient on B1).
    """
    import pymc as pm
    import pytensor.tensor as pt

    _, per_roi = _roi_helpers(several)
    dims = "roi" if several else None
    sd = SCALE_LOG_SD
    if g_ref is None:
        g_ref = per_roi(log_spread(data.y))
    # log sd of the model's ΔF/F over the frames; the floor keeps a flat trace finite
    g = pt.stack([0.5 * pt.log(pt.var(d) + 1e-12) for d in dff_model])
    g = g if several else g[0]
    z = pm.Flat("dff_scale_z", dims=dims)
    scale = pm.Deterministic("dff_scale", pt.exp(sd * z - g + g_ref), dims=dims)
    zeta = z - (g - g_ref) / sd
    return scale, pt.sum(-0.5 * zeta**2 - 0.5 * math.log(2.0 * math.pi))


# sampled stand-ins of reported variables: name -> (reported name, its log-normal prior's sd)
SHEARED = {"dff_scale_z": ("dff_scale", SCALE_LOG_SD)}


def _add_ratio_likelihood(
    bound: Sequence[tuple[Any, Any]],
    data: ObservedData,
    time: np.ndarray,
    options: Options,
    *,
    several: bool,
) -> None:
    """The two-channel likelihood of a ratiometric recording (module docstring)."""
    import pymc as pm
    import pytensor.tensor as pt

    assert data.y2 is not None and data.f0 is not None and data.calibration is not None
    cal = data.calibration
    n_roi = data.y.shape[0]
    dims = "roi" if several else None
    pick, per_roi = _roi_helpers(several)

    # one setup, one calibration: shared by the ROIs of the fit
    r_max = pm.LogNormal("R_max", mu=math.log(cal.r_max), sigma=CALIBRATION_LOG_SD)
    beta = pm.LogNormal("beta", mu=math.log(cal.beta), sigma=CALIBRATION_LOG_SD)
    has_bg = data.neuropil is not None and data.neuropil2 is not None
    ratio = None
    if has_bg:
        m = data.background
        ratio = pm.Normal("background_ratio", mu=m, sigma=BACKGROUND_PRIOR_REL_SD * m, dims=dims)
    if several:
        r_min = pm.LogNormal("R_min", mu=math.log(cal.r_min), sigma=CALIBRATION_LOG_SD)
    else:
        r_min = _r_min_along_the_rest_ridge(data, bound[0][1], ratio)
    f0 = pm.LogNormal("F0", mu=per_roi(np.log(data.f0)), sigma=F0_LOG_SD, dims=dims)
    noise1 = np.array([noise_scale(row) for row in data.y])
    noise2 = np.array([noise_scale(row) for row in data.y2])
    sigma = pm.HalfNormal("sigma", sigma=per_roi(3.0 * noise1), dims=dims)
    sigma2 = pm.HalfNormal("sigma_den", sigma=per_roi(3.0 * noise2), dims=dims)
    power = pm.Uniform("noise_exponent", *NOISE_EXPONENT, dims=dims)
    rho = pm.Uniform("rho", *RHO_BOUNDS, dims=dims) if options.residuals == "ar1" else None
    nu = pm.Gamma("nu", alpha=2.0, beta=0.1) if options.likelihood == "student_t" else None
    basis = slow_basis(time, options.drift_timescale) if options.drift == "smooth" else None
    z = None
    if basis is not None and basis.shape[0]:
        shape = (n_roi, basis.shape[0]) if several else (basis.shape[0],)
        z = pm.Normal("drift_z", 0.0, 1.0, shape=shape)
    total = 0.0
    for r in range(n_roi):
        f, f_rest = bound[r]
        slow = SLOW_AMPLITUDE["ratio"] * pt.dot(pick(z, r), basis) if z is not None else 0.0
        d = pick(f0, r) / channel_shapes(r_min, r_max, beta, f_rest)[1] * pt.exp(slow)
        shapes = channel_shapes(r_min, r_max, beta, f)
        channels = ((data.y, data.neuropil, data.neuropil_noise, data.rest_level, sigma),
                    (data.y2, data.neuropil2, data.neuropil2_noise, data.rest_level2,
                     sigma2))  # fmt: skip
        for shape, (y, bg, bg_sd, level, sig) in zip(shapes, channels, strict=True):
            mu, sd = _channel_mean_sd(
                pt, d * shape, float(level[r]), None if bg is None else bg[r], float(bg_sd[r]),
                None if ratio is None else pick(ratio, r), pick(sig, r), pick(power, r),
            )  # fmt: skip
            mask = np.isfinite(y[r])
            total = total + total_loglik(y[r], mu, sd, pick(rho, r), nu, mask)
    pm.Potential("loglik", total)


def _r_min_along_the_rest_ridge(data: ObservedData, f_rest: Any, bg_ratio: Any) -> Any:
    """``R_min`` in coordinates that follow the resting ratio (one ROI).

    The data fix the ratio at rest far better than what makes it: the model's
    ``R(c_rest) = (R_min·β + R_max·x0)/(β + x0)`` with ``x0 = (c_rest/K_d)^n``
    must equal the recorded ``(N − r·B_1)/(D − r·B_2)`` (resting counts ``N``,
    ``D``, backgrounds ``B_λ`` scaled by ``r``). ``R_min``, ``x0`` and ``r``
    trade off along a narrow ridge, ``a · d log R_min ≈ −b · d log x0 + g · dr``.
    The sampled variable is ``z' = z + (k/σ)(log x0 − m) − (h/σ)(r − 1)`` for
    ``log R_min = μ + σ z`` (``z ~ N(0, 1)``, the stated log-normal prior;
    ``k = b/a``, ``h = g/a``), so its prior given ``x0`` and ``r`` is normal
    with that mean and sd 1: a shear of the same joint prior, exact, that
    turns the ridge into an axis. The slopes are taken at the calibration's
    values and the resting ratio the recording shows; ``m`` is its ``log x0``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    cal = data.calibration
    assert data.y2 is not None
    m_bg = data.background
    num = data.y[0] - (m_bg * data.neuropil[0] if data.neuropil is not None else 0)
    den = data.y2[0] - (m_bg * data.neuropil2[0] if data.neuropil2 is not None else 0)
    r_obs = float(np.nanmedian(num) / np.nanmedian(den))
    lo, hi = cal.r_min * 1.01, cal.r_max * 0.99
    r_obs = min(max(r_obs, lo), hi)
    x_ref = cal.beta * (r_obs - cal.r_min) / (cal.r_max - r_obs)
    a = cal.r_min * cal.beta / (cal.r_min * cal.beta + cal.r_max * x_ref)
    b = (
        x_ref
        * cal.beta
        * (cal.r_max - cal.r_min)
        / ((cal.beta + x_ref) * (cal.r_min * cal.beta + cal.r_max * x_ref))
    )
    k, m, sd = b / a, math.log(x_ref), CALIBRATION_LOG_SD
    log_x0 = pt.log(f_rest) - pt.log1p(-f_rest)
    shift = k * (log_x0 - m)
    if bg_ratio is not None:
        assert data.neuropil is not None and data.neuropil2 is not None
        n1, n2 = float(data.rest_level[0]), float(data.rest_level2[0])
        b1, b2 = float(np.nanmedian(data.neuropil[0])), float(np.nanmedian(data.neuropil2[0]))
        # d log(recorded resting ratio)/dr at the prior centre of r
        g = b2 / (n2 - m_bg * b2) - b1 / (n1 - m_bg * b1)
        if math.isfinite(g):
            shift = shift - (g / a) * (bg_ratio - m_bg)
    z = pm.Normal("R_min_rest_z", mu=shift / sd, sigma=1.0)
    return pm.Deterministic("R_min", pt.exp(math.log(cal.r_min) + sd * z - shift))


def channel_shapes(r_min: Any, r_max: Any, beta: Any, f: Any) -> tuple[Any, Any]:
    """Numerator and denominator counts per unit ``D`` at bound fraction ``f``.

    ``R_min + (R_max/β − R_min)·f`` and ``1 + (1/β − 1)·f`` (module docstring);
    their quotient is the ratio. Numpy arrays or PyTensor tensors alike.
    """
    return r_min + (r_max / beta - r_min) * f, 1.0 + (1.0 / beta - 1.0) * f


def _channel_mean_sd(
    xp: Any,
    mu: Any,
    level: float,
    bg: np.ndarray | None,
    bg_sd: float,
    ratio: Any,
    sigma: Any,
    power: Any,
) -> tuple[Any, Any]:
    """One channel's expected counts (background added) and noise sd (its noise included)."""
    extra: Any = 0.0
    if ratio is not None and bg is not None:
        mu = mu + ratio * bg
        extra = (ratio * bg_sd) ** 2
    return mu, noise_sd(xp, xp.maximum(mu / level, 1e-3), sigma, power, extra)


def ratio_expected(
    f: np.ndarray,
    f_rest: np.ndarray,
    data: ObservedData,
    nuis: dict[str, Any],
    r: int,
    basis: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Expected counts of both channels of ROI ``r`` ``(n, time)`` and their noise sd.

    ``f`` ``(n, time)`` and ``f_rest`` ``(n,)`` are draws of the dye's bound
    fraction; ``nuis`` holds the observation model's draws.
    """  # fmt: skip
    r_min, r_max, beta = (nuis[k][:, None] for k in ("R_min", "R_max", "beta"))
    slow = _slow_draws(data, nuis, r, basis)
    d = (
        nuis["F0"][:, r, None]
        / channel_shapes(r_min, r_max, beta, f_rest[:, None])[1]
        * np.exp(slow)
    )
    ratio = nuis["background_ratio"][:, r, None] if "background_ratio" in nuis else None
    channels = ((data.neuropil, data.neuropil_noise, data.rest_level, "sigma"),
                (data.neuropil2, data.neuropil2_noise, data.rest_level2, "sigma_den"))  # fmt: skip
    out = []
    for shape, (bg, bg_sd, level, sig) in zip(
        channel_shapes(r_min, r_max, beta, f), channels, strict=True
    ):
        sigma, power = nuis[sig][:, r, None], nuis["noise_exponent"][:, r, None]
        row = None if bg is None else bg[r]
        mean_sd = _channel_mean_sd(np, d * shape, float(level[r]), row, float(bg_sd[r]), ratio,
                                   sigma, power)  # fmt: skip
        out.append(mean_sd)
    (mu1, sd1), (mu2, sd2) = out
    return mu1, mu2, sd1, sd2


# ---------------------------------------------------------------- numpy (predictions)


def nuisance_draws(post: Any, data: ObservedData, options: Options, n: int) -> dict[str, Any]:
    """Draws ``(n, roi)`` (``drift_z``: ``(n, roi, K)``) of every observation variable."""
    n_roi = data.y.shape[0]
    out: dict[str, Any] = {}
    for name in ("sigma", "noise_exponent", "rho", "F0", "dff_gain", "neuropil_ratio",
                 "dff_scale", "dff_offset", "sigma_den", "background_ratio"):  # fmt: skip
        if name in post:
            out[name] = np.asarray(post[name]).reshape(n, n_roi)
    for name in ("nu", "R_min", "R_max", "beta"):
        if name in post:
            out[name] = np.asarray(post[name]).reshape(n)
    if "drift_z" in post:
        out["drift_z"] = np.asarray(post["drift_z"]).reshape(n, n_roi, -1)
    return out


def _slow_draws(data: ObservedData, nuis: dict[str, Any], r: int, basis: np.ndarray | None) -> Any:
    """The slow baseline ``s(t)`` of ROI ``r``, ``(n, time)`` (0 without one)."""
    if basis is None or "drift_z" not in nuis:
        return 0.0
    return SLOW_AMPLITUDE[data.kind] * (nuis["drift_z"][:, r] @ basis)


def _neuropil_draws(data: ObservedData, nuis: dict[str, Any], r: int) -> Any:
    """The neuropil term ``r·F_neu`` of ROI ``r``, ``(n, time)`` (0 without one)."""
    if data.neuropil is None or "neuropil_ratio" not in nuis:
        return 0.0
    return nuis["neuropil_ratio"][:, r, None] * data.neuropil[r][None, :]


def expected(
    dff: np.ndarray, data: ObservedData, nuis: dict[str, Any], r: int, basis: np.ndarray | None
) -> np.ndarray:
    """Expected signal ``(n, time)`` of ROI ``r`` from model ΔF/F draws ``(n, time)``."""
    slow = _slow_draws(data, nuis, r, basis)
    if data.kind == "fluorescence":
        mu = nuis["F0"][:, r, None] * np.exp(slow) * (1.0 + nuis["dff_gain"][:, r, None] * dff)
        return mu + _neuropil_draws(data, nuis, r)
    if data.kind == "dff":
        return nuis["dff_scale"][:, r, None] * dff + nuis["dff_offset"][:, r, None] + slow
    return dff


def to_model_dff(
    values: np.ndarray, data: ObservedData, nuis: dict[str, Any], r: int, basis: np.ndarray | None
) -> np.ndarray:
    """Inverse of :func:`expected`: recorded-signal values ``(n, time)`` as the model's ΔF/F."""
    slow = _slow_draws(data, nuis, r, basis)
    if data.kind == "fluorescence":
        x = values - _neuropil_draws(data, nuis, r)
        scale = nuis["F0"][:, r, None] * np.exp(slow)
        return (x / scale - 1.0) / nuis["dff_gain"][:, r, None]
    if data.kind == "dff":
        return (values - nuis["dff_offset"][:, r, None] - slow) / nuis["dff_scale"][:, r, None]
    return values
