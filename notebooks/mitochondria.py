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
# # Mitochondria shaping the decay after a train
#
# Mitochondria take up calcium through the uniporter (MCU): low affinity
# (K 10-20 µM) and second order in cytosolic calcium, so it ignores the
# small rise of a single spike and opens during a strong train. They return
# it through the Na/Ca exchanger (NCLX), slowly, from a heavily buffered
# matrix. Two marks on the cytosolic signal follow: the peak of a strong
# train is clipped (a firebreak), and the decay ends in a long shoulder
# above rest while the matrix empties (Gunter & Pfeiffer 1990,
# doi:10.1152/ajpcell.1990.258.5.C755).
#
# In cainfer the matrix is a compartment with its own state: its volume and
# buffer capacity are parameters (`mito_volume`, `mito_kappa`), its free
# calcium at rest is where release balances uptake at the cell's resting
# calcium, and `MCU` and `NCLX` are flux terms of compartment `"mito"`.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import cainfer
from cainfer.forward import (
    MCU,
    NCLX,
    PMCA,
    CellModel,
    EventInflux,
    PlasmaLeak,
)
from cainfer.synthetic import simulate_traces

QUICK = os.environ.get("CAINFER_QUICK") == "1"  # short sampler runs (the test suite)
DRAWS = 300 if QUICK else 1000

cell = CellModel([PMCA(), PlasmaLeak(), MCU(), NCLX(), EventInflux()], indicator="OGB-1")
plain = CellModel([PMCA(), PlasmaLeak(), EventInflux()], indicator="OGB-1")
print(cell.states)
print("matrix free Ca at rest:", f"{cell.resting_state().derived['mito_c_rest']:.3f} µM")

# %% [markdown]
# ## A weak and a strong train
#
# Ten and forty spikes at 20 Hz, 30 µM of total calcium per spike, in the
# same cell with and without mitochondria.

# %%
time = np.arange(0.0, 40.0, 1 / 20)
truth = {"influx_amplitude": 30.0, "mcu_vmax": 5000.0, "nclx_vmax": 5.0}
fig, ax = plt.subplots(1, 3, figsize=(13, 3))
for n, style in ((10, ":"), (40, "-")):
    stim = cainfer.Stimulus.train([2.0], n=n, interval=0.05)
    a = cell.simulate(truth, time, stim)
    b = plain.simulate({"influx_amplitude": 30.0}, time, stim)
    ax[0].plot(time, a.ca, style, color="C0", label=f"{n} spikes, mitochondria")
    ax[0].plot(time, b.ca, style, color="C1", label=f"{n} spikes, none")
    ax[1].semilogy(time, a.ca - 0.05 + 1e-4, style, color="C0")
    ax[1].semilogy(time, b.ca - 0.05 + 1e-4, style, color="C1")
    ax[2].plot(time, a.ca_mito, style, color="C0")
    print(f"{n} spikes: peak {float(a.ca.max()):.2f} µM with mitochondria, "
          f"{float(b.ca.max()):.2f} without; 20 s later {float(a.ca[time >= 22][0]):.3f} "
          f"and {float(b.ca[time >= 22][0]):.3f} µM")  # fmt: skip
ax[0].set_ylabel("free Ca (µM)")
ax[1].set_ylabel("free Ca above rest (µM)")
ax[2].set_ylabel("matrix free Ca (µM)")
for x in ax:
    x.set_xlabel("time (s)")
ax[0].legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# ## Fitting the uniporter and the exchanger
#
# Noisy ΔF/F of the strong train; free: calcium per spike, the uniporter's
# and the exchanger's capacities. The fit carries the ΔF/F observation model
# (scale, offset, slow baseline, AR(1) residuals) as for any ΔF/F input. The
# peak's clipping informs the uniporter, the shoulder the exchanger.

# %%
stim = cainfer.Stimulus.train([2.0], n=40, interval=0.05)
traces = simulate_traces(cell, truth, time, stim, noise_sd=0.05, seed=2)
result = cainfer.fit(
    traces.dff.isel(roi=0), cell, stimulus=stim, free=list(truth), draws=DRAWS, tune=DRAWS,
    chains=2, seed=1,
)  # fmt: skip
summary = result.summary(round_to="none")
for name, value in truth.items():
    lo, hi = summary.loc[name, "hdi94_lb"], summary.loc[name, "hdi94_ub"]
    print(f"{name}: truth {value:g}, 94% HDI [{lo:.4g}, {hi:.4g}]",
          "inside" if lo <= value <= hi else "OUTSIDE")  # fmt: skip

# %% [markdown]
# The posterior predictive against the data, and the matrix calcium the
# posterior implies (not observed: the model infers it from the cytosol).

# %%
pp = np.asarray(result.idata["posterior_predictive"]["dff_mean"]).reshape(-1, time.size)
post = result.idata["posterior"]
draws = {k: np.asarray(post[k]).ravel() for k in truth}
rng = np.random.default_rng(0)
fig, ax = plt.subplots(1, 2, figsize=(10, 3))
ax[0].plot(time, traces.dff.isel(roi=0), ".", ms=2, color="0.6", label="data")
ax[0].plot(time, pp.mean(axis=0), color="C0", label="posterior predictive mean")
ax[0].set_ylabel("ΔF/F")
ax[0].legend()
for i in rng.choice(draws["mcu_vmax"].size, 20, replace=False):
    ds = cell.simulate({k: float(v[i]) for k, v in draws.items()}, time, stim)
    ax[1].plot(time, ds.ca_mito, color="C0", alpha=0.2)
ax[1].plot(time, cell.simulate(truth, time, stim).ca_mito, "k--", label="truth")
ax[1].set_ylabel("matrix free Ca (µM)")
ax[1].legend()
for x in ax:
    x.set_xlabel("time (s)")
fig.tight_layout()
