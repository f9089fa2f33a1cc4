"""Forward-model speed: cainfer's compiled solver against scipy's solve_ivp.

For each preset, simulates 1800 frames at 30 frames/s with 10 stimuli (six
single events and two doublets), and prints the median wall time of
``CellModel.simulate``, of ``solve_ivp`` on the same problem (LSODA at
rtol 1e-6 and at rtol 1e-10, through ``cainfer.testing.reference_simulate``),
their ratios, and the largest ΔF/F difference. All figures come from one run
in one process.

Run: ``python benchmarks/forward.py``
"""

from __future__ import annotations

import time

import numpy as np

from cainfer.forward import Stimulus, preset
from cainfer.testing import reference_simulate

FRAMES = np.arange(1800) / 30.0
STIM = Stimulus(
    events=[3.0, 8.0, 13.0, 13.05, 20.0, 27.0, 34.0, 34.05, 42.0, 50.0],
)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    print(
        f"{'preset':20s} {'substeps':>8s} {'cainfer ms':>11s} {'ivp1e-6 ms':>11s} "
        f"{'ratio':>7s} {'ivp1e-10 ms':>12s} {'ratio':>7s} {'max|ΔdF/F|':>11s}"
    )
    for name in ("single_compartment", "pumps", "er"):
        model = preset(name, "OGB-1")
        params = {"influx_amplitude": 20.0}
        ds = model.simulate(params, FRAMES, STIM)  # compile outside the timing
        t_ci = _median_time(lambda m=model, p=params: m.simulate(p, FRAMES, STIM), 50)
        t_lo = _median_time(
            lambda m=model, p=params: reference_simulate(m, p, FRAMES, STIM, rtol=1e-6, atol=1e-9),
            3,
        )
        t_hi = _median_time(lambda m=model, p=params: reference_simulate(m, p, FRAMES, STIM), 3)
        ref = reference_simulate(model, params, FRAMES, STIM)
        err = float(np.abs(ds.dff.values - ref["dff"]).max())
        print(
            f"{name:20s} {ds.attrs['substeps']:8d} {1e3 * t_ci:11.2f} {1e3 * t_lo:11.1f} "
            f"{t_lo / t_ci:7.0f}x {1e3 * t_hi:12.1f} {t_hi / t_ci:7.0f}x {err:11.1e}"
        )


if __name__ == "__main__":
    main()
