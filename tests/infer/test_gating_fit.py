"""A gating time constant recovered from a synthetic oscillating trace.

The Li–Rinzel receptor's inactivation gate relaxes at ``1/τ_h = a₂·(Q₂ + c)``:
``a₂`` sets the gate's time constant, and with it the oscillation's period.
"""

import numpy as np
import pytest

import cainfer
from cainfer.infer import fit
from cainfer.synthetic import simulate_traces


@pytest.mark.slow
def test_the_gating_rate_of_ip3_oscillations_is_recovered():
    model = cainfer.ip3_model("OGB-1")
    time = np.arange(0.0, 60.0, 0.1)
    stim = cainfer.Stimulus(waveform_time=[5.0, 5.1, time[-1]], waveform=[0.0, 0.5, 0.5])
    truth = {"ip3r_a2": 0.25, "ip3r_vmax": model.defaults()["ip3r_vmax"]}
    traces = simulate_traces(model, truth, time, stim, noise_sd=0.05, seed=6)
    result = fit(
        traces.dff.isel(roi=0), model, stimulus=stim, free=list(truth), draws=500, tune=500,
        chains=2, seed=1,
    )  # fmt: skip
    s = result.summary(round_to="none")
    for name, value in truth.items():
        assert s.loc[name, "hdi94_lb"] <= value <= s.loc[name, "hdi94_ub"], (name, s.loc[name])
    assert (s["r_hat"].astype(float) <= 1.05).all()
    # τ_h at rest with 0.5 µM IP3, from the posterior of a₂: covers the truth
    v = model.defaults()
    q2 = v["ip3r_d2"] * (0.5 + v["ip3r_d1"]) / (0.5 + v["ip3r_d3"])
    a2 = np.asarray(result.idata["posterior"]["ip3r_a2"]).ravel()
    tau = 1.0 / (a2 * (q2 + v["c_rest"]))
    true_tau = 1.0 / (truth["ip3r_a2"] * (q2 + v["c_rest"]))
    lo, hi = np.quantile(tau, [0.03, 0.97])
    assert lo <= true_tau <= hi
    assert hi - lo < 0.05 * true_tau  # an oscillating trace pins the gate down
