"""Fit a cell model to a ΔF/F trace: PyMC model, nutpie sampling, arviz results."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import threading
import time as time_module
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack, cast, get_args

import arviz as az
import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import xarray as xr

from cainfer._checks import repeated
from cainfer._files import atomic_path
from cainfer._options import FIT_DEFAULTS, FitOptions, Likelihood
from cainfer.forward import CellModel, Prior, Stimulus
from cainfer.forward._cache import cache_dir
from cainfer.infer._compile import compile_numba
from cainfer.infer._op import forward_solver, solve_op
from cainfer.infer.observation import (
    NEUROPIL_PRIOR,
    OBSERVATIONS,
    ObservedData,
    Options,
    add_likelihood,
    channel_shapes,
    check_options,
    denoised_background,
    neuropil_variance,
    noise_scale,
    noise_sd,
    nuisance_draws,
    pointwise_loglik,
    ratio_expected,
    relative_signal,
    simulate_residuals,
    slow_basis,
)
from cainfer.infer.observation import REPORTED as OBSERVATION_REPORTED
from cainfer.infer.observation import SHEARED as OBSERVATION_SHEARED
from cainfer.infer.observation import expected as _expected
from cainfer.infer.observation import to_model_dff as _to_model_dff

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


class FitWarning(UserWarning):
    """Something about a fit its user should know (base of the two below)."""


class SamplerWarning(FitWarning):
    """The sampler's diagnostics say the posterior may not be trustworthy."""


class IdentifiabilityWarning(FitWarning):
    """The data leave a parameter to its prior, pull it far from it, or fix only a combination."""


# a posterior median this many prior sds from the prior's, or a posterior correlation
# beyond this between two free parameters (log scale), is reported
_MAX_PRIOR_SHIFT = 3.0
_MAX_CORRELATION = 0.9
_RIDGE_MIN_SD = 0.1  # ... when one of them is uncertain by more than ±10 % (log sd)


def _ridges(members: list[tuple[str, str, np.ndarray]]) -> list[str]:
    """Messages for groups of free parameters whose (log) posteriors correlate beyond 0.9."""
    if len(members) < 2:
        return []
    x = np.stack([m[2] for m in members], axis=1)
    sd = x.std(axis=0)
    keep = sd > 0
    if keep.sum() < 2:
        return []
    corr = np.corrcoef(x[:, keep], rowvar=False)
    idx = np.flatnonzero(keep)
    # connected groups of parameters linked by a strong correlation
    linked: list[set[int]] = []
    for i in range(len(idx)):
        for j in range(i + 1, len(idx)):
            if abs(corr[i, j]) > _MAX_CORRELATION:
                hit = [g for g in linked if i in g or j in g]
                merged = {i, j}.union(*hit)
                linked = [g for g in linked if g not in hit] + [merged]
    out = []
    for g in linked:
        cols = [idx[k] for k in sorted(g)]
        sub = x[:, cols]
        cov = np.cov(sub, rowvar=False)
        _, evecs = np.linalg.eigh(cov)
        v = evecs[:, 0]  # the narrowest direction of the posterior
        v = v / v[np.argmax(np.abs(v))]
        names = [members[c][0] for c in cols]
        terms = []
        for n, p in zip(names, v, strict=True):
            if abs(p) < 0.05:
                continue
            terms.append(n if abs(p - 1) < 0.05 else f"{n}^{p:.2g}")
        comb_sd = float(np.sqrt(max(float(v @ cov @ v), 0.0)))
        if float(sub.std(axis=0).max()) < _RIDGE_MIN_SD:
            continue  # correlated, but each parameter is determined well enough
        pairs = [
            f"{names[a]}/{names[b]} {np.corrcoef(sub[:, a], sub[:, b])[0, 1]:+.2f}"
            for a in range(len(cols))
            for b in range(a + 1, len(cols))
        ]
        each = ", ".join(f"{n} ±{100 * float(sub[:, k].std()):.0f} %" for k, n in enumerate(names))
        label = members[cols[0]][1].partition("[")[2].rstrip("]")
        where = f" (ROI {label})" if label else ""
        out.append(
            f"weakly determined{where}: {', '.join(names)} trade off (posterior correlation "
            f"{'; '.join(pairs)}); the data determine {' · '.join(terms)} "
            f"(±{100 * comb_sd:.1f} %), not each alone ({each})"
        )
    return out


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
    ratio = NEUROPIL_PRIOR[0] if neu is not None else 0.0
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
    return ObservedData(kind, y, neu, np.array(f0), neuropil_sd=neu_sd), t, labels


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


