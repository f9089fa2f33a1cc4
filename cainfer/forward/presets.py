"""Preset cell models: the single-compartment, pumps and ER models by name."""

from __future__ import annotations

from typing import Literal

from cainfer.forward.fluxes import (
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
from cainfer.forward.indicators import Indicator
from cainfer.forward.model import CellModel


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


PRESETS = {"single_compartment": single_compartment, "pumps": pumps_model, "er": er_model}


def preset(
    name: str,
    indicator: Indicator | str = "OGB-1",
    *,
    indicator_kinetics: Literal["equilibrium", "kinetic"] = "equilibrium",
) -> CellModel:
    """A preset cell model by name: ``"single_compartment"``, ``"pumps"`` or ``"er"``.

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
