"""Fit a cell model to a ΔF/F trace: PyMC model, nutpie sampling, arviz results."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import sys
import threading
import time as time_module
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack, cast, get_args

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import xarray as xr
from threadpoolctl import threadpool_limits

from cainfer._checks import repeated
from cainfer._options import FIT_DEFAULTS, FitOptions, Likelihood
from cainfer.forward import CellModel, Prior, Stimulus
from cainfer.forward._cache import cache_dir
from cainfer.infer._compile import compile_numba
from cainfer.infer._coordinates import SampledModel
from cainfer.infer._draws import (
    _DYE_PARAMETERS,
    _bound_fraction,
    _jsonable,
    _obs_options,
)
from cainfer.infer._op import _solve_parts, output_plan, solution_breaks
from cainfer.infer._predictions import _add_predictions
from cainfer.infer._starts import _N_DESIGN, _chain_seeds, _mode_starts, _prior_draws, _start_plan
from cainfer.infer._substeps import (
    _MAX_SUBSTEPS,
    _choose_solver,
    _choose_stride,
    _choose_substeps,
    _dff_noise,
    _median_vectors,
    _solver_error,
    _spread_vectors,
)
from cainfer.infer.observation import (
    NEUROPIL_PRIOR,
    OBSERVATIONS,
    ObservedData,
    add_likelihood,
    check_options,
    denoised_background,
    noise_scale,
    shared_input_values,
)
from cainfer.infer.result import (
    SOLVER_TOLERANCE,
    Fit,
    IdentifiabilityWarning,
    SamplerWarning,
)

_LIKELIHOODS = get_args(Likelihood)


def _fit_options(where: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults updated with ``given``; a name that is no option raises TypeError."""
    unknown = sorted(set(given) - set(FIT_DEFAULTS))
    if unknown:
        raise TypeError(
            f"{where}() got unexpected keyword argument(s) {unknown}; its options: "
            f"{', '.join(FIT_DEFAULTS)}"
        )
    return {**FIT_DEFAULTS, **given}


def default_free(model: CellModel) -> list[str]:
    """Parameters left free by default: every flux rate, capacity and affinity, and κ_S.

    Hill coefficients, the indicator's constants, resting concentrations and
    ER geometry are fixed at their defaults unless the user frees them.
    """
    names = ["kappa_s"]
    for f in model.fluxes:
        names += [q.name for q in f.parameters if q.role != "hill"]
    return names


def _observed(
    traces: Any, time: Any, roi: Any, *, several: bool, observation: str = "auto"
) -> tuple[ObservedData, np.ndarray, list[Any]]:
    """What the fit sees (see :mod:`cainfer.infer.observation`), frame times (s), ROI labels.

    ``several=False`` selects one ROI (``roi``: position or label); ``several=True``
    keeps the ROIs listed in ``roi`` (labels; all when None). ``observation``
    ``"auto"`` is ``"fluorescence"`` for a Dataset with raw ``F`` (as
    :func:`cainfer.extract_traces` writes), else ``"dff"``.
    """
    kind = observation
    extra: dict[str, Any] = {}
    prior = NEUROPIL_PRIOR  # of the neuropil ratio: the traces may carry their own
    ratiometric = isinstance(traces, xr.Dataset) and traces.attrs.get("kind") == "ratiometric"
    if kind == "ratio" or (kind == "auto" and ratiometric):
        return _observed_ratio(traces, time, roi, several=several)
    if ratiometric:
        raise ValueError(
            f"observation={kind!r} does not fit a ratiometric recording (two channels from "
            "extract_ratio): use observation='ratio' (the default for it)"
        )
    if isinstance(traces, xr.Dataset):
        has_f = "F" in traces
        if kind == "auto":
            kind = "fluorescence" if has_f else "dff"
        if kind == "fluorescence":
            if not has_f:
                raise ValueError(
                    "observation='fluorescence' needs raw fluorescence: the traces Dataset has "
                    "no 'F' variable (fit its ΔF/F with observation='dff')"
                )
            ds = traces
            traces = ds["F"]
            if "F_neu" in ds:
                extra["neuropil"] = ds["F_neu"]
            if "F0" in ds:
                extra["F0"] = ds["F0"]
            if "neuropil_prior" in ds.attrs:
                prior = _neuropil_prior(ds.attrs["neuropil_prior"])
        else:
            if "dff" not in traces:
                raise ValueError("traces Dataset has no 'dff' variable")
            traces = traces["dff"]
    elif kind == "auto":
        kind = "dff"
    elif kind == "fluorescence":
        raise ValueError(
            "observation='fluorescence' needs a Dataset with raw fluorescence 'F' (and "
            "'F_neu', 'F0'), as cainfer.extract_traces returns; a bare trace is fitted as ΔF/F"
        )
    labels: list[Any]
    if isinstance(traces, xr.DataArray):
        if "time" not in traces.coords:
            raise ValueError("traces need a 'time' coordinate (s)")
        if "roi" not in traces.dims:
            traces = traces.expand_dims(roi=[0])
        all_labels = (
            [_jsonable(x) for x in traces["roi"].values] if "roi" in traces.coords else None
        )
        if all_labels is None:
            all_labels = list(range(traces.sizes["roi"]))
            traces = traces.assign_coords(roi=all_labels)
        if several:
            labels = all_labels if roi is None else list(roi)
            missing = [r for r in labels if r not in all_labels]
            if missing:
                raise ValueError(f"roi: no ROI(s) {missing} in the traces; have {all_labels}")
        else:
            if roi is None:
                if traces.sizes["roi"] != 1:
                    raise ValueError(
                        f"traces hold {traces.sizes['roi']} ROIs; choose one with roi= "
                        "(or fit them with cainfer.fit_rois / cainfer.fit_hierarchical)"
                    )
                roi = all_labels[0]
            if roi not in all_labels:
                if isinstance(roi, int | np.integer) and 0 <= roi < len(all_labels):
                    roi = all_labels[int(roi)]
                else:
                    raise ValueError(f"roi: no ROI {roi!r} in the traces; have {all_labels}")
            labels = [roi]
        da = traces.sel(roi=labels).transpose("roi", ...)
        if da.ndim != 2:
            raise ValueError(f"traces must have dims (roi, time), got {traces.dims}")
        y = np.asarray(da.values, dtype=float)
        t = np.asarray(traces["time"].values, dtype=float)
        for key, var in list(extra.items()):
            if "roi" not in var.dims:
                var = var.expand_dims(roi=[all_labels[0]])
            elif "roi" not in var.coords:
                var = var.assign_coords(roi=all_labels)
            extra[key] = np.asarray(var.sel(roi=labels).transpose("roi", ...).values, float)
    else:
        try:
            y = np.asarray(traces, dtype=float)
        except (TypeError, ValueError) as e:
            raise ValueError(f"traces: not an array of numbers ({e})") from None
        if time is None:
            raise ValueError("time (s) is required when traces is a plain array")
        t = np.asarray(time, dtype=float)
        if y.ndim == 1:
            y = y[None, :]
        elif y.ndim != 2 or not several:
            raise ValueError(f"a trace must be 1-D (time,), got shape {y.shape}")
        all_labels = list(range(y.shape[0]))
        labels = all_labels if (roi is None or not several) else list(roi)
        if several and roi is not None:
            bad = [r for r in labels if r not in all_labels]
            if bad:
                raise ValueError(f"roi: no ROI(s) {bad} in a {y.shape[0]}-row array")
            y = y[labels]
    if t.ndim != 1 or t.size != y.shape[1]:
        raise ValueError(f"trace has {y.shape[1]} frames but time has {t.size} values")
    if y.shape[1] < 2:
        raise ValueError(f"the trace has {y.shape[1]} frame(s); a fit needs ≥ 2")
    for label, row in zip(labels, y, strict=True):
        where = f" of ROI {label!r}" if several else ""
        if np.isinf(row).any():
            frame = int(np.flatnonzero(np.isinf(row))[0])
            raise ValueError(
                f"the trace{where} is infinite at frame {frame}; mark missing frames with NaN"
            )
        if not np.isfinite(row).any():
            raise ValueError(f"the trace{where} is all NaN: nothing to fit")
    if kind != "fluorescence":
        return ObservedData(kind, y), t, labels
    neu = extra.get("neuropil")
    if neu is not None and (neu.shape != y.shape or not np.all(np.isfinite(neu[np.isfinite(y)]))):
        raise ValueError("F_neu must be finite wherever F is, with the same (roi, time) shape")
    if neu is not None and not np.any(neu):
        neu = None  # extracted without neuropil correction: no neuropil term
    neu_sd = None
    if neu is not None:  # the trace the model regresses on, its own noise smoothed away
        neu, neu_sd = _denoised(neu)
    ratio = prior[0] if neu is not None else 0.0
    f0 = []
    for i, (label, row) in enumerate(zip(labels, y, strict=True)):
        centre = float("nan")
        if "F0" in extra:
            centre = float(np.nanmedian(extra["F0"][i]))
        if not (math.isfinite(centre) and centre > 0):
            centre = float(np.nanmedian(row - (ratio * neu[i] if neu is not None else 0.0)))
        if not (math.isfinite(centre) and centre > 0):
            centre = 0.1 * float(np.nanmedian(row))
        if not (math.isfinite(centre) and centre > 0):
            where = f" of ROI {label!r}" if several else ""
            raise ValueError(f"the fluorescence{where} is not positive: no resting level to fit")
        f0.append(centre)
    data = ObservedData(kind, y, neu, np.array(f0), neuropil_sd=neu_sd, neuropil_prior=prior)
    return data, t, labels


