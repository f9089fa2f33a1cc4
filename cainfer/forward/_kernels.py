"""Compiled kernels of the forward model: buffering, flux terms and the solver.

This is the hot path that no library covers well: a fixed-step RK4 solve with
exact calcium jumps at stimulus events, over a flux composition chosen at run
time, that a sampler calls thousands of times. It is hand-written in numba so
that no Python runs per time step. Each RK4 step is a pure function of
``(t, h, state, p)`` so that a discrete adjoint can be added step by step.
The flux terms' own arithmetic is not written here: it is generated from each
term's rate (:mod:`cainfer.forward._builtin_terms`, :mod:`cainfer.forward._codegen`),
except for the two leaks, whose rates are set by flux balance at rest.

Every kernel states ``fastmath=False``: numba otherwise compiles a function
with the fast-math flags of the first jitted caller that needs it (PyTensor's
numba backend defaults to fast-math), so the same call rounded differently
depending on what ran first in the process.

Parameter vector layout (``p``, float64): fixed global slots first (see the
``G_*`` constants), then each flux term's parameters at its offset.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from cainfer.forward import _builtin_terms as T
from cainfer.forward import _cache  # noqa: F401  (first: where numba caches these kernels)

# Global slots of the parameter vector.
G_C_REST = 0  # resting free cytosolic Ca (µM)
G_KAPPA_S = 1  # endogenous buffer capacity κ_S (dimensionless)
G_KD = 2  # indicator K_d (µM)
G_HILL = 3  # indicator Hill coefficient
G_RF = 4  # indicator dynamic range F_max/F_min
G_BT = 5  # indicator total concentration (µM)
G_CER_REST = 6  # resting free ER Ca (µM)
G_KAPPA_ER = 7  # ER buffer capacity (dimensionless)
G_V_ER = 8  # ER/cytosol volume ratio
G_KOFF = 9  # indicator unbinding rate (1/s); used when the dye is kinetic
G_PHI = 10  # kinetic indicator's switch ratio φ (0: one-step binding); see dye_binding
N_GLOBAL = 11


@njit(cache=True, fastmath=False, inline="always")
def hill_frac(c: float, k: float, n: float) -> float:
    """Occupancy c^n/(k^n + c^n), with c clipped at 0."""
    if c <= 0.0:
        return 0.0
    x = c / k if n == 1.0 else (c / k) ** n
    return x / (1.0 + x)


@njit(cache=True, fastmath=False)
def total_ca(c: float, kappa: float, bt: float, kd: float, n: float) -> float:
    """Total cytosolic Ca (µM) from free Ca c (µM)."""
    return c * (1.0 + kappa) + bt * hill_frac(c, kd, n)


@njit(cache=True, fastmath=False, inline="always")
def buffer_capacity(c: float, kappa: float, bt: float, kd: float, n: float) -> float:
    """β(c) = dCa_T/dc = 1 + κ_S + B_T·n·K_d^n·c^(n−1)/(c^n + K_d^n)^2."""
    if c <= 0.0:
        dye = bt / kd if n == 1.0 else 0.0
        return 1.0 + kappa + dye
    x = c / kd if n == 1.0 else (c / kd) ** n
    return 1.0 + kappa + bt * n * x / (c * (1.0 + x) * (1.0 + x))


@njit(cache=True, fastmath=False)
def free_from_total(total: float, kappa: float, bt: float, kd: float, n: float) -> float:
    """Free Ca (µM) whose total is ``total`` (µM): safeguarded Newton on a bracket.

    Total is strictly increasing in c, with c(1+κ) ≤ total ≤ c(1+κ) + B_T, which
    brackets the root; the result is exact to ~1e-14 relative.
    """
    if total <= 0.0:
        return 0.0
    a = 1.0 + kappa
    lo = max(0.0, (total - bt) / a)
    hi = total / a
    c = 0.5 * (lo + hi)
    for _ in range(200):
        f = total_ca(c, kappa, bt, kd, n) - total
        if f > 0.0:
            hi = c
        else:
            lo = c
        d = buffer_capacity(c, kappa, bt, kd, n)
        cn = c - f / d
        if not (lo < cn < hi):
            cn = 0.5 * (lo + hi)
        if abs(cn - c) <= 1e-15 * cn or hi - lo <= 1e-15 * hi:
            return cn
        c = cn
    return c


@njit(cache=True, fastmath=False)
def free_from_total_array(
    total: np.ndarray, kappa: float, bt: float, kd: float, n: float
) -> np.ndarray:
    """Element-wise :func:`free_from_total` over a flat array."""
    out = np.empty_like(total)
    for i in range(total.size):
        out[i] = free_from_total(total[i], kappa, bt, kd, n)
    return out


@njit(cache=True, fastmath=False)
def waveform_at(t: float, wt: np.ndarray, wv: np.ndarray) -> float:
    """Piecewise-linear waveform value at t, zero outside its support."""
    if wt.size == 0 or t < wt[0] or t > wt[-1]:
        return 0.0
    j = np.searchsorted(wt, t, side="right") - 1
    if j >= wt.size - 1:
        return wv[-1]
    w = (t - wt[j]) / (wt[j + 1] - wt[j])
    return wv[j] + w * (wv[j + 1] - wv[j])


# the flux function of each built-in term, by its code (a model's own kernels call them)
LOCAL_FLUX = {code: f"T.{name}" for code, name in T.FLUX.items()}


@njit(cache=True, fastmath=False, inline="always")
def local_flux(
    code: int, o: int, c: float, cer: float, u: float, p: np.ndarray
) -> tuple[float, float]:  # fmt: skip
    """One flux term: (plasma-membrane flux, ER→cytosol flux), µM/s.

    ``code`` is the term's code (see :mod:`cainfer.forward._codegen`), ``u``
    the stimulus waveform's value. Kept free of array arguments other than
    ``p`` so that numba inlines it into the loop over terms: a call per term
    would cost more than the arithmetic.
    """
    return T.flux(code, o, c, cer, u, p)


@njit(cache=True, fastmath=False)
def term_flux(
    code: int,
    o: int,
    t: float,
    c: float,
    cer: float,
    p: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
) -> tuple[float, float]:
    """One flux term at time t: (plasma-membrane flux, ER→cytosol flux), µM/s of cytosol."""
    return local_flux(code, o, c, cer, waveform_at(t, wt, wv), p)


@njit(cache=True, fastmath=False)
def term_flux_array(
    code: int,
    o: int,
    t: np.ndarray,
    c: np.ndarray,
    cer: np.ndarray,
    p: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`term_flux` over flat arrays of equal length."""
    a = np.empty(c.size)
    b = np.empty(c.size)
    for i in range(c.size):
        a[i], b[i] = term_flux(code, o, t[i], c[i], cer[i], p, wt, wv)
    return a, b


