import numpy as np
import pytest

from cainfer.extract import baseline


@pytest.fixture
def trace(rng):
    t = np.arange(6000) / 20.0  # 300 s at 20 frames/s
    slow = 100.0 + 0.1 * t  # drifting baseline
    spikes = np.zeros_like(t)
    spikes[rng.choice(t.size, 40, replace=False)] = 50.0
    transients = np.convolve(spikes, np.exp(-np.arange(60) / 10.0))[: t.size]
    return t, slow, (slow + transients + rng.normal(0, 0.5, t.size))[None, :]


@pytest.mark.parametrize("method", ["percentile", "maximin"])
def test_rolling_baselines_follow_the_slow_drift(trace, method):
    _t, slow, F = trace
    F0 = baseline(F, 20.0, method=method, window=30.0, percentile=10.0, sigma=0.5)
    assert F0.shape == F.shape
    inner = slice(600, -600)
    np.testing.assert_allclose(F0[0, inner], slow[inner], atol=2.0)


def test_constant_baseline_is_the_trace_percentile(trace):
    _, _, F = trace
    F0 = baseline(F, 20.0, method="constant", percentile=20.0)
    np.testing.assert_allclose(F0, np.percentile(F, 20.0))


def test_window_longer_than_trace_is_constant():
    F = np.arange(100.0)[None]
    np.testing.assert_allclose(baseline(F, 10.0, window=60.0, percentile=50.0), 49.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "mode"}, "allowed: percentile, maximin, constant"),
        ({"percentile": 120.0}, r"\[0, 100\]"),
        ({"window": 0.0}, "window"),
    ],
)
def test_bad_baseline_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        baseline(np.ones((1, 10)), 10.0, **kwargs)
