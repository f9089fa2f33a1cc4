"""Preset cell models: the single-compartment, pumps, ER and IP3 models by name."""

from __future__ import annotations

from typing import Literal

from cainfer.forward._params import Prior
from cainfer.forward.fluxes import (
    IP3R,
    NCX,
    PMCA,
    SERCA,
    SOCE,
    ERLeak,
    ERRelease,
    EventInflux,
    LinearExtrusion,
    PlasmaLeak,
)
from cainfer.forward.indicators import Indicator, get_indicator
from cainfer.forward.model import CellModel, ERCompartment

# Li & Rinzel (1994)'s closed cell at De Young & Keizer's values: total calcium
# 2 µM per cytosolic volume, ER/cytosol volume ratio c₁ = 0.185, SERCA
# v₃ = 0.9 µM/s with K = 0.1 µM (Hill 2), leak c₁·v₂ = 0.02035/s; its resting
# state without IP3 (SERCA uptake = leak) is c = 0.05564 µM, c_ER = 10.51 µM.
_LR_C_REST = 0.055638335121
_LR_CER_REST = 10.510063053399
_LR_C1 = 0.185
_LR = "Li & Rinzel 1994, doi:10.1006/jtbi.1994.1041, times the buffer capacity at rest"


def single_compartment(
    indicator: Indicator | str = "OGB-1",
    *,
    indicator_kinetics: Literal["equilibrium", "kinetic"] = "equilibrium",
    name: str = "single_compartment",
) -> CellModel:
    """The added-buffer single-compartment model: linear extrusion and event influx.

    ``dc/dt = (−γ·(c − c_rest) + Σ A·δ(t − t_k))/β(c)``; each event raises
    total calcium by ``A``, decaying with ``τ ≈ (1 + κ_S + κ_B)/γ``.

    Parameters
    ----------
    indicator : Indicator or str
        The indicator or a catalogue name.
    indicator_kinetics : {"equilibrium", "kinetic"}
        Indicator binding in equilibrium (rapid buffer) or with its kinetics;
        see :class:`CellModel`.
    name : str
        Model label.

    Returns
    -------
    CellModel

    References
    ----------
    .. [1] Helmchen F, Imoto K, Sakmann B (1996). Biophys J 70:1069-1081.
       https://doi.org/10.1016/S0006-3495(96)79653-4
    .. [2] Neher E, Augustine GJ (1992). J Physiol 450:273-301.
       https://doi.org/10.1113/jphysiol.1992.sp019127
    """
    return CellModel(
        [LinearExtrusion(), EventInflux()],
        indicator=indicator,
        indicator_kinetics=indicator_kinetics,
        name=name,
    )


def pumps_model(
    indicator: Indicator | str = "OGB-1",
    *,
    indicator_kinetics: Literal["equilibrium", "kinetic"] = "equilibrium",
    name: str = "pumps",
) -> CellModel:
    """PMCA and NCX extrusion, a plasma-membrane leak and event influx.

    Parameters
    ----------
    indicator : Indicator or str
        The indicator or a catalogue name.
    indicator_kinetics : {"equilibrium", "kinetic"}
        Indicator binding in equilibrium (rapid buffer) or with its kinetics;
        see :class:`CellModel`.
    name : str
        Model label.

    Returns
    -------
    CellModel

    References
    ----------
    .. [1] Brini M, Carafoli E (2011). Cold Spring Harb Perspect Biol
       3:a004168. https://doi.org/10.1101/cshperspect.a004168
    """
    return CellModel(
        [PMCA(), NCX(), PlasmaLeak(), EventInflux()],
        indicator=indicator,
        indicator_kinetics=indicator_kinetics,
        name=name,
    )


def er_model(
    indicator: Indicator | str = "OGB-1",
    *,
    indicator_kinetics: Literal["equilibrium", "kinetic"] = "equilibrium",
    name: str = "er",
) -> CellModel:
    """PMCA, NCX, SERCA, ER leak, Ca-induced release, SOCE, leak and event influx.

    Parameters
    ----------
    indicator : Indicator or str
        The indicator or a catalogue name.
    indicator_kinetics : {"equilibrium", "kinetic"}
        Indicator binding in equilibrium (rapid buffer) or with its kinetics;
        see :class:`CellModel`.
    name : str
        Model label.

    Returns
    -------
    CellModel

    References
    ----------
    .. [1] Keener J, Sneyd J (2009). Mathematical Physiology I, 2nd ed., ch. 7.
       https://doi.org/10.1007/978-0-387-75847-3
    """
    return CellModel(
        [PMCA(), NCX(), SERCA(), ERLeak(), ERRelease(), SOCE(), PlasmaLeak(), EventInflux()],
        indicator=indicator,
        indicator_kinetics=indicator_kinetics,
        name=name,
    )


