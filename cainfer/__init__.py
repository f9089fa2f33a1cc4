"""cainfer: Bayesian inference of calcium handling from calcium-imaging data."""

from importlib.metadata import PackageNotFoundError, version

from cainfer.forward import (
    CellModel,
    Indicator,
    Stimulus,
    er_model,
    get_indicator,
    preset,
    pumps_model,
    single_compartment,
)

try:
    __version__ = version("cainfer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "CellModel",
    "Indicator",
    "Stimulus",
    "__version__",
    "er_model",
    "get_indicator",
    "preset",
    "pumps_model",
    "single_compartment",
]
