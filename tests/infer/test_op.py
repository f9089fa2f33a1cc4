import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from cainfer.forward import Stimulus, get_indicator, preset
from cainfer.infer import solve_op

TIME = np.arange(90) / 30.0
STIM = Stimulus(events=[0.5, 1.0, 1.05, 2.2])


@pytest.mark.parametrize("mode", ["FAST_RUN", "NUMBA"])
@pytest.mark.parametrize("name", ["pumps", "er"])
def test_op_values_and_gradient_match_the_model(name, mode):
    model = preset(name)
    params = {"influx_amplitude": 20.0}
    op, consts = solve_op(model, TIME, STIM, substeps=2)
    x = pt.dvector("p")
    dff, ca, *_ = op(x, *consts)
    w = np.random.default_rng(3).normal(size=TIME.size)
    f = pytensor.function([x], [dff, ca, pytensor.grad((dff * w).sum(), x)], mode=mode)
    got_dff, got_ca, grad = f(model.pack_raw(params))
    sim = model.simulate(params, TIME, STIM, substeps=2)
    # separately compiled copies of one arithmetic agree to rounding (FMA contraction
    # may differ between them and between CPUs; measured up to 4e-12 relative), so
    # 1e-9: far above that, far below the solver's error against solve_ivp (1e-6)
    np.testing.assert_allclose(got_dff, sim.dff, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_ca, sim.ca, rtol=1e-9)
    _, expected = model.dff_vjp(params, TIME, STIM, w, substeps=2)
    slots = model.slots()
    for k, v in expected.items():
        assert grad[slots[k]] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def test_gradient_through_both_outputs_by_finite_differences():
    model = preset("pumps")
    op, consts = solve_op(model, TIME, STIM, substeps=1)
    p0 = model.pack_raw({"influx_amplitude": 15.0})
    free = np.array([model.slots()[k] for k in ("pmca_vmax", "ncx_k", "kappa_s", "c_rest")])

    def f(x):
        p = pt.set_subtensor(pt.as_tensor(p0)[free], x)
        dff, ca, *_ = op(p, *consts)
        return (dff**2).sum() + 3.0 * ca.sum()

    pytensor.gradient.verify_grad(
        f, [p0[free]], rng=np.random.default_rng(0), eps=1e-7, abs_tol=1e-5, rel_tol=1e-5
    )


def test_gradient_without_hill_coefficients_matches_on_the_free_slots():
    # with no Hill coefficient free the gradient skips their derivatives; the
    # free slots must be unchanged, and freeing a Hill coefficient restores them
    model = preset("er")
    p0 = model.pack_raw({"influx_amplitude": 20.0})
    slots = model.slots()
    w = np.random.default_rng(5).normal(size=TIME.size)
    grads = {}
    for free in (["serca_vmax", "kappa_s", "release_rate"], None):
        op, consts = solve_op(model, TIME, STIM, substeps=2, free=free)
        x = pt.dvector("p")
        dff, *_ = op(x, *consts)
        grads[free is None] = pytensor.function([x], pytensor.grad((dff * w).sum(), x))(p0)
    # two kernels (Hill derivatives folded away or not) agree to rounding, not bit for
    # bit: see test_op_values_and_gradient_match_the_model for the 1e-9
    for name in ("serca_vmax", "kappa_s", "release_rate"):
        assert grads[False][slots[name]] == pytest.approx(grads[True][slots[name]], rel=1e-9)
    _, expected = model.dff_vjp({"influx_amplitude": 20.0}, TIME, STIM, w, substeps=2)
    assert grads[True][slots["serca_hill"]] == pytest.approx(expected["serca_hill"], rel=1e-9)
    assert expected["serca_hill"] != 0.0


