import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cainfer.forward import (
    Indicator,
    buffer_capacity,
    fluorescence,
    free_calcium,
    get_indicator,
    indicator_capacity,
    total_calcium,
)


@settings(max_examples=300, deadline=None)
@given(
    c=st.floats(0.0, 1e3),
    kappa=st.floats(0.0, 500.0),
    kd=st.floats(0.01, 10.0),
    hill=st.floats(0.5, 4.0),
    bt=st.floats(0.0, 500.0),
)
def test_free_total_free_round_trip(c, kappa, kd, hill, bt):
    ind = Indicator("x", kd=kd, hill=hill, rf=10.0, b_total=bt)
    tot = total_calcium(c, kappa_s=kappa, indicator=ind)
    assert tot >= c  # free is never more than total
    back = free_calcium(tot, kappa_s=kappa, indicator=ind)
    assert back == pytest.approx(c, rel=1e-10, abs=1e-13)


def test_total_is_linear_buffer_plus_indicator_bound():
    ind = get_indicator("OGB-1")  # n = 1
    c = np.array([0.0, 0.05, 0.25, 1.0, 10.0])
    expected = c * 61.0 + ind.b_total * c / (c + ind.kd)
    np.testing.assert_allclose(total_calcium(c, kappa_s=60.0, indicator=ind), expected, rtol=1e-14)


def test_buffer_capacity_is_derivative_of_total():
    for name in ("OGB-1", "GCaMP6f", "jGCaMP7b"):
        ind = get_indicator(name)
        c = np.geomspace(1e-3, 20.0, 50)
        h = 1e-6 * c
        numeric = (
            total_calcium(c + h, kappa_s=80.0, indicator=ind)
            - total_calcium(c - h, kappa_s=80.0, indicator=ind)
        ) / (2 * h)
        np.testing.assert_allclose(
            buffer_capacity(c, kappa_s=80.0, indicator=ind), numeric, rtol=1e-6
        )


def test_indicator_capacity_for_hill_one_matches_closed_form():
    ind = get_indicator("OGB-1")
    c = np.array([0.01, 0.05, 0.25, 2.0])
    closed = ind.b_total * ind.kd / (c + ind.kd) ** 2
    np.testing.assert_allclose(indicator_capacity(c, ind), closed, rtol=1e-12)


def test_fluorescence_limits():
    ind = get_indicator("GCaMP6f")
    f = fluorescence(np.array([0.0, ind.kd, 1e6]), ind)
    np.testing.assert_allclose(f, [1.0, 1.0 + (ind.rf - 1) / 2, ind.rf], rtol=1e-9)


@pytest.mark.parametrize("bad", [-0.1, np.nan, np.inf])
def test_bad_concentrations_raise(bad):
    ind = get_indicator("OGB-1")
    with pytest.raises(ValueError, match="free calcium c"):
        total_calcium([0.1, bad], kappa_s=50.0, indicator=ind)
    with pytest.raises(ValueError, match="total calcium"):
        free_calcium(bad, kappa_s=50.0, indicator=ind)


def test_bad_kappa_raises():
    with pytest.raises(ValueError, match="kappa_s"):
        total_calcium(0.1, kappa_s=-1.0, indicator=get_indicator("OGB-1"))