def ip3_model(
    indicator: Indicator | str = "OGB-1",
    *,
    indicator_kinetics: Literal["equilibrium", "kinetic"] = "equilibrium",
    kappa_s: float = 60.0,
    name: str = "ip3",
) -> CellModel:
    """IP3-driven calcium oscillations: Li–Rinzel IP3 receptors, SERCA and an ER leak.

    The closed cell of Li & Rinzel (1994) at De Young & Keizer's values, with
    the rapid buffers added: the IP3 concentration (µM) is the stimulus
    waveform, and a sustained IP3 level above a threshold of about 0.35 µM
    makes the cell oscillate (period about 10 s; up to about 1.2 µM with
    OGB-1's defaults, 0.64 µM in Li & Rinzel's unbuffered cell). The buffers slow free calcium by
    their capacity β; so that the cell keeps Li & Rinzel's time course, the
    receptor's and SERCA's capacities are theirs times β at rest
    (``1 + κ_S + κ_B(c_rest)``), and the ER's buffer capacity is ``β − 1``
    with the ER/cytosol volume ratio ``c₁ = 0.185``. The ER leak is set by
    flux balance at rest (``c₁·v₂ = 0.02035/s`` times β).

    Parameters
    ----------
    indicator : Indicator or str
        The indicator or a catalogue name.
    indicator_kinetics : {"equilibrium"}
        A model with gating states is solved with an indicator in equilibrium.
    kappa_s : float
        Endogenous buffer capacity κ_S (dimensionless).
    name : str
        Model label.

    Returns
    -------
    CellModel

    References
    ----------
    .. [1] Li YX, Rinzel J (1994). J Theor Biol 166:461-473.
       https://doi.org/10.1006/jtbi.1994.1041
    .. [2] De Young GW, Keizer J (1992). PNAS 89:9895-9899.
       https://doi.org/10.1073/pnas.89.20.9895
    """
    ind = get_indicator(indicator)
    x = (_LR_C_REST / ind.kd) ** ind.hill
    beta = 1.0 + kappa_s + ind.hill * ind.b_total * x / (_LR_C_REST * (1.0 + x) ** 2)
    # the capacities' priors scale with them: Li & Rinzel's values times β
    ip3r = IP3R(vmax=1.11 * beta, priors={"vmax": Prior("lognormal", 1.11 * beta, 1.0, _LR)})
    serca = SERCA(vmax=0.9 * beta, k=0.1, hill=2.0,
                  priors={"vmax": Prior("lognormal", 0.9 * beta, 1.0, _LR),
                          "k": Prior("lognormal", 0.1, 0.3, _LR),
                          "hill": Prior("uniform", 1.5, 2.5, _LR)})  # fmt: skip
    return CellModel(
        [ip3r, serca, ERLeak()],
        indicator=ind,
        indicator_kinetics=indicator_kinetics,
        er=ERCompartment(c_rest=_LR_CER_REST, kappa=beta - 1.0, volume=_LR_C1),
        c_rest=_LR_C_REST,
        kappa_s=kappa_s,
        name=name,
    )


PRESETS = {
    "single_compartment": single_compartment,
    "pumps": pumps_model,
    "er": er_model,
    "ip3": ip3_model,
}


def preset(
    name: str,
    indicator: Indicator | str = "OGB-1",
    *,
    indicator_kinetics: Literal["equilibrium", "kinetic"] = "equilibrium",
) -> CellModel:
    """A preset cell model by name: ``"single_compartment"``, ``"pumps"``, ``"er"`` or ``"ip3"``.

    Parameters
    ----------
    name : str
        Preset name.
    indicator : Indicator or str
        The indicator or a catalogue name.
    indicator_kinetics : {"equilibrium", "kinetic"}
        Indicator binding in equilibrium (rapid buffer) or with its kinetics.

    Returns
    -------
    CellModel
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name](indicator, indicator_kinetics=indicator_kinetics)