@njit(cache=True, fastmath=False)
def net_flux(
    t: float,
    c: float,
    cer: float,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
) -> tuple[float, float]:
    """Sum of all terms: (plasma-membrane flux, ER→cytosol flux), µM/s."""
    jpm = 0.0
    jx = 0.0
    u = waveform_at(t, wt, wv) if wt.size else 0.0
    for i in range(codes.size):
        a, b = local_flux(codes[i], offsets[i], c, cer, u, p)
        jpm += a
        jx += b
    return jpm, jx


@njit(cache=True, fastmath=False, inline="always")
def dye_binding(c: float, b: float, p: np.ndarray) -> float:
    """Net rate (µM/s) at which the indicator enters its bright bound state b.

    ``k_off·(x/D·(B_T − b) − b)`` with ``x = (c/K_d)^n`` and ``D = 1 + φ + φx``.
    With φ = 0 (one-step binding) this is ``k_on·c^n·(B_T − b) − k_off·b``,
    ``k_on = k_off/K_d^n``. With φ > 0 calcium binds first, rapidly, to a dim
    state, from which the indicator switches to the bright one at
    ``k_off/φ`` and back at ``k_off`` (see :func:`dim_bound_fraction`).
    """
    x = hill_ratio(c, p[G_KD], p[G_HILL])
    phi = p[G_PHI]
    return p[G_KOFF] * (x / (1.0 + phi + phi * x) * (p[G_BT] - b) - b)


