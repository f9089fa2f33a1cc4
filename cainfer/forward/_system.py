"""A cell's whole ODE system as expressions, compiled into an RK4 solve and its adjoint.

The kernels in :mod:`cainfer.forward._kernels` and ``_adjoint`` carry a fixed
state, free cytosolic and ER calcium (and a kinetic indicator's bound state),
in scalars. A term with a state of its own (a channel's gating variable,
calcium in a third compartment) needs a state vector whose length the model
decides. This module takes the system as SymPy expressions, the time
derivative of each state as a function of the states, the packed parameter
vector and one input (a stimulus waveform, e.g. IP3), and prints numba source
for:

- ``rhs(t, y, p, wt, wv, out)``: the derivatives, straight-line code with
  common subexpressions shared;
- ``rhs_vjp(t, y, p, wt, wv, v, ybar, pbar)``: ``vᵀ·∂f/∂y`` into ``ybar`` and
  ``vᵀ·∂f/∂p`` added to ``pbar``, differentiated symbolically;
- ``run`` and ``backward``: the fixed-step RK4 solve over a schedule of
  :mod:`cainfer.forward._kernels` (steps, event jumps, outputs) that records the
  state before every entry, and its discrete adjoint, which replays the record
  backwards: the exact derivative of the discrete solution, as in
  :mod:`cainfer.forward._adjoint`.

An event adds calcium to the cytosol at once: the first state (free cytosolic
calcium) jumps so that total calcium (free, endogenous buffer ``κ_S·c``, and
the indicator in equilibrium) rises by the event's amplitude times its weight,
the jump of the hand-written kernels.

The printed module is compiled once per system and cached under
``<cache>/systems/`` like the specialised kernels.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from cainfer.forward import _codegen
from cainfer.forward import _kernels as K
from cainfer.forward._cache import cache_dir, kernel_sources_stamp

_FORMAT = 1  # bump when the printed text changes
_LOCK = threading.Lock()
_LOADED: dict[str, ModuleType] = {}


@dataclass(frozen=True)
class System:
    """An ODE system ``dy/dt = f(y, p, u(t))`` as SymPy expressions.

    Attributes
    ----------
    states : tuple of sympy.Symbol
        The state variables, free cytosolic calcium (µM) first.
    rhs : tuple of sympy.Expr
        ``dy_i/dt`` for each state, in the states' units per second.
    parameters : dict
        Each parameter symbol the expressions use, to its slot in the packed
        parameter vector.
    input : sympy.Symbol or None
        The stimulus waveform's value at ``t`` (linear interpolation of the
        model's waveform), if the expressions use it.
    hill_slots : tuple of int
        Slots whose partials the adjoint may skip (``need_n`` False).
    buffered : bool
        The first derivative is the net flux into the cytosol (µM/s), which
        the rapid buffers share: ``dc/dt = rhs[0]/β(c)``, β the buffer
        capacity of the endogenous buffer (κ_S) and the indicator in
        equilibrium (:func:`cainfer.forward._kernels.buffer_capacity`, its
        parameters at their global slots).
    rest : tuple of sympy.Expr
        The states at rest as expressions of the parameters (empty: no
        ``rest``/``dff_*`` functions are printed).
    leaks : tuple of (int, sympy.Expr, sympy.Expr)
        Slots set by flux balance at rest: ``(slot, value, guard)``, the
        slot's value as an expression of the other parameters; the balance
        is impossible (NaN) where the value is negative or the guard is not
        positive.
    implicit : tuple of (sympy.Symbol, sympy.Expr)
        States whose resting value solves an equation: ``(state, g)`` with
        ``g(state, parameters) = 0`` at rest, ``g`` negative at 0 and rising
        (the mitochondrial matrix: uptake = release). ``rest`` may use these
        states' symbols for their resting values.
    """

    states: tuple[Any, ...]
    rhs: tuple[Any, ...]
    parameters: dict[Any, int]
    input: Any = None
    hill_slots: tuple[int, ...] = ()
    buffered: bool = False
    rest: tuple[Any, ...] = ()
    leaks: tuple[tuple[int, Any, Any], ...] = ()
    implicit: tuple[tuple[Any, Any], ...] = ()

    def __post_init__(self) -> None:
        if len(self.states) != len(self.rhs) or not self.states:
            raise ValueError(f"{len(self.states)} states but {len(self.rhs)} derivatives")
        known = {*self.states, *self.parameters}
        if self.input is not None:
            known.add(self.input)
        if self.rest and len(self.rest) != len(self.states):
            raise ValueError(f"{len(self.states)} states but {len(self.rest)} resting values")
        roots = {z for z, _ in self.implicit}
        for z, g in self.implicit:
            if z not in self.states or g.free_symbols - set(self.parameters) - {z}:
                raise ValueError(f"the equation of {z}'s resting value uses other states")
        for e in (*self.rest, *(x for _, v, g in self.leaks for x in (v, g))):
            stray = e.free_symbols - set(self.parameters) - roots
            if stray:
                raise ValueError(f"a resting value uses {sorted(map(str, stray))}: not parameters")
        for i, e in enumerate(self.rhs):
            stray = e.free_symbols - known
            if stray:
                raise ValueError(
                    f"d{self.states[i]}/dt uses {sorted(map(str, stray))}, which are neither "
                    "states, parameters nor the input"
                )


def source(system: System) -> str:
    """The numba module text of a system's ``rhs``, ``rhs_vjp``, ``run`` and ``backward``."""
    import sympy as sp

    n = len(system.states)
    pows = _codegen._Powers(sp)
    f = [pows.atomize(sp.sympify(e)) for e in system.rhs]
    ysyms = [sp.Symbol(f"y{i}") for i in range(n)]
    psubs = {s: sp.Symbol(f"p{slot}") for s, slot in system.parameters.items()}
    subs = {**dict(zip(system.states, ysyms, strict=True)), **psubs}
    if system.input is not None:
        subs[system.input] = sp.Symbol("u")
    v = [sp.Symbol(f"v{i}") for i in range(n)]
    s = sum((vi * fi for vi, fi in zip(v, f, strict=True)), sp.S.Zero)
    d_y = [pows.diff(s, y) for y in system.states]
    slots = sorted(system.parameters.items(), key=lambda kv: kv[1])
    core = [(sym, slot) for sym, slot in slots if slot not in system.hill_slots]
    hill = [(sym, slot) for sym, slot in slots if slot in system.hill_slots]
    d_core = [pows.diff(s, sym) for sym, _ in core]
    d_hill = [pows.diff(s, sym) for sym, _ in hill]
    printer = _codegen._printer()

    def show(e: Any) -> str:
        return _codegen._print(printer, e.xreplace(subs), "system")

    def lines(exprs: list[Any], targets: list[str]) -> list[str]:
        """``target expr`` for each (``target`` ends in ``=`` or ``+=``), CSE shared."""
        pw = [f"{k} = {show(val)}" for k, val in pows.needed(exprs)]
        reps, reduced = sp.cse([e.xreplace(subs) for e in exprs], symbols=sp.numbered_symbols("t_"))
        body = [f"{k} = {_codegen._print(printer, val, 'system')}" for k, val in reps]
        body += [
            f"{o} {_codegen._print(printer, e, 'system')}"
            for o, e in zip(targets, reduced, strict=True)
        ]
        return pw + body

    used = set().union(*(e.free_symbols for e in f)) | set().union(
        *(e.free_symbols for e in pows.of.values())
    )
    loads = [f"y{i} = y[{i}]" for i in range(n)]
    loads += [f"p{slot} = p[{slot}]" for sym, slot in slots if sym in used]
    if system.input is not None:
        loads.append("u = K.waveform_at(t, wt, wv)")
    vjp_body = loads + [f"v{i} = v[{i}]" for i in range(n)]
    targets = [f"ybar[{i}] =" for i in range(n)] + [f"pbar[{slot}] +=" for _, slot in core]
    if system.buffered:
        beta = "y0, p[K.G_KAPPA_S], p[K.G_BT], p[K.G_KD], p[K.G_HILL]"
        rhs_body = loads + lines(f, ["jc ="] + [f"out[{i}] =" for i in range(1, n)])
        rhs_body.append(f"out[0] = jc / K.buffer_capacity({beta})")
        # the flux's cotangent is v0/β; β's own: −v0·J/β²
        vjp_body += [f"b, db_c, db_bt, db_kd, db_n = A.beta_d({beta}, need_n)", "v0 = v0 / b"]
        vjp_body += lines([f[0], *d_y, *d_core], ["jc =", *targets])
        vjp_body += ["q = -v[0] * jc / (b * b)", "ybar[0] += q * db_c",
                     "pbar[K.G_KAPPA_S] += q", "pbar[K.G_BT] += q * db_bt",
                     "pbar[K.G_KD] += q * db_kd", "pbar[K.G_HILL] += q * db_n"]  # fmt: skip
    else:
        rhs_body = loads + lines(f, [f"out[{i}] =" for i in range(n)])
        vjp_body += lines(d_y + d_core, targets)
    if hill:
        extra = lines(d_hill, [f"pbar[{slot}] +=" for _, slot in hill])
        vjp_body += ["if need_n:"] + ["    " + ln for ln in extra]
    deco = '@njit(cache=True, fastmath=False, inline="always")'
    text = _HEADER + _codegen.HELPERS
    text += _codegen._function(
        deco, "rhs(t: float, y: np.ndarray, p: np.ndarray, wt: np.ndarray, wv: np.ndarray, "
        "out: np.ndarray) -> None", "Time derivatives of the states (generated).", rhs_body,
    )  # fmt: skip
    text += _codegen._function(
        deco, "rhs_vjp(t: float, y: np.ndarray, p: np.ndarray, wt: np.ndarray, wv: np.ndarray, "
        "v: np.ndarray, ybar: np.ndarray, pbar: np.ndarray, need_n: bool) -> None",
        "v·∂f/∂y into ybar, v·∂f/∂p added to pbar (generated).", vjp_body,
    )  # fmt: skip
    text += _DRIVER
    if system.rest:
        text += _rest_source(system, sp, printer)
    return text


