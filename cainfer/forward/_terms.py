"""Which compiled code runs each flux term, and how a saved model names its terms' classes.

Every term's flux and pull-back are generated from its ``rate``
(:mod:`cainfer.forward._codegen`): the built-in terms' (and those of a
subclass keeping its rate) ship in :mod:`cainfer.forward._builtin_terms`; any
other term's are generated when a model first uses it. The kernels know a term
by its code, a hash of its rate expression. :meth:`CellModel.to_dict` names a
term's class by :func:`_class_name`, and ``from_dict`` finds it again by
:func:`_class_named`.
"""

from __future__ import annotations

from cainfer.forward import _builtin_terms as T
from cainfer.forward import _codegen
from cainfer.forward.fluxes import (
    NCX,
    PMCA,
    SERCA,
    SOCE,
    ERLeak,
    ERRelease,
    EventInflux,
    Flux,
    LinearExtrusion,
    PlasmaLeak,
    WaveformInflux,
)

# the built-in terms: their kernels are generated from their rates into _builtin_terms
_COMPILED: dict[str, type[Flux]] = {
    c.__name__: c
    for c in (LinearExtrusion, PMCA, NCX, PlasmaLeak, SERCA, ERLeak, ERRelease, SOCE, EventInflux,
              WaveformInflux)
}  # fmt: skip


#: code of a term with gating states or moving mitochondrial calcium: no kernel
#: runs it; a model holding one is solved as a system of states
SYSTEM_CODE = -1


def _builtin_base(cls: type[Flux]) -> type[Flux] | None:
    """The built-in term a class derives from (itself, if built in), or None."""
    for c in cls.__mro__:
        if _COMPILED.get(c.__name__) is c:
            return c
    return None


def _runs_as_builtin(cls: type[Flux]) -> type[Flux] | None:
    """The built-in term whose kernels run this class: it keeps that term's rate."""
    base = _builtin_base(cls)
    if base is not None and cls.rate is base.rate:
        return base
    return None


def _compiled_form(f: Flux) -> tuple[int, _codegen.GeneratedTerm | None]:
    """The code the kernels run a term by, and its generated functions (None: built in).

    A built-in term (or a subclass keeping its rate) runs on the built-in
    functions, which read its parameters by position. Any other term with a
    ``rate`` gets functions generated from it, unless it has gating states or
    moves mitochondrial calcium (:data:`SYSTEM_CODE`). A term without a rate
    is refused.
    """
    cls = type(f)
    base = _runs_as_builtin(cls)
    if base is not None:
        _check_compiled(f, base)
        return T.CODES[base.__name__], None
    if cls.rate is not None:
        if _codegen.term_expressions(cls).stateful:
            return SYSTEM_CODE, None  # solved as a system of states (cainfer.forward._system)
        gen = _codegen.generate(cls)
        if gen.code in T.FLUX:  # a built-in rate, written again: its kernels run it
            return gen.code, None
        return gen.code, gen
    raise ValueError(
        f"flux term {cls.__name__}: the compiled solver has no kernel for it (no rate "
        "expression); built-in terms: "
        f"{', '.join(_COMPILED)}. A new term defines its rate (see Flux); a subclass of a "
        "built-in term may change its name and defaults"
    )


def _check_compiled(f: Flux, base: type[Flux]) -> None:
    """Refuse a subclass of a built-in term that its kernels would not run as declared."""
    cls = type(f)
    mine = [p.name for p in cls.declared]
    theirs = [p.name for p in base.declared]
    same = (mine, cls.n_derived, cls.compartment, cls.needs_er) == (
        theirs,
        base.n_derived,
        base.compartment,
        base.needs_er,
    )
    if not same:
        raise ValueError(
            f"flux term {cls.__name__}: declares parameters {mine} (compartment "
            f"{cls.compartment!r}), but runs on the {base.__name__} kernel, which reads "
            f"{theirs} (compartment {base.compartment!r})"
        )


def _class_name(f: Flux) -> str:
    """How :meth:`CellModel.to_dict` names a term's class."""
    cls = type(f)
    base = _runs_as_builtin(cls)
    if base is not None:
        return base.__name__
    return f"{cls.__module__}:{cls.__qualname__}"


def _class_named(name: str) -> type[Flux]:
    """The class :func:`_class_name` named: a built-in term, or a defined term with a rate."""
    by_name = _COMPILED
    if not isinstance(name, str):
        raise ValueError(f"flux class {name!r} is not a name")
    if name in by_name:
        return by_name[name]
    module, _, qual = name.partition(":")
    if not qual:
        raise ValueError(f"unknown flux class {name!r}; built-in terms: {', '.join(by_name)}")
    found = _defined_terms(module, qual)
    if not found and module != "__main__":
        import importlib

        try:
            importlib.import_module(module)
        except ImportError:
            pass
        found = _defined_terms(module, qual)
    if not found:
        raise ValueError(
            f"flux class {qual!r} of module {module!r} is not defined in this process: define "
            "(or import) the term's class before loading a model that uses it"
        )
    return found[-1]  # a class defined again (a notebook cell run twice): the newest


def _defined_terms(module: str, qual: str) -> list[type[Flux]]:
    """Every subclass of Flux with a rate, of this module and qualified name, oldest first."""
    out: list[type[Flux]] = []
    todo = list(Flux.__subclasses__())
    while todo:
        c = todo.pop(0)
        todo.extend(c.__subclasses__())
        if (
            c.rate is not None
            and _runs_as_builtin(c) is None
            and (c.__module__, c.__qualname__) == (module, qual)
        ):
            out.append(c)
    return out
