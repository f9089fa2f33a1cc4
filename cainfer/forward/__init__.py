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
    IP3R,
    MCU,
    NCLX,
    NCX,
    PMCA,
    SERCA,
    SOCE,
    ERLeak,
    ERRelease,
    EventInflux,
    Flux,
    GatedRelease,
    LinearExtrusion,
    PlasmaLeak,
    WaveformInflux,
)
from cainfer.forward.indicators import Indicator, get_indicator, indicator_names
from cainfer.forward.model import CellModel, ERCompartment, MitoCompartment, RestingState
from cainfer.forward.presets import (
    PRESETS,
    er_model,
    ip3_model,
    preset,
    pumps_model,
    single_compartment,
)
from cainfer.forward.ratiometric import (
    RatioCalibration,
    RatiometricDye,
    RatioWarning,
    get_ratiometric,
    ratiometric_names,
)
from cainfer.forward.stimulus import Stimulus

__all__ = [
    "IP3R",
    "MCU",
    "NCLX",
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
    "GatedRelease",
    "Indicator",
    "LinearExtrusion",
    "MitoCompartment",
    "Parameter",
    "PlasmaLeak",
    "Prior",
    "RatioCalibration",
    "RatioWarning",
    "RatiometricDye",
    "RestingState",
    "Stimulus",
    "WaveformInflux",
    "buffer_capacity",
    "er_model",
    "fluorescence",
    "free_calcium",
    "get_indicator",
    "get_ratiometric",
    "indicator_capacity",
    "indicator_names",
    "ip3_model",
    "preset",
    "pumps_model",
    "ratiometric_names",
    "single_compartment",
    "total_calcium",
]
