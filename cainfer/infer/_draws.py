"""Helpers shared by the fit's modules: draws as parameter vectors, the dye's bound fraction.

Shared by the fit (posterior predictions) and its result (predictions for
another protocol).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cainfer.infer.observation import Options, channel_shapes

_DYE_PARAMETERS = ("c_rest", "kd", "hill", "rf")


def _bound_fraction(xp: Any, dff: Any, c_rest: Any, kd: Any, hill: Any, rf: Any) -> Any:
    """The dye's bound fraction over time and at rest from the model's ΔF/F.

    The model's indicator reads ``F/F_min = 1 + (R_f − 1)·f``, so ``f`` follows
    from its ΔF/F exactly (equilibrium or kinetic binding alike).
    """
    x0 = (c_rest / kd) ** hill
    f_rest = x0 / (1.0 + x0)
    return f_rest + dff * (1.0 + (rf - 1.0) * f_rest) / (rf - 1.0), f_rest


def _roi_draws(draws: np.ndarray, r: int) -> np.ndarray:
    """One parameter's ``(draw, roi)`` draws (``(draw, 1)`` if shared) for ROI ``r``."""
    return draws[:, r if draws.shape[1] > 1 else 0]


def _packed(
    base: np.ndarray, slots: Mapping[str, int], draws: Mapping[str, np.ndarray], r: int, *, n: int
) -> np.ndarray:
    """``(n, n_par)`` packed parameter vectors of ROI ``r``: ``base`` with each draw put in."""
    out = np.tile(base, (n, 1))
    for k, d in draws.items():
        out[:, slots[k]] = _roi_draws(d, r)
    return out


def _dye_fraction(
    dff: np.ndarray,
    draws: Mapping[str, np.ndarray],
    base: np.ndarray,
    slots: Mapping[str, int],
    r: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The dye's bound fraction ``(draw, time)`` and resting one ``(draw, 1)`` in ROI ``r``.

    ``dff`` ``(draw, time)`` is the model's ΔF/F under the same draws; a dye
    parameter that was not free is its fixed value from ``base``.
    """
    n = dff.shape[0]

    def par(name: str) -> np.ndarray:
        col = _roi_draws(draws[name], r) if name in draws else np.full(n, base[slots[name]])
        return col[:, None]

    return _bound_fraction(np, dff, *map(par, _DYE_PARAMETERS))


def _model_ratio(r_min: Any, r_max: Any, beta: Any, f: np.ndarray) -> np.ndarray:
    """The background-free ratio of a dye with bound fraction ``f`` (Grynkiewicz's shapes)."""
    num, den = channel_shapes(r_min, r_max, beta, f)
    return np.asarray(num / den)


def _obs_options(options: Mapping[str, Any]) -> Options:
    """The observation model's options among a fit's options."""
    return Options(
        likelihood=options["likelihood"],
        residuals=options["residuals"],
        drift=options["drift"],
        drift_timescale=options["drift_timescale"],
    )


def _jsonable(x: Any) -> Any:
    """A NumPy scalar as the Python one (ROI labels in JSON and coordinates)."""
    return x.item() if isinstance(x, np.generic) else x
