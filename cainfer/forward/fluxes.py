"""Calcium flux terms: one small class per pump, channel or leak.

Every flux is in µM/s of cytosolic volume, positive into the cytosol. A term
acts across the plasma membrane (``compartment = "pm"``), between ER and
cytosol (``compartment = "er"``) or between the mitochondrial matrix and the
cytosol (``compartment = "mito"``; its rate reads the matrix's free calcium
as ``self.c_mito``). Each class declares its parameters with
units, defaults, bounds and a default prior with its source.

References
----------
.. [1] Brini M, Carafoli E (2011). The plasma membrane Ca2+ ATPase and the
   plasma membrane sodium calcium exchanger cooperate in the regulation of
   cell calcium. Cold Spring Harb Perspect Biol 3:a004168.
   https://doi.org/10.1101/cshperspect.a004168
.. [2] Shannon TR, Wang F, Puglisi J, Weber C, Bers DM (2004). A mathematical
   treatment of integrated Ca dynamics within the ventricular myocyte.
   Biophys J 87:3351-3371. https://doi.org/10.1529/biophysj.104.047449
.. [3] Helmchen F, Imoto K, Sakmann B (1996). Ca2+ buffering and action
   potential-evoked Ca2+ signaling in dendrites of pyramidal neurons.
   Biophys J 70:1069-1081. https://doi.org/10.1016/S0006-3495(96)79653-4
.. [4] Keener J, Sneyd J (2009). Mathematical Physiology I: Cellular
   Physiology, 2nd ed., ch. 7 (calcium dynamics). Springer.
   https://doi.org/10.1007/978-0-387-75847-3
.. [5] Parekh AB, Putney JW (2005). Store-operated calcium channels.
   Physiol Rev 85:757-810. https://doi.org/10.1152/physrev.00057.2003
.. [6] Li YX, Rinzel J (1994). Equations for InsP3 receptor-mediated
   [Ca2+]i oscillations derived from a detailed kinetic model: a
   Hodgkin-Huxley like formalism. J Theor Biol 166:461-473.
   https://doi.org/10.1006/jtbi.1994.1041
.. [7] De Young GW, Keizer J (1992). A single-pool inositol
   1,4,5-trisphosphate-receptor-based model for agonist-stimulated
   oscillations in Ca2+ concentration. PNAS 89:9895-9899.
   https://doi.org/10.1073/pnas.89.20.9895
.. [8] Gunter TE, Pfeiffer DR (1990). Mechanisms by which mitochondria
   transport calcium. Am J Physiol 258:C755-C786.
   https://doi.org/10.1152/ajpcell.1990.258.5.C755
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, Literal

from cainfer.forward._params import Parameter, Prior

_BRINI = "Brini & Carafoli 2011, doi:10.1101/cshperspect.a004168"
_SHANNON = "Shannon et al. 2004 (Shannon-Bers model), doi:10.1529/biophysj.104.047449"
_HELMCHEN = "Helmchen, Imoto & Sakmann 1996, doi:10.1016/S0006-3495(96)79653-4"
_KEENER = "Keener & Sneyd 2009, Mathematical Physiology I, ch. 7"
_PAREKH = "Parekh & Putney 2005, doi:10.1152/physrev.00057.2003"
_GUNTER = "Gunter & Pfeiffer 1990, doi:10.1152/ajpcell.1990.258.5.C755"
_LI_RINZEL = "Li & Rinzel 1994, doi:10.1006/jtbi.1994.1041 (De Young & Keizer 1992 values)"


class Flux(ABC):
    """One calcium flux term (abstract).

    A new term is a subclass that declares its parameters and defines its rate,
    ``rate(self, c, c_er)``: plain arithmetic on the free cytosolic and ER
    calcium (µM) and on ``self.<parameter>`` (bare names), plus the cell's
    resting levels ``self.c_rest`` and ``self.c_er_rest`` (µM), returning the
    flux in µM/s of cytosol (positive into the cytosol; for ``compartment =
    "er"``, from the ER into the cytosol). The compiled flux and its
    adjoint (from which the solver's Jacobian comes) are generated from that
    expression (SymPy), as they are for the built-in terms, so a new term is
    simulated and fitted, with exact gradients, like a built-in one::

        class Uniporter(Flux):
            # Ca uptake −V·c^n/(K^n + c^n), steep and of low affinity
            compartment = "pm"
            default_name = "mcu"
            declared = (
                Parameter("vmax", "µM/s", 200.0, Prior("lognormal", 200.0, 1.0, "…"),
                          role="capacity"),
                Parameter("k", "µM", 10.0, Prior("lognormal", 10.0, 0.5, "…"),
                          role="affinity"),
                Parameter("hill", "1", 2.5, Prior("uniform", 2.0, 3.0, "…"), role="hill"),
            )

            def rate(self, c, c_er):
                x = (c / self.k) ** self.hill
                return -self.vmax * x / (1 + x)

    Powers with non-integer exponents and logarithms of a non-positive number
    are read as 0 (a state a solver step takes just below zero is empty).

    A term may carry **gating variables** with dynamics of their own (a
    channel's slow inactivation): list their names in ``gates`` and define
    ``gating(self, c, c_er)``, returning one ``(inf, tau)`` pair per gate, so
    that ``dg/dt = (inf − g)/tau`` (``tau`` in s). ``rate`` reads a gate as
    ``self.<gate>``. A rate or gating may also read ``self.waveform``, the
    stimulus waveform's value at the time (its unit is the protocol's, e.g.
    µM of IP3; 0 before the waveform starts). At rest each gate sits at its
    ``inf`` with the waveform at 0. A model with a gated term is solved as a
    system of states (:mod:`cainfer.forward._system`), generated and
    differentiated from the same expressions, with an equilibrium indicator.

    Parameters
    ----------
    name : str, optional
        Prefix for the term's parameter names in a cell model (``"pmca"`` gives
        ``"pmca_vmax"``); an empty string gives the bare names. Defaults to the
        class's ``default_name``.
    priors : mapping, optional
        Priors replacing the declared ones (by bare name).
    **defaults : float
        New default values for the term's parameters (by bare name).
    """

    compartment: ClassVar[Literal["pm", "er", "mito"]]
    #: ``rate(self, c, c_er)``: the term's flux as an expression (see above);
    #: None only for the abstract class.
    rate: ClassVar[Any] = None
    needs_er: ClassVar[bool] = False
    #: The term's capacity is sampled per unit of the cytosol's buffer capacity
    #: (``coordinates="per_buffer"``): true of the plasma-membrane terms and
    #: influxes, whose effect on free calcium is their rate over β, so that
    #: scaling all of them and β together leaves free calcium nearly unchanged.
    per_buffer: ClassVar[bool] = False
    #: The rate is ``V·c^n/(K^n + c^n)`` of cytosolic calcium, so ``V`` and ``K``
    #: trade off along the slope at rest and ``V`` is sampled as that slope.
    cytosolic_hill: ClassVar[bool] = False
    default_name: ClassVar[str]
    declared: ClassVar[tuple[Parameter, ...]] = ()
    #: Names of values the rate reads that flux balance at rest fixes (not free
    #: parameters): the built-in leaks' rates only.
    derived: ClassVar[tuple[str, ...]] = ()
    #: Their number (set from ``derived``).
    n_derived: ClassVar[int] = 0
    #: Names of the term's gating variables (dimensionless), read by ``rate``
    #: as ``self.<name>``; their dynamics come from ``gating``.
    gates: ClassVar[tuple[str, ...]] = ()
    #: ``gating(self, c, c_er)``: one ``(inf, tau)`` per gate, ``dg/dt = (inf − g)/tau``.
    gating: ClassVar[Any] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.n_derived = len(cls.derived)
        if cls.rate is not None:
            if getattr(cls, "compartment", None) not in ("pm", "er", "mito"):
                raise TypeError(f"{cls.__name__}: compartment must be 'pm', 'er' or 'mito'")
            if cls.derived and cls.rate.__module__ != __name__:
                raise TypeError(
                    f"{cls.__name__}: only the built-in leaks have values set by the resting "
                    "balance; a new term declares parameters"
                )
            if not isinstance(getattr(cls, "default_name", None), str):
                raise TypeError(f"{cls.__name__}: give a default_name (its parameters' prefix)")
            if cls.compartment == "er":
                cls.needs_er = True
        if cls.gates:
            if cls.rate is None or cls.gating is None:
                raise TypeError(f"{cls.__name__}: a term with gates defines rate and gating")
            bare = {p.name for p in cls.declared}
            for g in cls.gates:
                if not (isinstance(g, str) and g.isidentifier()) or g in bare or g == "waveform":
                    raise TypeError(
                        f"{cls.__name__}: gate name {g!r} must be an identifier other than its "
                        "parameters' names and 'waveform'"
                    )
            if len(set(cls.gates)) != len(cls.gates):
                raise TypeError(f"{cls.__name__}: gate names {cls.gates} repeat")
        roles = [p.role for p in cls.declared]
        if cls.per_buffer and roles.count("capacity") != 1:
            raise TypeError(f"{cls.__name__}: per_buffer needs one parameter of role 'capacity'")
        if cls.cytosolic_hill and not (
            roles.count("capacity") == 1 and roles.count("affinity") == 1
            and roles.count("hill") <= 1
        ):  # fmt: skip
            raise TypeError(
                f"{cls.__name__}: cytosolic_hill needs one 'capacity', one 'affinity' and at "
                "most one 'hill' parameter"
            )

    def __init__(
        self,
        name: str | None = None,
        *,
        priors: Mapping[str, Prior] | None = None,
        **defaults: float,
    ) -> None:
        self.name = self.default_name if name is None else str(name)
        known = {p.name: p for p in self.declared}
        priors = dict(priors or {})
        for what, given in (("parameter(s)", defaults), ("parameter(s) for priors", priors)):
            unknown = sorted(set(given) - set(known))
            if unknown:
                raise ValueError(
                    f"{type(self).__name__} has no {what} {unknown}; known: {sorted(known)}"
                )
        params = []
        for p in self.declared:
            q = p.renamed(self.full_name(p.name))
            if p.name in defaults:
                q = q.with_default(defaults[p.name], where=f"default of {type(self).__name__}")
            if p.name in priors:
                if not isinstance(priors[p.name], Prior):
                    raise ValueError(
                        f"{type(self).__name__}: priors[{p.name!r}] must be a Prior, got "
                        f"{priors[p.name]!r}"
                    )
                q = replace(q, prior=priors[p.name])
            params.append(q)
        self.parameters: tuple[Parameter, ...] = tuple(params)

    @property
    def priors(self) -> dict[str, Prior]:
        """The priors given to this term that differ from its class's (by bare name)."""
        return {
            d.name: q.prior
            for d, q in zip(self.declared, self.parameters, strict=True)
            if q.prior != d.prior
        }

    def full_name(self, bare: str) -> str:
        """Parameter name as seen in a cell model."""
        return f"{self.name}_{bare}" if self.name else bare

    @property
    def size(self) -> int:
        """Slots this term takes in the packed parameter vector."""
        return len(self.declared) + self.n_derived

    def __repr__(self) -> str:
        vals = ", ".join(f"{p.name}={p.default:g}" for p in self.parameters)
        return f"{type(self).__name__}({vals})"


