"""Observation models: each term against a known answer, then recovery of F0 and r."""

import math
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import xarray as xr
from scipy import stats

import cainfer
from cainfer.infer import observation as O
from tests.infer.conftest import assert_compact_round_trip

T = np.arange(600) / 30.0  # 20 s at 30 frames/s


def _ar1_cov(sd, rho):
    i = np.arange(sd.size)
    return np.outer(sd, sd) * rho ** np.abs(i[:, None] - i[None, :])


def test_slow_basis_has_unit_prior_variance_and_no_constant():
    t = np.arange(18000) / 30.0  # 10 minutes
    basis = O.slow_basis(t, 20.0)
    assert basis.shape[0] > 10  # a long recording gets many slow components
    np.testing.assert_allclose(basis.mean(axis=1), 0.0, atol=1e-3)  # F0 / offset is the level
    # z ~ N(0, I): Var s(t) = sum_k basis[k, t]^2, on average 1 over the recording
    assert np.mean(np.sum(basis**2, axis=0)) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize(("tau", "kept"), [(0.3, 0.95), (1.0, 0.85), (3.0, 0.55)])
def test_slow_basis_cannot_mimic_a_transient(tau, kept):
    """A transient decaying within seconds keeps most of its energy outside the basis span.

    (ℓ = 20 s; measured: 96 %, 86 %, 60 % and, for a 10-s decay, 27 %: keep ℓ well
    above the decay times of the cell.)
    """
    t = np.arange(1800) / 30.0
    transient = np.where(t >= 30.0, np.exp(-(t - 30.0) / tau), 0.0)
    basis = O.slow_basis(t, 20.0)
    coef, *_ = np.linalg.lstsq(basis.T, transient - transient.mean(), rcond=None)
    resid = transient - transient.mean() - coef @ basis
    assert np.sum(resid**2) > kept * np.sum((transient - transient.mean()) ** 2)


def test_slow_basis_follows_bleaching():
    """An exponential bleach of 30 % over a minute is within the basis span (log scale)."""
    t = np.arange(1800) / 30.0
    log_b = np.log(0.7) * t / t[-1]
    basis = O.slow_basis(t, 20.0)
    coef, *_ = np.linalg.lstsq(basis.T, log_b - log_b.mean(), rcond=None)
    resid = log_b - log_b.mean() - coef @ basis
    assert np.abs(resid).max() < 0.01  # 1 % of F where the bleach reaches 30 %


def test_slow_basis_rejects_bad_timescale():
    with pytest.raises(ValueError, match="drift_timescale"):
        O.slow_basis(T, 0.0)


@pytest.mark.parametrize("rho", [0.0, 0.6, -0.3])
def test_ar1_likelihood_equals_the_multivariate_normal(rho, rng):
    """Conditional terms sum to the joint density of a stationary AR(1) (heteroscedastic)."""
    n = 40
    mu = rng.normal(size=n)
    sd = rng.uniform(0.5, 2.0, size=n)
    y = rng.normal(mu, sd)
    mask = np.ones(n, bool)
    ll = O.pointwise_loglik(np, y, mu, sd, rho, None, mask).sum()
    ref = stats.multivariate_normal(mu, _ar1_cov(sd, rho)).logpdf(y)
    assert ll == pytest.approx(ref, rel=1e-10)


def test_a_missing_frame_splits_the_ar1_chain(rng):
    n, gap = 30, 12
    mu, sd = np.zeros(n), np.full(n, 1.5)
    y = rng.normal(size=n)
    mask = np.ones(n, bool)
    mask[gap] = False
    ll = O.pointwise_loglik(np, np.where(mask, y, np.nan), mu, sd, 0.7, None, mask)
    assert ll[gap] == 0.0
    ref = sum(
        stats.multivariate_normal(mu[s], _ar1_cov(sd[s], 0.7)).logpdf(y[s])
        for s in (slice(0, gap), slice(gap + 1, n))
    )
    assert ll.sum() == pytest.approx(ref, rel=1e-10)


