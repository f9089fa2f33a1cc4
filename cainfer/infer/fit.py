"""Fit a cell model to a ΔF/F trace: PyMC model, nutpie sampling, arviz results."""

from __future__ import annotations

import json
import math
import os
import time as time_module
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import arviz as az
import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from cainfer.forward import CellModel, Prior, Stimulus
from cainfer.forward import _adjoint as A
from cainfer.infer._op import solve_op

Likelihood = Literal["normal", "student_t"]
_LIKELIHOODS = ("normal", "student_t")
_forward = cast(Any, A.dff_forward)


class SamplerWarning(UserWarning):
    """The sampler's diagnostics say the posterior may not be trustworthy."""


def default_free(model: CellModel) -> list[str]:
    """Parameters left free by default: every flux rate, capacity and affinity, and κ_S.

    Hill coefficients, the indicator's constants, resting concentrations and
    ER geometry are fixed at their defaults unless the user frees them.
    """
    names = ["kappa_s"]
    for f in model.fluxes:
        names += [
            q.name
            for b, q in zip(f.declared, f.parameters, strict=True)
            if not b.name.startswith("hill")
        ]
    return names


def _observed(traces: Any, time: Any, roi: int | None) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(traces, xr.Dataset):
        if "dff" not in traces:
            raise ValueError("traces Dataset has no 'dff' variable")
        traces = traces["dff"]
    if isinstance(traces, xr.DataArray):
        if "roi" in traces.dims:
            if roi is None:
                if traces.sizes["roi"] != 1:
                    raise ValueError(
                        f"traces hold {traces.sizes['roi']} ROIs; choose one with roi= "
                        "(or fit each with cainfer.fit_rois)"
                    )
                roi = 0
            traces = traces.isel(roi=roi)
        if "time" not in traces.coords:
            raise ValueError("traces need a 'time' coordinate (s)")
        y = np.asarray(traces.values, dtype=float)
        t = np.asarray(traces["time"].values, dtype=float)
    else:
        y = np.asarray(traces, dtype=float)
        if time is None:
            raise ValueError("time (s) is required when traces is a plain array")
        t = np.asarray(time, dtype=float)
    if y.ndim != 1:
        raise ValueError(f"a trace must be 1-D (time,), got shape {y.shape}")
    if t.shape != y.shape:
        raise ValueError(f"trace has {y.size} frames but time has {t.size} values")
    if not np.isfinite(y).any():
        raise ValueError("the trace is all NaN: nothing to fit")
    return y, t


def _prior_rv(name: str, prior: Prior, lower: float, upper: float) -> Any:
    if prior.kind == "lognormal":
        return pm.LogNormal(name, mu=math.log(prior.a), sigma=prior.b)
    if prior.kind == "uniform":
        return pm.Uniform(name, lower=prior.a, upper=prior.b)
    if prior.kind == "halfnormal":
        return pm.HalfNormal(name, sigma=prior.a)
    lo = lower if math.isfinite(lower) else None
    hi = upper if math.isfinite(upper) else None
    return pm.TruncatedNormal(name, mu=prior.a, sigma=prior.b, lower=lo, upper=hi)


def _noise_scale(y: np.ndarray) -> float:
    """Robust noise estimate from first differences (MAD), for the noise prior's scale."""
    d = np.diff(y[np.isfinite(y)])
    mad = float(np.median(np.abs(d - np.median(d)))) * 1.4826 / math.sqrt(2) if d.size else 0.0
    return max(mad, 1e-3 * max(float(np.nanstd(y)), 1e-6), 1e-6)


# bare names of plasma-membrane capacities and influx amplitudes: scaling all of them
# and the buffer capacity together leaves free calcium nearly unchanged
_PER_BUFFER = {"vmax", "gamma", "amplitude"}
_PM_CLASSES = ("LinearExtrusion", "PMCA", "NCX", "SOCE", "EventInflux", "WaveformInflux")