def _vmax(default: float, median: float, source: str, what: str) -> Parameter:
    return Parameter(
        "vmax",
        "µM/s",
        default,
        Prior("lognormal", median, 1.0, source),
        description=what,
        role="capacity",
    )


class LinearExtrusion(Flux):
    """Linear extrusion ``J = −γ·(c − c_rest)``: the single-compartment model [3]_.

    With rapid buffering the decay time constant is ``τ = β/γ``, where
    ``β = 1 + κ_S + κ_B`` is the buffer capacity.
    """

    per_buffer = True
    compartment = "pm"
    default_name = ""
    declared = (
        Parameter(
            "gamma",
            "1/s",
            400.0,
            Prior("lognormal", 300.0, 1.0, _HELMCHEN),
            upper=1e6,
            description="extrusion rate constant",
            role="capacity",
        ),
    )

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``−γ·(c − c_rest)``."""
        return -self.gamma * (c - self.c_rest)


class PMCA(Flux):
    """Plasma-membrane Ca-ATPase ``J = −V·c^h/(K^h + c^h)``: high affinity, low capacity [1]_."""

    per_buffer = True
    cytosolic_hill = True
    compartment = "pm"
    default_name = "pmca"
    declared = (
        _vmax(100.0, 100.0, _BRINI, "maximal PMCA extrusion"),
        Parameter(
            "k",
            "µM",
            0.3,
            Prior("lognormal", 0.3, 0.3, _BRINI),
            upper=100.0,
            description="half-activation concentration",
            role="affinity",
        ),
        Parameter(
            "hill",
            "1",
            1.3,
            Prior("uniform", 1.0, 1.6, _BRINI),
            upper=8.0,
            description="Hill coefficient",
            role="hill",
        ),
    )

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``−V·x/(1 + x)``, ``x = (c/K)^h``."""
        x = (c / self.k) ** self.hill
        return -self.vmax * x / (1 + x)