def test_white_student_t_is_scipys(rng):
    y, mu, sd = rng.normal(size=20), rng.normal(size=20), rng.uniform(0.5, 2, 20)
    ll = O.pointwise_loglik(np, y, mu, sd, None, 4.0, np.ones(20, bool))
    np.testing.assert_allclose(ll, stats.t.logpdf(y, 4.0, mu, sd), rtol=1e-12)


@pytest.mark.parametrize(("rho", "nu"), [(0.5, None), (None, 5.0), (0.8, 3.0)])
def test_pytensor_and_numpy_likelihoods_agree(rho, nu, rng):
    n = 50
    y = rng.normal(size=n)
    y[[7, 8, 30]] = np.nan
    mask = np.isfinite(y)
    mu_v, sig_v, power_v = rng.normal(size=n), 0.7, 0.4
    mu = pt.dvector("mu")

    def f64(v):  # pt.as_tensor(5.0) would be float32
        return None if v is None else pt.as_tensor(np.float64(v))

    x = O.relative_signal(pt, "fluorescence", mu + 3.0, 2.0, None, None)
    sd = O.noise_sd(pt, x, f64(sig_v), f64(power_v))
    ll = O.pointwise_loglik(pt, y, mu, sd, f64(rho), f64(nu), mask)
    got = pytensor.function([mu], ll)(mu_v)
    x_np = O.relative_signal(np, "fluorescence", mu_v + 3.0, 2.0, None, None)
    sd_np = O.noise_sd(np, x_np, sig_v, power_v)
    want = O.pointwise_loglik(np, y, mu_v, sd_np, rho, nu, mask)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("rho", "nu"), [(None, None), (0.5, None), (None, 5.0), (-0.4, 3.0)])
