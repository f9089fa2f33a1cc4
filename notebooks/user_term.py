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
# # A flux term of your own, end to end
#
# The built-in terms (PMCA, NCX, SERCA, leaks, release, store-operated
# entry) are not all a cell has. Here we add one: a low-affinity, steep
# uptake that ignores calcium near rest and opens during strong stimulation,
# as the mitochondrial uniporter does. The matrix is not modelled here: the
# term is a sink across the cytosol's boundary (cainfer's `MCU` and `NCLX`
# with a buffered matrix are in the mitochondria notebook). Its numbers are
# assumptions for the example, not literature values. The last section adds
# a term with a gating state of its own.
#
# A term is a class: its parameters, with units, priors and roles, and its
# rate, written as arithmetic on free calcium (µM) and on `self.<parameter>`.
# cainfer derives the compiled flux and its adjoint from that expression, so
# the model simulates and fits, with exact gradients, as a built-in one does.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import cainfer
from cainfer.forward import (
    CellModel,
    EventInflux,
    Flux,
    LinearExtrusion,
    Parameter,
    PlasmaLeak,
    Prior,
)
from cainfer.synthetic import simulate_traces
from cainfer.testing import check_term

QUICK = os.environ.get("CAINFER_QUICK") == "1"  # short sampler runs (the test suite)
DRAWS = 300 if QUICK else 1000


class Uptake(Flux):
    """Steep, low-affinity uptake out of the cytosol: ``−V·x/(1 + x)``, ``x = (c/K)^n``."""

    compartment = "pm"  # across the cytosol's boundary; "er" would move ER calcium
    default_name = "mcu"  # its parameters: mcu_vmax, mcu_k, mcu_hill
    per_buffer = True  # sample V per unit of buffer capacity, like PMCA's
    cytosolic_hill = True  # a Hill function of cytosolic calcium
    declared = (
        Parameter("vmax", "µM/s", 300.0, Prior("lognormal", 300.0, 1.0, "assumed"),
                  role="capacity"),
        Parameter("k", "µM", 1.0, Prior("lognormal", 1.0, 0.3, "assumed"), role="affinity"),
        Parameter("hill", "1", 2.5, Prior("uniform", 2.0, 3.0, "assumed"), role="hill"),
    )  # fmt: skip

    def rate(self, c, c_er):
        x = (c / self.k) ** self.hill
        return -self.vmax * x / (1 + x)


# the compiled flux against the expression, its adjoint against finite differences
print(f"largest relative difference: {check_term(Uptake()):.1e}")

# %% [markdown]
# ## What the uptake does to a cell
#
# A cell with linear extrusion, a leak balancing it at rest and a jump of
# total calcium per action potential, imaged with OGB-1; three bursts of ten
# spikes at 50 Hz. With the uptake, free calcium peaks lower and the first
# part of the decay is faster; near rest the uptake is off and both cells
# decay alike.

# %%
time = np.arange(600) / 30.0
stimulus = cainfer.Stimulus.train([1.0, 7.0, 13.0], n=10, interval=0.02)
with_uptake = CellModel(
    [LinearExtrusion(), Uptake(), PlasmaLeak(), EventInflux()], indicator="OGB-1"
)
without = CellModel([LinearExtrusion(), EventInflux()], indicator="OGB-1")
truth = {"gamma": 200.0, "mcu_vmax": 300.0, "influx_amplitude": 20.0}
a = with_uptake.simulate(truth, time, stimulus)
b = without.simulate({k: v for k, v in truth.items() if k != "mcu_vmax"}, time, stimulus)

fig, ax = plt.subplots(1, 2, figsize=(10, 3))
for ds, label in ((a, "with uptake"), (b, "without")):
    ax[0].plot(time, ds.ca, label=label)
    ax[1].plot(time, ds.dff, label=label)
ax[0].set_ylabel("free Ca (µM)")
ax[1].set_ylabel("ΔF/F")
for x in ax:
    x.set_xlabel("time (s)")
    x.set_xlim(0.5, 6.5)