def _rest_source(system: System, sp: Any, printer: Any) -> str:
    """``balance``, ``balance_vjp``, ``rest``, ``rest_vjp`` and the ΔF/F solve and adjoint."""
    n = len(system.states)
    psubs = {s: sp.Symbol(f"p{slot}") for s, slot in system.parameters.items()}
    slots = sorted(system.parameters.items(), key=lambda kv: kv[1])

    def show(e: Any) -> str:
        return _codegen._print(printer, e, "system")

    def lines(exprs: list[Any], targets: list[str]) -> list[str]:
        pows = _codegen._Powers(sp)
        exprs = [pows.atomize(sp.sympify(e).xreplace(psubs)) for e in exprs]
        pw = [f"{k} = {show(v)}" for k, v in pows.needed(exprs)]
        reps, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("t_"))
        return (
            pw
            + [f"{k} = {show(v)}" for k, v in reps]
            + [f"{o} {show(e)}" for o, e in zip(targets, reduced, strict=True)]
        )

    def loads(exprs: list[Any], source: str = "p") -> list[str]:
        used = set().union(*(sp.sympify(e).free_symbols for e in exprs)) if exprs else set()
        return [f"p{slot} = {source}[{slot}]" for sym, slot in slots if sym in used]

    def grad(expr: Any) -> tuple[list[Any], list[str]]:
        """Partials of ``expr`` by every parameter it uses, as ``pbar[slot] +=`` targets."""
        syms = [(sym, slot) for sym, slot in slots if expr.has(sym)]
        return [sp.diff(expr, sym) for sym, _ in syms], [f"pbar[{slot}] +=" for _, slot in syms]

    values = [v for _, v, _ in system.leaks]
    guards = [g for _, _, g in system.leaks]
    bal = ["p = p_raw.copy()", *loads(values + guards, "p_raw")]
    bal += lines(values + guards, [f"v{i} =" for i in range(len(values))]
                 + [f"ok{i} =" for i in range(len(values))])  # fmt: skip
    for i, (slot, _, _) in enumerate(system.leaks):
        bal.append(f"p[{slot}] = v{i} if (v{i} >= 0.0 and ok{i} > 0.0) else np.nan")
    bal.append("return p")
    lam = [sp.Symbol(f"l{i}") for i in range(len(values))]
    pull = sum((li * v for li, v in zip(lam, values, strict=True)), sp.S.Zero)
    bvjp = [f"l{i} = pbar[{slot}]" for i, (slot, _, _) in enumerate(system.leaks)]
    bvjp += [f"pbar[{slot}] = 0.0" for slot, _, _ in system.leaks]
    if values:
        exprs, targets = grad(pull)
        bvjp += loads(values) + lines(exprs, targets)
    deco = "@njit(cache=True, fastmath=False)"
    text = f"\n\nNS = {n}  # states\n"
    zs = [sp.Symbol(f"z{k}") for k in range(len(system.implicit))]
    zsub = {z: zk for (z, _), zk in zip(system.implicit, zs, strict=True)}
    rest = [sp.sympify(e).xreplace(zsub) for e in system.rest]
    for k, (_, g) in enumerate(system.implicit):
        g = g.xreplace(zsub)
        body = loads([g]) + lines([g, sp.diff(g, zs[k])], ["g =", "dg ="]) + ["return g, dg"]
        text += _codegen._function(
            deco, f"_g{k}(z{k}: float, p: np.ndarray) -> tuple[float, float]",
            f"The equation of {system.implicit[k][0]}'s resting value and its slope (generated).",
            body,
        )  # fmt: skip
        text += _ROOT.format(k=k, z=system.implicit[k][0])
    rst = ["y = np.empty(NS)", *loads(rest)]
    rst += [f"z{k} = _root{k}(p)" for k in range(len(zs))]
    rst += [*lines(rest, [f"y[{i}] =" for i in range(n)]), "return y"]
    ybar = [sp.Symbol(f"yb{i}") for i in range(n)]
    pull = sum((yb * e for yb, e in zip(ybar, rest, strict=True)), sp.S.Zero)
    rvjp = [f"yb{i} = y0bar[{i}]" for i in range(n)] + loads(rest)
    rvjp += [f"z{k} = y0[{system.states.index(z)}]" for k, (z, _) in enumerate(system.implicit)]
    exprs, targets = grad(pull)
    rvjp += lines(exprs + [sp.diff(pull, z) for z in zs], targets + [f"zb{k} =" for k in
                                                                     range(len(zs))])  # fmt: skip
    if zs:  # through g(z, p) = 0: dz/dp = −(∂g/∂p)/(∂g/∂z)
        ws = [sp.Symbol(f"w{k}") for k in range(len(zs))]
        gs = [g.xreplace(zsub) for _, g in system.implicit]
        rvjp += loads(gs)
        rvjp += [f"w{k} = -zb{k} / _g{k}(z{k}, p)[1]" for k in range(len(zs))]
        exprs, targets = grad(sum((w * g for w, g in zip(ws, gs, strict=True)), sp.S.Zero))
        rvjp += lines(exprs, targets)
    text += _codegen._function(
        deco, "balance(p_raw: np.ndarray) -> np.ndarray",
        "A copy of p_raw with the slots flux balance sets (NaN: no balance) (generated).", bal,
    )  # fmt: skip
    text += _codegen._function(
        deco, "balance_vjp(p: np.ndarray, pbar: np.ndarray) -> None",
        "Fold the balanced slots' cotangents into the others (generated).", bvjp,
    )  # fmt: skip
    text += _codegen._function(
        deco, "rest(p: np.ndarray) -> np.ndarray", "The states at rest (generated).", rst,
    )  # fmt: skip
    text += _codegen._function(
        deco, "rest_vjp(p: np.ndarray, y0: np.ndarray, y0bar: np.ndarray, pbar: np.ndarray) "
        "-> None",
        "Pull the cotangent of the resting states back into pbar (generated).", rvjp,
    )  # fmt: skip
    return text + _DFF