def _free_rvs(
    model: CellModel,
    free: list[str],
    priors: Mapping[str, Prior],
    values: Mapping[str, float],
    coordinates: str,
) -> list[Any]:
    """Random variables of the free parameters, in the order of ``free``."""
    params = model.parameters
    scaled = {
        q.name
        for f in model.fluxes
        if type(f).__name__ in _PM_CLASSES
        for b, q in zip(f.declared, f.parameters, strict=True)
        if b.name in _PER_BUFFER
    }
    out: dict[str, Any] = {}

    def rv(name: str) -> Any:
        pr = priors.get(name, params[name].prior)
        return _prior_rv(name, pr, params[name].lower, params[name].upper)

    use_beta = coordinates == "per_buffer" and "kappa_s" in free
    if use_beta:
        for g in ("kappa_s", "c_rest", "kd", "hill", "b_total"):
            if g in free:
                out[g] = rv(g)

        def val(g: str) -> Any:
            return out[g] if g in out else values[g]

        c, kd, n, bt = val("c_rest"), val("kd"), val("hill"), val("b_total")
        x = (c / kd) ** n
        beta0 = 1.0 + val("kappa_s") + bt * n * x / (c * (1.0 + x) ** 2)
    for name in free:
        if name in out:
            continue
        pr = priors.get(name, params[name].prior)
        if use_beta and name in scaled and pr.kind == "lognormal":
            z = pm.Normal(f"{name}_per_buffer_log", mu=math.log(pr.a) - pt.log(beta0), sigma=pr.b)
            out[name] = pm.Deterministic(name, pt.exp(z) * beta0)
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
    ok : bool
        False when a diagnostic failed (see :meth:`diagnostics`).
    """

    idata: Any
    model: CellModel
    free: list[str]
    fixed: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    ok: bool = True
    problems: list[str] = field(default_factory=list)

    def summary(self, *, ci_prob: float = 0.94) -> Any:
        """Posterior mean, sd, HDI (94% by default), R-hat and ESS of the free parameters."""
        return az.summary(
            self.idata, var_names=[*self.free, "sigma"], ci_prob=ci_prob, ci_kind="hdi"
        )

    def diagnostics(self) -> list[str]:
        """Problems found: divergences, R-hat > 1.01, bulk ESS < 400 (empty if none)."""
        problems = []
        div = int(np.asarray(self.idata["sample_stats"]["diverging"]).sum())
        if div:
            problems.append(
                f"{div} divergent transitions: the posterior has regions the sampler cannot "
                "follow; fix weakly identified parameters or tighten their priors"
            )
        s = self.summary()
        bad_r = [n for n, r in zip(s.index, s["r_hat"], strict=True) if float(r) > 1.01]
        if bad_r:
            problems.append(f"R-hat > 1.01 for {bad_r}: run longer (more tune and draws)")
        low = [n for n, e in zip(s.index, s["ess_bulk"], strict=True) if float(e) < 400]
        if low:
            problems.append(f"bulk ESS < 400 for {low}: draw more samples or more chains")
        return problems

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
        for name in self.free:
            a = np.asarray(post[name]).reshape(-1)
            b = np.asarray(prior[name]).reshape(-1)
            log = bool(np.all(a > 0) and np.all(b > 0))
            a, b = (np.log(a), np.log(b)) if log else (a, b)
            cols[name] = a
            rows[name] = {
                "scale": "log" if log else "linear",
                "prior_sd": float(b.std()),
                "posterior_sd": float(a.std()),
                "contraction": float(1.0 - a.var() / b.var()) if b.var() > 0 else float("nan"),
            }
        table = pd.DataFrame.from_dict(rows, orient="index")
        correlation = pd.DataFrame(cols).corr()
        return table, correlation

    def posterior_mean(self) -> dict[str, float]:
        """Posterior mean of each free parameter."""
        post = self.idata["posterior"]
        return {k: float(post[k].mean()) for k in self.free}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fit to one NetCDF file (atomically); read it back with :func:`load_fit`."""
        path = Path(path)
        tree = self.idata.copy()
        tree.attrs = dict(tree.attrs) | {
            "cainfer_model": json.dumps(self.model.to_dict()),
            "cainfer_free": json.dumps(self.free),
            "cainfer_fixed": json.dumps(self.fixed),
            "cainfer_settings": json.dumps(self.settings),
        }
        for name in list(tree.children):
            if name.startswith("warmup"):
                del tree[name]
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tree.to_netcdf(tmp, engine="h5netcdf")
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path


def load_fit(path: str | os.PathLike[str]) -> Fit:
    """Read a fit written by :meth:`Fit.save`."""
    tree = xr.open_datatree(path, engine="h5netcdf").load()
    try:
        model = CellModel.from_dict(json.loads(tree.attrs["cainfer_model"]))
        free = json.loads(tree.attrs["cainfer_free"])
        fixed = json.loads(tree.attrs["cainfer_fixed"])
        settings = json.loads(tree.attrs["cainfer_settings"])
    except KeyError as e:
        raise ValueError(f"{path}: not a cainfer fit (missing {e})") from None
    fit = Fit(tree, model, free, fixed, settings)
    fit.problems = fit.diagnostics()
    fit.ok = not fit.problems
    return fit


