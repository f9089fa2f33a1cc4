"""A system of any number of states, from expressions: its RK4 solve and adjoint.

A cell with a gating state (inactivation ``h`` of an input-driven influx):
the compiled solve against ``solve_ivp`` (events as jumps of total calcium),
and the adjoint against central differences of the solve.
"""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import cainfer
from cainfer.forward import _kernels as K
from cainfer.forward._system import System, compiled

sp = pytest.importorskip("sympy")

MODEL = cainfer.single_compartment("OGB-1")
SLOTS = MODEL.slots()
EXTRA = {"a": 40.0, "k_h": 0.2, "tau_h": 0.3}  # appended after the model's slots


def _system(buffered: bool) -> tuple[System, np.ndarray]:
    """The cell; ``buffered``: β from the kernels (else written out as an expression)."""
    c, h, u = sp.symbols("c h u", real=True)
    names = ["c_rest", "kappa_s", "kd", "hill", "b_total", "gamma"]
    ps = {n: sp.Symbol(n, positive=True) for n in [*names, *EXTRA]}
    slots = {ps[n]: SLOTS[n] for n in names}
    base = MODEL.pack()
    for i, n in enumerate(EXTRA):
        slots[ps[n]] = base.size + i
    x = (c / ps["kd"]) ** ps["hill"]
    beta = 1 + ps["kappa_s"] + ps["b_total"] * ps["hill"] * x / (c * (1 + x) ** 2)
    j = -ps["gamma"] * (c - ps["c_rest"]) + ps["a"] * h * u
    dh = (1 / (1 + (c / ps["k_h"]) ** 2) - h) / ps["tau_h"]
    first = j if buffered else j / beta
    system = System((c, h), (first, dh), slots, input=u, hill_slots=(SLOTS["hill"],),
                    buffered=buffered)  # fmt: skip
    p = np.concatenate([base, list(EXTRA.values())])
    return system, p


def _rest(p: np.ndarray) -> np.ndarray:
    """Resting calcium and the gate open as far as it is at rest."""
    c = p[SLOTS["c_rest"]]
    return np.array([c, 1.0 / (1.0 + (c / EXTRA["k_h"]) ** 2)])


T_OUT = np.arange(0.0, 3.0, 1 / 30)
EVENTS = np.array([0.5, 1.5, 1.55])
WT = np.array([0.0, 1.0, 1.2, 2.2, 3.0])
WV = np.array([0.0, 0.0, 1.0, 1.0, 0.0])


def _solve(mod, p: np.ndarray, y0: np.ndarray, h_max: float = 1 / 120):
    op, arg, tt, hh = K.schedule(T_OUT, EVENTS, np.full(T_OUT.size, h_max))
    ev_w = np.ones(EVENTS.size)
    out, tape = mod.run(op, arg, tt, hh, T_OUT.size, ev_w, SLOTS["influx_amplitude"], p, WT,
                        WV, y0)  # fmt: skip
    return out, tape, (op, arg, tt, hh, ev_w)


