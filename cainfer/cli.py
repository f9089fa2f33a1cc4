"""Command-line interface: ``cainfer simulate``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


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


def _simulate(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cainfer.forward import Stimulus, preset

    model = preset(args.preset, args.indicator)
    if args.duration <= 0 or args.frame_rate <= 0:
        raise ValueError("--duration and --frame-rate must be > 0")
    time = np.arange(round(args.duration * args.frame_rate)) / args.frame_rate
    stim = Stimulus.from_csv(args.stimulus) if args.stimulus else Stimulus()
    ds = model.simulate(_parse_params(args.param), time, stim)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nc = out / "simulation.nc"
    tmp = out / "simulation.nc.tmp"
    ds.to_netcdf(tmp, engine="h5netcdf")
    os.replace(tmp, nc)

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
    tmp_png = out / "simulation.tmp.png"
    fig.savefig(tmp_png, dpi=120)
    plt.close(fig)
    os.replace(tmp_png, png)
    print(f"wrote {nc}")
    print(f"wrote {png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cainfer`` command."""
    from cainfer.forward import PRESETS, indicator_names

    ap = argparse.ArgumentParser(prog="cainfer", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="simulate a preset cell model to NetCDF and PNG")
    sim.add_argument("--preset", choices=sorted(PRESETS), default="pumps")
    sim.add_argument("--indicator", default="OGB-1", help=f"one of {', '.join(indicator_names())}")
    sim.add_argument("--stimulus", help="CSV of event times (column time_s, optional weight)")
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
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, OSError) as e:
        print(f"cainfer {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
