"""cainfer: Bayesian inference of calcium handling from calcium-imaging data."""

from importlib.metadata import PackageNotFoundError, version

from cainfer.extract import extract_traces
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
from cainfer.io import Movie, MovieError, load_movie, read_rois, write_rois

try:
    __version__ = version("cainfer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "CellModel",
    "Indicator",
    "Movie",
    "MovieError",
    "Stimulus",
    "__version__",
    "er_model",
    "extract_traces",
    "get_indicator",
    "load_movie",
    "preset",
    "pumps_model",
    "read_rois",
    "single_compartment",
    "write_rois",
]
