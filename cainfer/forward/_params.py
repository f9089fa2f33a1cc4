"""Parameter declarations shared by buffers, fluxes and cell models."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

PriorKind = Literal["lognormal", "normal", "uniform", "halfnormal"]
Role = Literal["capacity", "affinity", "hill", "other"]
ROLES: tuple[str, ...] = ("capacity", "affinity", "hill", "other")
_PRIOR_KINDS: tuple[str, ...] = ("lognormal", "normal", "uniform", "halfnormal")


@dataclass(frozen=True)
class Prior:
    """A default prior for one parameter, with the source it was taken from.

    Parameters
    ----------
    kind : {"lognormal", "normal", "uniform", "halfnormal"}
        Distribution family.
    a, b : float
        Family parameters in the parameter's own unit:
        ``lognormal``: median and sigma of the log;
        ``normal``: mean and sd; ``uniform``: lower and upper;
        ``halfnormal``: sd (``b`` unused).
    source : str
        Where the numbers come from (citation).
    """

    kind: PriorKind
    a: float
    b: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _PRIOR_KINDS:
            raise ValueError(f"prior kind {self.kind!r} is not one of {_PRIOR_KINDS}")
        if self.kind == "lognormal" and not (self.a > 0 and self.b > 0):
            raise ValueError("lognormal prior needs median > 0 and sigma > 0")
        if self.kind == "uniform" and not self.a < self.b:
            raise ValueError("uniform prior needs lower < upper")
        if self.kind in ("normal", "halfnormal") and not (self.b > 0 or self.kind == "halfnormal"):
            raise ValueError("normal prior needs sd > 0")
        if self.kind == "halfnormal" and not self.a > 0:
            raise ValueError("halfnormal prior needs sd > 0")

    def interval(self, prob: float = 0.94) -> tuple[float, float]:
        """Central interval holding ``prob`` of the prior mass (parameter units)."""
        from scipy import stats

        lo_q, hi_q = (1 - prob) / 2, (1 + prob) / 2
        if self.kind == "lognormal":
            d = stats.lognorm(s=self.b, scale=self.a)
        elif self.kind == "normal":
            d = stats.norm(self.a, self.b)
        elif self.kind == "uniform":
            d = stats.uniform(self.a, self.b - self.a)
        else:
            d = stats.halfnorm(scale=self.a)
        return float(d.ppf(lo_q)), float(d.ppf(hi_q))


@dataclass(frozen=True)
class Parameter:
    """One named model parameter.

    Parameters
    ----------
    name : str
        Name within its owner (for example ``"vmax"``); a cell model prefixes
        it with the owner's name (``"pmca_vmax"``).
    unit : str
        Physical unit (µM, s, 1/s, µM/s, or "1" for dimensionless).
    default : float
        Default value, in ``unit``.
    prior : Prior
        Default prior with its literature source.
    lower, upper : float
        Allowed range (inclusive lower unless ``open_lower``); values outside
        raise ``ValueError``.
    description : str
        One line saying what the parameter is.
    open_lower : bool
        If True the lower bound itself is not allowed (for example a
        concentration that must be strictly positive).
    role : {"capacity", "affinity", "hill", "other"}
        What the parameter is to its term, which decides the coordinates it is
        sampled in (:func:`cainfer.fit`): ``"capacity"`` scales the term's rate
        (V_max, γ, an influx amplitude, a release rate), ``"affinity"`` is a
        half-activation concentration (µM), ``"hill"`` a Hill coefficient
        (fixed by default), ``"other"`` anything else.
    """

    name: str
    unit: str
    default: float
    prior: Prior
    lower: float = 0.0
    upper: float = math.inf
    description: str = ""
    open_lower: bool = True
    role: Role = "other"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(
                f"parameter {self.name!r}: role {self.role!r}; allowed: {', '.join(ROLES)}"
            )
        self.check(self.default, where="default")

    def renamed(self, name: str) -> Parameter:
        """Return a copy under another name."""
        return replace(self, name=name)

    def with_default(self, value: float, *, where: str = "") -> Parameter:
        """Return a copy with another default, checked against the allowed range."""
        return replace(self, default=self.check(value, where=where))

    def allowed(self) -> str:
        """Human-readable allowed range."""
        left = "(" if self.open_lower else "["
        return f"{left}{self.lower:g}, {self.upper:g}] {self.unit}"

    def check(self, value: float, *, where: str = "") -> float:
        """Validate one value and return it as float.

        Raises
        ------
        ValueError
            If the value is not a finite number inside the allowed range.
        """
        v = float(value)
        bad = not np.isfinite(v) or v > self.upper
        bad = bad or (v <= self.lower if self.open_lower else v < self.lower)
        if bad:
            at = f" ({where})" if where else ""
            raise ValueError(
                f"parameter {self.name!r}{at} = {value!r} is outside its allowed range "
                f"{self.allowed()}"
            )
        return v


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Validate a scalar that must be finite and positive (or non-negative)."""
    v = float(value)
    ok = np.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        rng = "[0, inf)" if allow_zero else "(0, inf)"
        raise ValueError(f"{name} = {value!r} must be a finite number in {rng}")
    return v


def merge_values(
    declared: Mapping[str, Parameter], values: Mapping[str, float] | None, *, owner: str
) -> dict[str, float]:
    """Merge user values over defaults, rejecting unknown names and bad values."""
    out = {k: p.default for k, p in declared.items()}
    if values is None:
        return out
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {owner}; known: {sorted(declared)}")
    for k, v in values.items():
        out[k] = declared[k].check(v)
    return out
