"""Discrete adjoint (vector-Jacobian product) of the compiled RK4 solver.

Hand-written in numba for the same reason as the solver: a sampler needs the
gradient of the log density thousands of times, and no library differentiates
this fixed-step solve with exact event jumps without dropping to Python. The
adjoint replays the forward steps backwards, so its result is the exact
derivative of the discrete solution (not of the ODE), to rounding.

Every flux term's partial derivatives are written out by hand below; the test
suite checks each of them against finite differences.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from cainfer.forward import _builtin_terms as T
from cainfer.forward import _kernels as K


@njit(cache=True, fastmath=False, inline="always")
def _hill_d(c: float, k: float, n: float, need_n: bool = True) -> tuple[float, float, float, float]:
    """H = c^n/(k^n + c^n) and its partials (dh/dc, dh/dk, dh/dn); zero for c ≤ 0.

    ``need_n`` False skips dh/dn (returned as 0): its logarithm is a large
    part of a step's cost and is wasted when no Hill coefficient is free.
    """
    if c <= 0.0:
        return 0.0, 0.0, 0.0, 0.0
    x = c / k if n == 1.0 else (c / k) ** n
    h = x / (1.0 + x)
    dh_dx = 1.0 / ((1.0 + x) * (1.0 + x))
    dn = dh_dx * x * math.log(c / k) if need_n else 0.0
    return h, dh_dx * n * x / c, -dh_dx * n * x / k, dn


# the pull-back of each built-in term, by its code (a model's own kernels call them)
LOCAL_VJP = {code: f"T.{name}" for code, name in T.VJP.items()}


@njit(cache=True, fastmath=False, inline="always")
def local_vjp(
    code: int,
    o: int,
    c: float,
    cer: float,
    u: float,
    p: np.ndarray,
    gpm: float,
    gx: float,
    pbar: np.ndarray,
    need_n: bool = True,
) -> tuple[float, float]:
    """One term's cotangents pulled back to (c̄, c̄_ER), its parameters' added to ``pbar``.

    ``code`` is the term's code, ``u`` the stimulus waveform's value.
    """
    return T.vjp(code, o, c, cer, u, p, gpm, gx, pbar, need_n)


@njit(cache=True, fastmath=False, inline="always")
def beta_d(
    c: float, kappa: float, bt: float, kd: float, n: float, need_n: bool = True
) -> tuple[float, float, float, float, float]:
    """β(c) and its partials (dβ/dc, dβ/dB_T, dβ/dK_d, dβ/dn); dβ/dκ = 1."""
    if c <= 0.0:
        return K.buffer_capacity(c, kappa, bt, kd, n), 0.0, 0.0, 0.0, 0.0
    x = c / kd if n == 1.0 else (c / kd) ** n
    q = 1.0 + x
    g = n * x / (c * q * q)
    dg_c = n * x / (c * c * q * q) * (n - 1.0 - 2.0 * n * x / q)
    dg_kd = -n * n * x * (1.0 - x) / (kd * c * q * q * q)
    dg_n = x / (c * q * q) * (1.0 + n * math.log(c / kd) * (1.0 - x) / q) if need_n else 0.0
    return 1.0 + kappa + bt * g, bt * dg_c, g, bt * dg_kd, bt * dg_n


@njit(cache=True, fastmath=False, inline="always")
def rhs_vjp(
    t: float,
    c: float,
    cer: float,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    jpm: float,
    jx: float,
    vc: float,
    ve: float,
    pbar: np.ndarray,
    need_n: bool,
) -> tuple[float, float]:
    """Pull the cotangent (vc, ve) of (dc/dt, dc_ER/dt) back to (c, c_ER) and p.

    ``jpm``, ``jx`` are the net fluxes at this state (already computed by the caller).
    """
    b, db_c, db_bt, db_kd, db_n = beta_d(
        c, p[K.G_KAPPA_S], p[K.G_BT], p[K.G_KD], p[K.G_HILL], need_n
    )
    j = jpm + jx
    # dc/dt = j / β
    gpm = vc / b
    gx = vc / b
    q = -vc * j / (b * b)  # cotangent on β
    cbar = q * db_c
    pbar[K.G_KAPPA_S] += q
    pbar[K.G_BT] += q * db_bt
    pbar[K.G_KD] += q * db_kd
    pbar[K.G_HILL] += q * db_n
    erbar = 0.0
    if has_er:  # dc_ER/dt = -jx / (v (1 + κ_ER))
        cap = p[K.G_V_ER] * (1.0 + p[K.G_KAPPA_ER])
        gx -= ve / cap
        pbar[K.G_V_ER] += ve * jx / (cap * p[K.G_V_ER])
        pbar[K.G_KAPPA_ER] += ve * jx / (cap * (1.0 + p[K.G_KAPPA_ER]))
    a, e = flux_vjp(t, c, cer, p, codes, offsets, wt, wv, gpm, gx, pbar, need_n)
    return cbar + a, erbar + e


@njit(cache=True, fastmath=False, inline="always")
def flux_vjp(
    t: float,
    c: float,
    cer: float,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    gpm: float,
    gx: float,
    pbar: np.ndarray,
    need_n: bool,
) -> tuple[float, float]:
    """Pull the cotangents (gpm, gx) of the net fluxes back to (c, c_ER); adds to ``pbar``.

    The loop over terms that :mod:`cainfer.forward._specialize` unrolls.
    """
    cbar = 0.0
    erbar = 0.0
    u = K.waveform_at(t, wt, wv) if wt.size else 0.0
    for i in range(codes.size):
        a, e = local_vjp(codes[i], offsets[i], c, cer, u, p, gpm, gx, pbar, need_n)
        cbar += a
        erbar += e
    return cbar, erbar


@njit(cache=True, fastmath=False)
def rk4_step_vjp(
    t: float,
    h: float,
    c: float,
    cer: float,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    lc: float,
    le: float,
    pbar: np.ndarray,
    need_n: bool,
) -> tuple[float, float]:
    """Cotangent of the state before one RK4 step from the cotangent after it."""
    hh = 0.5 * h
    kappa, bt, kd, n = p[K.G_KAPPA_S], p[K.G_BT], p[K.G_KD], p[K.G_HILL]
    cap = p[K.G_V_ER] * (1.0 + p[K.G_KAPPA_ER]) if has_er else 1.0
    # replay the stages once, keeping each stage's net fluxes for the pull-backs
    p1, x1 = K.net_flux(t, c, cer, p, codes, offsets, wt, wv)
    k1c = (p1 + x1) / K.buffer_capacity(c, kappa, bt, kd, n)
    k1e = -x1 / cap if has_er else 0.0
    y2c, y2e = c + hh * k1c, cer + hh * k1e
    p2, x2 = K.net_flux(t + hh, y2c, y2e, p, codes, offsets, wt, wv)
    k2c = (p2 + x2) / K.buffer_capacity(y2c, kappa, bt, kd, n)
    k2e = -x2 / cap if has_er else 0.0
    y3c, y3e = c + hh * k2c, cer + hh * k2e
    p3, x3 = K.net_flux(t + hh, y3c, y3e, p, codes, offsets, wt, wv)
    k3c = (p3 + x3) / K.buffer_capacity(y3c, kappa, bt, kd, n)
    k3e = -x3 / cap if has_er else 0.0
    y4c, y4e = c + h * k3c, cer + h * k3e
    p4, x4 = K.net_flux(t + h, y4c, y4e, p, codes, offsets, wt, wv)
    w = h / 6.0
    # cotangents of the stage derivatives k1..k4
    g4c, g4e = w * lc, w * le
    y4bc, y4be = rhs_vjp(
        t + h, y4c, y4e, p, codes, offsets, wt, wv, has_er, p4, x4, g4c, g4e, pbar, need_n
    )
    g3c, g3e = 2.0 * w * lc + h * y4bc, 2.0 * w * le + h * y4be
    y3bc, y3be = rhs_vjp(
        t + hh, y3c, y3e, p, codes, offsets, wt, wv, has_er, p3, x3, g3c, g3e, pbar, need_n
    )
    g2c, g2e = 2.0 * w * lc + hh * y3bc, 2.0 * w * le + hh * y3be
    y2bc, y2be = rhs_vjp(
        t + hh, y2c, y2e, p, codes, offsets, wt, wv, has_er, p2, x2, g2c, g2e, pbar, need_n
    )
    g1c, g1e = w * lc + hh * y2bc, w * le + hh * y2be
    y1bc, y1be = rhs_vjp(
        t, c, cer, p, codes, offsets, wt, wv, has_er, p1, x1, g1c, g1e, pbar, need_n
    )
    return lc + y1bc + y2bc + y3bc + y4bc, le + y1be + y2be + y3be + y4be


@njit(cache=True, fastmath=False, inline="always")
def total_d(
    c: float, kappa: float, bt: float, kd: float, n: float
) -> tuple[float, float, float, float]:
    """Partials of total calcium w.r.t. (κ_S, B_T, K_d, n) at free calcium c."""
    h, _, dk, dn = _hill_d(c, kd, n)
    return c, h, bt * dk, bt * dn


# tape entries (the solver's schedule)
_STEP = K.S_STEP
_JUMP = K.S_JUMP
_OUT = K.S_OUT


@njit(cache=True, fastmath=False)
def tape_backward(
    tape: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ev_w: np.ndarray,
    ev_slot: int,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    gc: np.ndarray,
    ge: np.ndarray,
    need_n: bool = True,
) -> tuple[np.ndarray, float, float]:
    """Pull output cotangents back through a recorded solve: (p̄, c̄0, c̄_ER0).

    With ``need_n`` False the cotangents of Hill coefficients are left at 0.
    """
    op, arg, tt, hh, cc, ee = tape
    n_tape = op.size
    amp = p[ev_slot] if ev_slot >= 0 else 0.0
    # backward
    pbar = np.zeros(p.size)
    lc = 0.0
    le = 0.0
    for m in range(n_tape - 1, -1, -1):
        if op[m] == _OUT:
            lc += gc[arg[m]]
            le += ge[arg[m]]
        elif op[m] == _STEP:
            lc, le = rk4_step_vjp(
                tt[m], hh[m], cc[m], ee[m], p, codes, offsets, wt, wv, has_er, lc, le, pbar, need_n
            )
        else:
            lc = jump_vjp(cc[m], amp, ev_w[arg[m]], ev_slot, p, lc, pbar)
    return pbar, lc, le


@njit(cache=True, fastmath=False, inline="always")
def jump_vjp(
    cm: float, amp: float, w: float, ev_slot: int, p: np.ndarray, lc: float, pbar: np.ndarray
) -> float:
    """Pull the cotangent of free Ca after an event's jump back to before it; adds to ``pbar``.

    The jump: total(c+) = total(c−) + amp·w, the rapid buffers in equilibrium.
    """
    kappa, bt, kd, hill = p[K.G_KAPPA_S], p[K.G_BT], p[K.G_KD], p[K.G_HILL]
    cp = K.free_from_total(K.total_ca(cm, kappa, bt, kd, hill) + amp * w, kappa, bt, kd, hill)
    bp = K.buffer_capacity(cp, kappa, bt, kd, hill)
    bm = K.buffer_capacity(cm, kappa, bt, kd, hill)
    s = lc / bp  # cotangent on the total after the jump
    dm = total_d(cm, kappa, bt, kd, hill)
    dp = total_d(cp, kappa, bt, kd, hill)
    pbar[K.G_KAPPA_S] += s * (dm[0] - dp[0])
    pbar[K.G_BT] += s * (dm[1] - dp[1])
    pbar[K.G_KD] += s * (dm[2] - dp[2])
    pbar[K.G_HILL] += s * (dm[3] - dp[3])
    if ev_slot >= 0:
        pbar[ev_slot] += s * w
    return s * bm


@njit(cache=True, fastmath=False)
def balance_leaks(
    p_raw: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    pm_slot: int,
    er_slot: int,
    has_er: bool,
) -> np.ndarray:
    """Copy of ``p_raw`` with the leak slots set by flux balance at rest.

    ``pm_slot``/``er_slot`` are the slots of the plasma-membrane and ER leak
    rates (-1 when absent). An unbalanceable state (a negative leak) gives NaN.
    """
    p = p_raw.copy()
    c = p[K.G_C_REST]
    cer = p[K.G_CER_REST] if has_er else 0.0
    empty = np.empty(0)
    if er_slot >= 0:
        p[er_slot] = 0.0
        _, jx = K.net_flux(-np.inf, c, cer, p, codes, offsets, empty, empty)
        k = -jx / (cer - c)
        p[er_slot] = k if (k >= 0.0 and cer > c) else np.nan
    if pm_slot >= 0:
        p[pm_slot] = 0.0
        jpm, _ = K.net_flux(-np.inf, c, cer, p, codes, offsets, empty, empty)
        p[pm_slot] = -jpm if jpm <= 0.0 else np.nan
    return p


@njit(cache=True, fastmath=False)
def balance_vjp(
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    pm_slot: int,
    er_slot: int,
    has_er: bool,
    pbar: np.ndarray,
) -> None:
    """Fold the cotangents of the leak slots of a balanced ``p`` back into ``pbar``."""
    c = p[K.G_C_REST]
    cer = p[K.G_CER_REST] if has_er else 0.0
    empty = np.empty(0)
    for which in range(2):
        slot = pm_slot if which == 0 else er_slot
        if slot < 0:
            continue
        lbar = pbar[slot]
        pbar[slot] = 0.0
        if which == 0:
            gpm, gx = -lbar, 0.0
        else:
            _, jx = K.net_flux(-np.inf, c, cer, p, codes, offsets, empty, empty)
            s_other = jx - p[slot] * (cer - c)
            gpm, gx = 0.0, -lbar / (cer - c)
            pbar[K.G_C_REST] += -lbar * s_other / (cer - c) ** 2
            pbar[K.G_CER_REST] += lbar * s_other / (cer - c) ** 2
        # every term through the (specialised, unrolled) loop, then the leak's own share
        # taken back out: the leak is what the balance sets, not part of it. (The loop
        # over codes would compile every code's adjoint again, seconds of a first fit.)
        a, e = flux_vjp(-np.inf, c, cer, p, codes, offsets, empty, empty, gpm, gx, pbar, True)
        pbar[slot] = 0.0
        if which == 1:  # vjp_er_leak's pull on (c, c_ER); the plasma-membrane leak has none
            a += gx * p[slot]
            e -= gx * p[slot]
        pbar[K.G_C_REST] += a
        pbar[K.G_CER_REST] += e


@njit(cache=True, fastmath=False)
def dff_forward(
    p_raw: np.ndarray,
    time: np.ndarray,
    ev_t: np.ndarray,
    ev_w: np.ndarray,
    ev_slot: int,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    h_max: np.ndarray,
    pm_slot: int,
    er_slot: int,
) -> tuple[np.ndarray, np.ndarray]:
    """ΔF/F and free Ca at ``time`` from unbalanced parameters (equilibrium indicator)."""
    op, arg, tt, hh = K.schedule(time, ev_t, h_max)
    dff, c, _, _ = dff_forward_tape(
        p_raw, op, arg, tt, hh, ev_w, ev_slot, codes, offsets, wt, wv, has_er, pm_slot, er_slot
    )
    return dff, c


@njit(cache=True, fastmath=False)
def dff_forward_tape(
    p_raw: np.ndarray,
    op: np.ndarray,
    arg: np.ndarray,
    tt: np.ndarray,
    hh: np.ndarray,
    ev_w: np.ndarray,
    ev_slot: int,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    pm_slot: int,
    er_slot: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`dff_forward` over a precomputed schedule, keeping what the adjoint needs.

    Returns ΔF/F and free Ca at the outputs, and the free cytosolic and ER Ca
    before every schedule entry (for :func:`dff_vjp_tape`).
    """
    p = balance_leaks(p_raw, codes, offsets, pm_slot, er_slot, has_er)
    cer0 = p[K.G_CER_REST] if has_er else 0.0
    # counted as an array sum: a counter started at the literal 0 would make numba
    # compile the solver once more for that intermediate literal type
    n_out = np.sum(op == K.S_OUT)
    c, _, _, cc, ee = K.run(
        op, arg, tt, hh, n_out, ev_w, ev_slot, p, codes, offsets, wt, wv, has_er, False,
        p[K.G_C_REST], cer0, 0.0,
    )  # fmt: skip
    return dff_of(c, p), c, cc, ee


