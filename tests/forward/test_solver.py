"""The compiled fixed-step solver against scipy's solve_ivp at tight tolerance."""

import numpy as np
import pytest

from cainfer.forward import (
    CellModel,
    LinearExtrusion,
    Stimulus,
    WaveformInflux,
    indicator_names,
    preset,
)
from cainfer.testing import reference_simulate

FRAMES = np.arange(900) / 30.0  # 30 s at 30 frames/s
# two doublets and single events, some between frames
STIM = Stimulus(
    events=[1.0, 1.05, 5.017, 9.5, 9.53, 14.2, 20.0, 25.111], weights=[1, 1, 1, 1, 1, 2, 1, 1]
)


@pytest.mark.parametrize("name", ["single_compartment", "pumps", "er"])
@pytest.mark.parametrize("indicator", indicator_names())
def test_presets_match_solve_ivp(name, indicator):
    model = preset(name, indicator)
    ds = model.simulate({"influx_amplitude": 20.0}, FRAMES, STIM)
    ref = reference_simulate(model, {"influx_amplitude": 20.0}, FRAMES, STIM)
    assert ds.dff.max() > 0.1  # the stimulus does something visible
    np.testing.assert_allclose(ds.dff, ref["dff"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(ds.ca_total, ref["ca_total"], rtol=1e-5)
    if model.has_er:
        np.testing.assert_allclose(ds.ca_er, ref["ca_er"], rtol=1e-5)


def test_regenerative_er_release_matches_solve_ivp():
    model = preset("er", "GCaMP6f")
    params = {"influx_amplitude": 60.0}  # large enough to cross the release threshold
    ds = model.simulate(params, FRAMES, STIM)
    ref = reference_simulate(model, params, FRAMES, STIM)
    assert ds.ca.max() > 1.0  # release fired
    np.testing.assert_allclose(ds.dff, ref["dff"], rtol=0, atol=1e-4)


def test_waveform_influx_matches_solve_ivp():
    model = CellModel([LinearExtrusion(), WaveformInflux()], indicator="GCaMP6s")
    wt = np.linspace(2.0, 8.0, 61)
    stim = Stimulus(waveform_time=wt, waveform=np.sin(np.pi * (wt - 2.0) / 6.0) ** 2)
    ds = model.simulate({"waveform_amplitude": 30.0}, FRAMES, stim)
    ref = reference_simulate(model, {"waveform_amplitude": 30.0}, FRAMES, stim)
    assert ds.dff.max() > 0.5
    np.testing.assert_allclose(ds.dff, ref["dff"], rtol=0, atol=1e-4)


def test_rk4_converges_at_fourth_order():
    model = preset("pumps", "GCaMP6f")
    params = {"pmca_vmax": 1500.0, "ncx_vmax": 3000.0, "influx_amplitude": 20.0}
    ref = reference_simulate(model, params, FRAMES, STIM)["ca"]
    errs = [
        np.abs(model.simulate(params, FRAMES, STIM, substeps=n).ca.values - ref).max()
        for n in (4, 8, 16)
    ]
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(10 < r < 24 for r in ratios), (errs, ratios)  # 2^4 = 16


def test_event_on_a_frame_is_seen_by_that_frame():
    model = preset("single_compartment")
    t = np.arange(10) / 10.0
    ds = model.simulate(None, t, Stimulus(events=[0.3]))
    assert ds.dff[2] == pytest.approx(0.0, abs=1e-14)
    assert ds.dff[3] == ds.dff.max()