def fit(
    traces: Any,
    model: CellModel,
    *,
    stimulus: Stimulus | None,
    time: Any = None,
    roi: int | None = None,
    free: Sequence[str] | None = None,
    fixed: Mapping[str, float] | None = None,
    priors: Mapping[str, Prior] | None = None,
    likelihood: Likelihood = "normal",
    drift: int | None = None,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    cores: int | None = None,
    seed: int = 0,
    substeps: int = 1,
    adaptation: Literal["diag", "low_rank"] = "low_rank",
    coordinates: Literal["per_buffer", "natural"] = "per_buffer",
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
    roi : int, optional
        ROI to fit when ``traces`` holds several.
    free : sequence of str, optional
        Parameters to infer (default: :func:`default_free`).
    fixed : mapping, optional
        Values for parameters that are not free (others keep their defaults).
    priors : mapping, optional
        Priors replacing the default ones of free parameters.
    likelihood : {"normal", "student_t"}
        Observation noise model (Student-t for outlier frames).
    drift : int, optional
        Degree of a Legendre polynomial added to ΔF/F for a slow baseline
        drift (0: a constant offset); None for none.
    draws, tune, chains : int
        Draws kept and tuning steps per chain, number of chains.
    cores : int, optional
        Chains run in parallel (default: all CPUs, at most ``chains``).
    seed : int
        Random seed: same data, model, settings and seed give the same draws.
    substeps : int
        RK4 steps per frame interval in the forward solve.
    adaptation : {"diag", "low_rank"}
        nutpie mass-matrix adaptation; ``"low_rank"`` follows the correlated
        directions (influx amplitude, κ_S and pump capacity trade off).
    coordinates : {"per_buffer", "natural"}
        ``"per_buffer"`` (when κ_S is free): plasma-membrane capacities and
        influx amplitudes with log-normal priors are sampled divided by the
        resting buffer capacity β0 = 1 + κ_S + κ_B, the combinations that free
        calcium actually constrains; the prior is the same, only the sampler's
        coordinates change. ``"natural"``: every parameter as it is.

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
    import nutpie

    if likelihood not in _LIKELIHOODS:
        raise ValueError(f"likelihood {likelihood!r}; allowed: {', '.join(_LIKELIHOODS)}")
    if coordinates not in ("per_buffer", "natural"):
        raise ValueError(f"coordinates {coordinates!r}; allowed: 'per_buffer', 'natural'")
    if adaptation not in ("diag", "low_rank"):
        raise ValueError(f"adaptation {adaptation!r}; allowed: 'diag', 'low_rank'")
    if drift is not None and (int(drift) != drift or drift < 0):
        raise ValueError(f"drift = {drift!r} must be None or a polynomial degree ≥ 0")
    for name, val in (("draws", draws), ("tune", tune), ("chains", chains), ("substeps", substeps)):
        if int(val) != val or val < (0 if name == "tune" else 1):
            raise ValueError(f"{name} = {val!r} must be a positive integer")
    y, t = _observed(traces, time, roi)
    params = model.parameters
    free = list(default_free(model) if free is None else free)
    fixed = dict(fixed or {})
    priors = dict(priors or {})
    for label, names in (("free", free), ("fixed", list(fixed)), ("priors", list(priors))):
        unknown = sorted(set(names) - set(params))
        if unknown:
            raise ValueError(f"{label}: unknown parameter(s) {unknown}; known: {sorted(params)}")
    both = sorted(set(free) & set(fixed))
    if both:
        raise ValueError(f"parameter(s) {both} are both free and fixed")
    not_free = sorted(set(priors) - set(free))
    if not_free:
        raise ValueError(f"priors given for parameter(s) {not_free} that are not free")
    values = model.values(fixed)
    model.resting_state(values)  # validates the fixed part
    op, consts = solve_op(model, t, stimulus, substeps=substeps)
    slots = model.slots()
    mask = np.isfinite(y)
    noise = _noise_scale(y)

    with pm.Model() as pm_model:
        rvs = _free_rvs(model, free, priors, values, coordinates)
        base = pt.as_tensor_variable(model.pack_raw(values))
        p = pt.set_subtensor(base[np.array([slots[n] for n in free])], pt.stack(rvs))
        dff, _ = cast(Any, op(p, *consts))
        mu = dff
        if drift is not None:
            x = 2.0 * (t - t[0]) / max(t[-1] - t[0], 1e-12) - 1.0
            basis = np.stack(
                [np.polynomial.legendre.Legendre.basis(k)(x) for k in range(int(drift) + 1)]
            )
            coef = pm.Normal("drift", 0.0, 0.1, shape=int(drift) + 1)
            mu = mu + pt.dot(coef, basis)
        sigma = pm.HalfNormal("sigma", sigma=3.0 * noise)
        if likelihood == "normal":
            pm.Normal("dff", mu=mu[mask], sigma=sigma, observed=y[mask])
        else:
            nu = pm.Gamma("nu", alpha=2.0, beta=0.1)
            pm.StudentT("dff", nu=nu, mu=mu[mask], sigma=sigma, observed=y[mask])

    t0 = time_module.perf_counter()
    compiled = nutpie.compile_pymc_model(pm_model)
    t1 = time_module.perf_counter()
    n_cores = max(1, min(chains, cores or os.cpu_count() or 1))
    idata = nutpie.sample(
        compiled,
        draws=draws,
        tune=tune,
        chains=chains,
        cores=n_cores,
        seed=seed,
        progress_bar=False,
        adaptation=adaptation,
        save_warmup=False,
    )
    t2 = time_module.perf_counter()
    with pm_model:
        prior = pm.sample_prior_predictive(draws=min(500, draws * chains), random_seed=seed)
    idata["prior"] = prior["prior"].ds if hasattr(prior["prior"], "ds") else prior["prior"]
    idata["observed_data"] = xr.Dataset(
        {"dff": ("time", y)}, coords={"time": ("time", t, {"units": "s"})}
    )
    _add_predictions(
        idata, model, values, free, slots, t, stimulus, substeps, y, mask, likelihood, drift, seed
    )
    settings = {
        "draws": draws,
        "tune": tune,
        "chains": chains,
        "seed": seed,
        "substeps": substeps,
        "likelihood": likelihood,
        "drift": drift,
        "adaptation": adaptation,
        "coordinates": coordinates,
        "stimulus_events": stimulus.events.tolist() if stimulus is not None else [],
        "stimulus_weights": stimulus.event_weights.tolist() if stimulus is not None else [],
        "compile_seconds": t1 - t0,
        "sampling_seconds": t2 - t1,
    }
    result = Fit(idata, model, free, {k: v for k, v in values.items() if k not in free}, settings)
    result.problems = result.diagnostics()
    result.ok = not result.problems
    for problem in result.problems:
        warnings.warn(problem, SamplerWarning, stacklevel=2)
    return result


def _add_predictions(
    idata: Any,
    model: CellModel,
    values: Mapping[str, float],
    free: list[str],
    slots: Mapping[str, int],
    t: np.ndarray,
    stimulus: Stimulus | None,
    substeps: int,
    y: np.ndarray,
    mask: np.ndarray,
    likelihood: str,
    drift: int | None,
    seed: int,
) -> None:
    """Posterior predictive ΔF/F and free Ca, and the pointwise log-likelihood."""
    from scipy import stats

    post = idata["posterior"]
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    args = model.kernel_args(t, stimulus, substeps=substeps)
    base = model.pack_raw(values)
    draws = {k: np.asarray(post[k]).reshape(-1) for k in free}
    sigma = np.asarray(post["sigma"]).reshape(-1)
    nu = np.asarray(post["nu"]).reshape(-1) if likelihood == "student_t" else None
    if drift is not None:
        x = 2.0 * (t - t[0]) / max(t[-1] - t[0], 1e-12) - 1.0
        basis = np.stack(
            [np.polynomial.legendre.Legendre.basis(k)(x) for k in range(int(drift) + 1)]
        )
        coef = np.asarray(post["drift"]).reshape(n_chain * n_draw, -1)
    n = n_chain * n_draw
    mu = np.empty((n, t.size))
    ca = np.empty((n, t.size))
    for i in range(n):
        p = base.copy()
        for k in free:
            p[slots[k]] = draws[k][i]
        mu[i], ca[i] = _forward(p, *args)
        if drift is not None:
            mu[i] += coef[i] @ basis
    rng = np.random.default_rng(seed + 1)
    if nu is None:
        pred = mu + sigma[:, None] * rng.standard_normal(mu.shape)
        ll = stats.norm.logpdf(y[mask][None, :], mu[:, mask], sigma[:, None])
    else:
        pred = mu + sigma[:, None] * rng.standard_t(nu[:, None], size=mu.shape)
        ll = stats.t.logpdf(y[mask][None, :], nu[:, None], mu[:, mask], sigma[:, None])
    shape = (n_chain, n_draw)
    coords = {
        "chain": post["chain"].values,
        "draw": post["draw"].values,
        "time": ("time", t, {"units": "s"}),
    }
    idata["posterior_predictive"] = xr.Dataset(
        {
            "dff": (("chain", "draw", "time"), pred.reshape(*shape, -1)),
            "dff_mean": (("chain", "draw", "time"), mu.reshape(*shape, -1)),
            "ca": (("chain", "draw", "time"), ca.reshape(*shape, -1), {"units": "µM"}),
        },
        coords=coords,
    )
    idata["log_likelihood"] = xr.Dataset(
        {"dff": (("chain", "draw", "dff_dim_0"), ll.reshape(*shape, -1))},
        coords={"chain": coords["chain"], "draw": coords["draw"]},
    )
