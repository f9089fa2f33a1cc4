"""How many solver steps per frame a fit needs: the solver error against the posterior width."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from cainfer.forward import CellModel, Stimulus
from cainfer.forward import _adjoint as A
from cainfer.forward import _kernels as K
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
        self, v: np.ndarray, substeps: int | np.ndarray, stride: int | np.ndarray = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """ΔF/F and free Ca of packed vector ``v`` at ``substeps`` steps per frame (or interval).

        ``stride``: the solver's output stride (:func:`cainfer.infer._op.output_plan`),
        one for all frames or one per frame.
        """
        n = np.broadcast_to(np.asarray(substeps, dtype=np.int64), (max(self.t.size - 1, 0),))
        every = np.broadcast_to(np.asarray(stride, dtype=np.int64), (self.t.size,))
        steps = n.tobytes() + every.tobytes()
        key = (steps, np.ascontiguousarray(v, dtype=float).tobytes())
        if key not in self._out:
            if steps not in self._solvers:
                self._solvers[steps] = forward_solver(
                    self.model, self.t, self.stimulus, substeps=np.ascontiguousarray(n),
                    explicit=self.explicit, stride=np.array(every),
                )  # fmt: skip
            dff, ca = self._solvers[steps](v)
            self._out[key] = (np.asarray(dff), np.asarray(ca))
        return self._out[key]

    def dff(
        self, v: np.ndarray, substeps: int | np.ndarray, stride: int | np.ndarray = 1
    ) -> np.ndarray:
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
    stride: int | np.ndarray = 1,
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
        if np.any(np.asarray(stride) > 1):
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
) -> int | np.ndarray:
    """The longest output strides whose solve is as good as solving every frame.

    Frames far from the stimulus's events change smoothly on the scale of
    the frame interval when the frame rate is high against the cell's time
    constants; there the solver need not stop at every frame
    (:func:`cainfer.infer._op.output_plan`), and a solve costs about one over
    the stride as much.

    Each frame's stride is the longest of ``_STRIDES`` whose step keeps
    ``|λ|·k·Δt`` within ``_STRIDE_LAMBDA_H``, ``λ`` the fastest relaxation
    rate of the states over the frames it spans, at any of ``vectors`` and
    ``also`` (:func:`_frame_rates`): short after an event, where a kinetic
    indicator binds fast, long where the cell rests. These strides, capped
    in turn at each of ``_STRIDES`` from the longest, are held to the
    accuracy the steps are (:func:`_choose_substeps`): the first cap whose
    error moves no free parameter by more than ``SOLVER_TOLERANCE``
    posterior sd at any of the vectors is taken, else 1.

    Returns
    -------
    int or numpy.ndarray
        1 (every frame solved), one stride for all frames, or ``(len(t),)``
        strides, one per frame.
    """
    if model.has_er or model.stateful or t.size < 8:
        # ER release and uptake have fast phases wherever the ER fires; gated terms have
        # states besides calcium and the indicator, which _frame_rates does not follow
        return 1
    solves = _Solves(model, t, stimulus, explicit)
    points = [(v, float(noise[min(r, noise.size - 1)])) for r, v in enumerate(vectors)]
    # a vector the solve of every frame cannot follow is no place the fit goes
    points += [(v, float(noise[0])) for v in also if np.all(np.isfinite(solves.dff(v, substeps)))]
    lam = np.max([_frame_rates(model, solves, v, substeps) for v, _ in points], axis=0)
    local = _local_strides(lam, t)
    tried: list[np.ndarray] = []
    for cap in _STRIDES:
        if 4 * cap > t.size:
            continue
        stride = np.minimum(local, cap)
        if not np.any(stride > 1):
            break
        if any(np.array_equal(stride, s) for s in tried):
            continue  # the same strides as a longer cap's, which failed
        tried.append(stride)
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
                stride=stride,
            )
            for v, sd in points
        )
        if err <= SOLVER_TOLERANCE:
            return int(stride[0]) if np.all(stride == stride[0]) else stride
    return 1


# output strides tried, longest first (frames per solver stop between events)
_STRIDES = (16, 12, 8, 6, 4, 3, 2)
# The longest solver step of a stride, as |λ|·h at the start and spread vectors: RK4
# is stable to |λ|·h = 2.785 (real λ), so the sampler can go where λ is 2.8 times the
# fastest rate the spread vectors reach. python benchmarks/inference.py and
# benchmarks/kinetic.py: a step this long is as accurate as a frame's (the error
# check holds it) and B1 samples the same posterior.
_STRIDE_LAMBDA_H = 1.0


def _local_strides(lam: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(len(t),)`` the longest of ``_STRIDES`` (or 1) each frame may step.

    From frame ``i``, ``k`` frames if ``max(λ[i..i+k])·(t[i+k] − t[i])``
    is at most ``_STRIDE_LAMBDA_H`` (``lam``: each frame's fastest rate,
    1/s); past the last frame the frames go on at the last interval.
    """
    n = t.size
    out = np.ones(n, dtype=np.int64)
    dt_end = float(t[-1] - t[-2]) if n > 1 else 0.0
    for k in sorted(_STRIDES):
        lam_pad = np.concatenate([lam, np.full(k, lam[-1])])
        t_pad = np.concatenate([t, t[-1] + dt_end * np.arange(1, k + 1)])
        span = t_pad[k : k + n] - t
        worst = np.lib.stride_tricks.sliding_window_view(lam_pad, k + 1).max(axis=1)[:n]
        out[worst * span <= _STRIDE_LAMBDA_H] = k  # a longer k also holds the shorter
    return out


