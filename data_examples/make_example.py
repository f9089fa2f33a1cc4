"""Regenerate the bundled example recordings.

Run from the repository root::

    python data_examples/make_example.py            # writes into data_examples/
    python data_examples/make_example.py OUT_DIR    # or elsewhere

It writes ``example.tif`` (80x80 px, 900 frames at 30 frames/s, uint16,
ImageJ TIFF), ``example_rois.tif`` (label image of the 8 cells),
``example_stimulus.csv`` (event times, s) and ``example_truth.nc`` (the true
traces, masks, shifts and model parameters of every cell); and the same four
files ``er_example*`` for 4 cells with an ER (48x48 px, 600 frames at 20
frames/s, trains of 5 events at 20 Hz), and ``fura_example*``: a two-channel
Fura-2 recording (340/380 nm excitation as channels 0/1, ImageJ ``TCYX``) of
3 cells with the ``pumps`` preset (48x48 px, 450 frames at 20 frames/s),
whose truth also records the setup's calibration (R_min 0.4, R_max 7.5,
β 9: typical of a Fura-2 setup, chosen for the example).

The cells follow the ``pumps`` preset (PMCA + NCX + leak + event influx)
seen through OGB-1; the stimulus is single events and doublets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cainfer.forward import Stimulus, er_model, get_ratiometric, pumps_model
from cainfer.synthetic import MoviePaths, simulate_movie

SEED = 20261124
EVENTS = np.array([2.0, 5.0, 5.05, 9.0, 12.0, 12.05, 16.0, 19.0, 19.05, 19.10, 24.0])


def make(out_dir: Path, *, seed: int = SEED, noise: bool = True) -> MoviePaths:
    """The bundled example (another ``seed``: another recording of the same setup)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return simulate_movie(
        out_dir / "example.tif",
        pumps_model("OGB-1"),
        stimulus=Stimulus(events=EVENTS),
        params={"influx_amplitude": 15.0},
        n_cells=8,
        shape=(80, 80),
        n_frames=900,
        frame_rate=30.0,
        seed=seed,
        noise=noise,
    )


ER_SEED = 20261125
# trains of 5 events at 20 Hz: enough calcium to load the ER and trigger release
ER_ONSETS = np.array([2.0, 10.0, 18.0])


def make_er(out_dir: Path, *, seed: int = ER_SEED, noise: bool = True) -> MoviePaths:
    """A small recording of cells with an ER (the ``er`` preset, OGB-1)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return simulate_movie(
        out_dir / "er_example.tif",
        er_model("OGB-1"),
        stimulus=Stimulus.train(ER_ONSETS, n=5, interval=0.05),
        params={"influx_amplitude": 12.0},
        n_cells=4,
        shape=(48, 48),
        n_frames=600,
        frame_rate=20.0,
        seed=seed,
        noise=noise,
    )


FURA_SEED = 20261201
FURA_EVENTS = np.array([2.0, 5.0, 5.05, 8.0, 11.0, 11.05, 11.1, 14.0, 17.0, 17.05, 20.0])
FURA_CALIBRATION = {"r_min": 0.4, "r_max": 7.5, "beta": 9.0}


def make_fura(out_dir: Path) -> MoviePaths:
    """A two-channel Fura-2 recording (the ``pumps`` preset, the 340-nm channel's indicator)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dye = get_ratiometric("Fura-2")
    cal = dye.calibration(**FURA_CALIBRATION, source="example setup")
    return simulate_movie(
        out_dir / "fura_example.tif",
        pumps_model(dye.indicator(cal, channel=0)),
        stimulus=Stimulus(events=FURA_EVENTS),
        params={"influx_amplitude": 25.0, "c_rest": 0.08},
        n_cells=3,
        shape=(48, 48),
        n_frames=450,
        frame_rate=20.0,
        brightness=800.0,
        motion_sd=0.1,
        motion_max=0.5,
        seed=FURA_SEED,
        calibration=cal,
    )


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for paths in (make(target), make_er(target), make_fura(target)):
        for p in vars(paths).values():
            print(p)