@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("extra", [0.0, 0.03])
def test_the_summed_likelihood_and_its_gradient_are_the_pointwise_ones(
    rho, nu, missing, extra, rng
):
    """total_loglik (the model's shorter graph when every frame is observed) = Σ pointwise."""
    n = 60
    y = rng.normal(size=n)
    if missing:
        y[[0, 20, 21]] = np.nan
    mask = np.isfinite(y)
    mu = pt.dvector("mu")
    r = pt.dscalar("r")
    sig = pt.dscalar("s")
    power = pt.dscalar("p")
    x = O.relative_signal(pt, "dff", mu, 1.0, mu, 1.0)
    sd = O.noise_sd(pt, x, sig, power, extra)
    rho_v = None if rho is None else r
    nu_v = None if nu is None else pt.as_tensor(np.float64(nu))
    ref = pt.sum(O.pointwise_loglik(pt, y, mu, sd, rho_v, nu_v, mask))
    args = [mu, sig, power] + ([r] if rho is not None else [])
    vals = [rng.uniform(0.1, 0.5, n), 0.2, 0.3] + ([rho] if rho is not None else [])
    k = len(args)
    # the sd itself, and its logarithm in place of it (the model's graph with a noise exponent)
    log_sd = O.noise_log_sd(pt, x, sig, power, extra)
    for total in (O.total_loglik(y, mu, sd, rho_v, nu_v, mask),
                  O.total_loglik(y, mu, None, rho_v, nu_v, mask, log_sd=log_sd)):  # fmt: skip
        grads = pytensor.function(args, [total, ref, *pt.grad(total, args), *pt.grad(ref, args)],
                                  on_unused_input="ignore")  # fmt: skip
        out = grads(*vals)
        assert float(out[0]) == pytest.approx(float(out[1]), rel=1e-12)
        for a, b in zip(out[2 : 2 + k], out[2 + k :], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_noise_sd_is_a_power_of_the_signal():
    x = O.relative_signal(np, "fluorescence", np.array([100.0, 400.0, 0.0]), 100.0, None, None)
    np.testing.assert_allclose(x, [1.0, 4.0, 1e-3])  # no signal: floored, not zero
    # at the resting level the sd is sigma, whatever the exponent
    assert O.noise_sd(np, x, 2.0, 0.3)[0] == pytest.approx(2.0)
    # p = 0.5, shot noise: variance proportional to the signal
    assert O.noise_sd(np, x, 2.0, 0.5)[1] == pytest.approx(4.0)
    # p = 1, proportional noise: sd proportional to the signal
    assert O.noise_sd(np, x, 2.0, 1.0)[1] == pytest.approx(8.0)
    # p = 0, read noise: constant
    np.testing.assert_allclose(O.noise_sd(np, x, 2.0, 0.0), 2.0)
    assert O.noise_sd(np, x, 2.0, 0.5)[2] == pytest.approx(2.0 * math.sqrt(1e-3))
    # extra variance adds in quadrature
    assert O.noise_sd(np, x, 2.0, 0.0, 5.0)[0] == pytest.approx(3.0)


def test_noise_of_a_dff_input_follows_its_light_not_its_baseline_errors():
    """A published ΔF/F's offset and drift are errors of its F0, not light: no noise change."""
    dff = np.array([0.0, 1.0, 3.0])
    mu_a = 0.8 * dff + 0.0
    mu_b = 0.8 * dff - 0.5  # the same trace with its baseline 0.5 too low
    xa = O.relative_signal(np, "dff", mu_a, 1.0, dff, 0.8)
    xb = O.relative_signal(np, "dff", mu_b, 1.0, dff, 0.8)
    np.testing.assert_allclose(xa, [1.0, 1.8, 3.4])
    np.testing.assert_allclose(xb, xa)


def test_simulated_residuals_have_the_model_autocorrelation():
    rng = np.random.default_rng(3)
    sd = np.full((4, 20000), 2.0)
    e = O.simulate_residuals(rng, sd, np.array([0.0, 0.5, 0.9, -0.3]), None)
    for row, rho in zip(e, (0.0, 0.5, 0.9, -0.3), strict=True):
        assert row.std() == pytest.approx(2.0, rel=0.05)
        assert np.corrcoef(row[1:], row[:-1])[0, 1] == pytest.approx(rho, abs=0.03)


def _slow_trace(n):
    t = np.arange(n) / 30.0
    return 100.0 + 5.0 * np.sin(2 * np.pi * t / 7.0) + 3.0 * np.sin(2 * np.pi * t / 2.3)


def test_a_denoised_background_sheds_its_noise_and_says_what_is_left(rng):
    """Swings about 4× the noise: the raw trace would dilute r by σ²/V ≈ 6 %."""
    true = _slow_trace(3000)
    b = true + rng.normal(0.0, 1.0, true.size)
    smooth, sd = O.denoised_background(b)
    err = (smooth - true)[100:-100]
    assert np.abs(err.mean()) < 0.08
    assert err.std() < 0.7  # the noise was 1.0 (40 seeds: 0.63 at most)
    assert sd**2 / true.var() < 0.03  # the dilution left: half the raw trace's or less
    # what is left is the filtered noise; the filter's bias on this slow trace is far smaller
    assert sd == pytest.approx(err.std(), rel=0.25)


def test_a_background_with_sharp_transients_far_above_its_noise_is_left_as_it_is(rng):
    """A neuropil with transients of its own: dilution about 1 %, and blurring their onsets
    would leave structure in the ROI's residuals."""
    n = 900
    impulses = np.zeros(n)
    impulses[rng.integers(0, n, 6)] = rng.uniform(15.0, 45.0, 6)
    transients = np.convolve(impulses, np.exp(-np.arange(150) / 30.0))[:n]
    true = 100.0 + 3.0 * _slow_trace(n) + transients
    b = true + rng.normal(0.0, 1.4, n)
    smooth, sd = O.denoised_background(b)
    np.testing.assert_array_equal(smooth, b)
    assert sd == pytest.approx(O.noise_scale(b))


def test_a_noise_free_background_is_left_as_it_is(rng):
    """Steps far above the noise: any smoothing would cost more than it removes."""
    b = np.repeat([10.0, 110.0, 30.0, 90.0], 150) + rng.normal(0.0, 0.01, 600)
    smooth, sd = O.denoised_background(b)
    np.testing.assert_array_equal(smooth, b)
    assert sd == pytest.approx(O.noise_scale(b))


def test_a_denoised_background_fills_missing_frames(rng):
    true = _slow_trace(900)
    b = true + rng.normal(0.0, 1.0, true.size)
    b[400:405] = np.nan
    smooth, _ = O.denoised_background(b)
    assert np.all(np.isfinite(smooth))
    np.testing.assert_allclose(smooth[400:405], true[400:405], atol=1.0)


def test_a_denoised_regressor_undoes_regression_dilution(rng):
    """y = r·B_true + noise, regressed on the measured B: dilution by var(B_true)/var(B).

    Here var(B_true) ≈ var(noise of B), so the raw regressor halves r; the
    denoised one recovers most of it: smoothed as far as the remaining dilution
    and the filter's damping of the trace's own swings balance (measured over
    40 seeds: 0.73–0.83 for 0.8).
    """
    true = _slow_trace(6000) - 100.0
    true *= 1.0 / true.std()
    b = true + rng.normal(0.0, 1.0, true.size)
    y = 0.8 * true + rng.normal(0.0, 1.0, true.size)

    def slope(x):
        x = x - x.mean()
        return float(x @ (y - y.mean()) / (x @ x))

    assert slope(b) == pytest.approx(0.4, abs=0.05)
    assert 0.7 < slope(O.denoised_background(b)[0]) < 0.9


# ---------------------------------------------------------------- fits

TIME = np.arange(600) / 30.0
STIM = cainfer.Stimulus(events=[1.0, 4.0, 4.05, 8.0, 11.0, 11.05, 14.0, 17.0])
MODEL = cainfer.single_compartment("OGB-1")
TRUTH = {"gamma": 500.0, "influx_amplitude": 15.0}


def _fluorescence(seed, f0=300.0, ratio=0.9, gain=1.0):
    """F = F0·b(t)·(1 + ΔF/F) + r·N(t) + noise, with a neuropil that has transients of its own."""
    rng = np.random.default_rng(seed)
    dff = MODEL.simulate(TRUTH, TIME, STIM).dff.values
    bleach = 0.85 ** (TIME / TIME[-1])
    # neuropil: its own slow transients (not the cell's times) on a bleaching level
    kernel = np.exp(-np.arange(90) / 30.0)
    spikes = np.zeros(TIME.size)
    spikes[rng.choice(TIME.size - 100, 6, replace=False)] = rng.uniform(0.2, 0.5, 6)
    np_true = 150.0 * bleach * (1.0 + np.convolve(spikes, kernel)[: TIME.size])
    mean = f0 * bleach * (1.0 + gain * dff) + ratio * np_true
    F = rng.normal(mean, np.sqrt(4.0 + 0.05 * mean))  # read + shot noise
    F_neu = np_true + rng.normal(0.0, 0.5, TIME.size)
    F0 = np.full(TIME.size, np.percentile(F - 0.7 * F_neu, 8))  # what extraction would say
    coords = {"roi": [0], "time": ("time", TIME, {"units": "s"})}
    return xr.Dataset(
        {v: (("roi", "time"), x[None]) for v, x in (("F", F), ("F_neu", F_neu), ("F0", F0))},
        coords=coords,
    )


def _covers(fit, name, value):
    row = fit.summary(round_to="none").loc[name]
    return row["hdi94_lb"] <= value <= row["hdi94_ub"]


@pytest.mark.slow
def test_fluorescence_fit_recovers_f0_neuropil_ratio_and_physics(tmp_path):
    ds = _fluorescence(seed=11)
    res = cainfer.fit(ds, MODEL, stimulus=STIM, free=list(TRUTH), draws=1000, tune=500,
                      chains=2, seed=3)  # fmt: skip
    assert res.settings["observation"] == "fluorescence"
    s = res.summary(round_to="none")
    # geometric-mean resting level of the bleaching cell: F0 · exp(mean log b)
    f0_eff = 300.0 * math.exp(np.mean(np.log(0.85) * TIME / TIME[-1]))
    for name, value in (*TRUTH.items(), ("neuropil_ratio", 0.9), ("F0", f0_eff)):
        assert _covers(res, name, value), (name, s.loc[name])
    assert float(s.loc["neuropil_ratio", "sd"]) < 0.1  # the neuropil's own transients tell r
    groups = res.idata
    assert groups["observed_data"]["y"].attrs["observation"] == "fluorescence"
    assert groups["posterior_predictive"]["y"].shape == (2, 1000, TIME.size)
    assert groups["log_likelihood"]["y"].shape == (2, 1000, TIME.size)
    # the recording read back as ΔF/F follows the model's ΔF/F (noise sd 2.6 counts / 300)
    dff_true = MODEL.simulate(TRUTH, TIME, STIM).dff.values
    resid = groups["observed_data"]["dff"].values - dff_true
    assert np.abs(np.median(resid)) < 0.01 and resid.std() < 0.03
    # saved compact, the smoothed neuropil and its noise come back with it
    assert_compact_round_trip(res, tmp_path / "fit.nc")


@pytest.mark.slow
def test_a_wrong_dff_scale_and_offset_are_inferred_not_read_as_physics():
    dff = MODEL.simulate(TRUTH, TIME, STIM).dff.values
    rng = np.random.default_rng(5)
    y = 0.8 * dff + 0.05 + rng.normal(0.0, 0.03, TIME.size)  # F0 20 % too high, baseline off
    da = xr.DataArray(y, dims="time", coords={"time": TIME})
    kw = dict(stimulus=STIM, free=list(TRUTH), draws=1000, tune=500, chains=2, seed=4)
    res = cainfer.fit(da, MODEL, **kw)
    assert res.settings["observation"] == "dff"
    for name, value in (*TRUTH.items(), ("dff_scale", 0.8), ("dff_offset", 0.05)):
        assert _covers(res, name, value), (name, res.summary().loc[name])
    # the prior group holds the scale's stated prior (it is sampled in sheared coordinates)
    prior_scale = np.log(np.asarray(res.idata["prior"]["dff_scale"]).ravel())
    assert abs(prior_scale.std() - O.SCALE_LOG_SD) < 0.05 and abs(prior_scale.mean()) < 0.05
    exact = cainfer.fit(da, MODEL, observation="dff_exact", residuals="white", **kw)
    # taken as exact, the same trace puts the influx amplitude confidently wrong
    assert not _covers(exact, "influx_amplitude", 15.0), exact.summary()


def test_fluorescence_needs_raw_fluorescence():
    da = xr.DataArray(np.zeros(TIME.size), dims="time", coords={"time": TIME})
    with pytest.raises(ValueError, match="needs a Dataset with raw fluorescence"):
        cainfer.fit(da, MODEL, stimulus=STIM, observation="fluorescence")
    ds = xr.Dataset({"dff": (("roi", "time"), np.zeros((1, TIME.size)))},
                    coords={"roi": [0], "time": TIME})  # fmt: skip
    with pytest.raises(ValueError, match="no 'F' variable"):
        cainfer.fit(ds, MODEL, stimulus=STIM, observation="fluorescence")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"observation": "photons"}, "allowed: auto, fluorescence, dff, dff_exact"),
        ({"residuals": "ar2"}, "allowed: ar1, white"),
        ({"drift": 2}, "replaced by a smooth baseline"),
        ({"drift_timescale": -1.0}, "drift_timescale"),
    ],
)
def test_bad_observation_options(kwargs, match):
    da = xr.DataArray(np.zeros(TIME.size), dims="time", coords={"time": TIME})
    with pytest.raises(ValueError, match=match):
        cainfer.fit(da, MODEL, stimulus=STIM, **kwargs)


