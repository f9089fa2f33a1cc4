"""cainfer: Bayesian inference of calcium handling from calcium-imaging data."""

from importlib.metadata import PackageNotFoundError, version

from cainfer.extract import extract_traces, load_traces
from cainfer.forward import (
    CellModel,
    Indicator,
    Stimulus,
    er_model,
    get_indicator,
    ip3_model,
    preset,
    pumps_model,
    single_compartment,
)
from cainfer.io import Movie, MovieError, load_movie, read_rois, write_rois

try:
    __version__ = version("cainfer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

_LAZY = {
    name: "cainfer.infer"
    for name in ("fit", "fit_rois", "fit_hierarchical", "compare", "load_fit", "Fit")
}


def __getattr__(name: str) -> object:
    # the inference layer imports PyMC: load it on first use, not with the package
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cainfer' has no attribute {name!r}")


__all__ = [
    "CellModel",
    "Fit",
    "Indicator",
    "Movie",
    "MovieError",
    "Stimulus",
    "__version__",
    "compare",
    "er_model",
    "extract_traces",
    "fit",
    "fit_hierarchical",
    "fit_rois",
    "get_indicator",
    "ip3_model",
    "load_fit",
    "load_movie",
    "load_traces",
    "preset",
    "pumps_model",
    "read_rois",
    "single_compartment",
    "write_rois",
]
