"""JAX versions of the solve Ops, for the JAX samplers (numpyro, nutpie's JAX backend).

Each Op becomes a ``jax.pure_callback`` into the same compiled numba kernels:
the solver stays one host call per log-density evaluation, and PyTensor
builds the gradient graph from the VJP Op as for the numba backend. Imported
only when a JAX sampler is asked for (importing JAX costs about a second).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from pytensor.graph.basic import Apply
from pytensor.link.jax.dispatch import jax_funcify

from cainfer.infer._op import _N_CONST, SolveOp, SolveVJPOp

jax.config.update("jax_enable_x64", True)  # the solver works in float64


def _const_values(node: Apply) -> list[np.ndarray]:
    values = []
    for var in node.inputs[1 : 1 + _N_CONST]:
        data = getattr(var, "data", None)
        if data is None:
            raise TypeError("the solve Op's schedule inputs must be constants for JAX")
        values.append(np.asarray(data))
    return values


@jax_funcify.register(SolveOp)
def _jax_solve(op: SolveOp, node: Apply | None = None, **kwargs: Any) -> Any:
    if node is None:
        raise TypeError("SolveOp needs its node to be converted to JAX")
    consts = _const_values(node)
    args = op._kernel_args(consts)
    n_out = int(np.sum(consts[0] == 2))
    n_tape = consts[0].size
    # records: the Ca before each entry (equilibrium); or the bound indicator at the
    # outputs and the state and stages at each entry (kinetic)
    rec = (n_out, 9 * n_tape) if op.kinetic else (n_tape, n_tape)
    if op.system:  # the states before each entry and at the outputs
        ns = int(op.kernels.NS)
        rec = (n_tape * ns, n_out * ns)
    shapes = (
        jax.ShapeDtypeStruct((n_out,), jnp.float64),
        jax.ShapeDtypeStruct((n_out,), jnp.float64),
        jax.ShapeDtypeStruct((rec[0],), jnp.float64),
        jax.ShapeDtypeStruct((rec[1],), jnp.float64),
    )

    _forward, _vjp = op.forward_tape, op.vjp_tape

    def host(p: Any) -> tuple[np.ndarray, ...]:
        return tuple(_forward(np.asarray(p, np.float64), *args))

    need_n = op.need_n

    def host_vjp(p: Any, c: Any, cc: Any, ee: Any, g_dff: Any, g_c: Any) -> np.ndarray:
        rec = [np.asarray(x, np.float64) for x in (c, cc, ee, g_dff, g_c)]
        return np.asarray(_vjp(np.asarray(p, np.float64), *args, *rec, need_n))

    # samplers that differentiate the JAX log density themselves (numpyro) need a
    # custom VJP: the same adjoint kernel, fed by the forward record
    @jax.custom_vjp
    def call(p_raw: Any) -> Any:
        return jax.pure_callback(host, shapes, p_raw, vmap_method="sequential")

    def call_fwd(p_raw: Any) -> Any:
        out = call(p_raw)
        return out, (p_raw, out[1], out[2], out[3])

    def call_bwd(res: Any, gs: Any) -> Any:
        p_raw, c, cc, ee = res
        shape = jax.ShapeDtypeStruct(p_raw.shape, jnp.float64)
        pbar = jax.pure_callback(
            host_vjp, shape, p_raw, c, cc, ee, gs[0], gs[1], vmap_method="sequential"
        )
        return (pbar,)

    call.defvjp(call_fwd, call_bwd)

    def solve(p_raw: Any, *_consts: Any) -> Any:
        return call(p_raw)

    return solve


@jax_funcify.register(SolveVJPOp)
def _jax_vjp(op: SolveVJPOp, node: Apply | None = None, **kwargs: Any) -> Any:
    if node is None:
        raise TypeError("SolveVJPOp needs its node to be converted to JAX")
    args = op._kernel_args(_const_values(node))
    need_n = op.need_n
    n_p = node.inputs[0].type.shape[0]
    _vjp = op.vjp_tape

    def host(p: Any, c: Any, cc: Any, ee: Any, g_dff: Any, g_c: Any) -> np.ndarray:
        rec = [np.asarray(x, np.float64) for x in (c, cc, ee, g_dff, g_c)]
        return np.asarray(_vjp(np.asarray(p, np.float64), *args, *rec, need_n))

    def solve_vjp(p_raw: Any, *rest: Any) -> Any:
        c, cc, ee, g_dff, g_c = rest[_N_CONST:]
        shape = jax.ShapeDtypeStruct((n_p if n_p is not None else p_raw.shape[0],), jnp.float64)
        return jax.pure_callback(
            host, shape, p_raw, c, cc, ee, g_dff, g_c, vmap_method="sequential"
        )

    return solve_vjp