TOY_TIME = np.linspace(0.0, 10.0, 200)
TEMPLATE = np.exp(-((TOY_TIME - 3.0) ** 2)) + 0.5 * np.exp(-((TOY_TIME - 7.0) ** 2) / 0.5)


def _toy_dff_model(several: bool) -> tuple[object, object]:
    """A ΔF/F input whose model trace is θ·template (θ ~ LogNormal(0, 0.5) per ROI)."""
    import pymc as pm

    t = TOY_TIME
    y = np.vstack([0.7 * TEMPLATE, 1.3 * TEMPLATE]) + 0.01 * np.cos(7 * t)
    n = 2 if several else 1
    data = O.ObservedData(kind="dff", y=y[:n])
    opts = O.Options(likelihood="normal", residuals="white", drift="none", drift_timescale=20.0)
    with pm.Model(coords={"roi": list(range(n))} if several else {}) as m:
        theta = pm.LogNormal("theta", 0.0, 0.5, shape=(n,))
        O.add_likelihood([theta[r] * TEMPLATE for r in range(n)], data, t, opts, several=several)
    return m, data


@pytest.mark.parametrize("several", [False, True])
def test_the_scale_is_sampled_along_its_ridge_under_the_same_prior(several, monkeypatch):
    """The sheared ``dff_scale`` differs from sampling it as itself by a change of coordinates.

    ``z = log(a)/σ + (log sd_t(d) − log sd_t(y))/σ``: at any θ and ``a`` the
    log density (prior and likelihood) in (θ, z) is the one in (θ, log a) plus
    the constant ``log σ`` per ROI (``dz/dlog a = 1/σ``).
    """
    import pymc as pm

    sheared, data = _toy_dff_model(several)

    def plain(dff_model, data, *, several):
        dims = "roi" if several else None
        return pm.LogNormal("dff_scale", mu=0.0, sigma=O.SCALE_LOG_SD, dims=dims), 0.0

    monkeypatch.setattr(O, "_scale_along_the_amplitude_ridge", plain)
    plain_model, _ = _toy_dff_model(several)
    n = data.y.shape[0]

    def logp(m):
        fn = pytensor.function(m.value_vars, m.logp(jacobian=True))
        return lambda point: float(fn(*(point[v.name] for v in m.value_vars)))

    lp_s, lp_p = logp(sheared), logp(plain_model)
    sd_y = np.array([float(np.std(row)) for row in data.y])
    shape = (lambda v: v) if several else (lambda v: v[0])
    rng = np.random.default_rng(3)
    diffs = []
    for _ in range(6):
        log_theta = rng.normal(0.0, 0.5, n)
        log_a = rng.normal(0.0, 0.3, n)
        z = (log_a + log_theta + np.log(np.std(TEMPLATE)) - np.log(sd_y)) / O.SCALE_LOG_SD
        ps, pp = sheared.initial_point(), plain_model.initial_point()
        common = {"theta_log__": log_theta, "dff_offset": shape(rng.normal(0.0, 0.1, n)),
                  "sigma_log__": shape(rng.normal(-3.0, 0.5, n))}  # fmt: skip
        ps.update(common, dff_scale_z=shape(z))
        pp.update(common, dff_scale_log__=shape(log_a))
        diffs.append(lp_s(ps) - lp_p(pp))
    np.testing.assert_allclose(diffs, n * np.log(O.SCALE_LOG_SD), atol=1e-7)


