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
    """

    states: tuple[Any, ...]
    rhs: tuple[Any, ...]
    parameters: dict[Any, int]
    input: Any = None
    hill_slots: tuple[int, ...] = ()
    buffered: bool = False

    def __post_init__(self) -> None:
        if len(self.states) != len(self.rhs) or not self.states:
            raise ValueError(f"{len(self.states)} states but {len(self.rhs)} derivatives")
        known = {*self.states, *self.parameters}
        if self.input is not None:
            known.add(self.input)
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
    return text + _DRIVER


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
            for i in range(ns):
                z[i] = y[i] + 0.5 * h * k1[i]
            rhs(t + 0.5 * h, z, p, wt, wv, k2)
            for i in range(ns):
                z[i] = y[i] + 0.5 * h * k2[i]
            rhs(t + 0.5 * h, z, p, wt, wv, k3)
            for i in range(ns):
                z[i] = y[i] + h * k3[i]
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
            for i in range(ns):
                y2[i] = y[i] + 0.5 * h * k[i]
            rhs(t + 0.5 * h, y2, p, wt, wv, k)
            for i in range(ns):
                y3[i] = y[i] + 0.5 * h * k[i]
            rhs(t + 0.5 * h, y3, p, wt, wv, k)
            for i in range(ns):
                y4[i] = y[i] + h * k[i]
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


def compiled(system: System) -> ModuleType:
    """The compiled module of a system (cached on disk and in this process)."""
    from cainfer.forward._specialize import _import, _write_package

    text = source(system)
    key = hashlib.sha256(f"{_FORMAT}\0{kernel_sources_stamp()}\0{text}".encode()).hexdigest()[:24]
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        root = cache_dir() / "systems"
        pkg = root / f"s_{key}"
        if not (pkg / "_adjoint.py").is_file():  # the system's module, named as kernels are
            _write_package(root, pkg, '"""Generated by cainfer: do not edit."""\n', text)
        where = hashlib.sha256(str(pkg.resolve()).encode()).hexdigest()[:8]
        mod = _import(pkg, f"_cainfer_system_{key}_{where}")
        _LOADED[key] = mod
        return mod


def system_of(model: Any) -> System:
    """The system a cell model's terms make: free cytosolic (and ER) calcium.

    Each term with a rate contributes its expression (plasma-membrane terms
    to the cytosol's net flux, ER terms to the exchange between cytosol and
    ER); the leaks their balanced rates (slots set by
    :func:`cainfer.forward._adjoint.balance_leaks`); a waveform influx its
    amplitude times the input. Events act through jumps, not here. The ER's
    calcium changes by ``−J_x/(v_ER·(1 + κ_ER))``. The parameter vector the
    system reads is the balanced one.

    Parameters
    ----------
    model : CellModel
        With the indicator in equilibrium.
    """
    import sympy as sp

    if model.kinetic:
        raise ValueError("a system of states is built for an indicator in equilibrium only")
    c, cer, u = sp.symbols("c cer u", real=True)
    params: dict[Any, int] = {}

    def par(slot: int, positive: bool = True) -> Any:
        sym = sp.Symbol(f"s{slot}", positive=True) if positive else sp.Symbol(f"s{slot}", real=True)
        for known, at in params.items():
            if at == slot:
                return known
        params[sym] = slot
        return sym

    jpm: Any = sp.S.Zero
    jx: Any = sp.S.Zero
    hill: list[int] = []
    used_input = False
    for f, kind, o in zip(model.fluxes, model._kinds, model._offsets, strict=True):
        o = int(o)
        if kind == K.K_EVENTS:
            continue
        if kind == K.K_WAVEFORM:
            jpm += par(o) * u
            used_input = True
        elif kind == K.K_PM_LEAK:
            jpm += par(o, positive=False)
        elif kind == K.K_ER_LEAK:
            jx += par(o, positive=False) * (cer - c)
        else:
            cls = type(f)
            expr, cs, cers, psyms, gsyms = _codegen.expression(cls)
            sub = {cs: c, cers: cer}
            sub |= {s: par(o + i) for i, s in enumerate(psyms)}
            sub |= {s: par(_codegen._GLOBALS[g]) for g, s in gsyms.items()}
            hill += [o + i for i, q in enumerate(cls.declared) if q.role == "hill"]
            if cls.compartment == "pm":
                jpm += expr.xreplace(sub)
            else:
                jx += expr.xreplace(sub)
    if model.has_er:
        states: tuple[Any, ...] = (c, cer)
        rhs: tuple[Any, ...] = (jpm + jx, -jx / (par(K.G_V_ER) * (1 + par(K.G_KAPPA_ER))))
    else:
        states, rhs = (c,), (jpm + jx,)
    return System(
        states, rhs, params, input=u if used_input else None, hill_slots=tuple(hill),
        buffered=True,
    )  # fmt: skip
