"""Extraction throughput and memory on a large movie.

Writes (once) a 512x512 uint16 synthetic movie of at least 2 GB with its ROI
labels, then measures in separate processes, so that each peak resident
memory is its own:

- tifffile's raw sequential read of the file (frames/s),
- cainfer's trace extraction without registration (frames/s, ratio to raw),
- registration alone (frames/s), and extraction with registration (frames/s).

The file is read right after being written or read, so the figures are for a
warm page cache. Run: ``python benchmarks/extract.py [--dir DIR] [--frames N]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHUNK = 128


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def stage(name: str, movie: Path, rois: Path) -> dict[str, float]:
    import tifffile

    from cainfer.extract import extract_traces, make_reference, register_frames
    from cainfer.io import load_movie

    t0 = time.perf_counter()
    if name == "raw":
        n = 0
        with tifffile.TiffFile(movie) as tf:
            total = len(tf.pages)
            for a in range(0, total, CHUNK):
                data = tf.asarray(key=range(a, min(a + CHUNK, total)))
                n += len(data)
    elif name == "extract":
        ds = extract_traces(movie, rois=rois, register=False, chunk=CHUNK)
        n = ds.sizes["time"]
    elif name == "register":
        with load_movie(movie) as mv:
            ref_fft = np.fft.fft2(make_reference(mv))
            n = 0
            for _, data in mv.iter_chunks(CHUNK):
                register_frames(data, np.empty(0), reference_fft=ref_fft)
                n += len(data)
    elif name == "extract+register":
        ds = extract_traces(movie, rois=rois, register=True, chunk=CHUNK)
        n = ds.sizes["time"]
    else:
        raise ValueError(name)
    dt = time.perf_counter() - t0
    return {"frames": n, "seconds": dt, "fps": n / dt, "peak_mb": _peak_mb()}


def make_movie(directory: Path, n_frames: int) -> tuple[Path, Path]:
    from cainfer.forward import Stimulus, pumps_model
    from cainfer.synthetic import simulate_movie

    movie = directory / "bench.tif"
    rois = directory / "bench_rois.tif"
    expected = n_frames * 512 * 512 * 2
    if movie.exists() and rois.exists() and movie.stat().st_size >= expected:
        return movie, rois
    duration = n_frames / 30.0
    events = np.arange(2.0, duration - 1.0, 3.0)
    t0 = time.perf_counter()
    simulate_movie(
        movie,
        pumps_model(),
        stimulus=Stimulus(events=events),
        n_cells=60,
        shape=(512, 512),
        n_frames=n_frames,
        cell_radius=6.0,
        chunk=32,
        seed=1,
    )
    print(
        f"wrote {movie} ({movie.stat().st_size / 2**30:.2f} GiB) in "
        f"{time.perf_counter() - t0:.0f} s"
    )
    return movie, rois


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default="/tmp/cainfer-bench")
    ap.add_argument("--frames", type=int, default=4100, help="≥ 4096 for a 2 GB movie")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, Path(args.paths[0]), Path(args.paths[1]))))
        return
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    movie, rois = make_movie(d, args.frames)
    results = {}
    for name in ("raw", "extract", "register", "extract+register"):
        out = subprocess.run(
            [sys.executable, __file__, "--stage", name, str(movie), str(rois)],
            check=True,
            capture_output=True,
            text=True,
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    size = movie.stat().st_size / 2**30
    print(f"movie: {movie} ({size:.2f} GiB, {results['raw']['frames']} frames of 512x512 uint16)")
    print(f"{'stage':22s} {'frames/s':>10s} {'seconds':>9s} {'peak RSS MB':>12s}")
    for name, r in results.items():
        print(f"{name:22s} {r['fps']:10.0f} {r['seconds']:9.1f} {r['peak_mb']:12.0f}")
    ratio = results["extract"]["fps"] / results["raw"]["fps"]
    print(f"extraction / raw read throughput: {ratio:.2f} (target ≥ 0.5)")
    print(f"peak RSS of extraction: {results['extract']['peak_mb']:.0f} MB (target < 1024 MB)")


if __name__ == "__main__":
    main()