@pytest.mark.parametrize("minutes", [0.5, 2.0, 10.0])
def test_slow_basis_rows_are_orthogonal_and_keep_the_prior(minutes):
    """The rotated rows have the prior covariance of the weighted cosines and trend."""
    t = np.arange(int(minutes * 60 * 30)) / 30.0
    ell = 20.0
    basis = O.slow_basis(t, ell)
    # reference: the unrotated rows, built from the formula in the module docstring
    span = t[-1] - t[0]
    k = np.arange(1, basis.shape[0])
    w = np.exp(-((np.pi * k * ell / span) ** 2) / 4)
    w = np.concatenate([[w[0]], w])
    x = 2.0 * (t - t[0]) / span - 1.0
    phi = np.vstack([np.sqrt(3) * x, np.sqrt(2) * np.cos(np.pi * k[:, None] * (t - t[0]) / span)])
    ref = (w / np.sqrt(np.sum(w**2)))[:, None] * phi
    scale = np.abs(ref.T @ ref).max()
    np.testing.assert_allclose(basis.T @ basis, ref.T @ ref, atol=1e-10 * scale)
    gram = basis @ basis.T
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() < 1e-10 * np.diag(gram).max()
    # the unrotated trend and first cosine overlap almost entirely
    g = ref[:2] @ ref[:2].T
    assert abs(g[0, 1]) / np.sqrt(g[0, 0] * g[1, 1]) > 0.95


