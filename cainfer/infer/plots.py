"""Plots of a fit: trace with predictive bands, prior vs posterior, pair plot (matplotlib).

Each function returns the matplotlib ``Figure``; ``path=`` saves it (the
format follows the suffix: .png, .pdf, .svg) and closes it, ``show=True``
shows it. Densities and pairs are drawn by arviz-plots; the trace plot is
drawn here because it overlays two posterior-predictive bands (ΔF/F and free
calcium) on the data and the stimulus.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from cainfer._files import atomic_path

if TYPE_CHECKING:
    from cainfer.infer.result import Fit


def _finish(fig: Any, path: str | os.PathLike[str] | None, show: bool) -> Any:
    import matplotlib.pyplot as plt

    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    if show:
        plt.show()
    elif path is not None:
        plt.close(fig)
    return fig


def _check_prob(ci_prob: float) -> None:
    if not 0.0 < ci_prob < 1.0:
        raise ValueError(f"ci_prob = {ci_prob!r} must lie in (0, 1)")


def _pick_roi(fit: Fit, da: xr.DataArray, roi: Any) -> xr.DataArray:
    if fit.rois is None:
        if roi is not None:
            raise ValueError("roi= is for fits of several ROIs; this fit has one trace")
        return da
    if roi is None:
        raise ValueError(f"this fit has ROIs {fit.rois}: choose one with roi=")
    if roi not in fit.rois:
        raise ValueError(f"roi {roi!r} is not in this fit's ROIs {fit.rois}")
    return da.sel(roi=roi)


def _band(da: xr.DataArray, ci_prob: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise equal-tailed interval and median over (chain, draw), per time."""
    x = np.asarray(da.transpose("chain", "draw", "time")).reshape(-1, da.sizes["time"])
    lo, mid, hi = np.quantile(x, [(1 - ci_prob) / 2, 0.5, (1 + ci_prob) / 2], axis=0)
    return lo, mid, hi


def _series_band(
    fit: Fit, name: str, roi: Any, ci_prob: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Band and median of predictive series ``name``: from its draws, or a saved fit's bands.

    A compact saved fit keeps :data:`BAND_QUANTILES`; for another ``ci_prob``
    its draws are recomputed (:meth:`Fit.expand`).
    """
    from cainfer.infer._predictions import BAND_QUANTILES

    if fit.compact and "predictive_bands" in fit.idata.children:
        want = ((1 - ci_prob) / 2, 0.5, (1 + ci_prob) / 2)
        have = np.asarray(BAND_QUANTILES)
        bands = fit.idata["predictive_bands"].ds
        if all(np.isclose(have, w, atol=1e-9).any() for w in want) and name in bands:
            da = _pick_roi(fit, bands[name], roi)
            got = [np.asarray(da.sel(quantile=w, method="nearest"), dtype=float) for w in want]
            return got[0], got[1], got[2]
    fit.expand()
    return _band(_pick_roi(fit, fit.idata["posterior_predictive"][name], roi), ci_prob)


def plot_trace(
    fit: Fit,
    *,
    roi: Any = None,
    ci_prob: float = 0.94,
    path: str | os.PathLike[str] | None = None,
    show: bool = False,
) -> Any:
    """The observed ΔF/F with its posterior-predictive band, and the inferred free Ca.

    Top: observed ΔF/F (points), the band holding ``ci_prob`` of
    posterior-predictive traces (noise included) and the band of the model's
    noise-free ΔF/F; for a ratiometric fit, the recorded ratio (background
    at its posterior median) and the band of the model's ratio. Bottom: the
    band and median of free [Ca²⁺] (µM). Event times of the stimulus are
    marked on both.

    Parameters
    ----------
    fit : Fit
        A fit from :func:`cainfer.fit` (or one ROI of a hierarchical fit).
    roi : optional
        ROI label, required for a fit of several ROIs.
    ci_prob : float
        Probability of the pointwise equal-tailed bands, in (0, 1).
    path : path, optional
        Save the figure here (and close it).
    show : bool
        Show the figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    _check_prob(ci_prob)
    ratiometric = "ratio" in fit.idata["observed_data"]
    obs = _pick_roi(fit, fit.idata["observed_data"]["ratio" if ratiometric else "dff"], roi)
    t = np.asarray(obs["time"])
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(9, 5), height_ratios=(3, 2))
    if ratiometric:
        lo, mid, hi = _series_band(fit, "ratio", roi, ci_prob)
        ax1.fill_between(t, lo, hi, color="C0", alpha=0.6, lw=0, label=f"{ci_prob:.0%} model ratio")
    else:
        lo, _, hi = _series_band(fit, "dff", roi, ci_prob)
        ax1.fill_between(t, lo, hi, color="C0", alpha=0.25, lw=0,
                         label=f"{ci_prob:.0%} predictive")  # fmt: skip
        lo, mid, hi = _series_band(fit, "dff_mean", roi, ci_prob)
        ax1.fill_between(t, lo, hi, color="C0", alpha=0.6, lw=0,
                         label=f"{ci_prob:.0%} model ΔF/F")  # fmt: skip
    ax1.plot(t, np.asarray(obs), ".", color="k", ms=2, label="observed")
    ax1.set_ylabel("ratio" if ratiometric else "ΔF/F")
    lo, mid, hi = _series_band(fit, "ca", roi, ci_prob)
    ax2.fill_between(t, lo, hi, color="C3", alpha=0.35, lw=0, label=f"{ci_prob:.0%} band")
    ax2.plot(t, mid, color="C3", lw=1, label="median")
    ax2.set_ylabel("free [Ca²⁺] (µM)")
    ax2.set_xlabel("time (s)")
    for e in fit.settings.get("stimulus_events", []):
        for ax in (ax1, ax2):
            ax.axvline(e, color="0.6", lw=0.5, zorder=0)
    ax1.legend(loc="upper right", fontsize=8, frameon=False)
    ax2.legend(loc="upper right", fontsize=8, frameon=False)
    title = "posterior predictive" + ("" if roi is None else f", ROI {roi}")
    ax1.set_title(title)
    fig.tight_layout()
    return _finish(fig, path, show)


