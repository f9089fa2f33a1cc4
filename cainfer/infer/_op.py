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
from cainfer.forward._specialize import specialized

_N_CONST = 9  # schedule (op, arg, t, h), event weights, kinds, offsets, waveform t, v


class _SolveBase(Op):
    __props__ = (
        "ev_slot", "has_er", "pm_slot", "er_slot", "need_n", "kinds", "offsets", "kinetic"
    )  # fmt: skip

    def __init__(
        self,
        ev_slot: int,
        has_er: bool,
        pm_slot: int,
        er_slot: int,
        need_n: bool,
        kinds: Sequence[int],
        offsets: Sequence[int],
        kinetic: bool = False,
    ):
        self.ev_slot = int(ev_slot)
        self.has_er = bool(has_er)
        self.pm_slot = int(pm_slot)
        self.er_slot = int(er_slot)
        self.need_n = bool(need_n)
        self.kinds = tuple(int(k) for k in kinds)
        self.offsets = tuple(int(o) for o in offsets)
        self.kinetic = bool(kinetic)
        super().__init__()

    @property
    def kernels(self) -> Any:
        """The adjoint module specialised to this model's terms (numba dispatchers)."""
        return specialized(self.kinds, self.offsets)

    @property
    def forward_tape(self) -> Any:
        """The compiled forward kernel with its record (kinetic or equilibrium indicator)."""
        k = self.kernels
        return k.kinetic_dff_forward_tape if self.kinetic else k.dff_forward_tape

    @property
    def vjp_tape(self) -> Any:
        """The compiled adjoint that replays :attr:`forward_tape`'s record."""
        k = self.kernels
        return k.kinetic_dff_vjp_tape if self.kinetic else k.dff_vjp_tape

    def _props_args(self) -> tuple[Any, ...]:
        return (
            self.ev_slot, self.has_er, self.pm_slot, self.er_slot, self.need_n, self.kinds,
            self.offsets, self.kinetic,
        )  # fmt: skip

    def _kernel_args(self, consts: list[Any]) -> tuple[Any, ...]:
        op, arg, tt, hh, ev_w, kinds, offsets, wt, wv = consts
        return (
            op,
            arg,
            tt,
            hh,
            ev_w,
            self.ev_slot,
            kinds,
            offsets,
            wt,
            wv,
            self.has_er,
            self.pm_slot,
            self.er_slot,
        )


class SolveOp(_SolveBase):
    """Unbalanced parameter vector → (ΔF/F, free Ca, forward record, forward record).

    The first two outputs are ΔF/F and free Ca (µM) at the output times; the
    other two are what the gradient replays instead of solving again: the
    free cytosolic and ER Ca before each step of the solver's schedule
    (equilibrium indicator), or the bound indicator at the outputs and the
    state and stages of every step (kinetic indicator).
    """

    def make_node(self, p_raw: Any, *consts: Any) -> Apply:  # type: ignore[override]
        p = pt.as_tensor_variable(p_raw).astype("float64")
        if len(consts) != _N_CONST:
            raise ValueError(f"SolveOp takes the parameters and {_N_CONST} constant inputs")
        inputs = [p, *(pt.as_tensor_variable(x) for x in consts)]
        return Apply(self, inputs, [pt.dvector(), pt.dvector(), pt.dvector(), pt.dvector()])

    def perform(self, node: Apply, inputs: Sequence[Any], outputs: Any) -> None:
        res = self.forward_tape(inputs[0], *self._kernel_args(list(inputs[1:])))
        for out, value in zip(outputs, res, strict=True):
            out[0] = value

    def connection_pattern(self, node: Apply) -> list[list[bool]]:
        return [[True, True, True, True]] + [[False] * 4] * _N_CONST

    def pullback(  # type: ignore[override]
        self, inputs: list[Variable], outputs: list[Variable], cotangents: list[Variable]
    ) -> list[Variable]:
        g_dff, g_c = (
            pt.zeros_like(o) if isinstance(g.type, DisconnectedType) else g
            for o, g in zip(outputs[:2], cotangents[:2], strict=True)
        )
        vjp = SolveVJPOp(*self._props_args())
        pbar = cast(Variable, vjp(inputs[0], *inputs[1:], *outputs[1:], g_dff, g_c))
        return [pbar] + [DisconnectedType()() for _ in range(_N_CONST)]


