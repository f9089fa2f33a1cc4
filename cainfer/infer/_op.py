"""The forward solve and its adjoint as PyTensor Ops, with numba implementations.

The sampler's log-density gradient runs through these two Ops. Their numba
implementations call the compiled kernels of :mod:`cainfer.forward` directly,
so a numba-compiled graph (nutpie's default backend) never leaves compiled
code; the Python ``perform`` serves the other backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType
from pytensor.graph.basic import Apply, Variable
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch import numba_funcify
from pytensor.link.numba.dispatch.basic import numba_njit

from cainfer.forward import _adjoint as A

_N_CONST = 7
_forward = cast(Any, A.dff_forward)  # numba dispatchers, called with unpacked arguments
_vjp = cast(
    Any, A.dff_vjp
)  # time, event times, event weights, kinds, offsets, waveform t, waveform v


class _SolveBase(Op):
    __props__ = ("ev_slot", "has_er", "h_max", "pm_slot", "er_slot")

    def __init__(self, ev_slot: int, has_er: bool, h_max: float, pm_slot: int, er_slot: int):
        self.ev_slot = int(ev_slot)
        self.has_er = bool(has_er)
        self.h_max = float(h_max)
        self.pm_slot = int(pm_slot)
        self.er_slot = int(er_slot)
        super().__init__()

    def _consts(self, consts: tuple[Any, ...]) -> list[Variable]:
        time, ev_t, ev_w, kinds, offsets, wt, wv = consts
        return [
            pt.as_tensor_variable(np.asarray(time, np.float64)),
            pt.as_tensor_variable(np.asarray(ev_t, np.float64)),
            pt.as_tensor_variable(np.asarray(ev_w, np.float64)),
            pt.as_tensor_variable(np.asarray(kinds, np.int64)),
            pt.as_tensor_variable(np.asarray(offsets, np.int64)),
            pt.as_tensor_variable(np.asarray(wt, np.float64)),
            pt.as_tensor_variable(np.asarray(wv, np.float64)),
        ]

    def _kernel_args(self, consts: list[Any]) -> tuple[Any, ...]:
        time, ev_t, ev_w, kinds, offsets, wt, wv = consts
        return (
            time,
            ev_t,
            ev_w,
            self.ev_slot,
            kinds,
            offsets,
            wt,
            wv,
            self.has_er,
            self.h_max,
            self.pm_slot,
            self.er_slot,
        )


class SolveOp(_SolveBase):
    """Unbalanced parameter vector → (ΔF/F, free Ca) at the output times."""

    def make_node(self, p_raw: Any, *consts: Any) -> Apply:  # type: ignore[override]
        p = pt.as_tensor_variable(p_raw).astype("float64")
        if len(consts) != _N_CONST:
            raise ValueError(f"SolveOp takes the parameters and {_N_CONST} constant inputs")
        inputs = [p, *(pt.as_tensor_variable(x) for x in consts)]
        return Apply(self, inputs, [pt.dvector(), pt.dvector()])

    def perform(self, node: Apply, inputs: Sequence[Any], outputs: Any) -> None:
        dff, c = _forward(inputs[0], *self._kernel_args(list(inputs[1:])))
        outputs[0][0] = dff
        outputs[1][0] = c

    def connection_pattern(self, node: Apply) -> list[list[bool]]:
        return [[True, True]] + [[False, False]] * _N_CONST

    def pullback(  # type: ignore[override]
        self, inputs: list[Variable], outputs: list[Variable], cotangents: list[Variable]
    ) -> list[Variable]:
        gs = [
            pt.zeros_like(o) if isinstance(g.type, DisconnectedType) else g
            for o, g in zip(outputs, cotangents, strict=True)
        ]
        vjp = SolveVJPOp(self.ev_slot, self.has_er, self.h_max, self.pm_slot, self.er_slot)
        pbar = cast(Variable, vjp(inputs[0], *inputs[1:], *gs))
        return [pbar] + [DisconnectedType()() for _ in range(_N_CONST)]


class SolveVJPOp(_SolveBase):
    """(parameters, cotangents of ΔF/F and free Ca) → cotangent of the parameters."""

    def make_node(self, p_raw: Any, *rest: Any) -> Apply:  # type: ignore[override]
        p = pt.as_tensor_variable(p_raw).astype("float64")
        consts, (g_dff, g_c) = rest[:-2], rest[-2:]
        inputs = [
            p,
            *consts,
            pt.as_tensor_variable(g_dff).astype("float64"),
            pt.as_tensor_variable(g_c).astype("float64"),
        ]
        return Apply(self, inputs, [pt.dvector()])

    def perform(self, node: Apply, inputs: Sequence[Any], outputs: Any) -> None:
        p_raw, consts, g_dff, g_c = inputs[0], inputs[1:-2], inputs[-2], inputs[-1]
        outputs[0][0] = _vjp(p_raw, *self._kernel_args(list(consts)), g_dff, g_c)


@numba_funcify.register(SolveOp)
def _numba_solve(op: SolveOp, node: Apply | None = None, **kwargs: Any) -> Any:
    ev_slot, has_er, h_max, pm_slot, er_slot = (
        op.ev_slot,
        op.has_er,
        op.h_max,
        op.pm_slot,
        op.er_slot,
    )
    forward = A.dff_forward

    @numba_njit
    def solve(p_raw, time, ev_t, ev_w, kinds, offsets, wt, wv):  # type: ignore[no-untyped-def]
        return forward(
            p_raw,
            time,
            ev_t,
            ev_w,
            ev_slot,
            kinds,
            offsets,
            wt,
            wv,
            has_er,
            h_max,
            pm_slot,
            er_slot,
        )

    return solve


@numba_funcify.register(SolveVJPOp)
def _numba_vjp(op: SolveVJPOp, node: Apply | None = None, **kwargs: Any) -> Any:
    ev_slot, has_er, h_max, pm_slot, er_slot = (
        op.ev_slot,
        op.has_er,
        op.h_max,
        op.pm_slot,
        op.er_slot,
    )
    vjp = A.dff_vjp

    @numba_njit
    def solve_vjp(p_raw, time, ev_t, ev_w, kinds, offsets, wt, wv, g_dff, g_c):  # type: ignore[no-untyped-def]
        return vjp(
            p_raw,
            time,
            ev_t,
            ev_w,
            ev_slot,
            kinds,
            offsets,
            wt,
            wv,
            has_er,
            h_max,
            pm_slot,
            er_slot,
            g_dff,
            g_c,
        )

    return solve_vjp


def solve_op(
    model: Any, time: np.ndarray, stimulus: Any, *, substeps: int = 1
) -> tuple[SolveOp, list[Variable]]:
    """The Op for a cell model, time grid and stimulus, and its constant inputs."""
    (t, ev_t, ev_w, ev_slot, kinds, offsets, wt, wv, has_er, h_max, pm_slot, er_slot) = (
        model.kernel_args(time, stimulus, substeps=substeps)
    )
    op = SolveOp(ev_slot, has_er, h_max, pm_slot, er_slot)
    return op, op._consts((t, ev_t, ev_w, kinds, offsets, wt, wv))