ax[0].legend()
fig.tight_layout()
print(f"peak free Ca: {float(a.ca.max()):.2f} µM with uptake, {float(b.ca.max()):.2f} without")

# %% [markdown]
# ## Fitting it
#
# Noisy ΔF/F from the cell with the uptake; the extrusion rate, the uptake's
# capacity and the calcium per spike free (the uptake's K and Hill
# coefficient stay at their values). The fit takes the ΔF/F with a free
# scale, offset, slow baseline and AR(1) residuals, as for any ΔF/F input.

# %%
traces = simulate_traces(with_uptake, truth, time, stimulus, noise_sd=0.05, seed=1)
result = cainfer.fit(
    traces.dff.isel(roi=0),
    with_uptake,
    stimulus=stimulus,
    free=list(truth),
    draws=DRAWS,
    tune=DRAWS,
    chains=2,
    seed=1,
)
summary = result.summary(round_to="none")
for name, value in truth.items():
    lo, hi = summary.loc[name, "hdi94_lb"], summary.loc[name, "hdi94_ub"]
    print(
        f"{name}: truth {value:g}, 94% HDI [{lo:.4g}, {hi:.4g}]",
        "inside" if lo <= value <= hi else "OUTSIDE",
    )

# %% [markdown]
# ## Saved and loaded
#
# A saved fit names the term's class by module and name. Loading it needs the
# class defined (here it is) or importable.

# %%
path = Path(tempfile.mkdtemp(prefix="cainfer-user-term-")) / "fit.nc"
result.save(path)
again = cainfer.load_fit(path)
print(type(again.model.fluxes[1]).__name__, again.summary().loc["mcu_vmax", "mean"])

# %% [markdown]
# ## A term with a gating state
#
# A channel that inactivates with calcium: entry `g·w(t)·h`, driven by the
# stimulus waveform `w` (here a 3 s step) and closed by a gate
# `dh/dt = (K_i/(K_i + c) − h)/τ`. The gate is listed in `gates` and its
# steady state and time constant come from `gating`; the model then runs as
# a system of states (c and `entry_h`), generated from these expressions with
# its adjoint, and fits as any other.


# %%
class InactivatingEntry(Flux):
    """Entry ``g·w(t)·h`` through a channel that calcium inactivates (time constant τ)."""

    compartment = "pm"
    default_name = "entry"
    per_buffer = True
    gates = ("h",)
    declared = (
        Parameter("g", "µM/s", 200.0, Prior("lognormal", 200.0, 1.0, "assumed"),
                  role="capacity"),
        Parameter("k_i", "µM", 0.2, Prior("lognormal", 0.2, 0.5, "assumed")),
        Parameter("tau", "s", 0.8, Prior("lognormal", 0.8, 0.5, "assumed")),
    )  # fmt: skip

    def rate(self, c, c_er):
        return self.g * self.waveform * self.h

    def gating(self, c, c_er):
        return ((self.k_i / (self.k_i + c), self.tau),)


gated = CellModel([LinearExtrusion(), InactivatingEntry()], indicator="OGB-1")
step = cainfer.Stimulus(waveform_time=[1.0, 1.05, 4.0, 4.05], waveform=[0.0, 1.0, 1.0, 0.0])
t8 = np.arange(0.0, 8.0, 1 / 30)
fig, ax = plt.subplots(1, 2, figsize=(10, 3))
for tau in (0.3, 0.8, 2.0):
    ds = gated.simulate({"entry_tau": tau}, t8, step)
    ax[0].plot(t8, ds.ca, label=f"τ = {tau} s")
    ax[1].plot(t8, ds.entry_h)
ax[0].set_ylabel("free Ca (µM)")
ax[1].set_ylabel("gate h")
for x in ax:
    x.set_xlabel("time (s)")
ax[0].legend()
fig.tight_layout()
print(gated.states)
