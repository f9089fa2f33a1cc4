"""How many solver steps per frame a fit needs: the solver error against the posterior width."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from cainfer.forward import CellModel, Stimulus
from cainfer.forward import _adjoint as A
from cainfer.forward import _kernels as K
from cainfer.forward.model import _LAMBDA_H
from cainfer.infer._draws import (
    _packed,
)
from cainfer.infer._op import forward_solver
from cainfer.infer.observation import (
    ObservedData,
    noise_scale,
)
from cainfer.infer.result import (
    SOLVER_TOLERANCE,
    Fit,
)

_MAX_SUBSTEPS = 64


def _dff_noise(data: ObservedData) -> np.ndarray:
    """``(roi,)`` robust noise sd of the recording in the model's ΔF/F units."""
    sd = np.array([noise_scale(row) for row in data.y])
    if data.kind in ("fluorescence", "ratio"):
        level = data.f0 if (data.kind == "fluorescence" and data.f0 is not None) else (
            data.rest_level
        )  # fmt: skip
        sd = sd / np.maximum(np.abs(np.asarray(level, dtype=float)), 1e-12)
    return sd


class _Solves:
    """ΔF/F solves of one model and recording, each (vector, step counts) done once.

    The step search asks for the solve at ``n`` and ``2n`` steps per frame at
    each refinement; the ``2n`` of one is often the ``n`` of the next.
    """

    def __init__(
        self, model: CellModel, t: np.ndarray, stimulus: Stimulus | None, explicit: bool = False
    ) -> None:
        self.model, self.t, self.stimulus = model, t, stimulus
        self.explicit = bool(explicit) and model.kinetic
        self._order = 3 if model.kinetic and not self.explicit else 4
        self._solvers: dict[bytes, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {}
        self._out: dict[tuple[bytes, bytes], tuple[np.ndarray, np.ndarray]] = {}

    def solve(
        self, v: np.ndarray, substeps: int | np.ndarray, stride: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """ΔF/F and free Ca of packed vector ``v`` at ``substeps`` steps per frame (or interval).

        ``stride``: the solver's output stride (:func:`cainfer.infer._op.output_plan`).
        """
        n = np.broadcast_to(np.asarray(substeps, dtype=np.int64), (max(self.t.size - 1, 0),))
        steps = n.tobytes() + bytes([min(int(stride), 255)])
        key = (steps, np.ascontiguousarray(v, dtype=float).tobytes())
        if key not in self._out:
            if steps not in self._solvers:
                self._solvers[steps] = forward_solver(
                    self.model, self.t, self.stimulus, substeps=np.ascontiguousarray(n),
                    explicit=self.explicit, stride=int(stride),
                )  # fmt: skip
            dff, ca = self._solvers[steps](v)
            self._out[key] = (np.asarray(dff), np.asarray(ca))
        return self._out[key]

    def dff(self, v: np.ndarray, substeps: int | np.ndarray, stride: int = 1) -> np.ndarray:
        """ΔF/F of :meth:`solve`."""
        return self.solve(v, substeps, stride)[0]

    def error(self, v: np.ndarray, substeps: int | np.ndarray) -> np.ndarray:
        """Richardson's estimate of the ΔF/F error at ``substeps``: ``(d_n − d_2n)·2^p/(2^p − 1)``.

        ``p`` is the solver's order: RK4 fourth (also a kinetic indicator's
        explicit solve), the kinetic SDIRK third.
        """
        gain = 2.0**self._order / (2.0**self._order - 1.0)
        return gain * (self.dff(v, substeps) - self.dff(v, 2 * np.asarray(substeps)))


def _solver_error(
    model: CellModel,
    vectors: Sequence[np.ndarray],
    t: np.ndarray,
    stimulus: Stimulus | None,
    substeps: int | np.ndarray,
    noise: np.ndarray,
    *,
    slots: Sequence[int] | None = None,
    solves: _Solves | None = None,
    explicit: bool = False,
    stride: int = 1,
) -> float:
    """How far the ΔF/F solve's error moves the fit, worst over the ROIs.

    The error ``δ`` at ``substeps`` steps per frame (one count, or one per
    frame interval) is estimated by Richardson extrapolation from the solve
    at twice as many (RK4 is fourth order, the kinetic SDIRK third):
    ``δ ≈ (d_n − d_2n) · 2^p/(2^p − 1)``.
    Without ``slots``: ``‖δ‖/σ`` (L2 over the frames, ``σ`` the noise sd of
    the ΔF/F), a bound on how many posterior sds any parameter can move.
    With ``slots`` (the free parameters' slots in the packed vector): the
    linearised shift itself, the largest over the free parameters in their
    own (white-noise) posterior sds: least squares of ``δ`` on the ΔF/F's
    sensitivities to them, with a constant and the ΔF/F itself (the
    observation's offset and scale) fitted out of both (Frisch–Waugh–Lovell).
    ``solves`` (of the same model, ``t`` and ``stimulus``) keeps the solves
    for the next call. ``explicit``: a kinetic indicator's system solved in
    RK4 steps (:func:`cainfer.infer._op.forward_solver`). ``stride``: the
    solve's output stride; its error is then the strided solve's difference
    from the solve of every frame at twice the steps.
    """
    if slots is not None and not len(slots):
        return 0.0  # nothing free for the error to move
    solves = solves if solves is not None else _Solves(model, t, stimulus, explicit)
    worst = 0.0
    for r, v in enumerate(vectors):
        sigma = float(noise[min(r, noise.size - 1)])
        fine = solves.dff(v, 2 * np.asarray(substeps))
        if stride > 1:
            delta = solves.dff(v, substeps, stride) - fine
        else:
            delta = solves.error(v, substeps)
        if slots is not None and np.all(np.isfinite(delta)):
            cols = []
            for slot in slots:
                h = 1e-5 * max(abs(float(v[slot])), 1e-6)
                up = v.copy()
                up[slot] += h
                cols.append((solves.dff(up, 2 * np.asarray(substeps)) - fine) / h)
            # Frisch–Waugh–Lovell: the free parameters' estimates see the error and
            # their sensitivities with the observation's offset and scale fitted out
            nuis = np.column_stack([np.ones_like(fine), fine])

            def resid(x: np.ndarray, basis: np.ndarray = nuis) -> np.ndarray:
                return x - basis @ np.linalg.lstsq(basis, x, rcond=None)[0]

            sens = resid(np.column_stack(cols))
            shift = np.linalg.lstsq(sens, resid(delta), rcond=None)[0]
            sd = np.sqrt(np.diag(np.linalg.pinv(sens.T @ sens)))
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.abs(shift) / (sd * sigma)
            e = float(np.max(np.where(sd > 0, z, 0.0)))
        else:
            e = float(np.sqrt(np.sum(delta**2))) / sigma
        worst = max(worst, e if np.isfinite(e) else np.inf)
    return worst


def _choose_substeps(
    model: CellModel,
    vectors: Sequence[np.ndarray],
    t: np.ndarray,
    stimulus: Stimulus | None,
    noise: np.ndarray,
    *,
    slots: Sequence[int] | None = None,
    first: int | np.ndarray = 1,
    also: Sequence[np.ndarray] = (),
    explicit: bool = False,
) -> np.ndarray:
    """Solver steps per frame interval: few where the solve is easy, more where it is not.

    From ``first`` steps in every interval (or the counts given, one per
    interval), the intervals where the solve's error grows most are doubled,
    with ``_REFINE_MARGIN`` intervals either side, until the error moves no
    free parameter by more than ``SOLVER_TOLERANCE`` posterior sd
    (:func:`_solver_error`) at any of ``vectors`` (one per ROI, each with its
    noise) or of ``also`` (more vectors held to the first ROI's noise: where
    the fast phases would be if the parameters were elsewhere). The error
    ``δ`` of each interval's end is Richardson's (as in
    :func:`_solver_error`); its growth over the interval, ``δ_i − δ_{i−1}``,
    is where the solve loses accuracy: the fast phases after events or
    during release, rarely the slow decays between them. The intervals
    doubled are the fewest that hold ``_REFINE_SHARE`` of the summed squared
    growth (in noise sds). Counts stop at ``_MAX_SUBSTEPS``. ``explicit``: a
    kinetic indicator's system solved in RK4 steps.

    Returns
    -------
    numpy.ndarray
        ``(len(t) − 1,)`` integer steps per frame interval.
    """
    from scipy.ndimage import binary_dilation

    n_int = max(t.size - 1, 0)
    n = np.clip(np.broadcast_to(np.asarray(first, dtype=np.int64), (n_int,)), 1, _MAX_SUBSTEPS)
    solves = _Solves(model, t, stimulus, explicit)
    points = [(v, float(noise[min(r, noise.size - 1)])) for r, v in enumerate(vectors)]
    # a vector the solve cannot follow even at the finest step is no place the fit goes
    points += [
        (v, float(noise[0]))
        for v in also
        if np.all(np.isfinite(solves.dff(v, np.full(n_int, _MAX_SUBSTEPS))))
    ]
    while n_int and np.any(n < _MAX_SUBSTEPS):
        err = max(
            _solver_error(model, [v], t, stimulus, n, np.array([sd]), slots=slots, solves=solves)
            for v, sd in points
        )
        if err <= SOLVER_TOLERANCE:
            break
        growth = np.zeros(n_int)
        for v, sd in points:
            delta = solves.error(v, n) / sd
            growth += np.where(np.isfinite(delta[1:]), np.diff(delta), np.inf) ** 2
        growth[n >= _MAX_SUBSTEPS] = 0.0
        total = float(growth.sum())
        if not np.isfinite(total) or total <= 0.0:
            pick = n < _MAX_SUBSTEPS  # no place stands out (or the solve failed): all
        else:
            order = np.argsort(growth)[::-1]
            k = int(np.searchsorted(np.cumsum(growth[order]), _REFINE_SHARE * total)) + 1
            pick = np.zeros(n_int, dtype=bool)
            pick[order[:k]] = True
            pick = binary_dilation(pick, iterations=_REFINE_MARGIN)
        n[pick] = np.minimum(2 * n[pick], _MAX_SUBSTEPS)
    return n


def _choose_stride(
    model: CellModel,
    vectors: Sequence[np.ndarray],
    t: np.ndarray,
    stimulus: Stimulus | None,
    noise: np.ndarray,
    substeps: np.ndarray,
    *,
    slots: Sequence[int] | None = None,
    also: Sequence[np.ndarray] = (),
    explicit: bool = False,
) -> int:
    """The longest output stride whose solve is as good as solving every frame.

    Frames far from the stimulus's events change smoothly on the scale of
    the frame interval when the frame rate is high against the cell's time
    constants; there the solver need not stop at every frame
    (:func:`cainfer.infer._op.output_plan`), and a solve costs about one over
    the stride as much. The strides of ``_STRIDES`` are tried from the
    longest; the first whose error moves no free parameter by more than
    ``SOLVER_TOLERANCE`` posterior sd at any of ``vectors`` or ``also`` (as
    :func:`_choose_substeps` holds the steps to) is taken, else 1.
    """
    if model.has_er or model.kinetic or model.stateful or t.size < 8:
        # ER release and uptake have fast phases wherever the ER fires; the other two
        # have states besides free calcium, which _fastest_rate does not follow
        return 1
    solves = _Solves(model, t, stimulus, explicit)
    points = [(v, float(noise[min(r, noise.size - 1)])) for r, v in enumerate(vectors)]
    # a vector the solve of every frame cannot follow is no place the fit goes
    points += [(v, float(noise[0])) for v in also if np.all(np.isfinite(solves.dff(v, substeps)))]
    # stability: a step of k frames keeps |λ|·h within the simulator's bound at every
    # point, so that the sampler can stray far (λ ×14) before RK4 turns unstable
    lam = max(_fastest_rate(model, solves, v, substeps) for v, _ in points)
    longest = float(np.max(np.diff(t)))
    for k in _STRIDES:
        if 4 * k > t.size or not lam * k * longest <= _LAMBDA_H:
            continue
        err = max(
            _solver_error(
                model,
                [v],
                t,
                stimulus,
                substeps,
                np.array([sd]),
                slots=slots,
                solves=solves,
                stride=k,
            )
            for v, sd in points
        )
        if err <= SOLVER_TOLERANCE:
            return k
    return 1


# output strides tried, longest first (frames per solver stop between events)
_STRIDES = (16, 12, 8, 6, 4, 3, 2)


def _fastest_rate(model: CellModel, solves: _Solves, v: np.ndarray, substeps: np.ndarray) -> float:
    """The fastest relaxation rate (1/s) of free calcium over the range its solve visits.

    For a cell whose one state is free calcium (no ER, the indicator in
    equilibrium, no gated terms): ``|d/dc (J(c)/β(c))|``, ``J`` the net flux
    and ``β`` the buffering capacity, by central differences on a grid over
    the range of the solve of every frame at ``substeps`` (``solves``, of the
    same model). The flux is the kernels' own ``net_flux``, which every fit
    has compiled (the model's resting balance), and ``β`` their
    ``buffer_capacity`` run as Python; the Jacobian kernel ``jacobian_bound``
    would cost a first fit 3.5 s more to compile.
    """
    ca = solves.solve(v, substeps)[1]
    if not np.all(np.isfinite(ca)):
        return math.inf
    lo, hi = max(0.9 * float(np.min(ca)), 1e-9), max(1.1 * float(np.max(ca)), 1e-9)
    kern, _ = model.kernels()
    p = np.array(v, dtype=np.float64)
    buffers = (p[K.G_KAPPA_S], p[K.G_BT], p[K.G_KD], p[K.G_HILL])
    empty = np.empty(0)

    def rate(c: float) -> float:
        jpm, jx = kern.net_flux(-math.inf, c, 0.0, p, model._codes, model._offsets, empty, empty)
        return float(jpm + jx) / K.buffer_capacity.py_func(c, *buffers)

    lam = 0.0
    for c in np.geomspace(lo, hi, 32):
        h = 1e-6 * c
        lam = max(lam, abs(rate(c + h) - rate(c - h)) / (2.0 * h))
    return lam if math.isfinite(lam) else math.inf


def _solver_steps(
    model: CellModel,
    t: np.ndarray,
    stimulus: Stimulus | None,
    substeps: int | np.ndarray,
    explicit: bool,
) -> int:
    """How many solver steps a ΔF/F solve takes at these step counts (schedule entries)."""
    ka = model.kernel_args(t, stimulus, substeps=substeps)
    op = A.solver_schedule(ka.time, ka.event_times, ka.steps, model.kinetic, bool(explicit))[0]
    return int(np.sum((op == K.S_STEP) | (op == K.S_RK4)))


def _choose_solver(
    model: CellModel,
    vectors: Sequence[np.ndarray],
    t: np.ndarray,
    stimulus: Stimulus | None,
    noise: np.ndarray,
    *,
    slots: Sequence[int] | None = None,
    also: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, bool]:
    """Steps per frame interval (:func:`_choose_substeps`) and whether they are RK4's.

    An indicator in equilibrium is solved by RK4. A kinetic indicator's system
    is stiff where binding is fast against the frame: there the implicit
    SDIRK steps are needed, elsewhere RK4 reaches the same accuracy for less
    (:data:`_RK4_COST`). RK4's steps are searched first; unless they cost
    less than the implicit solve's fewest (one step per frame, graded after
    events), the implicit steps are searched too and the cheaper solve is
    taken. RK4's accuracy is checked at the same vectors (the start and each
    free parameter moved either way), so a binding too fast for its steps
    there makes the search refine them or choose the implicit solve.
    """
    if not model.kinetic:
        return _choose_substeps(model, vectors, t, stimulus, noise, slots=slots, also=also), False
    rk4 = _choose_substeps(
        model, vectors, t, stimulus, noise, slots=slots, also=also, explicit=True
    )
    usable = bool(np.all(rk4 < _MAX_SUBSTEPS))
    cost_rk4 = _RK4_COST * _solver_steps(model, t, stimulus, rk4, True)
    if usable and cost_rk4 < _solver_steps(model, t, stimulus, 1, False):
        return rk4, True
    implicit = _choose_substeps(model, vectors, t, stimulus, noise, slots=slots, also=also)
    if usable and cost_rk4 < _solver_steps(model, t, stimulus, implicit, False):
        return rk4, True
    return implicit, False


# An RK4 step of a kinetic indicator's system, solve and adjoint, costs about this
# fraction of an implicit SDIRK step (three Newton-solved stages): 0.89 against
# 2.28 µs on the kinetic GCaMP6s cell of benchmarks/kinetic.py (1800 frames).
_RK4_COST = 0.4


def _spread_vectors(v: np.ndarray, slots: Sequence[int]) -> list[np.ndarray]:
    """``v`` with each free parameter in turn ×/÷ ``e^_SPREAD``: where else the fit may go."""
    out = []
    for slot in slots:
        for f in (math.exp(_SPREAD), math.exp(-_SPREAD)):
            w = v.copy()
            w[slot] *= f
            out.append(w)
    return out


# the step search doubles the intervals holding this share of the error's squared growth,
# and this many intervals either side; it also checks the start with each free parameter
# moved by this log factor (a posterior mode is seldom further from the prior's centre)
_REFINE_SHARE = 0.95
_REFINE_MARGIN = 2
_SPREAD = 0.5


def _median_vectors(result: Fit) -> list[np.ndarray]:
    """Packed parameter vectors at the posterior median, one per ROI of the fit."""
    model = result.model
    base = model.pack_raw(model.values(result.fixed))
    post = result.idata["posterior"]
    median = {}
    for k in result.free:
        a = np.asarray(post[k])
        median[k] = np.median(a.reshape(a.shape[0] * a.shape[1], -1), axis=0, keepdims=True)
    n_roi = 1 if result.rois is None else len(result.rois)
    return [_packed(base, model.slots(), median, r, n=1)[0] for r in range(n_roi)]
