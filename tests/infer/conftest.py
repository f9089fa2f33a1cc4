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
