import math

import numpy as np
import pytest
from scipy.integrate import simpson

import cainfer as ci
from cainfer.forward import (
    NCX,
    PMCA,
    CellModel,
    ERCompartment,
    EventInflux,
    LinearExtrusion,
    PlasmaLeak,
    Stimulus,
    WaveformInflux,
    er_model,
    indicator_capacity,
    preset,
    pumps_model,
    single_compartment,
)

PRESET_NAMES = ["single_compartment", "pumps", "er"]


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_fluxes_sum_to_zero_at_rest(name):
    model = preset(name, "GCaMP6f")
    for params in (None, {"c_rest": 0.08, "kappa_s": 150.0}):
        rest = model.resting_state(params)
        terms = model.term_fluxes(rest.c, None if math.isnan(rest.c_er) else rest.c_er, params)
        jpm = sum(a for a, _ in terms.values())
        jx = sum(b for _, b in terms.values())
        scale = max(abs(a).max() + abs(b).max() for a, b in terms.values())
        assert abs(jpm) <= 1e-12 * max(scale, 1.0)
        assert abs(jx) <= 1e-12 * max(scale, 1.0)
        # and a simulation without stimulus stays there
        ds = model.simulate(params, np.linspace(0, 5, 51))
        np.testing.assert_allclose(ds.ca, rest.c, rtol=1e-10)
        np.testing.assert_allclose(ds.dff, 0.0, atol=1e-10)


def test_resting_state_reports_derived_leaks():
    rest = er_model().resting_state()
    assert set(rest.derived) == {"leak_rate", "er_leak_rate"}
    assert rest.derived["leak_rate"] > 0 and rest.derived["er_leak_rate"] > 0
    assert pumps_model().resting_state().derived["leak_rate"] > 0
    assert single_compartment().resting_state().derived == {}


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_net_flux_integral_equals_change_in_total_calcium(name):
    model = preset(name)
    t = np.linspace(0.0, 6.0, 6001)
    stim = Stimulus(events=[0.5, 2.0, 2.02], weights=[1.0, 2.0, 1.0])
    params = {"influx_amplitude": 15.0}
    ds = model.simulate(params, t, stim, substeps=4)
    v = model.values(params)
    total_cell = ds.ca_total.values.copy()
    c_er = ds.ca_er.values if model.has_er else None
    if model.has_er:
        total_cell += v["er_volume"] * (1 + v["er_kappa"]) * c_er
    terms = model.term_fluxes(ds.ca.values, c_er, params)
    jpm = sum(a for a, _ in terms.values())
    # Integrate the plasma-membrane flux piecewise: it jumps at each event, and the
    # output at an event's time already sees the jump.
    integral = 0.0
    start = 0
    for ev in stim.events:
        k = int(np.searchsorted(t, ev))  # first output at or after the event
        integral += simpson(jpm[start:k], x=t[start:k]) if k - start > 1 else 0.0
        integral += (ev - t[k - 1]) * jpm[k - 1] + (t[k] - ev) * jpm[k]
        start = k
    integral += simpson(jpm[start:], x=t[start:])
    jumps = 15.0 * stim.event_weights.sum()
    change = total_cell[-1] - total_cell[0]
    # a small difference of large numbers: compare against the calcium added
    assert change == pytest.approx(integral + jumps, abs=1e-5 * jumps)


def test_small_signal_decay_time_constant():
    model = single_compartment("OGB-1")
    v = model.values({"gamma": 500.0, "kappa_s": 80.0, "influx_amplitude": 1e-3})
    ind = model.indicator_for(v)
    kappa_b = float(indicator_capacity(v["c_rest"], ind))
    tau_expected = (1 + v["kappa_s"] + kappa_b) / v["gamma"]
    t = np.linspace(0, 5 * tau_expected, 2001)
    ds = model.simulate(v, t, Stimulus(events=[0.0]))
    dc = ds.ca.values - v["c_rest"]
    # slope of log(Δc) between 1 and 3 time constants
    sel = (t > tau_expected) & (t < 3 * tau_expected)
    tau_fit = -1.0 / np.polyfit(t[sel], np.log(dc[sel]), 1)[0]
    assert tau_fit == pytest.approx(tau_expected, rel=0.02)


def _peak_and_tau(ds, c_rest):
    dc = ds.ca.values - c_rest
    i = int(np.argmax(dc))
    after = np.flatnonzero(dc[i:] < dc[i] / math.e)
    return dc[i], ds.time.values[i + after[0]] - ds.time.values[i]


def test_more_buffer_gives_smaller_jump_and_slower_decay():
    model = single_compartment("OGB-1")
    t = np.linspace(0, 4, 4001)
    stim = Stimulus(events=[0.1])
    lo = _peak_and_tau(model.simulate({"kappa_s": 50.0}, t, stim), 0.05)
    hi = _peak_and_tau(model.simulate({"kappa_s": 150.0}, t, stim), 0.05)
    assert hi[0] < lo[0]
    assert hi[1] > lo[1]
    more_dye = _peak_and_tau(model.simulate({"kappa_s": 50.0, "b_total": 150.0}, t, stim), 0.05)
    assert more_dye[0] < lo[0] and more_dye[1] > lo[1]


