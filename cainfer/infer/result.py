"""A fit's result: posterior draws, diagnostics, predictions, saving and model comparison.

:class:`Fit` is what :func:`cainfer.fit` and its relatives return; it holds
the arviz ``DataTree`` and what made it, checks it (sampler diagnostics,
residuals the model left unexplained, parameters the data leave to their
priors or fix only in combination), predicts the cell under another protocol
from the posterior, and saves to and loads from one NetCDF file.
:func:`compare` ranks alternative models of the same traces.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import xarray as xr

from cainfer._files import atomic_path
from cainfer.forward import CellModel, Stimulus
from cainfer.infer._draws import _dye_fraction, _model_ratio, _packed
from cainfer.infer._op import forward_solver
from cainfer.infer.observation import REPORTED as OBSERVATION_REPORTED
from cainfer.infer.observation import (
    noise_scale,
)


def _from_runs(runs: Any, default: Any) -> Any:
    """Counts saved as runs ``[[value, count], ...]`` (``fit._runs``): an int or an array."""
    if not runs:
        return int(default)
    if len(runs) == 1 and runs[0][1] == 0:
        return int(runs[0][0])
    return np.repeat([r[0] for r in runs], [r[1] for r in runs]).astype(np.int64)


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
    # the last raw summary with its key (HDI mass, variables and a digest of their
    # draws, so that changed draws are never summarised by it): diagnostics, the
    # run's summary.csv and the Jupyter table read one
    _raw_summary: tuple[Any, Any] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __repr__(self) -> str:
        st = self.settings
        size = f"{st.get('chains', '?')} chains × {st.get('draws', '?')} draws"
        rois = "" if self.rois is None else f", ROIs {self.rois}"
        state = "ok" if self.ok else f"{len(self.problems)} problem(s)"
        return f"Fit(model {self.model.name!r}, free {self.free}{rois}, {size}, {state})"

    def _repr_html_(self) -> str:
        """The fit in Jupyter: the posterior table with its diagnostics flagged, and problems.

        Each reported variable with its unit, posterior mean, sd and 94% HDI,
        R-hat (flagged above 1.01), bulk and tail ESS (flagged below 400) and
        the 94% interval of its prior draws; then what :meth:`diagnostics`
        found, or that every check passed.
        """
        from cainfer.forward._html import FLAG, GOOD, esc, number, table

        st = self.settings
        s = self.summary(round_to="none")
        prior = self.idata["prior"] if "prior" in self.idata.children else None
        params = self.model.parameters
        obs = self.idata["observed_data"] if "observed_data" in self.idata.children else None
        recorded = str(obs["y"].attrs.get("units", "")) if obs is not None and "y" in obs else ""
        units = {n: params[n].unit for n in params} | {"F0": recorded, "sigma": recorded}
        labels = {str(x): x for x in self.rois or []}  # the summary's "name[label]" as text
        rows, flagged = [], set()
        for i, name in enumerate(s.index):
            base, _, label = str(name).partition("[")
            row = s.loc[name]
            interval = ""
            if prior is not None and base in prior:
                da = prior[base]
                if "roi" in da.dims:
                    da = da.sel(roi=labels[label.rstrip("]")])
                a = np.asarray(da)
                lo, hi = np.quantile(a.ravel(), [0.03, 0.97])
                interval = f"[{lo:.4g}, {hi:.4g}]"
            rows.append([
                name, units.get(base, "1"), number(row["mean"]),
                number(row["sd"]), f"[{number(row['hdi94_lb'])}, {number(row['hdi94_ub'])}]",
                f"{float(row['r_hat']):.3f}", f"{float(row['ess_bulk']):.0f}",
                f"{float(row['ess_tail']):.0f}", interval,
            ])  # fmt: skip
            if float(row["r_hat"]) > 1.01:
                flagged.add((i, 5))
            for j, col in ((6, "ess_bulk"), (7, "ess_tail")):
                if float(row[col]) < 400:
                    flagged.add((i, j))
        head = (
            f"<p><b>Fit</b> of the {esc(self.model.name)} model ({esc(self.model.indicator.name)})"
            f" to {esc(st.get('observation', 'dff_exact'))} data"
            + ("" if self.rois is None else f", ROIs {esc(self.rois)}")
            + f": {esc(st.get('chains'))} chains × {esc(st.get('draws'))} draws, "
            f"sampled in {float(st.get('sampling_seconds', float('nan'))):.1f} s</p>"
        )
        header = ["variable", "unit", "mean", "sd", "94% HDI", "R-hat", "ESS bulk", "ESS tail",
                  "prior 94%"]  # fmt: skip
        if self.problems:
            items = "".join(f"<li>{esc(p)}</li>" for p in self.problems)
            status = f'<p style="{FLAG}">Problems:</p><ul>{items}</ul>'
        else:
            status = (
                f'<p style="{GOOD}">Every check passed: no divergences, R-hat ≤ 1.01, bulk '
                "ESS ≥ 400, no parameter far from its prior or on a ridge.</p>"
            )
        return head + table(header, rows, flagged=flagged, left={0, 1}) + status

    def summary(self, *, ci_prob: float = 0.94, round_to: int | str = "auto") -> Any:
        """Posterior mean, sd, HDI (94% by default), R-hat and ESS of the reported variables.

        Parameters
        ----------
        ci_prob : float
            Probability mass of the highest-density interval, in (0, 1).
        round_to : int or {"auto", "none"}
            ``"auto"``: arviz's rounding (the digits the Monte Carlo error
            supports), except that the mean and the HDI's bounds keep the
            digits of the posterior sd's second significant one, so that a
            narrow interval does not print as one number; ``"none"``: raw
            numbers; an integer: that many decimals (arviz's).
        """
        if not 0.0 < ci_prob < 1.0:
            raise ValueError(f"ci_prob = {ci_prob!r} must lie in (0, 1)")
        if not (round_to in ("auto", "none") or isinstance(round_to, int)):
            raise ValueError(f"round_to = {round_to!r}; allowed: 'auto', 'none' or an integer")

        def table(how: int | str) -> Any:
            if how != "none":
                return az.summary(self.idata, var_names=self.reported, ci_prob=ci_prob,
                                  ci_kind="hdi", round_to=how)  # fmt: skip
            post = self.idata["posterior"]
            digest = hashlib.blake2b(digest_size=16)
            for name in self.reported:
                a = np.ascontiguousarray(post[name].values)
                digest.update(f"{name}{a.dtype}{a.shape}".encode())
                digest.update(a.tobytes())
            key = (ci_prob, tuple(self.reported), digest.hexdigest())
            if self._raw_summary is None or self._raw_summary[0] != key:
                raw = az.summary(self.idata, var_names=self.reported, ci_prob=ci_prob,
                                 ci_kind="hdi", round_to="none")  # fmt: skip
                self._raw_summary = (key, raw)
            return self._raw_summary[1].copy()

        out = table(round_to)
        if round_to != "auto":
            return out
        # arviz rounds an HDI's bounds to two significant digits: [500, 500] for
        # 499.83 ± 0.61. Keep them, and the mean, to the sd's second digit.
        # (arviz 1 keeps the numbers and shows strings from a map of its own)
        raw = table("none")
        shown = getattr(out, "_fmt_map", None)
        cols = [c for c in raw.columns if c == "mean" or c.startswith("hdi")]
        for row in raw.index:
            sd = float(raw.at[row, "sd"])
            if np.isfinite(sd) and sd > 0:
                digits = max(0, 1 - int(np.floor(np.log10(sd))))
                for col in cols:
                    value = round(float(raw.at[row, col]), digits)
                    out.at[row, col] = value
                    if isinstance(shown, dict) and isinstance(shown.get(col), dict):
                        shown[col][row] = f"{value:.{digits}f}"
        return out

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
        time: Any = None,
        stimulus: Stimulus | None = None,
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

        Without ``time``, the fit's own recording: its frame times, stimulus
        and solver steps, which recomputes the model part of the predictive
        that a saved fit keeps only as bands (:meth:`save`).

        Parameters
        ----------
        time : array_like, optional
            Frame times of the new recording (s), increasing; None: the
            fitted recording's (``stimulus`` must then be None too).
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
        substeps: Any = int(self.settings.get("substeps", 1))
        if time is None:
            if stimulus is not None:
                raise ValueError(
                    "stimulus= without time=: give the new recording's frame times, or neither "
                    "for the fitted recording"
                )
            time, stimulus, substeps = self.frame_times(), self.stimulus(), self._substeps()
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
        forward = forward_solver(self.model, t, stim, substeps=substeps)
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

    def frame_times(self) -> np.ndarray:
        """Frame times of the fitted recording (s)."""
        return np.asarray(self.idata["observed_data"]["time"], dtype=float)

    def stimulus(self) -> Stimulus | None:
        """The stimulus the fit was given (None for none)."""
        st = self.settings
        events = st.get("stimulus_events", [])
        wt, wv = st.get("stimulus_waveform_time", []), st.get("stimulus_waveform", [])
        if not events and not wt:
            return None
        return Stimulus(
            events=np.asarray(events, dtype=float),
            weights=np.asarray(st.get("stimulus_weights", [1.0] * len(events)), dtype=float),
            waveform_time=np.asarray(wt, dtype=float),
            waveform=np.asarray(wv, dtype=float),
        )

    def _substeps(self) -> Any:
        """The solver steps of each frame interval the fit used (an int: every interval's)."""
        return _from_runs(self.settings.get("substeps_runs"), self.settings.get("substeps", 1))

    def _stride(self) -> Any:
        """The solver's output stride of each frame the fit used (an int: every frame's)."""
        st = self.settings
        return _from_runs(st.get("output_stride_runs"), st.get("output_stride", 1))

    @property
    def compact(self) -> bool:
        """True when the posterior-predictive draws are left out (a saved fit: :meth:`expand`)."""
        return not {"posterior_predictive", "log_likelihood"} <= set(self.idata.children)

    def _rebuildable(self) -> bool:
        """Whether :meth:`expand` can recompute this fit's groups (fits from before it cannot)."""
        st = self.settings
        if not all(k in st for k in ("seed", "stimulus_waveform", "substeps_runs")):
            return False
        obs = self.idata["observed_data"]
        return all(f"{n}_noise" in obs for n in ("neuropil", "neuropil_den") if n in obs)

    def expand(self) -> Fit:
        """Recompute the posterior-predictive and log-likelihood groups a saved fit leaves out.

        :meth:`save` keeps the posterior draws, sample statistics, prior draws,
        the recording and pointwise bands of the predictive; this runs every
        posterior draw through the forward model and the observation model
        again, with the fit's seed, giving the groups :func:`cainfer.fit`
        returned (the same numbers, to rounding). A no-op on a fit that has
        them.

        Returns
        -------
        Fit
            This fit, with ``posterior_predictive`` and ``log_likelihood``.

        Raises
        ------
        ValueError
            The fit was saved without what the recomputation needs (its
            stimulus waveform or the seed).
        """
        if not self.compact:
            return self
        from cainfer.infer._predictions import _add_predictions, observed_of

        st = self.settings
        if not self._rebuildable():
            raise ValueError(
                "this fit lacks what recomputing its predictive needs (its seed, stimulus, "
                "solver steps or background noise): fit again"
            )
        options = {k: st[k] for k in ("seed", "likelihood", "residuals", "drift",
                                      "drift_timescale")}  # fmt: skip
        options["substeps"] = self._substeps()
        options["kinetic_explicit"] = st.get("kinetic_solver") == "rk4"
        options["stride"] = self._stride()
        data = observed_of(self.idata["observed_data"].ds, st.get("observation", "dff_exact"))
        bands = self.idata["predictive_bands"] if "predictive_bands" in self.idata else None
        _add_predictions(self.idata, self.model, self.model.values(self.fixed), self.free,
                         self.frame_times(), self.stimulus(), data, options, self.rois)  # fmt: skip
        if bands is not None:
            del self.idata["predictive_bands"]
        return self

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

    def save(self, path: str | os.PathLike[str], *, compact: bool = True) -> Path:
        """Write the fit to one NetCDF file (atomically); read it back with :func:`load_fit`.

        Parameters
        ----------
        path : path
            The file (``.nc``).
        compact : bool
            Keep the posterior draws, sample statistics, prior draws and the
            recording, and of the posterior predictive only its pointwise
            median and 94% band (group ``predictive_bands``, float32): the
            predictive's draws and the pointwise log likelihood are
            recomputed from the posterior on request (:meth:`expand`,
            :meth:`predict`). A file then grows by under 100 bytes per frame
            instead of about 80 per frame and draw. False: write every group.

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        if not isinstance(compact, bool):
            raise ValueError(f"compact = {compact!r} must be True or False")
        path = Path(path)
        if not compact:
            self.expand()
        tree = self.idata.copy()
        encoding = None
        if compact and self._rebuildable():
            if "posterior_predictive" in tree.children:
                from cainfer.infer._predictions import predictive_bands

                tree["predictive_bands"] = predictive_bands(tree["posterior_predictive"].ds)
            for name in ("posterior_predictive", "log_likelihood"):
                if name in tree.children:
                    del tree[name]
            if "prior" in tree.children:
                # prior draws of per-ROI variables only: the slow baseline's coordinates
                # (as many as the recording has time scales) have a fixed N(0, 1) prior
                prior = tree["prior"].ds
                tree["prior"] = prior.drop_vars(
                    [n for n, v in prior.data_vars.items()
                     if not set(v.dims) <= {"chain", "draw", "roi"}]
                )  # fmt: skip
            obs = tree["observed_data"].ds
            if "dff" in obs:  # the recording read as ΔF/F, for plots: not what was fitted
                tree["observed_data"] = obs.assign(dff=obs["dff"].astype(np.float32))
            encoding = {
                node.path: {n: {"zlib": True, "complevel": 4, "shuffle": True}
                            for n in node.ds.data_vars}
                for node in tree.subtree
                if node.path != "/" and node.ds.data_vars
            }  # fmt: skip
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
            tree.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        return path


def load_fit(path: str | os.PathLike[str]) -> Fit:
    """Read a fit written by :meth:`Fit.save`.

    A compact file (the default) has no ``posterior_predictive`` or
    ``log_likelihood`` group: :meth:`Fit.expand` recomputes them, and
    :func:`compare` and :meth:`Fit.plot_trace` do so when they need them.
    Files written before fits were saved compact load as they were.

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


# residuals this autocorrelated and this much larger than the frame-to-frame noise are
# structure the model did not explain (Fit._unexplained_residuals)
WANDER_RHO = 0.8
WANDER_SIGMA = 2.0

# how far the solver's error may move a free parameter, in its posterior sds
# (linearised, _solver_error)
SOLVER_TOLERANCE = 0.25


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
    for _, f in items:
        f.expand()  # a saved fit recomputes its pointwise log likelihood
    with warnings.catch_warnings():
        # a high Pareto k is reported in the table's ``diag_elpd`` column
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        return az.compare({k: f.idata for k, f in items}, method=method, round_to=round_to)
