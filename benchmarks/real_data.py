"""Real recordings with known spike times: held-out prediction and same-cell agreement.

The recordings are two-photon ΔF/F traces of single neurons with juxtacellular
electrophysiology (every action potential time known), from the ground-truth
collection of Rupprecht et al. (2021), Nat Neurosci 24:1324-1337,
doi:10.1038/s41593-021-00895-5. They are not part of cainfer; the script reads
them from ``--data`` (default ``../shared/data/ground_truth`` beside the
repository) and skips with a message when the folder is absent.

For every cell the recording is split in two parts: its first two sweeps, or
the two halves of its only sweep. Each part is fitted on its own with
:func:`cainfer.fit`'s defaults for a plain ΔF/F trace (free scale and offset,
smooth drift, AR(1) residuals) and the ``single_compartment`` preset of the
cell's indicator (free κ_S, γ and the influx per spike; equilibrium binding).
Recordings faster than ``--rate`` are averaged in groups of frames down to it.

With ``--binding kinetic`` the indicator binds calcium at a finite rate
(``indicator_kinetics="kinetic"``) and its unbinding rate k_off is free too,
with a lognormal prior of median 2.2/s and sd 1.0 in log: GCaMP6s and GCaMP6f
release calcium at 1-5/s at 20 °C (Helassa et al. 2016, Sci Rep 6:38276,
doi:10.1038/srep38276; 2.2/s is that range's geometric mean), faster at body
temperature, which the wide sd allows for (94% of the prior within ×6.6).
``--binding two-step`` binds in two steps (rapid binding to a dim state,
then the switch to the bright one at k_off/φ) with the switch ratio φ free
too: lognormal prior of median 1 and sd 1.0 in log, an assumption (no
published value).
``--free b_total,c_rest`` frees further parameters of the model with its own
priors (here the indicator's concentration in the cell and the resting
calcium, both fixed by default).

Printed per cell:

- variance explained in part B (and any further sweeps) by the prediction of
  part A's fit (:meth:`cainfer.Fit.predict`, posterior median, times A's
  posterior-median ΔF/F scale; for the second half of a sweep the cell model
  runs from the sweep's start, through part A's spikes, as a cell does),
  against a linear kernel (one weight per frame lag over 3 s plus a constant)
  fitted by least squares on part A: the fit "beats" the kernel when it
  explains more of the held-out variance;
- the decay time ``τ = (1 + κ_S + κ_B)/γ`` (s; κ_B the indicator's buffering
  capacity at rest) and the free-calcium jump per spike
  ``Δc = A/(1 + κ_S + κ_B)`` (µM) of each part, with 94% HDIs; the parts
  "agree" when both quantities' HDIs overlap, and a part is "sharp" when its
  τ HDI lies within ×1.5 of its median;
- the number of separate modes of comparable mass each part's chains were
  started in (:func:`cainfer.fit` gives each such mode chains of its own), so
  that a sharp HDI is one mode the data prefer, not one a chain happened on.

Targets: the fit beats the kernel on ≥ 90 % of cells; the two parts agree
while both are sharp on ≥ 80 %.

Run: ``python benchmarks/real_data.py [--data DIR] [--rate HZ] [--draws N]
[--chains N] [--only SUBSTRING] [--binding equilibrium|kinetic|two-step]
[--free NAMES]``.
"""

from __future__ import annotations

import argparse
import re
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ground_truth"
# dataset prefix → catalogue indicator name
INDICATOR_OF = {"GCaMP6f": "GCaMP6f", "GCaMP6s": "GCaMP6s", "GCaMP8f": "jGCaMP8f"}
# GCaMP6 unbinding: 1-5/s at 20 °C (Helassa et al. 2016, doi:10.1038/srep38276)
K_OFF_MEDIAN, K_OFF_LOG_SD = 2.2, 1.0
KERNEL_SECONDS = 3.0
HDI_PROB = 0.94
SHARP = 1.5