class NCX(Flux):
    """Na/Ca exchanger (forward) ``J = −V·c/(K + c)``: low affinity, high capacity [1]_ [2]_."""

    per_buffer = True
    cytosolic_hill = True
    compartment = "pm"
    default_name = "ncx"
    declared = (
        _vmax(300.0, 300.0, _SHANNON, "maximal NCX extrusion"),
        Parameter(
            "k",
            "µM",
            2.5,
            Prior("lognormal", 2.8, 0.3, _SHANNON),
            upper=1000.0,
            description="half-activation concentration (2-3.6 µM)",
            role="affinity",
        ),
    )

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``−V·c/(K + c)``."""
        return -self.vmax * c / (self.k + c)


class PlasmaLeak(Flux):
    """Constant plasma-membrane leak into the cytosol.

    Its rate (µM/s) is not a free parameter: it is set so that all
    plasma-membrane fluxes balance at the resting state.
    """

    compartment = "pm"
    default_name = "leak"
    derived = ("j",)

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``J`` (µM/s), fixed by the balance at rest."""
        return self.j


class SERCA(Flux):
    """Sarco/endoplasmic-reticulum Ca-ATPase, cytosol → ER, ``V·c^h/(K^h + c^h)`` [2]_."""

    cytosolic_hill = True
    compartment = "er"
    needs_er = True
    default_name = "serca"
    declared = (
        _vmax(290.0, 290.0, _SHANNON, "maximal SERCA uptake"),
        Parameter(
            "k",
            "µM",
            0.25,
            Prior("lognormal", 0.25, 0.3, _SHANNON),
            upper=100.0,
            description="half-activation concentration",
            role="affinity",
        ),
        Parameter(
            "hill",
            "1",
            1.8,
            Prior("uniform", 1.5, 2.1, _SHANNON),
            upper=8.0,
            description="Hill coefficient",
            role="hill",
        ),
    )

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``−V·x/(1 + x)``, ``x = (c/K)^h`` (ER → cytosol sign)."""
        x = (c / self.k) ** self.hill
        return -self.vmax * x / (1 + x)


class ERLeak(Flux):
    """Passive ER leak ``J = k·(c_ER − c)`` into the cytosol.

    Its rate constant (1/s) is set so that ER fluxes balance at rest.
    """

    compartment = "er"
    needs_er = True
    default_name = "er_leak"
    derived = ("k",)

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``k·(c_ER − c)``, ``k`` (1/s) fixed by the balance at rest."""
        return self.k * (c_er - c)