@njit(cache=True, fastmath=False)
def dff_of(c: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ΔF/F of an indicator in equilibrium at free Ca ``c`` (µM), relative to rest."""
    kd, n, rf = p[K.G_KD], p[K.G_HILL], p[K.G_RF]
    f0 = 1.0 + (rf - 1.0) * K.hill_frac(p[K.G_C_REST], kd, n)
    dff = np.empty(c.size)
    for i in range(c.size):
        dff[i] = (1.0 + (rf - 1.0) * K.hill_frac(c[i], kd, n)) / f0 - 1.0
    return dff


@njit(cache=True, fastmath=False)
def dff_of_vjp(
    c: np.ndarray, p: np.ndarray, g_dff: np.ndarray, g_c: np.ndarray, pbar: np.ndarray
) -> np.ndarray:
    """Pull-back of :func:`dff_of`: the cotangent of ``c`` (plus ``g_c``); p̄ added to ``pbar``."""
    c_rest = p[K.G_C_REST]
    kd, n, rf = p[K.G_KD], p[K.G_HILL], p[K.G_RF]
    h0, dh0_c, dh0_k, dh0_n = _hill_d(c_rest, kd, n)
    f0 = 1.0 + (rf - 1.0) * h0
    gc = g_c.copy()
    s_h = 0.0
    s_hk = 0.0
    s_hn = 0.0
    s_f = 0.0
    for i in range(c.size):
        h, dh_c, dh_k, dh_n = _hill_d(c[i], kd, n)
        g = g_dff[i]
        gc[i] += g * (rf - 1.0) * dh_c / f0
        s_h += g * h
        s_hk += g * dh_k
        s_hn += g * dh_n
        s_f += g * (1.0 + (rf - 1.0) * h)
    pbar[K.G_RF] += s_h / f0 - s_f * h0 / f0**2
    pbar[K.G_KD] += (rf - 1.0) * (s_hk / f0 - s_f * dh0_k / f0**2)
    pbar[K.G_HILL] += (rf - 1.0) * (s_hn / f0 - s_f * dh0_n / f0**2)
    pbar[K.G_C_REST] += -s_f * (rf - 1.0) * dh0_c / f0**2
    return gc


@njit(cache=True, fastmath=False)
def dff_vjp_tape(
    p_raw: np.ndarray,
    op: np.ndarray,
    arg: np.ndarray,
    tt: np.ndarray,
    hh: np.ndarray,
    ev_w: np.ndarray,
    ev_slot: int,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    pm_slot: int,
    er_slot: int,
    c: np.ndarray,
    cc: np.ndarray,
    ee: np.ndarray,
    g_dff: np.ndarray,
    g_c: np.ndarray,
    need_n: bool,
) -> np.ndarray:
    """Cotangent of ``p_raw`` from cotangents of (ΔF/F, free Ca), given the forward record.

    ``c``, ``cc``, ``ee`` are what :func:`dff_forward_tape` returned for the
    same ``p_raw``: the backward pass replays them without solving again.
    ``need_n`` False leaves the cotangents of Hill coefficients unreliable
    (only for callers that discard them).
    """
    p = balance_leaks(p_raw, codes, offsets, pm_slot, er_slot, has_er)
    mapped = np.zeros(p.size)
    gc = dff_of_vjp(c, p, g_dff, g_c, mapped)
    pbar, c0bar, cer0bar = tape_backward(
        (op, arg, tt, hh, cc, ee),
        ev_w,
        ev_slot,
        p,
        codes,
        offsets,
        wt,
        wv,
        has_er,
        gc,
        np.zeros(c.size),
        need_n,
    )
    for j in range(p.size):
        pbar[j] += mapped[j]
    pbar[K.G_C_REST] += c0bar
    if has_er:
        pbar[K.G_CER_REST] += cer0bar
    balance_vjp(p, codes, offsets, pm_slot, er_slot, has_er, pbar)
    return pbar


@njit(cache=True, fastmath=False)
def dff_vjp(
    p_raw: np.ndarray,
    time: np.ndarray,
    ev_t: np.ndarray,
    ev_w: np.ndarray,
    ev_slot: int,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    h_max: np.ndarray,
    pm_slot: int,
    er_slot: int,
    g_dff: np.ndarray,
    g_c: np.ndarray,
) -> np.ndarray:
    """Cotangent of ``p_raw`` from cotangents of (ΔF/F, free Ca) of :func:`dff_forward`."""
    op, arg, tt, hh = K.schedule(time, ev_t, h_max)
    _, c, cc, ee = dff_forward_tape(
        p_raw, op, arg, tt, hh, ev_w, ev_slot, codes, offsets, wt, wv, has_er, pm_slot, er_slot
    )
    return dff_vjp_tape(
        p_raw, op, arg, tt, hh, ev_w, ev_slot, codes, offsets, wt, wv, has_er, pm_slot,
        er_slot, c, cc, ee, g_dff, g_c, True,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# Kinetic indicator: an L-stable implicit solve and its discrete adjoint.
#
# With the indicator's binding as a state, ``db/dt = k_off·((c/K_d)^n·(B_T − b) − b)``
# relaxes at k_off·(1 + (c/K_d)^n), thousands per second for a GCaMP at micromolar
# calcium: explicit RK4 needs hundreds of steps per frame there. The kinetic solve
# uses instead the three-stage, third-order, stiffly accurate and L-stable SDIRK
# method of Alexander (1977), so the step is set by accuracy, not stability, and the
# fast binding mode is damped as the rates grow (the equilibrium limit). Each stage
# is a Newton solve on the 3-state system; the adjoint pulls cotangents back through
# each stage's implicit equation (implicit-function theorem), which needs only the
# first derivatives of the right-hand side: the same per-term pull-backs as RK4's.
#
# Alexander R (1977). Diagonally implicit Runge-Kutta methods for stiff O.D.E.'s.
# SIAM J Numer Anal 14:1006-1021. https://doi.org/10.1137/0714068
# (tableau as in Hairer E, Wanner G, Solving ODEs II, 2nd ed., Table IV.6.5).
# ---------------------------------------------------------------------------

_SG = 0.43586652150845899942  # γ: root of x³ − 3x² + 3x/2 − 1/6 in (1/6, 1/2)
_SC2 = 0.5 * (1.0 + _SG)
_SA21 = 0.5 * (1.0 - _SG)
_SB1 = -0.25 * (6.0 * _SG * _SG - 16.0 * _SG + 1.0)
_SB2 = 0.25 * (6.0 * _SG * _SG - 20.0 * _SG + 5.0)
# after each event the first step is this fraction of the frame's step, and steps grow
# by 1 + _GROWTH per step back to it (see K.graded_schedule)
_FIRST_STEP = 1.0 / 256.0
_GROWTH = 0.1
_NEWTON_TOL = 1e-13  # relative step size at which a stage's Newton solve stops
_NEWTON_MAX = 40


@njit(cache=True, fastmath=False)
def kinetic_schedule(
    time: np.ndarray, ev_t: np.ndarray, h_max: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The kinetic solve's schedule: steps of ``h_max`` (per output), graded down after events."""
    return K.graded_schedule(time, ev_t, h_max, _FIRST_STEP, _GROWTH)


def solver_schedule(
    time: np.ndarray, ev_t: np.ndarray, h_max: np.ndarray, kinetic: bool, explicit: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The schedule of the ΔF/F kernels: RK4's (equilibrium) or the kinetic solve's.

    With ``explicit`` a kinetic indicator's system takes RK4 steps of ``h_max``
    (entries ``K.S_RK4``, no grading after events) instead of the implicit ones.
    Chosen in Python: compiled, the choice would compile both schedules for
    every model (about a second of a first fit).
    """
    if kinetic and not explicit:
        return kinetic_schedule(time, ev_t, h_max)
    op, arg, tt, hh = K.schedule(time, ev_t, h_max)
    if kinetic:
        op = np.where(op == K.S_STEP, K.S_RK4, op)
    return op, arg, tt, hh


@njit(cache=True, fastmath=False)
def kinetic_pull(
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
    vc: float,
    ve: float,
    vb: float,
    pbar: np.ndarray,
    need_n: bool,
) -> tuple[float, float, float]:
    """Pull (vc, ve, vb), a cotangent of (dc/dt, dc_ER/dt, db/dt), back to (c, c_ER, b).

    The kinetic right-hand side (:func:`K.rhs`): ``dc/dt = N/A`` with
    ``N = J − (1 − q)·g``, ``A = 1 + κ_S + (B_T − b)·q_c`` and
    ``g = db/dt = k_off·(r·(B_T − b) − b)``, where ``x = (c/K_d)^n``,
    ``D = 1 + φ + φx``, ``r = x/D``, ``q = φx/D`` and ``q_c = dq/dc`` (φ = 0:
    ``q = q_c = 0``, one-step binding). Adds to ``pbar``.
    """
    a = 1.0 + p[K.G_KAPPA_S]
    kd, n, bt, koff, phi = p[K.G_KD], p[K.G_HILL], p[K.G_BT], p[K.G_KOFF], p[K.G_PHI]
    jpm, jx = K.net_flux(t, c, cer, p, codes, offsets, wt, wv)
    x = K.hill_ratio(c, kd, n)
    d = 1.0 + phi + phi * x
    r = x / d
    q = phi * r
    x_c = n * x / c if c > 0.0 else 0.0
    qc = phi * (1.0 + phi) * x_c / (d * d)
    free_b = bt - b
    big_a = a + free_b * qc
    g = koff * (r * free_b - b)
    w = vc / big_a  # cotangent of N
    dc = (jpm + jx - (1.0 - q) * g) / big_a
    a_bar = -w * dc
    g_bar = vb - w * (1.0 - q)
    q_bar = w * g
    qc_bar = a_bar * free_b
    r_bar = g_bar * koff * free_b
    gpm = w
    gx = w
    pbar[K.G_KAPPA_S] += a_bar
    if has_er:
        cap = p[K.G_V_ER] * (1.0 + p[K.G_KAPPA_ER])
        gx -= ve / cap
        pbar[K.G_V_ER] += ve * jx / (cap * p[K.G_V_ER])
        pbar[K.G_KAPPA_ER] += ve * jx / (cap * (1.0 + p[K.G_KAPPA_ER]))
    pbar[K.G_KOFF] += g_bar * (r * free_b - b)
    pbar[K.G_BT] += g_bar * koff * r + a_bar * qc
    bbar = -g_bar * koff * (r + 1.0) - a_bar * qc
    d2 = d * d
    # through x = (c/K_d)^n: r, q and q_c (q_c also holds n/c explicitly)
    x_bar = r_bar * (1.0 + phi) / d2 + q_bar * phi * (1.0 + phi) / d2
    if phi > 0.0 and c > 0.0:
        x_bar += qc_bar * phi * (1.0 + phi) * (n / c) * (d - 2.0 * phi * x) / (d2 * d)
    pbar[K.G_PHI] += -r_bar * x * (1.0 + x) / d2 + q_bar * x / d2
    if c > 0.0:
        dqc_phi = (1.0 + 2.0 * phi) / d2 - 2.0 * phi * (1.0 + phi) * (1.0 + x) / (d2 * d)
        pbar[K.G_PHI] += qc_bar * x_c * dqc_phi
    cbar = 0.0
    if c > 0.0:
        cbar = x_bar * x_c - qc_bar * qc / c
        pbar[K.G_KD] += -x_bar * n * x / kd
        if need_n:
            pbar[K.G_HILL] += x_bar * x * math.log(c / kd) + (qc_bar * qc / n)
    fc, fe = flux_vjp(t, c, cer, p, codes, offsets, wt, wv, gpm, gx, pbar, need_n)
    return cbar + fc, fe, bbar


@njit(cache=True, fastmath=False)
def _kinetic_jac(
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
    scratch: np.ndarray,
) -> tuple[float, float, float, float, float, float, float, float, float]:
    """The state Jacobian of the kinetic right-hand side, row by row (exact).

    The fluxes' partials come from their pull-backs (one per flux code: plasma
    membrane, and ER when there is one; their parameter cotangents go to
    ``scratch``); the binding term's are written out.
    """
    a = 1.0 + p[K.G_KAPPA_S]
    kd, n, bt, koff, phi = p[K.G_KD], p[K.G_HILL], p[K.G_BT], p[K.G_KOFF], p[K.G_PHI]
    x = K.hill_ratio(c, kd, n)
    d = 1.0 + phi + phi * x
    r = x / d
    q = phi * r
    x_c = n * x / c if c > 0.0 else 0.0
    free_b = bt - b
    db_c = koff * free_b * (1.0 + phi) * x_c / (d * d)
    db_b = -koff * (r + 1.0)
    pm_c, pm_e = flux_vjp(t, c, cer, p, codes, offsets, wt, wv, 1.0, 0.0, scratch, False)
    x_c_er, x_e = 0.0, 0.0
    cap = 1.0
    if has_er:
        x_c_er, x_e = flux_vjp(t, c, cer, p, codes, offsets, wt, wv, 0.0, 1.0, scratch, False)
        cap = p[K.G_V_ER] * (1.0 + p[K.G_KAPPA_ER])
    if phi == 0.0:  # one-step binding: A = 1 + κ_S
        return (
            (pm_c + x_c_er - db_c) / a, (pm_e + x_e) / a, -db_b / a,
            -x_c_er / cap, -x_e / cap, 0.0,
            db_c, 0.0, db_b,
        )  # fmt: skip
    # sequential scheme: dc/dt = N/A, N = J − (1 − q)·g, A = 1 + κ_S + (B_T − b)·q_c
    qc = phi * (1.0 + phi) * x_c / (d * d)
    qcc = 0.0
    if c > 0.0:
        qcc = phi * (1.0 + phi) * (n / c) * (d - 2.0 * phi * x) / (d * d * d) * x_c - qc / c
    big_a = a + free_b * qc
    jpm, jx = K.net_flux(t, c, cer, p, codes, offsets, wt, wv)
    g = koff * (r * free_b - b)
    dc = (jpm + jx - (1.0 - q) * g) / big_a
    n_c = pm_c + x_c_er + qc * g - (1.0 - q) * db_c
    n_b = -(1.0 - q) * db_b
    return (
        (n_c - dc * free_b * qcc) / big_a, (pm_e + x_e) / big_a, (n_b + dc * qc) / big_a,
        -x_c_er / cap, -x_e / cap, 0.0,
        db_c, 0.0, db_b,
    )  # fmt: skip


@njit(cache=True, fastmath=False)
def _solve3(
    m00: float, m01: float, m02: float,
    m10: float, m11: float, m12: float,
    m20: float, m21: float, m22: float,
    r0: float, r1: float, r2: float,
) -> tuple[float, float, float]:  # fmt: skip
    """Solve the 3×3 system M·x = r by Cramer's rule (M is near the identity here)."""
    c00 = m11 * m22 - m12 * m21
    c01 = m12 * m20 - m10 * m22
    c02 = m10 * m21 - m11 * m20
    det = m00 * c00 + m01 * c01 + m02 * c02
    if det == 0.0:  # singular in floating point: no solution (NaN, not a ZeroDivisionError)
        return math.nan, math.nan, math.nan
    x0 = (r0 * c00 + m01 * (r2 * m12 - r1 * m22) + m02 * (r1 * m21 - r2 * m11)) / det
    x1 = (m00 * (r1 * m22 - r2 * m12) + r0 * c01 + m02 * (r2 * m10 - r1 * m20)) / det
    x2 = (m00 * (r2 * m11 - r1 * m21) + m01 * (r1 * m20 - r2 * m10) + r0 * c02) / det
    return x0, x1, x2


@njit(cache=True, fastmath=False)
def _stage(
    t: float,
    hg: float,
    zc: float,
    ze: float,
    zb: float,
    gc: float,
    ge: float,
    gb: float,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    scratch: np.ndarray,
) -> tuple[float, float, float, float, float, float]:
    """Solve Y = z + hγ·f(t, Y) by Newton from the guess g: (Y, f(t, Y)).

    The iterates are kept where the state is physical: a step that would take
    c or c_ER below 0, or the bound indicator outside [0, B_T], is shortened to
    go half-way to that bound instead (a stiff binding step from a poor guess otherwise
    overshoots, and the Newton matrix I − hγJ, dominated by the binding term's
    rank-one Jacobian, loses the identity to rounding). A solve that does not
    reach a finite state gives NaN, which the fit reads as a rejected point.
    """
    bt = p[K.G_BT]
    yc, ye, yb = gc, ge, gb
    fc, fe, fb = K.rhs(t, yc, ye, yb, p, codes, offsets, wt, wv, has_er, True)
    j = _kinetic_jac(t, yc, ye, yb, p, codes, offsets, wt, wv, has_er, scratch)
    for it in range(_NEWTON_MAX):
        if it > 0 and it % 4 == 0:  # chord steps on the guess's Jacobian, renewed if slow
            j = _kinetic_jac(t, yc, ye, yb, p, codes, offsets, wt, wv, has_er, scratch)
        dc, de, dbb = _solve3(
            1.0 - hg * j[0], -hg * j[1], -hg * j[2],
            -hg * j[3], 1.0 - hg * j[4], -hg * j[5],
            -hg * j[6], -hg * j[7], 1.0 - hg * j[8],
            zc + hg * fc - yc, ze + hg * fe - ye, zb + hg * fb - yb,
        )  # fmt: skip
        if not (math.isfinite(dc) and math.isfinite(de) and math.isfinite(dbb)):
            return math.nan, math.nan, math.nan, math.nan, math.nan, math.nan
        # the longest part of the step that goes at most half-way to a bound (the same
        # fraction of every component, so that the step keeps the linear invariants,
        # such as total calcium while only binding moves)
        lam = 1.0
        if yc + dc < 0.0:
            lam = min(lam, 0.5 * yc / -dc)
        if ye + de < 0.0:
            lam = min(lam, 0.5 * ye / -de)
        if yb + dbb < 0.0:
            lam = min(lam, 0.5 * yb / -dbb)
        elif yb + dbb > bt:
            lam = min(lam, 0.5 * (bt - yb) / dbb)
        dc, de, dbb = lam * dc, lam * de, lam * dbb
        yc += dc
        ye += de
        yb += dbb
        fc, fe, fb = K.rhs(t, yc, ye, yb, p, codes, offsets, wt, wv, has_er, True)
        if (
            abs(dc) <= _NEWTON_TOL * abs(yc) + 1e-300
            and abs(de) <= _NEWTON_TOL * abs(ye) + 1e-300
            and abs(dbb) <= _NEWTON_TOL * abs(yb) + 1e-300
        ):
            break
    return yc, ye, yb, fc, fe, fb


@njit(cache=True, fastmath=False)
def sdirk_step(
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
    scratch: np.ndarray,
) -> tuple[float, float, float, float, float, float, float, float, float]:
    """One step of Alexander's SDIRK3 on the kinetic system: stages Y1, Y2 and y_{n+1} = Y3."""
    hg = h * _SG
    y1c, y1e, y1b, k1c, k1e, k1b = _stage(
        t + _SG * h, hg, c, cer, b, c, cer, b, p, codes, offsets, wt, wv, has_er, scratch
    )
    z2c = c + h * _SA21 * k1c
    z2e = cer + h * _SA21 * k1e
    z2b = b + h * _SA21 * k1b
    y2c, y2e, y2b, k2c, k2e, k2b = _stage(
        t + _SC2 * h, hg, z2c, z2e, z2b, y1c, y1e, y1b, p, codes, offsets, wt, wv, has_er,
        scratch,
    )  # fmt: skip
    z3c = c + h * (_SB1 * k1c + _SB2 * k2c)
    z3e = cer + h * (_SB1 * k1e + _SB2 * k2e)
    z3b = b + h * (_SB1 * k1b + _SB2 * k2b)
    y3c, y3e, y3b, _, _, _ = _stage(
        t + h, hg, z3c, z3e, z3b, y2c, y2e, y2b, p, codes, offsets, wt, wv, has_er, scratch
    )
    return y1c, y1e, y1b, y2c, y2e, y2b, y3c, y3e, y3b


@njit(cache=True, fastmath=False)
def _stage_vjp(
    t: float,
    hg: float,
    yc: float,
    ye: float,
    yb: float,
    dc: float,
    de: float,
    db: float,
    kc: float,
    ke: float,
    kb: float,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    pbar: np.ndarray,
    need_n: bool,
    scratch: np.ndarray,
) -> tuple[float, float, float]:
    """Cotangent λ of a stage's z from its Y, Y = z + hγ·f(Y), given the cotangents on Y.

    ``d`` is the cotangent on Y itself and ``k`` that on K = f(Y) (from later
    stages). λ solves (I − hγ·Jᵀ) λ = d + Jᵀ k; f's parameter pull-back with
    k + hγ·λ goes into ``pbar``.
    """
    j = _kinetic_jac(t, yc, ye, yb, p, codes, offsets, wt, wv, has_er, scratch)
    r0 = dc + j[0] * kc + j[3] * ke + j[6] * kb
    r1 = de + j[1] * kc + j[4] * ke + j[7] * kb
    r2 = db + j[2] * kc + j[5] * ke + j[8] * kb
    lc, le, lb = _solve3(
        1.0 - hg * j[0], -hg * j[3], -hg * j[6],
        -hg * j[1], 1.0 - hg * j[4], -hg * j[7],
        -hg * j[2], -hg * j[5], 1.0 - hg * j[8],
        r0, r1, r2,
    )  # fmt: skip
    kinetic_pull(
        t, yc, ye, yb, p, codes, offsets, wt, wv, has_er,
        kc + hg * lc, ke + hg * le, kb + hg * lb, pbar, need_n,
    )  # fmt: skip
    return lc, le, lb


@njit(cache=True, fastmath=False)
def sdirk_step_vjp(
    t: float,
    h: float,
    y1: tuple[float, float, float],
    y2: tuple[float, float, float],
    y3: tuple[float, float, float],
    lc: float,
    le: float,
    lb: float,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    pbar: np.ndarray,
    need_n: bool,
    scratch: np.ndarray,
) -> tuple[float, float, float]:
    """Cotangent of the state before one :func:`sdirk_step` from the one after it."""
    hg = h * _SG
    # stage 3: Y3 = y_{n+1}; z3 = y + h(b1 K1 + b2 K2)
    l3c, l3e, l3b = _stage_vjp(
        t + h, hg, y3[0], y3[1], y3[2], lc, le, lb, 0.0, 0.0, 0.0, p, codes, offsets, wt, wv,
        has_er, pbar, need_n, scratch,
    )  # fmt: skip
    # stage 2: K2 used by z3; z2 = y + h a21 K1
    l2c, l2e, l2b = _stage_vjp(
        t + _SC2 * h, hg, y2[0], y2[1], y2[2], 0.0, 0.0, 0.0,
        h * _SB2 * l3c, h * _SB2 * l3e, h * _SB2 * l3b,
        p, codes, offsets, wt, wv, has_er, pbar, need_n, scratch,
    )  # fmt: skip
    l1c, l1e, l1b = _stage_vjp(
        t + _SG * h, hg, y1[0], y1[1], y1[2], 0.0, 0.0, 0.0,
        h * (_SB1 * l3c + _SA21 * l2c), h * (_SB1 * l3e + _SA21 * l2e),
        h * (_SB1 * l3b + _SA21 * l2b),
        p, codes, offsets, wt, wv, has_er, pbar, need_n, scratch,
    )  # fmt: skip
    return l1c + l2c + l3c, l1e + l2e + l3e, l1b + l2b + l3b


@njit(cache=True, fastmath=False)
def kinetic_rk4_step(
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
) -> tuple[float, float, float, float, float, float, float, float, float]:
    """:func:`K.rk4_step` of the kinetic system, with its second and third stage states.

    Returns the stage states y2 and y3 (what :func:`kinetic_rk4_step_vjp`
    replays from) and the state after the step, in that order.
    """
    hh = 0.5 * h
    k1c, k1e, k1b = K.rhs(t, c, cer, b, p, codes, offsets, wt, wv, has_er, True)
    y2c, y2e, y2b = c + hh * k1c, cer + hh * k1e, b + hh * k1b
    k2c, k2e, k2b = K.rhs(t + hh, y2c, y2e, y2b, p, codes, offsets, wt, wv, has_er, True)
    y3c, y3e, y3b = c + hh * k2c, cer + hh * k2e, b + hh * k2b
    k3c, k3e, k3b = K.rhs(t + hh, y3c, y3e, y3b, p, codes, offsets, wt, wv, has_er, True)
    k4c, k4e, k4b = K.rhs(
        t + h, c + h * k3c, cer + h * k3e, b + h * k3b, p, codes, offsets, wt, wv, has_er, True
    )
    w = h / 6.0
    return (
        y2c, y2e, y2b, y3c, y3e, y3b,
        c + w * (k1c + 2.0 * k2c + 2.0 * k3c + k4c),
        cer + w * (k1e + 2.0 * k2e + 2.0 * k3e + k4e),
        b + w * (k1b + 2.0 * k2b + 2.0 * k3b + k4b),
    )  # fmt: skip


@njit(cache=True, fastmath=False)
def kinetic_rk4_step_vjp(
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
    y2: tuple[float, float, float],
    y3: tuple[float, float, float],
    lc: float,
    le: float,
    lb: float,
    pbar: np.ndarray,
    need_n: bool,
) -> tuple[float, float, float]:
    """Cotangent of the state before one RK4 step of the kinetic system from the one after it.

    The step is :func:`kinetic_rk4_step`; ``y2`` and ``y3`` are its recorded
    stage states (the fourth is replayed from the third) and each stage's
    right-hand side is pulled back by :func:`kinetic_pull`.
    """
    hh = 0.5 * h
    y2c, y2e, y2b = y2
    y3c, y3e, y3b = y3
    k3c, k3e, k3b = K.rhs(t + hh, y3c, y3e, y3b, p, codes, offsets, wt, wv, has_er, True)
    y4c, y4e, y4b = c + h * k3c, cer + h * k3e, b + h * k3b
    w = h / 6.0
    # y_{n+1} = y + w·(k1 + 2·k2 + 2·k3 + k4): cotangents of the stage derivatives
    a4c, a4e, a4b = kinetic_pull(
        t + h, y4c, y4e, y4b, p, codes, offsets, wt, wv, has_er, w * lc, w * le, w * lb,
        pbar, need_n,
    )  # fmt: skip
    a3c, a3e, a3b = kinetic_pull(
        t + hh, y3c, y3e, y3b, p, codes, offsets, wt, wv, has_er,
        2.0 * w * lc + h * a4c, 2.0 * w * le + h * a4e, 2.0 * w * lb + h * a4b, pbar, need_n,
    )  # fmt: skip
    a2c, a2e, a2b = kinetic_pull(
        t + hh, y2c, y2e, y2b, p, codes, offsets, wt, wv, has_er,
        2.0 * w * lc + hh * a3c, 2.0 * w * le + hh * a3e, 2.0 * w * lb + hh * a3b, pbar, need_n,
    )  # fmt: skip
    a1c, a1e, a1b = kinetic_pull(
        t, c, cer, b, p, codes, offsets, wt, wv, has_er,
        w * lc + hh * a2c, w * le + hh * a2e, w * lb + hh * a2b, pbar, need_n,
    )  # fmt: skip
    return (
        lc + a1c + a2c + a3c + a4c, le + a1e + a2e + a3e + a4e, lb + a1b + a2b + a3b + a4b
    )  # fmt: skip


@njit(cache=True, fastmath=False)
def kinetic_run(
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
    c0: float,
    cer0: float,
    b0: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Replay a schedule with a kinetic indicator: SDIRK steps (``K.S_STEP``) or RK4 (``K.S_RK4``).

    Each event k adds ``p[ev_slot]·ev_w[k]`` µM to total cytosolic Ca, all of
    it to the rapid buffers (``Δc = Δ/(1 + κ_S)``); the indicator binds it over
    the following steps.

    Returns
    -------
    c_out, er_out, b_out : numpy.ndarray
        Free cytosolic Ca, free ER Ca, bound indicator (µM) at the outputs.
    rec : numpy.ndarray, shape (n_entries, 9)
        The state before each entry (columns 0–2) and, for a step, its first
        two stages (SDIRK) or its second and third (RK4) in columns 3–8: what
        :func:`kinetic_backward` replays.
    """
    c_out = np.empty(n_out)
    er_out = np.empty(n_out)
    b_out = np.empty(n_out)
    rec = np.zeros((op.size, 9))
    scratch = np.zeros(p.size)
    amp = p[ev_slot] if ev_slot >= 0 else 0.0
    c, cer, b = c0, cer0, b0
    for m in range(op.size):
        rec[m, 0] = c
        rec[m, 1] = cer
        rec[m, 2] = b
        if op[m] == K.S_STEP:
            s = sdirk_step(tt[m], hh[m], c, cer, b, p, codes, offsets, wt, wv, has_er, scratch)
            for q in range(6):
                rec[m, 3 + q] = s[q]
            c, cer, b = s[6], s[7], s[8]
        elif op[m] == K.S_RK4:
            s = kinetic_rk4_step(tt[m], hh[m], c, cer, b, p, codes, offsets, wt, wv, has_er)
            for q in range(6):
                rec[m, 3 + q] = s[q]
            c, cer, b = s[6], s[7], s[8]
        elif op[m] == K.S_JUMP:
            c = K.kinetic_jump(c, b, amp * ev_w[arg[m]], p)
        else:
            c_out[arg[m]] = c
            er_out[arg[m]] = cer
            b_out[arg[m]] = b
    return c_out, er_out, b_out, rec


@njit(cache=True, fastmath=False)
def kinetic_backward(
    op: np.ndarray,
    arg: np.ndarray,
    tt: np.ndarray,
    hh: np.ndarray,
    rec: np.ndarray,
    ev_w: np.ndarray,
    ev_slot: int,
    p: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    gc: np.ndarray,
    gb: np.ndarray,
    need_n: bool,
) -> tuple[np.ndarray, float, float, float]:
    """Pull output cotangents (on c and b) back through a :func:`kinetic_run`: (p̄, c̄0, ē0, b̄0)."""
    pbar = np.zeros(p.size)
    scratch = np.zeros(p.size)
    amp = p[ev_slot] if ev_slot >= 0 else 0.0
    lc, le, lb = 0.0, 0.0, 0.0
    n = op.size
    for m in range(n - 1, -1, -1):
        if op[m] == K.S_OUT:
            lc += gc[arg[m]]
            lb += gb[arg[m]]
        elif op[m] == K.S_STEP:
            after = (rec[m + 1, 0], rec[m + 1, 1], rec[m + 1, 2])
            lc, le, lb = sdirk_step_vjp(
                tt[m], hh[m], (rec[m, 3], rec[m, 4], rec[m, 5]),
                (rec[m, 6], rec[m, 7], rec[m, 8]), after, lc, le, lb,
                p, codes, offsets, wt, wv, has_er, pbar, need_n, scratch,
            )  # fmt: skip
        elif op[m] == K.S_RK4:
            lc, le, lb = kinetic_rk4_step_vjp(
                tt[m], hh[m], rec[m, 0], rec[m, 1], rec[m, 2], p, codes, offsets, wt, wv,
                has_er, (rec[m, 3], rec[m, 4], rec[m, 5]), (rec[m, 6], rec[m, 7], rec[m, 8]),
                lc, le, lb, pbar, need_n,
            )  # fmt: skip
        else:  # a jump: c+ from the next entry (a schedule never ends on one)
            w = ev_w[arg[m]]
            c_after = rec[m + 1, 0] if m + 1 < n else K.kinetic_jump(
                rec[m, 0], rec[m, 2], amp * w, p
            )  # fmt: skip
            lc, lb = _jump_vjp(rec[m, 0], c_after, rec[m, 2], w, ev_slot, p, lc, lb, pbar)
    return pbar, lc, le, lb


@njit(cache=True, fastmath=False)
def _dim_parts(c: float, p: np.ndarray) -> tuple[float, float, float, float, float]:
    """The dim bound fraction q (:func:`K.dim_bound_fraction`), dq/dc and dq/d(K_d, n, φ)."""
    q, q_c = K.dim_bound_fraction(c, p)
    if c <= 0.0:
        return q, q_c, 0.0, 0.0, 0.0
    kd, n, phi = p[K.G_KD], p[K.G_HILL], p[K.G_PHI]
    x = K.hill_ratio(c, kd, n)
    d = 1.0 + phi + phi * x
    q_x = phi * (1.0 + phi) / (d * d)
    return q, q_c, -q_x * n * x / kd, q_x * x * math.log(c / kd), x / (d * d)


@njit(cache=True, fastmath=False)
def _jump_vjp(
    c_before: float,
    c_after: float,
    b: float,
    w: float,
    ev_slot: int,
    p: np.ndarray,
    lc: float,
    lb: float,
    pbar: np.ndarray,
) -> tuple[float, float]:
    """Pull (c̄+, b̄) back through a calcium jump: (c̄−, b̄), adding to ``pbar``.

    The jump solves ``G = (1 + κ_S)(c+ − c−) + (B_T − b)(q(c+) − q(c−)) − Δ = 0``
    (``Δ = amp·w``; one-step binding, q = 0: ``c+ = c− + Δ/(1 + κ_S)``); by the
    implicit-function theorem each input z pulls ``−c̄+·G_z/G_{c+}``.
    """
    a = 1.0 + p[K.G_KAPPA_S]
    free_b = p[K.G_BT] - b
    q1, q1_c, q1_k, q1_n, q1_p = _dim_parts(c_after, p)
    q0, q0_c, q0_k, q0_n, q0_p = _dim_parts(c_before, p)
    mu = lc / (a + free_b * q1_c)
    dq = q1 - q0
    pbar[K.G_KAPPA_S] += -mu * (c_after - c_before)
    pbar[K.G_BT] += -mu * dq
    pbar[K.G_KD] += -mu * free_b * (q1_k - q0_k)
    pbar[K.G_HILL] += -mu * free_b * (q1_n - q0_n)
    pbar[K.G_PHI] += -mu * free_b * (q1_p - q0_p)
    if ev_slot >= 0:
        pbar[ev_slot] += mu * w
    return mu * (a + free_b * q0_c), lb + mu * dq


@njit(cache=True, fastmath=False)
def kinetic_dff_forward_tape(
    p_raw: np.ndarray,
    op: np.ndarray,
    arg: np.ndarray,
    tt: np.ndarray,
    hh: np.ndarray,
    ev_w: np.ndarray,
    ev_slot: int,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    pm_slot: int,
    er_slot: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ΔF/F and free Ca at the outputs with a kinetic indicator, and the solve's record.

    ΔF/F follows the bright bound indicator: ``F/F_min = 1 + (R_f − 1)·(1 + φ)·b/B_T``
    (φ the switch ratio; the bright state holds at most ``B_T/(1 + φ)``),
    relative to rest (indicator in equilibrium with the resting calcium).
    Returns ΔF/F, free Ca, the bound indicator at the outputs and the flat
    record for :func:`kinetic_dff_vjp_tape`.
    """
    p = balance_leaks(p_raw, codes, offsets, pm_slot, er_slot, has_er)
    kd, n, rf, bt = p[K.G_KD], p[K.G_HILL], p[K.G_RF], p[K.G_BT]
    span = 1.0 + p[K.G_PHI]
    cer0 = p[K.G_CER_REST] if has_er else 0.0
    h0 = K.hill_frac(p[K.G_C_REST], kd, n)
    # counted as an array sum: a counter started at the literal 0 would make numba
    # compile the solver once more for that intermediate literal type
    n_out = np.sum(op == K.S_OUT)
    c, _, b, rec = kinetic_run(
        op, arg, tt, hh, n_out, ev_w, ev_slot, p, codes, offsets, wt, wv, has_er,
        p[K.G_C_REST], cer0, bt * h0 / span,
    )  # fmt: skip
    f0 = 1.0 + (rf - 1.0) * h0
    dff = np.empty(c.size)
    for i in range(c.size):
        dff[i] = (1.0 + (rf - 1.0) * span * b[i] / bt) / f0 - 1.0
    return dff, c, b, rec.reshape(-1)


@njit(cache=True, fastmath=False)
def kinetic_dff_vjp_tape(
    p_raw: np.ndarray,
    op: np.ndarray,
    arg: np.ndarray,
    tt: np.ndarray,
    hh: np.ndarray,
    ev_w: np.ndarray,
    ev_slot: int,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    pm_slot: int,
    er_slot: int,
    c: np.ndarray,
    b: np.ndarray,
    rec: np.ndarray,
    g_dff: np.ndarray,
    g_c: np.ndarray,
    need_n: bool,
) -> np.ndarray:
    """Cotangent of ``p_raw`` from cotangents of (ΔF/F, free Ca), given the forward record."""
    p = balance_leaks(p_raw, codes, offsets, pm_slot, er_slot, has_er)
    c_rest = p[K.G_C_REST]
    kd, n, rf, bt = p[K.G_KD], p[K.G_HILL], p[K.G_RF], p[K.G_BT]
    span = 1.0 + p[K.G_PHI]
    h0, dh0_c, dh0_k, dh0_n = _hill_d(c_rest, kd, n)
    f0 = 1.0 + (rf - 1.0) * h0
    gb = np.empty(b.size)
    s_f = 0.0  # Σ g·F/F_min (for F0)
    s_occ = 0.0  # Σ g·(1 + φ)·b/B_T
    for i in range(b.size):
        g = g_dff[i]
        occ = span * b[i] / bt
        gb[i] = g * (rf - 1.0) * span / (bt * f0)
        s_f += g * (1.0 + (rf - 1.0) * occ)
        s_occ += g * occ
    pbar, c0bar, cer0bar, b0bar = kinetic_backward(
        op, arg, tt, hh, rec.reshape((op.size, 9)), ev_w, ev_slot, p, codes, offsets, wt, wv,
        has_er, g_c, gb, need_n,
    )  # fmt: skip
    # ΔF/F = (1 + (R_f − 1)·(1 + φ)·b/B_T)/F0 − 1, F0 = 1 + (R_f − 1)·h0
    h0bar = -s_f * (rf - 1.0) / (f0 * f0)
    pbar[K.G_RF] += s_occ / f0 - s_f * h0 / (f0 * f0)
    pbar[K.G_BT] += -(rf - 1.0) * s_occ / (bt * f0)
    pbar[K.G_PHI] += (rf - 1.0) * s_occ / (span * f0)
    # initial state: c0 = c_rest, b0 = B_T·h0/(1 + φ)
    h0bar += b0bar * bt / span
    pbar[K.G_BT] += b0bar * h0 / span
    pbar[K.G_PHI] += -b0bar * bt * h0 / (span * span)
    pbar[K.G_C_REST] += c0bar + h0bar * dh0_c
    pbar[K.G_KD] += h0bar * dh0_k
    pbar[K.G_HILL] += h0bar * dh0_n
    if has_er:
        pbar[K.G_CER_REST] += cer0bar
    balance_vjp(p, codes, offsets, pm_slot, er_slot, has_er, pbar)
    return pbar


@njit(cache=True, fastmath=False)
def kinetic_dff_forward(
    p_raw: np.ndarray,
    time: np.ndarray,
    ev_t: np.ndarray,
    ev_w: np.ndarray,
    ev_slot: int,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    h_max: np.ndarray,
    pm_slot: int,
    er_slot: int,
) -> tuple[np.ndarray, np.ndarray]:
    """ΔF/F and free Ca (µM) at ``time`` with a kinetic indicator (as :func:`dff_forward`)."""
    op, arg, tt, hh = kinetic_schedule(time, ev_t, h_max)
    dff, c, _, _ = kinetic_dff_forward_tape(
        p_raw, op, arg, tt, hh, ev_w, ev_slot, codes, offsets, wt, wv, has_er, pm_slot, er_slot
    )
    return dff, c


@njit(cache=True, fastmath=False)
def kinetic_dff_vjp(
    p_raw: np.ndarray,
    time: np.ndarray,
    ev_t: np.ndarray,
    ev_w: np.ndarray,
    ev_slot: int,
    codes: np.ndarray,
    offsets: np.ndarray,
    wt: np.ndarray,
    wv: np.ndarray,
    has_er: bool,
    h_max: np.ndarray,
    pm_slot: int,
    er_slot: int,
    g_dff: np.ndarray,
    g_c: np.ndarray,
) -> np.ndarray:
    """Cotangent of ``p_raw`` from cotangents of :func:`kinetic_dff_forward`'s ΔF/F and Ca."""
    op, arg, tt, hh = kinetic_schedule(time, ev_t, h_max)
    _, c, b, rec = kinetic_dff_forward_tape(
        p_raw, op, arg, tt, hh, ev_w, ev_slot, codes, offsets, wt, wv, has_er, pm_slot, er_slot
    )
    return kinetic_dff_vjp_tape(
        p_raw, op, arg, tt, hh, ev_w, ev_slot, codes, offsets, wt, wv, has_er, pm_slot,
        er_slot, c, b, rec, g_dff, g_c, True,
    )  # fmt: skip
