"""The kinetic indicator's implicit solve (SDIRK3) and its discrete adjoint."""

import numpy as np
import pytest

from cainfer.forward import Stimulus, get_indicator, preset
from cainfer.forward import _adjoint as A
from cainfer.forward import _kernels as K
from cainfer.testing import reference_simulate

TIME = np.arange(240) / 30.0
STIM = Stimulus(events=[1.0, 1.05, 4.017, 6.5], weights=[1.0, 1.0, 2.0, 1.0])


def _kinetic(model_name, name, k_off, phi=0.0):
    ind = get_indicator(name)
    ind = ind.with_(k_off=k_off, k_on=k_off / ind.kd**ind.hill, switch_ratio=phi)
    return preset(model_name, ind, indicator_kinetics="kinetic")


def _dff(model, params, substeps):
    return model.dff_vjp(params, TIME, STIM, np.zeros(TIME.size), substeps=substeps)[0]


@pytest.mark.parametrize(
    ("model_name", "name", "k_off", "phi"),
    [
        ("single_compartment", "OGB-1", 100.0, 0.0),
        ("pumps", "GCaMP6f", 20.0, 0.0),
        ("er", "GCaMP6s", 1.0, 0.0),
        # the sequential scheme: its jumps solve for the dim bound state too
        ("single_compartment", "OGB-1", 100.0, 0.5),
        ("pumps", "GCaMP6f", 20.0, 4.0),
        ("er", "GCaMP6s", 1.0, 2.0),
    ],
)
def test_kinetic_gradient_matches_finite_differences(model_name, name, k_off, phi):
    model = _kinetic(model_name, name, k_off, phi)
    params = {"influx_amplitude": 5.0}
    g = np.random.default_rng(3).normal(size=TIME.size)
    dff, grad = model.dff_vjp(params, TIME, STIM, g, substeps=2)
    assert dff.max() > 0.3
    v = model.values(params)
    assert set(grad) == set(v) and "k_off" in grad
    assert ("switch_ratio" in grad) == (phi > 0)
    for key, value in v.items():
        step = 1e-6 * abs(value) if value else 1e-7
        up, dn = dict(v), dict(v)
        up[key], dn[key] = value + step, value - step
        fd = (g @ _dff(model, up, 2) - g @ _dff(model, dn, 2)) / (2 * step)
        # the stage equations stop at 1e-13 relative, so the forward solve carries that
        # much noise, which central differences divide by the step: derivatives four
        # orders below the largest are compared on the largest's scale
        scale = max(abs(fd), 1e-4 * max(abs(x) for x in grad.values()))
        assert abs(grad[key] - fd) <= 1e-5 * scale, (key, grad[key], fd)


@pytest.mark.parametrize(
    ("model_name", "name", "k_off", "substeps", "phi"),
    [
        ("pumps", "GCaMP6s", 1.0, 1, 0.0),
        ("pumps", "GCaMP6f", 20.0, 1, 0.0),
        ("single_compartment", "OGB-1", 100.0, 2, 0.0),
        ("er", "jGCaMP7f", 10.0, 1, 0.0),
        ("pumps", "GCaMP6s", 1.0, 1, 5.0),
        ("er", "jGCaMP7f", 10.0, 1, 1.0),
    ],
)
def test_kinetic_solve_matches_radau(model_name, name, k_off, substeps, phi):
    model = _kinetic(model_name, name, k_off, phi)
    params = {"influx_amplitude": 5.0}
    ref = reference_simulate(model, params, TIME, STIM, method="Radau")
    dff = _dff(model, params, substeps)
    assert ref["dff"].max() > 0.3
    np.testing.assert_allclose(dff, ref["dff"], rtol=0, atol=1e-4)


