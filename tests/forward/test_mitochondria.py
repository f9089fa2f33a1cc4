"""Mitochondria: uniporter uptake, NCLX release and a buffered matrix, against solve_ivp."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from cainfer.forward import (
    MCU,
    NCLX,
    CellModel,
    EventInflux,
    LinearExtrusion,
    MitoCompartment,
    Stimulus,
)

TRAIN = Stimulus.train([1.0], n=20, interval=0.05)


def _model():
    return CellModel([LinearExtrusion(), MCU(), NCLX(), EventInflux()], indicator="OGB-1")


def _uptake(v, c):
    x = (c / v["mcu_k"]) ** v["mcu_hill"]
    return v["mcu_vmax"] * x / (1.0 + x)


def test_the_matrix_rests_where_release_matches_uptake():
    m = _model()
    v = m.values(None)
    j = _uptake(v, v["c_rest"])
    expected = v["nclx_k"] * j / (v["nclx_vmax"] - j)  # V·c_m/(K + c_m) = J
    rest = m.resting_state()
    assert rest.derived["mito_c_rest"] == pytest.approx(expected, rel=1e-12)
    ds = m.simulate(time=np.arange(0.0, 2.0, 0.1))  # no stimulus: the cell stays at rest
    np.testing.assert_allclose(ds.ca_mito.values, expected, rtol=1e-10)
    np.testing.assert_allclose(ds.ca.values, v["c_rest"], rtol=1e-10)


def test_a_train_matches_solve_ivp():
    m = _model()
    v = m.values({"influx_amplitude": 20.0})
    t = np.arange(0.0, 20.0, 0.02) + 0.01  # events fall between frames
    ds = m.simulate(v, time=t, stimulus=TRAIN)
    kappa, bt, kd = v["kappa_s"], v["b_total"], v["kd"]
    cap_m = v["mito_volume"] * (1.0 + v["mito_kappa"])

    def total(c):
        return c * (1.0 + kappa) + bt * c / (kd + c)

    def rhs(_, y):
        c, cm = y
        jm = -_uptake(v, max(c, 0.0)) + v["nclx_vmax"] * cm / (v["nclx_k"] + cm)
        beta = 1.0 + kappa + bt * kd / (kd + c) ** 2
        return [(-v["gamma"] * (c - v["c_rest"]) + jm) / beta, -jm / cap_m]

    y = np.array([v["c_rest"], m.resting_state(v).derived["mito_c_rest"]])
    edges = [t[0], *TRAIN.events, t[-1]]
    ref = np.empty((2, t.size))
    for k in range(len(edges) - 1):
        sol = solve_ivp(rhs, (edges[k], edges[k + 1]), y, dense_output=True, rtol=1e-10,
                        atol=1e-13, method="LSODA")  # fmt: skip
        inside = (t >= edges[k]) & (t <= edges[k + 1])
        ref[:, inside] = sol.sol(t[inside])
        y = sol.y[:, -1].copy()
        tot = total(y[0]) + v["influx_amplitude"]
        y[0] = brentq(lambda c, tot=tot: total(c) - tot, 0.0, tot)
    np.testing.assert_allclose(ds.ca.values, ref[0], rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(ds.ca_mito.values, ref[1], rtol=2e-5, atol=1e-7)


def test_mitochondria_clip_the_peak_and_release_the_calcium_slowly():
    """The firebreak and the slow tail: against the same cell without mitochondria."""
    with_m = _model()
    without = CellModel([LinearExtrusion(), EventInflux()], indicator="OGB-1")
    t = np.arange(0.0, 30.0, 0.05) + 0.01
    a = with_m.simulate({"influx_amplitude": 100.0}, time=t, stimulus=TRAIN)
    b = without.simulate({"influx_amplitude": 100.0}, time=t, stimulus=TRAIN)
    assert a.ca.values.max() < 0.8 * b.ca.values.max()
    # gentle rises pass: with a fifth of the load the peak is clipped less
    small = with_m.simulate({"influx_amplitude": 20.0}, time=t, stimulus=TRAIN).ca.values.max()
    small_b = without.simulate({"influx_amplitude": 20.0}, time=t, stimulus=TRAIN).ca.values.max()
    assert small > 0.85 * small_b
    late = t > 10.0
    # without mitochondria calcium is back at rest; with them it stays up while the
    # matrix empties
    assert np.all(b.ca.values[late] - 0.05 < 1e-6)
    assert np.all(a.ca.values[late] - 0.05 > 3e-3)
    assert a.ca_mito.values[late][0] > 10 * a.ca_mito.values[0]
    assert np.all(np.diff(a.ca_mito.values[late]) < 0)


def test_the_adjoint_runs_through_the_matrix_resting_state():
    m = _model()
    t = np.arange(0.0, 10.0, 0.05) + 0.01
    g = np.sin(0.1 * np.arange(t.size))
    v = m.values({"influx_amplitude": 20.0})
    _, grad = m.dff_vjp(v, t, TRAIN, g, substeps=4)
    for name in ["mcu_vmax", "mcu_k", "mcu_hill", "nclx_vmax", "nclx_k", "mito_kappa",
                 "mito_volume", "c_rest", "gamma", "kd"]:  # fmt: skip
        h = 1e-6 * v[name]
        up = g @ m.dff_vjp({**v, name: v[name] + h}, t, TRAIN, g, substeps=4)[0]
        down = g @ m.dff_vjp({**v, name: v[name] - h}, t, TRAIN, g, substeps=4)[0]
        fd = (up - down) / (2 * h)
        assert grad[name] == pytest.approx(fd, rel=2e-5, abs=1e-9 * max(1.0, abs(fd))), name


def test_mitochondria_that_cannot_rest_are_refused():
    m = _model()
    v = m.values(None)
    with pytest.raises(ValueError, match="cannot be at rest"):
        m.resting_state({"nclx_vmax": 0.5 * _uptake(v, v["c_rest"])})
    with pytest.raises(ValueError, match="no flux term uses it"):
        CellModel([LinearExtrusion()], mito=MitoCompartment())


def test_a_model_with_mitochondria_round_trips():
    m = CellModel([LinearExtrusion(), MCU(), NCLX()], mito=MitoCompartment(kappa=300.0))
    back = CellModel.from_dict(m.to_dict())
    assert back.parameters == m.parameters
    assert back.states == ("c", "c_mito")
    assert back.defaults()["mito_kappa"] == 300.0