@dataclass
class Fit:
    """A fitted cell model: posterior draws and what made them.

    Attributes
    ----------
    idata : xarray.DataTree
        ``posterior``, ``sample_stats``, ``prior``, ``observed_data``,
        ``posterior_predictive`` (``dff`` and free calcium ``ca``) and
        ``log_likelihood``.
    model : CellModel
        The cell model.
    free : list of str
        Parameters sampled.
    fixed : dict
        Values of every other parameter.
    settings : dict
        Sampler settings, stimulus, pooling and timings (compile, sampling; s).
    rois : list, optional
        ROI labels of a hierarchical fit (None for a single trace); every
        per-cell variable then has a ``roi`` dimension.
    ok : bool
        False when a diagnostic failed (see :meth:`diagnostics`).
    """

    idata: Any
    model: CellModel
    free: list[str]
    fixed: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    rois: list[Any] | None = None
    ok: bool = True
    problems: list[str] = field(default_factory=list)

    def summary(self, *, ci_prob: float = 0.94, round_to: int | str = "auto") -> Any:
        """Posterior mean, sd, HDI (94% by default), R-hat and ESS of the reported variables.

        Parameters
        ----------
        ci_prob : float
            Probability mass of the highest-density interval, in (0, 1).
        round_to : int or {"auto", "none"}
            arviz's rounding: ``"auto"`` shows the digits the Monte Carlo
            error supports; ``"none"`` gives raw numbers.
        """
        if not 0.0 < ci_prob < 1.0:
            raise ValueError(f"ci_prob = {ci_prob!r} must lie in (0, 1)")
        return az.summary(
            self.idata,
            var_names=self.reported,
            ci_prob=ci_prob,
            ci_kind="hdi",
            round_to=round_to,
        )

    @property
    def reported(self) -> list[str]:
        """Variables reported by :meth:`summary`: free parameters, observation, population terms."""
        names = [*self.free, "sigma"]
        post = self.idata["posterior"]
        names += [n for n in OBSERVATION_REPORTED if n in post]
        for p in self.settings.get("pooled") or []:
            names += [f"{p}_pop_log_median", f"{p}_pop_sd_log"]
        return names

    def diagnostics(self) -> list[str]:
        """Problems found (empty if none).

        Divergences, R-hat > 1.01, bulk ESS < 400, residuals that wander
        (AR(1) ``rho`` > 0.8 with ``sigma`` > 2× the frame-to-frame noise: a
        misfit), a solver error that moves a free parameter by more than
        ``SOLVER_TOLERANCE`` posterior sd, and what :meth:`weakly_determined`
        finds.
        """
        problems = []
        div = int(np.asarray(self.idata["sample_stats"]["diverging"]).sum())
        if div:
            problems.append(
                f"{div} divergent transitions: the posterior has regions the sampler cannot "
                "follow; fix weakly identified parameters or tighten their priors"
            )
        s = self.summary(round_to="none")
        bad_r = [n for n, r in zip(s.index, s["r_hat"], strict=True) if float(r) > 1.01]
        apart = self._separate_modes(bad_r)
        problems += apart
        if bad_r and not apart:
            problems.append(f"R-hat > 1.01 for {bad_r}: run longer (more tune and draws)")
        low = [n for n, e in zip(s.index, s["ess_bulk"], strict=True) if float(e) < 400]
        if low:
            problems.append(f"bulk ESS < 400 for {low}: draw more samples or more chains")
        problems += self._unexplained_residuals()
        err = self.settings.get("solver_error")
        if err is not None and float(err) > SOLVER_TOLERANCE:
            n = int(self.settings.get("substeps", 1))
            problems.append(
                f"the ODE solver's error (up to {n} step(s) per frame) moves a free parameter by "
                f"about {float(err):.2g} posterior sd at the posterior median: refit with "
                f"substeps={2 * n} or more"
            )
        return problems + self.weakly_determined()

    def _separate_modes(self, bad_r: Sequence[str]) -> list[str]:
        """The modes the chains were started in (``settings["start_modes"]``), if they stayed apart.

        Empty when the mode search found one mode or the chains mixed
        (``bad_r``, the variables with R-hat > 1.01, holds no free parameter).
        """
        modes = self.settings.get("start_modes") or []
        apart = [n for n in self.free if n in bad_r]
        if len(modes) < 2 or not apart:
            return []
        post = self.idata["posterior"]
        chains = []
        for name in apart:
            med = np.median(np.asarray(post[name]), axis=1)  # per chain (and ROI)
            if med.ndim == 1:
                chains.append(f"{name} " + " | ".join(f"{m:.3g}" for m in med))
            else:
                chains.append(name)
        mass = ", ".join(f"{100 * math.exp(float(m['log_mass'])):.0f} %" for m in modes[1:])
        return [
            f"the posterior has {len(modes)} separate modes (the others' mass, Laplace "
            f"estimate: {mass} of the highest one's); the chains started in them in turn "
            f"and stayed apart, per-chain medians: {'; '.join(chains)}. The data allow each: "
            "the pooled draws span them, weighted by chain, not by mass. Telling them apart "
            "needs more information (a tighter prior, a recording that saturates the "
            "indicator, or a second recording fitted together)"
        ]

    def _unexplained_residuals(self) -> list[str]:
        """ROIs whose residuals wander slowly: structure the model leaves unexplained.

        The AR(1) residuals can absorb a misfit, a transient the model cannot
        make or a baseline faster than the drift term: ``rho`` then goes to 1
        and ``sigma`` (the residuals' marginal sd) grows far above the
        frame-to-frame noise the recording shows (``noise_scale`` of the
        recorded numbers). The intervals then treat that structure as noise.
        """
        post = self.idata["posterior"]
        obs = self.idata["observed_data"] if "observed_data" in self.idata else None
        if "rho" not in post or "sigma" not in post or obs is None or "y" not in obs:
            return []
        y = np.asarray(obs["y"])
        y = y.reshape(-1, y.shape[-1])  # (roi, time)

        def median(name: str, r: int) -> float:
            a = np.asarray(post[name])
            a = a.reshape(a.shape[0] * a.shape[1], -1)  # (draw, roi or 1)
            return float(np.median(a[:, min(r, a.shape[1] - 1)]))

        labels = self.rois if self.rois is not None else [None]
        ind = self.model.indicator
        hint = ""
        if not self.model.kinetic and ind.hill > 1.0:
            # calmodulin-based indicators (cooperative, Hill > 1) bind over tens to hundreds
            # of ms; in equilibrium every event's rise is a step, which slowly wandering
            # residuals fit better than the cell (seen on real GCaMP6f recordings: the
            # residuals took the transients, the cell's ΔF/F shrank to a fifth)
            hint = (
                f"; {ind.name} is bound in equilibrium in this model, so each event's rise "
                "is a step where the indicator's own is tens to hundreds of ms: refit with "
                "indicator_kinetics='kinetic'"
            )
        out = []
        for r, label in enumerate(labels):
            rho_r = median("rho", r)
            ratio = median("sigma", r) / noise_scale(y[r])
            if rho_r > WANDER_RHO and ratio > WANDER_SIGMA:
                who = "" if label is None else f"ROI {label}: "
                out.append(
                    f"{who}the residuals wander slowly (AR(1) rho {rho_r:.2f}, their sd "
                    f"{ratio:.1f}× the frame-to-frame noise): the model leaves structure in the "
                    "trace unexplained and the intervals count it as noise; check the stimulus "
                    f"times, the model (binding kinetics, missing fluxes) and the baseline{hint}"
                )
        return out

    def weakly_determined(self) -> list[str]:
        """Free parameters the data pull far from their priors, or fix only in combination.

        Two checks on the log of each free parameter (the value itself when it
        can be ≤ 0): its posterior median lying more than 3 prior sds from the
        prior's (the data disagree with the literature value: check the model
        and what is held fixed), and posterior correlations beyond ±0.9 (a
        ridge: the data determine a combination, not each parameter), when one
        of the correlated parameters is uncertain by more than ±10 %. For a
        ridge the message names the combination the data determine best, the
        product of powers along the posterior's narrowest direction (e.g.
        ``influx_amplitude · kappa_s^-1``, the calcium jump per event, or
        ``gamma · kappa_s^-1``, the decay rate), with its posterior sd.

        Returns
        -------
        list of str
            One message per finding (empty if none).
        """
        if "prior" not in self.idata.children:
            return []
        post, prior = self.idata["posterior"], self.idata["prior"]
        groups: dict[str, list[tuple[str, str, np.ndarray]]] = {}
        messages = []
        for key, a, b in self._columns(post, prior):
            log = bool(np.all(a > 0) and np.all(b > 0))
            la, lb = (np.log(a), np.log(b)) if log else (a, b)
            sd_prior = float(lb.std())
            if sd_prior > 0:
                shift = abs(float(np.median(la)) - float(np.median(lb))) / sd_prior
                if shift > _MAX_PRIOR_SHIFT:
                    messages.append(
                        f"{key}: posterior median {float(np.median(a)):.4g} lies {shift:.1f} "
                        f"prior sds from the prior's {float(np.median(b)):.4g}; the data pull it "
                        "far from the literature value: check the model and the fixed parameters"
                    )
            name, _, roi = key.partition("[")
            groups.setdefault(roi, []).append((name, key, la))
        for members in groups.values():
            messages += _ridges(members)
        return messages

    def identifiability(self) -> tuple[Any, Any]:
        """What the data determined: prior-to-posterior contraction and posterior correlations.

        Returns
        -------
        table : pandas.DataFrame
            Per free parameter: prior and posterior sd of its logarithm (of the
            value itself for parameters that can be zero or negative) and the
            contraction ``1 − var_post/var_prior`` (near 1: the data determined
            it; near 0: the posterior is the prior).
        correlation : pandas.DataFrame
            Posterior correlations between the (log) free parameters; large
            magnitudes mark trade-offs such as influx amplitude against κ_S.
        """
        import pandas as pd

        post = self.idata["posterior"]
        prior = self.idata["prior"]
        rows = {}
        cols = {}
        for key, a, b in self._columns(post, prior):
            log = bool(np.all(a > 0) and np.all(b > 0))
            a, b = (np.log(a), np.log(b)) if log else (a, b)
            cols[key] = a
            rows[key] = {
                "scale": "log" if log else "linear",
                "prior_sd": float(b.std()),
                "posterior_sd": float(a.std()),
                "contraction": float(1.0 - a.var() / b.var()) if b.var() > 0 else float("nan"),
            }
        table = pd.DataFrame.from_dict(rows, orient="index")
        correlation = pd.DataFrame(cols).corr()
        return table, correlation

    def _columns(self, post: Any, prior: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(label, posterior draws, prior draws) per free parameter (and per ROI)."""
        out = []
        for name in self.free:
            if self.rois is None:
                out.append((name, np.asarray(post[name]).ravel(), np.asarray(prior[name]).ravel()))
                continue
            for label in self.rois:
                a = np.asarray(post[name].sel(roi=label)).ravel()
                b = np.asarray(prior[name].sel(roi=label)).ravel()
                out.append((f"{name}[{label}]", a, b))
        return out

    def posterior_mean(self) -> dict[str, Any]:
        """Posterior mean of each free parameter (an array over ROIs for a hierarchical fit)."""
        post = self.idata["posterior"]
        if self.rois is None:
            return {k: float(post[k].mean()) for k in self.free}
        return {k: np.asarray(post[k].mean(("chain", "draw"))) for k in self.free}

    def posterior_median(self) -> dict[str, Any]:
        """Posterior median of each free parameter (an array over ROIs for a hierarchical fit)."""
        post = self.idata["posterior"]
        if self.rois is None:
            return {k: float(post[k].median()) for k in self.free}
        return {k: np.asarray(post[k].median(("chain", "draw"))) for k in self.free}

    def predict(
        self,
        time: Any,
        stimulus: Stimulus | None,
        *,
        draws: int | None = 500,
        ci_prob: float = 0.94,
        clip: bool = False,
    ) -> xr.Dataset:
        """The cell's ΔF/F and free calcium for another recording, from the posterior.

        The same cell under another protocol or in another sweep: every kept
        draw of the physical parameters is run through the forward model at
        the new frame times with the new stimulus. What belongs to one
        recording (its F0, neuropil ratio, baseline drift, noise) does not
        carry over, so this is the model's ΔF/F and calcium, not a replicate
        of a recording's raw numbers.

        Parameters
        ----------
        time : array_like
            Frame times of the new recording (s), increasing.
        stimulus : Stimulus or None
            Its events (and waveform).
        draws : int or None
            Posterior draws to use, evenly spaced over the chains (None: all).
        ci_prob : float
            Probability mass of the pointwise equal-tailed bands, in (0, 1).
        clip : bool
            Drop events after the last frame, with a warning, instead of
            refusing the stimulus (recordings often stop before the protocol).

        Returns
        -------
        xarray.Dataset
            ``dff`` and ``ca`` (µM) with dims ``(sample, time)`` (and ``roi``
            for a hierarchical fit), their ``*_lower``/``*_median``/``*_upper``
            bands over ``time``, and attrs ``ci_prob`` and ``draws``. A
            ratiometric fit adds ``ratio``, the dye's background-free ratio
            with the posterior of the calibration (``dff`` is then the
            numerator channel's).

        Raises
        ------
        ValueError
            Times not increasing, ``ci_prob`` outside (0, 1), ``draws`` < 1, or
            (``clip=False``) events outside the new recording.
        """
        if not 0.0 < ci_prob < 1.0:
            raise ValueError(f"ci_prob = {ci_prob!r} must lie in (0, 1)")
        t = np.asarray(time, dtype=float)
        if t.ndim != 1 or t.size < 2 or not np.all(np.diff(t) > 0):
            raise ValueError("time must hold ≥ 2 strictly increasing frame times (s)")
        stim = stimulus
        if stim is not None and clip:
            late = stim.events > t[-1]
            if late.any():
                warnings.warn(
                    f"{int(late.sum())} stimulus event(s) after the last frame "
                    f"(t = {t[-1]:g} s) left out of the prediction",
                    UserWarning,
                    stacklevel=2,
                )
                stim = Stimulus(
                    events=stim.events[~late],
                    weights=stim.event_weights[~late],
                    waveform_time=stim.waveform_time,
                    waveform=stim.waveform,
                )
        if stim is not None:
            stim.check_within(float(t[0]), float(t[-1]))
        post = self.idata["posterior"]
        n_all = post.sizes["chain"] * post.sizes["draw"]
        if draws is not None and (int(draws) != draws or draws < 1):
            raise ValueError(f"draws = {draws!r} must be a positive integer or None")
        pick = np.arange(n_all) if draws is None or draws >= n_all else (
            np.linspace(0, n_all - 1, int(draws)).round().astype(int)
        )  # fmt: skip
        base = self.model.pack_raw(self.model.values(self.fixed))
        slots = self.model.slots()
        forward = forward_solver(
            self.model, t, stim, substeps=int(self.settings.get("substeps", 1))
        )
        n_roi = 1 if self.rois is None else len(self.rois)
        flat = {k: np.asarray(post[k]).reshape(n_all, -1)[pick] for k in self.free}
        dff = np.empty((pick.size, n_roi, t.size))
        ca = np.empty_like(dff)
        for r in range(n_roi):
            for i, p in enumerate(_packed(base, slots, flat, r, n=pick.size)):
                dff[i, r], ca[i, r] = forward(p)
        series = [("dff", dff, "1"), ("ca", ca, "µM")]
        if self.settings.get("observation") == "ratio":
            series.append(("ratio", self._predicted_ratio(dff, flat, pick, base, slots), "1"))
        lo_q, hi_q = (1 - ci_prob) / 2, (1 + ci_prob) / 2
        dims: tuple[str, ...] = ("sample", "time") if self.rois is None else (
            "sample", "roi", "time"
        )  # fmt: skip
        out: dict[str, Any] = {}
        for name, arr, unit in series:
            a = arr[:, 0] if self.rois is None else arr
            out[name] = (dims, a, {"units": unit})
            q = np.quantile(a, [lo_q, 0.5, hi_q], axis=0)
            for label, band in zip(("lower", "median", "upper"), q, strict=True):
                out[f"{name}_{label}"] = (dims[1:], band, {"units": unit})
        coords: dict[str, Any] = {"time": ("time", t, {"units": "s"})}
        if self.rois is not None:
            coords["roi"] = list(self.rois)
        return xr.Dataset(out, coords=coords, attrs={"ci_prob": ci_prob, "draws": int(pick.size)})

    def _predicted_ratio(
        self,
        dff: np.ndarray,
        flat: Mapping[str, np.ndarray],
        pick: np.ndarray,
        base: np.ndarray,
        slots: Mapping[str, int],
    ) -> np.ndarray:
        """The dye's background-free ratio ``(sample, roi, time)`` of a ratiometric fit.

        The calibration (``R_min``, ``R_max``, ``β``) belongs to the setup, so
        its posterior carries over to another recording on it; the
        background and baseline of this recording do not.
        """
        post = self.idata["posterior"]
        n_all = post.sizes["chain"] * post.sizes["draw"]
        r_min, r_max, beta = (
            np.asarray(post[k]).reshape(n_all)[pick][:, None] for k in ("R_min", "R_max", "beta")
        )
        out = np.empty_like(dff)
        for r in range(dff.shape[1]):
            f, _ = _dye_fraction(dff[:, r], flat, base, slots, r)
            out[:, r] = _model_ratio(r_min, r_max, beta, f)
        return out

    def plot_trace(self, **kwargs: Any) -> Any:
        """Data with predictive and free-Ca bands: :func:`~cainfer.infer.plots.plot_trace`."""
        from cainfer.infer.plots import plot_trace

        return plot_trace(self, **kwargs)

    def plot_posteriors(self, **kwargs: Any) -> Any:
        """Posteriors over priors: :func:`~cainfer.infer.plots.plot_posteriors`."""
        from cainfer.infer.plots import plot_posteriors

        return plot_posteriors(self, **kwargs)

    def plot_pairs(self, **kwargs: Any) -> Any:
        """Pair plot of the free parameters: :func:`~cainfer.infer.plots.plot_pairs`."""
        from cainfer.infer.plots import plot_pairs

        return plot_pairs(self, **kwargs)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fit to one NetCDF file (atomically); read it back with :func:`load_fit`."""
        path = Path(path)
        tree = self.idata.copy()
        tree.attrs = dict(tree.attrs) | {
            "cainfer_model": json.dumps(self.model.to_dict()),
            "cainfer_free": json.dumps(self.free),
            "cainfer_fixed": json.dumps(self.fixed),
            "cainfer_settings": json.dumps(self.settings),
            "cainfer_rois": json.dumps(self.rois),
        }
        for name in list(tree.children):
            if name.startswith("warmup"):
                del tree[name]
        with atomic_path(path) as tmp:
            tree.to_netcdf(tmp, engine="h5netcdf")
        return path


def load_fit(path: str | os.PathLike[str]) -> Fit:
    """Read a fit written by :meth:`Fit.save`.

    Raises
    ------
    ValueError
        Naming the file: missing, not NetCDF (or truncated), or not a fit.
    """
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such fit file")
    try:
        with xr.open_datatree(path, engine="h5netcdf") as opened:
            tree = opened.load()
    except Exception as e:  # h5py/h5netcdf raise OSError, ValueError or their own types
        raise ValueError(f"{path}: cannot be read as a saved fit ({type(e).__name__}: {e}); "
                         "a damaged or truncated file: fit again") from None  # fmt: skip
    try:
        model = CellModel.from_dict(json.loads(tree.attrs["cainfer_model"]))
        free = json.loads(tree.attrs["cainfer_free"])
        fixed = json.loads(tree.attrs["cainfer_fixed"])
        settings = json.loads(tree.attrs["cainfer_settings"])
        rois = json.loads(tree.attrs.get("cainfer_rois", "null"))
    except KeyError as e:
        raise ValueError(f"{path}: not a cainfer fit (missing {e})") from None
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path}: not a cainfer fit (damaged attributes: {e})") from None
    fit = Fit(tree, model, free, fixed, settings, rois=rois)
    fit.problems = fit.diagnostics()
    fit.ok = not fit.problems
    return fit


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
        A slow frame rate with fast kinetics (a few Hz) needs several. An
        integer is used as given and checked; its failure is reported in
        :attr:`Fit.problems`.
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
"""


def _obs_options(options: Mapping[str, Any]) -> Options:
    return Options(
        likelihood=options["likelihood"],
        residuals=options["residuals"],
        drift=options["drift"],
        drift_timescale=options["drift_timescale"],
    )


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


def _jsonable(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _pymc_model(
    problem: _Problem,
    options: Mapping[str, Any],
) -> pm.Model:
    """The PyMC model of ``data`` (roi, time); ``labels`` None: one ROI, scalar parameters."""
    pr = problem
    model, data, t, labels, stimulus = pr.model, pr.data, pr.t, pr.labels, pr.stimulus
    free, fixed, priors, pooled, pool_sd = pr.free, pr.fixed, pr.priors, pr.pooled, pr.pool_sd
    values = model.values(fixed)
    model.resting_state(values)  # validates the fixed part
    op, consts = solve_op(model, t, stimulus, substeps=options["substeps"], free=free)
    slots = model.slots()
    idx = np.array([slots[n] for n in free])
    dims = None if labels is None else "roi"
    coords = {} if labels is None else {"roi": [_jsonable(x) for x in labels]}
    n_roi = data.y.shape[0]

    with pm.Model(coords=coords) as pm_model:
        rvs = _free_rvs(
            model, free, priors, values, options["coordinates"],
            dims=dims, pooled=pooled, pool_sd=pool_sd, centered=options.get("centered", True),
        )  # fmt: skip
        base = pt.as_tensor_variable(model.pack_raw(values))
        dffs = []
        bound = []
        for r in range(n_roi):
            vec = pt.stack(rvs) if labels is None else pt.stack([v[r] for v in rvs])
            dffs.append(cast(Any, op(pt.set_subtensor(base[idx], vec), *consts))[0])
            if data.kind == "ratio":

                def par(name: str, r: int = r) -> Any:
                    if name in free:
                        v = rvs[free.index(name)]
                        return v if labels is None else v[r]
                    return values[name]

                bound.append(_bound_fraction(pt, dffs[-1], *map(par, _DYE_PARAMETERS)))
        add_likelihood(
            dffs, data, t, _obs_options(options), several=labels is not None, bound=bound
        )
    return pm_model


# the cell-model parameters the dye's bound fraction depends on, in _bound_fraction's order
_DYE_PARAMETERS = ("c_rest", "kd", "hill", "rf")


def _bound_fraction(xp: Any, dff: Any, c_rest: Any, kd: Any, hill: Any, rf: Any) -> Any:
    """The dye's bound fraction over time and at rest from the model's ΔF/F.

    The model's indicator reads ``F/F_min = 1 + (R_f − 1)·f``, so ``f`` follows
    from its ΔF/F exactly (equilibrium or kinetic binding alike).
    """
    x0 = (c_rest / kd) ** hill
    f_rest = x0 / (1.0 + x0)
    return f_rest + dff * (1.0 + (rf - 1.0) * f_rest) / (rf - 1.0), f_rest


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

    ``substeps="auto"``: the steps of each frame interval are chosen at the
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
        opts["substeps"] = _choose_substeps(
            model, [start] * n_roi, t, stimulus, noise, slots=slots, also=around
        )
    result = _sample(problem, opts)
    at = _median_vectors(result)
    err = _solver_error(model, at, t, stimulus, opts["substeps"], noise, slots=slots)
    if auto and err > SOLVER_TOLERANCE and np.min(opts["substeps"]) < _MAX_SUBSTEPS:
        first = opts["substeps"]
        opts["substeps"] = _choose_substeps(model, at, t, stimulus, noise, slots=slots, first=first)
        result = _sample(problem, opts)
        at = _median_vectors(result)
        err = _solver_error(model, at, t, stimulus, opts["substeps"], noise, slots=slots)
    result.settings["solver_error"] = err
    result.problems = result.diagnostics()
    result.ok = not result.problems
    weak = set(result.weakly_determined())
    for msg in result.problems:
        category = IdentifiabilityWarning if msg in weak else SamplerWarning
        warnings.warn(msg, category, stacklevel=4)  # _run, its cache wrapper, fit: the caller
    return result


# residuals this autocorrelated and this much larger than the frame-to-frame noise are
# structure the model did not explain (Fit._unexplained_residuals)
WANDER_RHO = 0.8
WANDER_SIGMA = 2.0

# how far the solver's error may move a free parameter, in its posterior sds
# (linearised, _solver_error)
SOLVER_TOLERANCE = 0.25
_MAX_SUBSTEPS = 64


def _dff_noise(data: ObservedData) -> np.ndarray:
    """``(roi,)`` robust noise sd of the recording in the model's ΔF/F units."""
    sd = np.array([noise_scale(row) for row in data.y])
    if data.kind in ("fluorescence", "ratio"):
        level = data.f0 if (data.kind == "fluorescence" and data.f0 is not None) else (
            data.rest_level
        )  # fmt: skip
        sd = sd / np.maximum(np.abs(np.asarray(level, dtype=float)), 1e-12)
    return sd


class _Solves:
    """ΔF/F solves of one model and recording, each (vector, step counts) done once.

    The step search asks for the solve at ``n`` and ``2n`` steps per frame at
    each refinement; the ``2n`` of one is often the ``n`` of the next.
    """

    def __init__(self, model: CellModel, t: np.ndarray, stimulus: Stimulus | None) -> None:
        self.model, self.t, self.stimulus = model, t, stimulus
        self._order = 3 if model.kinetic else 4
        self._solvers: dict[bytes, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {}
        self._dff: dict[tuple[bytes, bytes], np.ndarray] = {}

    def dff(self, v: np.ndarray, substeps: int | np.ndarray) -> np.ndarray:
        """ΔF/F of packed parameter vector ``v`` at ``substeps`` steps per frame (or interval)."""
        n = np.broadcast_to(np.asarray(substeps, dtype=np.int64), (max(self.t.size - 1, 0),))
        steps = n.tobytes()
        key = (steps, np.ascontiguousarray(v, dtype=float).tobytes())
        if key not in self._dff:
            if steps not in self._solvers:
                self._solvers[steps] = forward_solver(
                    self.model, self.t, self.stimulus, substeps=np.ascontiguousarray(n)
                )
            self._dff[key] = np.asarray(self._solvers[steps](v)[0])
        return self._dff[key]

    def error(self, v: np.ndarray, substeps: int | np.ndarray) -> np.ndarray:
        """Richardson's estimate of the ΔF/F error at ``substeps``: ``(d_n − d_2n)·2^p/(2^p − 1)``.

        ``p`` is the solver's order: RK4 fourth, the kinetic SDIRK third.
        """
        gain = 2.0**self._order / (2.0**self._order - 1.0)
        return gain * (self.dff(v, substeps) - self.dff(v, 2 * np.asarray(substeps)))


def _solver_error(
    model: CellModel,
    vectors: Sequence[np.ndarray],
    t: np.ndarray,
    stimulus: Stimulus | None,
    substeps: int | np.ndarray,
    noise: np.ndarray,
    *,
    slots: Sequence[int] | None = None,
    solves: _Solves | None = None,
) -> float:
    """How far the ΔF/F solve's error moves the fit, worst over the ROIs.

    The error ``δ`` at ``substeps`` steps per frame (one count, or one per
    frame interval) is estimated by Richardson extrapolation from the solve
    at twice as many (RK4 is fourth order, the kinetic SDIRK third):
    ``δ ≈ (d_n − d_2n) · 2^p/(2^p − 1)``.
    Without ``slots``: ``‖δ‖/σ`` (L2 over the frames, ``σ`` the noise sd of
    the ΔF/F), a bound on how many posterior sds any parameter can move.
    With ``slots`` (the free parameters' slots in the packed vector): the
    linearised shift itself, the largest over the free parameters in their
    own (white-noise) posterior sds: least squares of ``δ`` on the ΔF/F's
    sensitivities to them, with a constant and the ΔF/F itself (the
    observation's offset and scale) fitted out of both (Frisch–Waugh–Lovell).
    ``solves`` (of the same model, ``t`` and ``stimulus``) keeps the solves
    for the next call.
    """
    if slots is not None and not len(slots):
        return 0.0  # nothing free for the error to move
    solves = solves if solves is not None else _Solves(model, t, stimulus)
    worst = 0.0
    for r, v in enumerate(vectors):
        sigma = float(noise[min(r, noise.size - 1)])
        fine = solves.dff(v, 2 * np.asarray(substeps))
        delta = solves.error(v, substeps)
        if slots is not None and np.all(np.isfinite(delta)):
            cols = []
            for slot in slots:
                h = 1e-5 * max(abs(float(v[slot])), 1e-6)
                up = v.copy()
                up[slot] += h
                cols.append((solves.dff(up, 2 * np.asarray(substeps)) - fine) / h)
            # Frisch–Waugh–Lovell: the free parameters' estimates see the error and
            # their sensitivities with the observation's offset and scale fitted out
            nuis = np.column_stack([np.ones_like(fine), fine])

            def resid(x: np.ndarray, basis: np.ndarray = nuis) -> np.ndarray:
                return x - basis @ np.linalg.lstsq(basis, x, rcond=None)[0]

            sens = resid(np.column_stack(cols))
            shift = np.linalg.lstsq(sens, resid(delta), rcond=None)[0]
            sd = np.sqrt(np.diag(np.linalg.pinv(sens.T @ sens)))
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.abs(shift) / (sd * sigma)
            e = float(np.max(np.where(sd > 0, z, 0.0)))
        else:
            e = float(np.sqrt(np.sum(delta**2))) / sigma
        worst = max(worst, e if np.isfinite(e) else np.inf)
    return worst


def _choose_substeps(
    model: CellModel,
    vectors: Sequence[np.ndarray],
    t: np.ndarray,
    stimulus: Stimulus | None,
    noise: np.ndarray,
    *,
    slots: Sequence[int] | None = None,
    first: int | np.ndarray = 1,
    also: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Solver steps per frame interval: few where the solve is easy, more where it is not.

    From ``first`` steps in every interval (or the counts given, one per
    interval), the intervals where the solve's error grows most are doubled,
    with ``_REFINE_MARGIN`` intervals either side, until the error moves no
    free parameter by more than ``SOLVER_TOLERANCE`` posterior sd
    (:func:`_solver_error`) at any of ``vectors`` (one per ROI, each with its
    noise) or of ``also`` (more vectors held to the first ROI's noise: where
    the fast phases would be if the parameters were elsewhere). The error
    ``δ`` of each interval's end is Richardson's (as in
    :func:`_solver_error`); its growth over the interval, ``δ_i − δ_{i−1}``,
    is where the solve loses accuracy: the fast phases after events or
    during release, rarely the slow decays between them. The intervals
    doubled are the fewest that hold ``_REFINE_SHARE`` of the summed squared
    growth (in noise sds). Counts stop at ``_MAX_SUBSTEPS``.

    Returns
    -------
    numpy.ndarray
        ``(len(t) − 1,)`` integer steps per frame interval.
    """
    from scipy.ndimage import binary_dilation

    n_int = max(t.size - 1, 0)
    n = np.clip(np.broadcast_to(np.asarray(first, dtype=np.int64), (n_int,)), 1, _MAX_SUBSTEPS)
    solves = _Solves(model, t, stimulus)
    points = [(v, float(noise[min(r, noise.size - 1)])) for r, v in enumerate(vectors)]
    # a vector the solve cannot follow even at the finest step is no place the fit goes
    points += [
        (v, float(noise[0]))
        for v in also
        if np.all(np.isfinite(solves.dff(v, np.full(n_int, _MAX_SUBSTEPS))))
    ]
    while n_int and np.any(n < _MAX_SUBSTEPS):
        err = max(
            _solver_error(model, [v], t, stimulus, n, np.array([sd]), slots=slots, solves=solves)
            for v, sd in points
        )
        if err <= SOLVER_TOLERANCE:
            break
        growth = np.zeros(n_int)
        for v, sd in points:
            delta = solves.error(v, n) / sd
            growth += np.where(np.isfinite(delta[1:]), np.diff(delta), np.inf) ** 2
        growth[n >= _MAX_SUBSTEPS] = 0.0
        total = float(growth.sum())
        if not np.isfinite(total) or total <= 0.0:
            pick = n < _MAX_SUBSTEPS  # no place stands out (or the solve failed): all
        else:
            order = np.argsort(growth)[::-1]
            k = int(np.searchsorted(np.cumsum(growth[order]), _REFINE_SHARE * total)) + 1
            pick = np.zeros(n_int, dtype=bool)
            pick[order[:k]] = True
            pick = binary_dilation(pick, iterations=_REFINE_MARGIN)
        n[pick] = np.minimum(2 * n[pick], _MAX_SUBSTEPS)
    return n


def _spread_vectors(v: np.ndarray, slots: Sequence[int]) -> list[np.ndarray]:
    """``v`` with each free parameter in turn ×/÷ ``e^_SPREAD``: where else the fit may go."""
    out = []
    for slot in slots:
        for f in (math.exp(_SPREAD), math.exp(-_SPREAD)):
            w = v.copy()
            w[slot] *= f
            out.append(w)
    return out


# the step search doubles the intervals holding this share of the error's squared growth,
# and this many intervals either side; it also checks the start with each free parameter
# moved by this log factor (a posterior mode is seldom further from the prior's centre)
_REFINE_SHARE = 0.95
_REFINE_MARGIN = 2
_SPREAD = 0.5


def _median_vectors(result: Fit) -> list[np.ndarray]:
    """Packed parameter vectors at the posterior median, one per ROI of the fit."""
    model = result.model
    base = model.pack_raw(model.values(result.fixed))
    post = result.idata["posterior"]
    median = {}
    for k in result.free:
        a = np.asarray(post[k])
        median[k] = np.median(a.reshape(a.shape[0] * a.shape[1], -1), axis=0, keepdims=True)
    n_roi = 1 if result.rois is None else len(result.rois)
    return [_packed(base, model.slots(), median, r, n=1)[0] for r in range(n_roi)]


def _roi_draws(draws: np.ndarray, r: int) -> np.ndarray:
    """One parameter's ``(draw, roi)`` draws (``(draw, 1)`` if shared) for ROI ``r``."""
    return draws[:, r if draws.shape[1] > 1 else 0]


def _packed(
    base: np.ndarray, slots: Mapping[str, int], draws: Mapping[str, np.ndarray], r: int, *, n: int
) -> np.ndarray:
    """``(n, n_par)`` packed parameter vectors of ROI ``r``: ``base`` with each draw put in."""
    out = np.tile(base, (n, 1))
    for k, d in draws.items():
        out[:, slots[k]] = _roi_draws(d, r)
    return out


def _dye_fraction(
    dff: np.ndarray,
    draws: Mapping[str, np.ndarray],
    base: np.ndarray,
    slots: Mapping[str, int],
    r: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The dye's bound fraction ``(draw, time)`` and resting one ``(draw, 1)`` in ROI ``r``.

    ``dff`` ``(draw, time)`` is the model's ΔF/F under the same draws; a dye
    parameter that was not free is its fixed value from ``base``.
    """
    n = dff.shape[0]

    def par(name: str) -> np.ndarray:
        col = _roi_draws(draws[name], r) if name in draws else np.full(n, base[slots[name]])
        return col[:, None]

    return _bound_fraction(np, dff, *map(par, _DYE_PARAMETERS))


def _model_ratio(r_min: Any, r_max: Any, beta: Any, f: np.ndarray) -> np.ndarray:
    """The background-free ratio of a dye with bound fraction ``f`` (Grynkiewicz's shapes)."""
    num, den = channel_shapes(r_min, r_max, beta, f)
    return np.asarray(num / den)


def _sample(
    problem: _Problem,
    options: Mapping[str, Any],
) -> Fit:
    """Build the PyMC model for ``data`` (roi, time), sample it with nutpie, add the results.

    ``labels`` None: one ROI with scalar parameters; else one value per ROI.
    ``options["substeps"]`` is an integer or an integer array, one per frame interval.
    """
    import nutpie

    pr = problem
    model, data, t, labels, stimulus = pr.model, pr.data, pr.t, pr.labels, pr.stimulus
    free, fixed, pooled, pool_sd = pr.free, pr.fixed, pr.pooled, pr.pool_sd

    seed, chains = options["seed"], options["chains"]
    pm_model = _pymc_model(problem, options)
    values = model.values(fixed)
    coords = {} if labels is None else {"roi": [_jsonable(x) for x in labels]}
    n_cores = max(1, min(chains, options["cores"] or os.cpu_count() or 1))
    t0 = time_module.perf_counter()
    modes: list[dict[str, float]] = []  # separate modes the chains were started in
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
                progressbar=False,
                nuts={"target_accept": float(options["target_accept"])},
            )
    else:
        # no fast-math in the compiled log density: the draws of a seed then do not
        # depend on PyTensor's fast-math default (the solver kernels pin it off themselves)
        with pytensor.config.change_flags(numba__fastmath=False):
            if options["backend"] == "numba":
                compiled = compile_numba(pm_model)
            else:
                compiled = nutpie.compile_pymc_model(pm_model, backend=options["backend"])
        if hasattr(compiled, "logp_func"):  # the numba backend's compiled model
            noise = np.array([noise_scale(row) for row in data.y])
            plan = _start_plan(pm_model, noise, seed, _N_DESIGN)
            found: dict[str, Any] = {}
            compiled = _mode_starts(
                compiled, seed, plan=plan, chains=chains, report=found,
                chain_seeds=functools.partial(_chain_seeds, compiled, chains, seed),
            )  # fmt: skip
            modes = found.get("modes", [])
        t1 = time_module.perf_counter()
        idata = nutpie.sample(
            compiled,
            draws=options["draws"],
            tune=options["tune"],
            chains=chains,
            cores=n_cores,
            seed=seed,
            progress_bar=False,
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
            prior = _prior_draws(pm_model, min(500, options["draws"] * chains), seed)
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
    fixed_values = {k: v for k, v in values.items() if k not in free}
    return Fit(idata, model, free, fixed_values, settings, rois=coords.get("roi"))


def _chain_seeds(compiled: Any, chains: int, seed: int, at: np.ndarray) -> list[int]:
    """The seeds nutpie passes to ``compiled``'s start function for ``chains`` and ``seed``.

    A one-draw run (trees of depth 1) started at ``at`` (a point of finite
    log density, so that nutpie asks for no other start) records them.
    nutpie derives each chain's seed from ``seed`` and the chain's index
    alone, so the run that follows gets the same ones.
    """
    import nutpie

    seen: list[int] = []

    def record(chain_seed: Any) -> np.ndarray:
        seen.append(int(chain_seed))
        return np.array(at, dtype=float)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz: "chain dimension longer than draw"
        nutpie.sample(
            dataclasses.replace(compiled, initial_point_func=record),
            draws=1, tune=1, chains=chains, cores=1, seed=seed, maxdepth=1,
            progress_bar=False, save_warmup=False,
        )  # fmt: skip
    return seen


# prior draws of the cell's parameters ranked before the search for modes
_N_DESIGN = 256

# a start whose local mode is this much below the best mode found (log density) is
# moved to the best: e^-50 of the peak density holds no posterior mass in a few dims
_MODE_GAP = 50.0


# a start whose mode is a separate one (the log density dips this much below the lower
# of the two on the straight line between them) with at most this much less posterior
# mass (Laplace, log) than the best mode gets chains of its own
_MODE_DIP = 3.0
_MODE_MASS_GAP = 3.0


def _prior_draws(pm_model: pm.Model, draws: int, seed: int) -> Any:
    """The prior group: draws of every parameter from its prior.

    A sheared variable (``OBSERVATION_SHEARED``: its sampled stand-in is
    centred on a function of the cell model's ΔF/F) is not drawn through the
    model, which would solve the cell for every draw; its reported variable's
    prior is the stated log-normal whatever the cell's parameters, and is
    drawn as that.
    """
    import pymc as pm

    names = {v.name for v in (*pm_model.free_RVs, *pm_model.deterministics)}
    sheared = {k: v for k, v in OBSERVATION_SHEARED.items() if k in names}
    skip = set(sheared) | {reported for reported, _ in sheared.values()}
    prior = pm.sample_prior_predictive(
        draws=draws, random_seed=seed, var_names=sorted(names - skip)
    )["prior"]
    prior = prior.to_dataset() if hasattr(prior, "to_dataset") else prior
    rng = np.random.default_rng([abs(int(seed)), 0x5EA4])
    for stand_in, (reported, log_sd) in sheared.items():
        shape = tuple(int(n) for n in pm_model[stand_in].shape.eval())
        dims = ["chain", "draw", *(["roi"] if shape else [])]
        value = np.exp(rng.normal(0.0, log_sd, size=(1, draws, *shape)))
        prior[reported] = (dims, value)
    return prior


# names of the observation model's free variables (the rest of a model's are the cell's)
_OBSERVATION_RVS = frozenset({*OBSERVATION_REPORTED, *OBSERVATION_SHEARED, "sigma", "drift_z"})


@dataclass(frozen=True)
class _StartPlan:
    """Where the climbs to a posterior mode begin, in the sampler's flat coordinates.

    ``centre``: the prior's support point of every free variable but the
    noise's. ``held``, ``held_at``: coordinates of the noise model (``sigma``
    at the recording's robust noise sd, ``rho`` at 0) held in the first stage
    of each climb, and their values (also the centre's).
    ``design``: points that share the centre's observation terms and hold
    the noise, with the cell's parameters drawn from their prior (rows).
    """

    centre: np.ndarray
    held: np.ndarray
    held_at: np.ndarray
    design: np.ndarray


def _start_plan(pm_model: pm.Model, noise: np.ndarray, seed: int, n_design: int) -> _StartPlan:
    """The :class:`_StartPlan` of ``pm_model`` (nutpie's order: ``free_RVs`` in turn, raveled).

    Parameters
    ----------
    pm_model : pymc.Model
        The model to sample.
    noise : numpy.ndarray
        Robust noise sd of each ROI's recording (its units).
    seed : int
        Seed of the prior draws.
    n_design : int
        Number of prior draws of the cell's parameters.
    """
    from pymc.initial_point import make_initial_point_fn

    rvs = list(pm_model.free_RVs)
    held_values: dict[str, Any] = {}
    names = {rv.name for rv in rvs}
    if "sigma" in names:
        shape = tuple(pm_model["sigma"].shape.eval())
        sd = np.asarray(noise, dtype=float)
        held_values["sigma"] = sd.reshape(shape) if shape else float(sd[0])
    if "rho" in names:
        held_values["rho"] = np.zeros(tuple(pm_model["rho"].shape.eval()))
    point = make_initial_point_fn(
        model=pm_model, jitter_rvs=set(), overrides=held_values, return_transformed=True
    )(0)
    cell = [rv for rv in rvs if rv.name not in _OBSERVATION_RVS]
    exprs = []
    for rv in cell:  # prior draws in the sampler's coordinates
        transform = pm_model.rvs_to_transforms.get(rv)
        exprs.append(rv if transform is None else transform.forward(rv, *rv.owner.inputs))
    drawn = pm.draw(exprs, draws=n_design, random_seed=seed) if cell and n_design else []
    drawn = drawn if isinstance(drawn, list) else [drawn]
    parts, idx, columns = [], [], []
    count = 0
    for rv in rvs:
        v = np.ravel(np.asarray(point[pm_model.rvs_to_values[rv].name], dtype=float))
        sl = np.arange(count, count + v.size)
        if rv.name in held_values:
            idx.append(sl)
        if drawn and rv in cell:
            columns.append((sl, np.asarray(drawn[cell.index(rv)], dtype=float)))
        parts.append(v)
        count += v.size
    centre = np.concatenate(parts)  # the noise already at its held values
    held = np.concatenate(idx) if idx else np.zeros(0, dtype=int)
    design = np.tile(centre, (n_design if columns else 0, 1))
    for sl, d in columns:
        design[:, sl] = d.reshape(d.shape[0], -1)
    return _StartPlan(centre, held, centre[held], design)


def _mode_starts(
    compiled: Any,
    seed: int,
    n_probe: int = 4,
    spread: float = 0.5,
    plan: _StartPlan | None = None,
    *,
    chains: int = 1,
    chain_seeds: Callable[[np.ndarray], Sequence[int]] | None = None,
    report: dict[str, Any] | None = None,
) -> Any:
    """``compiled`` with chains started near posterior modes instead of at jittered prior points.

    Modes are searched first (probes): ``plan``'s design points (the cell's
    parameters drawn from their prior, the noise at its measured level) are
    ranked by log density, and L-BFGS climbs from the ``n_probe`` best and from
    the prior's centre; without a plan, from ``n_probe`` jittered prior points.
    Regenerative models (ER release) have local modes, such as a train that
    does or does not trigger release, separated by cliffs no climb crosses: a
    climb finds the mode of the basin it starts in, so the search must start
    in the right one. Each climb first holds the noise (sd at its measured
    level, white): a climb with the noise free can end where a large, slowly
    wandering noise explains the transients instead of the cell.

    Each chain's jittered start (PyMC's initial point) is then moved uphill to
    its local mode; a chain whose mode is more than ``_MODE_GAP`` below the
    best probe goes to the best mode instead. The chain starts ``spread``
    local posterior sds from that mode, in a random direction: sd from the
    curvature of the log density at the mode (finite differences of its
    gradient, one per coordinate). At the mode itself the gradient is near
    zero, and nutpie sets its first mass matrix from the gradient at the
    start: on B1 with its ΔF/F observation model, chains started exactly at
    their modes spent their first draws in trees of 255–1023 steps at step
    sizes near 0.001. Starting from the jittered prior points instead let one
    chain of the bundled ER example wander into a poor mode during warmup
    (R-hat 1.88); half a local sd stays in the mode's basin.

    Separate modes of comparable mass. A probe's mode is separate from the
    best when the log density dips more than ``_MODE_DIP`` below the lower of
    the two on the straight line between them (never, within one log-concave
    mode), and comparable when its Laplace mass (log density plus the log
    local sds) is within ``_MODE_MASS_GAP`` of the best's. With ``chains`` ≥ 2
    and such modes, up to ``chains`` modes get chains in turn (the best
    first): ``chain_seeds(x)`` gives the seeds nutpie will pass (from a run
    started at ``x``), and a chain's rank among them picks its mode, so that
    the draws of a seed do not depend on the order the chains start in.
    Every chain going to the best mode would report a posterior with two
    modes of comparable mass as one, sharply. NUTS does not cross between
    such modes: the chains disagree (R-hat) and :meth:`Fit.diagnostics`
    names the modes. ``report``, when given, gets ``"modes"``: each chosen
    mode's log density and log Laplace mass relative to the best.
    """
    from scipy import optimize

    logp_grad = compiled.logp_func  # x -> [logp, grad], compiled with the model
    start = compiled.initial_point_func
    lock = threading.Lock()

    def neg(x: np.ndarray) -> tuple[float, np.ndarray]:
        lp, g = logp_grad(x)
        lp = float(lp)
        if not np.isfinite(lp):
            return 1e300, np.zeros_like(x)
        return -lp, -np.asarray(g, dtype=float)

    def climb(x0: np.ndarray) -> tuple[np.ndarray, float]:
        x0 = np.array(x0, dtype=float)
        with np.errstate(all="ignore"):
            if plan is not None and plan.held.size:
                free = np.ones(x0.size, dtype=bool)
                free[plan.held] = False
                x0[plan.held] = plan.held_at

                def neg_part(xf: np.ndarray) -> tuple[float, np.ndarray]:
                    x = x0.copy()
                    x[free] = xf
                    f, g = neg(x)
                    return f, g[free]

                r = optimize.minimize(
                    neg_part, x0[free], jac=True, method="L-BFGS-B", options={"maxiter": 300}
                )
                if np.all(np.isfinite(r.x)):
                    x0[free] = r.x
            r = optimize.minimize(neg, x0, jac=True, method="L-BFGS-B", options={"maxiter": 300})
        x = r.x if np.all(np.isfinite(r.x)) else x0
        lp = float(logp_grad(x)[0])
        return x, lp if np.isfinite(lp) else -np.inf

    def local_sd(x: np.ndarray) -> np.ndarray:
        """Posterior sd of each coordinate at the mode ``x`` from the Hessian's diagonal.

        0 where the curvature is not positive and finite (no step there).
        """
        g0 = np.asarray(logp_grad(x)[1], dtype=float)
        curvature = np.zeros_like(x)
        with np.errstate(all="ignore"):
            for i in range(x.size):
                h = 1e-4 * max(1.0, abs(x[i]))
                e = np.zeros_like(x)
                e[i] = h
                curvature[i] = -(float(np.asarray(logp_grad(x + e)[1])[i]) - g0[i]) / h
            ok = np.isfinite(curvature) & (curvature > 0)
            return np.where(ok, 1.0 / np.sqrt(np.where(ok, curvature, 1.0)), 0.0)

    with lock:
        if plan is not None and plan.design.shape[0]:
            with np.errstate(all="ignore"):
                lps = np.array([float(logp_grad(x)[0]) for x in plan.design])
            lps = np.where(np.isfinite(lps), lps, -np.inf)
            origins = [plan.design[i] for i in np.argsort(-lps)[:n_probe]] + [plan.centre]
        else:
            origins = [np.asarray(start(seed * 7919 + 104729 + k), float) for k in range(n_probe)]
            if plan is not None:
                origins.append(plan.centre)
        probes = [climb(x0) for x0 in origins]
        best_x, best_lp = max(probes, key=lambda p: p[1])

    def log_mass(x: np.ndarray, lp: float) -> tuple[float, np.ndarray]:
        """Laplace log mass of the mode ``x`` and its local sds (reused for its chains)."""
        sd = local_sd(x)
        return lp + float(np.sum(np.log(sd[sd > 0]))), sd

    def separate(a: tuple[np.ndarray, float], b: tuple[np.ndarray, float]) -> bool:
        floor = min(a[1], b[1]) - _MODE_DIP
        with np.errstate(all="ignore"):
            for f in np.linspace(0.0, 1.0, 11)[1:-1]:
                lp = float(logp_grad(a[0] + f * (b[0] - a[0]))[0])
                if not lp >= floor:  # NaN or -inf: no way through either
                    return True
        return False

    modes: list[tuple[np.ndarray, float]] = [(best_x, best_lp)]
    masses: list[float] = []
    sds: list[np.ndarray] = []  # each mode's local sds, once masses are needed
    if chains >= 2 and np.isfinite(best_lp):
        with lock:
            for x, lp in sorted(probes, key=lambda p: -p[1]):
                if len(modes) >= chains or not lp >= best_lp - _MODE_GAP:
                    break
                if not all(separate((x, lp), m) for m in modes):
                    continue
                if not masses:
                    mass, sd = log_mass(best_x, best_lp)
                    masses.append(mass)
                    sds.append(sd)
                mass, sd = log_mass(x, lp)
                if mass >= masses[0] - _MODE_MASS_GAP:
                    modes.append((x, lp))
                    masses.append(mass)
                    sds.append(sd)
    rank: dict[int, int] = {}
    if len(modes) > 1:
        seeds = sorted({int(s) for s in chain_seeds(best_x)}) if chain_seeds is not None else []
        rank = {s: i for i, s in enumerate(seeds)}
    if report is not None:
        report["modes"] = [
            {"log_density": float(lp), "log_mass": float(m - masses[0])}
            for (_, lp), m in zip(modes, masses, strict=True)
        ] if len(modes) > 1 else []  # fmt: skip

    def init(chain_seed: Any) -> np.ndarray:
        x0 = np.asarray(start(chain_seed), dtype=float)
        if not np.isfinite(best_lp):
            return x0  # nothing better found: PyMC's own start
        with lock:
            if len(modes) > 1:  # each mode its chains, by the chain's rank
                k = rank.get(int(chain_seed), abs(int(chain_seed))) % len(modes)
                mode, sd = modes[k][0].copy(), sds[k]
            else:
                x, lp = climb(x0)
                mode = x if lp >= best_lp - _MODE_GAP else best_x.copy()
                sd = local_sd(mode)
            # the chain's own seed (an unsigned 64-bit integer from nutpie) picks the direction
            rng = np.random.default_rng([abs(int(seed)), abs(int(chain_seed))])
            for scale in (spread, spread / 4):  # a smaller step if the first leaves the support
                x1 = mode + scale * sd * rng.standard_normal(mode.size)
                if np.isfinite(float(logp_grad(x1)[0])):
                    return x1
        return mode

    return dataclasses.replace(compiled, initial_point_func=init)


@dataclass(frozen=True)
class _Layout:
    """Dims and coordinates of a fit's predictive and observed groups (one ROI or several)."""

    shape: tuple[int, int]
    coords: dict[str, Any]
    dims: tuple[str, ...]
    obs_dims: tuple[str, ...]
    obs_coords: dict[str, Any]
    several: bool

    @classmethod
    def of(cls, post: Any, t: np.ndarray, labels: list[Any] | None) -> _Layout:
        time_coord = ("time", t, {"units": "s"})
        coords: dict[str, Any] = {"chain": post["chain"].values, "draw": post["draw"].values,
                                  "time": time_coord}  # fmt: skip
        shape = (post.sizes["chain"], post.sizes["draw"])
        if labels is None:
            return cls(shape, coords, ("chain", "draw", "time"), ("time",),
                       {"time": time_coord}, False)  # fmt: skip
        coords["roi"] = [_jsonable(x) for x in labels]
        return cls(shape, coords, ("chain", "draw", "roi", "time"), ("roi", "time"),
                   {"time": time_coord, "roi": coords["roi"]}, True)  # fmt: skip

    def full(self, a: np.ndarray) -> np.ndarray:
        """Draws ``(n, roi, time)`` as ``(chain, draw[, roi], time)``."""
        b = a if self.several else a[:, 0]
        return b.reshape(*self.shape, *b.shape[1:])

    def obs_pick(self, a: np.ndarray) -> np.ndarray:
        """``(roi, time)`` as the observed group's ``([roi,] time)``."""
        return a if self.several else a[0]


def _add_predictions(
    idata: Any,
    model: CellModel,
    values: Mapping[str, float],
    free: list[str],
    t: np.ndarray,
    stimulus: Stimulus | None,
    data: ObservedData,
    options: Mapping[str, Any],
    labels: list[Any] | None,
) -> None:
    """Observed data, posterior predictive and pointwise log-likelihood groups.

    ``posterior_predictive``: ``dff_mean`` (the cell model's ΔF/F), ``ca`` (free
    Ca, µM), ``y`` (a replicate of the recorded signal, noise included) and
    ``dff`` (that replicate read back as the model's ΔF/F with the same draw's
    observation parameters). ``observed_data``: ``y`` (the recorded numbers),
    ``neuropil`` (fluorescence input), and ``dff``, the recording read as the
    model's ΔF/F with the posterior median of each observation parameter.
    ``log_likelihood``: ``y``, per observed frame given the previous one.
    """
    post = idata["posterior"]
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    n = n_chain * n_draw
    y = data.y
    n_roi = y.shape[0]
    slots = model.slots()
    forward = forward_solver(model, t, stimulus, substeps=options["substeps"])
    base = model.pack_raw(values)
    obs = _obs_options(options)
    nuis = nuisance_draws(post, data, obs, n)
    basis = None
    if data.kind != "dff_exact" and obs.drift == "smooth":
        basis = slow_basis(t, obs.drift_timescale)
        basis = basis if basis.shape[0] else None

    draws = {k: np.asarray(post[k]).reshape(n, -1) for k in free}  # (draw, roi)
    dff = np.empty((n, n_roi, t.size))
    ca = np.empty((n, n_roi, t.size))
    for r in range(n_roi):
        for i, p in enumerate(_packed(base, slots, draws, r, n=n)):
            dff[i, r], ca[i, r] = forward(p)
    rng = np.random.default_rng(options["seed"] + 1)
    if data.kind == "ratio":
        _add_ratio_predictions(idata, dff, ca, draws, base, slots, t, data, nuis, basis, rng,
                               labels)  # fmt: skip
        return
    levels = data.rest_level
    median = {k: np.median(v, axis=0, keepdims=True) for k, v in nuis.items()}
    y_pred = np.empty_like(dff)
    dff_pred = np.empty_like(dff)
    dff_obs = np.empty((n_roi, t.size))
    lls = []
    for r in range(n_roi):
        mu = _expected(dff[:, r], data, nuis, r, basis)
        power = nuis["noise_exponent"][:, r, None] if "noise_exponent" in nuis else None
        a = nuis["dff_scale"][:, r, None] if "dff_scale" in nuis else 1.0
        x = relative_signal(np, data.kind, mu, float(levels[r]), dff[:, r], a)
        ratio = nuis["neuropil_ratio"][:, r, None] if "neuropil_ratio" in nuis else None
        extra = neuropil_variance(data, r, ratio)
        sd = noise_sd(np, x, nuis["sigma"][:, r, None], power, extra)
        rho = nuis["rho"][:, r] if "rho" in nuis else None
        nu = nuis.get("nu")
        mask = np.isfinite(y[r])
        ll = pointwise_loglik(
            np, y[r], mu, sd, None if rho is None else rho[:, None],
            None if nu is None else nu[:, None], mask,
        )  # fmt: skip
        lls.append(ll[:, mask])
        y_pred[:, r] = mu + simulate_residuals(rng, sd, rho, nu)
        dff_pred[:, r] = _to_model_dff(y_pred[:, r], data, nuis, r, basis)
        dff_obs[r] = _to_model_dff(y[r][None, :], data, median, r, basis)[0]
    ll_all = np.concatenate(lls, axis=1)
    unit = "counts" if data.kind == "fluorescence" else "1"
    lay = _Layout.of(post, t, labels)
    coords, dims, obs_dims, obs_coords = lay.coords, lay.dims, lay.obs_dims, lay.obs_coords
    full, obs_pick, shape = lay.full, lay.obs_pick, lay.shape

    idata["posterior_predictive"] = xr.Dataset(
        {
            "dff": (dims, full(dff_pred)),
            "dff_mean": (dims, full(dff)),
            "ca": (dims, full(ca), {"units": "µM"}),
            "y": (dims, full(y_pred), {"units": unit}),
        },
        coords=coords,
    )
    observed = {
        "y": (obs_dims, obs_pick(y), {"units": unit, "observation": data.kind}),
        "dff": (obs_dims, obs_pick(dff_obs), {"long_name": "recording read as model ΔF/F"}),
    }
    if data.neuropil is not None:
        observed["neuropil"] = (
            obs_dims,
            obs_pick(data.neuropil),
            {"units": unit, "long_name": "neuropil trace as the fit used it (its noise smoothed)"},
        )
    idata["observed_data"] = xr.Dataset(observed, coords=obs_coords)
    idata["log_likelihood"] = xr.Dataset(
        {"y": (("chain", "draw", "y_dim_0"), ll_all.reshape(*shape, -1))},
        coords={"chain": coords["chain"], "draw": coords["draw"]},
    )


def _add_ratio_predictions(
    idata: Any,
    dff: np.ndarray,
    ca: np.ndarray,
    draws: Mapping[str, np.ndarray],
    base: np.ndarray,
    slots: Mapping[str, int],
    t: np.ndarray,
    data: ObservedData,
    nuis: dict[str, Any],
    basis: np.ndarray | None,
    rng: np.random.Generator,
    labels: list[Any] | None,
) -> None:
    """The groups of :func:`_add_predictions` for a ratiometric fit.

    ``posterior_predictive``: ``y``/``y_den`` (replicates of both channels'
    counts), ``ratio`` (the background-free model ratio), ``dff_mean`` (the
    numerator's ΔF/F) and ``ca``; ``observed_data``: ``y``, ``y_den`` and
    ``ratio`` (the recorded channels, background taken off with its posterior
    median); ``log_likelihood``: both channels' frames.
    """
    post = idata["posterior"]
    n, n_roi = dff.shape[0], dff.shape[1]
    assert data.y2 is not None

    shape1 = (n, n_roi, t.size)
    y1p, y2p, ratio_p = np.empty(shape1), np.empty(shape1), np.empty(shape1)
    ratio_obs = np.empty((n_roi, t.size))
    lls = []
    for r in range(n_roi):
        f, f_rest = _dye_fraction(dff[:, r], draws, base, slots, r)
        mu1, mu2, sd1, sd2 = ratio_expected(f, f_rest[:, 0], data, nuis, r, basis)
        rho = nuis["rho"][:, r] if "rho" in nuis else None
        nu = nuis.get("nu")
        for y, mu, sd, out in ((data.y[r], mu1, sd1, y1p), (data.y2[r], mu2, sd2, y2p)):
            mask = np.isfinite(y)
            ll = pointwise_loglik(
                np, y, mu, sd, None if rho is None else rho[:, None],
                None if nu is None else nu[:, None], mask,
            )  # fmt: skip
            lls.append(ll[:, mask])
            out[:, r] = mu + simulate_residuals(rng, sd, rho, nu)
        r_min, r_max, beta = (nuis[k][:, None] for k in ("R_min", "R_max", "beta"))
        ratio_p[:, r] = _model_ratio(r_min, r_max, beta, f)
        b = float(np.median(nuis["background_ratio"][:, r])) if "background_ratio" in nuis else 0.0
        num = data.y[r] - (b * data.neuropil[r] if data.neuropil is not None else 0.0)
        den = data.y2[r] - (b * data.neuropil2[r] if data.neuropil2 is not None else 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_obs[r] = np.where(den > 0, num / den, np.nan)
    lay = _Layout.of(post, t, labels)
    coords, dims, obs_dims, obs_coords = lay.coords, lay.dims, lay.obs_dims, lay.obs_coords
    full, obs_pick, shape = lay.full, lay.obs_pick, lay.shape

    idata["posterior_predictive"] = xr.Dataset(
        {
            "y": (dims, full(y1p), {"units": "counts", "long_name": "numerator channel"}),
            "y_den": (dims, full(y2p), {"units": "counts", "long_name": "denominator channel"}),
            "ratio": (dims, full(ratio_p), {"long_name": "background-free ratio"}),
            "dff_mean": (dims, full(dff), {"long_name": "numerator channel's ΔF/F"}),
            "ca": (dims, full(ca), {"units": "µM"}),
        },
        coords=coords,
    )
    observed = {
        "y": (obs_dims, obs_pick(data.y), {"units": "counts", "observation": "ratio"}),
        "y_den": (obs_dims, obs_pick(data.y2), {"units": "counts"}),
        "ratio": (obs_dims, obs_pick(ratio_obs), {"long_name": "recorded ratio, background "
                                                  "at its posterior median"}),
    }  # fmt: skip
    idata["observed_data"] = xr.Dataset(observed, coords=obs_coords)
    ll_all = np.concatenate(lls, axis=1)
    idata["log_likelihood"] = xr.Dataset(
        {"y": (("chain", "draw", "y_dim_0"), ll_all.reshape(*shape, -1))},
        coords={"chain": coords["chain"], "draw": coords["draw"]},
    )


def _recorded(f: Fit) -> np.ndarray:
    """The numbers a fit was given (older fits stored them as ``dff``)."""
    obs = f.idata["observed_data"]
    return np.asarray(obs["y"] if "y" in obs else obs["dff"])


def _events_on_frames(f: Fit) -> int:
    """How many of a fit's stimulus events fall on a frame time (within 1e-6 frame)."""
    ev = np.asarray(f.settings.get("stimulus_events", []), dtype=float)
    obs = f.idata["observed_data"]
    if ev.size == 0 or "time" not in obs.coords:
        return 0
    t = np.asarray(obs["time"], dtype=float)
    if t.size < 2:
        return 0
    tol = 1e-6 * float(np.min(np.diff(t)))
    i = np.clip(np.searchsorted(t, ev), 1, t.size - 1)
    gap = np.minimum(np.abs(t[i] - ev), np.abs(t[i - 1] - ev))
    return int(np.count_nonzero(gap <= tol))


def compare(
    fits: Mapping[str, Fit] | Sequence[Fit],
    *,
    method: str = "stacking",
    round_to: int | str = "auto",
) -> Any:
    """Rank alternative models of the same trace(s) by PSIS-LOO expected log predictive density.

    Typical uses: equilibrium against kinetic indicator binding
    (``indicator_kinetics``), a pump's Hill coefficient free or fixed, one
    compartment or an ER. Each frame's term of the log likelihood is its
    density given the previous frame (the AR(1) residuals' factorisation), so
    LOO here leaves out one frame's innovation, not a block of time.

    Parameters
    ----------
    fits : mapping of name → Fit, or sequence of Fit
        Fits of different models (or priors) to the same observed ΔF/F; a
        sequence is named ``model_0``, ``model_1``, ... .
    method : {"stacking", "bb-pseudo-bma", "pseudo-bma"}
        How arviz weights the models.
    round_to : int or {"auto", "none"}
        ``"auto"`` rounds each number to what its standard error supports,
        an integer to that many decimals, ``"none"`` returns raw numbers.

    Returns
    -------
    pandas.DataFrame
        arviz's comparison table, best model first: ``rank``, ``elpd_diff``
        (LOO elpd of the model minus the best's, ≤ 0), ``dse`` (its standard
        error), ``p_worse`` (normal-approximation probability that the model
        predicts worse than the best), ``diag_diff`` (``"|elpd_diff| < 4"``
        when the models predict alike, ``"N < 100"`` for short data: read the
        difference with caution), ``diag_elpd`` (how many Pareto k are too
        high for PSIS-LOO to be reliable; empty when none), ``p`` (effective
        number of parameters), ``elpd``, ``se`` and ``weight``.
        Vehtari, Gelman & Gabry (2017), Stat. Comput. 27:1413,
        doi:10.1007/s11222-016-9696-4.

    Raises
    ------
    ValueError
        Fewer than two fits, an unknown method or rounding, or fits of
        different data.

    Warns
    -----
    FitWarning
        When the fits differ in indicator binding and stimulus events fall
        exactly on frame times. The equilibrium model shows an event in the
        frame taken at its time (binding is instant, the state is
        right-continuous); a kinetic indicator has not bound yet at that
        instant and shows it from the next frame on, whatever its rates. Such
        frames then decide the comparison by this convention rather than by
        the binding rates.
    """
    methods = ("stacking", "bb-pseudo-bma", "pseudo-bma")
    if method not in methods:
        raise ValueError(f"method {method!r}; allowed: {', '.join(methods)}")
    if not (isinstance(round_to, int) and not isinstance(round_to, bool) and round_to >= 0) and (
        round_to not in ("auto", "none")
    ):
        raise ValueError(f"round_to = {round_to!r}; allowed: 'auto', 'none' or decimals >= 0")
    named = (
        dict(fits) if isinstance(fits, Mapping) else {f"model_{i}": f for i, f in enumerate(fits)}
    )
    if len(named) < 2:
        raise ValueError(f"compare needs at least two fits, got {len(named)}")
    items = list(named.items())
    ref_name, ref = items[0]
    y0 = _recorded(ref)
    for name, f in items[1:]:
        y = _recorded(f)
        if y.shape != y0.shape or not np.array_equal(y, y0, equal_nan=True):
            raise ValueError(
                f"fits {ref_name!r} and {name!r} are of different data: LOO compares models "
                "of the same observations"
            )
    binding = {f.model.kinetic for _, f in items}
    on_frames = max(_events_on_frames(f) for _, f in items)
    if len(binding) > 1 and on_frames:
        warnings.warn(
            f"{on_frames} stimulus event(s) fall exactly on frame times: the equilibrium model "
            "shows each in that frame, a kinetic indicator only from the next one, so those "
            "frames weigh in the comparison by convention, not by binding rate; with event "
            "times from the recording (not rounded to the frame clock) this does not arise",
            FitWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():
        # a high Pareto k is reported in the table's ``diag_elpd`` column
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        return az.compare({k: f.idata for k, f in items}, method=method, round_to=round_to)
