"""The options shared by the fits, their allowed values and defaults (standard library only).

Kept outside :mod:`cainfer.infer` so that code which must not import PyMC
(the pipeline's config reader) reads the same defaults and allowed values as
:func:`cainfer.fit`.
"""

from __future__ import annotations

from typing import Literal, TypedDict

#: What was recorded: raw fluorescence, a ΔF/F trace (free scale, offset and
#: baseline), ΔF/F taken as exact, or a ratiometric pair.
Observation = Literal["auto", "fluorescence", "dff", "dff_exact", "ratio"]
#: Residual model: AR(1) or independent.
Residuals = Literal["ar1", "white"]
#: Slow baseline: a smooth one, or none.
Drift = Literal["smooth", "none"]
#: Noise distribution.
Likelihood = Literal["normal", "student_t"]
Adaptation = Literal["low_rank", "diag"]
Coordinates = Literal["per_buffer", "natural"]


class FitOptions(TypedDict, total=False):
    """The options :func:`cainfer.fit`, ``fit_rois`` and ``fit_hierarchical`` share.

    Each is a keyword of those functions; their docstrings say what it does.
    ``FIT_DEFAULTS`` holds the defaults.
    """

    observation: Observation
    likelihood: Likelihood
    residuals: Residuals
    drift: Drift
    drift_timescale: float
    draws: int
    tune: int
    chains: int
    cores: int | None
    seed: int
    substeps: int | Literal["auto"]
    adaptation: Adaptation
    coordinates: Coordinates
    target_accept: float
    sampler: Literal["nutpie", "numpyro"]
    backend: Literal["numba", "jax"]
    progress: bool | Literal["auto"]


FIT_DEFAULTS: FitOptions = {
    "observation": "auto",
    "likelihood": "normal",
    "residuals": "ar1",
    "drift": "smooth",
    "drift_timescale": 20.0,
    "draws": 1000,
    "tune": 1000,
    "chains": 4,
    "cores": None,
    "seed": 0,
    "substeps": "auto",
    "adaptation": "low_rank",
    "coordinates": "per_buffer",
    "target_accept": 0.8,
    "sampler": "nutpie",
    "backend": "numba",
    "progress": "auto",
}
