"""Ten-minute recordings: whether the smooth baseline, with its ~50 terms, samples cleanly.

B1's cell (see ``benchmarks/inference.py``) imaged for ``--minutes`` (default
10) at ``--frame-rate`` (default 30 frames/s), events at random (0.2/s, a
third of them doublets), as a raw ROI: F0 = 300 counts, 30 % bleaching
over the recording plus a slow wander of the baseline (sinusoids of 1–4 min
period, ±4 %), a neuropil (r = 0.8) with transients of its own, read noise
sd 3 and shot noise (the same per frame at any frame rate). It is
fitted twice with :func:`cainfer.fit`'s defaults: as the fluorescence
(``F``, ``F_neu``, extraction's 8th-percentile ``F0``) and as the ΔF/F a
user would derive from it (``(F − 0.7 F_neu)/F0 − 1``). The slow baseline
then has ~50 cosine terms. ``--binding kinetic`` images the cell through
``benchmarks/kinetic.py``'s GCaMP6s, bound kinetically (k_off 1/s, free too).

Printed per fit: divergences, max R-hat, min bulk ESS, the noise σ's
posterior median against the noise sd at rest (a σ collapsed far below it
would mean the baseline soaked up the noise), whether each true value lies
in its 94% HDI, the solver's output stride and the kept draws' leapfrog steps, the
compile and sampling times, and the process's peak memory.

Run: ``python benchmarks/long_recording.py [--minutes M] [--frame-rate HZ]
[--binding equilibrium|kinetic] [--draws N] [--only dff]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).parent))
import kinetic
from inference import FREE, TRUTH, problem

from cainfer.forward import CellModel, Stimulus
from cainfer.infer import fit


def cell(binding: str) -> tuple[CellModel, dict[str, float]]:
    """The imaged cell and its true parameters: B1's, or B1's through a kinetic GCaMP6s."""
    if binding == "kinetic":
        return kinetic.models()[0], kinetic.TRUTH
    return problem()[0], TRUTH


def recording(
    minutes: float,
    seed: int = 3,
    *,
    frame_rate: float = 30.0,
    binding: str = "equilibrium",
) -> tuple[xr.Dataset, Stimulus, float, float]:
    """The raw ROI, its stimulus, and the noise sd at rest (counts, and in ΔF/F)."""
    model, truth = cell(binding)
    rng = np.random.default_rng(seed)
    t = np.arange(round(minutes * 60 * frame_rate)) / frame_rate
    first = rng.uniform(0.5, 5.0)
    gaps = rng.exponential(5.0, int(minutes * 60 / 5.0 * 1.5))
    ev = first + np.cumsum(gaps)
    ev = ev[ev < t[-1] - 2.0]
    doublets = ev[rng.random(ev.size) < 1 / 3] + 0.05
    stim = Stimulus(events=np.concatenate([ev, doublets]))
    dff = model.simulate(truth, t, stim, substeps=1).dff.values
    span = t[-1]
    wander = sum(
        0.04 / 3 * np.sin(2 * np.pi * t / (60.0 * p) + rng.uniform(0, 2 * np.pi)) for p in (1, 2, 4)
    )
    base = 0.7 ** (t / span) * (1.0 + wander)
    spikes = np.zeros(t.size)
    k = int(minutes * 12)
    spikes[rng.choice(t.size - 200, k, replace=False)] = rng.uniform(0.1, 0.3, k)
    kernel = np.exp(-np.arange(int(2 * frame_rate)) / frame_rate)
    neu = 150.0 * 0.7 ** (t / span) * (1.0 + np.convolve(spikes, kernel)[: t.size])
    mean = 300.0 * base * (1.0 + dff) + 0.8 * neu
    F = rng.normal(mean, np.sqrt(9.0 + 0.02 * mean))
    F_neu = neu + rng.normal(0.0, 0.5, t.size)
    F0 = np.full(t.size, np.percentile(F - 0.7 * F_neu, 8))
    ds = xr.Dataset(
        {k: (("roi", "time"), v[None]) for k, v in (("F", F), ("F_neu", F_neu), ("F0", F0))},
        coords={"roi": [0], "time": t},
    )
    ds["dff"] = (ds["F"] - 0.7 * ds["F_neu"]) / ds["F0"] - 1.0
    rest = 300.0 * 0.85 + 0.8 * 150.0 * 0.85
    sd_counts = float(np.sqrt(9.0 + 0.02 * rest))
    return ds, stim, sd_counts, sd_counts / float(F0[0])


def _peak_gb() -> float:
    """The process's peak resident memory so far (GB)."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / 1e6 * (1e-3 if sys.platform == "darwin" else 1.0)  # macOS: bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--frame-rate", type=float, default=30.0, help="frames/s (default 30)")
    ap.add_argument("--binding", choices=("equilibrium", "kinetic"), default="equilibrium")
    ap.add_argument("--draws", type=int, default=1000, help="draws and tuning steps per chain")
    ap.add_argument("--only", choices=("fluorescence", "dff"), help="fit only this input")
    args = ap.parse_args()
    if not (args.minutes > 0 and 0 < args.frame_rate <= 1000):
        ap.error("--minutes must be > 0 and --frame-rate in (0, 1000]")
    model, truth = cell(args.binding)
    free = kinetic.FREE if args.binding == "kinetic" else FREE
    ds, stim, sd_f, sd_dff = recording(args.minutes, frame_rate=args.frame_rate,
                                       binding=args.binding)  # fmt: skip
    print(
        f"{ds.sizes['time']} frames ({args.minutes:g} min at {args.frame_rate:g} Hz, "
        f"{args.binding} binding), {stim.events.size} events"
    )
    inputs = {
        "fluorescence": ("fluorescence", ds[["F", "F_neu", "F0"]], sd_f),
        "dff": ("ΔF/F", ds["dff"], sd_dff),
    }
    for key, (label, data, sd) in inputs.items():
        if args.only not in (None, key):
            continue
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit(data, model, stimulus=stim, roi=0, free=free, draws=args.draws,
                      tune=args.draws, chains=4, seed=1)  # fmt: skip
        wall = time.perf_counter() - t0
        import arviz as az

        post = res.idata["posterior"]
        div = int(np.asarray(res.idata["sample_stats"]["diverging"]).sum())
        rhat = az.rhat(post)
        ess = az.ess(post, method="bulk")
        names = [v for v in post.data_vars if v in {*free, "sigma", "rho", "noise_exponent"}
                 or v.startswith("drift")]  # fmt: skip
        max_rhat = max(float(rhat[v].max()) for v in names)
        min_ess = min(float(ess[v].min()) for v in names)
        sigma = float(np.median(np.asarray(post["sigma"])))
        covered = []
        for name in free:
            lo, hi = np.asarray(az.hdi(np.asarray(post[name]).ravel(), prob=0.94)).ravel()[:2]
            med = float(np.median(np.asarray(post[name])))
            covered.append(
                f"{name} {med:.4g} [{lo:.4g}, {hi:.4g}] truth {truth[name]:g} "
                f"{'in' if lo <= truth[name] <= hi else 'OUT'}"
            )
        k = post["drift_z"].shape[-1] if "drift_z" in post else 0
        steps = float(np.asarray(res.idata["sample_stats"]["n_steps"]).sum())
        print(
            f"{label:12s} baseline terms {k}  divergences {div}  max R-hat {max_rhat:.3f}  "
            f"min bulk ESS {min_ess:.0f}  σ {sigma:.4g} (noise sd at rest {sd:.4g})  "
            f"{', '.join(covered)}  solver output stride up to "
            f"{res.settings.get('output_stride', 1)} "
            f"({res.settings.get('frames_per_stop', 1.0):.2f} frames per stop), "
            f"{steps:.0f} leapfrog steps  compile {res.settings['compile_seconds']:.1f} s, "
            f"sampling {res.settings['sampling_seconds']:.1f} s, fit() {wall:.1f} s, "
            f"peak memory so far {_peak_gb():.2f} GB",
            flush=True,
        )


if __name__ == "__main__":
    main()