def test_kinetic_solve_is_third_order():
    model = _kinetic("pumps", "GCaMP6s", 1.0)
    v = model.values({"influx_amplitude": 5.0})
    ref = reference_simulate(model, v, TIME, STIM, method="Radau")["dff"]
    err = []
    for substeps in (2, 4):
        # uniform steps (no grading after events), so that all of them halve
        t, ev_t, ev_w, ev_slot, codes, offsets, wt, wv, has_er, h, pm, er = model.kernel_args(
            TIME, STIM, substeps=substeps
        )
        op, arg, tt, hh = K.schedule(t, ev_t, h)
        dff = A.kinetic_dff_forward_tape(
            model.pack_raw(v), op, arg, tt, hh, ev_w, ev_slot, codes, offsets, wt, wv, has_er,
            pm, er,
        )[0]  # fmt: skip
        err.append(np.abs(dff - ref).max())
    assert 6.0 < err[0] / err[1] < 10.0  # 2³ = 8 for a third-order method


def test_fast_binding_gives_the_equilibrium_model_without_more_steps():
    # L-stability: as k_off → ∞ the implicit solve damps the binding mode at any step
    # size and follows the equilibrium (rapid-buffer) model
    eq = preset("pumps", "GCaMP6f")
    ref = eq.simulate({"influx_amplitude": 5.0}, TIME, STIM, substeps=8).dff.values
    # at an event's own frame the kinetic indicator has not bound anything yet
    later = ~np.isin(TIME, STIM.events)
    errs = []
    for k_off in (1e3, 1e5, 1e7):
        kin = _kinetic("pumps", "GCaMP6f", k_off)
        dff = _dff(kin, {"influx_amplitude": 5.0}, 1)
        assert np.all(np.isfinite(dff))
        errs.append(np.abs(dff - ref)[later].max())
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-3 * ref.max()


def test_graded_schedule_shortens_steps_after_events_only():
    t = np.arange(31) / 30.0
    ev = np.array([0.5 + 1 / 60])
    frame = np.full(t.size, 1 / 30)
    op, _, tt, hh = K.graded_schedule(t, ev, frame, 1 / 256, 0.5)
    steps = op == K.S_STEP
    # the steps tile [t0, t_end] and stop at every output and the event
    assert hh[steps].sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.isin(t, tt[steps]) | (t == t[-1]))
    after = steps & (tt >= ev[0])
    assert hh[after][0] == pytest.approx(1 / 30 / 256)
    assert hh[steps & (tt < ev[0] - 1e-9)].max() == pytest.approx(1 / 30)
    # back to the frame step within ~log(256)/log(1.5) ≈ 14 steps of the event
    assert np.sum(after & (hh < 1 / 30 * 0.99)) <= 16
    uniform = K.schedule(t, ev, frame)
    assert op.size > uniform[0].size
    # without events it is the uniform schedule
    same = K.graded_schedule(t, np.empty(0), frame, 1 / 256, 0.5)
    np.testing.assert_array_equal(same[0], K.schedule(t, np.empty(0), frame)[0])
    kin = A.kinetic_schedule(t, ev, frame)
    graded = K.graded_schedule(t, ev, frame, A._FIRST_STEP, A._GROWTH)
    np.testing.assert_array_equal(kin[3], graded[3])


def test_a_saturating_burst_with_fast_binding_stays_within_the_indicator():
    # a burst that drives GCaMP6f far into saturation with fast binding: a stage's Newton
    # solve from the state before the step overshoots (once to a singular Newton matrix,
    # a ZeroDivisionError inside a fit; once to more bound indicator than there is, ΔF/F
    # above the indicator's maximum); kept in the physical range it matches Radau
    model = _kinetic("single_compartment", "GCaMP6f", 52.0)
    t = np.arange(90) / 30.0
    burst = Stimulus(events=0.2 + 0.04 * np.arange(40))
    params = {"kappa_s": 0.4, "gamma": 63.0, "influx_amplitude": 28.0}
    ind = model.indicator
    f_rest = 1.0 / (1.0 + (ind.kd / model.values(params)["c_rest"]) ** ind.hill)
    ceiling = ind.dff_max * (1.0 - f_rest) / (1.0 + ind.dff_max * f_rest)
    dff = model.simulate(params, t, burst).dff.values
    assert np.all(np.isfinite(dff))
    assert dff.max() <= ceiling * (1.0 + 1e-9)
    assert dff.max() > 0.99 * ceiling  # the burst does saturate it
    ref = reference_simulate(model, params, t, burst, method="Radau")["dff"]
    np.testing.assert_allclose(dff, ref, rtol=0, atol=1e-3 * ceiling)
    grad = model.dff_vjp(params, t, burst, np.ones(t.size))[1]
    assert all(np.isfinite(v) for v in grad.values())