class ERRelease(Flux):
    """Calcium-induced ER release (RyR/IP3R-like) [4]_.

    ``J = k_rel · a(c) · g(c_ER) · (c_ER − c)`` with activation
    ``a = c^h_a/(K_a^h_a + c^h_a)`` (steep: regenerative above about K_a) and
    load gating ``g = c_ER^h_l/(K_l^h_l + c_ER^h_l)`` (a depleted store does not
    release).
    """

    compartment = "er"
    needs_er = True
    default_name = "release"
    declared = (
        Parameter(
            "rate",
            "1/s",
            10.0,
            Prior("lognormal", 10.0, 1.0, _KEENER),
            upper=1e6,
            description="maximal release rate constant",
            role="capacity",
        ),
        Parameter(
            "k_act",
            "µM",
            0.5,
            Prior("lognormal", 0.5, 0.5, _KEENER),
            upper=100.0,
            description="cytosolic Ca for half activation (threshold)",
            role="affinity",
        ),
        Parameter(
            "hill_act",
            "1",
            4.0,
            Prior("uniform", 2.0, 6.0, _KEENER),
            upper=10.0,
            description="activation Hill coefficient",
            role="hill",
        ),
        Parameter(
            "k_load",
            "µM",
            100.0,
            Prior("lognormal", 100.0, 0.5, _KEENER),
            upper=1e5,
            description="ER Ca for half gating by store load",
            role="affinity",
        ),
        Parameter(
            "hill_load",
            "1",
            2.0,
            Prior("uniform", 1.0, 4.0, _KEENER),
            upper=10.0,
            description="load-gating Hill coefficient",
            role="hill",
        ),
    )

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``k_rel·a·g·(c_ER − c)`` (``self.rate`` is the parameter k_rel)."""
        xa = (c / self.k_act) ** self.hill_act
        xl = (c_er / self.k_load) ** self.hill_load
        return self.rate * xa / (1 + xa) * xl / (1 + xl) * (c_er - c)


class GatedRelease(Flux):
    """Calcium-induced ER release with slow calcium-dependent inactivation [4]_.

    ``J = k_rel·a(c)·h·(c_ER − c)``, activation ``a = c^n/(K_a^n + c^n)``
    (fast, regenerative above about K_a) and an inactivation gate
    ``dh/dt = (K_i/(K_i + c) − h)/τ_i`` (slow): fast positive and slow
    negative feedback, the ingredients of all-or-none release.
    """

    compartment = "er"
    needs_er = True
    default_name = "gated_release"
    gates = ("h",)
    declared = (
        Parameter("rate", "1/s", 10.0, Prior("lognormal", 10.0, 1.0, _KEENER), upper=1e6,
                  description="maximal release rate constant", role="capacity"),
        Parameter("k_act", "µM", 0.5, Prior("lognormal", 0.5, 0.5, _KEENER), upper=100.0,
                  description="cytosolic Ca for half activation", role="affinity"),
        Parameter("hill_act", "1", 4.0, Prior("uniform", 2.0, 6.0, _KEENER), upper=10.0,
                  description="activation Hill coefficient", role="hill"),
        Parameter("k_inact", "µM", 0.5, Prior("lognormal", 0.5, 0.7, _KEENER), upper=100.0,
                  description="cytosolic Ca for half inactivation at steady state"),
        Parameter("tau_inact", "s", 2.0, Prior("lognormal", 2.0, 1.0, _KEENER), upper=1e4,
                  description="inactivation time constant"),
    )  # fmt: skip

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``k_rel·a(c)·h·(c_ER − c)`` (``self.rate`` is the parameter k_rel)."""
        xa = (c / self.k_act) ** self.hill_act
        return self.rate * xa / (1 + xa) * self.h * (c_er - c)

    def gating(self: Any, c: Any, c_er: Any) -> Any:
        """``h∞ = K_i/(K_i + c)``, ``τ = τ_i``."""
        return ((self.k_inact / (self.k_inact + c), self.tau_inact),)


