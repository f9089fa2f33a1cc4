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
# # Ratiometric imaging: Fura-2 at 340 and 380 nm
#
# `data_examples/fura_example.tif` is a simulated two-channel recording
# (channel 0: 340-nm excitation, channel 1: 380-nm; ImageJ `TCYX`) of three
# cells with plasma-membrane pumps, loaded with Fura-2. Its truth file holds
# each cell's calcium and parameters. We extract both channels, convert their
# ratio to calcium with the Grynkiewicz equation, and then do better: fit
# both channels' photon counts directly, with the calibration constants as
# parameters.
#
# The calibration (R_min, R_max, β) belongs to the microscope, measured with
# calcium-free and saturating solutions; K_d is the dye's (224 nM with 1 mM
# Mg²⁺ at 37 °C, Grynkiewicz et al. 1985).

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

import cainfer
from cainfer.extract import extract_ratio
from cainfer.forward import get_ratiometric

QUICK = os.environ.get("CAINFER_QUICK") == "1"  # short sampler runs (the test suite)
DRAWS = 300 if QUICK else 1000

HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()
DATA = (HERE / ".." / "data_examples").resolve()
truth = xr.open_dataset(DATA / "fura_example_truth.nc", engine="h5netcdf")

dye = get_ratiometric("Fura-2")
calibration = dye.calibration(r_min=0.4, r_max=7.5, beta=9.0, source="this setup")
stimulus = cainfer.Stimulus.from_csv(DATA / "fura_example_stimulus.csv")

# %% [markdown]
# ## Both channels, one registration, the ratio
#
# The movie is registered once (on the 380-nm channel) and the shifts are
# undone in both; each channel's local background (the annulus around each
# ROI) is subtracted before the ratio is taken.

# %%
traces = extract_ratio(
    DATA / "fura_example.tif",
    rois=DATA / "fura_example_rois.tif",
    calibration=calibration,
    dark_level=truth.attrs["offset"],
)
t = traces["time"].values
fig, axes = plt.subplots(2, 1, sharex=True, figsize=(9, 4.5))
for k, name in enumerate(("340 nm", "380 nm")):
    axes[0].plot(t, traces["F_c"].isel(roi=0, channel=k), label=name)
axes[0].set_ylabel("F − background (counts)")
axes[0].legend()
axes[1].plot(t, traces["ca"].isel(roi=0), ".", ms=2, color="0.4", label="Grynkiewicz")
axes[1].plot(t, truth["ca"].isel(cell=0), color="C3", label="truth")
axes[1].set_ylabel("free Ca²⁺ (µM)")
axes[1].set_xlabel("time (s)")
axes[1].legend()
fig.tight_layout()

# %% [markdown]
# The conversion is only as good as the background and the calibration
# constants, and it says nothing about their uncertainty. The fit below
# models the two channels' counts instead (photon noise in each, a shared
# bleaching baseline, the background scaled by a parameter around 1, and
# R_min, R_max, β with log-normal priors of 10 % around the calibration).
# The ratio at rest then tells the resting calcium, so `c_rest` is free.
# It trades off against R_min and the background scale along a narrow ridge;
# a higher target acceptance (0.9) lets the sampler follow it.

# %%
model = cainfer.pumps_model(dye.indicator(calibration, channel=0))
free = ["pmca_vmax", "influx_amplitude", "c_rest"]
cells = [0] if QUICK else range(traces.sizes["roi"])
fits = {
    cell: cainfer.fit(
        traces, model, roi=cell, stimulus=stimulus, free=free, draws=DRAWS, tune=DRAWS,
        chains=2, seed=cell, target_accept=0.9,
    )  # fmt: skip
    for cell in cells
}
fits[0].summary()

# %%
fits[0].plot_trace();

# %% [markdown]
# ## Against the truth

# %%
rows = []
for cell, f in fits.items():
    true = json.loads(truth.attrs["parameters"])[cell]
    s = f.summary(round_to="none")
    true |= json.loads(truth.attrs["calibration"])  # R_min, R_max, β of the setup
    true = {"R_min": true["r_min"], "R_max": true["r_max"], "beta": true["beta"], **true}
    for name in (*free, "R_min", "R_max", "beta"):
        lo, hi = s.loc[name, "hdi94_lb"], s.loc[name, "hdi94_ub"]
        rows.append((cell, name, true[name], s.loc[name, "mean"], lo, hi, lo <= true[name] <= hi))
for cell, name, true, mean, lo, hi, inside in rows:
    print(f"cell {cell} {name:>17}: truth {true:8.4g}, mean {mean:8.4g}, "
          f"94% HDI [{lo:.4g}, {hi:.4g}] {'inside' if inside else 'OUTSIDE'}")  # fmt: skip
print(f"{sum(r[-1] for r in rows)} of {len(rows)} truths inside their 94% HDIs")
for cell, f in fits.items():
    print(f"cell {cell}:", "; ".join(f.problems) or "every diagnostic passed")