@pytest.mark.parametrize("mode", ["FAST_RUN", "NUMBA"])
@pytest.mark.parametrize(("name", "phi"), [("pumps", 0.0), ("er", 0.0), ("pumps", 3.0)])
def test_kinetic_op_matches_the_model(name, phi, mode):
    # the Op runs the kernels specialised to the model's terms; dff_vjp the generic ones
    ind = get_indicator("GCaMP6f")
    ind = ind.with_(k_off=20.0, k_on=20.0 / ind.kd**ind.hill, switch_ratio=phi)
    model = preset(name, ind, indicator_kinetics="kinetic")
    params = {"influx_amplitude": 5.0, "k_off": 15.0}
    op, consts = solve_op(model, TIME, STIM, substeps=1)
    x = pt.dvector("p")
    dff, _, *_ = op(x, *consts)
    w = np.random.default_rng(3).normal(size=TIME.size)
    f = pytensor.function([x], [dff, pytensor.grad((dff * w).sum(), x)], mode=mode)
    got_dff, grad = f(model.pack_raw(params))
    expected_dff, expected = model.dff_vjp(params, TIME, STIM, w, substeps=1)
    assert got_dff.max() > 0.3
    # two compiled copies of the same solve; their Newton iterations stop at 1e-13
    # relative, so they agree to about that, far inside 1e-9
    np.testing.assert_allclose(got_dff, expected_dff, rtol=1e-9, atol=1e-12)
    slots = model.slots()
    scale = max(abs(v) for v in expected.values())
    for k, v in expected.items():
        assert grad[slots[k]] == pytest.approx(v, rel=1e-8, abs=1e-10 * scale), k


@pytest.mark.parametrize("kinetic", [False, True])
def test_the_python_solve_runs_the_graphs_compiled_solver(kinetic):
    # the predictive and the step search solve through the same compiled wrapper as the
    # sampler's graph: their values agree with simulate, and the solver kernel holds one
    # compiled signature after both (two would mean a first fit compiles it twice)
    from cainfer.infer._op import forward_solver

    if kinetic:
        ind = get_indicator("GCaMP6f")
        ind = ind.with_(k_off=20.0, k_on=20.0 / ind.kd**ind.hill)
        model = preset("pumps", ind, indicator_kinetics="kinetic")
    else:
        model = preset("er")
    params = {"influx_amplitude": 20.0}
    op, consts = solve_op(model, TIME, STIM, substeps=2)
    # other tests may have compiled the same kernel for their own argument types
    before = set(op.forward_tape.signatures)
    x = pt.dvector("p")
    dff, ca, *_ = op(x, *consts)
    f = pytensor.function([x], [dff, ca], mode="NUMBA")
    p = model.pack_raw(params)
    graph_dff, graph_ca = f(p)
    got_dff, got_ca = forward_solver(model, TIME, STIM, substeps=2)(p)
    sim = model.simulate(params, TIME, STIM, substeps=2)
    np.testing.assert_allclose(got_dff, graph_dff, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got_ca, graph_ca, rtol=1e-12)
    # simulate solves the kinetic indicator by RK4 (the fit's solver is implicit):
    # the two agree to their own errors only
    tol = 1e-3 if kinetic else 1e-9
    np.testing.assert_allclose(got_dff, sim.dff, rtol=tol, atol=tol * 1e-3)
    assert len(set(op.forward_tape.signatures) - before) <= 1
    # a plain Python call with a read-only or integer vector is converted, not recompiled
    frozen = p.copy()
    frozen.flags.writeable = False
    np.testing.assert_allclose(forward_solver(model, TIME, STIM, substeps=2)(frozen)[0], got_dff)
    assert len(set(op.forward_tape.signatures) - before) <= 1


