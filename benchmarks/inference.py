"""Benchmark B1: sampling speed of cainfer against the models a user would write.

B1 (see the project's stack notes): a single compartment with a saturable
pump (V_max, K), a leak balancing it at rest and a calcium jump per event;
1800 frames at 30 frames/s; 10 events with two doublets; indicator K_d
0.25 µM, B_T 50 µM, R_f 10, n 1, fixed. Free: V_max, K, influx amplitude,
κ_S and the noise σ. Each path runs 4 chains x (1000 tune + 1000 draws) on
the machine's cores, in this one process, and prints compile time, sampling
time, total wall time, minimum bulk ESS per second of sampling, max R-hat,
whether every true value is inside its 94% HDI, and cainfer's ESS/s ratio to
each baseline. ``pm.ode.DifferentialEquation`` is not sampled: one gradient
is timed and multiplied by the gradient count of the scan run (capped at
10 minutes of measuring).

cainfer runs with nutpie on its numba backend (the default) and, when jax
and numpyro are installed (``pip install jax numpyro``), on nutpie's JAX
backend, and the scan model also with numpyro. Then one log-density gradient
is timed for cainfer and scan, compiled to numba and to JAX.

Run: ``python benchmarks/inference.py [--quick] [--only-cainfer]
[--observation-terms]`` (``--quick``: 2 chains x 300 + 300, a smoke run;
``--only-cainfer``: no baselines; ``--observation-terms``: only B1's ΔF/F
input, the default observation with its terms left out in turn).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import arviz as az
import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import xarray as xr

from cainfer.forward import PMCA, CellModel, EventInflux, PlasmaLeak, Stimulus, get_indicator
from cainfer.infer import fit

TRUTH = {"pump_vmax": 150.0, "pump_k": 0.4, "influx_amplitude": 12.0, "kappa_s": 80.0}
SIGMA = 0.05
FREE = ["pump_vmax", "pump_k", "influx_amplitude", "kappa_s"]
EVENTS = [3.0, 8.0, 13.0, 13.05, 20.0, 27.0, 34.0, 34.05, 42.0, 50.0]


def problem() -> tuple[CellModel, np.ndarray, Stimulus, np.ndarray]:
    ind = get_indicator("OGB-1").with_(kd=0.25, b_total=50.0, rf=10.0, hill=1.0)
    model = CellModel([PMCA(name="pump", hill=1.0), PlasmaLeak(), EventInflux()], indicator=ind)
    t = np.arange(1800) / 30.0
    stim = Stimulus(events=EVENTS)
    rng = np.random.default_rng(1)
    y = model.simulate(TRUTH, t, stim, substeps=1).dff.values + rng.normal(0, SIGMA, t.size)
    return model, t, stim, y


def fluorescence_problem(
    model: CellModel, t: np.ndarray, stim: Stimulus
) -> tuple[xr.Dataset, float]:
    """B1's cell as an extracted ROI, and its noise sd at rest (counts).

    F0 = 300 counts, a neuropil (r = 0.8) with events of its own, 20 % bleaching,
    read noise sd 3 and shot noise.
    """
    rng = np.random.default_rng(2)
    dff = model.simulate(TRUTH, t, stim, substeps=1).dff.values
    bleach = 0.8 ** (t / t[-1])
    spikes = np.zeros(t.size)
    spikes[rng.choice(t.size - 200, 12, replace=False)] = rng.uniform(0.1, 0.3, 12)
    neu = 150.0 * bleach * (1.0 + np.convolve(spikes, np.exp(-np.arange(60) / 30.0))[: t.size])
    mean = 300.0 * bleach * (1.0 + dff) + 0.8 * neu
    var = 9.0 + 0.02 * mean
    F = rng.normal(mean, np.sqrt(var))
    F_neu = neu + rng.normal(0.0, 0.5, t.size)
    F0 = np.full(t.size, np.percentile(F - 0.7 * F_neu, 8))
    ds = xr.Dataset(
        {k: (("roi", "time"), v[None]) for k, v in (("F", F), ("F_neu", F_neu), ("F0", F0))},
        coords={"roi": [0], "time": t},
    )
    rest = 300.0 * float(np.exp(np.mean(np.log(bleach)))) + 0.8 * 150.0
    return ds, float(np.sqrt(9.0 + 0.02 * rest))


def scan_model(model: CellModel, t: np.ndarray, y: np.ndarray) -> pm.Model:
    """B1 as a user would write it: one RK4 step per frame in pytensor.scan."""
    v = model.values()
    kd, bt, rf, c_rest = v["kd"], v["b_total"], v["rf"], v["c_rest"]
    dt = float(t[1] - t[0])
    n_ev = np.zeros(t.size)
    for e in EVENTS:
        n_ev[int(np.ceil(e / dt - 1e-9))] += 1.0
    priors = {k: model.parameters[k].prior for k in FREE}
    with pm.Model() as m:
        vmax = pm.LogNormal("pump_vmax", np.log(priors["pump_vmax"].a), priors["pump_vmax"].b)
        k = pm.LogNormal("pump_k", np.log(priors["pump_k"].a), priors["pump_k"].b)
        amp = pm.LogNormal(
            "influx_amplitude", np.log(priors["influx_amplitude"].a), priors["influx_amplitude"].b
        )
        kappa = pm.LogNormal("kappa_s", np.log(priors["kappa_s"].a), priors["kappa_s"].b)
        leak = vmax * c_rest / (k + c_rest)

        def beta(c):
            return 1.0 + kappa + bt * kd / (c + kd) ** 2

        def f(c):
            return (leak - vmax * c / (k + c)) / beta(c)

        def step(n, c, vmax, k, amp, kappa):
            k1 = f(c)
            k2 = f(c + 0.5 * dt * k1)
            k3 = f(c + 0.5 * dt * k2)
            k4 = f(c + dt * k3)
            c = c + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            return c + n * amp / beta(c)

        cs = pytensor.scan(
            step,
            sequences=[pt.as_tensor(n_ev[1:])],
            outputs_info=[pt.as_tensor(c_rest)],
            non_sequences=[vmax, k, amp, kappa],
            return_updates=False,
        )
        c = pt.concatenate([pt.as_tensor([c_rest]), cs])
        f0 = 1 + (rf - 1) * c_rest / (c_rest + kd)
        dff = (1 + (rf - 1) * c / (c + kd)) / f0 - 1
        sigma = pm.HalfNormal("sigma", 0.2)
        pm.Normal("dff", mu=dff, sigma=sigma, observed=y)
    return m


def report(
    name: str, idata, compile_s: float, sample_s: float, rows: list, sigma: float = SIGMA
) -> None:
    """One row: min bulk ESS over the free parameters and σ, R-hat, truth in the 94% HDIs.

    Also the leapfrog steps per draw after tuning (NaN where the sampler does
    not record them).
    """
    s = az.summary(idata, var_names=[*FREE, "sigma"], ci_prob=0.94, ci_kind="hdi", round_to="none")
    ess = float(s["ess_bulk"].astype(float).min())
    inside = all(
        float(s.loc[k, "hdi94_lb"]) <= val <= float(s.loc[k, "hdi94_ub"])
        for k, val in [*TRUTH.items(), ("sigma", sigma)]
    )
    rows.append(
        (
            name,
            compile_s,
            sample_s,
            compile_s + sample_s,
            ess / sample_s,
            float(s["r_hat"].astype(float).max()),
            inside,
            float(np.asarray(idata["sample_stats"]["n_steps"]).mean())
            if "n_steps" in idata["sample_stats"]
            else float("nan"),
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only-cainfer", action="store_true", help="skip the baselines")
    ap.add_argument(
        "--observation-terms",
        action="store_true",
        help="only cainfer, ΔF/F input: the default observation with its terms left out in turn",
    )
    args = ap.parse_args()
    if args.observation_terms:
        observation_terms(*((2, 300, 300) if args.quick else (4, 1000, 1000)))
        return
    chains, tune, draws = (2, 300, 300) if args.quick else (4, 1000, 1000)
    model, t, stim, y = problem()
    rows: list = []

    have_jax = bool(importlib.util.find_spec("jax") and importlib.util.find_spec("numpyro"))
    kw = dict(stimulus=stim, time=t, free=FREE, draws=draws, tune=tune, chains=chains, seed=1)
    # the baselines' model: ΔF/F exact, white noise
    exact = dict(observation="dff_exact", residuals="white")
    t0 = time.perf_counter()
    res = fit(y, model, **kw, **exact)
    wall = time.perf_counter() - t0
    st = res.settings
    report(
        "cainfer, exact ΔF/F (nutpie, numba)",
        res.idata,
        st["compile_seconds"],
        st["sampling_seconds"],
        rows,
    )
    print(f"cainfer fit() wall time including prior and posterior predictive: {wall:.1f} s")
    steps_cainfer = float(np.asarray(res.idata["sample_stats"]["n_steps"]).mean())
    # the defaults for a ΔF/F trace: free scale and offset, slow drift, AR(1) residuals
    res_d = fit(y, model, **kw)
    st = res_d.settings
    report("cainfer, ΔF/F input, default observation", res_d.idata, st["compile_seconds"],
           st["sampling_seconds"], rows)  # fmt: skip
    # B1 as raw fluorescence: F = F0 (1 + ΔF/F) + r F_neu + shot and read noise
    ds, f_sigma = fluorescence_problem(model, t, stim)
    res_f = fit(ds, model, **{k: v for k, v in kw.items() if k != "time"})
    st = res_f.settings
    report("cainfer, fluorescence input (B1-sized)", res_f.idata, st["compile_seconds"],
           st["sampling_seconds"], rows, sigma=f_sigma)  # fmt: skip
    if have_jax:
        res_j = fit(y, model, **kw, **exact, backend="jax")
        st = res_j.settings
        report(
            "cainfer (nutpie, jax, low-rank)",
            res_j.idata,
            st["compile_seconds"],
            st["sampling_seconds"],
            rows,
        )

    if args.only_cainfer:
        _print_table(rows, chains, tune, draws)
        _print_gradient_cost(model, t, stim, y, have_jax)
        return
    sm = scan_model(model, t, y)
    import nutpie

    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(sm)
    t1 = time.perf_counter()
    idata = nutpie.sample(
        compiled, draws=draws, tune=tune, chains=chains, seed=1, progress_bar=False
    )
    t2 = time.perf_counter()
    report("scan, pm.sample default (nutpie, numba)", idata, t1 - t0, t2 - t1, rows)
    n_grads_scan = float(np.asarray(idata["sample_stats"]["n_steps"]).sum())

    if have_jax:
        t0 = time.perf_counter()
        with sm:
            idata = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                nuts_sampler="numpyro",
                random_seed=1,
                progressbar=False,
            )
        t2 = time.perf_counter()
        report("scan, nuts_sampler='numpyro' (compile in total)", idata, 0.0, t2 - t0, rows)
    else:
        print("scan + numpyro: skipped (jax and numpyro are not installed)")

    # cost of one gradient through the obvious rewrite of f with pm.ode
    from pymc.ode import DifferentialEquation

    v = model.values()
    with pm.Model():
        theta = pm.LogNormal("theta", 0.0, 1.0, shape=4)

        def rhs(c, _t, p):
            vmax, k, amp, kappa = p[0], p[1], p[2], p[3]
            leak = vmax * v["c_rest"] / (k + v["c_rest"])
            bb = 1.0 + kappa + v["b_total"] * v["kd"] / (c[0] + v["kd"]) ** 2
            pulse = sum(
                amp / 0.005 * pm.math.exp(-0.5 * ((_t - e) / 0.002) ** 2) / 2.5066 for e in EVENTS
            )
            return [(leak - vmax * c[0] / (k + c[0]) + pulse) / bb]

        ode = DifferentialEquation(func=rhs, times=t[1:], n_states=1, n_theta=4, t0=0.0)
        sol = ode(y0=[v["c_rest"]], theta=theta)
        g = pytensor.function([theta], pytensor.grad(sol.sum(), theta))
    x0 = np.log(np.array([TRUTH[k] for k in FREE]))
    n_timed, t0 = 0, time.perf_counter()
    while n_timed < 3 and time.perf_counter() - t0 < 600:
        g(np.exp(x0))
        n_timed += 1
    per_grad = (time.perf_counter() - t0) / n_timed
    print(
        f"pm.ode.DifferentialEquation: {per_grad:.2f} s per gradient ({n_timed} timed); "
        f"x {n_grads_scan:.0f} gradients of the scan run = {per_grad * n_grads_scan:.0f} s "
        "(extrapolated, not sampled)"
    )

    _print_table(rows, chains, tune, draws)
    print(f"mean leapfrog steps per draw: cainfer {steps_cainfer:.1f}")
    _print_gradient_cost(model, t, stim, y, have_jax)


def observation_terms(chains: int, tune: int, draws: int) -> None:
    """B1's ΔF/F input with the default observation's terms left out in turn.

    Prints, per variant, the frames per solver stop of the output strides the fit
    chose, the cost of one log-density gradient at those strides, the leapfrog
    steps per draw and the minimum bulk ESS per second of sampling: which of
    the terms (free scale, offset and noise exponent; AR(1) residuals; the slow
    drift) the sampling time goes to.
    """
    model, t, stim, y = problem()
    variants = [
        ("exact ΔF/F, white", dict(observation="dff_exact", residuals="white", drift="none")),
        ("exact ΔF/F, AR(1)", dict(observation="dff_exact", residuals="ar1", drift="none")),
        (
            "scale, offset, exponent; white",
            dict(observation="dff", residuals="white", drift="none"),
        ),
        ("scale, offset, exponent; AR(1)", dict(observation="dff", residuals="ar1", drift="none")),
        (
            "scale, offset, exponent; white; drift",
            dict(observation="dff", residuals="white", drift="smooth"),
        ),
        ("default (all of them)", dict(observation="dff", residuals="ar1", drift="smooth")),
    ]
    print(f"B1, ΔF/F input, {chains} chains x ({tune} tune + {draws} draws)")
    print(
        f"{'observation':40s} {'fr/stop':>7s} {'grad ms':>8s} {'sample s':>9s} {'steps/draw':>10s} "
        f"{'step size':>9s} {'% depth ≤2/3/≥4':>16s} {'minESS/s':>9s}"
    )
    for name, opts in variants:
        res = fit(y, model, stimulus=stim, time=t, free=FREE, draws=draws, tune=tune,
                  chains=chains, seed=1, **opts)  # fmt: skip
        # the gradient the sampler ran: at the solver's output stride the fit chose
        stride = res._stride()  # one per frame, or one for all
        m = exact_pymc_model(model, t, stim, y, FREE, **opts, stride=stride)
        ms = _logp_grad_ms(m, "NUMBA")
        s = az.summary(res.idata, var_names=[*FREE, "sigma"], round_to="none")
        sample_s = res.settings["sampling_seconds"]
        stats = res.idata["sample_stats"]
        steps = float(np.asarray(stats["n_steps"]).mean())
        eps = float(np.asarray(stats["step_size"]).mean())
        # share of draws whose trajectory doubled 2, 3 and 4+ times (3, 7 and 15+ leapfrog steps)
        depth = np.asarray(stats["depth"]).ravel()
        share = [np.mean(depth <= 2), np.mean(depth == 3), np.mean(depth >= 4)]
        shares = "/".join(f"{100 * x:.0f}" for x in share)
        ess = float(s["ess_bulk"].astype(float).min())
        print(
            f"{name:40s} {res.settings['frames_per_stop']:7.2f} {ms:8.3f} {sample_s:9.1f} "
            f"{steps:10.2f} {eps:9.3f} "
            f"{shares:>16s} {ess / sample_s:9.1f}"
        )


def _print_table(rows: list, chains: int, tune: int, draws: int) -> None:
    print(f"\nB1, {chains} chains x ({tune} tune + {draws} draws)")
    print(
        f"{'path':48s} {'compile s':>9s} {'sample s':>9s} {'total s':>8s} "
        f"{'minESS/s':>9s} {'max R-hat':>9s} {'truth in 94% HDI':>16s} {'steps/draw':>10s}"
    )
    for name, c, s_, tot, e, r, ins, steps in rows:
        print(
            f"{name:48s} {c:9.1f} {s_:9.1f} {tot:8.1f} {e:9.2f} {r:9.3f} {ins!s:>16s} {steps:10.1f}"
        )
    base = rows[0][4]
    for name, *rest in rows[1:]:
        print(f"cainfer ESS/s / {name}: {base / rest[3]:.1f}x")


def exact_pymc_model(
    model: CellModel,
    t: np.ndarray,
    stim: Stimulus,
    y: np.ndarray,
    free: list[str],
    observation: str = "dff_exact",
    residuals: str = "white",
    drift: str = "none",
    explicit: bool = False,
    stride: int | np.ndarray = 1,
) -> pm.Model:
    """The PyMC model cainfer builds for trace ``y`` (by default exact ΔF/F, white noise).

    ``explicit``: a kinetic indicator's system in RK4 steps instead of the implicit ones.
    ``stride``: the solver's output stride, one for all frames or one per frame
    (``Fit._stride()``).
    """
    from cainfer.infer.fit import _fit_options, _Problem, _pymc_model, _validated
    from cainfer.infer.observation import ObservedData

    # every option at fit()'s default except those that shape this model
    options = _fit_options("exact_pymc_model", dict(
        observation=observation, residuals=residuals, drift=drift, substeps=1,
    ))  # fmt: skip
    options["kinetic_explicit"] = explicit
    options["stride"] = stride
    free_v, fixed, priors = _validated(model, free, None, None, options)
    data = ObservedData(observation, y[None, :])
    return _pymc_model(_Problem(model, data, t, None, stim, free_v, fixed, priors), options)


def _logp_grad_ms(m: pm.Model, mode: str) -> float:
    """Milliseconds per log density + gradient of a PyMC model compiled with ``mode``."""
    logp = m.logp()
    grads = pytensor.grad(logp, m.value_vars)
    f = pytensor.function(m.value_vars, [logp, *grads], mode=mode)
    ip = m.initial_point()
    x = [ip[v.name] for v in m.value_vars]
    f(*x)
    n, t0 = 0, time.perf_counter()
    while n < 50 or time.perf_counter() - t0 < 1.0:
        f(*x)
        n += 1
    return (time.perf_counter() - t0) / n * 1e3


def _print_gradient_cost(
    model: CellModel, t: np.ndarray, stim: Stimulus, y: np.ndarray, have_jax: bool
) -> None:
    """Cost of one log-density gradient, and of its solver part alone."""
    from cainfer.forward import _adjoint as A
    from cainfer.forward._specialize import specialized

    cm = exact_pymc_model(model, t, stim, y, FREE)
    sm = scan_model(model, t, y)
    modes = ["NUMBA", "JAX"] if have_jax else ["NUMBA"]
    for label, m in (("cainfer", cm), ("scan", sm)):
        for mode in modes:
            print(
                f"one log-density gradient, {label} -> {mode.lower()}: "
                f"{_logp_grad_ms(m, mode):.3f} ms"
            )
    (tt, ev_t, ev_w, ev_slot, codes, offsets, wt, wv, has_er, h_max, pm_slot, er_slot) = (
        model.kernel_args(t, stim, substeps=1)
    )
    sched = A.K.schedule(tt, ev_t, h_max)
    rest = (ev_w, ev_slot, codes, offsets, wt, wv, has_er, pm_slot, er_slot)
    p = model.pack_raw(TRUTH)
    gvec, zero = np.ones(t.size), np.zeros(t.size)
    for label, mod in (("specialised", specialized(codes, offsets)), ("generic", A)):
        _, c, cc, ee = mod.dff_forward_tape(p, *sched, *rest)
        mod.dff_vjp_tape(p, *sched, *rest, c, cc, ee, gvec, zero, False)
        n = 300
        t0 = time.perf_counter()
        for _ in range(n):
            _, c, cc, ee = mod.dff_forward_tape(p, *sched, *rest)
        t1 = time.perf_counter()
        for _ in range(n):
            mod.dff_vjp_tape(p, *sched, *rest, c, cc, ee, gvec, zero, False)
        t2 = time.perf_counter()
        fwd, bwd = (t1 - t0) / n * 1e3, (t2 - t1) / n * 1e3
        print(
            f"cainfer solver kernels alone, {label}: {fwd + bwd:.2f} ms "
            f"(forward {fwd:.2f}, backward {bwd:.2f})"
        )


if __name__ == "__main__":
    main()