def _rk4_tape(model, v, substeps):
    """ΔF/F and the parameter cotangent function of the kinetic system in RK4 steps."""
    t, ev_t, ev_w, ev_slot, codes, offsets, wt, wv, has_er, h, pm, er = model.kernel_args(
        TIME, STIM, substeps=substeps
    )
    sched = A.solver_schedule(t, ev_t, h, True, True)
    # (an event between frames splits its interval's step in two)
    assert np.all(sched[0] != K.S_STEP) and np.sum(sched[0] == K.S_RK4) >= substeps * (t.size - 1)
    rest = (ev_w, ev_slot, codes, offsets, wt, wv, has_er, pm, er)

    def forward(p_raw):
        return A.kinetic_dff_forward_tape(p_raw, *sched, *rest)

    def vjp(p_raw, g):
        _, c, b, rec = forward(p_raw)
        return A.kinetic_dff_vjp_tape(
            p_raw, *sched, *rest, c, b, rec, g, np.zeros_like(g), True
        )  # fmt: skip

    return forward, vjp


@pytest.mark.parametrize(
    ("model_name", "name", "k_off", "phi", "substeps"),
    [
        ("er", "GCaMP6s", 1.0, 0.0, 1),
        ("pumps", "GCaMP6f", 20.0, 0.0, 4),
        ("er", "GCaMP6s", 1.0, 2.0, 1),
    ],
)
def test_kinetic_rk4_gradient_matches_finite_differences(model_name, name, k_off, phi, substeps):
    # the explicit solve a fit takes where binding is slow against the frame: its
    # discrete adjoint against central differences of the same solve
    model = _kinetic(model_name, name, k_off, phi)
    v = model.values({"influx_amplitude": 5.0})
    forward, vjp = _rk4_tape(model, v, substeps)
    g = np.random.default_rng(3).normal(size=TIME.size)
    p = model.pack_raw(v)
    assert forward(p)[0].max() > 0.3
    grad = model.unpack_gradient(vjp(p, g))
    assert ("switch_ratio" in grad) == (phi > 0) and "k_off" in grad
    slots = model.slots()
    for key, value in v.items():
        step = 1e-6 * abs(value) if value else 1e-7
        up, dn = p.copy(), p.copy()
        up[slots[key]] += step
        dn[slots[key]] -= step
        fd = (g @ forward(up)[0] - g @ forward(dn)[0]) / (2 * step)
        # an explicit solve has no stage equations to stop: only rounding over the
        # step divides into the difference
        scale = max(abs(fd), 1e-5 * max(abs(x) for x in grad.values()))
        assert abs(grad[key] - fd) <= 1e-6 * scale, (key, grad[key], fd)


def test_kinetic_rk4_solve_is_simulates_rk4_and_is_fourth_order():
    # the same scheme as simulate(solver="rk4") (a separate kernel), and against Radau
    # its error falls 16-fold per halving of the step
    model = _kinetic("pumps", "GCaMP6s", 1.0)
    v = model.values({"influx_amplitude": 5.0})
    ref = reference_simulate(model, v, TIME, STIM, method="Radau")["dff"]
    err = []
    for substeps in (2, 4):
        dff = _rk4_tape(model, v, substeps)[0](model.pack_raw(v))[0]
        sim = model.simulate(v, TIME, STIM, solver="rk4", substeps=substeps).dff.values
        np.testing.assert_allclose(dff, sim, rtol=0, atol=1e-12)
        err.append(np.abs(dff - ref).max())
    assert err[0] < 1e-4
    assert 10.0 < err[0] / err[1] < 22.0  # 2⁴ = 16
