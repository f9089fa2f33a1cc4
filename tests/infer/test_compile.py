"""The lean C wrappers around the compiled log density against nutpie's own."""

import ctypes

import numpy as np
import nutpie
import pymc as pm
import pytest

from cainfer.infer._compile import compile_numba


@pytest.fixture(scope="module")
def compiled():
    y = np.random.default_rng(0).normal(1.0, 2.0, size=30)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 10.0)
        sigma = pm.HalfNormal("sigma", 5.0)
        pm.Deterministic("scaled", 3.0 * mu)
        pm.Normal("y", mu, sigma, observed=y)
    return compile_numba(model), nutpie.compile_pymc_model(model, backend="numba")


def _ptr(a):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))


def _logp(c, x):
    x = np.ascontiguousarray(x, dtype=float)
    grad, lp = np.zeros(x.size), np.zeros(1)
    code = c.compiled_logp_func.ctypes(
        x.size, _ptr(x), _ptr(grad), _ptr(lp), c.user_data.ctypes.data
    )
    return code, lp[0], grad


def _expand(c, x):
    x = np.ascontiguousarray(x, dtype=float)
    out = np.zeros(c.n_expanded)
    code = c.compiled_expand_func.ctypes(
        x.size, out.size, _ptr(x), _ptr(out), c.user_data.ctypes.data
    )
    return code, out


@pytest.mark.parametrize("x", [[0.3, -0.2], [1.0, 0.7], [4.0, -3.0], [0.0, 800.0], [np.nan, 0.0]])
def test_log_density_gradient_and_return_code_equal_nutpie(compiled, x):
    lean, ref = compiled
    code, lp, grad = _logp(lean, x)
    code_r, lp_r, grad_r = _logp(ref, x)
    assert code == code_r
    np.testing.assert_array_equal(grad, grad_r)
    np.testing.assert_array_equal(lp, lp_r)


def test_nonfinite_points_give_nutpie_return_codes(compiled):
    lean, _ = compiled
    assert _logp(lean, [0.3, -0.2])[0] == 0
    assert _logp(lean, [np.nan, 0.0])[0] in (3, 4)  # not finite: the sampler rejects it
    assert _logp(lean, [0.0, 0.0, 0.0])[0] == -1  # wrong dimension


def test_expansion_equals_nutpie(compiled):
    lean, ref = compiled
    code, out = _expand(lean, [0.5, 0.1])
    code_r, out_r = _expand(ref, [0.5, 0.1])
    assert code == code_r == 0
    np.testing.assert_array_equal(out, out_r)
    assert 3.0 * 0.5 in out  # the deterministic


def test_same_seed_gives_the_same_draws(compiled):
    lean, ref = compiled
    kw = dict(draws=100, tune=100, chains=2, seed=5, progress_bar=False)
    a = nutpie.sample(lean, **kw)
    b = nutpie.sample(ref, **kw)
    for name in ("mu", "sigma", "scaled"):
        np.testing.assert_array_equal(np.asarray(a.posterior[name]), np.asarray(b.posterior[name]))
    assert float(np.asarray(a.posterior["mu"]).std()) > 0
