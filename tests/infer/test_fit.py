import dataclasses
import html
import importlib
import itertools
import math
import re

import numpy as np
import pytest
import xarray as xr

import cainfer
from cainfer.forward import Prior
from cainfer.infer import fit, load_fit
from cainfer.infer._op import forward_solver
from cainfer.synthetic import simulate_traces
from tests.infer.conftest import STIM, TIME, TRUTH, assert_compact_round_trip


@pytest.mark.slow
def test_true_values_inside_94_hdi_and_converged(recovery):
    _, result = recovery
    s = result.summary(round_to="none")
    for name, value in TRUTH.items():
        assert s.loc[name, "hdi94_lb"] <= value <= s.loc[name, "hdi94_ub"], (name, s.loc[name])
    assert (s["r_hat"].astype(float) <= 1.01).all()
    assert result.ok and result.problems == []
    assert s.loc["sigma", "hdi94_lb"] <= 0.03 <= s.loc["sigma", "hdi94_ub"]


def test_the_summary_shows_an_interval_to_the_sd_s_digits(recovery):
    """A narrow 94 % HDI prints as two numbers, rounded to the sd's second digit."""
    _, result = recovery
    raw = result.summary(round_to="none")
    shown = result.summary()
    text = shown.to_string()
    for name in ["gamma", "influx_amplitude", "sigma"]:
        sd = raw.loc[name, "sd"]
        digits = max(0, 1 - int(np.floor(np.log10(sd))))
        for col in ["mean", "hdi94_lb", "hdi94_ub"]:
            assert abs(shown.loc[name, col] - raw.loc[name, col]) <= 0.5 * 10.0**-digits
            assert f"{raw.loc[name, col]:.{digits}f}" in text, (name, col, text)
        assert shown.loc[name, "hdi94_lb"] < shown.loc[name, "hdi94_ub"]
    with pytest.raises(ValueError, match="round_to"):
        result.summary(round_to="two")


@pytest.mark.slow
def test_result_groups_and_predictions(recovery):
    model, result = recovery
    idata = result.idata
    for group in (
        "posterior",
        "sample_stats",
        "prior",
        "observed_data",
        "posterior_predictive",
        "log_likelihood",
    ):
        assert group in idata.children, group
    pp = idata["posterior_predictive"]
    assert pp["dff"].shape == (2, 1000, TIME.size) and pp["ca"].shape == (2, 1000, TIME.size)
    assert idata["log_likelihood"]["y"].shape == (2, 1000, TIME.size - 3)
    # each draw's predicted calcium is the forward model's at that draw's parameters:
    # the solve the likelihood saw (at the fit's output strides) to rounding, and the
    # simulator's solve of every frame to the strides' interpolation (well below the
    # 3 % that γ's posterior sd moves the decay by)
    post = idata["posterior"]
    forward = forward_solver(model, TIME, STIM, substeps=1, stride=result._stride())
    for chain, draw in ((0, 0), (1, 777)):
        p = {k: float(post[k][chain, draw]) for k in ("gamma", "influx_amplitude")}
        dff, ca = forward(model.pack_raw(model.values(p)))
        np.testing.assert_allclose(pp["ca"][chain, draw], ca, rtol=1e-9)
        np.testing.assert_allclose(pp["dff_mean"][chain, draw], dff, rtol=1e-9, atol=1e-12)
        sim = model.simulate(p, TIME, STIM, substeps=1)
        np.testing.assert_allclose(pp["ca"][chain, draw], sim.ca, rtol=1e-2)
        np.testing.assert_allclose(pp["dff_mean"][chain, draw], sim.dff, rtol=0,
                                   atol=1e-2 * float(sim.dff.max()))  # fmt: skip
    # and its 94% band holds the true calcium
    truth_ca = model.simulate(TRUTH, TIME, STIM, substeps=1).ca.values
    lo, hi = np.quantile(np.asarray(pp["ca"]).reshape(-1, TIME.size), [0.03, 0.97], axis=0)
    assert np.mean((truth_ca >= lo - 1e-9) & (truth_ca <= hi + 1e-9)) > 0.9


@pytest.mark.slow
def test_save_and_load_round_trip(recovery, tmp_path):
    _, result = recovery
    path = result.save(tmp_path / "fit.nc")
    back = load_fit(path)
    assert back.free == result.free and back.fixed == result.fixed
    assert back.model.to_dict() == result.model.to_dict()
    xr.testing.assert_allclose(back.idata["posterior"].ds, result.idata["posterior"].ds)
    assert back.posterior_mean() == pytest.approx(result.posterior_mean())
    assert not list(tmp_path.glob(".*tmp*"))
    assert back.compact
    np.testing.assert_array_equal(back.stimulus().events, STIM.events)


@pytest.mark.slow
def test_a_compact_fit_recomputes_its_predictive_and_log_likelihood(recovery, tmp_path):
    model, result = recovery
    back = assert_compact_round_trip(result, tmp_path / "fit.nc")
    # the trace plot of a loaded fit reads the saved bands; another probability recomputes
    again = load_fit(tmp_path / "fit.nc")
    again.plot_trace(path=tmp_path / "a.png")
    assert again.compact and (tmp_path / "a.png").stat().st_size > 0
    again.plot_trace(ci_prob=0.5, path=tmp_path / "b.png")
    assert not again.compact
    # LOO of the saved fit is the fitted one's
    table = cainfer.compare({"saved": load_fit(tmp_path / "fit.nc"), "fitted": result})
    assert table.loc["saved", "elpd"] == pytest.approx(table.loc["fitted", "elpd"], rel=1e-9)
    # predict() without a recording is the fitted one: each draw through the forward model
    pred = back.predict(draws=3)
    post = back.idata["posterior"]
    last = (1, post.sizes["draw"] - 1)
    p = {k: float(post[k][last]) for k in ("gamma", "influx_amplitude")}
    sim = model.simulate(p, TIME, STIM, substeps=1)
    np.testing.assert_allclose(pred["ca"][-1], sim.ca, rtol=1e-9)
    with pytest.raises(ValueError, match="stimulus= without time="):
        back.predict(stimulus=STIM)
    with pytest.raises(ValueError, match="compact = 'yes'"):
        back.save(tmp_path / "x.nc", compact="yes")


def test_the_predictive_computed_in_blocks_of_draws_is_the_fitted_one(recovery, monkeypatch):
    """A long recording's predictive is computed a block of draws at a time: same numbers.

    Blocks of 7 draws (the last one shorter) against one block of all 2000:
    the same random draws in the same order, the same arithmetic per draw,
    and both the groups the fit returned (missing frames, AR(1), drift).
    """
    predictions = importlib.import_module("cainfer.infer._predictions")
    _, result = recovery

    def recomputed(block_values: int):
        monkeypatch.setattr(predictions, "_BLOCK_VALUES", block_values)
        f = dataclasses.replace(result, idata=result.idata.copy(deep=True))
        del f.idata["posterior_predictive"]
        del f.idata["log_likelihood"]
        return f.expand().idata

    for idata in (recomputed(7 * TIME.size + 3), recomputed(10**12)):
        for name in ("y", "dff", "dff_mean", "ca"):
            np.testing.assert_allclose(
                idata["posterior_predictive"][name], result.idata["posterior_predictive"][name],
                rtol=1e-10, atol=1e-12,
            )  # fmt: skip
        np.testing.assert_allclose(
            idata["log_likelihood"]["y"], result.idata["log_likelihood"]["y"], rtol=1e-10
        )


