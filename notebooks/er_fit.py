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
# # An ER model: what ΔF/F can and cannot tell
#
# The `er` preset adds an endoplasmic reticulum to the pumps model: SERCA
# fills it, a leak and calcium-induced release empty it, and store-operated
# entry opens as it depletes. ΔF/F only sees cytosolic calcium, so the ER is
# seen through what it does to the cytosol. We simulate trains of action
# potentials, then fit two sets of free parameters and read the
# identifiability report.

# %%
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np

import cainfer
from cainfer.synthetic import simulate_traces

QUICK = os.environ.get("CAINFER_QUICK") == "1"  # short sampler runs (the test suite)
DRAWS = 150 if QUICK else 1000

model = cainfer.er_model("OGB-1")
time = np.arange(0, 30, 1 / 20)  # 30 s at 20 frames/s
stimulus = cainfer.Stimulus.train([2.0, 10.0, 18.0], n=5, interval=0.05)
truth = {"pmca_vmax": 100.0, "serca_vmax": 290.0, "influx_amplitude": 12.0}
sim = model.simulate(truth, time, stimulus)
traces = simulate_traces(model, truth, time, stimulus, noise_sd=0.03, seed=4)

fig, axes = plt.subplots(3, 1, sharex=True, figsize=(8, 6))
axes[0].plot(traces.time, traces.dff.isel(roi=0), ".", ms=2)
axes[0].set_ylabel("ΔF/F")
axes[1].plot(sim.time, sim.ca)
axes[1].set_ylabel("cytosolic Ca (µM)")
axes[2].plot(sim.time, sim.ca_er)
axes[2].set_ylabel("ER Ca (µM)")
axes[2].set_xlabel("time (s)")

# %% [markdown]
# ## Cytosolic pumps and SERCA
#
# The plasma-membrane pump and SERCA both remove calcium from the cytosol,
# but SERCA's calcium comes back (leak, release): the shape of the decay
# after each train separates them.

# %%
fit_a = cainfer.fit(
    traces, model, stimulus=stimulus, roi=0,
    free=["pmca_vmax", "serca_vmax", "influx_amplitude"],
    draws=DRAWS, tune=DRAWS, chains=2, seed=2,
)  # fmt: skip
summary = fit_a.summary()
print(summary)
for name, value in truth.items():
    lo, hi = summary.loc[name, "hdi94_lb"], summary.loc[name, "hdi94_ub"]
    print(f"{name}: truth {value}, 94% HDI [{lo}, {hi}]")
table, corr = fit_a.identifiability()
print(table)

# %% [markdown]
# ## Adding the release rate and the ER leak's partner, SERCA's affinity
#
# With the release rate and SERCA's K free as well, the data have more to
# explain with the same cytosolic trace. The report says which parameters
# the data left near their priors (low contraction) and which trade off
# (large posterior correlations): those are the ones to fix from other
# experiments (for example an ER-targeted indicator) before reading numbers
# off the posterior.

# %%
fit_b = cainfer.fit(
    traces, model, stimulus=stimulus, roi=0,
    free=["pmca_vmax", "serca_vmax", "serca_k", "release_rate", "influx_amplitude"],
    draws=DRAWS, tune=DRAWS, chains=2, seed=3,
)  # fmt: skip
table_b, corr_b = fit_b.identifiability()
print(table_b)
print(corr_b.round(2))
fit_b.plot_pairs()
plt.show()

# %% [markdown]
# Compare the two models of the same trace by leave-one-out cross-validation:
# when the extra parameters do not improve the predictions, the simpler model
# ranks first or the two are within the standard error of their difference.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ranking = cainfer.compare({"3 free": fit_a, "5 free": fit_b})
print(ranking)
for w in caught:  # arviz says when the leave-one-out approximation is unreliable
    print("note:", w.message)
