"""Solver kernels specialised to one cell model's flux terms, generated and cached on disk.

The generic kernels loop over a model's terms and select each term's
function by its code at every right-hand-side evaluation. That costs about
half of a log-density gradient (``python benchmarks/inference.py`` prints
both). For one sequence of terms this module writes a copy of the kernel
sources in which the two loops over terms (``net_flux`` in the forward solve,
``flux_vjp`` in the adjoint) are unrolled into calls of the terms' own
functions at literal parameter offsets, so that numba compiles straight-line
code; every formula still comes from the generic sources (each term's flux
and pull-back: generated from the built-in terms' rates in
:mod:`cainfer.forward._builtin_terms`, or from a user-defined term's rate and
appended to the copy, see :mod:`cainfer.forward._codegen`).

The copy is a package under ``<cache>/kernels/`` (``<cache>``: see
:mod:`cainfer.forward._cache`) so that numba's on-disk cache keeps its
machine code between processes. Its name hashes the kernel sources, every source
file of :mod:`cainfer.forward` (the package's code calls into them, and numba
checks a cached function against its own file only) and the terms: an upgrade
or another model gets its own package. Packages are written to a
temporary directory and renamed into place, so concurrent processes never
import a half-written one.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import sys
import threading
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from cainfer.forward import _adjoint as A
from cainfer.forward import _builtin_terms as T
from cainfer.forward import _codegen
from cainfer.forward import _kernels as K
from cainfer.forward._cache import cache_dir, kernel_sources_stamp

_FORMAT = 4  # bump when the generated text changes
_IMPORT = "from cainfer.forward import _kernels as K"
_LOADED: dict[str, ModuleType] = {}  # by hash of the generated sources
_BY_TERMS: dict[tuple[Any, ...], ModuleType] = {}  # by terms and cache root (no file reads)
_LOCK = threading.Lock()
# In models of at most this many terms, numba inlines the adjoint's RK4 step into
# the backward loop and the unrolled loop over terms into each stage's pull-back.
# In larger models both are calls: inlining four copies of every term's
# pull-back made the first fit compile 10 s (pumps preset, 4 terms) to 45 s (ER
# model, 8 terms) longer and sampled no faster; at 3 terms (benchmark B1) the
# calls made sampling 5-12 % slower. Measured with benchmarks/first_fit.py and
# benchmarks/inference.py --only-cainfer.
_SMALL_MODEL_TERMS = 3
_NOT_INLINED = "@njit(cache=True, fastmath=False)"
_INLINED = '@njit(cache=True, fastmath=False, inline="always")'


def _unrolled(
    codes: tuple[int, ...],
    offsets: tuple[int, ...],
    *,
    decorator: str,
    head: str,
    sums: tuple[str, str],
    functions: dict[int, str],
    args: str,
    waveform: str | None,
) -> str:
    """Source of a loop over terms unrolled: ``sums += functions[code](offset, args)``.

    The stimulus waveform's value ``u`` is computed first by ``waveform``;
    None: no term reads it, ``u`` is 0 (a lookup costs a third of a B1
    solve even for an empty waveform).
    """
    name = head.split("(")[0]
    comment = f"# generated: {name} unrolled for terms {codes} at offsets {offsets}"
    lines = ["", "", comment, decorator, f"def {head}:  # noqa: F811"]
    lines += [f"    {v} = 0.0" for v in sums]
    lines.append(f"    u = {waveform} if wt.size else 0.0" if waveform else "    u = 0.0")
    for k, o in zip(codes, offsets, strict=True):
        lines += [f"    a, b = {functions[k]}({o}, {args})",
                  f"    {sums[0]} += a", f"    {sums[1]} += b"]  # fmt: skip
    lines.append(f"    return {sums[0]}, {sums[1]}")
    return "\n".join(lines) + "\n"


def _net_flux_src(
    codes: tuple[int, ...], offsets: tuple[int, ...], fns: dict[int, str], wave: bool
) -> str:  # fmt: skip
    return _unrolled(
        codes, offsets, decorator="@njit(cache=True, fastmath=False)",
        head="net_flux(t, c, cer, p, codes, offsets, wt, wv)", sums=("jpm", "jx"),
        functions=fns, args="c, cer, u, p", waveform="waveform_at(t, wt, wv)" if wave else None,
    )  # fmt: skip


def _flux_vjp_src(
    codes: tuple[int, ...], offsets: tuple[int, ...], fns: dict[int, str], wave: bool
) -> str:  # fmt: skip
    small = len(codes) <= _SMALL_MODEL_TERMS
    return _unrolled(
        codes, offsets, decorator=_INLINED if small else _NOT_INLINED,
        head="flux_vjp(t, c, cer, p, codes, offsets, wt, wv, gpm, gx, pbar, need_n)",
        sums=("cbar", "erbar"), functions=fns, args="c, cer, u, p, gpm, gx, pbar, need_n",
        waveform="K.waveform_at(t, wt, wv)" if wave else None,
    )  # fmt: skip


def _dispatch_src(name: str, args: str, gen: Sequence[_codegen.GeneratedTerm], vjp: bool) -> str:
    """``name`` (a per-code dispatch) redefined to know the generated terms first."""
    lines = ["", "", f"_{name}_builtin = {name}", "",
             _INLINED, f"def {name}(code, o, {args}):  # noqa: F811"]  # fmt: skip
    call = args.replace(", need_n=True", ", need_n")
    for g in gen:
        lines += [f"    if code == {g.code}:",
                  f"        return {g.vjp_name if vjp else g.flux_name}(o, {call})"]  # fmt: skip
    lines.append(f"    return _{name}_builtin(code, o, {call})")
    return "\n".join(lines) + "\n"


def sources(
    codes: Sequence[int],
    offsets: Sequence[int],
    generated: Sequence[_codegen.GeneratedTerm] = (),
) -> tuple[str, str]:
    """Source text of the specialised kernels and adjoint modules."""
    cs_, os_ = tuple(int(k) for k in codes), tuple(int(o) for o in offsets)
    gen = _generated_for(cs_, generated)
    src_k = Path(str(K.__file__)).read_text(encoding="utf-8")
    src_a = Path(str(A.__file__)).read_text(encoding="utf-8")
    if src_a.count(_IMPORT) != 1:
        raise RuntimeError(f"{A.__file__}: expected one line {_IMPORT!r} to rewrite")
    src_a = src_a.replace(_IMPORT, "from . import _kernels as K")
    if len(cs_) <= _SMALL_MODEL_TERMS:
        step = _NOT_INLINED + "\ndef rk4_step_vjp("
        if src_a.count(step) != 1:
            raise RuntimeError(f"{A.__file__}: expected one {step!r} to rewrite")
        src_a = src_a.replace(step, _INLINED + "\ndef rk4_step_vjp(")
    if gen:
        src_k += _codegen.HELPERS + "".join(g.flux_src for g in gen)
        src_k += _dispatch_src("local_flux", "c, cer, u, p", gen, vjp=False)
        src_a += _codegen.HELPERS + "".join(g.vjp_src for g in gen)
        src_a += _dispatch_src(
            "local_vjp", "c, cer, u, p, gpm, gx, pbar, need_n=True", gen, vjp=True
        )
    flux_fns = {**K.LOCAL_FLUX, **{g.code: g.flux_name for g in gen}}
    vjp_fns = {**A.LOCAL_VJP, **{g.code: g.vjp_name for g in gen}}
    wave = any(k in T.WAVEFORM for k in cs_) or any(g.reads_waveform for g in gen)
    return (
        src_k + _net_flux_src(cs_, os_, flux_fns, wave),
        src_a + _flux_vjp_src(cs_, os_, vjp_fns, wave),
    )


def _generated_for(
    codes: tuple[int, ...], generated: Sequence[_codegen.GeneratedTerm]
) -> tuple[_codegen.GeneratedTerm, ...]:
    """The generated terms among ``codes``, each once, in order; every unknown code refused."""
    by_code = {g.code: g for g in generated}
    out: dict[int, _codegen.GeneratedTerm] = {}
    for k in codes:
        if k in K.LOCAL_FLUX:
            continue
        if k not in by_code:
            raise ValueError(f"flux term code {k}: neither built in nor among the generated terms")
        out.setdefault(k, by_code[k])
    return tuple(out.values())


def specialized(
    codes: Sequence[int],
    offsets: Sequence[int],
    generated: Sequence[_codegen.GeneratedTerm] = (),
) -> ModuleType:
    """The adjoint module specialised to these terms (its ``K`` is the kernels module).

    It has the functions of :mod:`cainfer.forward._adjoint` (and ``K`` those
    of :mod:`cainfer.forward._kernels`) with the same signatures and results;
    the ``codes`` and ``offsets`` arguments they are called with must be the
    ones given here. Falls back, with a warning, to the generic modules when
    the cache directory cannot be written.

    Parameters
    ----------
    codes, offsets : sequence of int
        Code (see :mod:`cainfer.forward._codegen`) and parameter-vector offset of
        each flux term, in order.
    generated : sequence of GeneratedTerm
        The compiled form of each term defined by a rate expression
        (:func:`cainfer.forward._codegen.generate`).
    """
    cs_, os_ = tuple(int(k) for k in codes), tuple(int(o) for o in offsets)
    gen = _generated_for(cs_, generated)
    if len(cs_) != len(os_):
        raise ValueError(f"{len(cs_)} codes but {len(os_)} offsets")
    known = _BY_TERMS.get((cs_, os_, str(cache_dir())))
    if known is not None:
        return known
    src_k, src_a = sources(cs_, os_, gen)
    # the package's numba cache checks only its own files; the kernels they call
    # (``_builtin_terms``) enter through the stamp of cainfer's solver sources
    stamp = kernel_sources_stamp()
    key = hashlib.sha256(f"{_FORMAT}\0{stamp}\0{src_k}\0{src_a}".encode()).hexdigest()[:24]
    with _LOCK:
        if key in _LOADED:
            _BY_TERMS[(cs_, os_, str(cache_dir()))] = _LOADED[key]
            return _LOADED[key]
        root = cache_dir() / "kernels"
        try:
            pkg = root / f"k_{key}"
            if not (pkg / "_adjoint.py").is_file():
                _write_package(root, pkg, src_k, src_a)
            mod = _import(pkg, f"_cainfer_kernels_{key}")
        except OSError as err:
            if gen:
                raise OSError(
                    f"cannot write the solver kernels generated for this model's terms under "
                    f"{root} ({err}); set CAINFER_CACHE_DIR to a writable directory"
                ) from err
            warnings.warn(
                f"cannot write specialised solver kernels under {root} ({err}); using the "
                "generic kernels (about half the speed). Set CAINFER_CACHE_DIR to a "
                "writable directory.",
                RuntimeWarning,
                stacklevel=2,
            )
            mod = A
        _LOADED[key] = mod
        _BY_TERMS[(cs_, os_, str(cache_dir()))] = mod
        return mod


def _write_package(root: Path, pkg: Path, src_k: str, src_a: str) -> None:
    """Write the package into a temporary directory, then rename it into place."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{pkg.name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        (tmp / "__init__.py").write_text('"""Generated by cainfer: do not edit."""\n')
        (tmp / "_kernels.py").write_text(src_k, encoding="utf-8")
        (tmp / "_adjoint.py").write_text(src_a, encoding="utf-8")
        try:
            os.rename(tmp, pkg)
        except OSError:
            if not (pkg / "_adjoint.py").is_file():  # not a concurrent writer's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _import(pkg: Path, name: str) -> ModuleType:
    """Import the generated package ``pkg`` as ``name``; returns its ``_adjoint`` module.

    ``name`` depends on the package's contents only, never on where it lies:
    numba's cached machine code records the module a function was compiled
    in and imports it by that name when the code is loaded, so a name with
    the directory in it made every fit fail (``ModuleNotFoundError``) once
    the cache directory had been moved or was reached by another path.
    Whatever this process imported under ``name`` before (the same package
    from another cache directory) is replaced: this package's own files are
    imported, and modules already handed out keep working.
    """
    for stale in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[stale]
    spec = importlib.util.spec_from_file_location(
        name, pkg / "__init__.py", submodule_search_locations=[str(pkg)]
    )
    if spec is None or spec.loader is None:
        raise OSError(f"cannot import generated kernels from {pkg}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module(f"{name}._adjoint")