@pytest.mark.slow
def test_rois_of_one_structure_reuse_the_compiled_model_with_their_own_data(monkeypatch):
    """The second ROI's fit swaps its numbers into the first's compiled model: same draws."""
    import importlib

    F = importlib.import_module("cainfer.infer.fit")
    calls = []
    real = F.compile_numba
    monkeypatch.setattr(F, "compile_numba", lambda m: calls.append(1) or real(m))
    monkeypatch.setattr(F, "_REUSABLE", {})
    monkeypatch.setattr(warnings, "filters", list(warnings.filters))  # restored afterwards
    warnings.simplefilter("ignore", cainfer.infer.SamplerWarning)  # short chains
    a, b = _fluorescence(seed=21), _fluorescence(seed=22, f0=250.0, ratio=0.6)
    kw = dict(stimulus=STIM, free=list(TRUTH), draws=200, tune=200, chains=2, seed=5)
    cainfer.fit(a, MODEL, **kw)
    reused = cainfer.fit(b, MODEL, **kw)
    assert len(calls) == 1
    F._REUSABLE.clear()
    fresh = cainfer.fit(b, MODEL, **kw)
    assert len(calls) == 2
    for name in (*TRUTH, "F0", "neuropil_ratio", "sigma"):
        np.testing.assert_allclose(reused.idata["posterior"][name], fresh.idata["posterior"][name],
                                   rtol=1e-12, err_msg=name)  # fmt: skip
    # the prior group too, drawn by the kept draw function (F0's prior is centred on the data)
    for name in fresh.idata["prior"].data_vars:
        np.testing.assert_allclose(reused.idata["prior"][name], fresh.idata["prior"][name],
                                   rtol=1e-12, err_msg=f"prior {name}")  # fmt: skip
    assert abs(float(reused.idata["prior"]["F0"].median()) - 250.0) < 50.0
    # and the numbers are the second ROI's: its F0 and neuropil ratio
    s = reused.summary(round_to="none")
    assert _covers(reused, "neuropil_ratio", 0.6), s.loc["neuropil_ratio"]
    assert 200.0 < s.loc["F0", "mean"] < 260.0
    # another structure (one parameter free) or a missing frame compiles its own
    cainfer.fit(b, MODEL, **(kw | {"free": ["gamma"]}))
    assert len(calls) == 3
    holed = b.copy(deep=True)
    holed["F"][0, 100] = np.nan
    cainfer.fit(holed, MODEL, **kw)
    assert len(calls) == 4
    assert sum(1 for _ in F._REUSABLE) == 2  # the model with a missing frame is not kept
