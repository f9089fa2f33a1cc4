"""A small recovery fit shared by the inference tests."""

import numpy as np
import pytest

import cainfer
from cainfer.infer import fit
from cainfer.synthetic import simulate_traces

TIME = np.arange(450) / 30.0
STIM = cainfer.Stimulus(events=[1.0, 4.0, 4.05, 8.0, 11.0, 11.05, 11.1])
TRUTH = {"gamma": 500.0, "influx_amplitude": 15.0}


@pytest.fixture(scope="session")
def recovery():
    model = cainfer.single_compartment("OGB-1")
    traces = simulate_traces(model, TRUTH, TIME, STIM, noise_sd=0.03, seed=2)
    dff = traces.dff.isel(roi=0).copy()
    dff[[10, 200, 201]] = np.nan  # missing frames are masked, not fatal
    result = fit(
        dff,
        model,
        stimulus=STIM,
        free=["gamma", "influx_amplitude"],
        draws=1000,
        tune=500,
        chains=2,
        seed=1,
    )
    return model, result


def assert_compact_round_trip(result, path):
    """Saved compact, loaded and expanded, a fit gives back the groups it was returned with."""
    from cainfer.infer import load_fit
    from cainfer.infer._predictions import BAND_QUANTILES

    full = result.save(path.with_name("full.nc"), compact=False)
    compact = result.save(path)
    assert compact.stat().st_size * 10 < full.stat().st_size
    back = load_fit(compact)
    assert back.compact and "predictive_bands" in back.idata.children
    assert not {"posterior_predictive", "log_likelihood"} & set(back.idata.children)
    assert back.problems == result.problems
    pp = result.idata["posterior_predictive"]
    bands = back.idata["predictive_bands"]
    assert bands["ca"].dtype == np.float32
    for name in bands.data_vars:
        want = pp[name].quantile(list(BAND_QUANTILES), dim=("chain", "draw"))
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(bands[name], want, rtol=1e-6, atol=1e-6 * scale)
    back.expand()
    assert not back.compact and "predictive_bands" not in back.idata.children
    # the same draws through the same code: the groups the fit returned, to rounding
    for group in ("posterior_predictive", "log_likelihood", "observed_data"):
        for name, da in result.idata[group].ds.data_vars.items():
            got = np.asarray(back.idata[group][name])
            np.testing.assert_allclose(got, np.asarray(da), rtol=1e-9, atol=1e-12, err_msg=name)
    return back