def _frame_rates(
    model: CellModel, solves: _Solves, v: np.ndarray, substeps: np.ndarray
) -> np.ndarray:
    """``(len(t),)`` the fastest relaxation rate (1/s) of the states at each frame.

    The largest |eigenvalue| of the states' Jacobian (:func:`_rate_grid`) at
    the free calcium of each frame of the solve of every frame at
    ``substeps`` (``solves``, of the same model): the larger of the rates at
    the two grid points either side.
    """
    ca = np.asarray(solves.solve(v, substeps)[1], dtype=float).ravel()
    if not np.all(np.isfinite(ca)):
        return np.full(ca.size, math.inf)
    lo, hi = max(0.9 * float(np.min(ca)), 1e-9), max(1.1 * float(np.max(ca)), 1e-9)
    grid = np.geomspace(lo, hi, 48)
    rates = _rate_grid(model, v, grid, lo, hi)
    i = np.clip(np.searchsorted(grid, ca), 1, grid.size - 1)
    return np.maximum(rates[i - 1], rates[i])


def _rate_grid(
    model: CellModel, v: np.ndarray, grid: np.ndarray, lo: float, hi: float
) -> np.ndarray:
    """The largest |eigenvalue| of the states' Jacobian (1/s) at each free calcium of ``grid``.

    Central differences. A cell whose one state is free calcium:
    ``|d/dc (J(c)/β(c))|``, ``J`` the net flux and ``β`` the buffering
    capacity; the flux is the kernels' own ``net_flux``, which every fit has
    compiled (the model's resting balance), and ``β`` their
    ``buffer_capacity`` run as Python (the Jacobian kernel ``jacobian_bound``
    would cost a first fit 3.5 s more to compile). A kinetic indicator adds
    its bright bound state ``b``: the kernels' right-hand side, run as
    Python, the larger rate of ``b`` in equilibrium with calcium ``lo`` and
    with ``hi`` (``b`` lags calcium between the two: just after an event
    calcium is high and ``b`` still at rest).
    """
    kern, _ = model.kernels()
    p = np.array(v, dtype=np.float64)
    empty = np.empty(0)
    codes, offsets = model._codes, model._offsets
    out = np.zeros(grid.size)
    if model.kinetic:
        rhs = kern.rhs.py_func

        def flow(y: np.ndarray) -> np.ndarray:
            dc, _, db = rhs(
                -math.inf, y[0], 0.0, y[1], p, codes, offsets, empty, empty, False, True
            )
            return np.array([dc, db])

        def bound(c: float) -> float:  # the bright state in equilibrium with c
            x = K.hill_ratio.py_func(c, p[K.G_KD], p[K.G_HILL])
            return float(p[K.G_BT] * x / ((1.0 + p[K.G_PHI]) * (1.0 + x)))

        jac = np.empty((2, 2))
        for b in (bound(lo), bound(hi)):
            for m, c in enumerate(grid):
                y = np.array([c, b])
                for j in range(2):
                    h = 1e-6 * y[j] + 1e-12
                    up, dn = y.copy(), y.copy()
                    up[j] += h
                    dn[j] -= h
                    jac[:, j] = (flow(up) - flow(dn)) / (2.0 * h)
                out[m] = max(out[m], float(np.max(np.abs(np.linalg.eigvals(jac)))))
    else:
        buffers = (p[K.G_KAPPA_S], p[K.G_BT], p[K.G_KD], p[K.G_HILL])

        def rate(c: float) -> float:
            jpm, jx = kern.net_flux(-math.inf, c, 0.0, p, codes, offsets, empty, empty)
            return float(jpm + jx) / K.buffer_capacity.py_func(c, *buffers)

        for m, c in enumerate(grid):
            h = 1e-6 * c
            out[m] = abs(rate(c + h) - rate(c - h)) / (2.0 * h)
    return np.where(np.isfinite(out), out, math.inf)


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
