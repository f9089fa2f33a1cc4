"""The discrete adjoint against central finite differences of the forward solve."""

import numpy as np
import pytest

from cainfer.forward import (
    CellModel,
    EventInflux,
    LinearExtrusion,
    Stimulus,
    WaveformInflux,
    get_indicator,
    preset,
)
from cainfer.forward._adjoint import beta_d
from cainfer.forward._kernels import buffer_capacity

TIME = np.arange(240) / 30.0
STIM = Stimulus(events=[1.0, 1.05, 4.017, 6.5], weights=[1.0, 1.0, 2.0, 1.0])


def _check_gradient(model, params, stim, substeps=3, rtol=1e-5, rng=None):
    rng = rng or np.random.default_rng(7)
    g = rng.normal(size=TIME.size)
    dff, grad = model.dff_vjp(params, TIME, stim, g, substeps=substeps)
    # the adjoint's forward pass and simulate() are separately compiled copies of the
    # same arithmetic: the compiler may contract a*b+c into one FMA in one and not the
    # other, so they agree to rounding, not bit for bit (seen: 2e-16 relative on one
    # machine, 4e-12 on another). 1e-9 is far above rounding accumulated over the
    # ~700 RK4 stages and far below the solver's own error (1e-6 against solve_ivp).
    np.testing.assert_allclose(
        dff, model.simulate(params, TIME, stim, substeps=substeps).dff, rtol=1e-9, atol=1e-12
    )
    v = model.values(params)
    assert set(grad) == set(v)
    for name, value in v.items():
        step = 1e-6 * abs(value) if value else 1e-7
        up, dn = dict(v), dict(v)
        up[name] = value + step
        dn[name] = value - step
        fd = (
            g @ model.simulate(up, TIME, stim, substeps=substeps).dff.values
            - g @ model.simulate(dn, TIME, stim, substeps=substeps).dff.values
        ) / (2 * step)
        scale = max(abs(fd), 1e-6 * max(abs(x) for x in grad.values()))
        assert abs(grad[name] - fd) <= rtol * scale, (name, grad[name], fd)


@pytest.mark.parametrize(
    ("name", "indicator"),
    [("single_compartment", "OGB-1"), ("pumps", "GCaMP6f"), ("er", "OGB-1"), ("er", "jGCaMP7s")],
)
def test_preset_gradients_match_finite_differences(name, indicator):
    _check_gradient(preset(name, indicator), {"influx_amplitude": 20.0}, STIM)


def test_gradient_through_regenerative_release():
    model = preset("er", "GCaMP6f")
    _check_gradient(model, {"influx_amplitude": 60.0}, STIM, substeps=12, rtol=1e-4)


def test_waveform_and_linear_extrusion_gradients():
    model = CellModel([LinearExtrusion(), EventInflux(), WaveformInflux()], indicator="GCaMP6s")
    stim = Stimulus(events=[2.0], waveform_time=[3.0, 3.5, 5.0], waveform=[0.0, 1.0, 0.0])
    _check_gradient(model, {"waveform_amplitude": 30.0}, stim)


@pytest.mark.parametrize("name", ["OGB-1", "GCaMP6f", "jGCaMP7b"])
def test_buffer_capacity_partials(name):
    ind = get_indicator(name)
    args = np.array([60.0, ind.b_total, ind.kd, ind.hill])
    for c in (0.02, 0.3, 4.0):
        b, *partials = beta_d(c, *args)
        assert b == pytest.approx(buffer_capacity(c, *args))
        # d/dc, d/dB_T, d/dK_d, d/dn by central differences
        for i, d in zip([None, 1, 2, 3], partials, strict=True):
            if i is None:
                h = 1e-6 * c
                fd = (buffer_capacity(c + h, *args) - buffer_capacity(c - h, *args)) / (2 * h)
            else:
                h = 1e-6 * args[i]
                up, dn = args.copy(), args.copy()
                up[i] += h
                dn[i] -= h
                fd = (buffer_capacity(c, *up) - buffer_capacity(c, *dn)) / (2 * h)
            assert d == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_vjp_bad_input():
    model = preset("pumps")
    with pytest.raises(ValueError, match="cotangent has 3 values for 240 output times"):
        model.dff_vjp(None, TIME, STIM, np.ones(3))
    with pytest.raises(ValueError, match="substeps = 0 must be an integer"):
        model.dff_vjp(None, TIME, STIM, np.ones(TIME.size), substeps=0)


def test_steps_chosen_per_frame_interval_solve_and_differentiate_like_uniform_ones():
    from cainfer.forward import _adjoint as A
    from cainfer.forward import _kernels as K

    model = preset("er", "OGB-1")
    p = model.pack_raw(model.values())
    # one count for every interval is the uniform solve
    uniform = model.kernel_args(TIME, STIM, substeps=3)
    per = model.kernel_args(TIME, STIM, substeps=np.full(TIME.size - 1, 3))
    np.testing.assert_array_equal(uniform[9], per[9])
    # counts that vary: interval i (ending at output i + 1) takes n[i] steps, and
    # an event inside it splits it into two parts of at most the same step each
    n = np.random.default_rng(3).integers(1, 5, TIME.size - 1)
    args = model.kernel_args(TIME, STIM, substeps=n)
    op, _, _, _ = K.schedule(args[0], args[1], args[9])
    outs = np.flatnonzero(op == K.S_OUT)
    steps = np.diff(np.cumsum(op == K.S_STEP)[outs])
    jumps = np.diff(np.cumsum(op == K.S_JUMP)[outs])
    np.testing.assert_array_equal(steps[jumps == 0], n[jumps == 0])
    assert np.all((steps[jumps > 0] >= n[jumps > 0]) & (steps[jumps > 0] <= n[jumps > 0] + 1))
    # between the solves with 1 and 4 steps everywhere, and its adjoint exact
    dff, _ = A.dff_forward(p, *args)
    lo = A.dff_forward(p, *model.kernel_args(TIME, STIM, substeps=1))[0]
    hi = A.dff_forward(p, *model.kernel_args(TIME, STIM, substeps=4))[0]
    assert np.abs(dff - hi).max() < np.abs(lo - hi).max()
    g = np.random.default_rng(7).normal(size=TIME.size)
    pbar = A.dff_vjp(p, *args, g, np.zeros_like(g))
    for slot in (model.slots()["serca_vmax"], model.slots()["influx_amplitude"]):
        step = 1e-6 * p[slot]
        up, dn = p.copy(), p.copy()
        up[slot] += step
        dn[slot] -= step
        fd = (g @ A.dff_forward(up, *args)[0] - g @ A.dff_forward(dn, *args)[0]) / (2 * step)
        assert pbar[slot] == pytest.approx(fd, rel=1e-5)
    with pytest.raises(ValueError, match="one per frame interval"):
        model.kernel_args(TIME, STIM, substeps=np.ones(5, int))
