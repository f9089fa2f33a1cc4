"""Cell models: buffers and fluxes composed, with a resting state and a simulator."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike

from cainfer.forward import _adjoint as A
from cainfer.forward import _codegen
from cainfer.forward import _kernels as K
from cainfer.forward._params import Parameter, Prior, merge_values
from cainfer.forward._terms import (
    SYSTEM_CODE,
    _class_name,
    _class_named,
    _compiled_form,
    _runs_as_builtin,
)
from cainfer.forward.fluxes import (
    ERLeak,
    EventInflux,
    Flux,
    PlasmaLeak,
    WaveformInflux,
)
from cainfer.forward.indicators import Indicator, get_indicator
from cainfer.forward.stimulus import Stimulus

_MARAVALL = "Maravall et al. 2000, doi:10.1016/S0006-3495(00)76809-3"
_HELMCHEN_TANK = (
    "Maravall et al. 2000 (44-80); Helmchen & Tank 2015, doi:10.1101/pdb.top085910 (110)"
)
_DEMAUREX = "Demaurex & Frieden 2003, doi:10.1016/S0143-4160(03)00081-2"
_KEENER = "Keener & Sneyd 2009, Mathematical Physiology I, ch. 7"

#: Accuracy target of the automatic step size: |λ|·h ≤ this for the fastest mode.
_LAMBDA_H = 0.2
_MAX_STEPS_PER_FRAME = 100_000


@dataclass(frozen=True)
class ERCompartment:
    """The endoplasmic reticulum: its own linear buffering and volume.

    Parameters
    ----------
    c_rest : float
        Resting free ER calcium (µM); 100-800 µM measured with targeted
        indicators (Demaurex & Frieden 2003).
    kappa : float
        ER buffer capacity (dimensionless, linear low-affinity buffers such as
        calreticulin).
    volume : float
        ER volume over cytosolic volume (dimensionless).
    """

    c_rest: float = 200.0
    kappa: float = 20.0
    volume: float = 0.1

    def parameters(self) -> tuple[Parameter, ...]:
        """Declared ER parameters with defaults from this instance."""
        return (
            Parameter(
                "er_c_rest",
                "µM",
                self.c_rest,
                Prior("lognormal", 250.0, 0.6, _DEMAUREX),
                upper=1e5,
                description="resting free ER calcium",
            ),
            Parameter(
                "er_kappa",
                "1",
                self.kappa,
                Prior("lognormal", 20.0, 0.7, _KEENER),
                upper=1e5,
                open_lower=False,
                lower=0.0,
                description="ER buffer capacity",
            ),
            Parameter(
                "er_volume",
                "1",
                self.volume,
                Prior("lognormal", 0.1, 0.5, _KEENER),
                upper=10.0,
                description="ER/cytosol volume ratio",
            ),
        )


_GUNTER = "Gunter & Pfeiffer 1990, doi:10.1152/ajpcell.1990.258.5.C755; wide prior"


@dataclass(frozen=True)
class MitoCompartment:
    """The mitochondria: their matrix's linear buffering and volume.

    The matrix's free calcium at rest is not a parameter: it is where the
    mitochondrial terms balance at the cell's resting cytosolic calcium
    (uptake by :class:`MCU` = release by :class:`NCLX`), solved for at each
    parameter value.

    Parameters
    ----------
    kappa : float
        Matrix buffer capacity (dimensionless): bound over free calcium, large
        (phosphate and proteins hold most of the matrix's calcium).
    volume : float
        Mitochondrial matrix volume over cytosolic volume (dimensionless).
    """

    kappa: float = 1000.0
    volume: float = 0.07

    def parameters(self) -> tuple[Parameter, ...]:
        """Declared mitochondrial parameters with defaults from this instance."""
        return (
            Parameter("mito_kappa", "1", self.kappa, Prior("lognormal", 1000.0, 1.5, _GUNTER),
                      upper=1e8, open_lower=False, lower=0.0,
                      description="matrix buffer capacity"),
            Parameter("mito_volume", "1", self.volume, Prior("lognormal", 0.07, 0.5, _GUNTER),
                      upper=10.0, description="matrix/cytosol volume ratio"),
        )  # fmt: skip


@dataclass(frozen=True)
class RestingState:
    """Steady state at rest and the flux-balance values derived from it.

    Attributes
    ----------
    c : float
        Free cytosolic calcium (µM).
    c_er : float
        Free ER calcium (µM); NaN without an ER.
    derived : dict
        Values fixed by flux balance, for example ``{"leak_rate": 14.2}``
        (plasma-membrane leak, µM/s) or ``{"er_leak_rate": 0.08}`` (1/s).
    """

    c: float
    c_er: float
    derived: dict[str, float]


class KernelArgs(NamedTuple):
    """What the compiled ΔF/F kernels take after the parameter vector, by name.

    :func:`cainfer.forward._adjoint.dff_forward` and ``dff_vjp`` (and their
    kinetic counterparts) take these in this order: ``f(p, *args)``.
    """

    time: np.ndarray  #: output times (s)
    event_times: np.ndarray  #: stimulus events (s)
    event_weights: np.ndarray  #: each event's weight (1)
    event_slot: int  #: slot of the event influx's amplitude (−1: none)
    codes: np.ndarray  #: each flux term's code (a hash of its rate; see _codegen)
    offsets: np.ndarray  #: each term's first slot in the parameter vector
    waveform_time: np.ndarray  #: stimulus waveform times (s)
    waveform_values: np.ndarray  #: its values (1)
    has_er: bool  #: the model has an ER compartment
    steps: np.ndarray  #: longest solver step allowed up to each output (s)
    pm_leak_slot: int  #: slot of the plasma-membrane leak's rate (−1: none)
    er_leak_slot: int  #: slot of the ER leak's rate (−1: none)

    @property
    def after_schedule(self) -> tuple[Any, ...]:
        """What the recorded solves (``dff_forward_tape``, ``dff_vjp_tape``) take after it."""
        return (
            self.event_weights, self.event_slot, self.codes, self.offsets, self.waveform_time,
            self.waveform_values, self.has_er, self.pm_leak_slot, self.er_leak_slot,
        )  # fmt: skip


class CellModel:
    """A cell: endogenous buffer, indicator, optional ER and a set of fluxes.

    Parameters
    ----------
    fluxes : sequence of Flux
        The flux terms. At most one :class:`PlasmaLeak` and one :class:`ERLeak`;
        they are set by flux balance at rest.
    indicator : Indicator or str
        The indicator, or a catalogue name (``"OGB-1"``, ``"GCaMP6f"``, ...).
    indicator_kinetics : {"equilibrium", "kinetic"}
        ``"equilibrium"``: the indicator binds calcium instantly (rapid-buffer
        approximation). ``"kinetic"``: bound indicator follows
        ``db/dt = k_on·c^n·(B_T − b) − k_off·b`` (needs the indicator's
        k_on/k_off; adds parameter ``k_off``), which captures the slow rise
        and decay of genetically encoded indicators. With the indicator's
        ``switch_ratio`` φ > 0 the binding has two steps: calcium binds
        rapidly to a dim state, which turns bright at ``k_off/φ`` and back at
        ``k_off`` (adds parameter ``switch_ratio``), so that the rise and the
        decay have rates of their own.
    er : ERCompartment, optional
        The ER. Created with defaults when any flux needs it; an error when
        given without any ER flux.
    mito : MitoCompartment, optional
        The mitochondria. Created with defaults when a flux term moves
        calcium into or out of them (``compartment = "mito"``); an error when
        given without such a term.
    c_rest : float
        Default resting free calcium (µM).
    kappa_s : float
        Default endogenous buffer capacity κ_S (dimensionless).
    name : str
        Label, stored with simulations.

    Notes
    -----
    Parameters are listed by :attr:`parameters`; values are passed as a
    mapping from name to value, with defaults for those left out.
    """

    def __init__(
        self,
        fluxes: Sequence[Flux],
        *,
        indicator: Indicator | str = "OGB-1",
        er: ERCompartment | None = None,
        mito: MitoCompartment | None = None,
        c_rest: float = 0.05,
        kappa_s: float = 60.0,
        indicator_kinetics: Literal["equilibrium", "kinetic"] = "equilibrium",
        name: str = "cell",
    ) -> None:
        self.name = name
        self.indicator = get_indicator(indicator)
        if indicator_kinetics not in ("equilibrium", "kinetic"):
            raise ValueError(
                f"indicator_kinetics = {indicator_kinetics!r}; allowed: 'equilibrium', 'kinetic'"
            )
        if indicator_kinetics == "kinetic" and self.indicator.k_off is None:
            raise ValueError(
                f"indicator {self.indicator.name!r} has no k_on/k_off: give them "
                "(Indicator(..., k_on=, k_off=)) or use indicator_kinetics='equilibrium'"
            )
        self.kinetic = indicator_kinetics == "kinetic"
        self.fluxes: tuple[Flux, ...] = tuple(fluxes)
        if not self.fluxes:
            raise ValueError("a CellModel needs at least one flux term")
        for f in self.fluxes:
            if not isinstance(f, Flux):
                raise ValueError(f"fluxes must be Flux instances, got {f!r}")
        forms = [_compiled_form(f) for f in self.fluxes]
        #: a term has gating states or moves mitochondrial calcium: the model is solved
        #: as a system of states (cainfer.forward._system), generated from its terms
        self.stateful = any(k == SYSTEM_CODE for k, _ in forms)
        if self.stateful and self.kinetic:
            names = [
                type(f).__name__
                for f, (k, _) in zip(self.fluxes, forms, strict=True)
                if k == SYSTEM_CODE
            ]
            raise ValueError(
                f"term(s) {names} carry gating states or move mitochondrial calcium: such a "
                "model is solved with an indicator in equilibrium only "
                "(indicator_kinetics='equilibrium')"
            )
        self._system: Any = None
        for cls in (PlasmaLeak, ERLeak, EventInflux, WaveformInflux):
            if sum(isinstance(f, cls) for f in self.fluxes) > 1:
                raise ValueError(f"at most one {cls.__name__} term is allowed")
        needs_er = any(f.needs_er for f in self.fluxes)
        if er is not None and not needs_er:
            raise ValueError("an ER compartment was given but no flux term uses the ER")
        self.er: ERCompartment | None = (er or ERCompartment()) if needs_er else None
        needs_mito = any(f.compartment == "mito" for f in self.fluxes)
        if mito is not None and not needs_mito:
            raise ValueError("a mitochondrial compartment was given but no flux term uses it")
        self.mito: MitoCompartment | None = (mito or MitoCompartment()) if needs_mito else None

        ind = self.indicator
        glob = [
            Parameter(
                "c_rest",
                "µM",
                c_rest,
                Prior("lognormal", 0.05, 0.4, _MARAVALL),
                upper=10.0,
                description="resting free cytosolic calcium",
            ),
            Parameter(
                "kappa_s",
                "1",
                kappa_s,
                Prior("lognormal", 70.0, 0.6, _HELMCHEN_TANK),
                lower=0.0,
                open_lower=False,
                upper=1e5,
                description="endogenous buffer capacity κ_S",
            ),
            Parameter(
                "kd",
                "µM",
                ind.kd,
                Prior("lognormal", ind.kd, 0.2, ind.source),
                upper=1e4,
                description=f"{ind.name} dissociation constant",
                role="affinity",
            ),
            Parameter(
                "hill",
                "1",
                ind.hill,
                Prior("normal", ind.hill, 0.1 * ind.hill, ind.source),
                upper=10.0,
                description=f"{ind.name} Hill coefficient",
                role="hill",
            ),
            Parameter(
                "rf",
                "1",
                ind.rf,
                Prior("lognormal", ind.rf, 0.2, ind.source),
                # brightens on binding (R_f > 1) or dims (R_f < 1): never both
                lower=1.0 if ind.rf > 1.0 else 0.0,
                upper=1e4 if ind.rf > 1.0 else 1.0,
                description=f"{ind.name} dynamic range F_max/F_min",
            ),
            Parameter(
                "b_total",
                "µM",
                ind.b_total,
                Prior("lognormal", ind.b_total, 0.5, ind.source),
                lower=0.0,
                open_lower=False,
                upper=1e5,
                description=f"{ind.name} total concentration",
            ),
        ]
        if self.kinetic:
            assert ind.k_off is not None
            glob.append(
                Parameter(
                    "k_off",
                    "1/s",
                    ind.k_off,
                    Prior("lognormal", ind.k_off, 0.5, ind.kinetics_source),
                    upper=1e7,
                    description=f"{ind.name} unbinding rate (k_on = k_off/K_d^n)",
                )
            )
            if ind.switch_ratio > 0.0:
                glob.append(
                    Parameter(
                        "switch_ratio",
                        "1",
                        ind.switch_ratio,
                        Prior("lognormal", ind.switch_ratio, 1.0, ind.kinetics_source),
                        upper=1e4,
                        description=(
                            f"{ind.name} switch ratio φ: bright state formed at k_off/φ "
                            "from the rapidly bound dim one"
                        ),
                    )
                )
        if self.er is not None:
            glob.extend(self.er.parameters())
        if self.mito is not None:
            glob.extend(self.mito.parameters())
        params: dict[str, Parameter] = {}
        for p in [*glob, *(q for f in self.fluxes for q in f.parameters)]:
            if p.name in params:
                raise ValueError(
                    f"two terms declare parameter {p.name!r}: give one of them another name="
                )
            params[p.name] = p
        self._params = params
        self._global_slot = {
            "c_rest": K.G_C_REST,
            "kappa_s": K.G_KAPPA_S,
            "kd": K.G_KD,
            "hill": K.G_HILL,
            "rf": K.G_RF,
            "b_total": K.G_BT,
            "er_c_rest": K.G_CER_REST,
            "er_kappa": K.G_KAPPA_ER,
            "er_volume": K.G_V_ER,
            "k_off": K.G_KOFF,
            "switch_ratio": K.G_PHI,
        }
        offsets = []
        o = K.N_GLOBAL
        if self.mito is not None:  # their slots follow the kernels' globals (systems only)
            self._global_slot |= {"mito_kappa": o, "mito_volume": o + 1}
            o += 2
        for f in self.fluxes:
            offsets.append(o)
            o += f.size
        self._n_p = o
        self._codes = np.array([k for k, _ in forms], dtype=np.int64)
        self._offsets = np.array(offsets, dtype=np.int64)
        #: the compiled form of each term defined by a rate expression, once each
        self.generated_terms: tuple[_codegen.GeneratedTerm, ...] = tuple(
            {g.code: g for _, g in forms if g is not None}.values()
        )

    def kernels(self) -> tuple[Any, Any]:
        """The (kernels, adjoint) modules that run this model's terms.

        The generic :mod:`cainfer.forward._kernels` and ``_adjoint`` when
        every term is built in; otherwise the copy specialised to these terms
        with their generated code (:mod:`cainfer.forward._specialize`).
        A model with gating states has no kernels: see :meth:`system_source`.
        """
        if self.stateful:
            raise ValueError(
                f"model {self.name!r} has gating states: it runs as a system of states, not on "
                "the kernels"
            )
        if not self.generated_terms:
            return K, A
        from cainfer.forward._specialize import specialized

        mod = specialized(self._codes.tolist(), self._offsets.tolist(), self.generated_terms)
        return mod.K, mod

    def system_source(self) -> str:
        """The numba source of this model's system of states ('' for a model on the kernels).

        Printed once per model from its terms' expressions
        (:func:`cainfer.forward._system.source`); the solve Ops compile it.
        """
        if not self.stateful:
            return ""
        if self._system is None:
            from cainfer.forward import _system

            self._system = _system.source(_system.system_of(self))
        return cast(str, self._system)

    def _system_module(self) -> Any:
        from cainfer.forward import _system

        return _system.compiled(self.system_source())

    @property
    def states(self) -> tuple[str, ...]:
        """The solver's states: ``"c"``, ``"c_er"`` (ER), ``"c_mito"`` (mitochondria), the gates."""
        out: tuple[str, ...] = ("c", "c_er") if self.has_er else ("c",)
        if self.mito is not None:
            out += ("c_mito",)
        return out + tuple(f.full_name(g) for f in self.fluxes for g in f.gates)

    # ------------------------------------------------------------------ params
    @property
    def parameters(self) -> dict[str, Parameter]:
        """All parameters by name (a copy)."""
        return dict(self._params)

    @property
    def has_er(self) -> bool:
        """Whether the model has an ER compartment."""
        return self.er is not None

    def defaults(self) -> dict[str, float]:
        """Default value of every parameter."""
        return {k: p.default for k, p in self._params.items()}

    def values(self, params: Mapping[str, float] | None = None) -> dict[str, float]:
        """Defaults overridden by ``params``, validated.

        Raises
        ------
        ValueError
            For an unknown name or a value outside the parameter's range.
        """
        return merge_values(self._params, params, owner=f"model {self.name!r}")

    def indicator_for(self, values: Mapping[str, float]) -> Indicator:
        """The indicator with K_d, n, R_f and B_T taken from parameter values."""
        return self.indicator.with_(
            kd=values["kd"], hill=values["hill"], rf=values["rf"], b_total=values["b_total"]
        )

    def _pack_raw(self, values: Mapping[str, float]) -> np.ndarray:
        p = np.zeros(self._n_p)
        p[K.G_V_ER] = 1.0
        for name, slot in self._global_slot.items():
            if name in values:
                p[slot] = values[name]
        for f, o in zip(self.fluxes, self._offsets, strict=True):
            for j, q in enumerate(f.parameters):
                p[o + j] = values[q.name]
        return p

    def pack(self, params: Mapping[str, float] | None = None) -> np.ndarray:
        """Packed parameter vector for the compiled kernels, leaks balanced at rest."""
        return self._balance(self.values(params))[0]

    def _balance(self, v: Mapping[str, float]) -> tuple[np.ndarray, RestingState]:
        p = self._pack_raw(v)
        c = v["c_rest"]
        cer = v.get("er_c_rest", 0.0)
        empty = np.empty(0)
        if self.er is not None and cer <= c:
            raise ValueError(
                f"er_c_rest = {cer:g} µM must exceed c_rest = {c:g} µM (the ER stores calcium)"
            )
        if self.stateful:
            return self._balance_system(p, c, cer)
        kern, _ = self.kernels()
        jpm, jx = kern.net_flux(-math.inf, c, cer, p, self._codes, self._offsets, empty, empty)
        derived: dict[str, float] = {}
        for f, o in zip(self.fluxes, self._offsets, strict=True):
            slot = o + len(f.declared)
            if isinstance(f, ERLeak):
                k_leak = -jx / (cer - c)
                if k_leak < 0:
                    raise ValueError(
                        f"ER fluxes cannot balance at rest: release exceeds SERCA uptake by "
                        f"{jx:.4g} µM/s at c_rest, er_c_rest; the ER leak would be negative"
                    )
                p[slot] = k_leak
                derived[f.full_name("rate")] = k_leak
                jx = 0.0
            elif isinstance(f, PlasmaLeak):
                if -jpm < 0:
                    raise ValueError(
                        f"plasma-membrane fluxes cannot balance at rest: entry exceeds "
                        f"extrusion by {jpm:.4g} µM/s; the leak would be negative"
                    )
                p[slot] = -jpm
                derived[f.full_name("rate")] = -jpm
                jpm = 0.0
        scale = max(1.0, *(abs(x) for x in derived.values())) if derived else 1.0
        if abs(jpm) > 1e-9 * scale:
            raise ValueError(
                f"net plasma-membrane flux at c_rest is {jpm:.4g} µM/s, not zero; "
                "add a PlasmaLeak() term to balance it"
            )
        if abs(jx) > 1e-9 * scale:
            raise ValueError(
                f"net ER flux at rest is {jx:.4g} µM/s, not zero; add an ERLeak() term"
            )
        rest = RestingState(c=c, c_er=cer if self.er is not None else math.nan, derived=derived)
        return p, rest

    def _balance_system(
        self, p_raw: np.ndarray, c: float, cer: float
    ) -> tuple[np.ndarray, RestingState]:
        """:meth:`_balance` for a model with gating states (the system's generated balance)."""
        mod = self._system_module()
        p = mod.balance(p_raw)
        derived: dict[str, float] = {}
        for f, o in zip(self.fluxes, self._offsets, strict=True):
            if isinstance(f, (ERLeak, PlasmaLeak)):
                slot = int(o) + len(f.declared)
                if not math.isfinite(p[slot]):
                    what = "ER" if isinstance(f, ERLeak) else "plasma-membrane"
                    raise ValueError(
                        f"{what} fluxes cannot balance at rest (c_rest = {c:g} µM"
                        + (f", er_c_rest = {cer:g} µM" if self.er is not None else "")
                        + f", gates at their steady state): the {what} leak would be negative"
                    )
                derived[f.full_name("rate")] = float(p[slot])
        y0 = mod.rest(p)
        if self.mito is not None:
            cm = float(y0[self.states.index("c_mito")])
            if not math.isfinite(cm):
                raise ValueError(
                    f"the mitochondria cannot be at rest at c_rest = {c:g} µM: their release "
                    "cannot match the uniporter's uptake at any matrix calcium (raise the "
                    "release capacity or lower the uptake)"
                )
            derived["mito_c_rest"] = cm
        # a model without a leak must be at rest by itself: its net fluxes vanish there
        dy = np.empty_like(y0)
        mod.rhs(-math.inf, y0, p, np.empty(0), np.empty(0), dy)
        scale = max(1.0, *(abs(x) for x in derived.values())) if derived else 1.0
        names = self.states
        for i in (0, 1) if self.has_er else (0,):
            if abs(dy[i]) > 1e-9 * scale:
                raise ValueError(
                    f"d{names[i]}/dt at rest is {dy[i]:.4g} µM/s, not zero; add a "
                    f"{'PlasmaLeak' if i == 0 else 'ERLeak'}() term to balance it"
                )
        rest = RestingState(c=c, c_er=cer if self.er is not None else math.nan, derived=derived)
        return p, rest

    def resting_state(self, params: Mapping[str, float] | None = None) -> RestingState:
        """The resting steady state and the leak values that make it one.

        Parameters
        ----------
        params : mapping, optional
            Parameter values (defaults for those left out).

        Returns
        -------
        RestingState
        """
        return self._balance(self.values(params))[1]

    def term_fluxes(
        self,
        c: ArrayLike,
        c_er: ArrayLike | None = None,
        params: Mapping[str, float] | None = None,
        *,
        t: ArrayLike = -math.inf,
        stimulus: Stimulus | None = None,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each term's flux at given states.

        Parameters
        ----------
        c : array_like
            Free cytosolic calcium (µM).
        c_er : array_like, optional
            Free ER calcium (µM); the resting value if omitted.
        params : mapping, optional
            Parameter values.
        t : array_like
            Time (s), used by a waveform influx.
        stimulus : Stimulus, optional
            Supplies the waveform.

        Returns
        -------
        dict
            Term name (class name, or its prefix if set) → (plasma-membrane
            flux, ER→cytosol flux), each µM/s of cytosol, broadcast to the
            shape of the inputs.
        """
        if self.stateful:
            raise ValueError(
                f"model {self.name!r} has gating states: a term's flux depends on them, not only "
                "on c and c_er; simulate the model and read the gates from its output"
            )
        p, rest = self._balance(self.values(params))
        cc = np.asarray(c, dtype=float)
        ce = np.asarray(rest.c_er if c_er is None else c_er, dtype=float)
        if self.er is None:
            ce = np.zeros_like(ce)
        tt = np.asarray(t, dtype=float)
        cc, ce, tt = np.broadcast_arrays(cc, ce, tt)
        wt, wv = _waveform(stimulus)
        ft, fc, fe = (np.ascontiguousarray(x.reshape(-1)) for x in (tt, cc, ce))
        out = {}
        kern, _ = self.kernels()
        for f, code, o in zip(self.fluxes, self._codes, self._offsets, strict=True):
            a, b = kern.term_flux_array(int(code), int(o), ft, fc, fe, p, wt, wv)
            out[f.name or type(f).__name__] = (a.reshape(cc.shape), b.reshape(cc.shape))
        return out

    # ---------------------------------------------------------------- simulate
    def simulate(
        self,
        params: Mapping[str, float] | None = None,
        time: ArrayLike | None = None,
        stimulus: Stimulus | None = None,
        *,
        substeps: int | Literal["auto"] = "auto",
        initial: Mapping[str, float] | None = None,
        solver: Literal["auto", "rk4", "sdirk"] = "auto",
    ) -> xr.Dataset:
        """Simulate free and total calcium and the indicator signal.

        Parameters
        ----------
        params : mapping, optional
            Parameter values by name (defaults for those left out).
        time : array_like
            Output times (s), strictly increasing; the state at ``time[0]`` is
            the resting state (or ``initial``).
        stimulus : Stimulus, optional
            Events and/or waveform; all within ``[time[0], time[-1]]``.
        substeps : int or "auto"
            Solver steps per output interval. For RK4, ``"auto"`` chooses them
            so that |λ|·h ≤ 0.2 for the fastest linearised mode over the range
            of states the solution visits (re-solving with a shorter step if
            needed); for SDIRK, so that no step exceeds 1/120 s (plus the
            shorter steps it always takes after events).
        initial : mapping, optional
            Initial free calcium ``{"c": µM, "c_er": µM}`` instead of rest.
        solver : {"auto", "rk4", "sdirk"}
            ``"rk4"``: explicit fixed-step Runge-Kutta; ``"sdirk"``: the
            L-stable implicit solve the fits use for a kinetic indicator
            whose binding is fast against the frame (Alexander's SDIRK3,
            steps graded after events), which stays cheap when binding is
            fast (where it is slow, a fit takes RK4 steps). ``"auto"``: SDIRK for a kinetic
            indicator, RK4 otherwise. SDIRK needs a kinetic indicator.

        Returns
        -------
        xarray.Dataset
            ``ca`` (free cytosolic Ca, µM), ``ca_total`` (total cytosolic Ca,
            µM), ``ca_er`` (free ER Ca, µM; with an ER), ``F`` (F/F_min) and
            ``dff`` (ΔF/F relative to rest), and ``dye_bound`` (µM; with a
            kinetic indicator), over coordinate ``time`` (s);
            attrs record the model, parameters and step count.

        Raises
        ------
        ValueError
            For bad parameters, times, stimulus or initial state.
        """
        if solver not in ("auto", "rk4", "sdirk"):
            raise ValueError(f"solver = {solver!r}; allowed: 'auto', 'rk4', 'sdirk'")
        if solver == "sdirk" and not self.kinetic:
            raise ValueError("solver='sdirk' needs indicator_kinetics='kinetic'")
        implicit = self.kinetic and solver != "rk4"
        v = self.values(params)
        p, rest = self._balance(v)
        t = _check_time(time)
        stim = stimulus if stimulus is not None else Stimulus()
        stim.check_within(float(t[0]), float(t[-1]))
        ev_slot = self._slot_of(EventInflux)
        if stim.has_events and ev_slot < 0:
            raise ValueError("stimulus has events but the model has no EventInflux term")
        self._check_waveform(stim)
        c0, cer0 = rest.c, (rest.c_er if self.er is not None else 0.0)
        if initial is not None:
            unknown = sorted(set(initial) - {"c", "c_er"})
            if unknown:
                raise ValueError(f"initial has unknown key(s) {unknown}; allowed: 'c', 'c_er'")
            c0 = _nonneg("initial c", initial.get("c", c0))
            if "c_er" in initial and self.er is None:
                raise ValueError("initial c_er given but the model has no ER")
            cer0 = _nonneg("initial c_er", initial.get("c_er", cer0))
        wt, wv = _waveform(stim)
        frame = float(np.min(np.diff(t))) if t.size > 1 else 1.0
        ev_t = np.ascontiguousarray(stim.events)
        ev_w = np.ascontiguousarray(stim.event_weights)
        if self.stateful:
            if solver == "sdirk":
                raise ValueError("solver='sdirk' needs indicator_kinetics='kinetic'")
            return self._simulate_system(p, v, rest, t, ev_t, ev_w, ev_slot, wt, wv, c0, cer0,
                                         frame, substeps)  # fmt: skip
        args = (
            ev_t,
            ev_w,
            ev_slot,
            p,
            self._codes,
            self._offsets,
            wt,
            wv,
            self.has_er,
            self.kinetic,
        )
        kern, adj = self.kernels()
        x0 = K.hill_ratio(c0, v["kd"], v["hill"])
        # the indicator starts in equilibrium (its bright state: x0/((1 + φ)(1 + x0)) of B_T)
        b0 = v["b_total"] * x0 / ((1.0 + p[K.G_PHI]) * (1.0 + x0))

        if implicit:
            if substeps == "auto":
                n_sub = max(1, math.ceil(frame * 120.0 - 1e-9))
            elif int(substeps) != substeps or int(substeps) < 1:
                raise ValueError(f"substeps = {substeps!r} must be 'auto' or an integer ≥ 1")
            else:
                n_sub = int(substeps)
            sched = A.kinetic_schedule(t, ev_t, np.full(t.size, frame / n_sub))
            c, cer, b, _ = adj.kinetic_run(
                *sched, t.size, ev_w, ev_slot, p, self._codes, self._offsets, wt, wv,
                self.has_er, c0, cer0, b0,
            )  # fmt: skip
        elif substeps == "auto":
            # Fixed point: choose the step for the range of states visited, solve, and
            # solve again if the visited range (including the instant after each
            # jump) needs a shorter step than the one used.
            amp = p[ev_slot] * float(np.max(ev_w)) if ev_slot >= 0 and ev_t.size else 0.0
            c_rng = (min(c0, rest.c), max(c0, rest.c))
            er_rng = (min(cer0, rest.c_er), max(cer0, rest.c_er)) if self.has_er else (0.0, 0.0)
            n_sub = self._auto_substeps(p, c_rng, er_rng, amp, wt, wv, frame)
            for _ in range(8):
                c, cer, b = kern.solve(t, *args, frame / n_sub, c0, cer0, b0)
                if not np.all(np.isfinite(c)):
                    n_sub *= 4
                    continue
                c_rng = (min(c_rng[0], float(c.min())), max(c_rng[1], float(c.max())))
                if self.has_er:
                    er_rng = (min(er_rng[0], float(cer.min())), max(er_rng[1], float(cer.max())))
                need = self._auto_substeps(p, c_rng, er_rng, amp, wt, wv, frame)
                if need <= n_sub:
                    break
                n_sub = need
        else:
            if int(substeps) != substeps or int(substeps) < 1:
                raise ValueError(f"substeps = {substeps!r} must be 'auto' or an integer ≥ 1")
            n_sub = int(substeps)
            c, cer, b = kern.solve(t, *args, frame / n_sub, c0, cer0, b0)
        if not np.all(np.isfinite(c)):
            raise FloatingPointError("simulation produced non-finite calcium; try more substeps")
        label = (
            "SDIRK3 (Alexander 1977), steps graded after events, exact jumps at events"
            if implicit
            else "RK4, fixed step, exact jumps at events"
        )
        return self._dataset(t, c, cer, b, v, rest, n_sub, label)

    def _simulate_system(
        self,
        p: np.ndarray,
        v: Mapping[str, float],
        rest: RestingState,
        t: np.ndarray,
        ev_t: np.ndarray,
        ev_w: np.ndarray,
        ev_slot: int,
        wt: np.ndarray,
        wv: np.ndarray,
        c0: float,
        cer0: float,
        frame: float,
        substeps: int | str,
    ) -> xr.Dataset:
        """:meth:`simulate` for a model with gating states: RK4 on the generated system.

        ``substeps="auto"`` starts from steps of at most 10 ms and halves the
        step until two successive solves agree on every state to 1e-5 of its
        range (step doubling); the finer solve is returned.
        """
        mod = self._system_module()
        y0 = mod.rest(p)
        y0[0] = c0
        if self.has_er:
            y0[1] = cer0

        def solve(n: int) -> np.ndarray:
            op, arg, tt, hh = K.schedule(t, ev_t, np.full(t.size, frame / n))
            out, _ = mod.run(op, arg, tt, hh, t.size, ev_w, ev_slot, p, wt, wv, y0)
            return cast(np.ndarray, out)

        if substeps == "auto":
            n_sub = max(1, math.ceil(frame / 0.01 - 1e-9))
            y = solve(n_sub)
            for _ in range(12):
                finer = solve(2 * n_sub)
                n_sub *= 2
                scale = np.ptp(finer, axis=0) + np.abs(finer).max(axis=0) * 1e-3 + 1e-12
                close = np.all(np.isfinite(y)) and np.all(np.abs(finer - y) <= 1e-5 * scale)
                y = finer
                if close:
                    break
                if n_sub > _MAX_STEPS_PER_FRAME:
                    raise ValueError(
                        f"the system did not converge with {n_sub} RK4 steps per frame; check "
                        "the rate parameters (a gate's time constant far below the frame?)"
                    )
        else:
            if int(substeps) != substeps or int(substeps) < 1:
                raise ValueError(f"substeps = {substeps!r} must be 'auto' or an integer ≥ 1")
            n_sub = int(substeps)
            y = solve(n_sub)
        if not np.all(np.isfinite(y)):
            raise FloatingPointError("simulation produced non-finite states; try more substeps")
        gates = dict(zip(self.states, y.T, strict=True))  # then only the gates are left
        c = gates.pop("c")
        cer = gates.pop("c_er", np.zeros_like(c))
        cm = gates.pop("c_mito", None)
        label = "RK4, fixed step, exact jumps at events (system of states)"
        ds = self._dataset(t, c, cer, np.zeros_like(c), v, rest, n_sub, label, gates)
        if cm is not None:
            ds["ca_mito"] = ("time", cm, {"units": "µM", "long_name": "free mitochondrial calcium"})
        return ds

    def dff_vjp(
        self,
        params: Mapping[str, float] | None,
        time: ArrayLike,
        stimulus: Stimulus | None,
        cotangent: ArrayLike,
        *,
        substeps: int = 1,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """ΔF/F and the gradient of ``Σ cotangent·ΔF/F`` with respect to every parameter.

        A discrete adjoint of the fixed-step solve the fits use, so the gradient
        is exact for the discrete solution; the leaks set by flux balance are
        differentiated through the balance. With an equilibrium indicator that
        solve is :meth:`simulate`'s RK4 at a fixed ``substeps``; with a kinetic
        one it is an L-stable implicit Runge-Kutta method (Alexander's SDIRK3)
        whose steps are shortened after each event, where the indicator binds
        the new calcium (see :mod:`cainfer.forward._adjoint`); a fit takes
        RK4 steps instead where binding is slow against the frame.

        Parameters
        ----------
        params : mapping or None
            Parameter values (defaults for those left out).
        time : array_like
            Output times (s), starting from rest.
        stimulus : Stimulus or None
            Events and waveform.
        cotangent : array_like
            Weights on ΔF/F at each output time (for a log density: its
            derivative with respect to ΔF/F).
        substeps : int
            Solver steps per output interval (more just after events with a
            kinetic indicator).

        Returns
        -------
        dff : numpy.ndarray
            ΔF/F at ``time``.
        grad : dict
            Parameter name → derivative of ``Σ cotangent·ΔF/F``.
        """
        if int(substeps) != substeps or substeps < 1:
            raise ValueError(f"substeps = {substeps!r} must be an integer ≥ 1")
        v = self.values(params)
        self._balance(v)  # validates the resting state
        t = _check_time(time)
        g = np.ascontiguousarray(np.asarray(cotangent, dtype=float).reshape(-1))
        if g.shape != t.shape:
            raise ValueError(f"cotangent has {g.size} values for {t.size} output times")
        args = self.kernel_args(t, stimulus, substeps=substeps)
        p_raw = self._pack_raw(v)
        if self.stateful:
            mod = self._system_module()
            sched = K.schedule(args.time, args.event_times, args.steps)
            rest = args.after_schedule
            dff, c, cc, ee = mod.dff_forward_tape(p_raw, *sched, *rest)
            pbar = mod.dff_vjp_tape(p_raw, *sched, *rest, c, cc, ee, g, np.zeros_like(g), True)
            return dff, self.unpack_gradient(pbar)
        _, adj = self.kernels()
        fwd, vjp = (adj.dff_forward, adj.dff_vjp)
        if self.kinetic:
            fwd, vjp = (adj.kinetic_dff_forward, adj.kinetic_dff_vjp)
        dff, _ = cast(Any, fwd)(p_raw, *args)
        pbar = cast(Any, vjp)(p_raw, *args, g, np.zeros_like(g))
        return dff, self.unpack_gradient(pbar)

    def kernel_args(
        self, time: np.ndarray, stimulus: Stimulus | None, *, substeps: int | np.ndarray
    ) -> KernelArgs:
        """Arguments after the parameter vector of the compiled ΔF/F kernels.

        ``substeps``: solver steps per frame, one count for every frame
        interval or an integer array with one per interval (``len(time) − 1``);
        ``steps`` is the longest step allowed up to each output (s).
        """
        t = _check_time(time)
        n_sub = np.asarray(substeps)
        if n_sub.ndim == 0:
            n_sub = np.full(max(t.size - 1, 0), n_sub)
        if n_sub.shape != (max(t.size - 1, 0),) or not np.all(
            (n_sub >= 1) & (n_sub == np.round(n_sub))
        ):
            raise ValueError(
                f"substeps must be an integer ≥ 1 or one per frame interval ({t.size - 1}); "
                f"got shape {n_sub.shape}"
            )
        stim = stimulus if stimulus is not None else Stimulus()
        stim.check_within(float(t[0]), float(t[-1]))
        ev_slot = self._slot_of(EventInflux)
        if stim.has_events and ev_slot < 0:
            raise ValueError("stimulus has events but the model has no EventInflux term")
        self._check_waveform(stim)
        wt, wv = _waveform(stim)
        frame = float(np.min(np.diff(t))) if t.size > 1 else 1.0
        steps = np.empty(t.size)
        steps[1:] = frame / n_sub
        steps[:1] = steps[1] if t.size > 1 else frame  # no steps before the first output
        return KernelArgs(
            time=t,
            event_times=np.ascontiguousarray(stim.events),
            event_weights=np.ascontiguousarray(stim.event_weights),
            event_slot=ev_slot,
            codes=self._codes,
            offsets=self._offsets,
            waveform_time=wt,
            waveform_values=wv,
            has_er=self.has_er,
            steps=steps,
            pm_leak_slot=self._leak_slot(PlasmaLeak),
            er_leak_slot=self._leak_slot(ERLeak),
        )

    def _check_waveform(self, stim: Stimulus) -> None:
        if stim.has_waveform and not any(_reads_waveform(f) for f in self.fluxes):
            raise ValueError(
                "stimulus has a waveform but no term of the model reads it (a WaveformInflux, "
                "or a term whose rate uses self.waveform)"
            )

    def _leak_slot(self, cls: type[Flux]) -> int:
        o = self._slot_of(cls)
        return o + len(cls.declared) if o >= 0 else -1

    def unpack_gradient(self, pbar: np.ndarray) -> dict[str, float]:
        """Map a cotangent of the packed vector to parameter names."""
        grad = {
            name: float(pbar[slot])
            for name, slot in self._global_slot.items()
            if name in self._params
        }
        for f, o in zip(self.fluxes, self._offsets, strict=True):
            for j, q in enumerate(f.parameters):
                grad[q.name] = float(pbar[o + j])
        return grad

    def slots(self) -> dict[str, int]:
        """Slot of every parameter in the packed vector."""
        out = {name: slot for name, slot in self._global_slot.items() if name in self._params}
        for f, o in zip(self.fluxes, self._offsets, strict=True):
            for j, q in enumerate(f.parameters):
                out[q.name] = int(o) + j
        return out

    def pack_raw(self, params: Mapping[str, float] | None = None) -> np.ndarray:
        """Packed parameter vector with the leak slots left unset (the kernels balance them)."""
        return self._pack_raw(self.values(params))

    def _slot_of(self, cls: type[Flux]) -> int:
        for f, o in zip(self.fluxes, self._offsets, strict=True):
            if isinstance(f, cls):
                return int(o)
        return -1

    def _auto_substeps(
        self,
        p: np.ndarray,
        c_rng: tuple[float, float],
        er_rng: tuple[float, float],
        jump: float,
        wt: np.ndarray,
        wv: np.ndarray,
        frame: float,
    ) -> int:
        """RK4 steps per frame so that |λ|·h ≤ _LAMBDA_H over the given state ranges."""
        c_top = _free(p, K.total_ca(c_rng[1], *_buf(p)) + jump) if jump > 0 else c_rng[1]
        c_grid = np.geomspace(max(0.9 * c_rng[0], 1e-9), max(1.1 * c_top, 1e-9), 64)
        if self.has_er:
            er_grid = np.geomspace(max(0.9 * er_rng[0], 1e-9), max(1.1 * er_rng[1], 1e-9), 24)
        else:
            er_grid = np.zeros(1)
        kern, _ = self.kernels()
        lam = kern.jacobian_bound(
            c_grid, er_grid, p, self._codes, self._offsets, wt, wv, self.has_er, self.kinetic
        )
        n = max(1, math.ceil(frame * lam / _LAMBDA_H))
        if n > _MAX_STEPS_PER_FRAME:
            raise ValueError(
                f"the model is too stiff for the fixed-step solver at this frame interval: "
                f"its fastest mode relaxes at {lam:.3g}/s ({n} substeps per frame needed); "
                "check the rate parameters (with a kinetic indicator, k_on·c^n and k_off)"
            )
        return n

    def _dataset(
        self,
        t: np.ndarray,
        c: np.ndarray,
        cer: np.ndarray,
        b: np.ndarray,
        v: Mapping[str, float],
        rest: RestingState,
        n_sub: int,
        solver: str,
        gates: Mapping[str, np.ndarray] | None = None,
    ) -> xr.Dataset:
        kappa, bt, kd, n, rf = v["kappa_s"], v["b_total"], v["kd"], v["hill"], v["rf"]
        xn = (np.maximum(c, 0.0) / kd) ** n
        phi = v.get("switch_ratio", self.indicator.switch_ratio) if self.kinetic else 0.0
        # the kinetic indicator's calcium: its bright state b and (φ > 0) its dim bound state
        dim = (bt - b) * phi * xn / (1.0 + phi + phi * xn) if self.kinetic else 0.0
        bound = b + dim if self.kinetic else bt * xn / (1.0 + xn)
        occupancy = (1.0 + phi) * b / bt if (self.kinetic and bt > 0) else xn / (1.0 + xn)
        total = c * (1.0 + kappa) + bound
        F = 1.0 + (rf - 1.0) * occupancy
        x0 = (rest.c / kd) ** n
        F0 = 1.0 + (rf - 1.0) * x0 / (1.0 + x0)
        data = {
            "ca": ("time", c, {"units": "µM", "long_name": "free cytosolic calcium"}),
            "ca_total": ("time", total, {"units": "µM", "long_name": "total cytosolic calcium"}),
            "F": ("time", F, {"units": "1", "long_name": "fluorescence F/F_min"}),
            "dff": ("time", F / F0 - 1.0, {"units": "1", "long_name": "ΔF/F"}),
        }
        if self.kinetic:
            data["dye_bound"] = (
                "time", bound, {"units": "µM", "long_name": "calcium-bound indicator"}
            )  # fmt: skip
        if self.has_er:
            data["ca_er"] = ("time", cer, {"units": "µM", "long_name": "free ER calcium"})
        for name, g in (gates or {}).items():
            data[name] = ("time", g, {"units": "1", "long_name": f"gating variable {name}"})
        return xr.Dataset(
            data,
            coords={"time": ("time", t, {"units": "s"})},
            attrs={
                "model": self.name,
                "fluxes": json.dumps([repr(f) for f in self.fluxes]),
                "indicator": self.indicator.name,
                "indicator_kinetics": "kinetic" if self.kinetic else "equilibrium",
                "parameters": json.dumps(dict(v)),
                "derived": json.dumps(rest.derived),
                "substeps": n_sub,
                "solver": solver,
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description from which :meth:`from_dict` rebuilds the model."""
        ind = self.indicator
        return {
            "name": self.name,
            "indicator": {
                "name": ind.name,
                "kd": ind.kd,
                "hill": ind.hill,
                "rf": ind.rf,
                "b_total": ind.b_total,
                "k_on": ind.k_on,
                "k_off": ind.k_off,
                "switch_ratio": ind.switch_ratio,
                "source": ind.source,
                "kinetics_source": ind.kinetics_source,
            },
            "indicator_kinetics": "kinetic" if self.kinetic else "equilibrium",
            "c_rest": self._params["c_rest"].default,
            "kappa_s": self._params["kappa_s"].default,
            "er": None
            if self.er is None
            else {
                "c_rest": self.er.c_rest,
                "kappa": self.er.kappa,
                "volume": self.er.volume,
            },
            **(
                {"mito": {"kappa": self.mito.kappa, "volume": self.mito.volume}}
                if self.mito is not None
                else {}
            ),
            "fluxes": [
                {
                    # the term it runs as: a subclass may change only its name and defaults;
                    # a term with a rate expression is named by module and qualified name
                    "class": _class_name(f),
                    "name": f.name,
                    "defaults": {
                        b.name: q.default for b, q in zip(f.declared, f.parameters, strict=True)
                    },
                    **(
                        {"priors": {k: asdict(pr) for k, pr in f.priors.items()}}
                        if f.priors
                        else {}
                    ),
                }
                for f in self.fluxes
            ],
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> CellModel:
        """Rebuild a model from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            For an unknown flux class or a malformed description.
        """
        try:
            terms = []
            for t in spec["fluxes"]:
                priors = {k: Prior(**pr) for k, pr in t.get("priors", {}).items()}
                terms.append(_class_named(t["class"])(t["name"], priors=priors, **t["defaults"]))
            er = spec.get("er")
            return cls(
                terms,
                indicator=Indicator(**spec["indicator"]),
                indicator_kinetics=spec.get("indicator_kinetics", "equilibrium"),
                er=None if er is None else ERCompartment(**er),
                mito=None if spec.get("mito") is None else MitoCompartment(**spec["mito"]),
                c_rest=spec["c_rest"],
                kappa_s=spec["kappa_s"],
                name=spec["name"],
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed model description: {e}") from None

    def __repr__(self) -> str:
        terms = ", ".join(repr(f) for f in self.fluxes)
        return f"CellModel({self.name!r}, indicator={self.indicator.name!r}, [{terms}])"

    def _repr_html_(self) -> str:
        """The model in Jupyter: its terms, and each parameter with unit, default and prior."""
        from cainfer.forward._html import esc, prior_text, table

        ind = self.indicator
        binding = "kinetic" if self.kinetic else "equilibrium"
        parts = [
            f"<p><b>CellModel {esc(self.name)}</b>: indicator {esc(ind.name)} "
            f"(K<sub>d</sub> {ind.kd:.4g} µM, {binding} binding); terms "
            f"{esc(', '.join(type(f).__name__ for f in self.fluxes))}"
            + ("; an ER" if self.er is not None else "")
            + ("; mitochondria" if self.mito is not None else "")
            + "</p>"
        ]
        values = self.values({})
        rows = []
        for name, q in self.parameters.items():
            pr = q.prior
            rows.append([name, f"{values[name]:.4g}", q.unit, prior_text(pr.kind, pr.a, pr.b),
                         q.description, pr.source])  # fmt: skip
        header = ["parameter", "default", "unit", "prior", "what", "source"]
        parts.append(table(header, rows, left={0, 2, 3, 4, 5}))
        return "".join(parts)


def _buf(p: np.ndarray) -> tuple[float, float, float, float]:
    return float(p[K.G_KAPPA_S]), float(p[K.G_BT]), float(p[K.G_KD]), float(p[K.G_HILL])


def _free(p: np.ndarray, total: float) -> float:
    return float(K.free_from_total(total, *_buf(p)))


def _nonneg(name: str, x: float) -> float:
    v = float(x)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} = {x!r} must be a finite concentration ≥ 0 µM")
    return v


def _check_time(time: ArrayLike | None) -> np.ndarray:
    if time is None:
        raise ValueError("time (s) is required: the output times, strictly increasing")
    t = np.ascontiguousarray(np.asarray(time, dtype=float).reshape(-1))
    if t.size < 1 or not np.all(np.isfinite(t)):
        raise ValueError("time must be a non-empty array of finite times (s)")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise ValueError("time must be strictly increasing (s)")
    return t


def _waveform(stim: Stimulus | None) -> tuple[np.ndarray, np.ndarray]:
    if stim is None or not stim.has_waveform:
        return np.empty(0), np.empty(0)
    return np.ascontiguousarray(stim.waveform_time), np.ascontiguousarray(stim.waveform)


def _reads_waveform(f: Flux) -> bool:
    """The term's rate or gating reads the stimulus waveform (built-in terms: no SymPy)."""
    base = _runs_as_builtin(type(f))
    if base is not None:
        return base is WaveformInflux
    return _codegen.term_expressions(type(f)).reads_waveform
