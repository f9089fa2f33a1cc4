"""nutpie's numba compile of a PyMC model, with C wrappers that numba types quickly.

``nutpie.compile_pymc_model`` wraps the compiled log density (and the
function that expands a draw into the reported variables) in two
``numba.cfunc`` wrappers. Their ``out[...] = grad`` and
``np.all(np.isfinite(out))`` cost numba seconds of typing in every new
process (measured: 4.5 s against 0.5 s for element loops on an otherwise
empty wrapper), which is most of the fixed cost of a short fit. The
wrappers here do the same with element loops: same arguments, same return
codes, same numbers. Everything else is nutpie's own code. If nutpie's
internals are not the ones this was written against, the fit uses
``nutpie.compile_pymc_model`` unchanged.
"""

from __future__ import annotations

import math
import threading
from typing import Any

_LOCK = threading.Lock()


def _c_logp(
    n_dim: int, logp_fn: Any, user_data: Any, shared_keys: Any, shared_data: Any
) -> tuple[Any, Any]:
    """Replacement of ``nutpie.compile_pymc._make_c_logp_func`` (same contract)."""
    import numba
    from nutpie.compile_pymc import make_extraction_fn

    extract = make_extraction_fn(logp_fn, shared_data, shared_keys, user_data.dtype)
    c_sig = numba.types.int64(
        numba.types.uint64,
        numba.types.CPointer(numba.types.double),
        numba.types.CPointer(numba.types.double),
        numba.types.CPointer(numba.types.double),
        numba.types.voidptr,
    )

    def logp_numba(dim, x_, out_, logp_, user_data_):  # type: ignore[no-untyped-def]
        if dim != n_dim:
            return -1
        try:
            x = numba.carray(x_, (n_dim,))
            out = numba.carray(out_, (n_dim,))
            logp = numba.carray(logp_, (1,))
            logp_arr, grad = extract(x, user_data_)
            logp_val = logp_arr[()]  # a 0-d array
            logp[0] = logp_val
            finite = True
            for i in range(n_dim):
                out[i] = grad[i]
                finite = finite and math.isfinite(grad[i])
            if not finite:
                return 3
            if not math.isfinite(logp_val):
                return 4
        except Exception:
            return 1
        return 0

    return logp_numba, c_sig


def _c_expand(
    n_dim: int,
    n_expanded: int,
    expand_fn: Any,
    user_data: Any,
    shared_var_keys: Any,
    shared_data: Any,
) -> tuple[Any, Any]:
    """Replacement of ``nutpie.compile_pymc._make_c_expand_func`` (same contract)."""
    import numba
    from nutpie.compile_pymc import make_extraction_fn

    extract = make_extraction_fn(expand_fn, shared_data, shared_var_keys, user_data.dtype)
    c_sig = numba.types.int64(
        numba.types.uint64,
        numba.types.uint64,
        numba.types.CPointer(numba.types.double),
        numba.types.CPointer(numba.types.double),
        numba.types.voidptr,
    )

    def expand_numba(dim, expanded, x_, out_, user_data_):  # type: ignore[no-untyped-def]
        if dim != n_dim:
            return -1
        if expanded != n_expanded:
            return -1
        try:
            x = numba.carray(x_, (n_dim,))
            out = numba.carray(out_, (n_expanded,))
            (values,) = extract(x, user_data_)
            for i in range(n_expanded):
                out[i] = values[i]
        except Exception:
            return -2
        return 0

    return expand_numba, c_sig


def compile_numba(pm_model: Any) -> Any:
    """``nutpie.compile_pymc_model(pm_model, backend="numba")`` with the lean wrappers.

    Parameters
    ----------
    pm_model : pymc.Model
        The model to compile.

    Returns
    -------
    nutpie.compile_pymc.CompiledPyMCModel
        What ``nutpie.compile_pymc_model`` returns, sampling the same draws.
    """
    import nutpie
    import nutpie.compile_pymc as ncp

    names = ("_make_c_logp_func", "_make_c_expand_func", "make_extraction_fn")
    if not all(callable(getattr(ncp, n, None)) for n in names):
        return nutpie.compile_pymc_model(pm_model, backend="numba")
    with _LOCK:  # the two module attributes are swapped for the duration of the call
        saved = ncp._make_c_logp_func, ncp._make_c_expand_func
        ncp._make_c_logp_func, ncp._make_c_expand_func = _c_logp, _c_expand
        try:
            return nutpie.compile_pymc_model(pm_model, backend="numba")
        finally:
            ncp._make_c_logp_func, ncp._make_c_expand_func = saved
