"""Posterior-predictive groups of a fit: ΔF/F, free calcium, and ratio channels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from cainfer.forward import CellModel, Stimulus
from cainfer.infer._draws import (
    _dye_fraction,
    _jsonable,
    _model_ratio,
    _obs_options,
    _packed,
)
from cainfer.infer._op import forward_solver
from cainfer.infer.observation import (
    ObservedData,
    neuropil_variance,
    noise_sd,
    nuisance_draws,
    pointwise_loglik,
    ratio_expected,
    relative_signal,
    simulate_residuals,
    slow_basis,
)
from cainfer.infer.observation import expected as _expected
from cainfer.infer.observation import to_model_dff as _to_model_dff


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


# values (draws × frames) per block of the predictions' observation-model arithmetic
_BLOCK_VALUES = 2_000_000


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
    forward = forward_solver(
        model, t, stimulus, substeps=options["substeps"],
        explicit=bool(options.get("kinetic_explicit", False)),
        stride=options.get("stride", 1),
    )  # fmt: skip
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
    # draws in blocks of about _BLOCK_VALUES values: the observation model's temporaries
    # (expected signal, noise sd, AR(1) innovations, ...) then never hold every draw of a
    # long recording at once; the random draws come in the same order as in one block
    block = max(1, _BLOCK_VALUES // max(1, t.size))
    for r in range(n_roi):
        mask = np.isfinite(y[r])
        ll_r = np.empty((n, int(mask.sum())))
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            part = {k: v[lo:hi] for k, v in nuis.items()}
            mu = _expected(dff[lo:hi, r], data, part, r, basis)
            power = part["noise_exponent"][:, r, None] if "noise_exponent" in part else None
            a = part["dff_scale"][:, r, None] if "dff_scale" in part else 1.0
            x = relative_signal(np, data.kind, mu, float(levels[r]), dff[lo:hi, r], a)
            ratio = part["neuropil_ratio"][:, r, None] if "neuropil_ratio" in part else None
            extra = neuropil_variance(data, r, ratio)
            sd = noise_sd(np, x, part["sigma"][:, r, None], power, extra)
            rho = part["rho"][:, r] if "rho" in part else None
            nu = part.get("nu")
            ll = pointwise_loglik(
                np, y[r], mu, sd, None if rho is None else rho[:, None],
                None if nu is None else nu[:, None], mask,
            )  # fmt: skip
            ll_r[lo:hi] = ll[:, mask]
            y_pred[lo:hi, r] = mu + simulate_residuals(rng, sd, rho, nu)
            dff_pred[lo:hi, r] = _to_model_dff(y_pred[lo:hi, r], data, part, r, basis)
        lls.append(ll_r)
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
        observed["neuropil_noise"] = (
            obs_dims[:-1],
            obs_pick(data.neuropil_noise),
            {"units": unit, "long_name": "noise sd left in the neuropil trace"},
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
    for name, trace, noise in (("neuropil", data.neuropil, data.neuropil_noise),
                               ("neuropil_den", data.neuropil2, data.neuropil2_noise)):  # fmt: skip
        if trace is not None:
            observed[name] = (obs_dims, obs_pick(trace), {"units": "counts"})
            observed[f"{name}_noise"] = (obs_dims[:-1], obs_pick(noise), {"units": "counts"})
    idata["observed_data"] = xr.Dataset(observed, coords=obs_coords)
    ll_all = np.concatenate(lls, axis=1)
    idata["log_likelihood"] = xr.Dataset(
        {"y": (("chain", "draw", "y_dim_0"), ll_all.reshape(*shape, -1))},
        coords={"chain": coords["chain"], "draw": coords["draw"]},
    )


# the pointwise quantiles a compact saved fit keeps of its posterior predictive: the
# median and the 94% equal-tailed band (Fit.expand recomputes the draws for any other)
BAND_QUANTILES = (0.03, 0.5, 0.97)

# replicates of the recorded counts: their bands are the ΔF/F replicate's, read back
_RAW_REPLICATES = ("y", "y_den")


def predictive_bands(pp: xr.Dataset) -> xr.Dataset:
    """Pointwise quantiles (:data:`BAND_QUANTILES`) over the draws, float32.

    Of every variable of a posterior-predictive group but the replicates of
    the recorded counts; dims ``(quantile, [roi,] time)``.
    """
    keep = [n for n in pp.data_vars if n not in _RAW_REPLICATES]
    q = pp[keep].quantile(list(BAND_QUANTILES), dim=("chain", "draw"), keep_attrs=True)
    out = q.astype(np.float32)
    for n in keep:
        out[n].attrs = dict(pp[n].attrs)
    out.attrs["long_name"] = "pointwise quantiles of the posterior predictive over its draws"
    return out


def observed_of(obs: xr.Dataset, kind: str) -> ObservedData:
    """The :class:`ObservedData` a fit used, rebuilt from its ``observed_data`` group.

    Holds what the likelihood reads (the recorded numbers, the background
    traces and their noise), not the prior centres (F0, neuropil prior).
    """

    def rows(name: str) -> np.ndarray | None:
        if name not in obs:
            return None
        a = np.asarray(obs[name], dtype=float)
        return a.reshape(-1, a.shape[-1])

    def per_roi(name: str) -> np.ndarray | None:
        return None if name not in obs else np.atleast_1d(np.asarray(obs[name], dtype=float))

    y = rows("y")
    if y is None:
        raise ValueError("the fit's observed_data group has no recorded numbers 'y'")
    if kind == "ratio":
        return ObservedData(
            kind, y, rows("neuropil"), None, rows("y_den"), rows("neuropil_den"),
            neuropil_sd=per_roi("neuropil_noise"), neuropil2_sd=per_roi("neuropil_den_noise"),
        )  # fmt: skip
    return ObservedData(kind, y, rows("neuropil"), neuropil_sd=per_roi("neuropil_noise"))
