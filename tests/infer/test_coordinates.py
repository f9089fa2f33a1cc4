"""The chains' coordinates u = (x − loc)/scale: same density, same draws' distribution."""

import numpy as np
import nutpie
import pymc as pm
import pytensor
import pytest

from cainfer.infer._compile import compile_numba
from cainfer.infer._coordinates import COORD_LOC, COORD_SCALE, SampledModel
from cainfer.infer._starts import _mode_starts
from tests.infer.test_compile import _expand, _logp

Y = np.random.default_rng(3).normal(1.0, 2.0, size=40)
PRIOR_SD, NOISE_SD = 10.0, 2.0


def _model(cls):
    """Every kind of free variable: untransformed scalar and vector, log and interval transforms."""
    with cls() as model:
        mu = pm.Normal("mu", 0.0, PRIOR_SD)
        sigma = pm.HalfNormal("sigma", 5.0)
        w = pm.Normal("w", 0.0, 1.0, shape=3)
        rho = pm.Uniform("rho", -1.0, 1.0)
        pm.Deterministic("scaled", 3.0 * mu + w.sum())
        pm.Potential("extra", -0.5 * ((w - rho) ** 2).sum())
        pm.Normal("y", mu, sigma, observed=Y)
    return model


@pytest.fixture(scope="module")
def pair():
    """The model in the chains' coordinates (compiled) and PyMC's own (its functions)."""
    sampled = _model(SampledModel)
    assert sampled.use_sampled_coordinates()
    plain = _model(pm.Model)
    return compile_numba(sampled), plain


def test_the_log_density_and_reported_values_are_those_of_x(pair):
    """At u, the compiled model gives PyMC's log density at x = loc + scale·u, and scale × its
    gradient; the reported variables are those of x."""
    compiled, plain = pair
    rng = np.random.default_rng(0)
    n = compiled.n_dim
    assert n == 6
    logp = plain.compile_logp()
    dlogp = plain.compile_dlogp()
    names = [v.name for v in plain.value_vars]
    sizes = [int(np.prod(plain.initial_point()[k].shape)) for k in names]
    for _ in range(5):
        loc, scale = rng.normal(0.0, 1.0, n), np.exp(rng.normal(0.0, 0.7, n))
        c = compiled.with_data(**{COORD_LOC: loc, COORD_SCALE: scale})
        u = rng.normal(0.0, 1.0, n)
        x = loc + scale * u
        point = dict(zip(names, np.split(x, np.cumsum(sizes)[:-1]), strict=True))
        point = {k: v.reshape(plain.initial_point()[k].shape) for k, v in point.items()}
        code, lp, grad = _logp(c, u)
        assert code == 0
        np.testing.assert_allclose(lp, logp(point), rtol=1e-10)
        np.testing.assert_allclose(grad, scale * dlogp(point), rtol=1e-8, atol=1e-10)
        code, out = _expand(c, u)
        assert code == 0
        got = {k: out[sl] for k, sl in zip(*c.shape_info[:2], strict=True)}
        mu, log_sigma, w, rho_raw = x[0], x[1], x[2:5], x[5]
        np.testing.assert_allclose(got["mu"], mu, rtol=1e-12)
        np.testing.assert_allclose(got["sigma"], np.exp(log_sigma), rtol=1e-12)
        np.testing.assert_allclose(got["w"], w, rtol=1e-12)
        np.testing.assert_allclose(got["rho"], np.tanh(rho_raw / 2), rtol=1e-12)  # (-1, 1)
        np.testing.assert_allclose(got["scaled"], 3.0 * mu + w.sum(), rtol=1e-10)


def _conjugate():
    """A normal mean (σ known) in the chains' coordinates, its exact posterior mean and sd."""
    with SampledModel() as model:
        mu = pm.Normal("mu", 0.0, PRIOR_SD)
        pm.Normal("y", mu, NOISE_SD, observed=Y)
    assert model.use_sampled_coordinates()
    precision = 1 / PRIOR_SD**2 + Y.size / NOISE_SD**2
    return model, Y.sum() / NOISE_SD**2 / precision, precision**-0.5


def test_the_posterior_is_the_same_however_far_the_coordinates_are_from_it():
    """Conjugate normal mean (σ known): the exact posterior, from coordinates off by 10⁴ sds."""
    model, mean, sd = _conjugate()
    base = compile_numba(model)
    kw = dict(draws=2000, tune=500, chains=2, seed=4, progress_bar=False)
    for loc, scale in ((0.0, 1.0), (mean + 1e4 * sd, 1e-3), (-3.0, 50.0)):
        c = base.with_data(**{COORD_LOC: np.array([loc]), COORD_SCALE: np.array([scale])})
        post = nutpie.sample(c, **kw).posterior
        assert list(post.data_vars) == ["mu"]  # no variable of the coordinates themselves
        draws = np.asarray(post["mu"]).ravel()
        # 4000 draws, ESS > 1000: the mean's MC error < 0.03 sd, the sd's < 0.03 sd
        assert abs(draws.mean() - mean) < 0.15 * sd, (loc, scale, draws.mean(), mean)
        assert abs(draws.std() - sd) < 0.15 * sd, (loc, scale, draws.std(), sd)


def test_a_value_of_unknown_shape_leaves_the_model_as_it_is():
    n = pytensor.shared(3, name="n")
    with SampledModel() as model:
        pm.Normal("a", 0.0, 1.0, shape=(n,))
    assert not model.use_sampled_coordinates()
    assert [v.name for v in model.value_vars] == ["a"]
    assert model.compile_logp()({"a": np.zeros(3)}) == pytest.approx(-1.5 * np.log(2 * np.pi))


def test_chains_start_in_the_coordinates_of_the_best_mode():
    """The mode search sets loc to the mode and scale to its sd; starts are given in u."""
    model, mean, sd = _conjugate()
    found = _mode_starts(compile_numba(model), seed=0)
    keys = {v.name: k for v, k in found.shared_var_keys.items()}
    loc = found.shared_data[keys[COORD_LOC]]
    scale = found.shared_data[keys[COORD_SCALE]]
    assert loc[0] == pytest.approx(mean, abs=1e-4 * sd)
    assert scale[0] == pytest.approx(sd, rel=1e-3)
    starts = np.array([found.initial_point_func(s)[0] for s in range(200)])
    # half a local sd around the mode, in u: N(0, 0.5²) (200 draws: sd of the sd ~0.025)
    assert abs(starts.mean()) < 0.12 and abs(starts.std() - 0.5) < 0.1, starts.std()