@pytest.mark.slow
def test_a_fit_saved_before_compact_files_loads_and_stays_whole(recovery, tmp_path):
    """A file written before fits were saved compact: full groups, no solver steps recorded."""
    _, result = recovery
    old = dataclasses.replace(result, idata=result.idata.copy(), settings=dict(result.settings))
    for key in ("substeps_runs", "stimulus_waveform", "stimulus_waveform_time"):
        del old.settings[key]
    back = load_fit(old.save(tmp_path / "old.nc", compact=False))
    assert not back.compact and back.summary().equals(result.summary())
    # saving it again keeps what cannot be recomputed
    back.save(tmp_path / "again.nc")
    assert not load_fit(tmp_path / "again.nc").compact
    stripped = load_fit(tmp_path / "again.nc")
    del stripped.idata["log_likelihood"]
    with pytest.raises(ValueError, match="fit again"):
        stripped.expand()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"time": np.arange(10.0)}, "trace has 450 frames but time has 10"),
        ({"stimulus": cainfer.Stimulus(events=[99.0])}, "outside the recording"),
        ({"free": ["gamma"], "fixed": {"gamma": 3.0}}, r"\['gamma'\] are both free and fixed"),
        ({"priors": {"nope": Prior("lognormal", 1.0, 1.0)}}, r"unknown parameter\(s\) \['nope'\]"),
        ({"free": ["gamma"], "priors": {"kappa_s": Prior("lognormal", 1.0, 1.0)}}, "not free"),
        ({"likelihood": "cauchy"}, "allowed: normal, student_t"),
    ],
)
def test_bad_input_is_rejected_before_sampling(kwargs, match):
    model = cainfer.single_compartment()
    y = np.zeros(TIME.size)
    args = {"stimulus": STIM, "time": TIME} | kwargs
    with pytest.raises(ValueError, match=match):
        fit(y, model, **args)


def test_all_nan_trace_is_rejected():
    with pytest.raises(ValueError, match="all NaN"):
        fit(np.full(TIME.size, np.nan), cainfer.single_compartment(), stimulus=STIM, time=TIME)


def test_per_buffer_coordinates_keep_the_declared_priors():
    import pymc as pm

    from cainfer.infer.fit import _free_rvs

    model = cainfer.pumps_model("OGB-1")
    free = ["pmca_vmax", "ncx_vmax", "influx_amplitude", "kappa_s", "pmca_k"]
    with pm.Model() as m:
        rvs = _free_rvs(model, free, {}, model.values(), "per_buffer")
    names = [v.name for v in m.free_RVs]
    assert "influx_amplitude_per_buffer_log" in names and "pmca_k" in names
    # V_max and K both free: V_max is sampled as the pump's slope at rest
    assert "pmca_vmax_rest_slope_per_buffer_log" in names
    assert "ncx_vmax_per_buffer_log" in names
    draws = pm.draw(rvs, draws=20000, random_seed=3)
    params = model.parameters
    for name, x in zip(free, draws, strict=True):
        prior = params[name].prior
        assert prior.kind == "lognormal"
        assert np.log(x).mean() == pytest.approx(np.log(prior.a), abs=0.03), name
        assert np.log(x).std() == pytest.approx(prior.b, rel=0.03), name
    # the capacities move with the buffer capacity: correlated a priori only through it
    lk = np.log(draws[free.index("kappa_s")])
    la = np.log(draws[free.index("influx_amplitude")])
    assert abs(np.corrcoef(lk, la)[0, 1]) < 0.05
    lv = np.log(draws[free.index("pmca_vmax")])
    assert abs(np.corrcoef(np.log(draws[free.index("pmca_k")]), lv)[0, 1]) < 0.05


def test_rest_slope_coordinates_keep_the_declared_priors():
    import pymc as pm

    from cainfer.infer.fit import _free_rvs

    # no κ_S: only the slope coordinate; the Hill coefficient free too
    model = cainfer.pumps_model("OGB-1")
    free = ["pmca_vmax", "pmca_k", "pmca_hill", "c_rest"]
    with pm.Model() as m:
        rvs = _free_rvs(model, free, {}, model.values(), "per_buffer")
    names = [v.name for v in m.free_RVs]
    assert "pmca_vmax_rest_slope_log" in names and "pmca_vmax" not in names
    draws = dict(zip(free, pm.draw(rvs, draws=20000, random_seed=4), strict=True))
    params = model.parameters
    lv = np.log(draws["pmca_vmax"])
    assert lv.mean() == pytest.approx(np.log(params["pmca_vmax"].prior.a), abs=0.03)
    assert lv.std() == pytest.approx(params["pmca_vmax"].prior.b, rel=0.03)
    for other in ("pmca_k", "pmca_hill", "c_rest"):
        assert abs(np.corrcoef(lv, draws[other])[0, 1]) < 0.05, other
    lo, hi = params["pmca_hill"].prior.a, params["pmca_hill"].prior.b
    assert draws["pmca_hill"].min() >= lo and draws["pmca_hill"].max() <= hi
    # natural coordinates leave V_max as it is
    with pm.Model() as m2:
        _free_rvs(model, free, {}, model.values(), "natural")
    assert "pmca_vmax" in [v.name for v in m2.free_RVs]


@pytest.mark.slow
def test_identifiability_report(recovery):
    _, result = recovery
    table, corr = result.identifiability()
    assert list(table.index) == result.free
    # both parameters are well determined by 7 events in 15 s of data
    assert (table["contraction"] > 0.9).all()
    assert (table["scale"] == "log").all()
    assert corr.shape == (2, 2)
    np.testing.assert_allclose(np.diag(corr.values), 1.0)
    assert np.all(np.abs(corr.values) <= 1.0 + 1e-12)


@pytest.mark.slow
def test_kinetic_indicator_is_fitted_with_its_binding_rate(tmp_path):
    """A slow indicator (GCaMP6s-like, k_off 2/s): its rise and decay are recovered.

    The data come from ``simulate(solver="rk4")`` (its own kernel, its own step
    choice); the fit's step search finds binding this slow cheapest in RK4 steps
    of the sampler's compiled solve, and a saved fit recomputes its predictive
    with the same solve.
    """
    ind = cainfer.get_indicator("GCaMP6s")
    ind = ind.with_(k_off=2.0, k_on=2.0 / ind.kd**ind.hill, kinetics_source="test value")
    model = cainfer.single_compartment(ind, indicator_kinetics="kinetic")
    truth = {"gamma": 500.0, "influx_amplitude": 3.0, "k_off": 2.0}
    clean = model.simulate(truth, TIME, STIM, solver="rk4").dff.values
    y = clean + np.random.default_rng(2).normal(0.0, 0.03, TIME.size)
    result = fit(
        y,
        model,
        stimulus=STIM,
        time=TIME,
        free=list(truth),
        draws=500,
        tune=500,
        chains=2,
        seed=1,
    )
    s = result.summary(round_to="none")
    for name, value in truth.items():
        assert s.loc[name, "hdi94_lb"] <= value <= s.loc[name, "hdi94_ub"], (name, s.loc[name])
    assert (s["r_hat"].astype(float) <= 1.05).all()
    assert result.model.parameters["k_off"].prior.source == "test value"
    assert result.settings["kinetic_solver"] == "rk4"
    # the implicit solve differs from RK4 by about 1e-5 ΔF/F: expanding with it would fail
    assert_compact_round_trip(result, tmp_path / "fit.nc")
    # the posterior predictive is the kinetic model's: it peaks frames after an event
    pp = np.asarray(result.idata["posterior_predictive"]["dff_mean"]).mean(axis=(0, 1))
    i_event = int(np.searchsorted(TIME, 8.0))
    assert np.argmax(pp[i_event : i_event + 60]) >= 2
    # equilibrium binding would peak on the event's own frame
    eq_truth = {k: v for k, v in truth.items() if k != "k_off"}
    eq = cainfer.single_compartment(ind).simulate(eq_truth, TIME, STIM).dff.values
    assert np.argmax(eq[i_event : i_event + 60]) == 0


