"""The rules an extraction option's value must follow, shared by the config and the CLI.

Both check every option before a movie is read, with one message naming the
option (the config's key, the command's flag) and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def _finite(v: float) -> bool:
    return math.isfinite(v)


# option -> (test of a value, what the value must do); None passes where the
# option is optional (frame_rate, max_shift)
RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "frame_rate": (lambda v: _finite(v) and v > 0, "be a finite number > 0 (frames/s)"),
    "neuropil": (lambda v: 0 <= v < 1, "lie in [0, 1)"),
    "dark_level": (lambda v: _finite(v) and v >= 0, "be a finite number ≥ 0 (counts)"),
    "baseline_window": (lambda v: _finite(v) and v > 0, "be a finite number > 0 (s)"),
    "baseline_sigma": (lambda v: _finite(v) and v > 0, "be a finite number > 0 (s)"),
    "baseline_percentile": (lambda v: 0 <= v <= 100, "lie in [0, 100]"),
    "neuropil_inner": (lambda v: _finite(v) and v >= 0, "be a finite number ≥ 0 (pixels)"),
    "neuropil_min_pixels": (lambda v: v > 0, "be a whole number > 0 (pixels)"),
    "upsample": (lambda v: v > 0, "be a whole number > 0"),
    "chunk": (lambda v: v > 0, "be a whole number > 0 (frames)"),
    "reference_frames": (lambda v: v > 0, "be a whole number > 0 (frames)"),
    "max_shift": (lambda v: _finite(v) and v > 0, "be a finite number > 0 (pixels)"),
    "channel": (lambda v: v >= 0, "be ≥ 0"),
}


def option_problem(name: str, value: float | None) -> str | None:
    """What is wrong with an extraction option's value, or None when it is allowed.

    Parameters
    ----------
    name : str
        A key of :data:`RULES`.
    value : float or None
        The value given; None (the option left out) is always allowed.

    Returns
    -------
    str or None
        ``"must …"``: the rule the value breaks.
    """
    if name not in RULES:
        raise KeyError(f"unknown extraction option {name!r}; known: {', '.join(RULES)}")
    if value is None:
        return None
    test, rule = RULES[name]
    return None if test(value) else f"must {rule}"
