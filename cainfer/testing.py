"""Reference implementations for checking cainfer against independent solvers.

Shipped with the package (as ``pymc.testing`` is) so that users extending the
model can check their terms the same way the test suite does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from functools import partial

import numpy as np
from numpy.typing import ArrayLike
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from cainfer.forward import _kernels as K
from cainfer.forward.fluxes import EventInflux, Flux
from cainfer.forward.model import CellModel, _check_time, _waveform
from cainfer.forward.stimulus import Stimulus


def reference_simulate(
    model: CellModel,
    params: Mapping[str, float] | None,
    time: ArrayLike,
    stimulus: Stimulus | None = None,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    method: str = "LSODA",
) -> dict[str, np.ndarray]:
    """Solve the model with ``scipy.integrate.solve_ivp`` in total-calcium coordinates.

    Independent of the compiled solver in how it is built: the state is total
    cytosolic and total ER calcium (so an event is a plain addition) and, for
    a kinetic indicator, its bright bound state; free calcium comes from
    ``scipy.optimize.brentq`` at every evaluation (or, for one-step binding,
    from subtracting the bound indicator), the step size is adaptive, and the
    integration restarts at each event.

    Parameters
    ----------
    model : CellModel
        The model.
    params : mapping or None
        Parameter values (defaults for those left out).
    time : array_like
        Output times (s).
    stimulus : Stimulus, optional
        Events and waveform.
    rtol, atol : float
        Tolerances for ``solve_ivp`` (atol in µM).
    method : str
        ``solve_ivp`` method.

    Returns
    -------
    dict
        ``ca`` and ``ca_er`` (free, µM), ``ca_total`` (µM), ``dye_bound`` (µM
        of calcium on the indicator, kinetic indicator only) and ``dff`` at
        ``time``.
    """
    if model.stateful:
        raise ValueError(
            f"reference_simulate covers models without gating states; model {model.name!r} has "
            f"{', '.join(model.states[2 if model.has_er else 1 :])}"
        )
    v = model.values(params)
    p, rest = model._balance(v)
    t = _check_time(time)
    stim = stimulus or Stimulus()
    wt, wv = _waveform(stim)
    kappa, bt, kd, n = v["kappa_s"], v["b_total"], v["kd"], v["hill"]
    er_cap = v.get("er_volume", 1.0) * (1.0 + v.get("er_kappa", 0.0))

    def total(c: float) -> float:
        x = (max(c, 0.0) / kd) ** n
        return c * (1.0 + kappa) + bt * x / (1.0 + x)

    def free(tot: float) -> float:
        if tot <= 0:
            return 0.0
        hi = tot / (1.0 + kappa)
        return float(brentq(lambda c: total(c) - tot, 0.0, hi, xtol=1e-16, rtol=1e-15))

    k_off = v.get("k_off", 0.0)
    phi = v.get("switch_ratio", 0.0)

    def dim(c: float, b: float) -> float:
        """Calcium on the dim bound state (sequential scheme, switch ratio φ)."""
        x = (max(c, 0.0) / kd) ** n
        return (bt - b) * phi * x / (1.0 + phi + phi * x)

    def cyto_free(y: np.ndarray) -> float:
        if model.kinetic:  # total = c·(1 + κ_S) + bright + dim bound indicator
            rapid = float(y[0] - y[2])
            if phi == 0.0 or rapid <= 0.0:
                return max(rapid, 0.0) / (1.0 + kappa)
            return float(
                brentq(
                    lambda c: c * (1.0 + kappa) + dim(c, y[2]) - rapid,
                    0.0, rapid / (1.0 + kappa), xtol=1e-16, rtol=1e-15,
                )
            )  # fmt: skip
        return free(y[0])

    kern, _ = model.kernels()

    def f(tt: float, y: np.ndarray) -> list[float]:
        c = cyto_free(y)
        cer = y[1] / er_cap if model.has_er else 0.0
        jpm, jx = kern.net_flux(tt, c, cer, p, model._codes, model._offsets, wt, wv)
        db = 0.0
        if model.kinetic:  # k_on·c^n = k_off·x: bright state formed from the apo and dim ones
            x = (c / kd) ** n
            db = k_off * (x / (1.0 + phi + phi * x) * (bt - y[2]) - y[2])
        return [jpm + jx, -jx, db]

    b_rest = bt * rest.c**n / (rest.c**n + kd**n) / (1.0 + phi)
    y = np.array([total(rest.c), (rest.c_er * er_cap) if model.has_er else 0.0, b_rest])
    slot = model._slot_of(EventInflux)
    amp = p[slot] if slot >= 0 else 0.0
    jumps: dict[float, float] = {}
    for te, w in zip(stim.events.tolist(), stim.event_weights.tolist(), strict=True):
        jumps[te] = jumps.get(te, 0.0) + amp * w
    t0, t_end = float(t[0]), float(t[-1])
    y[0] += jumps.pop(t0, 0.0)
    edges = [t0, *sorted(jumps), t_end]
    max_step = float(np.diff(wt).min()) if wt.size > 1 else np.inf
    out = np.empty((3, t.size))
    for k, (a, b) in enumerate(itertools.pairwise(edges)):
        last = k == len(edges) - 2
        sel = np.flatnonzero((t >= a) & ((t <= b) if last else (t < b)))
        if b > a:
            t_eval = np.unique(np.append(t[sel], b))
            sol = solve_ivp(
                f, (a, b), y, method=method, rtol=rtol, atol=atol, t_eval=t_eval, max_step=max_step
            )
            if not sol.success:
                raise RuntimeError(f"solve_ivp failed: {sol.message}")
            out[:, sel] = sol.y[:, np.searchsorted(t_eval, t[sel])]
            y = sol.y[:, -1].copy()
        else:
            out[:, sel] = y[:, None]
        y[0] += jumps.get(b, 0.0) if not last else 0.0
    out_tot, out_er, out_b = out
    ca = np.array([cyto_free(y) for y in out.T])
    xn = (ca / kd) ** n
    x0 = (rest.c / kd) ** n
    occupancy = (1.0 + phi) * out_b / bt if model.kinetic else xn / (1.0 + xn)
    on_dye = out_b + np.array([dim(c, b) for c, b in zip(ca, out_b, strict=True)])
    F = 1.0 + (v["rf"] - 1.0) * occupancy
    F0 = 1.0 + (v["rf"] - 1.0) * x0 / (1.0 + x0)
    return {
        "ca": ca,
        "ca_total": out_tot,
        "ca_er": out_er / er_cap if model.has_er else np.full(t.size, np.nan),
        "dye_bound": on_dye if model.kinetic else np.full(t.size, np.nan),
        "dff": F / F0 - 1.0,
    }


def check_term(
    term: Flux,
    *,
    c: ArrayLike = (0.02, 0.1, 0.5, 2.0, 20.0),
    c_er: ArrayLike = (50.0, 400.0),
    rtol: float = 1e-6,
) -> float:
    """Check a term's compiled flux and adjoint against its rate expression.

    For a term defined by ``rate`` (see :class:`cainfer.forward.Flux`): at
    every pair of the given states, with the term's default parameters and
    the cell's default resting levels, the compiled flux must equal the rate
    expression evaluated by SymPy (``lambdify``, numpy), and the compiled
    pull-back (the gradient the sampler uses) must equal central finite
    differences of that expression with respect to both states and every
    parameter, including the resting levels it reads.

    Parameters
    ----------
    term : Flux
        An instance of the term (its defaults are the point checked).
    c, c_er : array_like
        Free cytosolic and ER calcium (µM) to check at; positive.
    rtol : float
        Largest relative difference accepted (relative to the largest
        magnitude of the quantity over the states).

    Returns
    -------
    float
        The largest relative difference found.

    Raises
    ------
    AssertionError
        Naming the quantity and state where the difference exceeds ``rtol``.
    """
    import sympy as sp

    from cainfer.forward import _codegen

    cls = type(term)
    if cls.rate is None:
        raise ValueError(f"{cls.__name__} has no rate expression to check")
    parts = _codegen.term_expressions(cls)
    if parts.stateful or parts.reads_waveform:
        raise ValueError(
            f"{cls.__name__} has gating states, moves mitochondrial calcium or reads the "
            "waveform: check_term checks a rate of c and c_er alone; such a model's gradient is "
            "checked by CellModel.dff_vjp against finite differences"
        )
    cs = np.asarray(c, dtype=float).reshape(-1)
    es = np.asarray(c_er, dtype=float).reshape(-1)
    if not (np.all(cs > 0) and np.all(es > 0)):
        raise ValueError("check_term: c and c_er must be positive")
    model = CellModel([term])
    kern, adj = model.kernels()
    code, o = int(model._codes[0]), int(model._offsets[0])
    p = model._pack_raw(model.values(None))
    expr, cs_, es_, psyms, gsyms = _codegen.expression(cls)
    glob = {"c_rest": K.G_C_REST, "c_er_rest": K.G_CER_REST}
    args = [cs_, es_, *psyms, *gsyms.values()]
    rate = sp.lambdify(args, expr, modules="numpy")
    slots = [o + i for i in range(len(psyms))] + [glob[g] for g in gsyms]
    names = [q.name for q in term.parameters] + list(gsyms)

    def exact(x: float, y: float, q: np.ndarray) -> float:
        return float(rate(x, y, *q[slots]))

    worst = 0.0
    pairs = list(itertools.product(cs, es))
    empty = np.empty(0)
    values = np.array([exact(x, y, p) for x, y in pairs])
    scale_v = float(np.max(np.abs(values))) or 1.0
    comp = 0 if cls.compartment == "pm" else 1
    grads: list[tuple[str, float, float]] = []
    for (x, y), v in zip(pairs, values, strict=True):
        got = kern.term_flux(code, o, 0.0, x, y, p, empty, empty)[comp]
        worst = max(worst, abs(got - v) / scale_v)
        if abs(got - v) > rtol * scale_v:
            raise AssertionError(
                f"{cls.__name__}: flux at c={x:g}, c_er={y:g} is {got!r}, rate {v!r}"
            )
        pbar = np.zeros_like(p)
        dc, de = adj.local_vjp(code, o, x, y, 0.0, p, 1.0, 1.0, pbar, True)
        at = f"at c={x:g}, c_er={y:g}"
        grads.append((f"d/dc {at}", dc, _central(partial(_along, exact, x, y, p, 0), x)))
        grads.append((f"d/dc_er {at}", de, _central(partial(_along, exact, x, y, p, 1), y)))
        for name, slot in zip(names, slots, strict=True):

            def shifted(h: float, x: float = x, y: float = y, slot: int = slot) -> float:
                q = p.copy()
                q[slot] += h
                return exact(x, y, q)

            grads.append((f"d/d{name} {at}", pbar[slot], _central(shifted, p[slot])))
    for what in {g[0].split(" at ")[0] for g in grads}:
        rows = [g for g in grads if g[0].startswith(what + " at ")]
        scale = max(max(abs(a), abs(b)) for _, a, b in rows) or 1.0
        for label, ana, fd in rows:
            err = abs(ana - fd) / scale
            worst = max(worst, err)
            if err > max(rtol, 1e-6):
                raise AssertionError(
                    f"{cls.__name__}: {label}: adjoint {ana!r}, finite differences {fd!r}"
                )
    return worst


def _along(
    f: Callable[[float, float, np.ndarray], float],
    x: float,
    y: float,
    p: np.ndarray,
    axis: int,
    h: float,
) -> float:
    """F with state ``axis`` (0: c, 1: c_er) moved by h."""
    return f(x + h, y, p) if axis == 0 else f(x, y + h, p)


def _central(f: Callable[[float], float], x: float) -> float:
    """Central difference of f at 0 (f takes the offset), step relative to |x|."""
    h = 1e-6 * max(abs(x), 1e-3)
    return (f(h) - f(-h)) / (2.0 * h)