def _log_tree(fit: Fit, names: list[str], log: bool) -> tuple[xr.DataTree, list[str]]:
    """Posterior and prior of ``names``, as log10 where every draw is positive."""
    groups = {}
    out_names = names
    for group in ("posterior", "prior"):
        ds = fit.idata[group].ds[names]
        if log:
            renamed = {}
            for n in names:
                both = [np.asarray(fit.idata[g].ds[n]) for g in ("posterior", "prior")]
                if all(np.all(x > 0) for x in both):
                    renamed[n] = f"log10 {n}"
                    ds[n] = np.log10(ds[n])
            ds = ds.rename(renamed)
            out_names = [renamed.get(n, n) for n in names]
        groups[group] = ds
    return xr.DataTree.from_dict(groups), out_names


def _names(fit: Fit, var_names: list[str] | None) -> list[str]:
    names = list(fit.free) if var_names is None else list(var_names)
    unknown = [n for n in names if n not in fit.idata["posterior"].ds]
    if unknown:
        raise ValueError(f"var_names: {unknown} are not in the posterior")
    return names


def plot_posteriors(
    fit: Fit,
    *,
    var_names: list[str] | None = None,
    log: bool = True,
    path: str | os.PathLike[str] | None = None,
    show: bool = False,
) -> Any:
    """Posterior density of each free parameter over its prior density.

    Parameters
    ----------
    fit : Fit
        The fit.
    var_names : list of str, optional
        Variables to draw (default: the free parameters).
    log : bool
        Draw positive parameters as log10 (log-normal priors are then
        readable next to narrow posteriors).
    path : path, optional
        Save the figure here (and close it).
    show : bool
        Show the figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import arviz as az

    tree, names = _log_tree(fit, _names(fit, var_names), log)
    pc = az.plot_prior_posterior(tree, var_names=names, backend="matplotlib")
    return _finish(pc.viz["figure"].item(), path, show)


def plot_pairs(
    fit: Fit,
    *,
    var_names: list[str] | None = None,
    roi: Any = None,
    log: bool = True,
    path: str | os.PathLike[str] | None = None,
    show: bool = False,
) -> Any:
    """Pair plot of the posterior: marginals and every pairwise scatter.

    Trade-offs (influx amplitude against κ_S and pump capacity, say) show
    as narrow diagonal clouds.

    Parameters
    ----------
    fit : Fit
        The fit.
    var_names : list of str, optional
        Variables to draw (default: the free parameters).
    roi : optional
        For a fit of several ROIs, draw this ROI only (default: all).
    log : bool
        Draw positive parameters as log10.
    path : path, optional
        Save the figure here (and close it).
    show : bool
        Show the figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import arviz as az

    tree, names = _log_tree(fit, _names(fit, var_names), log)
    if roi is not None:
        if fit.rois is None or roi not in fit.rois:
            raise ValueError(f"roi {roi!r} is not among this fit's ROIs {fit.rois}")
        tree = tree.sel(roi=roi)
    pc = az.plot_pair(tree, var_names=names, backend="matplotlib")
    return _finish(pc.viz["figure"].item(), path, show)
