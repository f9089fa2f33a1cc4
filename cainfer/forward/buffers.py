"""Calcium buffering by an endogenous buffer and the indicator.

Total cytosolic calcium from free calcium c (µM)::

    Ca_T = c·(1 + κ_S) + B_T·c^n/(c^n + K_d^n)

with a linear (low-affinity) endogenous buffer of capacity κ_S and an
indicator of total B_T, affinity K_d and Hill coefficient n. Under the
rapid-buffer approximation ``dc/dt = J/β(c)`` with the buffer capacity
``β(c) = dCa_T/dc`` [1]_.

References
----------
.. [1] Neher E, Augustine GJ (1992). Calcium gradients and buffers in bovine
   chromaffin cells. J Physiol 450:273-301.
   https://doi.org/10.1113/jphysiol.1992.sp019127
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from cainfer.forward import _kernels as K
from cainfer.forward._params import check_positive
from cainfer.forward.indicators import Indicator


def _conc(name: str, x: ArrayLike) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if np.any(~np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be finite concentrations ≥ 0 µM")
    return a


def indicator_capacity(c: ArrayLike, indicator: Indicator) -> np.ndarray:
    """Incremental buffer capacity of the indicator κ_B(c) (dimensionless).

    Parameters
    ----------
    c : array_like
        Free calcium (µM).
    indicator : Indicator
        The indicator (uses K_d, n, B_T).

    Returns
    -------
    numpy.ndarray
        ``B_T·n·K_d^n·c^(n−1)/(c^n + K_d^n)^2``.
    """
    return buffer_capacity(c, kappa_s=0.0, indicator=indicator) - 1.0


def buffer_capacity(c: ArrayLike, *, kappa_s: float, indicator: Indicator) -> np.ndarray:
    """Buffer capacity β(c) = dCa_T/dc (dimensionless).

    Parameters
    ----------
    c : array_like
        Free calcium (µM), ≥ 0.
    kappa_s : float
        Endogenous buffer capacity κ_S (dimensionless), ≥ 0.
    indicator : Indicator
        The indicator.

    Returns
    -------
    numpy.ndarray
        β at each c.
    """
    a = _conc("free calcium c", c)
    kappa = check_positive("kappa_s", kappa_s, allow_zero=True)
    f = np.vectorize(K.buffer_capacity, otypes=[float])
    return np.asarray(f(a, kappa, indicator.b_total, indicator.kd, indicator.hill))


def total_calcium(c: ArrayLike, *, kappa_s: float, indicator: Indicator) -> np.ndarray:
    """Total cytosolic calcium (µM) from free calcium c (µM).

    Parameters
    ----------
    c : array_like
        Free calcium (µM), ≥ 0.
    kappa_s : float
        Endogenous buffer capacity κ_S (dimensionless), ≥ 0.
    indicator : Indicator
        The indicator.

    Returns
    -------
    numpy.ndarray
        ``c·(1 + κ_S) + B_T·c^n/(c^n + K_d^n)``, ≥ c.
    """
    a = _conc("free calcium c", c)
    kappa = check_positive("kappa_s", kappa_s, allow_zero=True)
    x = np.where(a > 0, a, 0.0) / indicator.kd
    xn = x**indicator.hill
    return a * (1.0 + kappa) + indicator.b_total * xn / (1.0 + xn)


def free_calcium(total: ArrayLike, *, kappa_s: float, indicator: Indicator) -> np.ndarray:
    """Free calcium (µM) from total cytosolic calcium (µM): inverse of :func:`total_calcium`.

    A bracketed, safeguarded Newton iteration per element (total calcium is
    strictly increasing in free calcium), exact to about 1e-14 relative.

    Parameters
    ----------
    total : array_like
        Total calcium (µM), ≥ 0.
    kappa_s : float
        Endogenous buffer capacity κ_S (dimensionless), ≥ 0.
    indicator : Indicator
        The indicator.

    Returns
    -------
    numpy.ndarray
        Free calcium, same shape as ``total``.
    """
    a = _conc("total calcium", total)
    kappa = check_positive("kappa_s", kappa_s, allow_zero=True)
    flat = np.ascontiguousarray(a.reshape(-1))
    out = K.free_from_total_array(flat, kappa, indicator.b_total, indicator.kd, indicator.hill)
    return np.asarray(out).reshape(a.shape)


def fluorescence(c: ArrayLike, indicator: Indicator) -> np.ndarray:
    """Indicator fluorescence relative to F_min: ``1 + (R_f − 1)·c^n/(c^n + K_d^n)``.

    Parameters
    ----------
    c : array_like
        Free calcium (µM), ≥ 0.
    indicator : Indicator
        The indicator.

    Returns
    -------
    numpy.ndarray
        F/F_min (dimensionless).
    """
    a = _conc("free calcium c", c)
    xn = (a / indicator.kd) ** indicator.hill
    return 1.0 + (indicator.rf - 1.0) * xn / (1.0 + xn)