def _neuropil_prior(attr: Any) -> tuple[float, float]:
    """A traces Dataset's ``neuropil_prior`` attribute (JSON ``[mean, sd]``), checked."""
    try:
        m, s = (float(x) for x in (json.loads(attr) if isinstance(attr, str) else attr))
    except (TypeError, ValueError):
        m = s = math.nan
    if not (math.isfinite(m) and m >= 0 and math.isfinite(s) and s > 0):
        raise ValueError(
            f"the traces' neuropil_prior attribute {attr!r} is not [mean ≥ 0, sd > 0] of the "
            "neuropil ratio"
        )
    return m, s


def _denoised(traces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`denoised_background` of each row ``(roi, time)``, and each row's noise sd."""
    rows = [denoised_background(row) for row in traces]
    return np.stack([r[0] for r in rows]), np.array([r[1] for r in rows])


def _observed_ratio(
    traces: Any, time: Any, roi: Any, *, several: bool
) -> tuple[ObservedData, np.ndarray, list[Any]]:
    """A ratiometric recording (:func:`cainfer.extract.extract_ratio`) as the fit sees it."""
    if not (isinstance(traces, xr.Dataset) and "F" in traces and "channel" in traces["F"].dims):
        raise ValueError(
            "observation='ratio' needs the two-channel Dataset cainfer.extract.extract_ratio "
            "returns (F with dims roi, channel, time)"
        )
    raw = traces.attrs.get("calibration")
    cal_dict = json.loads(raw) if isinstance(raw, str) else raw
    if not cal_dict:
        raise ValueError(
            "the ratiometric traces carry no calibration: give extract_ratio a "
            "calibration=RatioCalibration(...) (R_min, R_max, β of this setup, the dye's K_d), "
            "or set traces.attrs['calibration'] to its JSON"
        )
    from cainfer.forward.ratiometric import RatioCalibration

    cal = RatioCalibration(**cal_dict)
    # ROI choice, time and the checks of a single-channel trace, on the numerator
    _, t, labels = _observed(
        traces["F"].isel(channel=0, drop=True), time, roi, several=several, observation="dff"
    )
    ds = traces.sel(roi=labels)
    F = np.asarray(ds["F"].transpose("roi", "channel", "time").values, dtype=float)
    y1, y2 = F[:, 0], F[:, 1]
    bg1 = bg2 = None
    if "F_bg" in ds and float(traces.attrs.get("background", 1.0)) > 0:
        B = np.asarray(ds["F_bg"].transpose("roi", "channel", "time").values, dtype=float)
        if np.any(B):
            bg1, bg2 = B[:, 0], B[:, 1]
    for name, a in (("denominator", y2), ("numerator background", bg1), ("denominator "
                    "background", bg2)):  # fmt: skip
        if a is not None and not np.all(np.isfinite(a[np.isfinite(y1)])):
            raise ValueError(f"the {name} must be finite wherever the numerator is")
    # the multiple the extraction subtracted is the prior centre of the background scale
    m = float(traces.attrs.get("background", 1.0))
    if not (math.isfinite(m) and m >= 0):
        raise ValueError(f"the traces' attrs['background'] = {m!r} must be a multiple ≥ 0")
    m = m if m > 0 else 1.0  # nothing subtracted: no background term (bg1 is None)
    sd1 = sd2 = None
    if bg1 is not None and bg2 is not None:  # regressors: their own noise smoothed away
        (bg1, sd1), (bg2, sd2) = _denoised(bg1), _denoised(bg2)
    rest = y2 - (m * bg2 if bg2 is not None else 0.0)
    f0 = np.array([float(np.nanmedian(row)) for row in rest])
    if not np.all(np.isfinite(f0) & (f0 > 0)):
        bad = [lab for lab, v in zip(labels, f0, strict=True) if not (np.isfinite(v) and v > 0)]
        raise ValueError(f"ROI(s) {bad}: the denominator channel has no positive resting level")
    return (
        ObservedData("ratio", y1, bg1, f0, y2, bg2, cal, m, neuropil_sd=sd1, neuropil2_sd=sd2),
        t,
        labels,
    )


def _prior_rv(
    name: str, prior: Prior, lower: float, upper: float, *, dims: str | None = None
) -> Any:
    if prior.kind == "lognormal":
        return pm.LogNormal(name, mu=math.log(prior.a), sigma=prior.b, dims=dims)
    if prior.kind == "uniform":
        return pm.Uniform(name, lower=prior.a, upper=prior.b, dims=dims)
    if prior.kind == "halfnormal":
        return pm.HalfNormal(name, sigma=prior.a, dims=dims)
    lo = lower if math.isfinite(lower) else None
    hi = upper if math.isfinite(upper) else None
    return pm.TruncatedNormal(name, mu=prior.a, sigma=prior.b, lower=lo, upper=hi, dims=dims)


def _free_rvs(
    model: CellModel,
    free: list[str],
    priors: Mapping[str, Prior],
    values: Mapping[str, float],
    coordinates: str,
    *,
    dims: str | None = None,
    pooled: Sequence[str] = (),
    pool_sd: float = 0.5,
    centered: bool = True,
) -> list[Any]:
    """Random variables of the free parameters, in the order of ``free``.

    With ``dims="roi"`` each parameter gets one value per ROI: independent
    draws from its prior, or for names in ``pooled`` a log-normal population
    (``log θ_r ~ Normal(m, τ)``, ``m`` from the parameter's prior,
    ``τ ~ HalfNormal(pool_sd)``; non-centred, ``log θ_r = m + τ z_r``, when
    ``centered`` is False).
    """
    params = model.parameters
    scaled = {q.name for f in model.fluxes if f.per_buffer for q in f.parameters
              if q.role == "capacity"}  # fmt: skip
    out: dict[str, Any] = {}

    def rv(name: str) -> Any:
        pr = priors.get(name, params[name].prior)
        if name in pooled:
            m = pm.Normal(f"{name}_pop_log_median", mu=math.log(pr.a), sigma=pr.b)
            tau = pm.HalfNormal(f"{name}_pop_sd_log", sigma=pool_sd)
            if centered:
                log_v = pm.Normal(f"{name}_log", mu=m, sigma=tau, dims=dims)
            else:
                z = pm.Normal(f"{name}_z", 0.0, 1.0, dims=dims)
                log_v = m + tau * z
            return pm.Deterministic(name, pt.exp(log_v), dims=dims)
        return _prior_rv(name, pr, params[name].lower, params[name].upper, dims=dims)

    # saturable pumps: V_max and K trade off along the slope of the pump at rest, so
    # V_max is sampled as that slope (given K and the Hill coefficient)
    slope_of: dict[str, tuple[str, str]] = {}
    for f in model.fluxes:
        if not f.cytosolic_hill:
            continue
        role = {q.role: q.name for q in f.parameters}
        if role["capacity"] in free and role["affinity"] in free:
            slope_of[role["capacity"]] = (role["affinity"], role.get("hill", ""))
    use_beta = coordinates == "per_buffer" and "kappa_s" in free
    if coordinates != "per_buffer":
        slope_of = {}

    def val(g: str) -> Any:
        return out[g] if g in out else values[g]

    if use_beta:
        for g in ("kappa_s", "c_rest", "kd", "hill", "b_total"):
            if g in free:
                out[g] = rv(g)

        c, kd, n, bt = val("c_rest"), val("kd"), val("hill"), val("b_total")
        x = (c / kd) ** n
        beta0 = 1.0 + val("kappa_s") + bt * n * x / (c * (1.0 + x) ** 2)
    for name in free:
        if name in out:
            continue
        pr = priors.get(name, params[name].prior)
        per_buffer = use_beta and name in scaled
        if pr.kind == "lognormal" and name not in pooled and (per_buffer or name in slope_of):
            # log θ = z + log s with s a function of the other parameters: the
            # conditional prior of z is the declared one shifted by log s
            log_s = pt.log(beta0) if per_buffer else 0.0
            suffix = "per_buffer_log" if per_buffer else "log"
            if name in slope_of:
                k_name, h_name = slope_of[name]
                for g in ("c_rest", k_name, h_name):
                    if g and g in free and g not in out:
                        out[g] = rv(g)
                c_r, k, n = val("c_rest"), val(k_name), val(h_name) if h_name else 1.0
                x = (c_r / k) ** n
                log_s = log_s - pt.log(n * x / (c_r * (1.0 + x) ** 2))
                suffix = "rest_slope_per_buffer_log" if per_buffer else "rest_slope_log"
            z = pm.Normal(f"{name}_{suffix}", mu=math.log(pr.a) - log_s, sigma=pr.b, dims=dims)
            out[name] = pm.Deterministic(name, pt.exp(z + log_s), dims=dims)
        else:
            out[name] = rv(name)
    return [out[name] for name in free]


_FIT_DOC_OPTIONS = """
    free : sequence of str, optional
        Parameters to infer (default: :func:`default_free`).
    fixed : mapping, optional
        Values for parameters that are not free (others keep their defaults).
    priors : mapping, optional
        Priors replacing the default ones of free parameters.
    observation : {"auto", "fluorescence", "dff", "dff_exact", "ratio"}
        What the likelihood compares the model with (see
        :mod:`cainfer.infer.observation`). ``"fluorescence"``: the ROI's raw
        fluorescence, with the resting fluorescence F0, the neuropil ratio r,
        a slow bleaching baseline and signal-dependent noise inferred (needs a
        Dataset with ``F``, ``F_neu`` and ``F0`` as
        :func:`cainfer.extract_traces` writes). ``"dff"``: a ΔF/F trace with a
        free scale and offset and a slow additive drift. ``"dff_exact"``: the
        ΔF/F taken as exact (for traces the model itself made). ``"ratio"``:
        both channels of a ratiometric dye (the Dataset of
        :func:`cainfer.extract.extract_ratio`, with its calibration; the
        model's indicator is the numerator channel's,
        ``dye.indicator(calibration, channel=0)``). ``"auto"`` (default):
        ``"ratio"`` for a ratiometric Dataset, fluorescence when the input has
        it, else ``"dff"``.
    likelihood : {"normal", "student_t"}
        Distribution of the noise innovations (Student-t for outlier frames).
    residuals : {"ar1", "white"}
        ``"ar1"`` (default): standardised residuals follow an AR(1) process
        with inferred coefficient ρ, so slow misfit does not pass for
        information; ``"white"``: independent frames.
    drift : {"smooth", "none"}
        ``"smooth"`` (default): a slow baseline (multiplicative bleaching for
        fluorescence, additive drift for ΔF/F) of time scale
        ``drift_timescale``, too slow to mimic a transient; ignored for
        ``"dff_exact"``.
    drift_timescale : float
        Time scale ℓ of the slow baseline (s), 20 by default; keep it well
        above the decay time of the transients.
    draws, tune, chains : int
        Draws kept and tuning steps per chain, number of chains.
    cores : int, optional
        Chains run in parallel (default: all CPUs, at most ``chains``).
    seed : int
        Random seed: same data, model, settings and seed give the same draws.
    substeps : int or "auto"
        Solver steps per frame interval (RK4; SDIRK3 for kinetic binding).
        ``"auto"`` (default): the fewest (1, 2, 4, … 64) whose error, at the
        parameters' starting values, moves no free parameter by more than
        ``SOLVER_TOLERANCE`` (0.25) of its posterior sd (linearised: the
        error regressed on the ΔF/F's sensitivities to the parameters, with
        the recording's noise); checked again at the posterior median, with
        one refit at more steps if it fails there.
        A slow frame rate with fast kinetics (a few Hz) needs several.
        ``"auto"`` also chooses output strides: where the frame rate is
        high against the cell's relaxation rate (at rest, in slow decays)
        the solver stops only every k-th frame and reads the frames between
        off a cubic (``Fit.settings["output_stride"]``, the longest, and
        ``"frames_per_stop"``; cells without an ER or gated terms, held to
        the same tolerance and to RK4's stability with a margin). An
        integer is used as given (every frame solved) and checked; its
        failure is reported in :attr:`Fit.problems`.
    adaptation : {"diag", "low_rank"}
        nutpie mass-matrix adaptation; ``"low_rank"`` follows the correlated
        directions (influx amplitude, κ_S and pump capacity trade off).
    coordinates : {"per_buffer", "natural"}
        ``"per_buffer"`` (when κ_S is free): plasma-membrane capacities and
        influx amplitudes (terms with ``per_buffer``) with log-normal priors
        are sampled divided by the resting buffer capacity β0 = 1 + κ_S + κ_B,
        the combinations that free calcium actually constrains; a pump whose
        rate is a Hill function of cytosolic calcium (``cytosolic_hill``: PMCA,
        NCX, SERCA) and whose V_max and K are both free has V_max sampled as
        its slope at rest, ``V_max·dh/dc`` at c_rest (h the Hill occupancy),
        which the decay rate constrains. The prior is the same, only the
        sampler's coordinates change.
        ``"natural"``: every parameter as it is.
    target_accept : float
        Mean acceptance probability the step size is tuned to, in (0, 1);
        raise it (0.9, 0.95) when divergences are reported.
    sampler : {"nutpie", "numpyro"}
        NUTS implementation. nutpie (default) was the fastest measured
        (``benchmarks/inference.py``); numpyro needs ``jax`` and ``numpyro``
        installed, and its compile time is counted in its sampling time.
    backend : {"numba", "jax"}
        nutpie's compilation backend for the log density (numba: the
        default; jax needs ``jax``). numpyro always uses jax.
    progress : bool or "auto"
        Show the sampler's progress bar (nutpie's: a live table in Jupyter, a
        bar in a terminal). ``"auto"`` (default): when run in a Jupyter kernel
        or with a terminal on stderr, not in scripts' logs or tests.
"""


def _validated(
    model: CellModel,
    free: Sequence[str] | None,
    fixed: Mapping[str, float] | None,
    priors: Mapping[str, Prior] | None,
    options: Mapping[str, Any],
) -> tuple[list[str], dict[str, float], dict[str, Prior]]:
    if options["likelihood"] not in _LIKELIHOODS:
        raise ValueError(
            f"likelihood {options['likelihood']!r}; allowed: {', '.join(_LIKELIHOODS)}"
        )
    if options["coordinates"] not in ("per_buffer", "natural"):
        raise ValueError(
            f"coordinates {options['coordinates']!r}; allowed: 'per_buffer', 'natural'"
        )
    if options["adaptation"] not in ("diag", "low_rank"):
        raise ValueError(f"adaptation {options['adaptation']!r}; allowed: 'diag', 'low_rank'")
    if options["sampler"] not in ("nutpie", "numpyro"):
        raise ValueError(f"sampler {options['sampler']!r}; allowed: 'nutpie', 'numpyro'")
    if options["backend"] not in ("numba", "jax"):
        raise ValueError(f"backend {options['backend']!r}; allowed: 'numba', 'jax'")
    if options["sampler"] == "numpyro" or options["backend"] == "jax":
        import importlib.util

        missing = [m for m in ("jax", "numpyro") if importlib.util.find_spec(m) is None]
        if options["sampler"] == "nutpie":
            missing = [m for m in missing if m == "jax"]
        if missing:
            raise ValueError(
                f"sampler={options['sampler']!r}, backend={options['backend']!r} needs "
                f"{' and '.join(missing)}: pip install {' '.join(missing)}"
            )
    if options["progress"] not in (True, False, "auto"):
        raise ValueError(f"progress = {options['progress']!r}; allowed: True, False, 'auto'")
    ta = options["target_accept"]
    if not (isinstance(ta, int | float) and 0.0 < ta < 1.0):
        raise ValueError(f"target_accept = {ta!r} must lie in (0, 1)")
    if options["observation"] not in OBSERVATIONS:
        raise ValueError(
            f"observation {options['observation']!r}; allowed: {', '.join(OBSERVATIONS)}"
        )
    check_options(_obs_options(options))
    seed = options.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed = {seed!r} must be an integer ≥ 0")
    cores = options.get("cores")
    if cores is not None and (
        isinstance(cores, bool) or not isinstance(cores, int | np.integer) or cores < 1
    ):
        raise ValueError(f"cores = {cores!r} must be None (all) or an integer ≥ 1")
    for name in ("draws", "tune", "chains", "substeps"):
        val = options[name]
        if name == "substeps" and val == "auto":
            continue
        if isinstance(val, str | bool):
            extra = " or 'auto'" if name == "substeps" else ""
            raise ValueError(f"{name} = {val!r} must be a positive integer{extra}")
        if int(val) != val or val < (0 if name == "tune" else 1):
            raise ValueError(f"{name} = {val!r} must be a positive integer")
    params = model.parameters
    if isinstance(free, str):
        raise ValueError(f"free = {free!r}: give a list of parameter names, e.g. [{free!r}]")
    free = list(default_free(model) if free is None else free)
    fixed = dict(fixed or {})
    priors = dict(priors or {})
    for label, names in (("free", free), ("fixed", list(fixed)), ("priors", list(priors))):
        odd = [n for n in names if not isinstance(n, str)]
        if odd:
            raise ValueError(f"{label}: parameter names are strings, not {odd[0]!r}")
        unknown = sorted(set(names) - set(params))
        if unknown:
            raise ValueError(f"{label}: unknown parameter(s) {unknown}; known: {sorted(params)}")
    twice = repeated(free)
    if twice:
        raise ValueError(f"free: parameter(s) {twice} named more than once")
    bad = {k: v for k, v in fixed.items() if isinstance(v, bool) or not isinstance(v, int | float)
           or not math.isfinite(v)}  # fmt: skip
    if bad:
        name, v = next(iter(bad.items()))
        raise ValueError(f"fixed: {name} = {v!r} is not a finite number")
    both = sorted(set(free) & set(fixed))
    if both:
        raise ValueError(f"parameter(s) {both} are both free and fixed")
    not_free = sorted(set(priors) - set(free))
    if not_free:
        raise ValueError(f"priors given for parameter(s) {not_free} that are not free")
    return free, fixed, priors


def fit(
    traces: Any,
    model: CellModel,
    *,
    stimulus: Stimulus | None,
    time: Any = None,
    roi: Any = None,
    free: Sequence[str] | None = None,
    fixed: Mapping[str, float] | None = None,
    priors: Mapping[str, Prior] | None = None,
    **options: Unpack[FitOptions],
) -> Fit:
    """Posterior of a cell model's parameters given one ΔF/F trace.

    Parameters
    ----------
    traces : xarray.Dataset, xarray.DataArray or array
        ΔF/F over ``time`` (a Dataset from :func:`cainfer.extract_traces`, a
        DataArray with a ``time`` coordinate in s, or an array with ``time=``).
        NaN frames are left out of the likelihood.
    model : CellModel
        The cell model.
    stimulus : Stimulus or None
        Event times (and waveform) within the recording.
    time : array_like, optional
        Frame times (s) for a plain array.
    roi : optional
        ROI to fit when ``traces`` holds several (its label, or its position).
    {options}

    Returns
    -------
    Fit

    Raises
    ------
    ValueError
        For bad input: lengths that differ, a stimulus outside the recording,
        a parameter both free and fixed, a prior or name for an unknown
        parameter, an all-NaN trace, or an unknown option.

    Warns
    -----
    SamplerWarning
        When divergences, R-hat > 1.01 or bulk ESS < 400 are found (and
        ``Fit.ok`` is False).
    """
    opts = _fit_options("fit", options)
    free_l, fixed_d, priors_d = _validated(model, free, fixed, priors, opts)
    data, t, _ = _observed(traces, time, roi, several=False, observation=opts["observation"])
    return _run(_Problem(model, data, t, None, stimulus, free_l, fixed_d, priors_d), opts)


def fit_rois(
    traces: Any,
    model: CellModel,
    *,
    stimulus: Stimulus | None,
    time: Any = None,
    rois: Sequence[Any] | None = None,
    free: Sequence[str] | None = None,
    fixed: Mapping[str, float] | None = None,
    priors: Mapping[str, Prior] | None = None,
    **options: Unpack[FitOptions],
) -> dict[Any, Fit]:
    """Independent fits of the same cell model to several ROIs, one posterior each.

    Parameters
    ----------
    traces : xarray.Dataset, xarray.DataArray or array
        ΔF/F with dims ``(roi, time)`` (or an array of shape (n_roi, n_frames)
        with ``time=``).
    model : CellModel
        The cell model (the same for every ROI).
    stimulus : Stimulus or None
        Event times (and waveform), shared by the ROIs.
    time : array_like, optional
        Frame times (s) for a plain array.
    rois : sequence, optional
        Labels of the ROIs to fit (default: all).
    {options}

    Returns
    -------
    dict
        ROI label → :class:`Fit`, in the order of ``rois``. ROI ``i`` is
        sampled with seed ``seed + i``.

    Raises
    ------
    ValueError
        As :func:`fit`; an all-NaN ROI is named.
    """
    opts = _fit_options("fit_rois", options)
    free_l, fixed_d, priors_d = _validated(model, free, fixed, priors, opts)
    data, t, labels = _observed(traces, time, rois, several=True, observation=opts["observation"])
    out = {}
    for i, label in enumerate(labels):
        one = _Problem(model, data.select([i]), t, None, stimulus, free_l, fixed_d, priors_d)
        out[label] = _run(one, opts | {"seed": opts["seed"] + i})
        out[label].settings["roi"] = _jsonable(label)
    return out


def fit_hierarchical(
    traces: Any,
    model: CellModel,
    *,
    stimulus: Stimulus | None,
    pooled: Sequence[str],
    pool_sd: float = 0.5,
    centered: bool = True,
    time: Any = None,
    rois: Sequence[Any] | None = None,
    free: Sequence[str] | None = None,
    fixed: Mapping[str, float] | None = None,
    priors: Mapping[str, Prior] | None = None,
    **options: Unpack[FitOptions],
) -> Fit:
    """One joint fit of several ROIs that partially pools chosen parameters across cells.

    Every free parameter has one value per ROI. For a parameter in
    ``pooled`` the per-cell values share a log-normal population: its log
    median has the parameter's prior, its log-scale spread τ has a
    half-normal prior of scale ``pool_sd``, and each cell's log value is
    drawn from it (Gelman et al. 2013, *Bayesian Data Analysis*, ch. 5). Cells with little
    information borrow from the others; the posterior of τ says how much the
    cells differ. The other free parameters keep independent priors per
    cell; noise σ (and drift) are per cell.

    Parameters
    ----------
    traces : xarray.Dataset, xarray.DataArray or array
        ΔF/F with dims ``(roi, time)`` (or an array with ``time=``).
    model : CellModel
        The cell model (the same for every ROI).
    stimulus : Stimulus or None
        Event times (and waveform), shared by the ROIs.
    pooled : sequence of str
        Free parameters to pool; each needs a log-normal prior.
    pool_sd : float
        Scale of the half-normal prior of each population's log-scale spread
        (0.5: cells typically within a factor ~1.6 of each other).
    centered : bool
        Sample each cell's log value directly (True: right when every trace
        determines its cell's value well, as for pump rates from a few
        transients) or as ``m + τ z`` (False: better when single traces say
        little and the population dominates; Betancourt & Girolami 2015,
        arXiv:1312.0906).
    time : array_like, optional
        Frame times (s) for a plain array.
    rois : sequence, optional
        Labels of the ROIs to fit (default: all; at least two).
    {options}

    Returns
    -------
    Fit
        Posterior with a ``roi`` dimension on every per-cell variable, and
        ``<name>_pop_log_median`` / ``<name>_pop_sd_log`` per pooled parameter.

    Raises
    ------
    ValueError
        As :func:`fit`; also for a pooled parameter that is not free or has
        no log-normal prior, fewer than two ROIs, or ``pool_sd`` ≤ 0.
    """
    opts = _fit_options("fit_hierarchical", options)
    free_l, fixed_d, priors_d = _validated(model, free, fixed, priors, opts)
    pooled = list(pooled)
    not_free = [p for p in pooled if p not in free_l]
    if not_free:
        raise ValueError(f"pooled parameter(s) {not_free} are not free (free: {free_l})")
    params = model.parameters
    not_log = [p for p in pooled if priors_d.get(p, params[p].prior).kind != "lognormal"]
    if not_log:
        raise ValueError(f"pooled parameter(s) {not_log} need a log-normal prior")
    if not (math.isfinite(pool_sd) and pool_sd > 0):
        raise ValueError(f"pool_sd = {pool_sd!r} must be a positive number")
    data, t, labels = _observed(traces, time, rois, several=True, observation=opts["observation"])
    if len(labels) < 2:
        raise ValueError(f"a hierarchical fit needs at least two ROIs, got {len(labels)}")
    opts["centered"] = bool(centered)
    problem = _Problem(model, data, t, labels, stimulus, free_l, fixed_d, priors_d, pooled,
                       pool_sd)  # fmt: skip
    return _run(problem, opts)


for _f in (fit, fit_rois, fit_hierarchical):
    _f.__doc__ = (_f.__doc__ or "").replace("    {options}\n", _FIT_DOC_OPTIONS.lstrip("\n"))


@dataclass(frozen=True)
class _Problem:
    """What a fit is of: the cell model, the recording as the fit sees it, the parameters.

    ``labels`` None: one ROI with scalar parameters; else the ROI labels of a
    hierarchical fit, whose ``pooled`` parameters share a population with
    spread prior ``pool_sd``.
    """

    model: CellModel
    data: ObservedData
    t: np.ndarray
    labels: list[Any] | None
    stimulus: Stimulus | None
    free: list[str]
    fixed: dict[str, float]
    priors: dict[str, Prior]
    pooled: Sequence[str] = ()
    pool_sd: float = 0.5


def _pymc_model(
    problem: _Problem,
    options: Mapping[str, Any],
    *,
    shared: dict[str, Any] | None = None,
) -> pm.Model:
    """The PyMC model of ``data`` (roi, time); ``labels`` None: one ROI, scalar parameters.

    ``shared`` (a dict, filled here): the recording's numbers enter as shared
    variables (:func:`_shared_values`), so that the compiled model takes
    another ROI's without compiling again.
    """
    pr = problem
    model, data, t, labels, stimulus = pr.model, pr.data, pr.t, pr.labels, pr.stimulus
    free, fixed, priors, pooled, pool_sd = pr.free, pr.fixed, pr.priors, pr.pooled, pr.pool_sd
    values = model.values(fixed)
    model.resting_state(values)  # validates the fixed part
    op, arrays, plan = _solve_parts(
        model, t, stimulus, options["substeps"], free,
        bool(options.get("kinetic_explicit", False)), options.get("stride", 1),
    )  # fmt: skip
    consts = [pt.as_tensor_variable(a) for a in arrays]
    inputs = None
    if shared is not None:
        for name, value in _shared_values(problem).items():
            shared[name] = pytensor.shared(value, name=name)
        # the scalars travel as one vector: each shared variable adds to the typing
        # of the log density's C wrapper (seconds in a process's first fit)
        scalars = shared["obs_scalars"]
        inputs = {"y": shared["obs_y"], "neuropil": shared["obs_neuropil"]}
        inputs |= {n: scalars[i] for i, n in enumerate(_SHARED_SCALARS)}
        inputs["neuropil_prior"] = scalars[-2:]
    slots = model.slots()
    idx = np.array([slots[n] for n in free])
    dims = None if labels is None else "roi"
    coords = {} if labels is None else {"roi": [_jsonable(x) for x in labels]}
    n_roi = data.y.shape[0]

    with SampledModel(coords=coords) as pm_model:
        rvs = _free_rvs(
            model, free, priors, values, options["coordinates"],
            dims=dims, pooled=pooled, pool_sd=pool_sd, centered=options.get("centered", True),
        )  # fmt: skip
        base = pt.as_tensor_variable(model.pack_raw(values))
        dffs = []
        bound = []
        for r in range(n_roi):
            vec = pt.stack(rvs) if labels is None else pt.stack([v[r] for v in rvs])
            dff = cast(Any, op(pt.set_subtensor(base[idx], vec), *consts))[0]
            dffs.append(dff if plan is None else plan.apply(pt, dff))
            if data.kind == "ratio":

                def par(name: str, r: int = r) -> Any:
                    if name in free:
                        v = rvs[free.index(name)]
                        return v if labels is None else v[r]
                    return values[name]

                bound.append(_bound_fraction(pt, dffs[-1], *map(par, _DYE_PARAMETERS)))
        add_likelihood(
            dffs, data, t, _obs_options(options), several=labels is not None, bound=bound,
            inputs=inputs,
        )  # fmt: skip
    if options.get("sampler") == "nutpie" and options.get("backend") == "numba":
        # the chains sample coordinates centred and scaled at the mode (_mode_starts)
        pm_model.use_sampled_coordinates()
    return pm_model


_SHARED_SCALARS = ("neuropil_noise", "rest_level", "noise0", "log_f0", "g_ref")


def _shared_values(problem: _Problem) -> dict[str, np.ndarray]:
    """The numbers a reusable compiled model takes per fit: the ROI's recording."""
    v = shared_input_values(problem.data)
    scalars = [float(v[n]) for n in _SHARED_SCALARS] + [float(x) for x in v["neuropil_prior"]]
    return {"obs_y": v["y"], "obs_neuropil": v["neuropil"], "obs_scalars": np.array(scalars)}


@dataclass
class _Compiled:
    """A compiled model kept for the next fit of the same structure in this process."""

    pm_model: pm.Model
    compiled: Any
    shared: dict[str, Any]
    lock: threading.Lock
    # its compiled forward draws (the start plan's, the prior group's; _starts._forward_draws)
    forward: dict[str, Any] = field(default_factory=dict)


# compiled models by structure (:func:`_reuse_key`), most recent last; a Dask worker
# fits ROI after ROI of the same model and recording length, and each compile costs
# seconds (the log density's C wrappers) where the data change nothing but numbers
_REUSABLE: dict[str, _Compiled] = {}
_REUSABLE_MAX = 4
_REUSABLE_LOCK = threading.Lock()


def _reuse_key(problem: _Problem, options: Mapping[str, Any]) -> str | None:
    """What fixes a fit's compiled model but its numbers; None: not reusable.

    One ROI with every frame recorded, fluorescence or ΔF/F, nutpie on numba.
    The solver's schedule (frame times, stimulus, steps) stays a constant of
    the graph: the solver is compiled for read-only arrays, as every other
    caller passes them, and a second signature would cost a first fit in each
    process more than it saves.
    """
    pr = problem
    if pr.labels is not None or pr.data.kind == "ratio" or not np.isfinite(pr.data.y).all():
        return None
    if options["sampler"] != "nutpie" or options["backend"] != "numba":
        return None
    graph = {k: options[k] for k in ("likelihood", "residuals", "drift", "drift_timescale",
                                     "coordinates")}  # fmt: skip
    graph["stride"] = _runs(options.get("stride", 1))
    _, arrays, _ = _solve_parts(
        pr.model, pr.t, pr.stimulus, options["substeps"], pr.free,
        bool(options.get("kinetic_explicit", False)), options.get("stride", 1),
    )  # fmt: skip
    schedule = hashlib.sha256()
    for a in (pr.t, *arrays):
        schedule.update(np.ascontiguousarray(a).tobytes() + str(a.dtype).encode())
    return json.dumps(
        [
            pr.model.to_dict(), pr.free, sorted(pr.fixed.items()),
            sorted((k, repr(v)) for k, v in pr.priors.items()), graph, pr.data.kind,
            pr.data.neuropil is not None, pr.data.f0 is not None, schedule.hexdigest(),
        ],
        default=str,
    )  # fmt: skip


def _take_compiled(key: str | None) -> _Compiled | None:
    """The kept compiled model of ``key``, its lock taken (None: none free)."""
    if key is None:
        return None
    with _REUSABLE_LOCK:
        entry = _REUSABLE.get(key)
        if entry is None or not entry.lock.acquire(blocking=False):
            return None
        _REUSABLE[key] = _REUSABLE.pop(key)  # most recently used last
        return entry


def _keep_compiled(key: str, entry: _Compiled) -> None:
    with _REUSABLE_LOCK:
        _REUSABLE[key] = entry
        while len(_REUSABLE) > _REUSABLE_MAX:
            _REUSABLE.pop(next(iter(_REUSABLE)))


# the cell-model parameters the dye's bound fraction depends on, in _bound_fraction's order
def _compiling_into_cache(func: Callable[..., Fit]) -> Callable[..., Fit]:
    """Run ``func`` with PyTensor's generated source going to cainfer's cache directory.

    PyTensor writes the Python source of every function it compiles to a file
    it never removes, in ``$TMPDIR`` unless ``generated_src_dir`` is set; a
    user's own setting is kept.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Fit:
        if pytensor.config.generated_src_dir:
            return func(*args, **kwargs)
        src = str(cache_dir() / "pytensor-src")
        with pytensor.config.change_flags(generated_src_dir=src):
            return func(*args, **kwargs)

    return wrapper


@_compiling_into_cache
def _run(
    problem: _Problem,
    options: Mapping[str, Any],
) -> Fit:
    """Fit ``data`` (roi, time) with a solver step the noise cannot tell from exact.

    ``substeps="auto"``: the steps of each frame interval (and, for a kinetic
    indicator, RK4 or the implicit solve: :func:`_choose_solver`) are chosen at the
    parameters' starting values and around them (:func:`_choose_substeps`)
    and checked at the posterior median; where the check fails the fit is
    run once more with the steps refined there. A given ``substeps`` is
    checked only, and a failed check is one of the fit's problems.
    """
    pr = problem
    model, data, t, stimulus, free, fixed = pr.model, pr.data, pr.t, pr.stimulus, pr.free, pr.fixed
    opts = dict(options)
    auto = opts["substeps"] == "auto"
    noise = _dff_noise(data)
    n_roi = data.y.shape[0]
    all_slots = model.slots()
    slots = [all_slots[name] for name in free]
    if auto:
        start = model.pack_raw(model.values(fixed))
        around = _spread_vectors(start, slots)
        opts["substeps"], opts["kinetic_explicit"] = _choose_solver(
            model, [start] * n_roi, t, stimulus, noise, slots=slots, also=around
        )
        opts["stride"] = _choose_stride(
            model, [start] * n_roi, t, stimulus, noise, opts["substeps"], slots=slots,
            also=around, explicit=bool(opts["kinetic_explicit"]),
        )  # fmt: skip
    explicit = bool(opts.get("kinetic_explicit", False))
    result = _sample(problem, opts)
    at = _median_vectors(result)

    def error() -> float:
        return _solver_error(model, at, t, stimulus, opts["substeps"], noise, slots=slots,
                             explicit=explicit, stride=opts.get("stride", 1))  # fmt: skip

    err = error()
    if auto and err > SOLVER_TOLERANCE:
        first = opts["substeps"]
        full = (
            err
            if np.all(np.asarray(opts.get("stride", 1)) == 1)
            else _solver_error(model, at, t, stimulus, first, noise, slots=slots, explicit=explicit)
        )  # the error of every frame solved: the same number at stride 1
        if full > SOLVER_TOLERANCE and np.min(first) < _MAX_SUBSTEPS:
            opts["substeps"] = _choose_substeps(
                model, at, t, stimulus, noise, slots=slots, first=first, explicit=explicit
            )
        opts["stride"] = _choose_stride(
            model, at, t, stimulus, noise, opts["substeps"], slots=slots, explicit=explicit
        )
        result = _sample(problem, opts)
        at = _median_vectors(result)
        err = error()
    result.settings["solver_error"] = err
    result.problems = result.diagnostics()
    result.ok = not result.problems
    weak = set(result.weakly_determined())
    for msg in result.problems:
        category = IdentifiabilityWarning if msg in weak else SamplerWarning
        warnings.warn(msg, category, stacklevel=4)  # _run, its cache wrapper, fit: the caller
    return result


def _show_progress(progress: bool | str) -> bool:
    """Whether to show the sampler's progress: ``"auto"`` in Jupyter or at a terminal."""
    if progress != "auto":
        return bool(progress)
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)() if shell is not None else None
    if ipython is not None and getattr(ipython, "kernel", None) is not None:
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _runs(steps: np.ndarray) -> list[list[int]]:
    """Steps per frame interval as runs ``[[steps, count], ...]`` (a scalar: one run, count 0)."""
    a = np.asarray(steps, dtype=int).ravel()
    if np.ndim(steps) == 0:
        return [[int(a[0]), 0]]
    out: list[list[int]] = []
    for v in a.tolist():
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out