def load_parts(
    path: Path, rate: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The recording's parts ``(time, dff, spikes, all_spikes)``: sweeps, or halves of one.

    Frames are averaged in groups down to at most ``rate`` frames/s; spikes
    outside a part are left out of its ``spikes`` (``all_spikes`` keeps the
    sweep's spikes, for the kernel, which may look back before a part starts).
    """
    with np.load(path) as d:
        sweeps = sorted(int(k[4:]) for k in d.files if k.startswith("dff_"))
        raw = [(d[f"time_{k}"], d[f"dff_{k}"], d[f"spikes_{k}"]) for k in sweeps]
    out = []
    for t, y, s in raw:
        fs = 1.0 / float(np.median(np.diff(t)))
        g = max(1, int(np.floor(fs / rate + 0.25)))  # 30.05 Hz stays, 118 Hz → 4 frames
        n = (t.size // g) * g
        t = t[:n].reshape(-1, g).mean(axis=1)
        y = y[:n].reshape(-1, g).mean(axis=1)
        out.append((t, y, np.asarray(s, float)))
    if len(out) == 1:
        t, y, s = out[0]
        h = t.size // 2
        out = [(t[:h], y[:h], s), (t[h:], y[h:], s)]
    return [(t, y, s[(s >= t[0]) & (s <= t[-1])], s) for t, y, s in out]


def spike_counts(t: np.ndarray, spikes: np.ndarray) -> np.ndarray:
    """Spikes per frame, a frame spanning half-way to its neighbours."""
    edges = np.concatenate([[-np.inf], (t[1:] + t[:-1]) / 2, [np.inf]])
    return np.histogram(spikes, bins=edges)[0].astype(float)


def kernel_design(t: np.ndarray, spikes: np.ndarray, lags: int) -> np.ndarray:
    """Lagged spike counts ``(time, lags)`` plus a constant column."""
    dt = float(np.median(np.diff(t)))
    # frames before the part (up to the kernel length) so that earlier spikes count
    pre = t[0] - dt * np.arange(lags - 1, 0, -1)
    n = spike_counts(np.concatenate([pre, t]), spikes)
    cols = [n[lags - 1 - k : lags - 1 - k + t.size] for k in range(lags)]
    return np.column_stack([*cols, np.ones(t.size)])


def variance_explained(y: np.ndarray, pred: np.ndarray) -> float:
    """``1 − var(y − pred)/var(y)`` (a constant offset between them does not count)."""
    return float(1.0 - np.var(y - pred) / np.var(y))


def derived(fit: object, model: object) -> dict[str, np.ndarray]:
    """Posterior draws of the decay time τ (s) and the jump per spike Δc (µM).

    κ_B is the indicator's buffering capacity at the resting calcium, per draw
    when the resting level or the indicator's constants are free.
    """
    from cainfer.forward._kernels import buffer_capacity

    post = fit.idata["posterior"]  # type: ignore[attr-defined]
    values = model.values(fit.fixed)  # type: ignore[attr-defined]
    kappa_s = np.asarray(post["kappa_s"]).ravel()

    def draws(name: str) -> np.ndarray:
        if name in post:
            return np.asarray(post[name]).ravel()
        return np.full(kappa_s.size, float(values[name]))

    c, bt, kd, n = (draws(k) for k in ("c_rest", "b_total", "kd", "hill"))
    # 1 + κ_S + κ_B at rest (the kernel's β(c), with the dye's K_d, Hill coefficient, B_T)
    capacity = np.array([buffer_capacity(*q) for q in zip(c, kappa_s, bt, kd, n, strict=True)])
    gamma = np.asarray(post["gamma"]).ravel()
    amp = np.asarray(post["influx_amplitude"]).ravel()
    return {"tau": capacity / gamma, "jump": amp / capacity}


def hdi(x: np.ndarray) -> tuple[float, float]:
    """The 94% highest-density interval of draws ``x``."""
    import arviz as az

    lo, hi = np.asarray(az.hdi(np.asarray(x), prob=HDI_PROB)).ravel()[:2]
    return float(lo), float(hi)


def fit_part(model, part, args):
    """One part fitted with the defaults (its problems are in ``Fit.problems``)."""
    import cainfer
    from cainfer.forward import Prior
    from cainfer.infer.fit import default_free

    t, y, s, _ = part
    extra: dict = {"free": [*default_free(model), *args.free]}
    if model.kinetic:
        source = "GCaMP6 k_off 1-5/s at 20 °C, Helassa et al. 2016, doi:10.1038/srep38276"
        extra["free"].append("k_off")
        extra["priors"] = {"k_off": Prior("lognormal", K_OFF_MEDIAN, K_OFF_LOG_SD, source)}
        if "switch_ratio" in model.parameters:  # two-step binding: its prior is the model's
            extra["free"].append("switch_ratio")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cainfer.fit(
            y, model, stimulus=cainfer.Stimulus(events=s), time=t,
            draws=args.draws, tune=args.draws, chains=args.chains, seed=1, **extra,
        )  # fmt: skip


def cell(path: Path, args: argparse.Namespace) -> dict | None:
    """Fit both parts of one cell; its row of the table (None: indicator unknown)."""
    import cainfer

    prefix = re.match(r"DS\d+-(\w+?)-", path.name)
    name = INDICATOR_OF.get(prefix.group(1) if prefix else "", "")
    try:
        indicator = cainfer.get_indicator(name)
    except ValueError:
        print(f"{path.name}: indicator {name or '?'} is not in the catalogue; skipped")
        return None
    if args.binding in ("kinetic", "two-step"):
        k_on = K_OFF_MEDIAN / indicator.kd**indicator.hill
        indicator = indicator.with_(
            k_off=K_OFF_MEDIAN, k_on=k_on, kinetics_source="Helassa et al. 2016 (range)"
        )
    if args.binding == "two-step":
        # no published value: the switch as fast as the decay, within a factor e (prior sd)
        indicator = indicator.with_(switch_ratio=1.0, kinetics_source="assumed (benchmark)")
    kinetics = "equilibrium" if args.binding == "equilibrium" else "kinetic"
    model = cainfer.single_compartment(indicator, indicator_kinetics=kinetics)
    parts = load_parts(path, args.rate)
    a, b = parts[0], parts[1]
    t0 = time.perf_counter()
    fit_a = fit_part(model, a, args)
    fit_b = fit_part(model, b, args)
    seconds = time.perf_counter() - t0
    # held-out prediction: part A's posterior for part B and any further sweeps
    scale = float(np.median(np.asarray(fit_a.idata["posterior"]["dff_scale"])))
    lags = max(2, round(KERNEL_SECONDS / float(np.median(np.diff(a[0])))))
    xa = kernel_design(a[0], a[3], lags)
    w = np.linalg.lstsq(xa, a[1], rcond=None)[0]
    ve_fit, ve_kernel = [], []
    halves = len(parts) == 2 and a[3] is b[3]  # the two halves of one sweep
    for t, y, s, s_all in parts[1:]:
        # the second half of a sweep continues the first: the cell model starts from rest
        # at the sweep's start and runs through part A's spikes (as the kernel looks back)
        tt = np.concatenate([a[0], t]) if halves else t
        ss = s_all[(s_all >= tt[0]) & (s_all <= tt[-1])] if halves else s
        pred = fit_a.predict(tt, cainfer.Stimulus(events=ss), draws=200, clip=True)
        ve_fit.append(variance_explained(y, scale * pred["dff_median"].values[-t.size :]))
        ve_kernel.append(variance_explained(y, kernel_design(t, s_all, lags) @ w))
    da, db = derived(fit_a, model), derived(fit_b, model)
    row: dict = {
        "cell": path.name.split("__")[-1].removesuffix("_mini.npz"),
        "indicator": indicator.name,
        "frames": (a[0].size, b[0].size),
        "ve_fit": float(np.mean(ve_fit)),
        "ve_kernel": float(np.mean(ve_kernel)),
        "seconds": seconds,
        "problems": len(fit_a.problems) + len(fit_b.problems),
        # separate modes of comparable mass the chains were started in (1: one mode found)
        "modes": tuple(max(1, len(f.settings.get("start_modes") or [])) for f in (fit_a, fit_b)),
        "k_off": "",
    }
    if model.kinetic:
        ka, kb = (np.asarray(f.idata["posterior"]["k_off"]).ravel() for f in (fit_a, fit_b))
        ma, mb = float(np.median(ka)), float(np.median(kb))
        row["k_off"] = f"  k_off A {_fmt(ma, hdi(ka))} B {_fmt(mb, hdi(kb))} /s"
    for q in ("tau", "jump"):
        ia, ib = hdi(da[q]), hdi(db[q])
        row[q] = (float(np.median(da[q])), ia, float(np.median(db[q])), ib)
        row[f"{q}_agree"] = ia[0] <= ib[1] and ib[0] <= ia[1]
    row["sharp"] = all(
        h[1] <= SHARP * m and m <= SHARP * h[0]
        for m, h in ((row["tau"][0], row["tau"][1]), (row["tau"][2], row["tau"][3]))
    )
    return row


def _fmt(m: float, h: tuple[float, float]) -> str:
    return f"{m:.3g} [{h[0]:.3g}, {h[1]:.3g}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rate", type=float, default=30.0, help="highest frame rate fitted (Hz)")
    ap.add_argument("--draws", type=int, default=500, help="draws (and tuning steps) per chain")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--only", default="", help="fit only files whose name contains this")
    ap.add_argument(
        "--binding", default="equilibrium", choices=["equilibrium", "kinetic", "two-step"],
        help="indicator binding: in equilibrium, kinetic with k_off free, or two-step "
        "(kinetic, its switch ratio free too)",
    )  # fmt: skip
    ap.add_argument(
        "--free", default="", type=lambda v: [x for x in v.split(",") if x],
        help="further parameters to infer, comma-separated, with the model's priors "
        "(e.g. b_total,c_rest: the indicator's concentration, the resting calcium)",
    )  # fmt: skip
    args = ap.parse_args()
    if not args.data.is_dir() or not list(args.data.glob("*.npz")):
        print(f"no ground-truth recordings in {args.data}: nothing to benchmark (skipped)")
        return
    rows = []
    for path in sorted(args.data.glob("*.npz")):
        if args.only not in path.name:
            continue
        row = cell(path, args)
        if row is None:
            continue
        rows.append(row)
        agree = "yes" if row["tau_agree"] and row["jump_agree"] else "no"
        print(
            f"{row['cell'][:38]:38s} {row['indicator']:9s} frames {row['frames'][0]}+"
            f"{row['frames'][1]}  VE fit {row['ve_fit']:.3f} kernel {row['ve_kernel']:.3f}  "
            f"tau A {_fmt(*row['tau'][:2])} B {_fmt(*row['tau'][2:])} s  "
            f"jump A {_fmt(*row['jump'][:2])} B {_fmt(*row['jump'][2:])} µM  "
            f"agree {agree} sharp {'yes' if row['sharp'] else 'no'}  "
            f"fit problems {row['problems']} modes {row['modes'][0]}+{row['modes'][1]}"
            f"{row['k_off']}  {row['seconds']:.0f} s",
            flush=True,
        )
    if not rows:
        print("no cell fitted")
        return
    n = len(rows)
    beats = sum(r["ve_fit"] > r["ve_kernel"] for r in rows)
    agree = sum(r["tau_agree"] and r["jump_agree"] for r in rows)
    both = sum(r["tau_agree"] and r["jump_agree"] and r["sharp"] for r in rows)
    sharp = sum(r["sharp"] for r in rows)
    print(f"\ncells fitted: {n}")
    print(f"fit beats the linear kernel on held-out data: {beats}/{n} ({100 * beats / n:.0f} %)")
    print(f"τ and Δc 94% HDIs overlap between the parts: {agree}/{n} ({100 * agree / n:.0f} %)")
    print(f"both parts sharp (τ HDI within ×{SHARP} of its median): {sharp}/{n}")
    split = sum(max(r["modes"]) > 1 for r in rows)
    print(f"a part whose chains were started in separate modes: {split}/{n}")
    print(f"agree and sharp: {both}/{n} ({100 * both / n:.0f} %)  (targets: ≥ 90 %, ≥ 80 %)")


if __name__ == "__main__":
    main()
