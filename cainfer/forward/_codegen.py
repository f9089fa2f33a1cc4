"""Compiled flux and adjoint source generated from a term's rate expression.

Every flux term defines ``rate(self, c, c_er)`` (see :class:`cainfer.forward.Flux`);
the rate is differentiated symbolically (SymPy) with respect to the two states
and every parameter, and printed as two numba functions: the flux
``flux_*(o, c, cer, u, p)`` for :mod:`cainfer.forward._kernels` and its
pull-back ``vjp_*(o, c, cer, u, p, gpm, gx, pbar, need_n)`` for
:mod:`cainfer.forward._adjoint` (``o``: the term's first slot in ``p``; ``u``:
the stimulus waveform's value). Common subexpressions are eliminated across
the value and its partials, so a generated term costs about what a
hand-written form of the same expression would. The partials with respect to
Hill coefficients (``role="hill"``) sit behind the ``need_n`` flag: their
logarithms are wasted when no Hill coefficient is free. The built-in terms'
functions are generated once into :mod:`cainfer.forward._builtin_terms`.

Conventions of the generated code: a power with a non-integer exponent, and a
logarithm, of a non-positive number are 0 (a state that a solver step takes
just below zero is read as empty, and ``c^n·log c`` keeps its limit 0 at
``c = 0``).

SymPy is imported here only, when a model first uses such a term.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any

from cainfer.forward import _kernels as K

_FORMAT = 3  # bump when the generated text changes
_GLOBALS = {"c_rest": K.G_C_REST, "c_er_rest": K.G_CER_REST}
STATES = ("c", "c_er")
_LOCK = threading.RLock()  # generate() holds it while term_expressions() takes it
_BY_CLASS: dict[type, GeneratedTerm] = {}

# Helpers the generated functions call; defined once in each kernels module.
HELPERS = '''

# generated-term helpers (see cainfer.forward._codegen)
@njit(cache=True, fastmath=False, inline="always")
def _gpow(x: float, y: float) -> float:
    """x**y, 0 for x <= 0 (a generated term's power with a non-integer exponent).

    y = 1 (a Hill coefficient of 1, common) returns x without a call to pow,
    which would cost about as much as the rest of a Hill term.
    """
    if x <= 0.0:
        return 0.0
    if y == 1.0:
        return x
    return x**y


@njit(cache=True, fastmath=False, inline="always")
def _pdiv(power: float, base: float) -> float:
    """power/base, 0 for base <= 0 (d(b**e)/db = e·b**e/b, a clipped state's slope 0)."""
    return power / base if base > 0.0 else 0.0


@njit(cache=True, fastmath=False, inline="always")
def _glog(x: float) -> float:
    """log(x), 0 for x <= 0 (so that x**n·log x keeps its limit 0 at x = 0)."""
    return math.log(x) if x > 0.0 else 0.0
'''


@dataclass(frozen=True)
class GeneratedTerm:
    """The compiled form of one rate expression.

    ``code`` is the number the kernels know the term by (a hash of the
    expression, its parameters and compartment); ``flux_src`` defines
    ``flux_name`` for the kernels module and ``vjp_src`` defines ``vjp_name``
    for the adjoint module. ``reads_waveform``: the rate reads the stimulus
    waveform (the kernels look its value up only for such terms).
    """

    code: int
    flux_name: str
    vjp_name: str
    flux_src: str
    vjp_src: str
    expression: str
    reads_waveform: bool = False


class _Symbols:
    """What ``rate`` sees as ``self``: each parameter (bare name) and the resting levels."""

    def __init__(self, owner: str, names: dict[str, Any]) -> None:
        self.__dict__.update(names)
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"{self._owner}.rate uses self.{name}, which is not one of its parameters "
            f"({', '.join(k for k in self.__dict__ if not k.startswith('_'))})"
        )


def generate(cls: type) -> GeneratedTerm:
    """Differentiate ``cls.rate`` and print its flux and adjoint as numba source.

    Parameters
    ----------
    cls : type
        A :class:`cainfer.forward.Flux` subclass defining ``rate``.

    Returns
    -------
    GeneratedTerm
        Cached per class.

    Raises
    ------
    TypeError
        When ``rate`` does not return an expression of the states and the
        term's parameters, or uses a function the generated code cannot
        print.
    """
    with _LOCK:
        hit = _BY_CLASS.get(cls)
        if hit is not None:
            return hit
        gen = _generate(cls)
        _BY_CLASS[cls] = gen
        return gen


def expression(cls: type) -> tuple[Any, Any, Any, list[Any], dict[str, Any]]:
    """``cls.rate`` on symbols: (expression, c, c_ER, parameter symbols, resting-level symbols).

    The parameter symbols are in declaration order, then the derived values
    (a leak's balanced rate); the resting levels are keyed ``"c_rest"`` and
    ``"c_er_rest"``. For a term of the compiled kernels only: no gating state
    (see :func:`term_expressions` for those). The expression may hold the
    stimulus waveform's value, ``term_expressions(cls).u``.
    """
    parts = term_expressions(cls)
    if parts.stateful:
        raise TypeError(
            f"{cls.__name__} carries gating states or moves mitochondrial calcium: it runs as "
            "a system of states (cainfer.forward._system), not on the kernels"
        )
    return parts.rate, parts.c, parts.cer, parts.psyms, parts.gsyms


@dataclass(frozen=True)
class TermExpressions:
    """A term's rate and gating as SymPy expressions, with the symbols they use.

    ``gating`` holds one ``(inf, tau)`` per gate in ``gate_syms`` order:
    ``dg/dt = (inf − g)/tau``. ``u`` is the stimulus waveform's value, ``cm``
    the mitochondrial matrix's free calcium.
    """

    rate: Any
    gating: tuple[tuple[Any, Any], ...]
    c: Any
    cer: Any
    psyms: list[Any]
    gsyms: dict[str, Any]
    gate_syms: tuple[Any, ...]
    u: Any
    cm: Any
    compartment: str

    @property
    def stateful(self) -> bool:
        """The term has gating states or moves mitochondrial calcium."""
        return bool(self.gate_syms) or self.compartment == "mito" or self.rate.has(self.cm)

    @property
    def reads_waveform(self) -> bool:
        """The rate or a gate's dynamics read the stimulus waveform."""
        return any(e.has(self.u) for e in (self.rate, *(x for pair in self.gating for x in pair)))


_TERMS: dict[type, TermExpressions] = {}


def term_expressions(cls: type) -> TermExpressions:
    """``cls.rate`` (and ``cls.gating``, with gates) built on symbols; cached per class.

    Raises
    ------
    TypeError
        When an expression is not a finite real expression of the states,
        gates, waveform and the term's parameters.
    """
    hit = _TERMS.get(cls)
    if hit is not None:
        return hit
    import sympy as sp

    name = cls.__name__
    bare = [q.name for q in cls.declared]  # type: ignore[attr-defined]
    derived = list(getattr(cls, "derived", ()))
    gates = tuple(getattr(cls, "gates", ()))
    clash = sorted(set(bare + derived) & (set(_GLOBALS) | set(STATES) | {"waveform", "c_mito"}))
    if clash:
        raise TypeError(
            f"{name}: parameter name(s) {clash} are reserved (states, resting levels, waveform)"
        )
    c, cer, u, cm = sp.symbols("c cer u cm", real=True)
    psyms = [sp.Symbol(f"q{i}", positive=True) for i in range(len(bare))]
    psyms += [sp.Symbol(f"q{len(bare) + i}", real=True) for i in range(len(derived))]
    bare += derived
    gsyms = {g: sp.Symbol(f"g_{g}", positive=True) for g in _GLOBALS}
    gate_syms = tuple(sp.Symbol(f"h_{g}", real=True) for g in gates)
    names = {**dict(zip(bare, psyms, strict=True)), **gsyms, "waveform": u, "c_mito": cm}
    names |= dict(zip(gates, gate_syms, strict=True))
    ns = _Symbols(name, names)
    allowed = {c, cer, u, *psyms, *gsyms.values(), *gate_syms}
    compartment = cls.compartment  # type: ignore[attr-defined]
    if compartment == "mito":
        allowed.add(cm)

    def checked(what: str, expr: Any) -> Any:
        try:
            expr = sp.sympify(expr)
        except sp.SympifyError as err:
            raise TypeError(f"{name}.{what} must return an expression; got {expr!r}") from err
        if not isinstance(expr, sp.Expr) or expr.has(
            sp.I, sp.zoo, sp.nan, sp.oo, sp.S.NegativeInfinity
        ):
            raise TypeError(f"{name}.{what} must return a finite real expression; got {expr!r}")
        stray = expr.free_symbols - allowed
        if stray:
            hint = " (self.c_mito: for terms of compartment 'mito')" if cm in stray else ""
            raise TypeError(
                f"{name}.{what} must return an expression of c, c_er and self's parameters, "
                f"gates and waveform; it has {', '.join(sorted(map(str, stray)))}{hint}"
            )
        if compartment != "er" and not cls.needs_er and expr.has(cer):  # type: ignore[attr-defined]
            raise TypeError(
                f"{name}.{what} uses c_er: set needs_er = True (the cell then has an ER)"
            )
        return expr

    try:
        rate = cls.rate(ns, c, cer)  # type: ignore[attr-defined]
    except AttributeError:
        raise
    except Exception as err:  # an expression sympy cannot build
        raise TypeError(f"{name}.rate failed on symbolic arguments: {err}") from err
    rate = checked("rate", rate)
    gating: list[tuple[Any, Any]] = []
    if gates:
        try:
            got = cls.gating(ns, c, cer)  # type: ignore[attr-defined]
        except AttributeError:
            raise
        except Exception as err:
            raise TypeError(f"{name}.gating failed on symbolic arguments: {err}") from err
        try:
            pairs = [tuple(pair) for pair in got]
        except TypeError:
            pairs = []
        if len(pairs) != len(gates) or any(len(pair) != 2 for pair in pairs):
            raise TypeError(
                f"{name}.gating must return one (inf, tau) pair per gate {list(gates)}; got {got!r}"
            )
        for g, (inf, tau) in zip(gates, pairs, strict=True):
            inf, tau = checked("gating", inf), checked("gating", tau)
            if inf.has(*gate_syms) or tau.has(*gate_syms):
                raise TypeError(
                    f"{name}.gating: gate {g!r}'s steady state and time constant must not depend "
                    "on the gates themselves"
                )
            gating.append((inf, tau))
    if compartment == "mito" and gates:
        raise TypeError(f"{name}: a term of compartment 'mito' carries no gates")
    parts = TermExpressions(rate, tuple(gating), c, cer, psyms, gsyms, gate_syms, u, cm,
                            compartment)  # fmt: skip
    with _LOCK:
        _TERMS[cls] = parts
    return parts


def _generate(cls: type) -> GeneratedTerm:
    import sympy as sp

    name = cls.__name__
    declared = cls.declared  # type: ignore[attr-defined]
    derived = list(cls.derived)  # type: ignore[attr-defined]
    bare = [q.name for q in declared] + derived
    expr, c, cer, psyms, gsyms = expression(cls)
    u = term_expressions(cls).u
    roles = [q.role for q in declared] + ["derived"] * len(derived)
    used_g = [g for g, s in gsyms.items() if expr.has(s)]
    pows = _Powers(sp)
    body_expr = pows.atomize(expr)
    wrt_c = pows.diff(body_expr, c)
    wrt_cer = pows.diff(body_expr, cer)
    core_p = [i for i, r in enumerate(roles) if r != "hill" and expr.has(psyms[i])]
    hill_p = [i for i, r in enumerate(roles) if r == "hill" and expr.has(psyms[i])]
    core = [wrt_c, wrt_cer]
    core += [pows.diff(body_expr, psyms[i]) for i in core_p]
    core += [pows.diff(body_expr, gsyms[g]) for g in used_g]
    hill = [pows.diff(body_expr, psyms[i]) for i in hill_p]

    subs_p = {s: sp.Symbol(f"x{i}") for i, s in enumerate(psyms)}
    printer = _printer()
    srepr = str(expr.xreplace({**dict(zip(psyms, [sp.Symbol(b) for b in bare], strict=True)),
                               **{s: sp.Symbol(g) for g, s in gsyms.items()},
                               u: sp.Symbol("waveform")}))  # fmt: skip
    key = hashlib.sha256(
        f"{_FORMAT}\0{sp.srepr(expr)}\0{cls.compartment}\0{len(bare)}".encode()  # type: ignore[attr-defined]
    ).hexdigest()
    code = 1000 + int(key[:10], 16)
    fname, vname = f"flux_g{key[:12]}", f"vjp_g{key[:12]}"

    loads = [f"x{i} = p[o + {i}]" for i in range(len(bare))]
    loads += [f"g_{g} = p[{_GLOBALS[g]}]" for g in used_g]

    def show(e: Any) -> str:
        return _print(printer, e.xreplace(subs_p), name)

    def powers(exprs: list[Any]) -> list[str]:
        return [f"{s} = {show(v)}" for s, v in pows.needed(exprs)]

    def block(
        exprs: list[Any], out: list[str], later: list[Any] | None = None,
        later_out: list[str] | None = None,
    ) -> tuple[list[str], list[str]]:  # fmt: skip
        """Lines for ``out = exprs``, then the lines only ``later`` needs (one CSE over both)."""
        later, later_out = later or [], later_out or []
        both = [e.xreplace(subs_p) for e in [*exprs, *later]]
        reps, reduced = sp.cse(both, symbols=sp.numbered_symbols("t_"))
        need: set[Any] = set()
        for e in reduced[: len(exprs)]:
            need |= e.free_symbols
        for s, v in reversed(reps):
            if s in need:
                need |= v.free_symbols
        now = [f"{s} = {show(v)}" for s, v in reps if s in need]
        rest = [f"{s} = {show(v)}" for s, v in reps if s not in need]
        now += [f"{o} = {show(v)}" for o, v in zip(out, reduced[: len(exprs)], strict=True)]
        rest += [f"{o} = {show(v)}" for o, v in zip(later_out, reduced[len(exprs) :], strict=True)]
        return now, rest

    ret = "r, 0.0" if cls.compartment == "pm" else "0.0, r"  # type: ignore[attr-defined]
    lines, _ = block([body_expr], ["r"])
    body = loads + powers([body_expr]) + lines + [f"return {ret}"]
    flux_src = _function(
        '@njit(cache=True, fastmath=False, inline="always")',
        f"{fname}(o: int, c: float, cer: float, u: float, p: np.ndarray) -> tuple[float, float]",
        f"{name}: {srepr} (generated)",
        body,
    )

    g = "gpm" if cls.compartment == "pm" else "gx"  # type: ignore[attr-defined]
    outs = ["d_c", "d_cer"] + [f"d_p{i}" for i in core_p] + [f"d_{gname}" for gname in used_g]
    now, rest = block(core, outs, hill, [f"d_p{i}" for i in hill_p])
    body = loads + powers(core + hill) + now
    body += [f"pbar[o + {i}] += {g} * d_p{i}" for i in core_p]
    body += [f"pbar[{_GLOBALS[gname]}] += {g} * d_{gname}" for gname in used_g]
    if hill:
        rest += [f"pbar[o + {i}] += {g} * d_p{i}" for i in hill_p]
        body += ["if need_n:"] + ["    " + line for line in rest]
    body.append(f"return {g} * d_c, {g} * d_cer")
    vjp_src = _function(
        '@njit(cache=True, fastmath=False, inline="always")',
        f"{vname}(o: int, c: float, cer: float, u: float, p: np.ndarray, gpm: float, "
        "gx: float, pbar: np.ndarray, need_n: bool) -> tuple[float, float]",
        f"Pull-back of {name}'s rate (generated).",
        body,
    )
    return GeneratedTerm(code, fname, vname, flux_src, vjp_src, srepr, bool(expr.has(u)))


class _Powers:
    """Each non-integer power of an expression as one variable, differentiated by the chain rule.

    SymPy differentiates ``c**n/(K**n + c**n)`` into terms with ``c**(2n)``
    and ``c**(n-1)``: new powers, each a call to ``pow``. Here every distinct
    power ``b**e`` becomes a variable ``P`` computed once, with
    ``dP = P·(de·log b + db·e/b)``, so the value and all its partials share
    the same few powers.
    """

    def __init__(self, sp: Any) -> None:
        self.sp = sp
        self.table: dict[Any, Any] = {}  # power -> its variable
        self.of: dict[Any, Any] = {}  # variable -> power (its base and exponent atomized)
        self.div = sp.Function("_pdiv")  # P/b, 0 for b <= 0

    def atomize(self, e: Any) -> Any:
        if e.is_Atom:
            return e
        args = [self.atomize(a) for a in e.args]
        e2 = e.func(*args) if args != list(e.args) else e
        if e2.is_Pow and not e2.exp.is_Integer:
            v = self.table.get(e2)
            if v is None:
                v = self.sp.Symbol(f"P{len(self.table)}")
                self.table[e2] = v
                self.of[v] = e2
            return v
        return e2

    def diff(self, e: Any, x: Any) -> Any:
        """Total derivative of an atomized expression."""
        sp = self.sp
        d = sp.diff(e, x)
        for v in self._within(e):
            part = sp.diff(e, v)
            if part == 0:
                continue
            base, ex = self.of[v].args
            dv = self.diff(ex, x) * v * sp.log(base) + self.diff(base, x) * ex * self.div(v, base)
            d += part * dv
        return d

    def _within(self, e: Any) -> list[Any]:
        return [v for v in self.of if e.has(v)]

    def needed(self, exprs: list[Any]) -> list[tuple[Any, Any]]:
        """(variable, power) pairs the expressions use, in dependency order."""
        need: set[Any] = set()
        for e in exprs:
            need |= {v for v in self.of if e.has(v)}
        changed = True
        while changed:
            changed = False
            for v in list(need):
                more = {w for w in self.of if self.of[v].has(w)} - need
                if more:
                    need |= more
                    changed = True
        return [(v, self.of[v]) for v in self.of if v in need]  # creation order: inner first


def _function(decorator: str, head: str, doc: str, body: list[str]) -> str:
    doc = doc.replace("\\", "\\\\").replace('"""', "'''")
    lines = ["", "", decorator, f"def {head}:", f'    """{doc}"""']
    lines += ["    " + line for line in body]
    return "\n".join(lines) + "\n"


def _printer() -> Any:
    import sympy as sp
    from sympy.printing.pycode import PythonCodePrinter

    class _Printer(PythonCodePrinter):
        def _print_Pow(self, expr: Any, rational: bool = False) -> str:
            base, exp = expr.args
            if exp.is_Integer:
                b = self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Pow"])
                if int(exp) == -1:
                    return f"1.0 / {b}"
                return f"{b}**{int(exp)}"
            if exp == sp.Rational(1, 2):
                return f"math.sqrt({self._print(base)})"
            return f"_gpow({self._print(base)}, {self._print(exp)})"

        def _print_Function(self, expr: Any) -> str:
            if expr.func.__name__ == "_pdiv":
                return f"_pdiv({self._print(expr.args[0])}, {self._print(expr.args[1])})"
            return str(super()._print_Function(expr))

        def _print_log(self, expr: Any) -> str:
            return f"_glog({self._print(expr.args[0])})"

        def _print_Rational(self, expr: Any) -> str:
            return f"({float(expr.p)} / {float(expr.q)})"

        def _print_Integer(self, expr: Any) -> str:
            return f"{float(expr.p)}"

    return _Printer({"fully_qualified_modules": True, "standard": "python3"})


def _print(printer: Any, expr: Any, owner: str) -> str:
    from sympy.printing.codeprinter import PrintMethodNotImplementedError

    try:
        return str(printer.doprint(expr))
    except PrintMethodNotImplementedError as err:
        what = str(err).split(":")[-1].split("\n")[0].strip()
        raise TypeError(
            f"{owner}.rate uses {what}, which the generated code cannot evaluate (it has "
            "arithmetic, powers, exp, log, sqrt, trigonometric and hyperbolic functions, "
            "Abs, Min, Max and Piecewise)"
        ) from None


# The built-in terms whose kernels are generated from their rates, in this order.
BUILTIN = ("LinearExtrusion", "PMCA", "NCX", "PlasmaLeak", "SERCA", "ERLeak", "ERRelease", "SOCE",
           "EventInflux", "WaveformInflux")  # fmt: skip
_BUILTIN_MODULE = "_builtin_terms.py"


def builtin_source() -> str:
    """Source text of :mod:`cainfer.forward._builtin_terms`, generated from the built-in rates."""
    import sympy as sp

    from cainfer.forward import fluxes

    gens = [(name, _generate(getattr(fluxes, name))) for name in BUILTIN]
    head = f'''"""Compiled flux and adjoint of the built-in terms, generated from their rates.

Generated by ``cainfer.forward._codegen.write_builtin()`` from the ``rate`` of each
term of :mod:`cainfer.forward.fluxes` named in ``_codegen.BUILTIN`` (SymPy
{sp.__version__}): do not edit. ``tests/forward/test_codegen.py`` generates it
again and compares. ``CODES`` gives each term's code (a hash of its rate),
``WAVEFORM`` the codes of the terms that read the stimulus waveform;
:func:`flux` and :func:`vjp` select a term by it (the generic kernels call
them; a model's own kernels call the functions directly).
"""

import math

import numpy as np
from numba import njit

from cainfer.forward import _cache  # noqa: F401  (first: where numba caches these kernels)

SYMPY = "{sp.__version__}"
CODES = {{{", ".join(f'"{n}": {g.code}' for n, g in gens)}}}
FLUX = {{{", ".join(f"{g.code}: {g.flux_name!r}" for _, g in gens)}}}
VJP = {{{", ".join(f"{g.code}: {g.vjp_name!r}" for _, g in gens)}}}
WAVEFORM = {{{", ".join(str(g.code) for _, g in gens if g.reads_waveform)}}}  # read the waveform
'''
    body = HELPERS + "".join(g.flux_src + g.vjp_src for _, g in gens)
    deco = '@njit(cache=True, fastmath=False, inline="always")'
    flux = ["", "", deco,
            "def flux(code: int, o: int, c: float, cer: float, u: float, p: np.ndarray) "
            "-> tuple[float, float]:",
            '    """The built-in term of this code: (pm, ER→cytosol) flux."""']  # fmt: skip
    vjp = ["", "", deco,
           "def vjp(code: int, o: int, c: float, cer: float, u: float, p: np.ndarray, "
           "gpm: float, gx: float,",
           "        pbar: np.ndarray, need_n: bool) -> tuple[float, float]:",
           '    """Pull-back of the built-in term of this code."""']  # fmt: skip
    for _, g in gens:
        flux += [f"    if code == {g.code}:", f"        return {g.flux_name}(o, c, cer, u, p)"]
        vjp += [f"    if code == {g.code}:",
                f"        return {g.vjp_name}(o, c, cer, u, p, gpm, gx, pbar, need_n)"]  # fmt: skip
    flux.append('    raise ValueError("no built-in term has this code")')
    vjp.append('    raise ValueError("no built-in term has this code")')
    return head + body + "\n".join(flux) + "\n" + "\n".join(vjp) + "\n"


def write_builtin() -> None:
    """Write :mod:`cainfer.forward._builtin_terms` again from the built-in terms' rates.

    Run as ``python -c "import cainfer.forward._codegen as g; g.write_builtin()"``
    after changing a built-in rate.
    """
    from pathlib import Path

    Path(__file__).with_name(_BUILTIN_MODULE).write_text(builtin_source(), encoding="utf-8")
