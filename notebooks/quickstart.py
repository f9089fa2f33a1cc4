# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: simulate a cell, fit it, look at the posterior
#
# A cell with PMCA and NCX extrusion, a leak that balances them at rest and a
# fixed calcium entry per action potential, seen through OGB-1. We simulate a
# noisy ΔF/F trace with known parameters, fit the pump capacity and the influx
# amplitude, and check that the posterior covers the truth.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import cainfer
from cainfer.synthetic import simulate_traces

QUICK = os.environ.get("CAINFER_QUICK") == "1"  # short sampler runs (the test suite)
DRAWS = 300 if QUICK else 1000

model = cainfer.pumps_model("OGB-1")
time = np.arange(0, 20, 1 / 30)  # 20 s at 30 frames/s
stimulus = cainfer.Stimulus(events=[1.0, 4.0, 4.05, 8.0, 12.0, 12.05, 12.1, 16.0])
truth = {"pmca_vmax": 120.0, "influx_amplitude": 14.0}
traces = simulate_traces(model, truth, time, stimulus, noise_sd=0.03, seed=1)
traces.dff.isel(roi=0).plot(figsize=(8, 2.5));

# %% [markdown]
# ## The fit
#
# Two free parameters; everything else (buffer capacity κ_S, indicator K_d
# and R_f, the other pump) stays at its catalogue or literature value. The
# noise σ is always free.

# %%
fit = cainfer.fit(
    traces,
    model,
    stimulus=stimulus,
    roi=0,
    free=["pmca_vmax", "influx_amplitude"],
    draws=DRAWS,
    tune=DRAWS,
    chains=2,
    seed=1,
)
summary = fit.summary()
summary

# %%
for name, value in truth.items():
    lo, hi = summary.loc[name, "hdi94_lb"], summary.loc[name, "hdi94_ub"]
    print(f"{name}: truth {value}, 94% HDI [{lo}, {hi}]")
print("diagnostics passed:", fit.ok, fit.problems)

# %% [markdown]
# ## Plots
#
# The trace with the posterior-predictive band and the inferred free calcium;
# posteriors over their priors; the joint posterior.

# %%
fit.plot_trace()
fit.plot_posteriors()
fit.plot_pairs()
plt.show()

# %% [markdown]
# ## What did the data determine?
#
# Contraction is 1 − posterior variance / prior variance (on the log scale
# for positive parameters): near 1, the data determined the parameter; near
# 0, the posterior is the prior.

# %%
table, corr = fit.identifiability()
print(table)
print(corr)