def test_pmca_dominates_near_rest_and_ncx_at_several_micromolar():
    model = pumps_model()
    terms = model.term_fluxes(np.array([0.05, 0.1, 5.0, 10.0]))
    pmca, ncx = -terms["pmca"][0], -terms["ncx"][0]
    assert np.all(pmca[:2] > ncx[:2])
    assert np.all(ncx[2:] > pmca[2:])


def test_release_regenerates_only_above_threshold_with_loaded_er():
    model = er_model()
    t = np.linspace(0, 5, 501)
    v = model.values()
    below = model.simulate(None, t, initial={"c": 0.4 * v["release_k_act"]})
    above = model.simulate(None, t, initial={"c": 1.6 * v["release_k_act"]})
    depleted = model.simulate(None, t, initial={"c": 1.6 * v["release_k_act"], "c_er": 5.0})
    c0 = 1.6 * v["release_k_act"]
    assert below.ca.max() == pytest.approx(below.ca[0])  # decays monotonically from the start
    assert np.all(np.diff(below.ca.values) <= 1e-12)
    assert above.ca.max() > 2 * c0  # regenerative rise
    assert above.ca_er.min() < 0.6 * v["er_c_rest"]  # by emptying the store
    assert depleted.ca.max() == pytest.approx(c0)  # an empty store cannot sustain it
    for ds in (below, above, depleted):
        assert ds.ca.values[-1] == pytest.approx(v["c_rest"], rel=0.2)


def test_store_operated_entry_switches_on_when_er_is_depleted():
    model = er_model()
    v = model.values()
    soce = model.term_fluxes(v["c_rest"], np.array([v["er_c_rest"], 0.1 * v["er_c_rest"], 1.0]))[
        "soce"
    ][0]
    assert soce[0] < 0.1 * v["soce_vmax"]
    assert soce[1] > 0.9 * v["soce_vmax"] and soce[2] > soce[1]
    t = np.linspace(0, 30, 301)
    ds = model.simulate(None, t, initial={"c_er": 5.0})
    total_cell = ds.ca_total + v["er_volume"] * (1 + v["er_kappa"]) * ds.ca_er
    assert float(total_cell[-1] - total_cell[0]) > 0  # net entry refills the cell
    assert float(ds.ca_er[-1]) > 10 * 5.0


def test_waveform_influx_adds_amplitude_times_waveform():
    model = CellModel([LinearExtrusion(), WaveformInflux()], indicator="OGB-1")
    stim = Stimulus(waveform_time=[1.0, 1.001, 2.0, 2.001], waveform=[0.0, 1.0, 1.0, 0.0])
    t = np.linspace(0, 12, 1201)
    ds = model.simulate({"waveform_amplitude": 40.0, "gamma": 400.0}, t, stim)
    v = model.values()
    # at the end of a 1 s step the cell approaches c_rest + J/γ from below
    c_end = float(ds.ca.sel(time=2.0, method="nearest"))
    assert v["c_rest"] < c_end < v["c_rest"] + 40.0 / 400.0
    assert float(ds.ca[-1]) == pytest.approx(v["c_rest"], rel=1e-3)


def test_free_is_at_most_total_along_a_simulation():
    ds = er_model("GCaMP6s").simulate(None, np.linspace(0, 10, 1001), Stimulus.train([1, 5], n=5))
    assert np.all(ds.ca.values <= ds.ca_total.values)
    assert np.all(ds.ca.values > 0)


def test_user_composed_model_and_parameter_listing():
    model = CellModel(
        [PMCA(vmax=50.0), NCX(name="ncx_soma"), PlasmaLeak(), EventInflux()],
        indicator="jGCaMP7f",
        kappa_s=30.0,
    )
    params = model.parameters
    assert params["pmca_vmax"].default == 50.0
    assert "ncx_soma_vmax" in params and params["ncx_soma_k"].unit == "µM"
    assert params["kappa_s"].default == 30.0
    assert params["kd"].default == pytest.approx(0.174)
    for p in params.values():
        assert p.prior.source, p.name
    assert model.simulate(None, np.arange(10) / 30.0).dff.shape == (10,)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"kappa_s": -1.0}, r"'kappa_s'.*allowed range \[0, 100000\]"),
        ({"c_rest": float("nan")}, r"'c_rest'.*allowed range \(0, 10\]"),
        ({"gamma": 0.0}, r"'gamma'.*allowed range"),
        ({"kd": -0.2}, r"'kd'"),
        ({"no_such": 1.0}, r"unknown parameter.*no_such.*known"),
    ],
)
def test_bad_parameters_raise(params, match):
    with pytest.raises(ValueError, match=match):
        single_compartment().simulate(params, np.arange(5.0))


