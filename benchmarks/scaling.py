"""Wall time of pipeline runs for 1, 4 and 16 ROIs with 1 and 2 workers.

A synthetic recording of 16 cells (the ``pumps`` preset seen through OGB-1,
96x96 px, 600 frames at 30 frames/s) is written to a temporary directory;
each run extracts it and fits the first N ROIs (free: PMCA V_max and the
influx amplitude; 2 chains x (300 tune + 300 draws)) into a fresh run
directory. With 1 worker everything runs in this process; with 2, on a local
Dask cluster of 2 processes (each fit then gets one core). The table also
prints the speed-up of 2 workers over 1 and whether both gave the same
``summary.csv``.

Run: ``python benchmarks/scaling.py [--sizes 1 4 16] [--draws 300]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cainfer.forward import Stimulus, pumps_model
from cainfer.pipeline import run_pipeline
from cainfer.synthetic import simulate_movie

EVENTS = [1.0, 4.0, 4.05, 8.0, 12.0, 12.05, 16.0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--draws", type=int, default=300)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cainfer-scaling-"))
    files = simulate_movie(
        tmp / "cells.tif", pumps_model("OGB-1"), stimulus=Stimulus(events=EVENTS),
        n_cells=16, shape=(96, 96), n_frames=600, frame_rate=30.0, seed=5,
    )  # fmt: skip
    print(f"recording: {files.movie} (16 cells, 600 frames)")
    rows = []
    for n in args.sizes:
        walls = {}
        for workers in (1, 2):
            cfg = tmp / f"n{n}_w{workers}.toml"
            cfg.write_text(
                f'[inputs]\nfiles = ["{files.movie}"]\n'
                f'[rois]\nsource = "{files.rois}"\nfit = {list(range(n))}\n'
                f"[stimulus]\nevents = {EVENTS}\n"
                '[model]\npreset = "pumps"\nfree = ["pmca_vmax", "influx_amplitude"]\n'
                f"[sampler]\ndraws = {args.draws}\ntune = {args.draws}\nchains = 2\n"
            )
            t0 = time.perf_counter()
            out = run_pipeline(cfg, output=tmp / f"run_n{n}_w{workers}", workers=workers,
                               progress=False)  # fmt: skip
            walls[workers] = (time.perf_counter() - t0, (out / "summary.csv").read_bytes())
        same = walls[1][1] == walls[2][1]
        rows.append((n, walls[1][0], walls[2][0], walls[1][0] / walls[2][0], same))
    print(f"\n{'ROIs':>5} {'1 worker s':>11} {'2 workers s':>12} {'speed-up':>9} same summary")
    for n, w1, w2, sp, same in rows:
        print(f"{n:>5} {w1:>11.1f} {w2:>12.1f} {sp:>8.2f}x {same}")
    print(f"(runs left in {tmp})")


if __name__ == "__main__":
    main()
