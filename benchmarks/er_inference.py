"""Sampling speed on the ER preset: the model with the most flux terms that ships.

B1 (``benchmarks/inference.py``) times a one-pump cell. This times the ER
preset (OGB-1 in equilibrium: PMCA, NCX, SERCA, ER leak, Ca-induced release,
store-operated entry, a plasma-membrane leak and a jump per event) on B1's
protocol (1800 frames at 30 frames/s, 10 events with two doublets), the
trace simulated at the preset's defaults with white noise (sd 0.03). Free:
the PMCA, SERCA and release capacities, the influx amplitude and κ_S. Fits
with the exact-ΔF/F observation (white noise, as B1's first row) and with
the default one (free scale and offset, drift, AR(1) residuals), each 4
chains × (1000 tune + 1000 draws) unless ``--quick`` (2 × (300 + 300)), and
prints compile time, sampling time, minimum bulk ESS per second of sampling,
max R-hat, whether every true value is inside its 94% HDI, and the time of one
ΔF/F solve with its adjoint (the solver's share of one log-density gradient,
best of 7 rounds of 30 calls).

Run: ``python benchmarks/er_inference.py [--quick]``
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import cainfer
from cainfer.forward import Stimulus, er_model
from cainfer.forward._specialize import specialized

FREE = ["pmca_vmax", "serca_vmax", "release_rate", "influx_amplitude", "kappa_s"]
SIGMA = 0.03
EVENTS = [3.0, 8.0, 13.0, 13.05, 20.0, 27.0, 34.0, 34.05, 42.0, 50.0]


def _gradient_ms(model, t: np.ndarray, stim: Stimulus) -> float:  # type: ignore[no-untyped-def]
    """Best time (ms) of one ΔF/F solve and its adjoint at the defaults.

    On the kernels specialised to the model's terms, as a fit runs them.
    """
    gen = getattr(model, "generated_terms", ())
    adj = specialized(model._codes.tolist(), model._offsets.tolist(), *((gen,) if gen else ()))
    args = model.kernel_args(t, stim, substeps=1)
    p = model._pack_raw(model.values(None))
    g = np.random.default_rng(0).normal(size=t.size)
    z = np.zeros_like(g)
    adj.dff_vjp(p, *args, g, z)  # compile
    best = np.inf
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(30):
            adj.dff_vjp(p, *args, g, z)
        best = min(best, (time.perf_counter() - t0) / 30)
    return 1e3 * best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    chains, tune, draws = (2, 300, 300) if args.quick else (4, 1000, 1000)
    model = er_model("OGB-1")
    t = np.arange(1800) / 30.0
    stim = Stimulus(events=EVENTS)
    truth = {k: model.defaults()[k] for k in FREE}
    clean = model.simulate(truth, t, stim).dff.values
    y = clean + np.random.default_rng(1).normal(0.0, SIGMA, t.size)
    kw = dict(stimulus=stim, time=t, free=FREE, draws=draws, tune=tune, chains=chains, seed=1)
    rows = []
    for label, extra in (
        ("exact ΔF/F", dict(observation="dff_exact", residuals="white")),
        ("ΔF/F, default observation", {}),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = cainfer.fit(y, model, **kw, **extra)
        s = res.summary(round_to="none")
        st = res.settings
        ess = float(s.loc[FREE, "ess_bulk"].astype(float).min())
        inside = all(
            float(s.loc[k, "hdi94_lb"]) <= v <= float(s.loc[k, "hdi94_ub"])
            for k, v in truth.items()
        )
        rows.append(
            (label, st["compile_seconds"], st["sampling_seconds"], ess / st["sampling_seconds"],
             float(s["r_hat"].astype(float).max()), inside)
        )  # fmt: skip
    print(f"ER preset (OGB-1), {chains} chains x ({tune} tune + {draws} draws), free: {FREE}")
    print(f"{'observation':<28}{'compile s':>10}{'sample s':>10}{'minESS/s':>10}{'max R-hat':>10}"
          f"{'truth in 94% HDI':>18}")  # fmt: skip
    for label, c, s_, e, r, ok in rows:
        print(f"{label:<28}{c:>10.1f}{s_:>10.1f}{e:>10.2f}{r:>10.3f}{ok!s:>18}")
    print(f"one ΔF/F solve and adjoint: {_gradient_ms(model, t, stim):.3f} ms")


if __name__ == "__main__":
    main()
