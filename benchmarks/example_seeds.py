"""The bundled examples' setups, drawn again: how often the truths fall inside.

A bundled example is one recording, so whether each of its fitted ROIs holds
its true parameters inside their 94% HDIs is partly the luck of its noise:
for calibrated intervals, all ``n`` truths are inside with probability
``0.94^n`` (0.61 for the demo's 8). This script simulates the example's
setup again with other seeds (``data_examples/make_example.py``'s ``make``
or ``make_er`` with ``seed = SEED + k``), lays each movie out as the
repository does (``data_examples/`` beside a copy of ``pipelines/<name>.toml``)
and runs that config with :func:`cainfer.pipeline.run_pipeline` as shipped
(extraction, fits, 1 worker). Each fitted parameter that has a true value is
scored against it.

Printed per movie: truths inside their 94% HDIs, and each miss with
``z = (mean − truth)/sd``. Then per parameter and over all: the share of
truths inside (target 94 %, binomial sd ``√(0.94·0.06/n)``), the mean
``|z|`` (≈ 0.80 for calibrated near-normal posteriors), the mean ``z`` (a
bias; sd ``1/√n`` when there is none), and the share of movies with every
truth inside against ``0.94^n``.

Three more modes say where misses come from:

- ``--noise-free``: each movie is also simulated without shot and read noise
  (the same cells, neuropil and motion), extracted and fitted the same way;
  printed per fitted value: ``(mean_noise-free − truth)/sd_noisy``, what the
  extraction and the model do to the cell without noise, in units of the
  noisy fit's posterior sd.
- ``--redraw N``: the movie's noise is drawn again ``N`` times (Poisson shot
  noise on the noise-free movie's counts plus Gaussian read noise, the
  simulation's own offset and read noise) over the same cells, neuropil and
  motion; printed per fitted value: the spread (sd) of its posterior means
  over the redraws against its mean posterior sd (1 when the posterior sd
  is the noise's spread; ±``1/√(2(N − 1))``), and the mean's offset from
  the truth in posterior sds.
- ``--mirror``: each movie is also fitted with its noise turned over
  (``2·noise-free − recorded``, pixel by pixel: the same cells, neuropil and
  motion, each pixel's shot and read noise with the opposite sign; an
  antithetic pair). Extraction is linear in the movie, so a fit that
  answers its noise linearly moves by ``z`` one way and ``−z`` the other:
  printed per fitted value are ``z`` and ``z_mirror``, the noise's part
  ``(z − z_mirror)/2`` and what is left, ``(z + z_mirror)/2``, a bias the
  noise does not explain. Over all values: the sd of the noise's part (1
  when the posterior sd is the spread the noise gives the fitted value),
  the rms of the rest, and the 94% HDI coverage they predict together.

Run: ``python benchmarks/example_seeds.py [--example demo|er] [--seeds 1 2 ...]
[--noise-free | --redraw N | --mirror]`` (``--seeds 0`` is the bundled
recording itself).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import xarray as xr

from cainfer.infer.fit import _REUSABLE
from cainfer.pipeline import run_pipeline
from cainfer.pipeline.report import _truths
from cainfer.synthetic import camera_counts

ROOT = Path(__file__).resolve().parents[1]
HDI = 0.94


def _make_example():  # data_examples/ is not a package
    spec = importlib.util.spec_from_file_location(
        "make_example", ROOT / "data_examples" / "make_example.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def score(run: Path) -> list[tuple[str, str, float, float, float, float, float]]:
    """``(roi, parameter, truth, mean, sd, hdi_lb, hdi_ub)`` of every fitted value with a truth."""
    prov = json.loads((run / "provenance.json").read_text())
    with open(run / "summary.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    truths = _truths(run, prov, {r["recording"] for r in rows})
    out = []
    for r in rows:
        value = truths.get((r["recording"], r["roi"]), {}).get(r["parameter"])
        if value is None:
            continue
        out.append(
            (
                r["roi"],
                r["parameter"],
                float(value),
                float(r["mean"]),
                float(r["sd"]),
                float(r["hdi94_lb"]),
                float(r["hdi94_ub"]),
            )
        )
    return out


def run_movie(where: Path, config: Path) -> list:
    """Run ``config`` (copied beside ``where/data_examples``) and score its fits."""
    (where / "pipelines").mkdir(exist_ok=True)
    shutil.copy(config, where / "pipelines" / config.name)
    _REUSABLE.clear()  # each movie pays its own compile, as a new process would
    run = run_pipeline(
        where / "pipelines" / config.name, output=where / "run", workers=1, progress=False
    )
    scored = score(run)
    shutil.rmtree(where / "run")
    return scored


def _write_movie(out: Path, counts: np.ndarray, rate: float) -> None:
    """``counts`` (uint16, time × y × x) as an ImageJ TIFF at ``rate`` frames/s."""
    meta = {"axes": "TYX", "finterval": 1.0 / rate, "unit": "pixel"}
    tifffile.imwrite(out, counts, imagej=True, metadata=meta)


def redraw_noise(clean: Path, out: Path, truth: Path, seed: list[int]) -> None:
    """``out``: the noise-free movie ``clean`` with shot and read noise drawn afresh."""
    with xr.open_dataset(truth, engine="h5netcdf") as ds:
        offset, read_noise = float(ds.attrs["offset"]), float(ds.attrs["read_noise"])
        rate = float(ds.attrs["frame_rate"])
    photons = tifffile.imread(clean).astype(float) - offset
    counts = camera_counts(
        photons, np.random.default_rng(seed), offset=offset, read_noise=read_noise
    )
    _write_movie(out, counts, rate)


def mirror_noise(clean: Path, recorded: Path, out: Path, truth: Path) -> None:
    """``out``: the recording ``recorded`` with its noise turned over, ``2·clean − recorded``."""
    with xr.open_dataset(truth, engine="h5netcdf") as ds:
        rate = float(ds.attrs["frame_rate"])
    a = tifffile.imread(clean).astype(np.int64)
    b = tifffile.imread(recorded).astype(np.int64)
    _write_movie(out, np.clip(2 * a - b, 0, 65535).astype(np.uint16), rate)


def redraws(make, base: int, k: int, config: Path, tmp: Path, n: int) -> None:
    """``--redraw``: the spread of each fitted value over ``n`` draws of the noise alone."""
    where = tmp / f"seed{k}"
    clean = make(where / "clean", seed=base + k, noise=False)
    fits: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for j in range(n):
        data = where / "data_examples"
        shutil.copytree(  # the truth, ROIs and stimulus; the movie is drawn below
            where / "clean", data, ignore=shutil.ignore_patterns(clean.movie.name)
        )
        redraw_noise(clean.movie, data / clean.movie.name, clean.truth, [base + k, j])
        for roi, p, t, m, sd, _, _ in run_movie(where, config):
            fits.setdefault((roi, p), []).append((t, m, sd))
        shutil.rmtree(data)
    for (roi, p), rows in sorted(fits.items()):
        t = rows[0][0]
        means, sd = np.array([r[1] for r in rows]), float(np.mean([r[2] for r in rows]))
        print(
            f"seed {base + k} (+{k}) ROI {roi} {p:18s} spread/sd {means.std(ddof=1) / sd:.2f}"
            f"  (mean − truth)/sd {(means.mean() - t) / sd:+.2f}  over {len(rows)} redraws",
            flush=True,
        )
    shutil.rmtree(where)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", choices=("demo", "er"), default="demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--noise-free", action="store_true", help="fit each movie without noise too")
    mode.add_argument("--redraw", type=int, default=0, help="draw each movie's noise N times")
    mode.add_argument(
        "--mirror", action="store_true", help="fit each movie with its noise turned over too"
    )
    args = ap.parse_args()
    if any(k < 0 for k in args.seeds):
        ap.error("--seeds are offsets ≥ 0 from the example's own seed")
    if args.redraw == 1 or args.redraw < 0:
        ap.error("--redraw needs at least 2 draws of the noise")

    me = _make_example()
    make, base = (me.make, me.SEED) if args.example == "demo" else (me.make_er, me.ER_SEED)
    config = ROOT / "pipelines" / f"{args.example}.toml"
    results: dict[int, list] = {}
    pairs: list[tuple[float, float]] = []  # --mirror: (z, z of the turned-over noise)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cainfer-seeds-") as tmp:
        for k in args.seeds:
            if args.redraw:
                redraws(make, base, k, config, Path(tmp), args.redraw)
                continue
            where = Path(tmp) / f"seed{k}"
            make(where / "data_examples", seed=base + k)
            scored = run_movie(where, config)
            results[k] = scored
            inside = [lo <= t <= hi for _, _, t, _, _, lo, hi in scored]
            misses = "; ".join(
                f"ROI {roi} {p} {m:.5g} [{lo:.5g}, {hi:.5g}] truth {t:.5g} (z {(m - t) / sd:+.2f})"
                for (roi, p, t, m, sd, lo, hi), ok in zip(scored, inside, strict=True)
                if not ok
            )
            print(
                f"seed {base + k} (+{k}): {sum(inside)}/{len(inside)} inside"
                + (f"; {misses}" if misses else ""),
                flush=True,
            )
            if args.noise_free:
                make(where / "data_examples", seed=base + k, noise=False)
                clean = {(roi, p): m for roi, p, _, m, _, _, _ in run_movie(where, config)}
                offsets = "  ".join(
                    f"ROI {roi} {p} {(clean[(roi, p)] - t) / sd:+.2f}"
                    for roi, p, t, _, sd, _, _ in scored
                )
                print(f"    without noise, (mean − truth)/sd_noisy: {offsets}", flush=True)
            if args.mirror:
                paths = make(where / "clean", seed=base + k, noise=False)
                movie = where / "data_examples" / paths.movie.name
                kept = where / "recorded.tif"
                shutil.move(movie, kept)
                mirror_noise(paths.movie, kept, movie, paths.truth)
                turned = {
                    (roi, p): (m - t) / sd for roi, p, t, m, sd, _, _ in run_movie(where, config)
                }
                for roi, p, t, m, sd, _, _ in scored:
                    z, zm = (m - t) / sd, turned[(roi, p)]
                    pairs.append((z, zm))
                    print(
                        f"    ROI {roi} {p:18s} z {z:+.2f}  mirrored {zm:+.2f}  "
                        f"noise's part {(z - zm) / 2:+.2f}  rest {(z + zm) / 2:+.2f}",
                        flush=True,
                    )
            shutil.rmtree(where)
    if args.redraw:
        return
    wall = time.perf_counter() - t0

    flat = [(p, t, m, sd, lo, hi) for rows in results.values() for _, p, t, m, sd, lo, hi in rows]
    if not flat:
        sys.exit("no fitted parameter had a true value")
    print(f"\n{args.example}: {len(results)} movies, {wall:.0f} s")
    head = ("parameter", "n", "94% HDI", "± binomial", "mean |z|", "mean z")
    print("{:20s} {:>4s} {:>8s} {:>11s} {:>9s} {:>7s}".format(*head))
    for name in [*sorted({p for p, *_ in flat}), "all"]:
        sel = [r for r in flat if name in ("all", r[0])]
        z = np.array([(m - t) / sd for _, t, m, sd, _, _ in sel])
        inside = np.mean([lo <= t <= hi for _, t, _, _, lo, hi in sel])
        n = len(sel)
        print(
            f"{name:20s} {n:4d} {100 * inside:7.1f}% {100 * np.sqrt(HDI * (1 - HDI) / n):10.1f}% "
            f"{np.mean(np.abs(z)):9.2f} {np.mean(z):+7.2f}"
        )
    per_movie = [len(rows) for rows in results.values()]
    all_in = sum(all(lo <= t <= hi for *_, t, _, _, lo, hi in rows) for rows in results.values())
    expected = np.mean([HDI**n for n in per_movie])
    print(
        f"movies with every truth inside: {all_in}/{len(results)} "
        f"(calibrated 94% HDIs: {100 * expected:.0f} % of movies)"
    )
    if pairs:
        z, zm = np.array(pairs).T
        noise, rest = (z - zm) / 2, (z + zm) / 2
        # with noise's part ~ N(0, s²) and the rest fixed: P(|rest + noise| < 1.88)
        from scipy.stats import norm

        s = float(np.std(noise, ddof=1))
        q = norm.ppf(0.5 + HDI / 2)
        cover = np.mean(norm.cdf((q - rest) / s) - norm.cdf((-q - rest) / s))
        print(
            f"mirrored pairs: {len(pairs)}; sd of the noise's part {s:.2f} "
            f"(± {s / np.sqrt(2 * (len(pairs) - 1)):.2f}; 1 when calibrated), "
            f"rms of the rest {np.sqrt(np.mean(rest**2)):.2f}, mean of the rest "
            f"{np.mean(rest):+.2f}; predicted ±{q:.2f}-sd coverage {100 * cover:.1f}%"
        )


if __name__ == "__main__":
    main()