@pytest.mark.slow
def test_two_step_binding_is_fitted_with_its_switch_ratio():
    """The two-step scheme (rapid binding, slow switch to the bright state): φ is recovered.

    Data from ``simulate(solver="rk4")``, the fit on the implicit solve, as above.
    """
    ind = cainfer.get_indicator("GCaMP6s")
    ind = ind.with_(
        k_off=1.0, k_on=1.0 / ind.kd**ind.hill, switch_ratio=2.0, kinetics_source="test value"
    )
    model = cainfer.single_compartment(ind, indicator_kinetics="kinetic")
    truth = {"gamma": 300.0, "influx_amplitude": 15.0, "k_off": 1.5, "switch_ratio": 4.0}
    clean = model.simulate(truth, TIME, STIM, solver="rk4").dff.values
    y = clean + np.random.default_rng(4).normal(0.0, 0.03, TIME.size)
    result = fit(
        y, model, stimulus=STIM, time=TIME, free=list(truth), draws=400, tune=400, chains=2,
        seed=1, observation="dff_exact", residuals="white", drift="none",
    )  # fmt: skip
    s = result.summary(round_to="none")
    # four parameters on one ridge: within 3 posterior sds each (this seed puts γ and the
    # influx amplitude together at +2.2 and +2.1; the solvers differ by 4e-5 ΔF/F,
    # against noise of 0.03, so that is the noise)
    for name, value in truth.items():
        assert abs(s.loc[name, "mean"] - value) < 3.0 * s.loc[name, "sd"], (name, s.loc[name])
    # the switch is determined, not left to its prior (log-sd 1 around 2)
    assert s.loc["switch_ratio", "sd"] < 0.3 * truth["switch_ratio"]
    assert result.model.parameters["switch_ratio"].prior.source == "test value"


@pytest.mark.slow
def test_chains_start_at_the_mode_not_in_a_local_one():
    """ER release has local modes (trains that never trigger release) that trap chains.

    From PyMC's jittered prior starts, one of these two chains stayed in such a
    mode for the whole run (R-hat 1.9, σ 0.38 against 0.03); chains moved to the
    best of the modes found by optimisation agree and sit at the truth (within
    3 posterior sds: one 94% interval in 17 misses by chance, a wrong mode by far).
    """
    model = cainfer.er_model("OGB-1")
    t = np.arange(0, 30, 1 / 20)
    stim = cainfer.Stimulus.train([2.0, 10.0, 18.0], n=5, interval=0.05)
    truth = {"pmca_vmax": 100.0, "serca_vmax": 290.0, "influx_amplitude": 12.0}
    y = simulate_traces(model, truth, t, stim, noise_sd=0.03, seed=4).dff.isel(roi=0)
    res = fit(y, model, stimulus=stim, free=list(truth), draws=1000, tune=500, chains=2, seed=2)
    s = res.summary(round_to="none")
    assert (s["r_hat"].astype(float) <= 1.01).all(), s
    for name, value in truth.items():
        assert abs(float(s.loc[name, "mean"]) - value) < 3 * float(s.loc[name, "sd"]), (name, s)
    assert float(s.loc["sigma", "mean"]) == pytest.approx(0.03, rel=0.1)


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """What ``_mode_starts`` uses of nutpie's compiled model."""

    logp_func: object
    initial_point_func: object


def _two_modes(height: float, centre: float, sd: float):
    """Log density (and gradient) of a wide mode at 0 (height 0, sd 1) and a second one."""

    def logp(x):
        a = -0.5 * x**2
        b = height - 0.5 * ((x - centre) / sd) ** 2
        m = np.maximum(a, b)
        lp = m + np.log(np.exp(a - m) + np.exp(b - m))
        wa, wb = np.exp(a - lp), np.exp(b - lp)
        return float(lp.sum()), wa * (-x) + wb * (-(x - centre) / sd**2)

    return logp


def test_chains_start_near_their_mode_unless_it_is_poor():
    """A start in the main mode's basin climbs to it; one in a poor local mode's basin moves.

    Log density: a wide mode at 0 (height 0, sd 1) and a narrow one at 20
    (height −100, sd 0.5). Chains start half a local sd from their mode.
    """
    fit_module = importlib.import_module("cainfer.infer._starts")
    logp = _two_modes(-100.0, 20.0, 0.5)
    starts = {1: np.array([1.5]), 2: np.array([19.0])}
    compiled = _Compiled(logp, lambda s: starts.get(s, np.array([-0.5])))
    init = fit_module._mode_starts(compiled, seed=0).initial_point_func
    main = np.array([init(s)[0] for s in range(100, 500)])
    # around the main mode, with sd 0.5 x its sd of 1 (400 draws: sd of the sd ~0.02)
    assert abs(main.mean()) < 0.1 and abs(main.std() - 0.5) < 0.08, (main.mean(), main.std())
    assert np.unique(main).size == main.size  # each chain its own direction
    assert init(7) == init(7)  # and the same one for the same seed
    assert abs(init(1)[0]) < 2.5  # its own mode, the main one
    assert abs(init(2)[0]) < 2.5  # the poor mode's basin: moved to the best
    # what the probes (other seeds) do not find, a chain cannot be moved to
    poor = _Compiled(logp, lambda s: np.array([20.5]))
    poor_init = fit_module._mode_starts(poor, seed=0).initial_point_func
    near = np.array([poor_init(s)[0] for s in range(100, 500)])
    assert abs(near.mean() - 20.0) < 0.05 and abs(near.std() - 0.25) < 0.04


def test_the_mode_search_starts_from_the_best_prior_draws():
    """A narrow, high mode no jittered start reaches is found from the prior design.

    Log density: a wide mode at 0 (height 0) and a narrow one at 6 (height
    +80, sd 0.1), a cliff between them (as ER release triggers or not).
    """
    fit_module = importlib.import_module("cainfer.infer._starts")
    compiled = _Compiled(_two_modes(80.0, 6.0, 0.1), lambda s: np.array([0.3]))
    # without a plan the probes start where the chains do: the narrow mode stays unfound
    alone = fit_module._mode_starts(compiled, seed=0).initial_point_func(5)
    assert abs(alone[0]) < 2.0
    design = np.random.default_rng(0).normal(0.0, 4.0, (64, 1))  # the prior: N(0, 4²)
    plan = fit_module._StartPlan(np.array([0.0]), np.zeros(0, int), np.zeros(0), design)
    found = fit_module._mode_starts(compiled, seed=0, plan=plan).initial_point_func
    starts = np.array([found(s)[0] for s in range(10)])
    assert np.all(np.abs(starts - 6.0) < 0.3), starts  # half a local sd (0.1) around 6


def _pair(height: float, ridge: bool = False):
    """Two Gaussian modes at (0.5, 2) and (2, 0.5) (sd 0.2), the second ``height`` lower.

    ``ridge``: instead one mode, a ridge along the first coordinate so flat
    (sd 10⁴ along it, 0.3 across; centred at (0.5, 2)) that climbs stop where
    they reach it.
    """

    def logp(x):
        if ridge:
            d = np.array([(x[0] - 0.5) / 1e4, (x[1] - 2.0) / 0.3])
            return float(-0.5 * d @ d), -np.array([d[0] / 1e4, d[1] / 0.3])
        parts, grads = [], []
        for centre, h in (((0.5, 2.0), 0.0), ((2.0, 0.5), height)):
            d = (x - np.asarray(centre)) / 0.2
            parts.append(h - 0.5 * float(d @ d))
            grads.append(-d / 0.2)
        m = max(parts)
        w = np.exp(np.array(parts) - m)
        lp = m + math.log(w.sum())
        return lp, (w[0] * grads[0] + w[1] * grads[1]) / w.sum()

    return logp