class IP3R(Flux):
    """IP3 receptor: the Li–Rinzel reduction of the De Young–Keizer model [6]_ [7]_.

    ``J = v·m∞³·n∞³·h³·(c_ER − c)`` with ``m∞ = P/(P + d₁)`` (IP3 binding),
    ``n∞ = c/(c + d₅)`` (fast activation by calcium) and the slow
    inactivation gate ``dh/dt = a₂·(Q₂·(1 − h) − c·h)``,
    ``Q₂ = d₂·(P + d₁)/(P + d₃)``: ``h∞ = Q₂/(Q₂ + c)``, ``τ_h = 1/(a₂·(Q₂ + c))``.
    ``P`` is the IP3 concentration, the stimulus waveform's value (µM); 0 at
    rest, so the channel is closed there. ``v`` is Li & Rinzel's ``c₁·v₁``
    (per cytosolic volume).
    """

    compartment = "er"
    needs_er = True
    default_name = "ip3r"
    gates = ("h",)
    declared = (
        Parameter("vmax", "1/s", 1.11, Prior("lognormal", 1.11, 1.0, _LI_RINZEL), upper=1e6,
                  description="maximal release rate constant c₁·v₁", role="capacity"),
        Parameter("d1", "µM", 0.13, Prior("lognormal", 0.13, 0.5, _LI_RINZEL), upper=100.0,
                  description="IP3 dissociation constant (activation)"),
        Parameter("d2", "µM", 1.049, Prior("lognormal", 1.049, 0.5, _LI_RINZEL), upper=100.0,
                  description="Ca inactivation dissociation constant"),
        Parameter("d3", "µM", 0.9434, Prior("lognormal", 0.9434, 0.5, _LI_RINZEL),
                  upper=100.0, description="IP3 dissociation constant (inactivation)"),
        Parameter("d5", "µM", 0.08234, Prior("lognormal", 0.08234, 0.5, _LI_RINZEL),
                  upper=100.0, description="Ca activation dissociation constant"),
        Parameter("a2", "1/(µM·s)", 0.2, Prior("lognormal", 0.2, 0.7, _LI_RINZEL), upper=1e4,
                  description="Ca inactivation binding rate (sets τ_h)"),
    )  # fmt: skip

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``v·m∞³·n∞³·h³·(c_ER − c)``."""
        m = self.waveform / (self.waveform + self.d1)
        n = c / (c + self.d5)
        return self.vmax * (m * n * self.h) ** 3 * (c_er - c)

    def gating(self: Any, c: Any, c_er: Any) -> Any:
        """``h∞ = Q₂/(Q₂ + c)``, ``τ_h = 1/(a₂·(Q₂ + c))``."""
        q2 = self.d2 * (self.waveform + self.d1) / (self.waveform + self.d3)
        return ((q2 / (q2 + c), 1 / (self.a2 * (q2 + c))),)


class MCU(Flux):
    """Mitochondrial Ca uniporter, cytosol → matrix, ``J = −V·c^n/(K^n + c^n)`` [8]_.

    Low affinity (K 10-20 µM for isolated mitochondria) and second order in
    cytosolic calcium: it ignores gentle bulk changes and takes up calcium
    fast once calcium reaches micromolar levels. The form leaves out the
    uniporter's dependence on the membrane potential (held constant).
    """

    compartment = "mito"
    default_name = "mcu"
    declared = (
        Parameter("vmax", "µM/s", 5000.0, Prior("lognormal", 5000.0, 1.5, _GUNTER), upper=1e8,
                  description="maximal uptake (per cytosolic volume)", role="capacity"),
        Parameter("k", "µM", 10.0, Prior("lognormal", 14.0, 0.4, _GUNTER), upper=1e4,
                  description="half-activation concentration (10-20 µM)", role="affinity"),
        Parameter("hill", "1", 2.0, Prior("uniform", 1.5, 2.5, _GUNTER), upper=8.0,
                  description="Hill coefficient (second-order uptake)", role="hill"),
    )  # fmt: skip

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``−V·x/(1 + x)``, ``x = (c/K)^n`` (matrix → cytosol sign)."""
        x = (c / self.k) ** self.hill
        return -self.vmax * x / (1 + x)


