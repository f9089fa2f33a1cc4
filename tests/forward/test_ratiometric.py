"""The Grynkiewicz calibration and ratiometric dyes as two single-wavelength channels."""

import numpy as np
import pytest

from cainfer.forward import (
    RatioCalibration,
    RatioWarning,
    Stimulus,
    fluorescence,
    get_ratiometric,
    ratiometric_names,
    single_compartment,
)

CAL = RatioCalibration(r_min=0.4, r_max=7.5, beta=9.0, kd=0.224)


def test_ratio_limits_and_half_saturation():
    assert CAL.to_ratio(0.0) == pytest.approx(0.4)
    assert CAL.to_ratio(1e9) == pytest.approx(7.5, rel=1e-6)
    assert CAL.to_ratio(np.inf) == 7.5
    # at c = K_d the dye is half bound: R = (R_min·β + R_max)/(β + 1)
    half = (0.4 * 9.0 + 7.5) / 10.0
    assert CAL.to_ratio(0.224) == pytest.approx(half, rel=1e-14)
    assert CAL.to_calcium(half) == pytest.approx(0.224, rel=1e-12)
    assert CAL.to_calcium(0.4) == 0.0


@pytest.mark.parametrize("hill", [1.0, 2.4])
def test_calcium_ratio_round_trip(hill):
    cal = RatioCalibration(r_min=0.4, r_max=7.5, beta=9.0, kd=0.3, hill=hill)
    c = np.geomspace(1e-3, 50.0, 200)
    np.testing.assert_allclose(cal.to_calcium(cal.to_ratio(c)), c, rtol=1e-9)


def test_ratio_is_the_ratio_of_the_two_channels():
    # each channel as a single-wavelength indicator, F_λ = S_f,λ·(1 + (R_f,λ − 1)·f):
    # their ratio, scaled by R_min = S_f,1/S_f,2, is the calibration's R(c)
    dye = get_ratiometric("Fura-2")
    cal = dye.calibration(r_min=0.4, r_max=7.5, beta=9.0)
    num, den = (dye.indicator(cal, channel=k) for k in (0, 1))
    assert num.rf > 1.0 > den.rf
    c = np.geomspace(0.01, 20.0, 50)
    ratio = cal.r_min * fluorescence(c, num) / fluorescence(c, den)
    np.testing.assert_allclose(ratio, cal.to_ratio(c), rtol=1e-12)


def test_a_dimming_channel_gives_negative_transients():
    dye = get_ratiometric("fura-2")
    den = dye.indicator(dye.calibration(r_min=0.4, r_max=7.5, beta=9.0), channel=1)
    t = np.arange(90) / 30.0
    sim = single_compartment(den).simulate(None, t, Stimulus(events=[1.0]))
    assert sim.dff.values.min() < -0.1 and sim.dff.values.max() <= 1e-12


def test_ratios_outside_the_calibration_are_nan_with_a_warning():
    with pytest.warns(RatioWarning, match="2 ratio"):
        c = CAL.to_calcium([0.3, 1.0, 7.5, np.nan])
    assert np.isnan(c[[0, 2, 3]]).all() and np.isfinite(c[1])


def test_catalogue_and_bad_input():
    assert set(ratiometric_names()) == {"Fura-2", "Indo-1"}
    fura = get_ratiometric("FURA-2")
    assert fura.kd == 0.224 and fura.hill == 1.0 and "doi:" in fura.source
    with pytest.raises(ValueError, match=r"unknown ratiometric dye 'Fura-4'.*Fura-2, Indo-1"):
        get_ratiometric("Fura-4")
    with pytest.raises(ValueError, match=r"r_max = 0\.3 must exceed r_min"):
        RatioCalibration(r_min=0.4, r_max=0.3, beta=9.0, kd=0.224)
    with pytest.raises(ValueError, match="beta"):
        RatioCalibration(r_min=0.4, r_max=7.5, beta=-1.0, kd=0.224)
    with pytest.raises(ValueError, match="free calcium must be"):
        CAL.to_ratio([-0.1])
    with pytest.raises(ValueError, match="channel = 2"):
        fura.indicator(fura.calibration(r_min=0.4, r_max=7.5, beta=9.0), channel=2)
    other = RatioCalibration(r_min=0.4, r_max=7.5, beta=9.0, kd=0.25)
    with pytest.raises(ValueError, match="are not Fura-2's"):
        fura.indicator(other, channel=0)