def test_the_mode_search_gives_chains_to_each_separate_mode_of_comparable_mass():
    """Probes that end in two separate modes of equal mass start chains in both.

    Chains go to the modes by their seeds' rank. A second mode e^-8 lower, a
    single chain, or a flat ridge where the climbs stop at different points
    (one mode) keep every chain in the best mode, as before.
    """
    fit_module = importlib.import_module("cainfer.infer._starts")
    rng = np.random.default_rng(1)
    design = np.concatenate([rng.normal(c, 0.2, (8, 2)) for c in ((0.5, 2.0), (2.0, 0.5))])
    plan = fit_module._StartPlan(np.array([0.6, 1.8]), np.zeros(0, int), np.zeros(0), design)
    seeds = [17, 5, 11, 3]
    found: dict = {}
    compiled = _Compiled(_pair(0.0), lambda s: np.array([0.4, 1.9]))
    init = fit_module._mode_starts(
        compiled, 0, 16, plan=plan, chains=4, chain_seeds=lambda at: seeds, report=found
    ).initial_point_func  # 16 probes: every design point climbs
    assert len(found["modes"]) == 2 and abs(found["modes"][1]["log_mass"]) < 0.1, found
    starts = {s: init(s) for s in seeds}
    first = tuple(np.round(starts[3]))  # the lowest seed: the best mode (either, here)
    assert first in ((0.0, 2.0), (1.0, 2.0), (2.0, 0.0), (2.0, 1.0)), starts
    for s, same in ((3, True), (5, False), (11, True), (17, False)):
        near_first = np.linalg.norm(starts[s] - starts[3]) < 1.2  # the modes are 2.1 apart
        assert near_first == same, (s, starts)
        assert min(np.linalg.norm(starts[s] - m) for m in ((0.5, 2.0), (2.0, 0.5))) < 0.6
    np.testing.assert_array_equal(init(5), starts[5])
    # without chains to spare, or with a mode of little mass: the best mode alone
    fit_module._mode_starts(compiled, 0, 16, plan=plan, chains=1, report=found)
    assert found["modes"] == []
    low = _Compiled(_pair(-8.0), compiled.initial_point_func)
    low_init = fit_module._mode_starts(low, 0, 16, plan=plan, chains=4, report=found)
    assert found["modes"] == []
    assert np.linalg.norm(low_init.initial_point_func(5) - (0.5, 2.0)) < 0.6
    # a flat ridge: climbs that end at different points of it are one mode
    wide = np.random.default_rng(2).normal([0.5, 2.0], [40.0, 0.2], (32, 2))
    ridge_plan = fit_module._StartPlan(plan.centre, plan.held, plan.held_at, wide)
    ridge = _Compiled(_pair(0.0, ridge=True), compiled.initial_point_func)
    fit_module._mode_starts(ridge, seed=0, plan=ridge_plan, chains=4, report=found)
    assert found["modes"] == []


def test_the_mode_search_climbs_in_the_local_sds():
    """Coordinates pinned a thousand times tighter than others cost the climbs few steps.

    A Gaussian posterior with sds from 0.001 to 1 (a long recording's resting
    fluorescence against a pump's slope): the climbs run in coordinates
    scaled by the local sds, and the search with four chains' starts takes
    226 log-density evaluations where unscaled climbs took 553. The starts
    sit half a local sd around the mode, in units of each coordinate's sd.
    """
    fit_module = importlib.import_module("cainfer.infer._starts")
    sd = np.array([1e-3, 3e-3, 1.0, 0.3, 2e-2, 1.0])
    centre = np.array([5.0, -1.0, 0.5, 2.0, 0.0, -0.3])
    calls = [0]

    def logp(x):
        calls[0] += 1
        d = (x - centre) / sd
        return float(-0.5 * d @ d), -d / sd

    design = centre + np.random.default_rng(0).normal(0.0, 1.0, (64, sd.size))
    plan = fit_module._StartPlan(np.zeros(sd.size), np.zeros(0, int), np.zeros(0), design)
    compiled = _Compiled(logp, lambda s: np.random.default_rng(s).normal(0.0, 1.0, sd.size))
    init = fit_module._mode_starts(compiled, seed=0, plan=plan, chains=4).initial_point_func
    z = np.array([(init(s) - centre) / sd for s in range(4)])
    assert np.all(np.abs(z) < 2.0), z  # 0.5 x standard normal per coordinate
    assert 0.2 < np.sqrt(np.mean(z**2)) < 0.8, z
    assert calls[0] < 350, calls[0]


def test_the_start_plan_holds_the_noise_and_draws_the_cell_from_its_prior():
    import pymc as pm

    fit_module = importlib.import_module("cainfer.infer._starts")
    with pm.Model() as m:
        pm.LogNormal("pmca_vmax", mu=np.log(100.0), sigma=0.5)
        pm.HalfNormal("sigma", sigma=3.0)
        pm.Uniform("rho", -0.5, 0.99)
        pm.LogNormal("F0", mu=np.log(300.0), sigma=0.3)
    plan = fit_module._start_plan(m, np.array([0.7]), seed=1, n_design=2000)
    # nutpie's order: the free variables in turn; log and interval transforms
    assert plan.centre.shape == (4,) and plan.design.shape == (2000, 4)
    np.testing.assert_array_equal(plan.held, [1, 2])
    np.testing.assert_allclose(plan.held_at[0], np.log(0.7), rtol=1e-12)
    np.testing.assert_allclose(plan.held_at[1], np.log(0.5 / 0.99), rtol=1e-12)  # rho = 0
    # the cell's parameter from its prior (log scale: N(log 100, 0.5²); 2000 draws)
    assert abs(plan.design[:, 0].mean() - np.log(100.0)) < 0.05
    assert abs(plan.design[:, 0].std() - 0.5) < 0.04
    # the observation terms at the prior's centre, the noise held
    np.testing.assert_allclose(plan.design[:, 3], plan.centre[3])
    np.testing.assert_allclose(plan.design[:, 1:3], np.tile(plan.held_at, (2000, 1)))


@pytest.mark.slow
def test_diagnostics_report_divergences_and_disagreeing_chains(recovery):
    """What the sampler warns about, on draws doctored to have each problem."""
    import dataclasses

    _, result = recovery
    idata = result.idata.copy(deep=True)
    diverging = idata["sample_stats"]["diverging"]
    diverging[0, :3] = True
    gamma = idata["posterior"]["gamma"]
    gamma[1] = gamma[1] * 1.5  # the second chain sits elsewhere: R-hat far above 1.01
    problems = dataclasses.replace(result, idata=idata).diagnostics()
    assert any(p.startswith("3 divergent transitions") for p in problems), problems
    assert any("R-hat > 1.01 for ['gamma']" in p for p in problems), problems
    assert not any("separate modes" in p for p in problems), problems
    # chains the mode search started in two separate modes, which they did not leave
    settings = result.settings | {
        "start_modes": [{"log_density": -10.0, "log_mass": 0.0},
                        {"log_density": -10.5, "log_mass": math.log(0.4)}]
    }  # fmt: skip
    problems = dataclasses.replace(result, idata=idata, settings=settings).diagnostics()
    medians = np.median(np.asarray(idata["posterior"]["gamma"]), axis=1)
    apart = [p for p in problems if "separate modes" in p]
    assert len(apart) == 1 and "40 % of the highest one's" in apart[0], problems
    assert f"gamma {medians[0]:.3g} | {medians[1]:.3g}" in apart[0], apart
    assert "k_off" not in apart[0]  # no kinetic indicator here
    assert not any(p.startswith("R-hat") for p in problems), problems  # "run longer" won't help
    # the same start, chains that mixed: nothing to report
    mixed = dataclasses.replace(result, settings=settings).diagnostics()
    assert not any("separate modes" in p for p in mixed), mixed


def test_a_short_run_warns_about_its_ess():
    model = cainfer.single_compartment("OGB-1")
    y = simulate_traces(model, TRUTH, TIME, STIM, noise_sd=0.03, seed=2).dff.isel(roi=0)
    # 2 x 30 draws cannot reach a bulk ESS of 400 (NUTS on a Gaussian stays below 3 per draw)
    with pytest.warns(cainfer.infer.SamplerWarning, match="bulk ESS < 400"):
        short = fit(y, model, stimulus=STIM, free=["gamma"], draws=30, tune=100, chains=2, seed=3)
    assert not short.ok and short.problems