# A resting value that solves g(z) = 0, g < 0 at z = 0 and rising: bracketed by
# doubling, then Newton's method kept inside the bracket (bisection when it leaves).
_ROOT = '''

@njit(cache=True, fastmath=False)
def _root{k}(p: np.ndarray) -> float:
    """Resting {z}: the root of _g{k} (NaN if it has none on z ≥ 0) (generated)."""
    lo, hi = 0.0, 1.0
    g, _ = _g{k}(lo, p)
    if not g < 0.0:
        return 0.0 if g == 0.0 else np.nan
    for _ in range(200):
        g, _ = _g{k}(hi, p)
        if g >= 0.0:
            break
        lo, hi = hi, 2.0 * hi
    else:
        return np.nan
    z = 0.5 * (lo + hi)
    for _ in range(200):
        g, dg = _g{k}(z, p)
        if g < 0.0:
            lo = z
        else:
            hi = z
        step = g / dg if dg > 0.0 else np.inf
        nz = z - step
        if not (lo < nz < hi):
            nz = 0.5 * (lo + hi)
        if abs(nz - z) <= 1e-15 * nz or hi - lo <= 1e-15 * hi:
            return nz
        z = nz
    return z
'''


# The ΔF/F solve and its adjoint with the hand-written kernels' signatures
# (cainfer.forward._adjoint.dff_forward_tape, dff_vjp_tape), so the solve Ops run
# a system as they run the kernels: the records are the states before every
# schedule entry and at the outputs, flattened.
_DFF = '''

@njit(cache=True, fastmath=False)
def dff_forward_tape(p_raw, op, arg, tt, hh, ev_w, ev_slot, codes, offsets, wt, wv, has_er,
                     pm_slot, er_slot):
    """ΔF/F and free Ca at the outputs, the states before each entry and at the outputs."""
    p = balance(p_raw)
    y0 = rest(p)
    n_out = np.sum(op == K.S_OUT)
    out, tape = run(op, arg, tt, hh, n_out, ev_w, ev_slot, p, wt, wv, y0)
    c = out[:, 0].copy()
    return A.dff_of(c, p), c, tape.ravel(), out.ravel()


@njit(cache=True, fastmath=False)
def dff_vjp_tape(p_raw, op, arg, tt, hh, ev_w, ev_slot, codes, offsets, wt, wv, has_er,
                 pm_slot, er_slot, c, cc, ee, g_dff, g_c, need_n):
    """Cotangent of p_raw from cotangents of (ΔF/F, free Ca), given the forward record."""
    p = balance(p_raw)
    tape = np.ascontiguousarray(cc).reshape((op.size, NS))
    mapped = np.zeros(p.size)
    gc = A.dff_of_vjp(c, p, g_dff, g_c, mapped)
    g_out = np.zeros((c.size, NS))
    for i in range(c.size):
        g_out[i, 0] = gc[i]
    pbar, y0bar = backward(op, arg, tt, hh, ev_w, ev_slot, p, wt, wv, tape, g_out, need_n)
    for j in range(p.size):
        pbar[j] += mapped[j]
    rest_vjp(p, tape[0], y0bar, pbar)  # the states before the first entry: at rest
    balance_vjp(p, pbar)
    return pbar
'''