def test_bad_time_and_stimulus_raise():
    model = single_compartment()
    with pytest.raises(ValueError, match="strictly increasing"):
        model.simulate(None, [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        model.simulate(None, [0.0, np.nan])
    with pytest.raises(
        ValueError, match=r"event at t = 12 s lies outside the recording \[0, 9\] s"
    ):
        model.simulate(None, np.arange(10.0), Stimulus(events=[1.0, 12.0]))
    with pytest.raises(ValueError, match="outside the recording"):
        model.simulate(None, np.arange(10.0), Stimulus(events=[-0.5]))
    with pytest.raises(ValueError, match="no term of the model reads it"):
        model.simulate(None, np.arange(10.0), Stimulus(waveform_time=[1, 2], waveform=[1, 0]))
    with pytest.raises(ValueError, match="initial c"):
        model.simulate(None, np.arange(10.0), initial={"c": -1.0})
    with pytest.raises(ValueError, match="substeps"):
        model.simulate(None, np.arange(10.0), substeps=0)


def test_bad_model_construction_raises():
    with pytest.raises(ValueError, match=r"unknown model preset 'foo'.*pumps"):
        preset("foo")
    with pytest.raises(ValueError, match="unknown indicator"):
        single_compartment("nope")
    with pytest.raises(ValueError, match="two terms declare parameter 'pmca_vmax'"):
        CellModel([PMCA(), PMCA(), PlasmaLeak()])
    with pytest.raises(ValueError, match="ER compartment was given"):
        CellModel([PMCA(), PlasmaLeak()], er=ERCompartment())
    with pytest.raises(ValueError, match="add a PlasmaLeak"):
        CellModel([PMCA()]).resting_state()
    with pytest.raises(ValueError, match="PMCA has no parameter"):
        PMCA(vmx=3.0)
    with pytest.raises(ValueError, match="'pmca_k'"):
        PMCA(k=-1.0)
    with pytest.raises(ValueError, match="er_c_rest"):
        er_model().resting_state({"er_c_rest": 0.01})


def test_top_level_reexports():
    assert ci.single_compartment is single_compartment
    assert ci.preset("pumps").name == "pumps"


@pytest.mark.parametrize(
    "model",
    [
        CellModel(
            [PMCA(vmax=50.0), NCX(name="ncx2", k=3.0), PlasmaLeak(), EventInflux()],
            indicator=ci.get_indicator("GCaMP6s", b_total=12.0),
            kappa_s=90.0,
            name="mine",
        ),
        er_model("jGCaMP7f"),
        single_compartment(),
    ],
    ids=["custom", "er", "single"],
)
def test_model_description_round_trip(model):
    import json

    spec = json.loads(json.dumps(model.to_dict()))
    back = CellModel.from_dict(spec)
    assert back.defaults() == model.defaults()
    assert back.name == model.name and back.has_er == model.has_er
    t = np.arange(60) / 30.0
    stim = Stimulus(events=[0.5])
    np.testing.assert_array_equal(
        back.simulate(None, t, stim).dff, model.simulate(None, t, stim).dff
    )
    with pytest.raises(ValueError, match="unknown flux class 'Teleporter'"):
        CellModel.from_dict(
            spec | {"fluxes": [{"class": "Teleporter", "name": "x", "defaults": {}}]}
        )


def test_a_term_the_solver_cannot_run_is_refused():
    """A term without a rate used to add no flux at all, silently; now it is named."""
    from cainfer.forward import Flux, Parameter, Prior

    class MyTerm(Flux):
        compartment = "pm"
        default_name = "mine"
        declared = (Parameter("rate", "1/s", 5.0, Prior("lognormal", 5.0, 1.0)),)

    with pytest.raises(ValueError, match=r"flux term MyTerm: the compiled solver has no kernel"):
        CellModel([PMCA(), MyTerm(), EventInflux(), PlasmaLeak()])

    # a value the resting balance sets belongs to the built-in leaks, which the balance finds
    with pytest.raises(TypeError, match="FakeLeak: only the built-in leaks have values set"):

        class FakeLeak(Flux):
            compartment = "pm"
            default_name = "leak"
            derived = ("j",)

            def rate(self, c, c_er):
                return self.j

    class TwoParameterPMCA(PMCA):
        declared = PMCA.declared[:2]

    with pytest.raises(ValueError, match=r"declares parameters \['vmax', 'k'\].*reads"):
        CellModel([TwoParameterPMCA(), EventInflux(), PlasmaLeak()])


def test_a_renamed_subclass_runs_as_its_term():
    class SlowPump(PMCA):
        default_name = "slow"

    t = np.arange(60) / 30.0
    stim = Stimulus(events=[0.5])
    mine = CellModel([SlowPump(vmax=40.0), EventInflux(), PlasmaLeak()])
    ref = CellModel([PMCA(vmax=40.0), EventInflux(), PlasmaLeak()])
    assert "slow_vmax" in mine.parameters and mine.parameters["slow_vmax"].default == 40.0
    a = mine.simulate(None, t, stim).dff.values
    b = ref.simulate(None, t, stim).dff.values
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)  # the same kernel, same arithmetic
    # saved as the term it runs as, under its own name and defaults
    again = CellModel.from_dict(mine.to_dict())
    assert type(again.fluxes[0]) is PMCA and again.fluxes[0].name == "slow"
    assert again.parameters["slow_vmax"].default == 40.0
    np.testing.assert_allclose(again.simulate(None, t, stim).dff.values, a, rtol=1e-12, atol=1e-15)