def _refit(result, y, model):
    """Fit ``y`` as the recovery fit was fitted; assert the posterior is the same."""
    other = fit(
        xr.DataArray(y, dims="time", coords={"time": TIME}),
        model,
        stimulus=STIM,
        free=["gamma", "influx_amplitude"],
        draws=1000,
        tune=500,
        chains=2,
        seed=1,
    )
    a, b = result.summary(round_to="none"), other.summary(round_to="none")
    for name in ("gamma", "influx_amplitude", "sigma"):
        mcse = np.hypot(float(a.loc[name, "mcse_mean"]), float(b.loc[name, "mcse_mean"]))
        assert abs(float(a.loc[name, "mean"]) - float(b.loc[name, "mean"])) <= 4 * mcse, name
        assert float(b.loc[name, "sd"]) == pytest.approx(float(a.loc[name, "sd"]), rel=0.15)
    return other


@pytest.mark.slow
def test_last_bit_differences_change_the_draws_not_the_posterior(recovery):
    """The cross-machine reproducibility claim of the README.

    Another CPU or library build rounds the log density differently in its last
    bits (measured: up to 4e-12 relative in the solver). A sampler amplifies such a
    difference, so the same seed draws differently; the posterior does not change
    beyond Monte Carlo error. Perturbing the data by 1e-13 relative stands in for it.
    """
    import arviz as az

    _, result = recovery
    y = result.idata["observed_data"]["y"].values * (1.0 + 1e-13)
    other = _refit(result, y, result.model)
    # the same seed, and yet the draws are not the same: no test may expect them to be
    ga = az.extract(result.idata, var_names="gamma").values
    gb = az.extract(other.idata, var_names="gamma").values
    assert ga.shape == gb.shape


@pytest.mark.slow
def test_predict_another_protocol_of_the_same_cell(recovery):
    model, result = recovery
    t_new = np.arange(300) / 30.0
    stim_new = cainfer.Stimulus(events=[1.0, 3.0, 3.02, 6.0])
    pred = result.predict(t_new, stim_new, draws=200)
    assert pred["dff"].dims == ("sample", "time") and pred.sizes["sample"] == 200
    # each sample is the forward model at one posterior draw: the median parameters'
    # trace lies inside the band, and the band holds the true cell's response
    true = model.simulate(TRUTH, t_new, stim_new)
    inside = (true.dff >= pred.dff_lower - 1e-9) & (true.dff <= pred.dff_upper + 1e-9)
    assert float(inside.mean()) > 0.9
    med = model.simulate(result.posterior_median(), t_new, stim_new)
    np.testing.assert_allclose(med.ca, pred.ca_median, rtol=0.05, atol=1e-4)
    # events after the last frame: refused, or clipped with a warning
    late = cainfer.Stimulus(events=[1.0, 12.0])
    with pytest.raises(ValueError, match="outside the recording"):
        result.predict(t_new, late)
    with pytest.warns(UserWarning, match="1 stimulus event"):
        clipped = result.predict(t_new, late, clip=True, draws=50)
    np.testing.assert_allclose(
        clipped.dff_median,
        result.predict(t_new, cainfer.Stimulus(events=[1.0]), draws=50).dff_median,
    )
    with pytest.raises(ValueError, match="ci_prob"):
        result.predict(t_new, stim_new, ci_prob=2.0)


@pytest.mark.slow
def test_a_ridge_is_named_with_the_combination_the_data_determine():
    """κ_S and the influx amplitude trade off (DESIGN: amplitude of influx and κ_S)."""
    model = cainfer.single_compartment("OGB-1")
    y = simulate_traces(model, TRUTH, TIME, STIM, noise_sd=0.03, seed=2).dff.isel(roi=0)
    with pytest.warns(cainfer.infer.IdentifiabilityWarning, match="weakly determined"):
        res = fit(y, model, stimulus=STIM, free=["kappa_s", "influx_amplitude", "gamma"],
                  observation="dff_exact", residuals="white", coordinates="natural",
                  draws=1000, tune=500, chains=2, seed=5)  # fmt: skip
    ridge = [p for p in res.problems if p.startswith("weakly determined")]
    assert len(ridge) == 1 and not res.ok
    assert "kappa_s" in ridge[0] and "influx_amplitude" in ridge[0]
    # the determined combination is far narrower than each parameter
    combo = float(ridge[0].split("(±")[1].split(" %")[0])
    assert combo < 10.0
    assert "kappa_s ±" in ridge[0]
    kappa_sd = float(ridge[0].split("kappa_s ±")[1].split(" %")[0])
    assert kappa_sd > 3 * combo


@pytest.mark.slow
def test_a_parameter_pulled_far_from_its_prior_is_named():
    model = cainfer.single_compartment("OGB-1")
    truth = {"gamma": 500.0, "influx_amplitude": 15.0}
    y = simulate_traces(model, truth, TIME, STIM, noise_sd=0.01, seed=3).dff.isel(roi=0)
    # a prior for gamma centred 20x too low, and narrow: the data pull it far away
    pri = {"gamma": Prior("lognormal", 25.0, 0.3, "test")}
    with pytest.warns(cainfer.infer.IdentifiabilityWarning, match="prior sds from the prior"):
        res = fit(y, model, stimulus=STIM, free=list(truth), priors=pri, draws=500, tune=500,
                  chains=2, seed=6)  # fmt: skip
    assert any(p.startswith("gamma: posterior median") for p in res.problems)


# a cell imaged at 2 frames/s: GCaMP6f's calcium decays within a frame (γ 400/s over
# a buffer capacity near 100), so one RK4 step per frame is far from the solution
SLOW_TIME = np.arange(0, 60, 0.5)
SLOW_STIM = cainfer.Stimulus(events=[3.1, 11.3, 11.4, 20.2, 31.7, 31.8, 31.9, 42.6, 50.3])


def test_the_solver_error_estimate_matches_the_error_against_a_fine_solve():
    from cainfer.infer._substeps import _choose_substeps, _solver_error
    from cainfer.infer.result import SOLVER_TOLERANCE

    model = cainfer.single_compartment("GCaMP6f")
    vec = [model.pack_raw(model.values())]
    noise = np.array([0.02])
    ref = model.simulate(None, SLOW_TIME, SLOW_STIM, substeps=256).dff.values

    def true_error(n):
        d = model.simulate(None, SLOW_TIME, SLOW_STIM, substeps=n).dff.values
        return float(np.linalg.norm(d - ref)) / noise[0]

    for n in (1, 2, 4, 8):
        # Richardson's estimate from the solves at n and 2n; it holds even at n = 1,
        # where the error is 200 noise sd (fourth order: 16× less per doubling)
        assert _solver_error(model, vec, SLOW_TIME, SLOW_STIM, n, noise) == pytest.approx(
            true_error(n), rel=0.15
        )
    # uniform steps: 4 per frame are needed (the error at 2 is above the tolerance)
    assert true_error(4) <= SOLVER_TOLERANCE < true_error(2)
    n = _choose_substeps(model, vec, SLOW_TIME, SLOW_STIM, noise)
    assert n.shape == (SLOW_TIME.size - 1,)
    forward = forward_solver(model, SLOW_TIME, SLOW_STIM, substeps=n)
    chosen = float(np.linalg.norm(forward(vec[0])[0] - ref)) / noise[0]
    assert chosen <= SOLVER_TOLERANCE
    # more steps only in the intervals from 1 s before to 3 s after an event (calcium
    # falls within a frame; the margin is two intervals either side): fewer steps in all
    # than 4 per frame
    ends = SLOW_TIME[1:]
    since = ends[:, None] - SLOW_STIM.events[None, :]
    near = np.any((since > -1.0) & (since <= 3.0), axis=1)
    assert np.all(n[~near] == 1) and n.max() >= 2
    assert n.sum() < 0.6 * 4 * n.size
    # a noisier recording tolerates a coarser solve; at 30 frames/s one step is enough
    assert _choose_substeps(model, vec, SLOW_TIME, SLOW_STIM, 20 * noise).sum() < n.sum()
    assert np.all(_choose_substeps(model, vec, TIME, STIM, noise) == 1)
    # how far the error moves the free parameters, in their posterior sds: never more
    # than the bound ‖δ‖/σ, and what least squares on their sensitivities (offset and
    # scale fitted out) gives for the error against a fine solve
    slots = [model.slots()[k] for k in ("gamma", "influx_amplitude")]
    for k in (1, 2):
        whole = _solver_error(model, vec, SLOW_TIME, SLOW_STIM, k, noise)
        part = _solver_error(model, vec, SLOW_TIME, SLOW_STIM, k, noise, slots=slots)
        assert 0.0 < part <= whole
    fine = model.simulate(None, SLOW_TIME, SLOW_STIM, substeps=256).dff.values
    delta = model.simulate(None, SLOW_TIME, SLOW_STIM, substeps=2).dff.values - fine
    sens = []
    for name in ("gamma", "influx_amplitude"):
        v = model.values()[name]
        up = model.simulate({name: v * (1 + 1e-6)}, SLOW_TIME, SLOW_STIM, substeps=256).dff.values
        sens.append((up - fine) / (v * 1e-6))
    # a full least-squares fit with the offset and scale: the same shift and sd as the
    # residualised one (Frisch–Waugh–Lovell), computed another way
    full = np.column_stack([*sens, np.ones_like(fine), fine])
    shift = np.linalg.lstsq(full, delta, rcond=None)[0][:2]
    sd = noise[0] * np.sqrt(np.diag(np.linalg.inv(full.T @ full))[:2])
    assert _solver_error(model, vec, SLOW_TIME, SLOW_STIM, 2, noise, slots=slots) == pytest.approx(
        float(np.max(np.abs(shift) / sd)), rel=0.15
    )


