"""Terms with gating states and an IP3 input: known answers from solve_ivp and Li & Rinzel.

The Li–Rinzel closed cell (Li & Rinzel 1994, doi:10.1006/jtbi.1994.1041) at De
Young & Keizer's values is written out here as a plain ODE and solved with
scipy; :func:`cainfer.ip3_model` with its buffers removed is the same cell.
"""

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq
from scipy.signal import find_peaks

import cainfer
from cainfer.forward import (
    IP3R,
    PMCA,
    SERCA,
    CellModel,
    ERCompartment,
    ERLeak,
    EventInflux,
    Flux,
    GatedRelease,
    Indicator,
    LinearExtrusion,
    Parameter,
    PlasmaLeak,
    Prior,
    Stimulus,
)

# Li & Rinzel (1994), Table 1 (De Young & Keizer's values)
C0, C1, V1, V2, V3, K3 = 2.0, 0.185, 6.0, 0.11, 0.9, 0.1
D1, D2, D3, D5, A2 = 0.13, 1.049, 0.9434, 0.08234, 0.2
# an indicator too dilute to buffer: free calcium is Li & Rinzel's
TRACE_DYE = Indicator("trace", kd=1.0, hill=1.0, rf=5.0, b_total=1e-9, source="test")


def _lr(t, y, ip3):
    c, h = y
    cer = (C0 - c) / C1
    m, n = ip3 / (ip3 + D1), c / (c + D5)
    q2 = D2 * (ip3 + D1) / (ip3 + D3)
    flux = C1 * V1 * (m * n * h) ** 3 * (cer - c) + C1 * V2 * (cer - c) - V3 * c**2 / (K3**2 + c**2)
    return [flux, A2 * (q2 * (1.0 - h) - c * h)]


C_REST = brentq(lambda c: C1 * V2 * ((C0 - c) / C1 - c) - V3 * c**2 / (K3**2 + c**2), 1e-6, 1.0)
CER_REST = (C0 - C_REST) / C1
H_REST = D2 * D1 / D3 / (D2 * D1 / D3 + C_REST)


def _lr_model():
    return CellModel(
        [IP3R(), SERCA(vmax=V3, k=K3, hill=2.0), ERLeak()],
        indicator=TRACE_DYE,
        kappa_s=0.0,
        c_rest=C_REST,
        er=ERCompartment(c_rest=CER_REST, kappa=0.0, volume=C1),
    )


def _ip3_step(t_end, level, at=0.0):
    return Stimulus(waveform_time=[at, t_end], waveform=[level, level])


def _reference(ip3, t):
    return solve_ivp(_lr, (t[0], t[-1]), [C_REST, H_REST], args=(ip3,), t_eval=t,
                     rtol=1e-10, atol=1e-12, method="LSODA")  # fmt: skip


def _cycles(t, c):
    """Period (s) and peak-to-trough amplitude (µM) of the last half of a trace."""
    late = t > t[-1] / 2
    peaks, _ = find_peaks(c[late], prominence=1e-3)
    if peaks.size < 2:
        return np.nan, float(np.ptp(c[late]))
    return float(np.mean(np.diff(t[late][peaks]))), float(np.ptp(c[late]))


def test_the_resting_state_balances_the_leak_as_li_and_rinzel():
    m = _lr_model()
    assert m.states == ("c", "c_er", "ip3r_h")
    rest = m.resting_state()
    assert rest.derived["er_leak_rate"] == pytest.approx(C1 * V2, rel=1e-9)


