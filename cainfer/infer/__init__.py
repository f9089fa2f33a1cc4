"""Inference: PyMC models of cell models (forward, pymc, pytensor, arviz)."""

from cainfer.infer._op import SolveOp, SolveVJPOp, solve_op
from cainfer.infer.fit import (
    FIT_DEFAULTS,
    FitOptions,
    default_free,
    fit,
    fit_hierarchical,
    fit_rois,
)
from cainfer.infer.result import (
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
