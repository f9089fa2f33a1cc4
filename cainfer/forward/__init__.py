"""Physics layer: buffers, indicators, fluxes and cell models (numpy, scipy, numba only)."""

from cainfer.forward._params import Parameter, Prior
from cainfer.forward.buffers import (
    buffer_capacity,
    fluorescence,
    free_calcium,
    indicator_capacity,
    total_calcium,
)
from cainfer.forward.fluxes import (
    NCX,
    PMCA,
    SERCA,
    SOCE,
    ERLeak,
    ERRelease,
    EventInflux,
    Flux,
    LinearExtrusion,
    PlasmaLeak,
    WaveformInflux,
)
from cainfer.forward.indicators import Indicator, get_indicator, indicator_names
from cainfer.forward.model import (
    PRESETS,
    CellModel,
    ERCompartment,
    RestingState,
    er_model,
    preset,
    pumps_model,
    single_compartment,
)
from cainfer.forward.stimulus import Stimulus

__all__ = [
    "NCX",
    "PMCA",
    "PRESETS",
    "SERCA",
    "SOCE",
    "CellModel",
    "ERCompartment",
    "ERLeak",
    "ERRelease",
    "EventInflux",
    "Flux",
    "Indicator",
    "LinearExtrusion",
    "Parameter",
    "PlasmaLeak",
    "Prior",
    "RestingState",
    "Stimulus",
    "WaveformInflux",
    "buffer_capacity",
    "er_model",
    "fluorescence",
    "free_calcium",
    "get_indicator",
    "indicator_capacity",
    "indicator_names",
    "preset",
    "pumps_model",
    "single_compartment",
    "total_calcium",
]