def test_li_rinzel_oscillations_match_solve_ivp():
    """The trace, its period and amplitude at 0.5 µM IP3, against scipy's LSODA."""
    t = np.arange(0.0, 120.0, 0.05)
    ds = _lr_model().simulate(time=t, stimulus=_ip3_step(t[-1], 0.5))
    ref = _reference(0.5, t)
    # RK4 at the automatic step against a tight LSODA solution
    np.testing.assert_allclose(ds.ca.values, ref.y[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ds.ip3r_h.values, ref.y[1], rtol=0, atol=1e-6)
    period, amp = _cycles(t, ds.ca.values)
    ref_period, ref_amp = _cycles(t, ref.y[0])
    assert period == pytest.approx(ref_period, rel=1e-3)
    assert amp == pytest.approx(ref_amp, rel=1e-3)
    # Li & Rinzel's Fig. 2 regime: oscillations of about 0.3 µM every 10-13 s
    assert 10.0 < period < 13.0 and 0.25 < amp < 0.45


@pytest.mark.parametrize(("ip3", "oscillates"), [(0.3, False), (0.4, True), (0.75, False)])
def test_oscillations_only_between_the_thresholds(ip3, oscillates):
    """Below the lower Hopf point (≈0.355 µM) and above the upper (≈0.64 µM): a steady state."""
    t = np.arange(0.0, 200.0, 0.1)
    ds = _lr_model().simulate(time=t, stimulus=_ip3_step(t[-1], ip3))
    period, amp = _cycles(t, ds.ca.values)
    if oscillates:
        assert amp > 0.1 and np.isfinite(period)
    else:
        assert amp < 1e-3


def test_the_preset_oscillates_with_its_buffers():
    """ip3_model keeps Li & Rinzel's time course with κ_S and the indicator added."""
    m = cainfer.ip3_model("OGB-1")
    t = np.arange(0.0, 120.0, 0.05)
    ds = m.simulate(time=t, stimulus=_ip3_step(t[-1], 0.5))
    period, amp = _cycles(t, ds.ca.values)
    assert 8.0 < period < 14.0 and amp > 0.3
    assert np.ptp(ds.dff.values[t > 60]) > 1.0
    quiet = m.simulate(time=t, stimulus=_ip3_step(t[-1], 0.3))
    assert np.ptp(quiet.ca.values[t > 60]) < 1e-3


def test_the_adjoint_of_a_gated_model_matches_finite_differences():
    """The gradient runs through the gates, their resting values and the leak balance."""
    m = cainfer.ip3_model("OGB-1")
    t = np.arange(0.0, 30.0, 0.1)
    stim = Stimulus(waveform_time=[2.0, 2.5, t[-1]], waveform=[0.0, 0.5, 0.5])
    g = np.sin(0.3 * np.arange(t.size))
    _, grad = m.dff_vjp(None, t, stim, g, substeps=10)
    p = m.defaults()
    for name in ["ip3r_a2", "ip3r_vmax", "ip3r_d2", "ip3r_d5", "serca_vmax", "serca_hill",
                 "c_rest", "er_c_rest", "er_kappa", "kd", "kappa_s"]:  # fmt: skip
        h = 1e-6 * p[name]
        up = g @ m.dff_vjp({name: p[name] + h}, t, stim, g, substeps=10)[0]
        down = g @ m.dff_vjp({name: p[name] - h}, t, stim, g, substeps=10)[0]
        fd = (up - down) / (2 * h)
        assert grad[name] == pytest.approx(fd, rel=2e-5, abs=1e-7 * max(1.0, abs(fd))), name


def _release_model():
    return CellModel(
        [PMCA(), PlasmaLeak(), SERCA(), ERLeak(), GatedRelease(), EventInflux()],
        indicator="OGB-1",
    )


def test_gated_release_matches_solve_ivp():
    """Ca-induced release inactivating slowly: the system against a hand-written ODE."""
    m = _release_model()
    v = m.values({"gated_release_tau_inact": 1.5, "influx_amplitude": 40.0})
    rest = m.resting_state(v)
    t = np.arange(0.0, 6.0, 0.01)
    stim = Stimulus(events=[0.505, 3.005])  # between frames
    ds = m.simulate(v, time=t, stimulus=stim)
    kappa, bt, kd = v["kappa_s"], v["b_total"], v["kd"]

    def beta(c):
        return 1.0 + kappa + bt * kd / (kd + c) ** 2

    def hill(c, k, n):
        x = (max(c, 0.0) / k) ** n
        return x / (1.0 + x)

    leak_pm = rest.derived["leak_rate"]
    leak_er = rest.derived["er_leak_rate"]
    ki = v["gated_release_k_inact"]

    def rhs(_, y):
        c, cer, h = y
        pm = -v["pmca_vmax"] * hill(c, v["pmca_k"], v["pmca_hill"]) + leak_pm
        serca = -v["serca_vmax"] * hill(c, v["serca_k"], v["serca_hill"])
        act = hill(c, v["gated_release_k_act"], v["gated_release_hill_act"])
        rel = v["gated_release_rate"] * act * h * (cer - c)
        jx = serca + leak_er * (cer - c) + rel
        return [(pm + jx) / beta(c), -jx / (v["er_volume"] * (1.0 + v["er_kappa"])),
                (ki / (ki + c) - h) / v["gated_release_tau_inact"]]  # fmt: skip

    def jump(c):
        total = c * (1.0 + kappa) + bt * c / (kd + c) + v["influx_amplitude"]
        return brentq(lambda x: x * (1.0 + kappa) + bt * x / (kd + x) - total, 0.0, total)

    y = np.array([rest.c, rest.c_er, ki / (ki + rest.c)])
    edges = [t[0], *stim.events, t[-1]]
    ref = np.empty((3, t.size))
    for k in range(len(edges) - 1):
        sol = solve_ivp(rhs, (edges[k], edges[k + 1]), y, dense_output=True, rtol=1e-10,
                        atol=1e-12, method="LSODA")  # fmt: skip
        inside = (t >= edges[k]) & (t <= edges[k + 1])
        ref[:, inside] = sol.sol(t[inside])
        y = sol.y[:, -1].copy()
        y[0] = jump(y[0])  # the event: total calcium up by the amplitude
    np.testing.assert_allclose(ds.ca.values, ref[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ds.gated_release_h.values, ref[2], rtol=1e-4, atol=1e-6)
    # the second event releases less: the channel is still inactivated
    assert ds.gated_release_h.values[t < 3.0].min() < 0.9 * ds.gated_release_h.values[0]
    first = ds.ca_er.values[0] - ds.ca_er.values[(t > 0.5) & (t < 3.0)].min()
    second = ds.ca_er.values[t < 3.0][-1] - ds.ca_er.values[t > 3.0].min()
    assert first > 0 and second < first


class Inactivating(Flux):
    """A user's term: entry through a channel that inactivates with calcium."""

    compartment = "pm"
    default_name = "entry"
    gates = ("h",)
    declared = (
        Parameter("g", "µM/s", 30.0, Prior("lognormal", 30.0, 1.0, "test"), role="capacity"),
        Parameter("k_i", "µM", 0.3, Prior("lognormal", 0.3, 0.5, "test")),
        Parameter("tau", "s", 0.8, Prior("lognormal", 0.8, 0.5, "test")),
    )

    def rate(self, c, c_er):
        return self.g * self.waveform * self.h

    def gating(self, c, c_er):
        return ((self.k_i / (self.k_i + c), self.tau),)


def test_a_user_defined_gated_term_is_simulated_and_differentiated():
    m = CellModel([LinearExtrusion(), Inactivating(g=200.0, k_i=0.2)], indicator="OGB-1")
    t = np.arange(0.0, 8.0, 0.05)
    stim = Stimulus(waveform_time=[1.0, 1.05, 4.0, 4.05], waveform=[0.0, 1.0, 1.0, 0.0])
    ds = m.simulate(time=t, stimulus=stim)
    on = (t > 1.2) & (t < 4.0)
    # entry inactivates: calcium peaks and sags while the drive stays on
    assert ds.ca.values[on].max() > ds.ca.values[on][-1] * 1.2
    assert ds.entry_h.values[on][-1] < 0.6 * ds.entry_h.values[0]
    # at rest the gate sits at its steady state K_i/(K_i + c_rest)
    assert ds.entry_h.values[0] == pytest.approx(0.2 / (0.2 + 0.05), rel=1e-12)
    g = np.cos(0.2 * np.arange(t.size))
    _, grad = m.dff_vjp(None, t, stim, g, substeps=8)
    p = m.defaults()
    for name in ["entry_tau", "entry_k_i", "entry_g", "gamma"]:
        h = 1e-6 * p[name]
        up = g @ m.dff_vjp({name: p[name] + h}, t, stim, g, substeps=8)[0]
        down = g @ m.dff_vjp({name: p[name] - h}, t, stim, g, substeps=8)[0]
        fd = (up - down) / (2 * h)
        assert grad[name] == pytest.approx(fd, rel=2e-5, abs=1e-9), name


def test_a_saved_model_with_gates_and_priors_round_trips():
    m = cainfer.ip3_model("OGB-1")
    back = CellModel.from_dict(m.to_dict())
    assert back.parameters == m.parameters
    assert back.system_source() == m.system_source()
    assert back.parameters["ip3r_vmax"].prior.a == pytest.approx(m.defaults()["ip3r_vmax"])


def test_what_a_gated_model_refuses():
    with pytest.raises(ValueError, match="indicator in equilibrium"):
        cainfer.ip3_model(TRACE_DYE.with_(k_on=100.0, k_off=100.0), indicator_kinetics="kinetic")
    m = cainfer.ip3_model()
    with pytest.raises(ValueError, match="gating states"):
        m.term_fluxes(0.1)
    with pytest.raises(ValueError, match="must exceed c_rest"):
        m.resting_state({"er_c_rest": 0.05})
    with pytest.raises(TypeError, match="rate and gating"):

        class NoGating(Flux):
            compartment = "pm"
            default_name = "x"
            gates = ("h",)
            declared = ()

            def rate(self, c, c_er):
                return self.h

    with pytest.raises(ValueError, match="no parameter"):
        IP3R(priors={"nope": Prior("lognormal", 1.0, 1.0, "x")})
