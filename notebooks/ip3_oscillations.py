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
# # IP3-driven calcium oscillations, fitted
#
# An agonist makes IP3; IP3 opens the ER's IP3 receptors; calcium activates
# them further within milliseconds (positive feedback) and inactivates them
# over seconds (negative feedback); SERCA refills the store. Under a
# sustained IP3 level in the right range the cell oscillates, and below a
# threshold it does not. `cainfer.ip3_model` is Li & Rinzel's reduction of
# the De Young-Keizer receptor (Li & Rinzel 1994, doi:10.1006/jtbi.1994.1041)
# in a buffered cell: the IP3 concentration (µM) is the stimulus waveform,
# and the receptor's slow inactivation `h` is a state of the model with its
# own equation, `dh/dt = a₂·(Q₂·(1 − h) − c·h)`.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
from scipy.signal import find_peaks

import cainfer
from cainfer.synthetic import simulate_traces

QUICK = os.environ.get("CAINFER_QUICK") == "1"  # short sampler runs (the test suite)
DRAWS = 300 if QUICK else 1000

model = cainfer.ip3_model("OGB-1")
print(model.states)
print({k: round(v, 4) for k, v in model.defaults().items() if k.startswith("ip3r")})


def ip3_step(level, t_end, at=5.0):
    """IP3 (µM) from 0 to ``level`` at ``at`` s, held to ``t_end``."""
    return cainfer.Stimulus(waveform_time=[at, at + 0.1, t_end], waveform=[0.0, level, level])


# %% [markdown]
# ## The threshold
#
# Each IP3 level held for two minutes; the period and the peak-to-trough
# amplitude of free calcium over the last minute. Below about 0.35 µM the
# cell settles to a new steady state; above it, it oscillates; above about
# 1.2 µM the oscillation stops again (the receptors stay open and the store
# stays low). Without the buffers, Li & Rinzel's cell oscillates between
# about 0.36 and 0.64 µM; the buffers' saturation widens the range.

# %%
time = np.arange(0.0, 120.0, 0.1)
levels = [0.2, 0.3, 0.34, 0.4, 0.55, 0.8, 1.1, 1.5]
rows = []
for level in levels:
    ca = model.simulate(time=time, stimulus=ip3_step(level, time[-1])).ca.values
    late = time > 60.0
    peaks, _ = find_peaks(ca[late], prominence=1e-3)
    period = float(np.mean(np.diff(time[late][peaks]))) if peaks.size > 1 else np.nan
    rows.append((level, period, float(np.ptp(ca[late]))))
    print(f"IP3 {level:.2f} µM: period {period:5.1f} s, amplitude {rows[-1][2]:.3f} µM")
fig, ax = plt.subplots(1, 2, figsize=(9, 3))
ax[0].plot([r[0] for r in rows], [r[2] for r in rows], "o-")
ax[0].set_xlabel("IP3 (µM)")
ax[0].set_ylabel("amplitude (µM)")
ax[1].plot([r[0] for r in rows], [r[1] for r in rows], "o-")
ax[1].set_xlabel("IP3 (µM)")
ax[1].set_ylabel("period (s)")
fig.tight_layout()

# %% [markdown]
# ## Fitting the receptor's inactivation
#
# A minute of ΔF/F at 10 Hz under 0.5 µM IP3 with noise; free: the
# receptor's capacity and its inactivation rate `a₂`, which sets the gate's
# time constant `τ_h = 1/(a₂·(Q₂ + c))` and with it the period. The fit runs
# on the same generated system, with gradients through the gate.

# %%
time = np.arange(0.0, 60.0, 0.1)
stim = ip3_step(0.5, time[-1])
truth = {"ip3r_a2": 0.25, "ip3r_vmax": model.defaults()["ip3r_vmax"]}
traces = simulate_traces(model, truth, time, stim, noise_sd=0.05, seed=6)
result = cainfer.fit(
    traces.dff.isel(roi=0), model, stimulus=stim, free=list(truth), draws=DRAWS, tune=DRAWS,
    chains=2, seed=1,
)  # fmt: skip
summary = result.summary(round_to="none")
for name, value in truth.items():
    lo, hi = summary.loc[name, "hdi94_lb"], summary.loc[name, "hdi94_ub"]
    print(f"{name}: truth {value:.4g}, 94% HDI [{lo:.4g}, {hi:.4g}]",
          "inside" if lo <= value <= hi else "OUTSIDE")  # fmt: skip

v = model.defaults()
q2 = v["ip3r_d2"] * (0.5 + v["ip3r_d1"]) / (0.5 + v["ip3r_d3"])
a2 = np.asarray(result.idata["posterior"]["ip3r_a2"]).ravel()
tau = 1.0 / (a2 * (q2 + v["c_rest"]))
print(f"τ_h at rest under 0.5 µM IP3: {np.median(tau):.3f} s "
      f"(94% interval {np.quantile(tau, 0.03):.3f}-{np.quantile(tau, 0.97):.3f}; "
      f"truth {1.0 / (truth['ip3r_a2'] * (q2 + v['c_rest'])):.3f})")  # fmt: skip

# %%
pp = np.asarray(result.idata["posterior_predictive"]["dff_mean"]).reshape(-1, time.size)
fig, ax = plt.subplots(figsize=(9, 3))
ax.plot(time, traces.dff.isel(roi=0), ".", ms=2, color="0.6", label="data")
ax.plot(time, pp.mean(axis=0), color="C0", label="posterior predictive mean")
ax.fill_between(time, *np.quantile(pp, [0.03, 0.97], axis=0), color="C0", alpha=0.3)
ax.set_xlabel("time (s)")
ax.set_ylabel("ΔF/F")
ax.legend()
fig.tight_layout()
