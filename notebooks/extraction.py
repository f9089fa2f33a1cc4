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
# # Extraction: from a TIFF stack to ΔF/F traces
#
# The bundled example (`data_examples/example.tif`, 8 simulated cells, 900
# frames at 30 frames/s) moves, bleaches and has neuropil; its truth is in
# `example_truth.nc`. We extract traces with detected ROIs and with the
# given ROI file, and compare both with the truth.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

import cainfer

HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()
DATA = (HERE / ".." / "data_examples").resolve()
truth = xr.open_dataset(DATA / "example_truth.nc", engine="h5netcdf")

movie = cainfer.load_movie(DATA / "example.tif")
print(movie.shape, movie.frame_rate, "frames/s")

# %% [markdown]
# ## Detected ROIs
#
# With `rois="auto"` the movie is registered, a local-correlation image is
# built in one streaming pass, and cells are segmented in it.

# %%
auto = cainfer.extract_traces(movie, rois="auto", baseline_window=20.0)
given = cainfer.extract_traces(
    movie, rois=DATA / "example_rois.tif", baseline_window=20.0
)
print(auto.sizes["roi"], "ROIs detected;", given.sizes["roi"], "given")

fig, axes = plt.subplots(1, 2, figsize=(9, 4))
axes[0].imshow(auto.correlation_image, cmap="gray")
for m in auto.masks:
    axes[0].contour(m, levels=[0.5], colors="C1", linewidths=0.8)
axes[0].set_title("correlation image, detected ROIs")
axes[1].imshow(given.mean_image, cmap="gray")
for m in given.masks:
    axes[1].contour(m, levels=[0.5], colors="C2", linewidths=0.8)
axes[1].set_title("mean image, given ROIs")

# %% [markdown]
# ## Motion correction
#
# The estimated shifts against the simulated ones (pixels).

# %%
fig, ax = plt.subplots(figsize=(8, 2.5))
ax.plot(truth.time, truth.shifts.sel(axis="y"), "k", lw=1, label="true y")
ax.plot(given.time, given.shifts.sel(axis="y"), "C1--", lw=1, label="estimated y")
ax.set_xlabel("time (s)")
ax.legend()
err = np.abs(given.shifts.values - truth.shifts.values).max()
print(f"largest shift error: {err:.3f} px")

# %% [markdown]
# ## ΔF/F against the truth
#
# Each extracted trace against its cell's true ΔF/F; neuropil subtraction
# and the rolling-percentile baseline leave a small scale error.

# %%
fig, axes = plt.subplots(2, 1, sharex=True, figsize=(8, 4))
for k, ax in enumerate(axes):
    ax.plot(truth.time, truth.dff[k], "k", lw=1, label="truth")
    ax.plot(given.time, given.dff[k], "C0", lw=0.8, label="extracted")
    ax.set_ylabel(f"cell {k} ΔF/F")
axes[0].legend()
r = [np.corrcoef(given.dff[k], truth.dff[k])[0, 1] for k in range(given.sizes["roi"])]
print("correlation with the truth per cell:", np.round(r, 3))
plt.show()