class NCLX(Flux):
    """Mitochondrial Na/Ca exchanger, matrix → cytosol, ``J = V·c_m/(K + c_m)`` [8]_.

    Saturating in matrix free calcium ``c_m``, of low capacity: it returns
    the calcium the uniporter took up over tens of seconds.
    """

    compartment = "mito"
    default_name = "nclx"
    declared = (
        Parameter("vmax", "µM/s", 5.0, Prior("lognormal", 5.0, 1.5, _GUNTER), upper=1e6,
                  description="maximal release (per cytosolic volume)", role="capacity"),
        Parameter("k", "µM", 5.0, Prior("lognormal", 5.0, 1.0, _GUNTER), upper=1e4,
                  description="matrix calcium for half-maximal release"),
    )  # fmt: skip

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``V·c_m/(K + c_m)``."""
        return self.vmax * self.c_mito / (self.k + self.c_mito)


class SOCE(Flux):
    """Store-operated entry ``J = V·(1 − c_ER^h/(K^h + c_ER^h))``, on as the ER empties [5]_."""

    per_buffer = True
    compartment = "pm"
    needs_er = True
    default_name = "soce"
    declared = (
        _vmax(20.0, 20.0, _PAREKH, "maximal store-operated entry"),
        Parameter(
            "k",
            "µM",
            100.0,
            Prior("lognormal", 100.0, 0.5, _PAREKH),
            upper=1e5,
            description="ER Ca for half inactivation",
            role="affinity",
        ),
        Parameter(
            "hill",
            "1",
            4.0,
            Prior("uniform", 1.0, 6.0, _PAREKH),
            upper=10.0,
            description="Hill coefficient",
            role="hill",
        ),
    )

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``V/(1 + x)``, ``x = (c_ER/K)^h``: ``V·(1 − x/(1 + x))``."""
        return self.vmax / (1 + (c_er / self.k) ** self.hill)