_HEADER = '''"""Generated by cainfer (cainfer.forward._system): do not edit."""

import math

import numpy as np
from numba import njit

from cainfer.forward import _adjoint as A
from cainfer.forward import _kernels as K
'''

# The RK4 solve over a schedule and its adjoint, for any number of states. The
# same formulas as K.rk4_step and _adjoint.rk4_step_vjp, over arrays.
_DRIVER = '''

@njit(cache=True, fastmath=False, inline="always")
def _jump(c, delta, p):
    kappa, bt, kd, n = p[K.G_KAPPA_S], p[K.G_BT], p[K.G_KD], p[K.G_HILL]
    return K.free_from_total(K.total_ca(c, kappa, bt, kd, n) + delta, kappa, bt, kd, n)


@njit(cache=True, fastmath=False, inline="always")
def _shift(y, a, k, out):
    """out = y + a·k (an RK4 stage's state)."""
    for i in range(y.size):
        out[i] = y[i] + a * k[i]


@njit(cache=True, fastmath=False)
def run(op, arg, tt, hh, n_out, ev_w, ev_slot, p, wt, wv, y0):
    """States at the outputs ``(n_out, n)`` and before every schedule entry ``(len(op), n)``."""
    ns = y0.size
    y = y0.copy()
    out = np.empty((n_out, ns))
    tape = np.empty((op.size, ns))
    k1 = np.empty(ns)
    k2 = np.empty(ns)
    k3 = np.empty(ns)
    k4 = np.empty(ns)
    z = np.empty(ns)
    amp = p[ev_slot] if ev_slot >= 0 else 0.0
    for m in range(op.size):
        tape[m] = y
        if op[m] == K.S_STEP:
            t, h = tt[m], hh[m]
            rhs(t, y, p, wt, wv, k1)
            _shift(y, 0.5 * h, k1, z)
            rhs(t + 0.5 * h, z, p, wt, wv, k2)
            _shift(y, 0.5 * h, k2, z)
            rhs(t + 0.5 * h, z, p, wt, wv, k3)
            _shift(y, h, k3, z)
            rhs(t + h, z, p, wt, wv, k4)
            for i in range(ns):
                y[i] += h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
        elif op[m] == K.S_JUMP:
            y[0] = _jump(y[0], amp * ev_w[arg[m]], p)
        else:
            out[arg[m]] = y
    return out, tape


@njit(cache=True, fastmath=False)
def backward(op, arg, tt, hh, ev_w, ev_slot, p, wt, wv, tape, g_out, need_n=True):
    """Pull cotangents of the outputs ``(n_out, n)`` back: (p̄, ȳ0)."""
    ns = tape.shape[1]
    pbar = np.zeros(p.size)
    lam = np.zeros(ns)
    y2 = np.empty(ns)
    y3 = np.empty(ns)
    y4 = np.empty(ns)
    k = np.empty(ns)
    g = np.empty(ns)
    b1 = np.empty(ns)
    b2 = np.empty(ns)
    b3 = np.empty(ns)
    b4 = np.empty(ns)
    amp = p[ev_slot] if ev_slot >= 0 else 0.0
    for m in range(op.size - 1, -1, -1):
        if op[m] == K.S_OUT:
            for i in range(ns):
                lam[i] += g_out[arg[m], i]
        elif op[m] == K.S_STEP:
            t, h = tt[m], hh[m]
            y = tape[m]
            # replay the stages
            rhs(t, y, p, wt, wv, k)
            _shift(y, 0.5 * h, k, y2)
            rhs(t + 0.5 * h, y2, p, wt, wv, k)
            _shift(y, 0.5 * h, k, y3)
            rhs(t + 0.5 * h, y3, p, wt, wv, k)
            _shift(y, h, k, y4)
            w = h / 6.0
            for i in range(ns):
                g[i] = w * lam[i]
            rhs_vjp(t + h, y4, p, wt, wv, g, b4, pbar, need_n)
            for i in range(ns):
                g[i] = 2.0 * w * lam[i] + h * b4[i]
            rhs_vjp(t + 0.5 * h, y3, p, wt, wv, g, b3, pbar, need_n)
            for i in range(ns):
                g[i] = 2.0 * w * lam[i] + 0.5 * h * b3[i]
            rhs_vjp(t + 0.5 * h, y2, p, wt, wv, g, b2, pbar, need_n)
            for i in range(ns):
                g[i] = w * lam[i] + 0.5 * h * b2[i]
            rhs_vjp(t, y, p, wt, wv, g, b1, pbar, need_n)
            for i in range(ns):
                lam[i] += b1[i] + b2[i] + b3[i] + b4[i]
        else:  # jump of free calcium: total(c+) = total(c-) + amp w
            lam[0] = A.jump_vjp(tape[m, 0], amp, ev_w[arg[m]], ev_slot, p, lam[0], pbar)
    return pbar, lam
'''


