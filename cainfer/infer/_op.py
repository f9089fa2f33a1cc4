"""The forward solve and its adjoint as PyTensor Ops, with numba implementations.

The sampler's log-density gradient runs through these two Ops. Their numba
implementations call the compiled kernels of :mod:`cainfer.forward` directly,
so a numba-compiled graph (nutpie's default backend) never leaves compiled
code; the Python ``perform`` serves the other backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType
from pytensor.graph.basic import Apply, Variable
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch import numba_funcify
from pytensor.link.numba.dispatch.basic import numba_njit

from cainfer.forward import _adjoint as A
from cainfer.forward._specialize import specialized

_N_CONST = 9  # schedule (op, arg, t, h), event weights, codes, offsets, waveform t, v


class _SolveBase(Op):
    __props__ = (
        "ev_slot", "has_er", "pm_slot", "er_slot", "need_n", "codes", "offsets", "kinetic",
        "generated", "system",
    )  # fmt: skip

    def __init__(
        self,
        ev_slot: int,
        has_er: bool,
        pm_slot: int,
        er_slot: int,
        need_n: bool,
        codes: Sequence[int],
        offsets: Sequence[int],
        kinetic: bool = False,
        generated: Sequence[Any] = (),
        system: str = "",
    ):
        self.ev_slot = int(ev_slot)
        self.has_er = bool(has_er)
        self.pm_slot = int(pm_slot)
        self.er_slot = int(er_slot)
        self.need_n = bool(need_n)
        self.codes = tuple(int(k) for k in codes)
        self.offsets = tuple(int(o) for o in offsets)
        self.kinetic = bool(kinetic)
        self.generated = tuple(generated)  # terms defined by a rate expression (their code)
        self.system = str(system)  # a model with gating states: its system's source
        super().__init__()

    @property
    def kernels(self) -> Any:
        """The adjoint module specialised to this model's terms (numba dispatchers).

        For a model with gating states, its compiled system
        (:mod:`cainfer.forward._system`), whose ΔF/F solve and adjoint take the
        same arguments.
        """
        if self.system:
            from cainfer.forward._system import compiled

            return compiled(self.system)
        return specialized(self.codes, self.offsets, self.generated)

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
            self.ev_slot, self.has_er, self.pm_slot, self.er_slot, self.need_n, self.codes,
            self.offsets, self.kinetic, self.generated, self.system,
        )  # fmt: skip

    def _kernel_args(self, consts: list[Any]) -> tuple[Any, ...]:
        op, arg, tt, hh, ev_w, codes, offsets, wt, wv = consts
        return (
            op,
            arg,
            tt,
            hh,
            ev_w,
            self.ev_slot,
            codes,
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


# One compiled wrapper per model structure, shared by the sampler's graph and the
# Python-side solves (predictive, step search). Its flags and slots are closure
# constants, so numba compiles the solver with them as literals (the kinetic solve
# measured about 15 % faster so), and its constant arrays arrive read-only, as a
# graph's constants do: the solver's types are then the same for every caller, and
# a first fit compiles it once instead of once per caller.
_WRAPPERS: dict[tuple[Any, ...], Any] = {}


def _frozen(values: Any, dtype: Any = np.int64) -> np.ndarray:
    """A read-only C-contiguous copy of ``values`` (the type of a graph's constant)."""
    a = np.array(values, dtype=dtype, order="C")
    a.flags.writeable = False
    return a


def _wrapper(op: _SolveBase, vjp: bool) -> Any:
    """The numba wrapper calling ``op``'s forward (``vjp`` False) or adjoint kernel."""
    kernel = op.vjp_tape if vjp else op.forward_tape
    key = (id(kernel), vjp, op.ev_slot, op.has_er, op.pm_slot, op.er_slot, op.need_n and vjp,
           op.codes, op.offsets)  # fmt: skip
    hit = _WRAPPERS.get(key)
    if hit is not None and hit[0] is kernel:
        return hit[1]
    ev_slot, has_er, pm_slot, er_slot, need_n = (
        op.ev_slot, op.has_er, op.pm_slot, op.er_slot, op.need_n
    )  # fmt: skip
    # The model's term codes and offsets are closure constants too (numba freezes the
    # arrays into the compiled code; their types are those of a graph's read-only
    # constants, so the kernel is not compiled again), and the arguments of the same
    # names are not read: they are the op's own (``_solve_parts``). Called from Python
    # with them as arguments, the forward solve of 36 000 frames took 6.6 ms against
    # 2.7 ms inside a graph, where they are constants.
    codes_k = _frozen(op.codes)
    offsets_k = _frozen(op.offsets)
    if vjp:

        @numba_njit
        def solve_vjp(  # type: ignore[no-untyped-def]
            p_raw, sop, sarg, tt, hh, ev_w, codes, offsets, wt, wv, c, cc, ee, g_dff, g_c
        ):
            return kernel(
                p_raw, sop, sarg, tt, hh, ev_w, ev_slot, codes_k, offsets_k, wt, wv, has_er,
                pm_slot, er_slot, c, cc, ee, g_dff, g_c, need_n,
            )  # fmt: skip

        fn = solve_vjp
    else:

        @numba_njit(final_function=True)  # also called from Python (forward_solver)
        def solve(p_raw, sop, sarg, tt, hh, ev_w, codes, offsets, wt, wv):  # type: ignore[no-untyped-def]
            return kernel(
                p_raw, sop, sarg, tt, hh, ev_w, ev_slot, codes_k, offsets_k, wt, wv, has_er,
                pm_slot, er_slot,
            )  # fmt: skip

        fn = solve
    _WRAPPERS[key] = (kernel, fn)
    return fn


@numba_funcify.register(SolveOp)
def _numba_solve(op: SolveOp, node: Apply | None = None, **kwargs: Any) -> Any:
    return _wrapper(op, vjp=False)


@numba_funcify.register(SolveVJPOp)
def _numba_vjp(op: SolveVJPOp, node: Apply | None = None, **kwargs: Any) -> Any:
    return _wrapper(op, vjp=True)


class OutputPlan(NamedTuple):
    """Which frames the solver outputs, and how the others are read off them.

    With an output stride ``k`` the solver stops at every ``k``-th frame
    (the *anchors*, with the first and last frame; with one stride per
    frame, each anchor's own stride on) and at every frame near a break of
    the solution's smoothness (a stimulus event, a knot of its waveform),
    taking steps as long as the stretch between two anchors. Every
    other frame is the cubic through the four nearest anchors (Lagrange
    weights on their times), which no break lies between. Its error on a
    smooth solution is at most ``0.023·(k·Δt)⁴·|d⁴x/dt⁴|`` between anchors
    (0.042 in the one-sided stencils at the ends): for a decay of time
    constant τ, ``0.023·(kΔt/τ)⁴`` of its amplitude.
    """

    anchors: np.ndarray  #: (A,) indices of the frames the solver outputs
    stencil: np.ndarray  #: (4, N) each frame's stencil, as positions among the anchors
    weights: np.ndarray  #: (4, N) its cubic Lagrange weights

    def apply(self, xp: Any, at_anchors: Any) -> Any:
        """Values at every frame from values at the anchors (time last; numpy or pytensor)."""
        return sum(self.weights[m] * at_anchors[..., self.stencil[m]] for m in range(4))


def output_plan(
    time: np.ndarray, breaks: np.ndarray, stride: int | np.ndarray
) -> OutputPlan | None:
    """The :class:`OutputPlan` of frame times ``time`` (s) at output stride ``stride``.

    ``stride``: frames per solver stop, one for all or one per frame (the
    most frames the solver steps from that frame to its next stop: short
    where the solution is fast, long where it is slow). ``breaks`` (s):
    times where the solution is not smooth (stimulus events, waveform
    knots). None when every frame would be an anchor anyway (``stride`` 1,
    or fewer than 8 frames).
    """
    t = np.asarray(time, dtype=float)
    n = t.size
    s = np.broadcast_to(np.asarray(stride, dtype=np.int64), (n,))
    if n < 8 or not np.any(s > 1):
        return None
    br = np.sort(np.asarray(breaks, dtype=float))
    anchor = np.zeros(n, dtype=bool)
    if s.min() == s.max():
        anchor[:: int(s[0])] = True
    else:
        i = 0
        while i < n:
            anchor[i] = True
            i += max(int(s[i]), 1)
    anchor[-1] = True
    while True:
        a = np.flatnonzero(anchor)
        # a frame's stencil: the two anchors either side of it (shifted inward at the ends)
        first = np.clip(np.searchsorted(a, np.arange(n)) - 2, 0, a.size - 4)
        lo, hi = t[a[first]], t[a[first + 3]]
        # a break in (t_lo, t_hi] (an output at an event's time sees the event)
        crossed = np.searchsorted(br, hi, side="right") > np.searchsorted(br, lo, side="right")
        bad = crossed & ~anchor
        if not bad.any():
            break
        anchor |= bad
    if a.size == n:
        return None
    index = (first[None, :] + np.arange(4)[:, None]).astype(np.int64)
    ts = t[a][index]
    weights = np.ones((4, n))
    for m in range(4):
        for q in range(4):
            if q != m:
                weights[m] *= (t - ts[q]) / (ts[m] - ts[q])
    own = np.searchsorted(a, np.flatnonzero(anchor))  # an anchor is its own value
    weights[:, anchor] = 0.0
    weights[0, anchor] = 1.0
    index[:, anchor] = own[None, :]
    return OutputPlan(a, index, weights)


def solution_breaks(stimulus: Any) -> np.ndarray:
    """Times (s) where a stimulus makes the solution jump or bend: events, waveform knots."""
    if stimulus is None:
        return np.empty(0)
    return np.concatenate([np.asarray(stimulus.events, float),
                           np.asarray(stimulus.waveform_time, float)])  # fmt: skip


def _solve_parts(
    model: Any,
    time: np.ndarray,
    stimulus: Any,
    substeps: int | np.ndarray,
    free: Sequence[str] | None,
    explicit: bool = False,
    stride: int | np.ndarray = 1,
) -> tuple[SolveOp, list[np.ndarray], OutputPlan | None]:
    """The Op, its constant inputs as read-only arrays (see :func:`solve_op`), its plan.

    With an output ``stride`` (:func:`output_plan`) the Op solves at the plan's
    anchors only, each stretch between two of them in as many steps as the most
    any of its frame intervals takes (``substeps``), and the caller reads the
    frames off the anchors (:meth:`OutputPlan.apply`); the plan is None when
    the Op's outputs are the frames themselves.
    """
    t = np.asarray(time, dtype=float)
    plan = output_plan(t, solution_breaks(stimulus), stride)
    if plan is None:
        ka = model.kernel_args(t, stimulus, substeps=substeps)
    else:
        a = plan.anchors
        n = np.broadcast_to(np.asarray(substeps, dtype=np.int64), (t.size - 1,))
        n_a = np.maximum.reduceat(n, a[:-1])  # the most steps any frame of a stretch takes
        ka = model.kernel_args(t[a], stimulus, substeps=n_a)
        steps = np.empty(a.size)
        steps[1:] = np.diff(t[a]) / n_a
        steps[0] = steps[1]
        ka = ka._replace(steps=steps)
    sop, sarg, tt, hh = A.solver_schedule(
        ka.time, ka.event_times, ka.steps, model.kinetic, bool(explicit)
    )
    hill = {name for name, q in model.parameters.items() if q.role == "hill"}
    need_n = free is None or bool(hill & set(free))
    op = SolveOp(ka.event_slot, ka.has_er, ka.pm_leak_slot, ka.er_leak_slot, need_n, ka.codes,
                 ka.offsets, model.kinetic, model.generated_terms,
                 model.system_source())  # fmt: skip
    consts = [
        _frozen(x, dtype)
        for x, dtype in (
            (sop, np.int64),
            (sarg, np.int64),
            (tt, np.float64),
            (hh, np.float64),
            (ka.event_weights, np.float64),
            (ka.codes, np.int64),
            (ka.offsets, np.int64),
            (ka.waveform_time, np.float64),
            (ka.waveform_values, np.float64),
        )
    ]
    return op, consts, plan


def forward_solver(
    model: Any,
    time: np.ndarray,
    stimulus: Any,
    *,
    substeps: int | np.ndarray = 1,
    explicit: bool = False,
    stride: int | np.ndarray = 1,
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The compiled ΔF/F solve of a model on a time grid: ``forward(p_raw)`` → (ΔF/F, Ca).

    It runs the same compiled code as the sampler's log density (one compile
    serves both) over a schedule computed once.

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
    explicit : bool
        A kinetic indicator's system in RK4 steps instead of the implicit
        SDIRK ones (no effect with an indicator in equilibrium).
    stride : int or numpy.ndarray
        Output stride (:func:`output_plan`; one for all frames or one per
        frame): the solver stops at every ``stride``-th frame and near the
        stimulus's events, and the frames between are interpolated (1: every
        frame solved).

    Returns
    -------
    callable
        ``forward(p_raw)`` with ``p_raw`` the unbalanced packed parameter vector
        (:meth:`CellModel.pack_raw`); returns ΔF/F and free Ca (µM) at ``time``.
    """
    op, consts, plan = _solve_parts(model, time, stimulus, substeps, None, explicit, stride)
    fn = _wrapper(op, vjp=False)

    def forward(p_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.array(p_raw, dtype=np.float64, order="C")  # writable, contiguous: one type
        out = fn(p, *consts)
        if plan is not None:
            return plan.apply(np, out[0]), plan.apply(np, out[1])
        return out[0], out[1]

    return forward


def solve_op(
    model: Any,
    time: np.ndarray,
    stimulus: Any,
    *,
    substeps: int | np.ndarray = 1,
    free: Sequence[str] | None = None,
    explicit: bool = False,
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
    explicit : bool
        A kinetic indicator's system in RK4 steps (see :func:`forward_solver`).
    """
    op, arrays, _ = _solve_parts(model, time, stimulus, substeps, free, explicit)
    consts: list[Variable] = [pt.as_tensor_variable(a) for a in arrays]
    return op, consts
