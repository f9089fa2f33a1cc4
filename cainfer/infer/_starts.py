"""Where a fit's chains start: posterior modes found from a space-filling design.

The chains start at the mode (or, when the posterior has separate modes, in
each of them in turn), not at the prior's centre; see :func:`_mode_starts`.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pymc as pm

from cainfer.infer._coordinates import COORD_LOC, COORD_SCALE
from cainfer.infer.observation import REPORTED as OBSERVATION_REPORTED
from cainfer.infer.observation import SHEARED as OBSERVATION_SHEARED


def _chain_seeds(compiled: Any, chains: int, seed: int, at: np.ndarray) -> list[int]:
    """The seeds nutpie passes to ``compiled``'s start function for ``chains`` and ``seed``.

    A one-draw run (trees of depth 1) started at ``at`` (a point of finite
    log density, so that nutpie asks for no other start) records them.
    nutpie derives each chain's seed from ``seed`` and the chain's index
    alone, so the run that follows gets the same ones.
    """
    import nutpie

    seen: list[int] = []

    def record(chain_seed: Any) -> np.ndarray:
        seen.append(int(chain_seed))
        return np.array(at, dtype=float)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz: "chain dimension longer than draw"
        nutpie.sample(
            dataclasses.replace(compiled, initial_point_func=record),
            draws=1, tune=1, chains=chains, cores=1, seed=seed, maxdepth=1,
            progress_bar=False, save_warmup=False,
        )  # fmt: skip
    return seen


# prior draws of the cell's parameters ranked before the search for modes
_N_DESIGN = 256

# a start whose local mode is this much below the best mode found (log density) is
# moved to the best: e^-50 of the peak density holds no posterior mass in a few dims
_MODE_GAP = 50.0


# unscaled L-BFGS iterations of the first climb before it is rescaled by the local sds
_FIRST_STEPS = 25

# a start whose mode is a separate one (the log density dips this much below the lower
# of the two on the straight line between them) with at most this much less posterior
# mass (Laplace, log) than the best mode gets chains of its own
_MODE_DIP = 3.0
_MODE_MASS_GAP = 3.0


def _forward_draws(
    outputs: list[Any],
    draws: int,
    seed: Sequence[int],
    cache: dict[str, Any] | None = None,
    key: str = "",
) -> list[np.ndarray]:
    """``draws`` joint draws of ``outputs`` (model variables) from their generative graph.

    As :func:`pymc.draw`, but the compiled function is kept in ``cache``
    under ``key`` for the next fit of a reused model (its data are shared
    variables the function reads), and the random generators are reseeded
    from ``seed`` (a list of non-negative integers) before every use, so that
    a kept function draws the numbers a new one would.
    """
    from pymc.pytensorf import collect_default_updates, compile, reseed_rngs

    cache = {} if cache is None else cache
    if key not in cache:
        rngs = list(collect_default_updates(inputs=[], outputs=outputs))
        # PyTensor's Python implementations, not numba's: a few hundred draws of a
        # few scalars take milliseconds either way, and numba compiled each such
        # graph for a second or two of a first fit (the same random streams)
        fn = compile([], outputs, random_seed=False, mode="FAST_COMPILE")
        cache[key] = (fn, rngs)
    fn, rngs = cache[key]
    reseed_rngs(rngs, [int(s) for s in seed])
    out = [fn() for _ in range(draws)]
    return [np.stack([o[i] for o in out]) for i in range(len(outputs))]


def _logp_grad(compiled: Any) -> Any:
    """``x ↦ (log density, gradient)`` of a model nutpie compiled, called from Python.

    nutpie's sampler calls the compiled log density with the model's data as
    read-only arrays; the PyTensor function ``compiled.logp_func`` passes its
    shared variables' own (writable) arrays, a second set of argument types
    for which numba compiles the whole log density again (2.7 s of a first
    fit). This calls the compiled function with nutpie's read-only arrays.

    A point where the compiled code raises (numba's division by zero, at
    parameters far outside anything the data allow, where a climb's line
    search may probe) has log density −inf there, as the sampler's own
    wrapper treats it (a rejected step).
    """
    fn = compiled.logp_func
    jit = getattr(getattr(fn, "vm", None), "jit_fn", None)
    keys = getattr(compiled, "shared_var_keys", None)
    if jit is None or keys is None:
        call = fn
    else:
        data = [compiled.shared_data[keys[var]] for var in fn.get_shared()]

        def call(x: np.ndarray) -> Any:
            return jit(np.ascontiguousarray(x, dtype=np.float64), *data)

    def logp_grad(x: np.ndarray) -> Any:
        try:
            return call(x)
        except ArithmeticError:
            return np.array(-np.inf), np.zeros(np.shape(x))

    return logp_grad


def _prior_draws(
    pm_model: pm.Model, draws: int, seed: int, cache: dict[str, Any] | None = None
) -> Any:
    """The prior group: draws of every parameter from its prior.

    A sheared variable (``OBSERVATION_SHEARED``: its sampled stand-in is
    centred on a function of the cell model's ΔF/F) is not drawn through the
    model, which would solve the cell for every draw; its reported variable's
    prior is the stated log-normal whatever the cell's parameters, and is
    drawn as that.
    """
    import pymc as pm

    names = {v.name for v in (*pm_model.free_RVs, *pm_model.deterministics)}
    sheared = {k: v for k, v in OBSERVATION_SHEARED.items() if k in names}
    skip = set(sheared) | {reported for reported, _ in sheared.values()}
    keep = sorted(names - skip)
    drawn = _forward_draws([pm_model[n] for n in keep], draws, [abs(int(seed)), 0x9817], cache,
                           "prior " + " ".join(keep))  # fmt: skip
    prior = pm.to_inference_data(prior=dict(zip(keep, drawn, strict=True)), model=pm_model)
    prior = prior["prior"]
    prior = prior.to_dataset() if hasattr(prior, "to_dataset") else prior
    rng = np.random.default_rng([abs(int(seed)), 0x5EA4])
    for stand_in, (reported, log_sd) in sheared.items():
        shape = tuple(int(n) for n in pm_model[stand_in].shape.eval())
        dims = ["chain", "draw", *(["roi"] if shape else [])]
        value = np.exp(rng.normal(0.0, log_sd, size=(1, draws, *shape)))
        prior[reported] = (dims, value)
    return prior


# names of the observation model's free variables (the rest of a model's are the cell's)
_OBSERVATION_RVS = frozenset({*OBSERVATION_REPORTED, *OBSERVATION_SHEARED, "sigma", "drift_z"})


@dataclass(frozen=True)
class _StartPlan:
    """Where the climbs to a posterior mode begin, in the sampler's flat coordinates.

    ``centre``: the prior's support point of every free variable but the
    noise's. ``held``, ``held_at``: coordinates of the noise model (``sigma``
    at the recording's robust noise sd, ``rho`` at 0) held in the first stage
    of each climb, and their values (also the centre's).
    ``design``: points that share the centre's observation terms and hold
    the noise, with the cell's parameters drawn from their prior (rows).
    """

    centre: np.ndarray
    held: np.ndarray
    held_at: np.ndarray
    design: np.ndarray


def _start_plan(
    pm_model: pm.Model,
    noise: np.ndarray,
    seed: int,
    n_design: int,
    cache: dict[str, Any] | None = None,
) -> _StartPlan:
    """The :class:`_StartPlan` of ``pm_model`` (nutpie's order: ``free_RVs`` in turn, raveled).

    Parameters
    ----------
    pm_model : pymc.Model
        The model to sample.
    noise : numpy.ndarray
        Robust noise sd of each ROI's recording (its units).
    seed : int
        Seed of the prior draws.
    n_design : int
        Number of prior draws of the cell's parameters.
    cache : dict, optional
        Where the compiled draw function is kept for the next fit of the model.
    """
    from pymc.initial_point import make_initial_point_fn

    rvs = list(pm_model.free_RVs)
    held_values: dict[str, Any] = {}
    names = {rv.name for rv in rvs}
    if "sigma" in names:
        shape = tuple(pm_model["sigma"].shape.eval())
        sd = np.asarray(noise, dtype=float)
        held_values["sigma"] = sd.reshape(shape) if shape else float(sd[0])
    if "rho" in names:
        held_values["rho"] = np.zeros(tuple(pm_model["rho"].shape.eval()))
    point = make_initial_point_fn(
        model=pm_model, jitter_rvs=set(), overrides=held_values, return_transformed=True
    )(0)
    cell = [rv for rv in rvs if rv.name not in _OBSERVATION_RVS]
    exprs = []
    for rv in cell:  # prior draws in the sampler's coordinates
        transform = pm_model.rvs_to_transforms.get(rv)
        exprs.append(rv if transform is None else transform.forward(rv, *rv.owner.inputs))
    drawn = []
    if cell and n_design:
        key = "design " + " ".join(rv.name for rv in cell)
        drawn = _forward_draws(exprs, n_design, [abs(int(seed)), 0xDE5], cache, key)
    parts, idx, columns = [], [], []
    count = 0
    for rv in rvs:
        v = np.ravel(np.asarray(point[pm_model.rvs_to_values[rv].name], dtype=float))
        sl = np.arange(count, count + v.size)
        if rv.name in held_values:
            idx.append(sl)
        if drawn and rv in cell:
            columns.append((sl, np.asarray(drawn[cell.index(rv)], dtype=float)))
        parts.append(v)
        count += v.size
    centre = np.concatenate(parts)  # the noise already at its held values
    held = np.concatenate(idx) if idx else np.zeros(0, dtype=int)
    design = np.tile(centre, (n_design if columns else 0, 1))
    for sl, d in columns:
        design[:, sl] = d.reshape(d.shape[0], -1)
    return _StartPlan(centre, held, centre[held], design)


def _mode_starts(
    compiled: Any,
    seed: int,
    n_probe: int = 4,
    spread: float = 0.5,
    plan: _StartPlan | None = None,
    *,
    chains: int = 1,
    chain_seeds: Callable[[np.ndarray], Sequence[int]] | None = None,
    report: dict[str, Any] | None = None,
) -> Any:
    """``compiled`` with chains started near posterior modes instead of at jittered prior points.

    Modes are searched first (probes): ``plan``'s design points (the cell's
    parameters drawn from their prior, the noise at its measured level) are
    ranked by log density, and L-BFGS climbs from the ``n_probe`` best and from
    the prior's centre; without a plan, from ``n_probe`` jittered prior points.
    Regenerative models (ER release) have local modes, such as a train that
    does or does not trigger release, separated by cliffs no climb crosses: a
    climb finds the mode of the basin it starts in, so the search must start
    in the right one. Each climb first holds the noise (sd at its measured
    level, white): a climb with the noise free can end where a large, slowly
    wandering noise explains the transients instead of the cell. The climbs
    run in coordinates divided by local posterior sds: the first takes
    ``_FIRST_STEPS`` unscaled iterations and is then scaled by the sds where
    they ended, the other probes by the same sds, each chain's climb by those
    of the best mode (which a chain that climbs back to it reuses). On ten
    minutes of raw fluorescence at 60 frames/s, whose resting level and
    noise are pinned to a thousandth of a pump's spread, unscaled climbs
    took 3829 log-density evaluations for the probes and 3029 for four
    chains' starts; scaled, 991 and 897.

    Each chain's jittered start (PyMC's initial point) is then moved uphill to
    its local mode; a chain whose mode is more than ``_MODE_GAP`` below the
    best probe goes to the best mode instead. The chain starts ``spread``
    local posterior sds from that mode, in a random direction: sd from the
    curvature of the log density at the mode (finite differences of its
    gradient, one per coordinate). At the mode itself the gradient is near
    zero, and nutpie sets its first mass matrix from the gradient at the
    start: on B1 with its ΔF/F observation model, chains started exactly at
    their modes spent their first draws in trees of 255–1023 steps at step
    sizes near 0.001. Starting from the jittered prior points instead let one
    chain of the bundled ER example wander into a poor mode during warmup
    (R-hat 1.88); half a local sd stays in the mode's basin.

    Separate modes of comparable mass. A probe's mode is separate from the
    best when the log density dips more than ``_MODE_DIP`` below the lower of
    the two on the straight line between them (never, within one log-concave
    mode), and comparable when its Laplace mass (log density plus the log
    local sds) is within ``_MODE_MASS_GAP`` of the best's. With ``chains`` ≥ 2
    and such modes, up to ``chains`` modes get chains in turn (the best
    first): ``chain_seeds(x)`` gives the seeds nutpie will pass (from a run
    started at ``x``), and a chain's rank among them picks its mode, so that
    the draws of a seed do not depend on the order the chains start in.
    Every chain going to the best mode would report a posterior with two
    modes of comparable mass as one, sharply. NUTS does not cross between
    such modes: the chains disagree (R-hat) and :meth:`Fit.diagnostics`
    names the modes. ``report``, when given, gets ``"modes"``: each chosen
    mode's log density and log Laplace mass relative to the best.

    The chains' coordinates. When the model has them (a
    :class:`~cainfer.infer._coordinates.SampledModel` with its coordinates
    installed), the returned model samples ``u = (x − m)/s``: ``m`` the best
    mode and ``s`` its local sds, set as the compiled model's data, and the
    start function gives each chain's start in ``u``. nutpie's first mass
    matrix, ``1/|gradient|`` at the start, is then within a few of right in
    every coordinate instead of off by ``1/s``: on a two-minute raw
    recording at 60 frames/s the first 20 warmup draws of a chain took
    ~4700 leapfrog steps in ``x`` and 1200–1500 in ``u``.
    """
    from scipy import optimize

    logp_grad = _logp_grad(compiled)  # x -> (logp, grad), compiled with the model
    start = compiled.initial_point_func
    lock = threading.Lock()

    def neg(x: np.ndarray) -> tuple[float, np.ndarray]:
        lp, g = logp_grad(x)
        lp = float(lp)
        if not np.isfinite(lp):
            return 1e300, np.zeros_like(x)
        return -lp, -np.asarray(g, dtype=float)

    def climb(
        x0: np.ndarray, scale: np.ndarray | None = None, maxiter: int = 300
    ) -> tuple[np.ndarray, float]:
        """L-BFGS from ``x0`` to its local mode, in coordinates ``(x − x0)/scale``.

        ``scale`` (a mode's local sds, 0 where unknown) preconditions the
        climb: a long recording pins some coordinates (its resting
        fluorescence, the noise) to a thousandth of the others' spread, and
        unscaled the climbs took up to their 300 iterations.
        """
        x0 = np.array(x0, dtype=float)
        s = np.ones_like(x0)
        if scale is not None:
            s = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        with np.errstate(all="ignore"):
            free = np.ones(x0.size, dtype=bool)
            stages = []
            if plan is not None and plan.held.size:
                x0[plan.held] = plan.held_at
                unheld = free.copy()
                unheld[plan.held] = False
                stages.append(unheld)
            stages.append(free)
            for part in stages:
                at = x0.copy()

                def neg_part(u: np.ndarray, at: np.ndarray = at, part: np.ndarray = part) -> Any:
                    x = at.copy()
                    x[part] += s[part] * u
                    f, g = neg(x)
                    return f, g[part] * s[part]

                r = optimize.minimize(
                    neg_part, np.zeros(int(part.sum())), jac=True, method="L-BFGS-B",
                    options={"maxiter": maxiter},
                )  # fmt: skip
                if np.all(np.isfinite(r.x)):
                    x0[part] = at[part] + s[part] * r.x
        lp = float(logp_grad(x0)[0])
        return x0, lp if np.isfinite(lp) else -np.inf

    def local_sd(x: np.ndarray) -> np.ndarray:
        """Posterior sd of each coordinate at the mode ``x`` from the Hessian's diagonal.

        0 where the curvature is not positive and finite (no step there).
        """
        g0 = np.asarray(logp_grad(x)[1], dtype=float)
        curvature = np.zeros_like(x)
        with np.errstate(all="ignore"):
            for i in range(x.size):
                h = 1e-4 * max(1.0, abs(x[i]))
                e = np.zeros_like(x)
                e[i] = h
                curvature[i] = -(float(np.asarray(logp_grad(x + e)[1])[i]) - g0[i]) / h
            ok = np.isfinite(curvature) & (curvature > 0)
            return np.where(ok, 1.0 / np.sqrt(np.where(ok, curvature, 1.0)), 0.0)

    with lock:
        if plan is not None and plan.design.shape[0]:
            with np.errstate(all="ignore"):
                lps = np.array([float(logp_grad(x)[0]) for x in plan.design])
            lps = np.where(np.isfinite(lps), lps, -np.inf)
            origins = [plan.design[i] for i in np.argsort(-lps)[:n_probe]] + [plan.centre]
        else:
            origins = [np.asarray(start(seed * 7919 + 104729 + k), float) for k in range(n_probe)]
            if plan is not None:
                origins.append(plan.centre)
        # the first climb's start: a few unscaled steps, to where local sds can scale the rest
        near, lp0 = climb(origins[0], maxiter=_FIRST_STEPS)
        pre = local_sd(near) if np.isfinite(lp0) else None
        probes = [climb(near if np.isfinite(lp0) else origins[0], pre)]
        probes += [climb(x0, pre) for x0 in origins[1:]]
        best_x, best_lp = max(probes, key=lambda p: p[1])
        best_sd = local_sd(best_x) if np.isfinite(best_lp) else None

    def log_mass(
        x: np.ndarray, lp: float, sd: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """Laplace log mass of the mode ``x`` and its local sds (reused for its chains).

        ``sd``: the local sds at ``x`` when they are known already.
        """
        sd = local_sd(x) if sd is None else sd
        return lp + float(np.sum(np.log(sd[sd > 0]))), sd

    def separate(a: tuple[np.ndarray, float], b: tuple[np.ndarray, float]) -> bool:
        floor = min(a[1], b[1]) - _MODE_DIP
        with np.errstate(all="ignore"):
            for f in np.linspace(0.0, 1.0, 11)[1:-1]:
                lp = float(logp_grad(a[0] + f * (b[0] - a[0]))[0])
                if not lp >= floor:  # NaN or -inf: no way through either
                    return True
        return False

    modes: list[tuple[np.ndarray, float]] = [(best_x, best_lp)]
    masses: list[float] = []
    sds: list[np.ndarray] = []  # each mode's local sds, once masses are needed
    if chains >= 2 and np.isfinite(best_lp):
        with lock:
            for x, lp in sorted(probes, key=lambda p: -p[1]):
                if len(modes) >= chains or not lp >= best_lp - _MODE_GAP:
                    break
                if not all(separate((x, lp), m) for m in modes):
                    continue
                if not masses:
                    mass, sd = log_mass(best_x, best_lp, best_sd)
                    masses.append(mass)
                    sds.append(sd)
                mass, sd = log_mass(x, lp)
                if mass >= masses[0] - _MODE_MASS_GAP:
                    modes.append((x, lp))
                    masses.append(mass)
                    sds.append(sd)
    rank: dict[int, int] = {}
    if len(modes) > 1:
        seeds = sorted({int(s) for s in chain_seeds(best_x)}) if chain_seeds is not None else []
        rank = {s: i for i, s in enumerate(seeds)}
    if report is not None:
        report["modes"] = [
            {"log_density": float(lp), "log_mass": float(m - masses[0])}
            for (_, lp), m in zip(modes, masses, strict=True)
        ] if len(modes) > 1 else []  # fmt: skip

    def init(chain_seed: Any) -> np.ndarray:
        x0 = np.asarray(start(chain_seed), dtype=float)
        if not np.isfinite(best_lp):
            return x0  # nothing better found: PyMC's own start
        with lock:
            if len(modes) > 1:  # each mode its chains, by the chain's rank
                k = rank.get(int(chain_seed), abs(int(chain_seed))) % len(modes)
                mode, sd = modes[k][0].copy(), sds[k]
            else:
                x, lp = climb(x0, best_sd)
                mode = x if lp >= best_lp - _MODE_GAP else best_x.copy()
                # a climb that ended at the best mode (within a hundredth of its sds) shares its sds
                if best_sd is not None and np.all(np.abs(mode - best_x) <= 0.01 * best_sd):
                    sd = best_sd
                else:
                    sd = local_sd(mode)
            # the chain's own seed (an unsigned 64-bit integer from nutpie) picks the direction
            rng = np.random.default_rng([abs(int(seed)), abs(int(chain_seed))])
            for scale in (spread, spread / 4):  # a smaller step if the first leaves the support
                x1 = mode + scale * sd * rng.standard_normal(mode.size)
                if np.isfinite(float(logp_grad(x1)[0])):
                    return x1
        return mode

    names = {v.name for v in getattr(compiled, "shared_var_keys", {})}
    if not (np.isfinite(best_lp) and {COORD_LOC, COORD_SCALE} <= names):
        return dataclasses.replace(compiled, initial_point_func=init)
    # the chains' coordinates u = (x - loc)/scale: centred at the best mode, scaled by its sds
    assert best_sd is not None  # the probes computed it: the best mode's log density is finite
    loc = best_x.copy()
    scale = np.where(np.isfinite(best_sd) & (best_sd > 0), best_sd, 1.0)
    compiled = compiled.with_data(**{COORD_LOC: loc, COORD_SCALE: scale})

    def init_sampled(chain_seed: Any) -> np.ndarray:
        return (init(chain_seed) - loc) / scale

    return dataclasses.replace(compiled, initial_point_func=init_sampled)
