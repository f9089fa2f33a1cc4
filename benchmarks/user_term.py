"""A user-written term against the built-in term with the same physics.

For each cell, the built-in model and a copy in which one built-in term is
replaced by the same physics written by a user as ``rate``, in another form
(``V·c^n/(K^n + c^n)`` where the built-in term has ``V·x/(1 + x)``,
``x = (c/K)^n``), so that it gets kernels of its own, generated when the
model is built, where the built-in term's come from ``_builtin_terms``: B1's
cell (``pumps``: PMCA, NCX, a leak, a jump per event; 1800 frames at 30
frames/s) with PMCA so written, and the ER preset (GCaMP6f) with SERCA. Both
run on the kernels specialised to their terms, as fits do. Prints the time of
one ΔF/F solve and its adjoint (the work of one log-density gradient), best of
7 rounds of 30 calls, the two models alternating, their ratio (user / built
in) and how far their gradients differ.

A model whose term carries a gating state runs on another path: its whole
system of states generated and compiled (``cainfer.forward._system``). The
last lines put the same two cells on that path, where every term's
expression is part of one generated right-hand side, against their
specialised kernels: the cost of that path for the same physics.

Run: ``python benchmarks/user_term.py``
"""

from __future__ import annotations

import time

import numpy as np

from cainfer.forward import PMCA, SERCA, CellModel, Flux, Stimulus, _system, er_model, pumps_model
from cainfer.forward import _kernels as K
from cainfer.forward._specialize import specialized


class RatePMCA(Flux):
    """PMCA as a user might write it."""

    compartment = "pm"
    per_buffer = True
    cytosolic_hill = True
    default_name = "pmca"
    declared = PMCA.declared

    def rate(self, c, c_er):  # type: ignore[no-untyped-def]  # noqa: D102
        return -self.vmax * c**self.hill / (self.k**self.hill + c**self.hill)


class RateSERCA(Flux):
    """SERCA as a user might write it."""

    compartment = "er"
    cytosolic_hill = True
    default_name = "serca"
    declared = SERCA.declared

    def rate(self, c, c_er):  # type: ignore[no-untyped-def]  # noqa: D102
        return -self.vmax * c**self.hill / (self.k**self.hill + c**self.hill)


def _swap(model: CellModel, old: type[Flux], new: Flux) -> CellModel:
    return CellModel(
        [new if isinstance(f, old) else f for f in model.fluxes],
        indicator=model.indicator,
        er=model.er,
        name=model.name + "+rate",
    )


def _timer(model: CellModel, t: np.ndarray, stim: Stimulus) -> tuple[object, np.ndarray]:
    mod = specialized(model._codes.tolist(), model._offsets.tolist(), model.generated_terms)
    args = model.kernel_args(t, stim, substeps=1)
    p = model._pack_raw(model.values(None))
    g = np.random.default_rng(0).normal(size=t.size)
    z = np.zeros_like(g)

    def call() -> np.ndarray:
        return np.asarray(mod.dff_vjp(p, *args, g, z))

    return call, call()


def _system_timer(model: CellModel, t: np.ndarray, stim: Stimulus) -> tuple[object, np.ndarray]:
    """The same solve and adjoint on the model's generated system of states."""
    mod = _system.compiled(_system.source(_system.system_of(model)))
    a = model.kernel_args(t, stim, substeps=1)
    rest = a.after_schedule
    p = model._pack_raw(model.values(None))
    g = np.random.default_rng(0).normal(size=t.size)
    z = np.zeros_like(g)

    def call() -> np.ndarray:
        sched = K.schedule(a.time, a.event_times, a.steps)
        _, c, cc, ee = mod.dff_forward_tape(p, *sched, *rest)
        return np.asarray(mod.dff_vjp_tape(p, *sched, *rest, c, cc, ee, g, z, True))

    return call, call()


def _race(calls: tuple[object, ...]) -> list[float]:
    best = [np.inf] * len(calls)
    for _ in range(7):
        for i, call in enumerate(calls):
            t0 = time.perf_counter()
            for _ in range(30):
                call()  # type: ignore[operator]
            best[i] = min(best[i], (time.perf_counter() - t0) / 30)
    return best


def main() -> None:
    t = np.arange(1800) / 30.0
    stim = Stimulus(events=[2, 8, 8.05, 14, 20, 26, 32, 32.05, 44, 52])
    cases = [
        ("B1 (pumps), PMCA", pumps_model("OGB-1"), PMCA, RatePMCA()),
        ("ER preset (GCaMP6f), SERCA", er_model("GCaMP6f"), SERCA, RateSERCA()),
    ]
    for label, ref, old, new in cases:
        mine = _swap(ref, old, new)
        calls, grads = zip(*(_timer(m, t, stim) for m in (ref, mine)), strict=True)
        scale = float(np.max(np.abs(grads[0])))
        diff = float(np.max(np.abs(grads[1] - grads[0]))) / scale
        best = _race(calls)
        print(
            f"{label}: built in {best[0] * 1e3:.3f} ms, written by a user {best[1] * 1e3:.3f} ms, "
            f"ratio {best[1] / best[0]:.3f}  (gradients differ by {diff:.1e} of their largest)"
        )
    for label, ref in (("B1 (pumps)", pumps_model("OGB-1")), ("ER preset (OGB-1)", er_model())):
        calls, grads = zip(_timer(ref, t, stim), _system_timer(ref, t, stim), strict=True)
        scale = float(np.max(np.abs(grads[0])))
        diff = float(np.max(np.abs(grads[1] - grads[0]))) / scale
        best = _race(calls)
        print(
            f"{label} as a system of states: kernels {best[0] * 1e3:.3f} ms, system "
            f"{best[1] * 1e3:.3f} ms, ratio {best[1] / best[0]:.3f}  (gradients differ by "
            f"{diff:.1e} of their largest)"
        )


if __name__ == "__main__":
    main()
