"""Inference: PyMC models of cell models (forward, pymc, pytensor, arviz)."""

from cainfer.forward._cache import prepare_pytensor

prepare_pytensor()  # before PyTensor's first import: it needs a writable compile directory

from cainfer.infer._op import SolveOp, SolveVJPOp, solve_op  # noqa: E402
from cainfer.infer.fit import (  # noqa: E402
    FIT_DEFAULTS,
    FitOptions,
    default_free,
    fit,
    fit_hierarchical,
    fit_rois,
)
from cainfer.infer.result import (  # noqa: E402
    Fit,
    FitWarning,
    IdentifiabilityWarning,
    SamplerWarning,
    compare,
    load_fit,
)

__all__ = [
    "FIT_DEFAULTS",
    "Fit",
    "FitOptions",
    "FitWarning",
    "IdentifiabilityWarning",
    "SamplerWarning",
    "SolveOp",
    "SolveVJPOp",
    "compare",
    "default_free",
    "fit",
    "fit_hierarchical",
    "fit_rois",
    "load_fit",
    "solve_op",
]