def _sample(
    problem: _Problem,
    options: Mapping[str, Any],
) -> Fit:
    """Build the PyMC model for ``data`` (roi, time), sample it with nutpie, add the results.

    ``labels`` None: one ROI with scalar parameters; else one value per ROI.
    ``options["substeps"]`` is an integer or an integer array, one per frame interval.
    A model compiled for an earlier fit of the same structure in this process
    is reused with this fit's numbers (:func:`_reuse_key`).
    """
    key = _reuse_key(problem, options)
    entry = _take_compiled(key)
    held = [] if entry is None else [entry]  # the kept models this fit uses (their locks)
    try:
        return _sample_with(problem, options, key, entry, held)
    finally:
        for e in held:
            e.lock.release()


def _sample_with(
    problem: _Problem,
    options: Mapping[str, Any],
    key: str | None,
    entry: _Compiled | None,
    held: list[_Compiled],
) -> Fit:
    import nutpie

    pr = problem
    model, data, t, labels, stimulus = pr.model, pr.data, pr.t, pr.labels, pr.stimulus
    free, fixed, pooled, pool_sd = pr.free, pr.fixed, pr.pooled, pr.pool_sd

    seed, chains = options["seed"], options["chains"]
    shared: dict[str, Any] | None = None
    if entry is not None:
        pm_model, shared = entry.pm_model, entry.shared
        numbers = _shared_values(problem)
        for name, var in shared.items():
            var.set_value(numbers[name])
    else:
        shared = {} if key is not None else None
        pm_model = _pymc_model(problem, options, shared=shared)
    values = model.values(fixed)
    coords = {} if labels is None else {"roi": [_jsonable(x) for x in labels]}
    n_cores = max(1, min(chains, options["cores"] or os.cpu_count() or 1))
    t0 = time_module.perf_counter()
    modes: list[dict[str, float]] = []  # separate modes the chains were started in
    forward: dict[str, Any] = {}  # compiled forward draws, kept with a kept model
    if options["sampler"] == "numpyro" or options["backend"] == "jax":
        import cainfer.infer._jax  # noqa: F401  (registers the JAX versions of the Ops)
    if options["sampler"] == "numpyro":
        t1 = t0  # numpyro compiles inside pm.sample: its compile time is in sampling
        with pm_model:
            idata = pm.sample(
                draws=options["draws"],
                tune=options["tune"],
                chains=chains,
                cores=n_cores,
                random_seed=seed,
                nuts_sampler="numpyro",
                progressbar=_show_progress(options["progress"]),
                nuts={"target_accept": float(options["target_accept"])},
            )
    else:
        # no fast-math in the compiled log density: the draws of a seed then do not
        # depend on PyTensor's fast-math default (the solver kernels pin it off themselves)
        with pytensor.config.change_flags(numba__fastmath=False):
            if entry is not None:
                known = {v.name for v in entry.compiled.shared_var_keys}
                compiled = entry.compiled.with_data(
                    **{n: numbers[n] for n in known if n in numbers}
                )
            elif options["backend"] == "numba":
                compiled = compile_numba(pm_model)
                if key is not None and shared is not None and hasattr(compiled, "with_data"):
                    lock = threading.Lock()
                    lock.acquire()  # released when this fit is done with the model
                    held.append(_Compiled(pm_model, compiled, shared, lock))
                    _keep_compiled(key, held[-1])
            else:
                compiled = nutpie.compile_pymc_model(pm_model, backend=options["backend"])
        if held:
            forward = held[0].forward
        if hasattr(compiled, "logp_func"):  # the numba backend's compiled model
            noise = np.array([noise_scale(row) for row in data.y])
            plan = _start_plan(pm_model, noise, seed, _N_DESIGN, forward)
            found: dict[str, Any] = {}
            compiled = _mode_starts(
                compiled, seed, plan=plan, chains=chains, report=found,
                chain_seeds=functools.partial(_chain_seeds, compiled, chains, seed),
            )  # fmt: skip
            modes = found.get("modes", [])
        t1 = time_module.perf_counter()
        # The chains run in parallel, n_cores at a time; the log density's BLAS calls
        # (the slow baseline's basis times its weights: 51 × 36 000 on ten minutes at 60
        # frames/s) would each start OpenBLAS's own threads on top of them. On two cores
        # two chains' log densities then ran no faster than one chain's (11.3 ms a call
        # in two processes at once against 3.9 ms alone; 4.2 ms with one BLAS thread).
        blas_threads = max(1, (os.cpu_count() or 1) // n_cores)
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            idata = nutpie.sample(
                compiled,
                draws=options["draws"],
                tune=options["tune"],
                chains=chains,
                cores=n_cores,
                seed=seed,
                progress_bar=_show_progress(options["progress"]),
                adaptation=options["adaptation"],
                target_accept=float(options["target_accept"]),
                save_warmup=False,
            )
    t2 = time_module.perf_counter()
    forward_log = logging.getLogger("pymc.sampling.forward")
    level = forward_log.level
    forward_log.setLevel(logging.WARNING)  # not "Sampling: [...]" after every fit
    try:
        with pm_model, warnings.catch_warnings():
            # the likelihood is a Potential: the prior group holds the parameters only
            warnings.filterwarnings("ignore", message="The effect of Potentials")
            prior = _prior_draws(pm_model, min(500, options["draws"] * chains), seed, forward)
    finally:
        forward_log.setLevel(level)
    idata["prior"] = prior
    _add_predictions(idata, model, values, free, t, stimulus, data, options, labels)
    settings = {
        key: options[key]
        for key in (
            "draws",
            "tune",
            "chains",
            "seed",
            "likelihood",
            "residuals",
            "drift",
            "drift_timescale",
            "adaptation",
            "coordinates",
        )
    } | {
        "observation": data.kind,
        "stimulus_events": stimulus.events.tolist() if stimulus is not None else [],
        "stimulus_weights": stimulus.event_weights.tolist() if stimulus is not None else [],
        "stimulus_waveform_time": stimulus.waveform_time.tolist() if stimulus is not None else [],
        "stimulus_waveform": stimulus.waveform.tolist() if stimulus is not None else [],
        "pooled": list(pooled),
        "pool_sd": pool_sd if pooled else None,
        "centered": options.get("centered") if pooled else None,
        "compile_seconds": t1 - t0,
        "sampling_seconds": t2 - t1,
        "start_modes": modes,
    }
    # the solver's steps: the most any frame interval took, and their mean
    n_sub = np.asarray(options["substeps"])
    settings["substeps"] = int(n_sub.max()) if n_sub.size else 1
    settings["substeps_mean"] = float(n_sub.mean()) if n_sub.size else 1.0
    settings["substeps_runs"] = _runs(n_sub)  # each frame interval's, to recompute predictions
    stride = np.asarray(options.get("stride", 1))
    settings["output_stride"] = int(stride.max())  # the most frames per solver stop
    settings["output_stride_runs"] = _runs(stride)  # each frame's, to recompute predictions
    stops = output_plan(t, solution_breaks(stimulus), stride)
    settings["frames_per_stop"] = t.size / (t.size if stops is None else stops.anchors.size)
    if model.kinetic:  # which steps the kinetic indicator's system took
        settings["kinetic_solver"] = "rk4" if options.get("kinetic_explicit") else "sdirk"
    fixed_values = {k: v for k, v in values.items() if k not in free}
    return Fit(idata, model, free, fixed_values, settings, rois=coords.get("roi"))
