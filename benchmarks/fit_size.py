"""Size of a saved fit on disk: compact (the default) against every group, and its growth per frame.

``benchmarks/long_recording.py``'s raw ROI (B1's cell, bleaching, neuropil,
shot noise) is recorded for 30 s and for 3 min at 30 frames/s (900 and 5400
frames) and fitted with :func:`cainfer.fit`'s defaults and the demo's
sampler settings (2 chains × (500 tune + 1000 draws)). Each fit is saved
compact (:meth:`Fit.save`: posterior, sample statistics, prior, recording,
predictive bands) and with every group (``compact=False``). Printed: the two
file sizes, the growth per frame between the two recordings, and the time
:meth:`Fit.expand` takes to recompute the predictive and log-likelihood
draws from the compact file, against the fit's sampling time.

Targets (issue "working at scale"): ≤ 2 MB per demo-sized fit, ≤ 100 bytes
per frame of growth.

Run: ``python benchmarks/fit_size.py [--draws 1000]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from inference import FREE
from long_recording import cell, recording

from cainfer.infer import fit, load_fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()
    model, _ = cell("equilibrium")
    tmp = Path(tempfile.mkdtemp(prefix="cainfer-size-"))
    rows = []
    for minutes in (0.5, 3.0):
        ds, stim, _, _ = recording(minutes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit(ds[["F", "F_neu", "F0"]], model, stimulus=stim, free=FREE,
                      draws=args.draws, tune=500, chains=2, seed=1)  # fmt: skip
        compact, full = tmp / f"c{minutes}.nc", tmp / f"f{minutes}.nc"
        res.save(full, compact=False)
        res.save(compact)
        loaded = load_fit(compact)
        t0 = time.perf_counter()
        loaded.expand()
        expand_s = time.perf_counter() - t0
        rows.append((ds.sizes["time"], compact.stat().st_size, full.stat().st_size, expand_s,
                     float(res.settings["sampling_seconds"])))  # fmt: skip
    head = ("frames", "compact MB", "all groups MB", "expand s", "sampling s")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (7, 11, 14, 9, 11), strict=True)))
    for n, c, f, e, s in rows:
        print(f"{n:>7} {c / 1e6:>11.3f} {f / 1e6:>14.1f} {e:>9.2f} {s:>11.1f}")
    (n1, c1, f1, *_), (n2, c2, f2, *_) = rows
    print(f"growth per frame: compact {(c2 - c1) / (n2 - n1):.1f} bytes, all groups "
          f"{(f2 - f1) / (n2 - n1):.0f} bytes")  # fmt: skip


if __name__ == "__main__":
    main()
