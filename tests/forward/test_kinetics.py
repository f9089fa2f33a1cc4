"""Indicator binding kinetics (``indicator_kinetics="kinetic"``)."""

import numpy as np
import pytest
from scipy.integrate import simpson

from cainfer.forward import CellModel, LinearExtrusion, Stimulus, get_indicator, preset
from cainfer.testing import reference_simulate

FRAMES = np.arange(300) / 30.0
# events between frames, so that every frame is at least 1/60 s after an event
BETWEEN = Stimulus(events=np.array([1.0, 1.1, 4.0, 7.0]) + 1 / 60)


def _with_kinetics(name, k_off):
    ind = get_indicator(name)
    return ind.with_(k_off=k_off, k_on=k_off / ind.kd**ind.hill)


@pytest.mark.parametrize("solver", ["rk4", "sdirk"])
@pytest.mark.parametrize(("name", "k_off"), [("GCaMP6f", 3.0), ("OGB-1", 100.0)])
@pytest.mark.parametrize("model_name", ["single_compartment", "pumps"])
def test_kinetic_indicator_matches_solve_ivp(name, k_off, model_name, solver):
    model = preset(model_name, _with_kinetics(name, k_off), indicator_kinetics="kinetic")
    params = {"influx_amplitude": 20.0}
    ds = model.simulate(params, FRAMES, BETWEEN, solver=solver)
    assert ds.attrs["solver"].startswith(solver.upper())
    ref = reference_simulate(model, params, FRAMES, BETWEEN)
    assert ds.dff.max() > 0.3
    np.testing.assert_allclose(ds.dff, ref["dff"], rtol=0, atol=1e-4)
    # RK4 takes the many short steps its stability needs and is accurate far below
    # them; SDIRK3 steps at 1/120 s and is accurate to ~1e-5 relative there
    rtol = 1e-6 if solver == "rk4" else 3e-5
    np.testing.assert_allclose(ds.dye_bound, ref["dye_bound"], rtol=rtol)


def test_fast_binding_approaches_the_equilibrium_model():
    ind = _with_kinetics("OGB-1", 2000.0)
    kin = preset("single_compartment", ind, indicator_kinetics="kinetic")
    eq = preset("single_compartment", ind)
    a = kin.simulate(None, FRAMES, BETWEEN).dff.values
    b = eq.simulate(None, FRAMES, BETWEEN).dff.values
    assert np.abs(a - b).max() < 1e-3 * np.abs(b).max()


def test_slow_binding_lowers_and_delays_the_peak():
    ind = _with_kinetics("GCaMP6f", 1.0)
    stim = Stimulus(events=[1.0])
    kin = preset("single_compartment", ind, indicator_kinetics="kinetic").simulate(
        None, FRAMES, stim
    )
    eq = preset("single_compartment", ind).simulate(None, FRAMES, stim)
    assert kin.dff.max() < 0.8 * eq.dff.max()
    assert FRAMES[np.argmax(kin.dff.values)] > FRAMES[np.argmax(eq.dff.values)] + 0.05
    # at the event instant the indicator has not bound yet: free Ca is higher
    i = int(np.searchsorted(FRAMES, 1.0))
    assert kin.ca[i] > eq.ca[i]
    assert kin.dff[i] == pytest.approx(0.0, abs=1e-12)


def test_kinetic_conservation_of_total_calcium():
    model = preset("pumps", _with_kinetics("GCaMP6s", 5.0), indicator_kinetics="kinetic")
    t = np.linspace(0.0, 3.0, 30001)
    stim = Stimulus(events=[0.50005])
    ds = model.simulate({"influx_amplitude": 10.0}, t, stim, substeps=1)
    jpm = sum(
        a for a, _ in model.term_fluxes(ds.ca.values, None, {"influx_amplitude": 10.0}).values()
    )
    k = int(np.searchsorted(t, 0.50005))  # first output after the event
    gap = (0.50005 - t[k - 1]) * jpm[k - 1] + (t[k] - 0.50005) * jpm[k]  # flux jumps there
    integral = simpson(jpm[:k], x=t[:k]) + gap + simpson(jpm[k:], x=t[k:])
    change = float(ds.ca_total[-1] - ds.ca_total[0])
    assert change == pytest.approx(integral + 10.0, abs=1e-5 * 10.0)


def test_kinetic_needs_rate_constants_and_adds_k_off():
    with pytest.raises(ValueError, match="has no k_on/k_off"):
        preset("pumps", "GCaMP6f", indicator_kinetics="kinetic")
    with pytest.raises(ValueError, match="allowed: 'equilibrium', 'kinetic'"):
        CellModel([LinearExtrusion()], indicator_kinetics="fast")  # type: ignore[arg-type]
    model = preset("pumps", _with_kinetics("GCaMP6f", 4.0), indicator_kinetics="kinetic")
    assert model.parameters["k_off"].default == 4.0
    assert "k_off" not in preset("pumps").parameters


def test_solver_choice_is_validated():
    kinetic = preset("pumps", _with_kinetics("GCaMP6f", 4.0), indicator_kinetics="kinetic")
    assert kinetic.simulate(None, FRAMES, BETWEEN).attrs["solver"].startswith("SDIRK")
    assert preset("pumps").simulate(None, FRAMES, BETWEEN).attrs["solver"].startswith("RK4")
    with pytest.raises(ValueError, match="solver='sdirk' needs indicator_kinetics='kinetic'"):
        preset("pumps").simulate(None, FRAMES, BETWEEN, solver="sdirk")
    with pytest.raises(ValueError, match="allowed: 'auto', 'rk4', 'sdirk'"):
        kinetic.simulate(None, FRAMES, BETWEEN, solver="euler")  # type: ignore[arg-type]


# ---------------------------------------------------- the sequential (two-step) scheme


