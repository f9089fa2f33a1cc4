"""Fluorescent calcium indicators and their catalogue.

Indicator constants (K_d, Hill coefficient, ΔF/F_max) as compiled in

- Badura A, Sun XR, Giovannucci A, Lynch LA, Wang SS-H (2014). Fast calcium
  sensor proteins for monitoring neural activity. Neurophotonics 1:025008.
  https://doi.org/10.1117/1.NPh.1.2.025008
- Dana H, Sun Y, Mohar B, et al. (2019). High-performance calcium sensors for
  imaging activity in neuronal populations and microcompartments.
  Nat Methods 16:649-657. https://doi.org/10.1038/s41592-019-0435-6

The dynamic range is ``R_f = F_max / F_min = 1 + ΔF/F_max`` (ΔF/F_max taken
from zero calcium).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from cainfer.forward._params import check_positive

_BADURA = "Badura et al. 2014, doi:10.1117/1.NPh.1.2.025008"
_DANA = "Dana et al. 2019, doi:10.1038/s41592-019-0435-6"


@dataclass(frozen=True)
class Indicator:
    """A fluorescent calcium indicator in equilibrium with free calcium.

    Fluorescence follows ``F(c) = F_min·(1 + (R_f − 1)·c^n/(c^n + K_d^n))``.

    Parameters
    ----------
    name : str
        Label.
    kd : float
        Apparent dissociation constant K_d (µM).
    hill : float
        Hill coefficient n (dimensionless).
    rf : float
        Dynamic range R_f = F_max/F_min (dimensionless, > 0, not 1): above 1
        for an indicator that brightens on binding, below 1 for one that
        dims (the 380-nm channel of Fura-2, see :mod:`cainfer.forward.ratiometric`).
    b_total : float
        Total indicator concentration B_T in the cytosol (µM).
    k_on : float or None
        Association rate (1/(µM^n·s)); with ``k_off`` must satisfy
        ``k_off/k_on = K_d^n`` within 1%. Used by models built with
        ``indicator_kinetics="kinetic"``; the equilibrium model ignores it.
    k_off : float or None
        Dissociation rate (1/s): with ``switch_ratio`` > 0, the bright
        state's rate back to the dim one.
    switch_ratio : float
        φ ≥ 0 (dimensionless), kinetic models only. 0: one-step binding.
        Above 0: the sequential scheme, in which calcium binds rapidly to a
        dim state that switches to the bright one at ``k_off/φ`` (1/s) and
        back at ``k_off``: the rise is limited by ``k_off·(1 + 1/φ)``, the
        decay by ``k_off``, while the equilibrium fluorescence keeps ``kd``
        and ``hill`` (see :func:`cainfer.forward._kernels.dim_bound_fraction`).
    source : str
        Where the constants come from.
    kinetics_source : str
        Where ``k_on``/``k_off`` come from (the prior of a fitted ``k_off``
        cites it).
    """

    name: str
    kd: float
    hill: float
    rf: float
    b_total: float = 50.0
    k_on: float | None = None
    k_off: float | None = None
    switch_ratio: float = 0.0
    source: str = "user-defined"
    kinetics_source: str = "user-defined"

    def __post_init__(self) -> None:
        check_positive(f"indicator {self.name!r} kd (µM)", self.kd)
        check_positive(f"indicator {self.name!r} hill", self.hill)
        check_positive(f"indicator {self.name!r} b_total (µM)", self.b_total, allow_zero=True)
        if not (math.isfinite(self.rf) and self.rf > 0.0 and self.rf != 1.0):
            raise ValueError(
                f"indicator {self.name!r} rf = {self.rf!r} must be a finite number > 0 other "
                "than 1 (above 1 for an indicator that brightens on binding)"
            )
        check_positive(f"indicator {self.name!r} switch_ratio", self.switch_ratio, allow_zero=True)
        if (self.k_on is None) != (self.k_off is None):
            raise ValueError(f"indicator {self.name!r}: give both k_on and k_off, or neither")
        if self.k_on is not None and self.k_off is not None:
            check_positive(f"indicator {self.name!r} k_on", self.k_on)
            check_positive(f"indicator {self.name!r} k_off", self.k_off)
            implied = (self.k_off / self.k_on) ** (1.0 / self.hill)
            if abs(implied / self.kd - 1.0) > 0.01:
                raise ValueError(
                    f"indicator {self.name!r}: (k_off/k_on)^(1/n) = {implied:.4g} µM "
                    f"disagrees with kd = {self.kd:.4g} µM"
                )

    @property
    def dff_max(self) -> float:
        """ΔF/F from zero to saturating calcium, ``R_f − 1`` (dimensionless)."""
        return self.rf - 1.0

    def with_(self, **changes: float | str | None) -> Indicator:
        """Return a copy with some fields changed (for example ``b_total``)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _preset(
    name: str, kd_nM: float, hill: float, dff_max: float, b_total: float, src: str
) -> Indicator:
    return Indicator(name, kd_nM / 1000.0, hill, 1.0 + dff_max, b_total, source=src)


# b_total: OGB-1 at 50 µM as loaded through a patch pipette (Helmchen F, Imoto K,
# Sakmann B 1996, Biophys J 70:1069, doi:10.1016/S0006-3495(96)79653-4); genetically
# encoded indicators at 20 µM, a typical expression level: set it for your preparation.
_CATALOGUE: dict[str, Indicator] = {
    i.name: i
    for i in (
        _preset("OGB-1", 250, 1.0, 14.0, 50.0, _BADURA),
        _preset("GCaMP3", 287, 2.52, 12.0, 20.0, _BADURA),
        _preset("GCaMP6f", 290, 2.7, 25.2, 20.0, _BADURA),
        _preset("GCaMP6s", 147, 2.45, 27.2, 20.0, _BADURA),
        _preset("jGCaMP7f", 174, 2.3, 30.2, 20.0, _DANA),
        _preset("jGCaMP7s", 68, 2.49, 40.4, 20.0, _DANA),
        _preset("jGCaMP7b", 82, 3.06, 22.1, 20.0, _DANA),
        _preset("jGCaMP7c", 298, 2.44, 145.6, 20.0, _DANA),
    )
}


def indicator_names() -> tuple[str, ...]:
    """Names of the catalogued indicators."""
    return tuple(_CATALOGUE)


def get_indicator(name: str | Indicator, **changes: float) -> Indicator:
    """Look up a catalogued indicator by name (case-insensitive).

    Parameters
    ----------
    name : str or Indicator
        A catalogue name (see :func:`indicator_names`) or an ``Indicator``,
        returned as is.
    **changes
        Fields to override, for example ``b_total=20.0`` (µM).

    Returns
    -------
    Indicator

    Raises
    ------
    ValueError
        If the name is not in the catalogue; the message lists the known names.
    """
    if isinstance(name, Indicator):
        ind = name
    else:
        key = {k.lower(): k for k in _CATALOGUE}.get(str(name).lower())
        if key is None:
            raise ValueError(
                f"unknown indicator {name!r}; known indicators: {', '.join(_CATALOGUE)}"
            )
        ind = _CATALOGUE[key]
    return ind.with_(**changes) if changes else ind