@njit(cache=True, fastmath=False, inline="always")
def dim_bound_fraction(c: float, p: np.ndarray) -> tuple[float, float]:
    """Fraction q of the indicator not in its bright state that holds calcium, and dq/dc.

    The sequential scheme of a kinetic indicator with switch ratio φ > 0:
    calcium binds rapidly (Hill coefficient n) to a dim state, which switches
    slowly to the bright, fluorescent one (for GCaMPs, Ca²⁺-calmodulin
    binding its target peptide, the rate-limiting step of the response:
    Helassa N, Podor B, Fine A, Török K (2016), Design and mechanistic
    insight into ultrafast calcium indicators for monitoring intracellular
    calcium dynamics, Sci Rep 6:38276, doi:10.1038/srep38276). Of the
    indicator not bright, ``B_T − b``, the fraction ``q = φx/(1 + φ + φx)``
    is dim and bound (``x = (c/K_d)^n``), a rapid buffer; φ is the bright
    state's back-to-forward rate ratio, chosen so that at equilibrium the
    bright fraction is ``x/((1 + φ)(1 + x))``: the catalogue's K_d and Hill
    coefficient for the fluorescence, whatever φ. φ = 0: one-step binding.
    """
    phi = p[G_PHI]
    if phi == 0.0:
        return 0.0, 0.0
    kd, n = p[G_KD], p[G_HILL]
    x = hill_ratio(c, kd, n)
    d = 1.0 + phi + phi * x
    if c > 0.0:
        x_c = n * x / c
    else:
        x_c = 1.0 / kd if n == 1.0 else 0.0
    return phi * x / d, phi * (1.0 + phi) * x_c / (d * d)


@njit(cache=True, fastmath=False, inline="always")
def kinetic_jump(c: float, b: float, delta: float, p: np.ndarray) -> float:
    """Free Ca (µM) after ``delta`` µM of calcium enters at once, the bright state b held.

    The rapid buffers take it: the endogenous one and, in the sequential
    scheme (φ > 0), the dim bound indicator, a Hill buffer of total
    ``B_T − b`` and ``K_d·((1 + φ)/φ)^(1/n)``.
    """
    kappa, phi = p[G_KAPPA_S], p[G_PHI]
    if phi == 0.0:
        return c + delta / (1.0 + kappa)
    n = p[G_HILL]
    kd_dim = p[G_KD] * ((1.0 + phi) / phi) ** (1.0 / n)
    free_b = p[G_BT] - b
    return free_from_total(total_ca(c, kappa, free_b, kd_dim, n) + delta, kappa, free_b, kd_dim, n)


@njit(cache=True, fastmath=False, inline="always")
def hill_ratio(c: float, k: float, n: float) -> float:
    """(c/k)^n with c clipped at 0."""
    if c <= 0.0:
        return 0.0
    return c / k if n == 1.0 else (c / k) ** n


@njit(cache=True, fastmath=False, inline="always")
def rhs(
    t: float,
    c: float,
    cer: float,
    b: float,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    kinetic: bool,
) -> tuple[float, float, float]:
    """Time derivatives (dc/dt, dc_ER/dt, db/dt) in µM/s.

    With ``kinetic`` False the indicator is in equilibrium with c (rapid
    buffering, ``dc/dt = J/β(c)``) and b is unused; otherwise the bright bound
    indicator b follows its binding kinetics and the endogenous buffer (and,
    with φ > 0, the dim bound indicator) is rapid:
    ``dc/dt = (J − (1 − q)·db/dt)/(1 + κ_S + (B_T − b)·dq/dc)``, q from
    :func:`dim_bound_fraction` (0 for one-step binding).
    """
    jpm, jx = net_flux(t, c, cer, p, codes, offsets, wt, wv)
    db = 0.0
    if kinetic:
        db = dye_binding(c, b, p)
        q, q_c = dim_bound_fraction(c, p)
        dc = (jpm + jx - (1.0 - q) * db) / (1.0 + p[G_KAPPA_S] + (p[G_BT] - b) * q_c)
    else:
        dc = (jpm + jx) / buffer_capacity(c, p[G_KAPPA_S], p[G_BT], p[G_KD], p[G_HILL])
    dcer = 0.0
    if has_er:
        dcer = -jx / (p[G_V_ER] * (1.0 + p[G_KAPPA_ER]))
    return dc, dcer, db