def test_output_plan_reads_a_cubic_exactly_and_never_across_a_break():
    from cainfer.infer._op import output_plan

    t = np.arange(300) / 60.0
    breaks = np.array([0.5, 1.2, 1.205, 3.9])
    plan = output_plan(t, breaks, 6)
    a = plan.anchors
    assert a[0] == 0 and a[-1] == t.size - 1 and np.all(np.diff(a) > 0)
    assert a.size < t.size / 2  # most frames are read off the anchors
    # Lagrange weights of a cubic: they sum to 1 and reproduce any cubic exactly
    np.testing.assert_allclose(plan.weights.sum(axis=0), 1.0, rtol=1e-12)
    cubic = 0.3 - 2.0 * t + 0.7 * t**2 - 0.11 * t**3
    np.testing.assert_allclose(plan.apply(np, cubic[a]), cubic, rtol=1e-10, atol=1e-12)
    # anchors are their own values; no frame's stencil spans a break
    np.testing.assert_array_equal(plan.apply(np, t[a])[a], t[a])
    lo, hi = t[a][plan.stencil[0]], t[a][plan.stencil[3]]
    read = ~np.isin(np.arange(t.size), a)
    for b in breaks:
        assert not np.any(read & (lo < b) & (b <= hi))
    # a smooth decay read off every 6th frame: error at most 0.042·(6Δt/τ)⁴ of its size
    # (the stencils at the ends are one-sided; 0.023 between)
    decay = np.exp(-t / 0.4)
    err = np.abs(plan.apply(np, decay[a]) - decay).max()
    assert 0.0 < err <= 0.042 * (6 / 60.0 / 0.4) ** 4
    # stride 1, or too few frames: every frame is solved
    assert output_plan(t, breaks, 1) is None
    assert output_plan(t[:6], breaks, 3) is None
    assert output_plan(t, breaks, np.ones(t.size, dtype=int)) is None
    # one stride per frame: from each anchor the solver steps that frame's stride
    # (1 over the first second, 8 after), the anchors a break adds besides
    local = np.where(t < 1.0, 1, 8)
    plan = output_plan(t, np.empty(0), local)
    a = plan.anchors
    np.testing.assert_array_equal(a[:61], np.arange(61))
    np.testing.assert_array_equal(np.diff(a[60:-1]), 8)
    assert a[-1] == t.size - 1 and t.size - 1 - a[-2] <= 8
    np.testing.assert_allclose(plan.apply(np, cubic[a]), cubic, rtol=1e-10, atol=1e-12)
    uniform = output_plan(t, breaks, np.full(t.size, 6))
    np.testing.assert_array_equal(uniform.anchors, output_plan(t, breaks, 6).anchors)


def test_a_strided_solve_matches_the_solve_of_every_frame_and_its_gradient():
    from cainfer.infer._op import _solve_parts, forward_solver

    model = preset("pumps")
    t = np.arange(600) / 60.0
    stim = Stimulus(events=[1.0, 4.0, 4.05, 7.5])
    p = model.pack_raw({"influx_amplitude": 15.0})
    every = forward_solver(model, t, stim, substeps=1)(p)
    strided = forward_solver(model, t, stim, substeps=1, stride=4)(p)
    # four frames per step and per cubic: far below a noise sd of 1e-3 ΔF/F
    for x, y in zip(strided, every, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=2e-5 * np.abs(y).max())
    # in a graph the frames are read off the Op's outputs; its gradient by finite differences
    op, arrays, plan = _solve_parts(model, t, stim, 1, None, False, 4)
    assert plan is not None and plan.anchors.size < t.size / 2
    consts = [pt.as_tensor_variable(a) for a in arrays]
    free = np.array([model.slots()[k] for k in ("pmca_vmax", "kappa_s", "influx_amplitude")])
    w = np.random.default_rng(1).normal(size=t.size)

    def f(x):
        q = pt.set_subtensor(pt.as_tensor(p)[free], x)
        return (plan.apply(pt, op(q, *consts)[0]) * w).sum()

    pytensor.gradient.verify_grad(
        f, [p[free]], rng=np.random.default_rng(0), eps=1e-7, abs_tol=1e-5, rel_tol=1e-5
    )