class SolveVJPOp(_SolveBase):
    """(parameters, forward record, cotangents of ΔF/F and free Ca) → parameter cotangent."""

    def make_node(self, p_raw: Any, *rest: Any) -> Apply:  # type: ignore[override]
        p = pt.as_tensor_variable(p_raw).astype("float64")
        if len(rest) != _N_CONST + 5:
            raise ValueError("SolveVJPOp takes p, the constants, c, cc, ee, g_dff and g_c")
        inputs = [p, *(pt.as_tensor_variable(x) for x in rest)]
        return Apply(self, inputs, [pt.dvector()])

    def perform(self, node: Apply, inputs: Sequence[Any], outputs: Any) -> None:
        p_raw, consts, rec = inputs[0], inputs[1 : 1 + _N_CONST], inputs[1 + _N_CONST :]
        outputs[0][0] = self.vjp_tape(p_raw, *self._kernel_args(list(consts)), *rec, self.need_n)


@numba_funcify.register(SolveOp)
def _numba_solve(op: SolveOp, node: Apply | None = None, **kwargs: Any) -> Any:
    ev_slot, has_er, pm_slot, er_slot = op.ev_slot, op.has_er, op.pm_slot, op.er_slot
    forward = op.forward_tape

    @numba_njit
    def solve(p_raw, sop, sarg, tt, hh, ev_w, kinds, offsets, wt, wv):  # type: ignore[no-untyped-def]
        return forward(
            p_raw, sop, sarg, tt, hh, ev_w, ev_slot, kinds, offsets, wt, wv, has_er, pm_slot,
            er_slot,
        )  # fmt: skip

    return solve


@numba_funcify.register(SolveVJPOp)
def _numba_vjp(op: SolveVJPOp, node: Apply | None = None, **kwargs: Any) -> Any:
    ev_slot, has_er, pm_slot, er_slot = op.ev_slot, op.has_er, op.pm_slot, op.er_slot
    need_n = op.need_n
    vjp = op.vjp_tape

    @numba_njit
    def solve_vjp(p_raw, sop, sarg, tt, hh, ev_w, kinds, offsets, wt, wv, c, cc, ee, g_dff, g_c):  # type: ignore[no-untyped-def]
        return vjp(
            p_raw, sop, sarg, tt, hh, ev_w, ev_slot, kinds, offsets, wt, wv, has_er, pm_slot,
            er_slot, c, cc, ee, g_dff, g_c, need_n,
        )  # fmt: skip

    return solve_vjp


def solve_op(
    model: Any,
    time: np.ndarray,
    stimulus: Any,
    *,
    substeps: int | np.ndarray = 1,
    free: Sequence[str] | None = None,
) -> tuple[SolveOp, list[Variable]]:
    """The Op for a cell model, time grid and stimulus, and its constant inputs.

    Parameters
    ----------
    model : CellModel
        The cell model.
    time : numpy.ndarray
        Output times (s).
    stimulus : Stimulus or None
        The stimulus.
    substeps : int or numpy.ndarray
        Solver steps per frame interval: one count for all, or one per interval.
    free : sequence of str, optional
        Parameters whose gradient is used (default: all). When no Hill
        coefficient is among them, the gradient skips their derivatives.
    """
    (t, ev_t, ev_w, ev_slot, kinds, offsets, wt, wv, has_er, h_max, pm_slot, er_slot) = (
        model.kernel_args(time, stimulus, substeps=substeps)
    )
    sop, sarg, tt, hh = A.solver_schedule(t, ev_t, h_max, model.kinetic)
    hill = {name for name in model.parameters if "hill" in name.split("_")}
    need_n = free is None or bool(hill & set(free))
    op = SolveOp(ev_slot, has_er, pm_slot, er_slot, need_n, kinds, offsets, model.kinetic)
    consts: list[Variable] = [
        pt.as_tensor_variable(np.asarray(x, dtype))
        for x, dtype in (
            (sop, np.int64),
            (sarg, np.int64),
            (tt, np.float64),
            (hh, np.float64),
            (ev_w, np.float64),
            (kinds, np.int64),
            (offsets, np.int64),
            (wt, np.float64),
            (wv, np.float64),
        )
    ]
    return op, consts