# rk4_step and _run_body are compiled once and called, not inlined by numba:
# inlining them (4 right-hand sides per step, the loop body twice in run) made a
# first fit compile about 10 s longer with no faster step (python
# benchmarks/first_fit.py; python benchmarks/inference.py --only-cainfer). The
# adjoint's step is inlined in small models only (see _specialize).
@njit(cache=True, fastmath=False)
def rk4_step(
    t: float,
    h: float,
    c: float,
    cer: float,
    b: float,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    kinetic: bool,
) -> tuple[float, float, float]:
    """One classical Runge-Kutta step of size h (s)."""
    k1c, k1e, k1b = rhs(t, c, cer, b, p, codes, offsets, wt, wv, has_er, kinetic)
    hh = 0.5 * h
    k2c, k2e, k2b = rhs(
        t + hh,
        c + hh * k1c,
        cer + hh * k1e,
        b + hh * k1b,
        p,
        codes,
        offsets,
        wt,
        wv,
        has_er,
        kinetic,
    )
    k3c, k3e, k3b = rhs(
        t + hh,
        c + hh * k2c,
        cer + hh * k2e,
        b + hh * k2b,
        p,
        codes,
        offsets,
        wt,
        wv,
        has_er,
        kinetic,
    )
    k4c, k4e, k4b = rhs(
        t + h, c + h * k3c, cer + h * k3e, b + h * k3b, p, codes, offsets, wt, wv, has_er, kinetic
    )
    w = h / 6.0
    return (
        c + w * (k1c + 2.0 * k2c + 2.0 * k3c + k4c),
        cer + w * (k1e + 2.0 * k2e + 2.0 * k3e + k4e),
        b + w * (k1b + 2.0 * k2b + 2.0 * k3b + k4b),
    )


# schedule entries: an RK4 step, a jump at an event, an output time; a kinetic
# indicator's solve reads S_STEP as an implicit (SDIRK) step and S_RK4 as an RK4 one
S_STEP = 0
S_JUMP = 1
S_OUT = 2
S_RK4 = 3


@njit(cache=True, fastmath=False)
def _n_steps(span: float, h_max: float) -> int:
    return max(1, int(math.ceil(span / h_max - 1e-9)))