@pytest.mark.parametrize(("k_off", "explicit"), [(1.0, True), (2000.0, False)])
def test_a_kinetic_indicator_is_solved_by_rk4_where_binding_is_slow(k_off, explicit):
    # GCaMP6s unbinding at 1/s relaxes far slower than a frame: RK4 at the steps the
    # search chooses is as accurate as the implicit solve and cheaper. At 2000/s the
    # binding mode is stiff (RK4 would need more than the 64 steps per frame the search
    # allows): the implicit solve. Either way the chosen solve holds the tolerance
    # against a fine solve of the same model.
    from cainfer.infer._substeps import _choose_solver, _solver_error, _spread_vectors
    from cainfer.infer.result import SOLVER_TOLERANCE

    ind = cainfer.get_indicator("GCaMP6s")
    ind = ind.with_(k_off=k_off, k_on=k_off / ind.kd**ind.hill, kinetics_source="test value")
    model = cainfer.pumps_model(ind, indicator_kinetics="kinetic")
    params = {"influx_amplitude": 5.0}
    vec = model.pack_raw(model.values(params))
    slots = [model.slots()[k] for k in ("pmca_vmax", "influx_amplitude", "k_off")]
    noise = np.array([0.01])
    n, rk4 = _choose_solver(
        model, [vec], TIME, STIM, noise, slots=slots, also=_spread_vectors(vec, slots)
    )
    assert rk4 is explicit
    assert n.shape == (TIME.size - 1,)
    err = _solver_error(model, [vec], TIME, STIM, n, noise, explicit=rk4)
    assert err <= SOLVER_TOLERANCE
    fine = forward_solver(model, TIME, STIM, substeps=16)(vec)[0]
    chosen = forward_solver(model, TIME, STIM, substeps=n, explicit=rk4)(vec)[0]
    assert fine.max() > 0.3
    assert float(np.linalg.norm(chosen - fine)) / noise[0] <= SOLVER_TOLERANCE


@pytest.mark.parametrize("bad", ["fast", 0, 1.5, True])
def test_substeps_must_be_auto_or_a_positive_integer(bad):
    with pytest.raises(ValueError, match="substeps"):
        fit(np.zeros(TIME.size), cainfer.single_compartment(), stimulus=STIM, time=TIME,
            substeps=bad)  # fmt: skip


@pytest.mark.slow
def test_a_slow_frame_rate_gets_enough_solver_steps():
    model = cainfer.single_compartment("GCaMP6f")
    truth = {"gamma": 400.0, "influx_amplitude": 10.0}
    clean = model.simulate(truth, SLOW_TIME, SLOW_STIM, substeps=256).dff.values
    y = clean + np.random.default_rng(4).normal(0.0, 0.02, SLOW_TIME.size)
    opts = {"time": SLOW_TIME, "stimulus": SLOW_STIM, "free": list(truth), "draws": 500,
            "tune": 500, "chains": 2, "seed": 1, "observation": "dff_exact"}  # fmt: skip
    with pytest.warns(cainfer.infer.SamplerWarning, match="solver's error"):
        coarse = fit(y, model, substeps=1, **opts)
    # one step per frame: confidently wrong, and said so
    s = coarse.summary(round_to="none")
    assert (s.loc["gamma", "mean"] - 400.0) / s.loc["gamma", "sd"] < -5
    assert any("substeps=2" in p for p in coarse.problems)
    auto = fit(y, model, **opts)
    assert auto.settings["substeps"] >= 2 and auto.settings["solver_error"] < 0.25
    assert not [p for p in auto.problems if "solver" in p]
    s = auto.summary(round_to="none")
    for name, value in truth.items():
        assert s.loc[name, "hdi94_lb"] <= value <= s.loc[name, "hdi94_ub"], s


@pytest.mark.slow
def test_residuals_that_wander_are_named_as_a_misfit(recovery):
    # a well-specified fit: white residuals at the recording's own noise
    _, result = recovery
    assert not [p for p in result.problems if "wander" in p]
    # a 2-s oscillation no cell model makes and too fast for the slow baseline:
    # the AR(1) residuals soak it up, and the fit says so
    model = cainfer.single_compartment("OGB-1")
    dff = simulate_traces(model, TRUTH, TIME, STIM, noise_sd=0.03, seed=2).dff.isel(roi=0)
    dff = dff + 0.15 * np.sin(2 * np.pi * TIME / 2.0)
    with pytest.warns(cainfer.infer.SamplerWarning, match="residuals wander"):
        res = fit(dff, model, stimulus=STIM, free=list(TRUTH), draws=300, tune=300, chains=2,
                  seed=1)  # fmt: skip
    assert not res.ok
    (problem,) = [p for p in res.problems if "wander" in p]
    assert "× the frame-to-frame noise" in problem
    assert "indicator_kinetics" not in problem  # OGB-1 binds within a frame
    # a GCaMP bound in equilibrium is named as the likely misfit, a kinetic one is not
    gcamp = dataclasses.replace(res, model=cainfer.single_compartment("GCaMP6f"))
    (problem,) = [p for p in gcamp.diagnostics() if "wander" in p]
    assert "GCaMP6f is bound in equilibrium" in problem
    assert "indicator_kinetics='kinetic'" in problem
    ind = cainfer.get_indicator("GCaMP6f").with_(k_off=2.0, k_on=2.0 / 0.29**2.7)
    kinetic = dataclasses.replace(
        res, model=cainfer.single_compartment(ind, indicator_kinetics="kinetic")
    )
    (problem,) = [p for p in kinetic.diagnostics() if "wander" in p]
    assert "indicator_kinetics" not in problem