@pytest.mark.parametrize("buffered", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_the_solve_matches_solve_ivp(buffered):
    system, p = _system(buffered)
    mod = compiled(system)
    y0 = _rest(p)
    out, _, _ = _solve(mod, p, y0)

    def f(t, y):
        d = np.empty(2)
        mod.rhs(t, y, p, WT, WV, d)
        return d

    # reference: LSODA between events, each event a jump of total calcium
    kap, bt, kd, n = p[K.G_KAPPA_S], p[K.G_BT], p[K.G_KD], p[K.G_HILL]
    y, t0, ref = y0.copy(), 0.0, []
    for stop in [*EVENTS, T_OUT[-1] + 1e-9]:
        ts = T_OUT[(T_OUT >= t0) & (T_OUT < stop)]
        if stop > t0:
            sol = solve_ivp(f, (t0, stop), y, t_eval=ts, rtol=1e-10, atol=1e-12, method="LSODA",
                            max_step=0.05)  # fmt: skip
            ref.append(sol.y.T)
            y = sol.y[:, -1] if sol.y.shape[1] and ts[-1] == stop else solve_ivp(
                f, (t0, stop), y, rtol=1e-10, atol=1e-12, method="LSODA", max_step=0.05
            ).y[:, -1]  # fmt: skip
        amp = p[SLOTS["influx_amplitude"]]
        y[0] = K.free_from_total(K.total_ca(y[0], kap, bt, kd, n) + amp, kap, bt, kd, n)
        t0 = stop
    ref = np.concatenate(ref)
    assert ref.shape == out.shape
    # the input waveform has kinks between steps: RK4 is second order across them
    np.testing.assert_allclose(out, ref, rtol=2e-4, atol=1e-6)
    assert out[:, 1].min() < 0.9 * out[0, 1]  # the gate closed during the response


@pytest.mark.parametrize("buffered", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_the_adjoint_matches_finite_differences(buffered):
    system, p = _system(buffered)
    mod = compiled(system)
    y0 = _rest(p)
    g_out = np.random.default_rng(3).normal(size=(T_OUT.size, 2))
    _, tape, sched = _solve(mod, p, y0, h_max=1 / 60)
    op, arg, tt, hh, ev_w = sched
    pbar, y0bar = mod.backward(op, arg, tt, hh, ev_w, SLOTS["influx_amplitude"], p, WT, WV,
                               tape, g_out, True)  # fmt: skip

    def loss(q: np.ndarray, y: np.ndarray) -> float:
        return float(np.sum(g_out * _solve(mod, q, y, h_max=1 / 60)[0]))

    names = ("kappa_s", "kd", "hill", "b_total", "gamma", "influx_amplitude")
    check = [SLOTS[n] for n in names] + [p.size - 3, p.size - 2, p.size - 1]
    for i in check:
        e = 1e-6 * max(abs(p[i]), 1.0)
        up, dn = p.copy(), p.copy()
        up[i] += e
        dn[i] -= e
        fd = (loss(up, y0) - loss(dn, y0)) / (2 * e)
        assert pbar[i] == pytest.approx(fd, rel=1e-5, abs=1e-7), i
    for i in range(2):
        e = 1e-7
        up, dn = y0.copy(), y0.copy()
        up[i] += e
        dn[i] -= e
        fd = (loss(p, up) - loss(p, dn)) / (2 * e)
        assert y0bar[i] == pytest.approx(fd, rel=1e-5, abs=1e-7), i


class _WaveformEntry(cainfer.forward.Flux):
    """Entry through channels the waveform opens, less of it as calcium rises."""

    compartment = "pm"
    default_name = "entry"
    declared = (
        cainfer.forward.Parameter(
            "g", "µM/s", 3.0, cainfer.forward.Prior("lognormal", 3.0, 1.0, "test"), role="capacity"
        ),
    )

    def rate(self, c, c_er):
        return self.g * self.waveform / (1 + c)


def _model_and_stimulus(name):
    if name != "waveform":
        model = cainfer.preset(name, "GCaMP6f")
        return model, cainfer.Stimulus(events=[0.5, 1.5, 1.55], weights=[1.0, 2.0, 1.0])
    from cainfer.forward import PMCA, EventInflux, PlasmaLeak, WaveformInflux

    terms = [PMCA(), EventInflux(), WaveformInflux(amplitude=20.0), _WaveformEntry(), PlasmaLeak()]
    stim = cainfer.Stimulus(
        events=[0.5], waveform_time=[0.8, 1.0, 1.6, 1.9], waveform=[0.0, 1.0, 0.6, 0.0]
    )
    return cainfer.CellModel(terms, indicator="GCaMP6f"), stim


@pytest.mark.parametrize(
    "name", ["er", "waveform", pytest.param("pumps", marks=pytest.mark.slow),
             pytest.param("single_compartment", marks=pytest.mark.slow)],
)  # fmt: skip
def test_a_models_system_solves_as_its_kernels_do(name):
    """The system built from a model's terms: the kernels' solution and adjoint.

    ``waveform``: the built-in waveform influx and a user's term reading the
    waveform, both run on the kernels (no gate), and on the system.
    """
    from cainfer.forward._system import system_of

    model, stim = _model_and_stimulus(name)
    assert not model.stateful
    _, A = model.kernels()  # the kernels specialised to the model (with a user's term's code)
    ka = model.kernel_args(T_OUT, stim, substeps=2)
    sched = K.schedule(ka.time, ka.event_times, ka.steps)
    p_raw = model.pack_raw()
    args = (ka.event_weights, ka.event_slot, ka.codes, ka.offsets, ka.waveform_time,
            ka.waveform_values, ka.has_er, ka.pm_leak_slot, ka.er_leak_slot)  # fmt: skip
    _, c, cc, ee = A.dff_forward_tape(p_raw, *sched, *args)
    p = A.balance_leaks(p_raw, ka.codes, ka.offsets, ka.pm_leak_slot, ka.er_leak_slot, ka.has_er)
    mod = compiled(system_of(model))
    y0 = np.array([p[K.G_C_REST], p[K.G_CER_REST]][: 2 if model.has_er else 1])
    out, tape = mod.run(*sched, T_OUT.size, ka.event_weights, ka.event_slot, p,
                        ka.waveform_time, ka.waveform_values, y0)  # fmt: skip
    np.testing.assert_allclose(out[:, 0], c, rtol=1e-10)
    rng = np.random.default_rng(7)
    gc, ge = rng.normal(size=T_OUT.size), rng.normal(size=T_OUT.size)
    want, c0bar, cer0bar = A.tape_backward(
        (*sched, cc, ee), ka.event_weights, ka.event_slot, p, ka.codes, ka.offsets,
        ka.waveform_time, ka.waveform_values, ka.has_er, gc, ge if model.has_er else 0 * ge,
    )  # fmt: skip
    g_out = np.stack([gc, ge], axis=1)[:, : y0.size]
    got, y0bar = mod.backward(*sched, ka.event_weights, ka.event_slot, p, ka.waveform_time,
                              ka.waveform_values, tape, g_out, True)  # fmt: skip
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * scale)
    assert y0bar[0] == pytest.approx(c0bar, rel=1e-8)
    if model.has_er:
        assert y0bar[1] == pytest.approx(cer0bar, rel=1e-8)
