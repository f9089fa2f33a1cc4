"""Small checks of user input shared by the API, the config and the command line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable


def repeated(values: Iterable[Hashable]) -> list[str]:
    """The values given more than once, as sorted strings (empty when none is)."""
    return sorted({str(v) for v, n in Counter(values).items() if n > 1})
