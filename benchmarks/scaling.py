"""Cost of a pipeline run per ROI: 1, 16 and 128 ROIs on 1 and 2 workers.

A synthetic recording of ``max(--sizes)`` cells (the ``pumps`` preset seen
through OGB-1, 600 frames at 30 frames/s, 24 px per cell along each side) is
written to a temporary directory; each run extracts it and fits the first N
ROIs (free: PMCA V_max and the influx amplitude; 2 chains × (``--draws``
tune + ``--draws`` draws; 1000 by default, the pipeline's) into a fresh run
directory. With 1 worker everything runs in this process (the models it
compiled for an earlier run are forgotten first, so that every run pays its
own compile, as a new process would); with 2, on a new local Dask cluster of
2 processes (each fit then gets one core).

Printed per run: the wall time, the mean sampling time of its fits (the
fits' own ``sampling_seconds``) and the mean compile time (the model's
compile and the mode search), and per worker count the marginal cost of a
ROI: ``(wall(N) − wall(1)) × workers / (N − 1)``, the worker-seconds one
more ROI costs, with its ratio to the mean sampling time (target ≤ 1.3:
ROIs of one model and recording length reuse the model a worker compiled
for the first, with the data swapped in). The summaries of the two worker
counts are compared byte for byte.

Run: ``python benchmarks/scaling.py [--sizes 1 16 128] [--workers 1 2] [--draws 1000]``
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from cainfer.forward import Stimulus, pumps_model
from cainfer.infer.fit import _REUSABLE
from cainfer.pipeline import run_pipeline
from cainfer.synthetic import simulate_movie

EVENTS = [1.0, 4.0, 4.05, 8.0, 12.0, 12.05, 16.0]


def fit_seconds(run: Path) -> tuple[float, float]:
    """Mean sampling and compile seconds of a run's fits (read from the saved settings)."""
    import json

    sampling, compiling = [], []
    for path in sorted((run / "posteriors").rglob("roi_*.nc")):
        with h5py.File(path, "r") as f:
            settings = json.loads(f.attrs["cainfer_settings"])
        sampling.append(float(settings["sampling_seconds"]))
        compiling.append(float(settings["compile_seconds"]))
    return float(np.mean(sampling)), float(np.mean(compiling))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 128])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()
    if min(args.sizes) < 1 or min(args.workers) < 1:
        ap.error("--sizes and --workers must be ≥ 1")
    tmp = Path(tempfile.mkdtemp(prefix="cainfer-scaling-"))
    n_cells = max(args.sizes)
    side = 24 * math.ceil(math.sqrt(n_cells))
    files = simulate_movie(
        tmp / "cells.tif", pumps_model("OGB-1"), stimulus=Stimulus(events=EVENTS),
        n_cells=n_cells, shape=(side, side), n_frames=600, frame_rate=30.0, seed=5,
    )  # fmt: skip
    print(f"recording: {files.movie} ({n_cells} cells, {side}x{side} px, 600 frames)")
    rows = []
    summaries: dict[int, dict[int, bytes]] = {}
    for workers in args.workers:
        for n in args.sizes:
            cfg = tmp / f"n{n}_w{workers}.toml"
            cfg.write_text(
                f'[inputs]\nfiles = ["{files.movie}"]\n'
                f'[rois]\nsource = "{files.rois}"\nfit = {list(range(n))}\n'
                f"[stimulus]\nevents = {EVENTS}\n"
                '[model]\npreset = "pumps"\nfree = ["pmca_vmax", "influx_amplitude"]\n'
                f"[sampler]\ndraws = {args.draws}\ntune = {args.draws}\nchains = 2\n"
            )
            _REUSABLE.clear()  # a new run starts without the compiled models of the last
            t0 = time.perf_counter()
            out = run_pipeline(cfg, output=tmp / f"run_n{n}_w{workers}", workers=workers,
                               progress=False)  # fmt: skip
            wall = time.perf_counter() - t0
            sampling, compiling = fit_seconds(out)
            summaries.setdefault(n, {})[workers] = (out / "summary.csv").read_bytes()
            rows.append((workers, n, wall, sampling, compiling))
            print(f"  {workers} worker(s), {n} ROI(s): {wall:.1f} s", flush=True)
    print(f"\n{'workers':>7} {'ROIs':>5} {'wall s':>8} {'sampling s/ROI':>15} "
          f"{'compile s/ROI':>14} {'marginal s/ROI':>15} {'÷ sampling':>11}")  # fmt: skip
    for workers, n, wall, sampling, compiling in rows:
        one = [r[2] for r in rows if r[0] == workers and r[1] == 1]
        if one and n > 1:
            marginal = (wall - one[0]) * workers / (n - 1)
            extra = f"{marginal:>15.2f} {marginal / sampling:>10.2f}x"
        else:
            extra = f"{'':>15} {'':>11}"
        print(f"{workers:>7} {n:>5} {wall:>8.1f} {sampling:>15.2f} {compiling:>14.2f} {extra}")
    for n, by in summaries.items():
        if len(by) > 1:
            same = len(set(by.values())) == 1
            print(f"{n} ROI(s): the same summary.csv on {sorted(by)} workers: {same}")
    print(f"(runs left in {tmp})")


if __name__ == "__main__":
    main()
