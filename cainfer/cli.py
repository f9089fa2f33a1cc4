"""Command-line interface: ``cainfer simulate | extract | fit | run | report | demo``."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cainfer._checks import repeated
from cainfer._files import atomic_path


def _parse_params(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for it in items:
        name, sep, val = it.partition("=")
        if not sep:
            raise ValueError(f"--param {it!r}: expected NAME=VALUE")
        try:
            out[name.strip()] = float(val)
        except ValueError:
            raise ValueError(f"--param {it!r}: {val!r} is not a number") from None
    return out


def _cell_model(args: argparse.Namespace) -> Any:
    """The preset model of the ``--preset`` and indicator options (kinetics, rates)."""
    from cainfer.forward import get_indicator, preset

    ind = get_indicator(args.indicator)
    if args.k_off is not None:
        if not (math.isfinite(args.k_off) and args.k_off > 0):
            raise ValueError(f"--k-off = {args.k_off!r} must be a positive rate (1/s)")
        ind = ind.with_(
            k_off=args.k_off, k_on=args.k_off / ind.kd**ind.hill, kinetics_source="--k-off"
        )
    if args.indicator_kinetics == "kinetic" and ind.k_off is None:
        raise ValueError(
            f"--indicator-kinetics kinetic needs --k-off (1/s): the catalogue has no binding "
            f"rates for {ind.name}"
        )
    if args.switch_ratio is not None:
        if not (math.isfinite(args.switch_ratio) and args.switch_ratio >= 0):
            raise ValueError(f"--switch-ratio = {args.switch_ratio!r} must be a number ≥ 0")
        if args.indicator_kinetics != "kinetic":
            raise ValueError("--switch-ratio needs --indicator-kinetics kinetic")
        ind = ind.with_(switch_ratio=args.switch_ratio)
    return preset(args.preset, ind, indicator_kinetics=args.indicator_kinetics)


def _kinetics_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--indicator-kinetics",
        choices=["equilibrium", "kinetic"],
        default="equilibrium",
        help="indicator binding in equilibrium with Ca (default) or with its kinetics",
    )
    p.add_argument("--k-off", type=float, help="indicator unbinding rate (1/s) for kinetic binding")
    p.add_argument(
        "--switch-ratio",
        type=float,
        help="kinetic binding in two steps: rapid binding to a dim state, then a switch to the "
        "bright one at k_off/φ (φ ≥ 0; 0, the default: one step)",
    )


# a simulation's length cap (frames): 10 hours at 100 frames/s, a few hundred MB of output
_MAX_SIM_FRAMES = 3_600_000


def _simulate(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cainfer.forward import Stimulus

    for flag, v in (("--duration", args.duration), ("--frame-rate", args.frame_rate)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{flag} = {v!r} must be a finite number > 0")
    n_frames = args.duration * args.frame_rate
    if n_frames > _MAX_SIM_FRAMES:
        raise ValueError(
            f"--duration {args.duration:g} s at --frame-rate {args.frame_rate:g} frames/s is "
            f"{n_frames:.3g} frames; at most {_MAX_SIM_FRAMES:,} are simulated"
        )
    if n_frames < 2:
        raise ValueError(f"--duration × --frame-rate gives {n_frames:g} frames; need ≥ 2")
    model = _cell_model(args)
    time = np.arange(round(n_frames)) / args.frame_rate
    stim = Stimulus.from_csv(args.stimulus) if args.stimulus else Stimulus()
    ds = model.simulate(_parse_params(args.param), time, stim)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nc = out / "simulation.nc"
    from cainfer.pipeline.run import atomic_netcdf

    atomic_netcdf(ds, nc)

    n_panels = 3 if model.has_er else 2
    fig, axes = plt.subplots(n_panels, 1, sharex=True, figsize=(8, 2.2 * n_panels))
    axes[0].plot(ds.time, ds.dff, lw=1)
    axes[0].set_ylabel("ΔF/F")
    axes[0].set_title(f"{model.name} model, {model.indicator.name}")
    axes[1].plot(ds.time, ds.ca, lw=1, color="C1")
    axes[1].set_ylabel("free Ca (µM)")
    if model.has_er:
        axes[2].plot(ds.time, ds.ca_er, lw=1, color="C2")
        axes[2].set_ylabel("ER Ca (µM)")
    for ev in stim.events:
        axes[0].axvline(ev, color="0.8", lw=0.5, zorder=0)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    png = out / "simulation.png"
    with atomic_path(png) as tmp_png:
        fig.savefig(tmp_png, dpi=120)
    plt.close(fig)
    print(f"wrote {nc}")
    print(f"wrote {png}")
    return 0


@contextlib.contextmanager
def _frame_bar(label: str, disable: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar fed as ``tick(done, total)``; None when disabled."""
    if disable:
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=False) as prog:
        task = prog.add_task(label, total=None)

        def tick(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield tick


def _check_extract_flags(args: argparse.Namespace) -> None:
    """The extraction flags, checked before the movie is read (as a config's are)."""
    from cainfer.extract.options import option_problem

    for key in ("neuropil", "dark_level", "baseline_window", "frame_rate", "channel", "max_shift"):
        value = getattr(args, key)
        if (problem := option_problem(key, value)) is not None:
            raise ValueError(f"--{key.replace('_', '-')} = {value!r} {problem}")
    if args.rois != "auto":
        rois = Path(args.rois)
        if not rois.is_file():
            raise ValueError(f"--rois {rois}: no such ROI file")
        if rois.suffix.lower() not in (".npy", ".tif", ".tiff", ".roi", ".zip"):
            raise ValueError(
                f"--rois {rois}: unknown ROI format {rois.suffix!r}; use .npy, .tif/.tiff "
                '(label image), .roi or .zip (ImageJ), or "auto"'
            )


def _extract(args: argparse.Namespace) -> int:
    from cainfer.extract import extract_traces
    from cainfer.io import load_movie
    from cainfer.pipeline.run import atomic_netcdf

    out = Path(args.out)
    if out.suffix != ".nc":
        raise ValueError(f"--out {out}: give a .nc file")
    if out.is_dir():
        raise ValueError(f"--out {out}: is a directory; give a .nc file")
    _check_extract_flags(args)
    paths = args.movie[0] if len(args.movie) == 1 else args.movie
    with load_movie(paths, frame_rate=args.frame_rate, channel=args.channel) as movie:
        print(f"{movie.shape[0]} frames of {movie.shape[1]}x{movie.shape[2]} px at "
              f"{movie.frame_rate:g} frames/s", file=sys.stderr)  # fmt: skip
        with _frame_bar("extraction", args.no_progress) as tick:
            ds = extract_traces(
                movie, rois=args.rois, register=not args.no_register, max_shift=args.max_shift,
                neuropil=args.neuropil or None, dark_level=args.dark_level, baseline=args.baseline,
                baseline_window=args.baseline_window, progress=tick,
            )  # fmt: skip
    atomic_netcdf(ds, out)
    print(f"wrote {out} ({ds.sizes['roi']} ROIs)")
    return 0


def _fit(args: argparse.Namespace) -> int:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from cainfer.forward import Stimulus
    from cainfer.infer import fit
    from cainfer.pipeline.run import file_label, fit_rows, write_summary

    src = Path(args.traces)
    traces = _read_traces(src, args.format, args.series)
    stim = Stimulus.from_csv(args.stimulus)
    model = _cell_model(args)
    labels = [x.item() for x in traces["roi"].values]
    try:
        rois = [type(labels[0])(r) for r in args.roi] if args.roi else labels
    except ValueError:
        raise ValueError(f"--roi {args.roi}: not in {src} (ROIs: {labels})") from None
    missing = [r for r in rois if r not in labels]
    if missing:
        raise ValueError(f"--roi {missing}: not in {src} (ROIs: {labels})")
    dup = repeated(rois)
    if dup:
        raise ValueError(f"--roi {', '.join(dup)} given more than once")
    for flag, v, low in (("--draws", args.draws, 1), ("--tune", args.tune, 0),
                         ("--chains", args.chains, 1), ("--seed", args.seed, 0)):  # fmt: skip
        if v < low:
            raise ValueError(f"{flag} = {v} must be ≥ {low}")
    free = args.free.split(",") if args.free else None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; give a directory")
    names = {roi: file_label(roi) for roi in rois}
    rows = []
    from rich.progress import track

    for i, roi in enumerate(track(rois, description="fits", disable=args.no_progress)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit(
                traces, model, stimulus=stim, roi=roi, free=free, fixed=_parse_params(args.fixed),
                observation=args.observation, draws=args.draws, tune=args.tune,
                chains=args.chains, seed=args.seed + i,
            )  # fmt: skip
        res.save(out / f"roi_{names[roi]}.nc")
        res.plot_trace(path=out / f"roi_{names[roi]}.png")
        rows += fit_rows(res, src.stem, roi)
        if not res.ok:
            print(f"ROI {roi}: " + "; ".join(res.problems), file=sys.stderr)
    write_summary(out / "summary.csv", rows)
    print(f"wrote {len(rois)} posteriors and {out / 'summary.csv'}")
    return 0


def _read_traces(src: Path, fmt: str = "auto", series: str | None = None) -> Any:
    """The traces a fit reads from ``src``: traces NetCDF, Suite2p folder, CaImAn or NWB file."""
    from cainfer.extract import load_traces

    options = {} if series is None else {"series": series}
    ds = load_traces(src, format=fmt, **options)  # type: ignore[arg-type]
    keep = [v for v in ("F", "F_neu", "F0", "dff") if v in ds]
    return ds[keep]


def _run(args: argparse.Namespace) -> int:
    from cainfer.pipeline import run_pipeline

    out = run_pipeline(
        args.config, output=args.out, scheduler=args.scheduler, workers=args.workers,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"report: {out / 'report.html'}")
    return 0


def _nwb(args: argparse.Namespace) -> int:
    from cainfer.pipeline import export_nwb

    given = {"subject_id": args.subject_id, "species": args.species, "sex": args.sex,
             "age": args.age}  # fmt: skip
    subject = {k: v for k, v in given.items() if v is not None}
    for path in export_nwb(args.run_dir, args.out, subject=subject):
        print(f"wrote {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from cainfer.pipeline import write_report

    print(f"report: {write_report(args.run_dir)}")
    return 0


def demo_config() -> Path:
    """The bundled demo config (``pipelines/demo.toml`` of a source checkout)."""
    path = Path(__file__).resolve().parents[1] / "pipelines" / "demo.toml"
    if not path.is_file():
        raise ValueError(
            f"{path}: the demo needs the source checkout (pipelines/ and data_examples/); "
            "install with pip install -e from a clone"
        )
    return path


def _demo(args: argparse.Namespace) -> int:
    args.config, args.scheduler = demo_config(), None
    return _run(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cainfer`` command."""
    from cainfer.forward import PRESETS, indicator_names

    ap = argparse.ArgumentParser(prog="cainfer", description=__doc__)
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = ap.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="simulate a preset cell model to NetCDF and PNG")
    sim.add_argument("--preset", choices=sorted(PRESETS), default="pumps")
    sim.add_argument("--indicator", default="OGB-1", help=f"one of {', '.join(indicator_names())}")
    _kinetics_arguments(sim)
    sim.add_argument("--stimulus", help="stimulus CSV: time_s, weight (events) or waveform (knots)")
    sim.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    sim.add_argument("--frame-rate", type=float, default=30.0, help="frames/s (default 30)")
    sim.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a model parameter (repeatable)",
    )
    sim.add_argument("--out", default="out", help="output directory (default ./out)")
    sim.set_defaults(func=_simulate)

    ext = sub.add_parser("extract", help="extract ΔF/F traces of ROIs from a TIFF recording")
    ext.add_argument("movie", nargs="+", help="TIFF file(s) or a folder of TIFFs (one recording)")
    ext.add_argument("--rois", default="auto", help='ROI file, or "auto" to detect (default)')
    ext.add_argument("--frame-rate", type=float, help="frames/s (default: from the metadata)")
    ext.add_argument("--channel", type=int, help="channel of multi-channel files (0-based)")
    ext.add_argument("--no-register", action="store_true", help="skip motion correction")
    ext.add_argument("--max-shift", type=float, help="largest registration shift searched "
                     "(pixels; default a tenth of the frame's larger side)")  # fmt: skip
    ext.add_argument("--neuropil", type=float, default=0.7, help="ratio r (0: none; 0.7)")
    ext.add_argument(
        "--dark-level", type=float, default=0.0, help="counts with no light (camera offset; 0)"
    )
    ext.add_argument("--baseline", default="percentile", choices=["percentile", "maximin",
                     "constant"], help="baseline method (default percentile)")  # fmt: skip
    ext.add_argument("--baseline-window", type=float, default=60.0, help="s (default 60)")
    ext.add_argument("--out", default="traces.nc", help="output NetCDF (default traces.nc)")
    ext.add_argument("--no-progress", action="store_true", help="no progress bar")
    ext.set_defaults(func=_extract)

    fit = sub.add_parser("fit", help="fit a cell model to the ROIs of a traces file")
    fit.add_argument(
        "traces",
        help="traces NetCDF from cainfer extract, a Suite2p plane folder, a CaImAn HDF5 file or "
        "an NWB file",
    )
    fit.add_argument(
        "--format", default="auto", choices=["auto", "netcdf", "suite2p", "caiman", "nwb"],
        help="what the traces are (default: told apart by their content)",
    )  # fmt: skip
    fit.add_argument("--series", help='NWB: the RoiResponseSeries to fit, by name or '
                     '"container/name" (when the file holds several raw series)')  # fmt: skip
    fit.add_argument("--stimulus", required=True, help="stimulus CSV: time_s, weight or waveform")
    fit.add_argument("--preset", choices=sorted(PRESETS), default="pumps")
    fit.add_argument("--indicator", default="OGB-1", help=f"one of {', '.join(indicator_names())}")
    _kinetics_arguments(fit)
    fit.add_argument("--free", help="comma-separated free parameters (default: the usual set)")
    fit.add_argument("--fixed", action="append", default=[], metavar="NAME=VALUE",
                     help="hold a parameter fixed (repeatable)")  # fmt: skip
    fit.add_argument("--roi", action="append", default=[], help="ROI to fit (repeatable; all)")
    fit.add_argument(
        "--observation",
        default="auto",
        choices=["auto", "fluorescence", "dff", "dff_exact"],
        help="what the likelihood sees (default: raw F when the file has it)",
    )
    fit.add_argument("--draws", type=int, default=1000)
    fit.add_argument("--tune", type=int, default=1000)
    fit.add_argument("--chains", type=int, default=4)
    fit.add_argument("--seed", type=int, default=0, help="seed of the first ROI (+1 per ROI)")
    fit.add_argument("--out", default="fits", help="output directory (default ./fits)")
    fit.add_argument("--no-progress", action="store_true", help="no progress bar")
    fit.set_defaults(func=_fit)

    run = sub.add_parser("run", help="run a pipeline config (resumes an interrupted run)")
    run.add_argument("config", help="pipeline config (TOML)")
    run.add_argument("--out", help="run directory (default: the config's run.output)")
    run.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler to run the fits on")
    run.set_defaults(func=_run)

    rep = sub.add_parser("report", help="(re)write report.html of a run directory")
    rep.add_argument("run_dir", help="run directory")
    rep.set_defaults(func=_report)

    nwb = sub.add_parser("nwb", help="write a run's recordings as NWB files (traces, stimulus, "
                         "posterior summaries)")  # fmt: skip
    nwb.add_argument("run_dir", help="run directory")
    nwb.add_argument("--out", help="output folder (default RUN_DIR/nwb)")
    nwb.add_argument("--subject-id", help="the imaged animal's identifier")
    nwb.add_argument("--species", help='its species, e.g. "Mus musculus"')
    nwb.add_argument("--sex", choices=["F", "M", "U", "O"], help="its sex (default U)")
    nwb.add_argument("--age", help='its age, an ISO 8601 duration such as "P90D"')
    nwb.set_defaults(func=_nwb)

    demo = sub.add_parser("demo", help="extraction and fits on the bundled example recording")
    demo.add_argument("--out", default="cainfer-demo", help="run directory (./cainfer-demo)")
    demo.set_defaults(func=_demo)
    for p in (run, demo):
        p.add_argument("--workers", type=int, help="local worker processes (default: the config's)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"cainfer {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        if args.debug:
            raise
        print(f"cainfer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a case no check foresaw: one line, not a traceback
        if args.debug:
            raise
        print(
            f"cainfer {args.command}: error: {type(e).__name__}: {e} (an unexpected failure; "
            "--debug shows where)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
