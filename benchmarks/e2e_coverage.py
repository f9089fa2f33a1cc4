"""End-to-end calibration: simulated movies → extract_traces → fit → coverage of the truth.

Each movie holds cells of the ``pumps`` preset with their own PMCA capacity and
influx amplitude (drawn from log-normal spreads around the defaults), a
neuropil whose true ratio under each cell is uniform on [0.5, 1.0] and which
carries transients of its own, bleaching of 10–40 % over the recording, rigid
motion, shot and read noise. Movies alternate between two indicators (OGB-1
and GCaMP6f, equilibrium binding). Extraction runs with its defaults (the
camera's dark level given, as a user would from dark frames); every cell is
fitted with :func:`cainfer.fit`'s defaults, ``pmca_vmax`` and
``influx_amplitude`` free. Printed: per physical parameter, the fraction of
cells whose 94% and 50% HDIs hold the truth, the mean |median − truth|/sd
with sd the posterior's, its signed mean (a bias shows as a mean far from 0:
for calibrated fits it is normal around 0 with sd 1/√n), and the mean
|median − truth| in prior sds; then the 94%
coverage among the fits that passed every diagnostic alone (``passed``).
When the fit observes raw fluorescence it also infers each cell's resting
fluorescence, ΔF/F gain and neuropil ratio: ``F0*``, ``dff_gain*`` and
``neuropil_ratio*`` score them against the values the extracted traces imply
(:func:`effective_observation`: the same movie simulated without noise,
extracted alike, regressed on the observation model with the true physics).

Targets: 94% HDIs cover 88–98 %, 50% HDIs 40–60 %, mean |median − truth|/sd < 0.5.
With the posterior's sd the last cannot hold together with the first two: for
calibrated, near-normal posteriors (median − truth)/sd is standard normal and
its mean absolute value is √(2/π) ≈ 0.80; below 0.5 means posteriors too wide.
With the prior's sd it measures how far the data moved the answer towards the
truth, and a calibrated fit can meet it.

Run: ``python benchmarks/e2e_coverage.py`` (12 movies × 6 cells = 72 fits,
about 15 minutes on 2 cores); ``--observation dff_exact`` fits the extracted
ΔF/F as if exact, for comparison. ``--preset er`` does the same for cells with
an ER (the ``er`` preset, trains of 5 events at 20 Hz as in the bundled ER
example, 600 frames at 20 frames/s; ``serca_vmax`` free too): whether release
triggers on a train depends steeply on the parameters, so this checks the
search for the posterior's mode as well as calibration.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

FREE_BY_PRESET = {
    "pumps": ("pmca_vmax", "influx_amplitude"),
    "er": ("pmca_vmax", "serca_vmax", "influx_amplitude"),
}
INDICATORS = ("OGB-1", "GCaMP6f")
EVENTS = [2.0, 5.0, 5.05, 9.0, 12.0, 12.05, 16.0, 19.0, 19.05, 19.1, 24.0]
ER_ONSETS = [2.0, 10.0, 18.0]  # trains of 5 events at 20 Hz, as the bundled ER example
OFFSET = 100.0  # the simulated camera's dark level (counts)
# what Fit.problems says, by kind: (words in the message, the tally's name)
PROBLEM_KINDS = (
    ("divergent", "divergences"),
    ("R-hat", "R-hat > 1.01"),
    ("bulk ESS", "bulk ESS < 400"),
    ("residuals wander", "residuals wander"),
    ("solver", "solver error"),
    ("prior sds", "far from the prior"),
)


def problem_kinds(problems: list[str]) -> list[str]:
    """Short names of the kinds of problem a fit reported ("ridge" for the rest)."""
    kinds = []
    for text in problems:
        kind = next((name for words, name in PROBLEM_KINDS if words in text), "ridge")
        if kind not in kinds:
            kinds.append(kind)
    return kinds


NEUROPIL = "neuropil_ratio*"  # scored against the effective values (see below)
RESTING = "F0*"
GAIN = "dff_gain*"


def effective_observation(truth_file: Path, clean) -> dict[str, np.ndarray]:
    """Per cell, the ``F0``, ΔF/F gain and neuropil ratio the extracted traces imply.

    ``clean`` is the extraction of the same movie simulated without photon
    and read noise, registered with the noisy movie's shifts. Its ``F`` is
    regressed on the fit's observation model with the true physics put in,
    ``F = F0·b(t)·(1 + g·ΔF/F_true) + r·F_neu`` with ``b`` the true bleaching
    scaled to geometric mean 1 (as the fit's slow baseline is), by least
    squares on ``b``, ``b·ΔF/F_true`` and the clean ``F_neu``. These are what
    a fit of the extracted traces can recover; the simulation's own values
    are not: its ``neuropil_ratio`` is the fraction of the neuropil under the
    cell that the cell's body lets through, while the fit's ratio multiplies
    the annulus around the mask, whose neuropil is brighter or dimmer (its
    brightness varies in space); and registration's interpolation keeps a
    little of a cell's light out of its mask (0.3-1 % here), which ``F0``
    follows and ΔF/F does not see.
    """
    import xarray as xr

    with xr.open_dataset(truth_file, engine="h5netcdf") as tr:
        dff = tr["dff"].values
        bleach = tr["bleach"].values
    b = bleach / np.exp(np.log(bleach).mean())
    out: dict[str, list[float]] = {NEUROPIL: [], RESTING: [], GAIN: []}
    for cell in range(dff.shape[0]):
        design = np.stack([b, b * dff[cell], clean["F_neu"].values[cell]], axis=1)
        f0, f0g, r = np.linalg.lstsq(design, clean["F"].values[cell], rcond=None)[0]
        out[RESTING].append(f0)
        out[GAIN].append(f0g / f0)
        out[NEUROPIL].append(r)
    return {k: np.array(v) for k, v in out.items()}


def movie_job(args: tuple[int, int, str, int, int, str, str]) -> list[dict]:
    """Simulate one movie, extract it, fit every cell; one row per cell and parameter."""
    index, n_cells, observation, draws, tune, workdir, preset = args
    import cainfer
    from cainfer.synthetic import simulate_movie

    free = FREE_BY_PRESET[preset]
    rng = np.random.default_rng(1000 + index)
    indicator = INDICATORS[index % len(INDICATORS)]
    if preset == "er":
        model = cainfer.er_model(indicator)
        stim = cainfer.Stimulus.train(ER_ONSETS, n=5, interval=0.05)
        typical = {"influx_amplitude": 12.0}
        n_frames, frame_rate = 600, 20.0
    else:
        model = cainfer.pumps_model(indicator)
        stim = cainfer.Stimulus(events=EVENTS)
        typical = {"influx_amplitude": 15.0}
        n_frames, frame_rate = 900, 30.0
    base = model.values() | typical
    cells = [
        {name: float(base[name] * np.exp(rng.normal(0.0, 0.3))) for name in free}
        for _ in range(n_cells)
    ]
    path = Path(workdir) / f"movie_{index}.tif"
    ratios = rng.uniform(0.5, 1.0, n_cells)
    bleach = float(rng.uniform(0.1, 0.4))
    movie = dict(
        stimulus=stim, n_cells=n_cells, shape=(96, 96), n_frames=n_frames,
        frame_rate=frame_rate, cell_params=cells, neuropil_ratio=ratios,
        neuropil_events=0.2, bleach=bleach, offset=OFFSET, seed=2000 + index,
    )  # fmt: skip
    files = simulate_movie(path, model, **movie)
    traces = cainfer.extract_traces(files.movie, rois=files.rois, dark_level=OFFSET)
    # the same movie without noise, for what the fit's observation terms should find
    clean_files = simulate_movie(path.with_name(f"clean_{index}.tif"), model, noise=False, **movie)
    clean = cainfer.extract_traces(
        clean_files.movie, rois=files.rois, dark_level=OFFSET, shifts=traces["shifts"].values
    )
    effective = effective_observation(clean_files.truth, clean)
    rows = []
    for cell in range(n_cells):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = cainfer.fit(
                traces, model, roi=cell, stimulus=stim, free=list(free),
                observation=observation, draws=draws, tune=tune, chains=2, cores=1,
                seed=index * 100 + cell,
            )  # fmt: skip
        seconds = time.perf_counter() - t0
        post = res.idata["posterior"]
        s94 = res.summary(round_to="none")
        s50 = res.summary(ci_prob=0.5, round_to="none")
        scored = {name: cells[cell][name] for name in free}
        if "neuropil_ratio" in post:  # the fluorescence observation's
            scored |= {name: float(v[cell]) for name, v in effective.items()}
        for name, truth in scored.items():
            var = name.rstrip("*")
            x = np.asarray(post[var]).ravel()
            rows.append(
                {
                    "movie": index,
                    "indicator": indicator,
                    "cell": cell,
                    "parameter": name,
                    "truth": truth,
                    "in94": bool(s94.loc[var, "hdi94_lb"] <= truth <= s94.loc[var, "hdi94_ub"]),
                    "in50": bool(s50.loc[var, "hdi50_lb"] <= truth <= s50.loc[var, "hdi50_ub"]),
                    "z": abs(float(np.median(x)) - truth) / float(x.std()),
                    "bias": (float(np.median(x)) - truth) / float(x.std()),
                    "z_prior": abs(float(np.median(x)) - truth)
                    / float(np.asarray(res.idata["prior"][var]).std()),
                    "ok": res.ok,
                    "problems": problem_kinds(res.problems),
                    "seconds": seconds,
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--movies", type=int, default=12)
    ap.add_argument("--cells", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument(
        "--observation", default="auto", choices=["auto", "fluorescence", "dff", "dff_exact"]
    )
    ap.add_argument("--preset", default="pumps", choices=sorted(FREE_BY_PRESET))
    args = ap.parse_args()
    free = FREE_BY_PRESET[args.preset]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        jobs = [(i, args.cells, args.observation, args.draws, args.tune, work, args.preset)
                for i in range(args.movies)]  # fmt: skip
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with ProcessPoolExecutor(args.workers) as pool:
            rows = [r for batch in pool.map(movie_job, jobs) for r in batch]
    wall = time.perf_counter() - t0
    fits = list({(r["movie"], r["cell"]): r for r in rows}.values())  # one row per fit
    n_fits = len(fits)
    print(
        f"preset={args.preset}, observation={args.observation}: {args.movies} movies, "
        f"{n_fits} cells, {args.draws} draws x 2 chains, "
        f"{wall:.0f} s wall on {args.workers} workers"
    )
    print(f"{'parameter':18s} {'indicator':9s} {'n':>4s} {'94% HDI':>8s} {'50% HDI':>8s} "
          f"{'mean |z|':>9s} {'mean z':>7s} {'|err|/prior sd':>15s}")  # fmt: skip
    observed = [n for n in (RESTING, GAIN, NEUROPIL) if any(r["parameter"] == n for r in rows)]
    names = [*free, *observed]
    groups = [(p, ind) for p in names for ind in (*INDICATORS, "all")]
    for name, ind in groups:
        sel = [r for r in rows if r["parameter"] == name and ind in ("all", r["indicator"])]
        if not sel:
            continue
        c94 = np.mean([r["in94"] for r in sel])
        c50 = np.mean([r["in50"] for r in sel])
        z = np.mean([r["z"] for r in sel])
        zp = np.mean([r["z_prior"] for r in sel])
        bias = np.mean([r["bias"] for r in sel])
        print(f"{name:18s} {ind:9s} {len(sel):4d} {c94:8.1%} {c50:8.1%} {z:9.2f} {bias:+7.2f} "
              f"{zp:15.3f}")  # fmt: skip
    passed = [r for r in rows if r["ok"]]
    for name in names:  # what a user keeps who trusts only fits that passed every diagnostic
        sel = [r for r in passed if r["parameter"] == name]
        if sel:
            c94 = np.mean([r["in94"] for r in sel])
            z = np.mean([r["z"] for r in sel])
            print(f"{name:18s} {'passed':9s} {len(sel):4d} {c94:8.1%} {'':8s} {z:9.2f}")
    for r in rows:  # fits far off: a wrong mode, or a bias
        if r["z"] > 4:
            print(f"far off: movie {r['movie']} cell {r['cell']} {r['parameter']} "
                  f"|z| = {r['z']:.1f}, diagnostics passed: {r['ok']}")  # fmt: skip
    tally: dict[str, int] = {}
    for r in fits:
        for kind in r["problems"]:
            tally[kind] = tally.get(kind, 0) + 1
    if tally:
        kinds = ", ".join(f"{k} {v}" for k, v in tally.items())
        print(f"fits reporting each kind of problem: {kinds}")
    ok = np.mean([r["ok"] for r in fits])
    secs = np.median([r["seconds"] for r in fits])
    print(f"fits with every diagnostic passed: {ok:.0%}; median seconds per fit: {secs:.1f}")


if __name__ == "__main__":
    main()