@njit(cache=True, fastmath=False)
def schedule(
    time: np.ndarray, ev_t: np.ndarray, h_max: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The solver's sequence of operations for output ``time`` and sorted events ``ev_t``.

    Between consecutive stops (output times and event times) the solve takes
    equal RK4 steps no longer than ``h_max[i]`` (s) up to output ``i``
    (``h_max`` has one entry per output; the first is unused); an event at an
    output time is applied before that output (right-continuous state). The
    sequence depends only on the time grid, so it is built once and replayed
    for every parameter vector, forward and backward.

    Returns
    -------
    op : numpy.ndarray of int64
        ``S_STEP``, ``S_JUMP`` or ``S_OUT`` per entry.
    arg : numpy.ndarray of int64
        Event index of a jump, output index of an output.
    t, h : numpy.ndarray
        Start time and size (s) of a step.
    """
    n_tape = 0
    t = time[0]
    k = 0
    for i in range(time.size):
        while k < ev_t.size and ev_t[k] <= time[i]:
            if ev_t[k] > t:
                n_tape += _n_steps(ev_t[k] - t, h_max[i])
            t = max(t, ev_t[k])
            n_tape += 1
            k += 1
        if time[i] > t:
            n_tape += _n_steps(time[i] - t, h_max[i])
        t = time[i]
        n_tape += 1
    op = np.empty(n_tape, np.int64)
    arg = np.zeros(n_tape, np.int64)
    tt = np.zeros(n_tape)
    hh = np.zeros(n_tape)
    t = time[0]
    k = 0
    m = 0
    for i in range(time.size):
        while True:
            has_event = k < ev_t.size and ev_t[k] <= time[i]
            seg_end = ev_t[k] if has_event else time[i]
            span = seg_end - t
            if span > 0.0:
                steps = _n_steps(span, h_max[i])
                h = span / steps
                for j in range(steps):
                    op[m], tt[m], hh[m] = S_STEP, t + j * h, h
                    m += 1
            t = max(t, seg_end)
            if not has_event:
                break
            op[m], arg[m] = S_JUMP, k
            m += 1
            k += 1
        op[m], arg[m] = S_OUT, i
        m += 1
    return op, arg, tt, hh


@njit(cache=True, fastmath=False)
def _graded(
    time: np.ndarray,
    ev_t: np.ndarray,
    h_max: np.ndarray,
    first: float,
    growth: float,
    op: np.ndarray,
    arg: np.ndarray,
    tt: np.ndarray,
    hh: np.ndarray,
    write: bool,
) -> int:
    """Fill (or, with ``write`` False, count) the entries of :func:`graded_schedule`."""
    m = 0
    t = time[0]
    t_ev = -np.inf
    k = 0
    for i in range(time.size):
        while True:
            has_event = k < ev_t.size and ev_t[k] <= time[i]
            seg_end = ev_t[k] if has_event else time[i]
            while seg_end - t > 1e-12 * max(1.0, abs(seg_end)):
                cap = min(h_max[i], first * h_max[i] + growth * (t - t_ev))
                h = min(cap, seg_end - t)
                if seg_end - t - h < 0.25 * cap:  # no sliver of a step before a stop
                    h = seg_end - t
                if write:
                    op[m], tt[m], hh[m] = S_STEP, t, h
                m += 1
                t += h
            t = max(t, seg_end)
            if not has_event:
                break
            if write:
                op[m], arg[m] = S_JUMP, k
            m += 1
            t_ev = ev_t[k]
            k += 1
        if write:
            op[m], arg[m] = S_OUT, i
        m += 1
    return m


@njit(cache=True, fastmath=False)
def graded_schedule(
    time: np.ndarray, ev_t: np.ndarray, h_max: np.ndarray, first: float, growth: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A :func:`schedule` whose steps are short just after each event.

    A step up to output ``i`` starting at time t is at most
    ``min(h, first·h + growth·(t − t_event))`` with ``h = h_max[i]`` and
    ``t_event`` the last event before it: the fast transient right after a
    jump (a kinetic indicator binding the new calcium) gets steps of
    ``first·h`` that grow geometrically (by ``1 + growth``) back to ``h``.
    Same entries and meaning as :func:`schedule`.
    """
    dummy_i = np.empty(0, np.int64)
    dummy_f = np.empty(0)
    n_tape = _graded(time, ev_t, h_max, first, growth, dummy_i, dummy_i, dummy_f, dummy_f, False)
    op = np.empty(n_tape, np.int64)
    arg = np.zeros(n_tape, np.int64)
    tt = np.zeros(n_tape)
    hh = np.zeros(n_tape)
    _graded(time, ev_t, h_max, first, growth, op, arg, tt, hh, True)
    return op, arg, tt, hh


@njit(cache=True, fastmath=False)
def run(
    op: np.ndarray,
    arg: np.ndarray,
    tt: np.ndarray,
    hh: np.ndarray,
    n_out: int,
    ev_w: np.ndarray,
    ev_slot: int,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    kinetic: bool,
    c0: float,
    cer0: float,
    b0: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Replay a :func:`schedule`: the states at the outputs and before every entry.

    Each event k adds ``p[ev_slot]·ev_w[k]`` µM to total cytosolic Ca; the
    jump is applied exactly (to the rapid buffers only when the indicator is
    kinetic).

    Returns
    -------
    c_out, er_out, b_out : numpy.ndarray
        Free cytosolic Ca, free ER Ca and bound indicator (µM) at the outputs.
    cc, ee : numpy.ndarray
        Free cytosolic and ER Ca before each entry (what the adjoint replays).
    """
    if not has_er and not kinetic:
        # the common single-compartment case with literal flags: its unused state
        # branches fold away at compile time (about 40% of the step's cost)
        return _run_body(
            op, arg, tt, hh, n_out, ev_w, ev_slot, p, codes, offsets, wt, wv, False, False,
            c0, cer0, b0,
        )  # fmt: skip
    return _run_body(
        op, arg, tt, hh, n_out, ev_w, ev_slot, p, codes, offsets, wt, wv, has_er, kinetic,
        c0, cer0, b0,
    )  # fmt: skip


@njit(cache=True, fastmath=False)
def _run_body(
    op: np.ndarray,
    arg: np.ndarray,
    tt: np.ndarray,
    hh: np.ndarray,
    n_out: int,
    ev_w: np.ndarray,
    ev_slot: int,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    kinetic: bool,
    c0: float,
    cer0: float,
    b0: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    c_out = np.empty(n_out)
    er_out = np.empty(n_out)
    b_out = np.empty(n_out)
    cc = np.empty(op.size)
    ee = np.empty(op.size)
    kappa, bt, kd, hill = p[G_KAPPA_S], p[G_BT], p[G_KD], p[G_HILL]
    amp = p[ev_slot] if ev_slot >= 0 else 0.0
    c, cer, b = c0, cer0, b0
    for m in range(op.size):
        cc[m] = c
        ee[m] = cer
        if op[m] == S_STEP:
            c, cer, b = rk4_step(
                tt[m], hh[m], c, cer, b, p, codes, offsets, wt, wv, has_er, kinetic
            )
        elif op[m] == S_JUMP:
            if kinetic:
                c = kinetic_jump(c, b, amp * ev_w[arg[m]], p)
            else:
                c = free_from_total(
                    total_ca(c, kappa, bt, kd, hill) + amp * ev_w[arg[m]], kappa, bt, kd, hill
                )
        else:
            c_out[arg[m]] = c
            er_out[arg[m]] = cer
            b_out[arg[m]] = b
    return c_out, er_out, b_out, cc, ee


@njit(cache=True, fastmath=False)
def solve(
    time: np.ndarray,
    ev_t: np.ndarray,
    ev_w: np.ndarray,
    ev_slot: int,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    kinetic: bool,
    h_max: float,
    c0: float,
    cer0: float,
    b0: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Free cytosolic Ca, free ER Ca and bound indicator (µM) at each output time.

    :func:`schedule` then :func:`run`: each event k adds ``p[ev_slot]·ev_w[k]``
    µM to total cytosolic Ca at ``ev_t[k]`` (sorted), exactly; an output at an
    event's time sees the event.
    """
    op, arg, tt, hh = schedule(time, ev_t, np.full(time.size, h_max))
    c, cer, b, _, _ = run(
        op, arg, tt, hh, time.size, ev_w, ev_slot, p, codes, offsets, wt, wv, has_er, kinetic,
        c0, cer0, b0,
    )  # fmt: skip
    return c, cer, b


@njit(cache=True, fastmath=False)
def jacobian_bound(
    c_grid: np.ndarray,
    cer_grid: np.ndarray,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    kinetic: bool,
) -> float:
    """Largest |eigenvalue| of the state Jacobian (1/s) over a state grid.

    Central finite differences; the waveform is evaluated at its first knot
    (it enters additively and does not change the Jacobian). With a kinetic
    indicator, b is taken at equilibrium with c and at zero.
    """
    t = wt[0] if wt.size else 0.0
    lam = 0.0
    jac = np.zeros((3, 3))
    n_b = 2 if kinetic else 1
    for c in c_grid:
        for cer in cer_grid:
            for ib in range(n_b):
                b = 0.0
                if ib == 0:
                    x = hill_ratio(c, p[G_KD], p[G_HILL])
                    b = p[G_BT] * x / ((1.0 + p[G_PHI]) * (1.0 + x))
                y = np.array([c, cer, b])
                for j in range(3):
                    if (j == 1 and not has_er) or (j == 2 and not kinetic):
                        continue
                    hj = 1e-6 * y[j] + 1e-12
                    up = y.copy()
                    dn = y.copy()
                    up[j] += hj
                    dn[j] = max(y[j] - hj, 0.0)
                    f1 = rhs(t, up[0], up[1], up[2], p, codes, offsets, wt, wv, has_er, kinetic)
                    f0 = rhs(t, dn[0], dn[1], dn[2], p, codes, offsets, wt, wv, has_er, kinetic)
                    for r in range(3):
                        jac[r, j] = (f1[r] - f0[r]) / (up[j] - dn[j])
                lam = max(lam, _spectral_radius(jac, has_er, kinetic))
    return lam


@njit(cache=True, fastmath=False)
def _spectral_radius(jac: np.ndarray, has_er: bool, kinetic: bool) -> float:
    """Largest |eigenvalue| of the Jacobian restricted to the active states."""
    idx = [0]
    if has_er:
        idx.append(1)
    if kinetic:
        idx.append(2)
    m = len(idx)
    if m == 1:
        return abs(jac[0, 0])
    if m == 2:
        i, j = idx[0], idx[1]
        half_tr = 0.5 * (jac[i, i] + jac[j, j])
        disc = half_tr * half_tr - (jac[i, i] * jac[j, j] - jac[i, j] * jac[j, i])
        if disc >= 0.0:
            r = math.sqrt(disc)
            return max(abs(half_tr + r), abs(half_tr - r))
        return math.sqrt(half_tr * half_tr - disc)
    return float(np.max(np.abs(np.linalg.eigvals(jac))))
