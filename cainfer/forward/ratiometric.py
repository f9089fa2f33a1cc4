"""Ratiometric indicators: two channels, one binding, the Grynkiewicz calibration.

A ratiometric dye (Fura-2 excited at 340 and 380 nm, Indo-1 seen at two
emission bands) changes the balance of two channels when it binds calcium.
With bound fraction ``f`` and per-channel brightness ``S_f`` (free dye) and
``S_b`` (bound dye), each channel is ``F_λ ∝ S_f,λ·(1 − f) + S_b,λ·f`` and
their ratio ``R = F_1/F_2`` follows

``R = (R_min·β + R_max·x)/(β + x)``, ``x = (c/K_d)^n``,

with ``R_min = S_f,1/S_f,2`` (no calcium), ``R_max = S_b,1/S_b,2``
(saturated) and ``β = S_f,2/S_b,2`` (the denominator channel's free/bound
brightness), hence ``c = K_d·(β·(R − R_min)/(R_max − R))^(1/n)``.

Grynkiewicz G, Poenie M, Tsien RY (1985). A new generation of Ca2+ indicators
with greatly improved fluorescence properties. J Biol Chem 260:3440-3450,
doi:10.1016/S0021-9258(19)83641-4.

``R_min``, ``R_max`` and ``β`` depend on the microscope (filters, light
source, detector) and are measured on it (calcium-free and saturating
solutions, or ionophore in situ); they are not dye constants and so are not
catalogued. ``K_d`` and the Hill coefficient are the dye's.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from cainfer.forward._params import check_positive
from cainfer.forward.indicators import Indicator

_GRYNKIEWICZ = "Grynkiewicz, Poenie & Tsien 1985, doi:10.1016/S0021-9258(19)83641-4"


class RatioWarning(UserWarning):
    """Ratios outside (R_min, R_max) that have no calcium concentration."""


@dataclass(frozen=True)
class RatiometricDye:
    """A ratiometric calcium dye: its binding constants and its two channels.

    Parameters
    ----------
    name : str
        Label.
    kd : float
        Dissociation constant K_d (µM).
    hill : float
        Hill coefficient n (dimensionless).
    channels : tuple of str
        What the numerator and denominator channels are (for example
        ``("340 nm", "380 nm")`` excitation); the ratio is first/second.
    b_total : float
        Total dye concentration in the cytosol (µM).
    source : str
        Where ``kd`` and ``hill`` come from, with the conditions they hold at.
    """

    name: str
    kd: float
    hill: float
    channels: tuple[str, str]
    b_total: float = 50.0
    source: str = "user-defined"

    def __post_init__(self) -> None:
        check_positive(f"dye {self.name!r} kd (µM)", self.kd)
        check_positive(f"dye {self.name!r} hill", self.hill)
        check_positive(f"dye {self.name!r} b_total (µM)", self.b_total, allow_zero=True)
        if len(self.channels) != 2:
            raise ValueError(f"dye {self.name!r}: channels must name two channels")

    def calibration(
        self, *, r_min: float, r_max: float, beta: float, source: str = "user calibration"
    ) -> RatioCalibration:
        """Calibration from this dye's K_d and Hill coefficient and a setup's R_min, R_max, β."""
        return RatioCalibration(
            r_min=r_min, r_max=r_max, beta=beta, kd=self.kd, hill=self.hill, source=source
        )

    def indicator(self, calibration: RatioCalibration, *, channel: int) -> Indicator:
        """One channel as a single-wavelength :class:`Indicator` (for the forward model).

        Parameters
        ----------
        calibration : RatioCalibration
            The setup's calibration (its ``kd``/``hill`` must be this dye's).
        channel : {0, 1}
            0 the numerator channel, 1 the denominator.

        Returns
        -------
        Indicator
            ``rf`` is that channel's bound/free brightness (below 1 for a
            channel that dims on binding, as Fura-2 at 380 nm).
        """
        if channel not in (0, 1):
            raise ValueError(f"channel = {channel!r}; allowed: 0 (numerator), 1 (denominator)")
        if not (
            math.isclose(calibration.kd, self.kd) and math.isclose(calibration.hill, self.hill)
        ):
            raise ValueError(
                f"calibration K_d {calibration.kd} µM / Hill {calibration.hill} are not "
                f"{self.name}'s ({self.kd} µM, {self.hill}); build it with dye.calibration()"
            )
        rf = calibration.channel_ranges()[channel]
        return Indicator(
            f"{self.name} ({self.channels[channel]})",
            self.kd,
            self.hill,
            rf,
            self.b_total,
            source=f"{self.source}; channel range from {calibration.source}",
        )


@dataclass(frozen=True)
class RatioCalibration:
    """The Grynkiewicz calibration of a ratiometric measurement.

    Parameters
    ----------
    r_min : float
        Ratio of the calcium-free dye (dimensionless, > 0).
    r_max : float
        Ratio of the calcium-saturated dye (> ``r_min``).
    beta : float
        ``S_f2/S_b2``: the denominator channel's brightness free over bound
        (> 0; for Fura-2 at 380 nm typically well above 1).
    kd : float
        Dissociation constant (µM).
    hill : float
        Hill coefficient (1 for Fura-2 and Indo-1).
    source : str
        Where the numbers come from.
    """

    r_min: float
    r_max: float
    beta: float
    kd: float
    hill: float = 1.0
    source: str = "user calibration"

    def __post_init__(self) -> None:
        check_positive("r_min", self.r_min)
        check_positive("r_max", self.r_max)
        check_positive("beta", self.beta)
        check_positive("kd (µM)", self.kd)
        check_positive("hill", self.hill)
        if not self.r_max > self.r_min:
            raise ValueError(f"r_max = {self.r_max} must exceed r_min = {self.r_min}")

    def channel_ranges(self) -> tuple[float, float]:
        """Each channel's bound/free brightness ``S_b/S_f``: ``(R_max/(β·R_min), 1/β)``."""
        return self.r_max / (self.beta * self.r_min), 1.0 / self.beta

    def to_ratio(self, ca: Any) -> np.ndarray:
        """The ratio ``R`` at free calcium ``ca`` (µM, ≥ 0)."""
        c = np.asarray(ca, dtype=float)
        if np.any(c < 0):
            raise ValueError("free calcium must be ≥ 0 µM")
        x = (c / self.kd) ** self.hill
        with np.errstate(invalid="ignore"):
            r = (self.r_min * self.beta + self.r_max * x) / (self.beta + x)
        return np.where(np.isinf(x), self.r_max, r)

    def to_calcium(self, ratio: Any) -> np.ndarray:
        """Free calcium (µM) from ratios: ``K_d·(β·(R − R_min)/(R_max − R))^(1/n)``.

        ``R_min`` gives 0 µM. Below ``R_min`` or at/above ``R_max`` no
        concentration gives the ratio: those values come back NaN, with a
        :class:`RatioWarning` saying how many.
        """
        r = np.asarray(ratio, dtype=float)
        inside = (r >= self.r_min) & (r < self.r_max)
        bad = int(np.count_nonzero(~inside & np.isfinite(r)))
        if bad:
            warnings.warn(
                f"{bad} ratio(s) outside [R_min, R_max) = [{self.r_min}, {self.r_max}): no "
                "calcium concentration gives them (noise, background or a calibration "
                "from another setup); returned as NaN",
                RatioWarning,
                stacklevel=2,
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            x = self.beta * (r - self.r_min) / (self.r_max - r)
            c = self.kd * x ** (1.0 / self.hill)
        return np.where(inside, c, np.nan)


# K_d with 1 mM Mg2+ at 37 °C (100 mM KCl, 10 mM MOPS, pH 7.0), Hill 1: Grynkiewicz et al.
# 1985 (Fura-2 135 nM without Mg2+). Indo-1's emission moves from ~475 nm (free) to ~400 nm
# (bound).
# b_total: 50 µM, as a patch-pipette load (set it for your preparation).
_RATIOMETRIC: dict[str, RatiometricDye] = {
    d.name: d
    for d in (
        RatiometricDye("Fura-2", 0.224, 1.0, ("340 nm excitation", "380 nm excitation"),
                       50.0, _GRYNKIEWICZ),
        RatiometricDye("Indo-1", 0.250, 1.0, ("~400 nm emission", "~475 nm emission"),
                       50.0, _GRYNKIEWICZ),
    )
}  # fmt: skip


def ratiometric_names() -> tuple[str, ...]:
    """Names of the catalogued ratiometric dyes."""
    return tuple(_RATIOMETRIC)


def get_ratiometric(name: str | RatiometricDye) -> RatiometricDye:
    """Look up a catalogued ratiometric dye by name (case-insensitive).

    Raises
    ------
    ValueError
        If the name is not catalogued; the message lists the known names.
    """
    if isinstance(name, RatiometricDye):
        return name
    key = {k.lower(): k for k in _RATIOMETRIC}.get(str(name).lower())
    if key is None:
        raise ValueError(f"unknown ratiometric dye {name!r}; known: {', '.join(_RATIOMETRIC)}")
    return _RATIOMETRIC[key]
