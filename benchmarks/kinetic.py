"""Kinetic indicator fits: B1-sized data with a slow, GCaMP6s-like indicator.

B1's cell (see ``benchmarks/inference.py``: a saturable pump, a leak balancing
it at rest, a calcium jump per event; 1800 frames at 30 frames/s, 10 events
with two doublets) imaged with GCaMP6s (K_d 147 nM, Hill 2.45, ΔF/F_max 27.2,
B_T 20 µM; Badura et al. 2014) whose binding is kinetic with k_off = 1/s (an
assumed rate: the catalogue carries none yet). The data come from
``simulate`` (its implicit solve at steps of at most 1/120 s); the fits take
whichever of RK4 and the implicit solve their step search finds cheaper (for
this slow indicator RK4, one step per frame). Free: V_max, K, influx amplitude, κ_S, k_off and the
noise σ (ΔF/F taken as exact, as in B1's cainfer row), then the same with the
default observation model for a ΔF/F trace.

Prints, per fit: compile and sampling time, minimum bulk ESS per second of
sampling, max R-hat and whether every true value lies in its 94% HDI; then
the cost of one log-density gradient of the kinetic model, in RK4 steps and
in implicit ones, against B1's equilibrium model (same process, same data
size), and the steps per frame of the implicit solve. With ``--cold``
everything is compiled into an empty cache directory first, and the time of
the first fit's compilation is printed (what a fresh machine sees).

``--coverage N`` instead fits N simulated single-compartment GCaMP6s cells
(γ, influx amplitude, k_off free; the k_off given as prior centre is off
the truth by a lognormal factor, sd 0.3) and prints the coverage of their
94% HDIs.

Run: ``python benchmarks/kinetic.py [--quick] [--cold] [--coverage N]``
(``--quick``: 2 chains x 300 + 300).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

if "--cold" in sys.argv:  # before cainfer is imported: its caches go to an empty directory
    os.environ["CAINFER_CACHE_DIR"] = tempfile.mkdtemp(prefix="cainfer-cold-")

import arviz as az
import numpy as np

from cainfer.forward import PMCA, CellModel, EventInflux, PlasmaLeak, Stimulus, get_indicator
from cainfer.infer import fit

K_OFF = 1.0
TRUTH = {
    "pump_vmax": 150.0, "pump_k": 0.4, "influx_amplitude": 4.0, "kappa_s": 80.0, "k_off": K_OFF,
}  # fmt: skip
SIGMA = 0.05
FREE = ["pump_vmax", "pump_k", "influx_amplitude", "kappa_s", "k_off"]
EVENTS = [3.0, 8.0, 13.0, 13.05, 20.0, 27.0, 34.0, 34.05, 42.0, 50.0]


def models() -> tuple[CellModel, CellModel]:
    """The kinetic GCaMP6s cell and the same cell with binding in equilibrium."""
    ind = get_indicator("GCaMP6s")
    ind = ind.with_(
        k_off=K_OFF, k_on=K_OFF / ind.kd**ind.hill, kinetics_source="assumed for the benchmark"
    )
    terms = [PMCA(name="pump", hill=1.0), PlasmaLeak(), EventInflux()]
    return (
        CellModel(terms, indicator=ind, indicator_kinetics="kinetic"),
        CellModel(terms, indicator=ind),
    )


def _row(name: str, res, truth: dict[str, float], wall: float) -> None:
    s = az.summary(
        res.idata, var_names=[*FREE, "sigma"], ci_prob=0.94, ci_kind="hdi", round_to="none"
    )
    st = res.settings
    ess = float(s["ess_bulk"].astype(float).min())
    inside = all(
        float(s.loc[k, "hdi94_lb"]) <= v <= float(s.loc[k, "hdi94_ub"]) for k, v in truth.items()
    )
    print(
        f"{name:<44} {st['compile_seconds']:8.1f} {st['sampling_seconds']:9.1f} {wall:8.1f} "
        f"{ess / st['sampling_seconds']:10.1f} {float(s['r_hat'].astype(float).max()):7.3f} "
        f"{inside!s:>8} {int(res.idata['sample_stats']['diverging'].sum()):5d} "
        f"{st.get('kinetic_solver', '-'):>7} {st.get('frames_per_stop', 1.0):7.2f}"
    )


def _grad_ms(
    model: CellModel, t: np.ndarray, stim: Stimulus, y: np.ndarray, free, explicit: bool = False
) -> float:
    """Milliseconds per log density + gradient (exact ΔF/F, white noise, numba)."""
    # benchmarks/inference.py, in this script's folder
    from inference import _logp_grad_ms, exact_pymc_model

    return _logp_grad_ms(exact_pymc_model(model, t, stim, y, free, explicit=explicit), "NUMBA")


def coverage(n: int) -> None:
    """Coverage of 94% HDIs over ``n`` simulated GCaMP6s cells (single compartment).

    Each cell draws γ, the influx amplitude and k_off around typical values,
    its trace is simulated (explicit RK4) with noise sd 0.03 and fitted with
    the defaults for a ΔF/F trace (free scale and offset, drift, AR(1)), with
    γ, amplitude and k_off free. Prints one line per cell and the coverage.
    """
    from cainfer.forward import single_compartment

    rng = np.random.default_rng(11)
    t = np.arange(900) / 30.0
    stim = Stimulus(events=[2.0, 7.0, 12.0, 12.05, 18.0, 24.0, 24.05, 24.1])
    ind = get_indicator("GCaMP6s")
    names = ["gamma", "influx_amplitude", "k_off"]
    hits, zs = [], []
    for i in range(n):
        truth = {
            "gamma": float(rng.uniform(300, 700)),
            "influx_amplitude": float(rng.uniform(2.0, 5.0)),
            "k_off": float(rng.uniform(0.7, 3.0)),
        }
        k = truth["k_off"] * float(np.exp(rng.normal(0, 0.3)))  # the user's value is off
        cell = ind.with_(k_off=k, k_on=k / ind.kd**ind.hill, kinetics_source="benchmark")
        model = single_compartment(cell, indicator_kinetics="kinetic")
        y = model.simulate(truth, t, stim).dff.values + rng.normal(0, 0.03, t.size)
        res = fit(y, model, stimulus=stim, time=t, free=names, draws=500, tune=500, chains=2,
                  seed=i)  # fmt: skip
        s = res.summary(round_to="none")
        row = []
        for name in names:
            lo, hi = float(s.loc[name, "hdi94_lb"]), float(s.loc[name, "hdi94_ub"])
            hits.append(lo <= truth[name] <= hi)
            z = (float(s.loc[name, "mean"]) - truth[name]) / float(s.loc[name, "sd"])
            zs.append(abs(z))
            row.append(f"{name} {truth[name]:.3g} in [{lo:.3g}, {hi:.3g}] z {z:+.2f}")
        r_hat = float(s["r_hat"].astype(float).max())
        print(f"cell {i}: " + "; ".join(row) + f"; R-hat {r_hat:.3f}", flush=True)
    print(f"94% HDI coverage: {np.mean(hits) * 100:.1f} % of {len(hits)} truths; "
          f"mean |z| {np.mean(zs):.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cold", action="store_true", help="compile into an empty cache first")
    ap.add_argument("--coverage", type=int, metavar="N", help="only: coverage over N cells")
    args = ap.parse_args()
    if args.coverage:
        coverage(args.coverage)
        return
    chains, tune, draws = (2, 300, 300) if args.quick else (4, 1000, 1000)
    kin, eq = models()
    t = np.arange(1800) / 30.0
    stim = Stimulus(events=EVENTS)
    rng = np.random.default_rng(1)
    sim = kin.simulate(TRUTH, t, stim)
    y = sim.dff.values + rng.normal(0, SIGMA, t.size)
    print(f"kinetic GCaMP6s, k_off {K_OFF}/s: peak ΔF/F {sim.dff.max().item():.2f}, "
          f"simulate() used {sim.attrs.get('substeps')} RK4 steps per frame")  # fmt: skip
    if args.cold:
        print(f"cold cache: {os.environ['CAINFER_CACHE_DIR']}")
    kw = dict(stimulus=stim, time=t, free=FREE, draws=draws, tune=tune, chains=chains, seed=1)
    print(f"{chains} chains x ({tune} tune + {draws} draws)")
    print(f"{'fit':<44} {'compile':>8} {'sampling':>9} {'wall':>8} {'minESS/s':>10} "
          f"{'R-hat':>7} {'in HDI':>8} {'div.':>5} {'solver':>7} {'fr/stop':>7}")  # fmt: skip
    t0 = time.perf_counter()
    res = fit(y, kin, **kw, observation="dff_exact", residuals="white")
    _row("kinetic, exact ΔF/F", res, {**TRUTH, "sigma": SIGMA}, time.perf_counter() - t0)
    t0 = time.perf_counter()
    res = fit(y, kin, **kw)
    _row("kinetic, ΔF/F input, default observation", res, TRUTH, time.perf_counter() - t0)

    from cainfer.forward import _adjoint as A

    g_kin = _grad_ms(kin, t, stim, y, FREE)
    g_rk4 = _grad_ms(kin, t, stim, y, FREE, explicit=True)
    y_eq = eq.simulate({k: v for k, v in TRUTH.items() if k != "k_off"}, t, stim).dff.values
    g_eq = _grad_ms(eq, t, stim, y_eq, FREE[:-1])
    print(f"one log-density gradient: kinetic in RK4 steps {g_rk4:.3f} ms, in implicit steps "
          f"{g_kin:.3f} ms, equilibrium {g_eq:.3f} ms (ratios {g_rk4 / g_eq:.1f}, "
          f"{g_kin / g_eq:.1f})")  # fmt: skip
    h = float(np.diff(t).min())
    op = A.kinetic_schedule(t, np.asarray(EVENTS), np.full(t.size, h))[0]
    print(f"implicit kinetic solve: {int((op == 0).sum())} steps for {t.size} frames "
          f"({(op == 0).sum() / (t.size - 1):.2f} per frame interval)")  # fmt: skip


if __name__ == "__main__":
    main()