def _sequential(name, k_off, phi):
    return _with_kinetics(name, k_off).with_(switch_ratio=phi)


@pytest.mark.parametrize("solver", ["rk4", "sdirk"])
@pytest.mark.parametrize(
    ("model_name", "name", "k_off", "phi"),
    [("pumps", "GCaMP6s", 1.0, 3.0), ("single_compartment", "GCaMP6f", 3.0, 0.5)],
)
def test_sequential_scheme_matches_solve_ivp(model_name, name, k_off, phi, solver):
    # the reference integrates total calcium and the bright state, and finds free Ca with
    # the dim bound state by brentq: a different formulation of the same scheme
    model = preset(model_name, _sequential(name, k_off, phi), indicator_kinetics="kinetic")
    assert model.parameters["switch_ratio"].default == phi
    params = {"influx_amplitude": 20.0}
    ds = model.simulate(params, FRAMES, BETWEEN, solver=solver)
    ref = reference_simulate(model, params, FRAMES, BETWEEN, method="Radau")
    assert ds.dff.max() > 0.3
    np.testing.assert_allclose(ds.dff, ref["dff"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(ds.dye_bound, ref["dye_bound"], rtol=3e-5)
    np.testing.assert_allclose(ds.ca, ref["ca"], rtol=3e-5, atol=1e-9)


def test_switch_ratio_zero_is_one_step_binding():
    one = preset("pumps", _with_kinetics("GCaMP6f", 3.0), indicator_kinetics="kinetic")
    assert "switch_ratio" not in one.parameters
    near = preset("pumps", _sequential("GCaMP6f", 3.0, 1e-9), indicator_kinetics="kinetic")
    a = one.simulate({"influx_amplitude": 20.0}, FRAMES, BETWEEN)
    b = near.simulate({"influx_amplitude": 20.0}, FRAMES, BETWEEN)
    # the scheme is smooth in φ: its ΔF/F moves by O(φ), here 1e-9
    np.testing.assert_allclose(b.dff, a.dff, rtol=0, atol=1e-7)


def test_sequential_scheme_with_fast_rates_is_the_equilibrium_model():
    # the bright state at equilibrium is x/((1 + φ)(1 + x)) of B_T and the indicator's
    # calcium B_T·x/(1 + x): the equilibrium model's fluorescence and buffering, whatever φ
    ind = _sequential("GCaMP6f", 4000.0, 2.0)
    kin = preset("single_compartment", ind, indicator_kinetics="kinetic")
    eq = preset("single_compartment", ind)
    a = kin.simulate(None, FRAMES, BETWEEN).dff.values
    b = eq.simulate(None, FRAMES, BETWEEN).dff.values
    assert np.abs(a - b).max() < 2e-3 * np.abs(b).max()


def test_a_slow_switch_delays_the_rise_but_not_the_decay():
    # same k_off (the bright state's decay), a slower switch into it (k_off/φ)
    stim = Stimulus(events=[1.0])
    t = np.arange(600) / 60.0
    runs = {}
    for phi in (0.0, 10.0):
        ind = _sequential("GCaMP6s", 0.5, phi) if phi else _with_kinetics("GCaMP6s", 0.5)
        model = preset("single_compartment", ind, indicator_kinetics="kinetic")
        runs[phi] = model.simulate({"gamma": 2000.0, "influx_amplitude": 10.0}, t, stim)
    one, two = runs[0.0].dff.values, runs[10.0].dff.values
    assert t[np.argmax(two)] > t[np.argmax(one)] + 0.1
    # late, free calcium is back at rest and both decay at k_off(1 + x_rest·…) ≈ k_off:
    # the log-slope over 6-9 s agrees within 5 %
    late = (t >= 6.0) & (t <= 9.0)
    slopes = [np.polyfit(t[late], np.log(d[late]), 1)[0] for d in (one, two)]
    assert slopes[0] == pytest.approx(slopes[1], rel=0.05)
    assert slopes[0] == pytest.approx(-0.5, rel=0.1)


@pytest.mark.parametrize("phi", [0.0, 2.0])
def test_sequential_conservation_of_total_calcium(phi):
    ind = _sequential("GCaMP6s", 5.0, phi)
    model = preset("pumps", ind, indicator_kinetics="kinetic")
    t = np.linspace(0.0, 3.0, 3001)
    stim = Stimulus(events=[0.5005])
    ds = model.simulate({"influx_amplitude": 10.0}, t, stim)
    jpm = sum(
        a for a, _ in model.term_fluxes(ds.ca.values, None, {"influx_amplitude": 10.0}).values()
    )
    k = int(np.searchsorted(t, 0.5005))
    gap = (0.5005 - t[k - 1]) * jpm[k - 1] + (t[k] - 0.5005) * jpm[k]
    integral = simpson(jpm[:k], x=t[:k]) + gap + simpson(jpm[k:], x=t[k:])
    change = float(ds.ca_total[-1] - ds.ca_total[0])
    assert change == pytest.approx(integral + 10.0, abs=2e-4 * 10.0)


def test_switch_ratio_is_validated_and_saved():
    with pytest.raises(ValueError, match=r"switch_ratio = -1\.0 must be a finite number"):
        _sequential("GCaMP6f", 3.0, -1.0)
    model = preset("pumps", _sequential("GCaMP6f", 3.0, 2.5), indicator_kinetics="kinetic")
    assert model.parameters["switch_ratio"].prior.kind == "lognormal"
    again = CellModel.from_dict(model.to_dict())
    assert again.indicator.switch_ratio == 2.5
    assert again.parameters["switch_ratio"].default == 2.5
    # the equilibrium model has no use for it
    assert "switch_ratio" not in preset("pumps", _sequential("GCaMP6f", 3.0, 2.5)).parameters