def compiled(system: System | str) -> ModuleType:
    """The compiled module of a system, or of its :func:`source` (cached on disk and in process)."""
    from cainfer.forward._specialize import _import, _write_package

    text = system if isinstance(system, str) else source(system)
    key = hashlib.sha256(f"{_FORMAT}\0{kernel_sources_stamp()}\0{text}".encode()).hexdigest()[:24]
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        root = cache_dir() / "systems"
        pkg = root / f"s_{key}"
        if not (pkg / "_adjoint.py").is_file():  # the system's module, named as kernels are
            _write_package(root, pkg, '"""Generated by cainfer: do not edit."""\n', text)
        mod = _import(pkg, f"_cainfer_system_{key}")
        _LOADED[key] = mod
        return mod


def system_of(model: Any) -> System:
    """The system a cell model's terms make: free cytosolic (and ER) calcium and the gates.

    Each term with a rate contributes its expression (plasma-membrane terms
    to the cytosol's net flux, ER terms to the exchange between cytosol and
    ER), with its gates as states of their own (``dg/dt = (inf − g)/tau``)
    and ``self.waveform`` as the system's input; the leaks their balanced
    rates; a waveform influx its amplitude times the input. Events act
    through jumps, not here. The ER's calcium changes by
    ``−J_x/(v_ER·(1 + κ_ER))``. At rest the gates sit at their steady state
    with the waveform at 0, and the leaks balance the other fluxes there.

    Parameters
    ----------
    model : CellModel
        With the indicator in equilibrium.
    """
    import sympy as sp

    from cainfer.forward._terms import SYSTEM_CODE

    if model.kinetic:
        raise ValueError(
            "a model with gating states is solved for an indicator in equilibrium only; use "
            "indicator_kinetics='equilibrium'"
        )
    c, cer, u, cm = sp.symbols("c cer u c_mito", real=True)
    params: dict[Any, int] = {}
    by_slot: dict[int, Any] = {}

    def par(slot: int, positive: bool = True) -> Any:
        if slot not in by_slot:
            sym = sp.Symbol(f"s{slot}", positive=positive, real=True)
            params[sym] = slot
            by_slot[slot] = sym
        return by_slot[slot]

    jpm: Any = sp.S.Zero
    jx: Any = sp.S.Zero
    jm: Any = sp.S.Zero  # matrix → cytosol
    hill: list[int] = []
    gates: list[Any] = []
    gate_rhs: list[Any] = []
    gate_inf: list[Any] = []
    leak_terms: list[tuple[int, Any, str]] = []  # (slot, symbol, compartment) of a balanced value
    for f, code, o in zip(model.fluxes, model._codes, model._offsets, strict=True):
        o = int(o)
        cls = type(f)
        parts = _codegen.term_expressions(cls)
        sub = {parts.c: c, parts.cer: cer, parts.u: u, parts.cm: cm}
        n_decl = len(cls.declared)
        sub |= {s: par(o + i, positive=i < n_decl) for i, s in enumerate(parts.psyms)}
        sub |= {s: par(_codegen._GLOBALS[g]) for g, s in parts.gsyms.items()}
        leak_terms += [(o + i, sub[parts.psyms[i]], cls.compartment)
                       for i in range(n_decl, len(parts.psyms))]  # fmt: skip
        for g, gs in zip(cls.gates, parts.gate_syms, strict=True):
            sub[gs] = sp.Symbol(f"{f.full_name(g)}", real=True)
            gates.append(sub[gs])
        for g, (inf, tau) in zip(gates[len(gates) - len(parts.gating) :], parts.gating,
                                 strict=True):  # fmt: skip
            gate_inf.append(inf.xreplace(sub))
            gate_rhs.append((inf.xreplace(sub) - g) / tau.xreplace(sub))
        hill += [o + i for i, q in enumerate(cls.declared) if q.role == "hill"]
        assert code == SYSTEM_CODE or not parts.stateful
        if cls.compartment == "pm":
            jpm += parts.rate.xreplace(sub)
        elif cls.compartment == "mito":
            jm += parts.rate.xreplace(sub)
        else:
            jx += parts.rate.xreplace(sub)
    c0 = par(K.G_C_REST)
    at_rest = {c: c0, u: sp.S.Zero}
    states: tuple[Any, ...] = (c,)
    rhs: tuple[Any, ...] = (jpm + jx + jm,)
    rest: tuple[Any, ...] = (c0,)
    if model.has_er:
        cer0 = par(K.G_CER_REST)
        at_rest[cer] = cer0
        states += (cer,)
        rhs += (-jx / (par(K.G_V_ER) * (1 + par(K.G_KAPPA_ER))),)
        rest += (cer0,)
    implicit: tuple[tuple[Any, Any], ...] = ()
    if model.mito is not None:
        slot = model.slots()
        states += (cm,)
        rhs += (-jm / (par(slot["mito_volume"]) * (1 + par(slot["mito_kappa"]))),)
        rest += (cm,)  # where the matrix's fluxes balance at rest
        implicit = ((cm, jm.xreplace(at_rest)),)
        at_rest[cm] = cm
    gate_rest = [e.xreplace(at_rest) for e in gate_inf]
    at_rest |= dict(zip(gates, gate_rest, strict=True))
    states += tuple(gates)
    rhs += tuple(gate_rhs)
    rest += tuple(gate_rest)
    # a balanced value d (a leak's rate) enters its compartment's flux linearly, J = a·d + b:
    # at rest d = −b/a, with a the guard (the kernels' leaks: a = 1 and a = c_ER − c)
    leaks: list[tuple[int, Any, Any]] = []
    no_leaks = {d: sp.S.Zero for _, d, _ in leak_terms}
    for slot, d, where in sorted(leak_terms, key=lambda x: x[2] != "er"):  # the ER's first
        j = {"pm": jpm, "er": jx}[where]
        a = sp.diff(j, d).xreplace(at_rest)
        leaks.append((slot, -j.xreplace(no_leaks).xreplace(at_rest) / a, a))
    used_input = any(e.has(u) for e in rhs)
    return System(
        states, rhs, params, input=u if used_input else None, hill_slots=tuple(hill),
        buffered=True, rest=rest, leaks=tuple(leaks), implicit=implicit,
    )  # fmt: skip