class EventInflux(Flux):
    """Stimulus-evoked influx: each event adds ``amplitude·weight`` µM to total Ca.

    The event times and weights come from the :class:`Stimulus`. The jump in
    total calcium is applied exactly, and free calcium follows from buffering.
    """

    per_buffer = True
    compartment = "pm"
    default_name = "influx"
    declared = (
        Parameter(
            "amplitude",
            "µM",
            10.0,
            Prior("lognormal", 10.0, 1.0, _HELMCHEN),
            upper=1e5,
            description="total Ca added per event (per action potential)",
            role="capacity",
        ),
    )

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """0 between events: the solver adds each event's calcium as a jump."""
        return 0 * self.amplitude


class WaveformInflux(Flux):
    """Stimulus-evoked influx ``J = amplitude·w(t)`` for a stimulus waveform w."""

    per_buffer = True
    compartment = "pm"
    default_name = "waveform"
    declared = (
        Parameter(
            "amplitude",
            "µM/s",
            50.0,
            Prior("lognormal", 50.0, 1.5, _HELMCHEN),
            upper=1e7,
            description="influx at waveform value 1",
            role="capacity",
        ),
    )

    def rate(self: Any, c: Any, c_er: Any) -> Any:
        """``amplitude·w(t)``."""
        return self.amplitude * self.waveform