def test_coordinates_follow_the_declared_roles():
    """Each term's capacity is sampled in the coordinates its declaration asks for.

    PMCA and NCX (plasma membrane, a Hill function of cytosolic calcium): along
    the slope at rest, per unit of buffering; SERCA (ER): along the slope only;
    SOCE (plasma membrane, driven by the ER's calcium): per unit of buffering
    only; the release rate (ER, gated): as declared.
    """
    import pymc as pm

    from cainfer.infer.fit import _free_rvs, default_free

    model = cainfer.er_model("OGB-1")
    free = default_free(model)
    assert {"soce_vmax", "soce_k", "serca_k", "release_k_act"} <= set(free)
    assert not any(n.endswith(("hill", "hill_act", "hill_load")) for n in free)
    with pm.Model() as m:
        _free_rvs(model, free, {}, model.values(), "per_buffer")
    names = {v.name for v in m.free_RVs}
    assert {"pmca_vmax_rest_slope_per_buffer_log", "ncx_vmax_rest_slope_per_buffer_log",
            "serca_vmax_rest_slope_log", "soce_vmax_per_buffer_log",
            "influx_amplitude_per_buffer_log", "release_rate"} <= names  # fmt: skip


def test_a_term_declares_the_roles_its_coordinates_need():
    from cainfer.forward import PMCA, Parameter, Prior
    from cainfer.forward.fluxes import Flux

    with pytest.raises(ValueError, match="role 'speed'; allowed: capacity, affinity, hill"):
        Parameter("v", "µM/s", 1.0, Prior("lognormal", 1.0, 1.0), role="speed")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="per_buffer needs one parameter of role 'capacity'"):

        class NoCapacity(Flux):
            compartment = "pm"
            default_name = "x"
            per_buffer = True
            declared = (Parameter("k", "µM", 1.0, Prior("lognormal", 1.0, 1.0), role="affinity"),)

    with pytest.raises(TypeError, match="cytosolic_hill needs one 'capacity', one 'affinity'"):

        class NoAffinity(PMCA):
            declared = PMCA.declared[:1]

    # a renamed or re-defaulted parameter keeps its role
    p = PMCA(name="pump2", vmax=50.0)
    assert [q.role for q in p.parameters] == ["capacity", "affinity", "hill"]
    assert p.parameters[0].default == 50.0 and p.parameters[0].name == "pump2_vmax"


@pytest.mark.parametrize("name", ["fit", "fit_rois", "fit_hierarchical"])
def test_the_fits_share_one_set_of_options(name):
    """Every option has a default and a paragraph in each docstring; a misspelt one is named."""
    import typing

    from cainfer.infer import FIT_DEFAULTS, FitOptions

    assert set(typing.get_type_hints(FitOptions)) == set(FIT_DEFAULTS)
    func = getattr(cainfer, name)
    documented = {n.strip() for head in re.findall(r"\n    ([a-z_, ]+) :", func.__doc__)
                  for n in head.split(",")}  # fmt: skip
    assert set(FIT_DEFAULTS) <= documented, set(FIT_DEFAULTS) - documented
    extra = {"pooled": ["influx_amplitude"]} if name == "fit_hierarchical" else {}
    y = np.zeros((2, TIME.size))
    with pytest.raises(TypeError, match=rf"{name}\(\) got unexpected keyword argument\(s\) "
                       r"\['drfit'\]; its options: observation, likelihood"):  # fmt: skip
        func(y, cainfer.single_compartment(), stimulus=STIM, time=TIME, drfit="none", **extra)


class _Extrusion(cainfer.forward.Flux):
    """Linear extrusion as a user might write it (expanded: kernels of its own)."""

    compartment = "pm"
    per_buffer = True
    default_name = ""
    declared = cainfer.forward.LinearExtrusion.declared

    def rate(self, c, c_er):
        return self.gamma * self.c_rest - self.gamma * c


@pytest.mark.slow
def test_a_term_written_as_a_rate_is_fitted_like_the_built_in_one(recovery, tmp_path):
    """Same data, same cell, the term as a rate: the same posterior, gradients and all."""
    _, result = recovery
    model = cainfer.forward.CellModel(
        [_Extrusion(), cainfer.forward.EventInflux()], indicator="OGB-1"
    )
    assert model.generated_terms
    mine = _refit(result, result.idata["observed_data"]["y"].values, model)
    b = mine.summary(round_to="none")
    for name, value in TRUTH.items():
        assert b.loc[name, "hdi94_lb"] <= value <= b.loc[name, "hdi94_ub"], name
    assert not mine.problems
    # saved and loaded in a process where the term's class is defined
    mine.save(tmp_path / "fit.nc")
    again = load_fit(tmp_path / "fit.nc")
    assert type(again.model.fluxes[0]) is _Extrusion


def test_a_fit_shows_its_posterior_and_diagnostics_in_jupyter(recovery):
    model, result = recovery
    text = result._repr_html_()
    s = result.summary(round_to="none")
    assert "<table" in text and "Every check passed" in text and "#b00020" not in text
    for name in result.reported:
        assert f">{name}<" in text
    unit = model.parameters["gamma"].unit
    cells = re.findall(r"<td[^>]*><span[^>]*>([^<]*)</span></td>", text)
    assert cells[cells.index("gamma") + 1] == unit
    assert f"{s.loc['gamma', 'mean']:.4g}" in text
    lo, hi = np.quantile(np.asarray(result.idata["prior"]["gamma"]).ravel(), [0.03, 0.97])
    assert f"[{lo:.4g}, {hi:.4g}]" in text
    assert repr(result).startswith("Fit(model 'single_compartment', free ['gamma'")
    # chains that disagree: R-hat flagged in the table, the problem named below it
    bad = dataclasses.replace(result, idata=result.idata.copy())
    post = bad.idata["posterior"].to_dataset()
    post["gamma"] = post["gamma"] + xr.DataArray([0.0, 50.0], dims="chain")
    bad.idata["posterior"] = post
    bad.problems = bad.diagnostics()
    text = bad._repr_html_()
    assert "Problems:" in text and "R-hat &gt; 1.01" in text
    flagged = re.findall(r'<span style="color:#b00020;font-weight:bold">([^<]*)</span>', text)
    assert f"{float(bad.summary(round_to='none').loc['gamma', 'r_hat']):.3f}" in flagged


def test_a_fit_summarises_its_draws_as_they_are_now(recovery):
    """The raw summary is computed once per set of draws, and anew when the draws change."""
    _, result = recovery
    fit = dataclasses.replace(result, idata=result.idata.copy(deep=True))
    first = fit.summary(round_to="none")
    first.loc["gamma", "mean"] = -1.0  # the caller's copy: the next call is not changed
    again = fit.summary(round_to="none")
    assert again.loc["gamma", "mean"] > 0.0
    fit.idata["posterior"]["gamma"].values[...] += 100.0  # in place
    moved = fit.summary(round_to="none")
    for col in ("mean", "hdi94_lb", "hdi94_ub"):
        assert moved.loc["gamma", col] == pytest.approx(again.loc["gamma", col] + 100.0, rel=1e-9)
    assert moved.loc["gamma", "sd"] == pytest.approx(again.loc["gamma", "sd"], rel=1e-9)
    assert moved.loc["influx_amplitude", "mean"] == again.loc["influx_amplitude", "mean"]
    assert result.summary(round_to="none").loc["gamma", "mean"] == again.loc["gamma", "mean"]


def test_a_cell_model_shows_its_parameters_in_jupyter():
    model = cainfer.pumps_model("OGB-1")
    text = model._repr_html_()
    assert "OGB-1" in text and "PMCA" in text.upper()
    plain = html.unescape(text)
    for name, q in model.parameters.items():
        assert f">{name}<" in plain and q.prior.source in plain
    assert "lognormal(median" in text


def test_progress_shows_in_a_terminal_or_notebook_when_asked_or_auto(monkeypatch):
    F = importlib.import_module("cainfer.infer.fit")
    assert F._show_progress(True) and not F._show_progress(False)

    class Tty:
        def isatty(self):
            return True

    assert not F._show_progress("auto")  # pytest captures stderr: no terminal
    monkeypatch.setattr(F.sys, "stderr", Tty())
    assert F._show_progress("auto")
    with pytest.raises(ValueError, match="progress = 'yes'"):
        fit(np.zeros(TIME.size), cainfer.single_compartment(), stimulus=STIM, time=TIME,
            progress="yes")  # fmt: skip


