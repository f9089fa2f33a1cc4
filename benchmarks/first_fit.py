"""The first fit on a fresh machine: how long compiling takes with every cache empty.

A user's first :func:`cainfer.fit` of a preset compiles the model's solver
and its adjoint (numba, cached under ``CAINFER_CACHE_DIR``) and the log
density (PyTensor, cached under its ``base_compiledir``). Each preset is
fitted here in a new Python process whose caches point to empty temporary
directories (what a fresh machine sees), then in a second new process with
those caches filled (what the user's next session sees), then a second time
in that same process (a model already compiled in the process).

The data are a 300-frame ΔF/F trace at 30 frames/s (three events, noise sd
0.05) simulated from the preset in this process beforehand, so that the
timed processes compile only what a fit compiles. Fits: the preset's
default free parameters and observation, 2 chains × (100 tune + 100 draws),
nutpie on numba.

Printed per preset and run: the fit's wall time (s), its sampling time,
the rest (wall − sampling: compiling, the choice of solver steps, the
search for the chains' starting modes, the predictive), of which
``settings["compile_seconds"]`` is the log density's compilation and the
mode search, and the process's import time of cainfer.

Target (issue "indicators as they are", item 5): the first fit of a preset
on a fresh machine compiles in ≤ 15 s.

Run: ``python benchmarks/first_fit.py [--presets single_compartment pumps er]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PRESETS = ("single_compartment", "pumps", "er")
FRAMES, RATE, EVENTS, NOISE = 300, 30.0, (1.0, 4.0, 7.0), 0.05

# what the timed process runs: argv[1] the data (.npz), argv[2] the preset's name
CHILD = r"""
import json, sys, time, warnings
t0 = time.perf_counter()
import numpy as np
import cainfer
imported = time.perf_counter() - t0
d = np.load(sys.argv[1])
model = {"single_compartment": cainfer.single_compartment, "pumps": cainfer.pumps_model,
         "er": cainfer.er_model}[sys.argv[2]]("OGB-1")
out = []
for _ in range(2):
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cainfer.fit(d["y"], model, stimulus=cainfer.Stimulus(events=d["events"]),
                          time=d["time"], draws=100, tune=100, chains=2, seed=1,
                          progress=False)
    s = res.settings
    out.append([time.perf_counter() - t1, float(s["compile_seconds"]),
                float(s["sampling_seconds"])])
print("RESULT " + json.dumps({"import": imported, "fits": out}))
"""


def _data(preset: str, folder: Path) -> Path:
    """A simulated trace of ``preset`` with OGB-1, saved for the timed processes."""
    import cainfer

    model = {"single_compartment": cainfer.single_compartment, "pumps": cainfer.pumps_model,
             "er": cainfer.er_model}[preset]("OGB-1")  # fmt: skip
    time = np.arange(FRAMES) / RATE
    stim = cainfer.Stimulus(events=list(EVENTS))
    dff = model.simulate(None, time, stim).dff.values
    y = dff + np.random.default_rng(0).normal(0.0, NOISE, FRAMES)
    path = folder / f"{preset}.npz"
    np.savez(path, y=y, time=time, events=np.array(EVENTS))
    return path


def _run(data: Path, preset: str, caches: Path) -> dict:
    """One new process fitting ``preset`` twice with its caches under ``caches``."""
    env = dict(os.environ)
    env["CAINFER_CACHE_DIR"] = str(caches / "cainfer")
    env["PYTENSOR_FLAGS"] = f"base_compiledir={caches / 'pytensor'}"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(data), preset],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"{preset}: the timed process failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["single_compartment"], choices=PRESETS)
    args = ap.parse_args()
    print(f"{'preset':<20} {'run':<34} {'wall s':>7} {'sampling s':>11} {'rest s':>7} "
          f"{'of which compile_seconds':>25}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cainfer-first-fit-") as tmp:
        root = Path(tmp)
        for preset in args.presets:
            data = _data(preset, root)
            caches = root / f"caches-{preset}"  # empty: nothing compiled for this run yet
            cold, warm = _run(data, preset, caches), _run(data, preset, caches)
            rows = [
                ("new process, empty caches", cold["fits"][0]),
                ("new process, caches filled", warm["fits"][0]),
                ("same process, second fit", warm["fits"][1]),
            ]
            for what, (wall, comp, samp) in rows:
                print(f"{preset:<20} {what:<34} {wall:>7.1f} {samp:>11.1f} {wall - samp:>7.1f} "
                      f"{comp:>25.1f}")  # fmt: skip
            print(f"{preset:<20} {'import cainfer s (empty / filled)':<34} "
                  f"{cold['import']:>7.1f} {warm['import']:>11.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