def test_the_output_strides_are_as_long_as_accuracy_and_stability_allow():
    from cainfer.infer._op import output_plan, solution_breaks
    from cainfer.infer._substeps import (
        _STRIDE_LAMBDA_H,
        _STRIDES,
        _choose_stride,
        _frame_rates,
        _local_strides,
        _rate_grid,
        _solver_error,
        _Solves,
        _spread_vectors,
    )
    from cainfer.infer.result import SOLVER_TOLERANCE

    def stretches_keep_the_bound(model, strides, vectors, t, stim, ones):
        # every step of the plan: |λ|·h within the bound, λ the fastest over its frames
        solves = _Solves(model, t, stim)
        lam = np.max([_frame_rates(model, solves, v, ones) for v in vectors], axis=0)
        plan = output_plan(t, solution_breaks(stim), strides)
        a = plan.anchors if plan is not None else np.arange(t.size)
        for i, j in itertools.pairwise(a):
            assert j - i == 1 or lam[i : j + 1].max() * (t[j] - t[i]) <= _STRIDE_LAMBDA_H

    # a slow cell (decay ~1 s) at 60 frames/s: long strides, as accurate as every frame
    t = np.arange(1200) / 60.0
    stim = cainfer.Stimulus(events=[2.0, 7.5, 7.55, 14.0])
    model = cainfer.pumps_model("OGB-1")
    vec = model.pack_raw(model.values({"influx_amplitude": 10.0}))
    slots = [model.slots()[k] for k in ("pmca_vmax", "influx_amplitude", "kappa_s")]
    noise = np.array([0.01])
    ones = np.ones(t.size - 1, dtype=np.int64)
    around = _spread_vectors(vec, slots)
    k = _choose_stride(model, [vec], t, stim, noise, ones, slots=slots, also=around)
    assert np.max(k) >= 2
    stretches_keep_the_bound(model, k, [vec, *around], t, stim, ones)
    # the next longer cap's strides are the same or break the accuracy asked for
    solves = _Solves(model, t, stim)
    lam = np.max([_frame_rates(model, solves, v, ones) for v in [vec, *around]], axis=0)
    if np.max(k) < max(_STRIDES):
        longer = np.minimum(_local_strides(lam, t), min(s for s in _STRIDES if s > np.max(k)))
        err = max(_solver_error(model, [v], t, stim, ones, noise, slots=slots, stride=longer)
                  for v in [vec, *around])  # fmt: skip
        assert np.array_equal(longer, np.broadcast_to(k, t.shape)) or err > SOLVER_TOLERANCE
    fine = forward_solver(model, t, stim, substeps=8)(vec)[0]
    got = forward_solver(model, t, stim, substeps=ones, stride=k)(vec)[0]
    assert float(np.linalg.norm(got - fine)) / noise[0] <= SOLVER_TOLERANCE
    # the same cell with its pump 30× faster: shorter strides, within the same bound
    fast = vec.copy()
    fast[model.slots()["pmca_vmax"]] *= 30.0
    k_fast = _choose_stride(model, [fast], t, stim, noise, ones)
    assert np.max(k_fast) < np.max(k)
    stretches_keep_the_bound(model, k_fast, [fast], t, stim, ones)
    # the rate is the Jacobian's: the kernels' own bound at each calcium
    kern, _ = model.kernels()
    ka = model.kernel_args(t, stim, substeps=1)
    grid = np.geomspace(0.04, 2.0, 9)

    want = [
        kern.jacobian_bound(
            np.array([c]),
            np.zeros(1),
            vec,
            ka.codes,
            ka.offsets,
            ka.waveform_time,
            ka.waveform_values,
            False,
            False,
        )
        for c in grid
    ]
    np.testing.assert_allclose(_rate_grid(model, vec, grid, 0.04, 2.0), want, rtol=1e-4)
    # an ER model (release has fast phases anywhere): no stride
    er = cainfer.er_model("OGB-1")
    assert _choose_stride(er, [er.pack_raw(er.values())], t, stim, noise, ones) == 1
    # a kinetic indicator (GCaMP6s-like binding at 30 frames/s): its two states'
    # rate, with the bright state at rest and in equilibrium (the kernels' bound
    # takes it at zero and in equilibrium), short strides where binding is fast
    # after an event and long ones at rest, as accurate as every frame
    ind = cainfer.get_indicator("GCaMP6s")
    kin = cainfer.single_compartment(
        ind.with_(k_off=1.0, k_on=1.0 / ind.kd**ind.hill, kinetics_source="test"),
        indicator_kinetics="kinetic",
    )
    kv = kin.pack_raw(kin.values({"influx_amplitude": 4.0}))
    kern, _ = kin.kernels()
    ka = kin.kernel_args(t, stim, substeps=1)
    for c in (0.1, 0.5, 2.0):
        want = kern.jacobian_bound(np.array([c]), np.zeros(1), kv, ka.codes, ka.offsets,
                                   ka.waveform_time, ka.waveform_values, False, True)  # fmt: skip
        got = _rate_grid(kin, kv, np.array([c]), 1e-9, c)[0]
        # the kernels' bound differences b = 0 one-sidedly, over 1e-12 µM: ~1e-4 off
        assert got == pytest.approx(want, rel=1e-3)
    t30 = np.arange(900) / 30.0
    ones30 = np.ones(t30.size - 1, dtype=np.int64)
    k_kin = _choose_stride(kin, [kv], t30, stim, np.array([0.03]), ones30, explicit=True)
    k_kin = np.broadcast_to(k_kin, t30.shape)
    after = np.searchsorted(t30, stim.events[0])  # the first frame after the first event
    assert k_kin[after] < k_kin[after - 10] and np.max(k_kin) >= 2
    fine = forward_solver(kin, t30, stim, substeps=8, explicit=True)(kv)[0]
    got = forward_solver(kin, t30, stim, substeps=ones30, explicit=True, stride=k_kin)(kv)[0]
    assert float(np.linalg.norm(got - fine)) / 0.03 <= SOLVER_TOLERANCE


def test_a_log_density_that_raises_is_minus_infinity_to_the_start_search():
    # numba raises ZeroDivisionError where Python would; a climb's line search may
    # probe parameters that far out, and the search must step back, not stop the fit
    from types import SimpleNamespace

    from cainfer.infer._starts import _logp_grad

    def logp(x):
        if x[0] > 10.0:
            return 1.0 / 0.0
        return np.array(-0.5 * float(x @ x)), -x

    f = _logp_grad(SimpleNamespace(logp_func=logp))
    lp, g = f(np.array([20.0, 1.0]))
    assert lp == -np.inf and np.all(g == 0.0) and g.shape == (2,)
    lp, g = f(np.array([1.0, 2.0]))
    assert float(lp) == -2.5 and np.all(g == [-1.0, -2.0])


def test_chains_sample_with_one_blas_thread_per_core(monkeypatch):
    # parallel chains each running OpenBLAS's own threads oversubscribe the cores: the
    # sampler runs with the BLAS threads that leave each chain its share
    import os

    import nutpie
    from threadpoolctl import threadpool_info

    seen = []
    sample = nutpie.sample

    def spy(*args, **kwargs):
        seen.append(
            (
                kwargs["cores"],
                [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"],
            )
        )
        return sample(*args, **kwargs)

    monkeypatch.setattr(nutpie, "sample", spy)
    y = cainfer.single_compartment().simulate(None, TIME, STIM).dff.values
    y = y + np.random.default_rng(2).normal(0.0, 0.02, y.size)
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    fit(y, cainfer.single_compartment(), stimulus=STIM, time=TIME, draws=100, tune=100,
        chains=2, cores=2, seed=1, observation="dff_exact")  # fmt: skip
    (cores, threads), *_ = seen
    assert cores == 2 and threads
    assert all(n == max(1, (os.cpu_count() or 1) // 2) for n in threads)
    # and the process's own setting is back after the fit
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before
