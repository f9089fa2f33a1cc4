"""HTML tables for the rich display of models and fits in Jupyter (standard library only)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

# inline styles: notebooks drop <style> blocks from untrusted outputs, not attributes
_TABLE = 'style="border-collapse:collapse;font-size:90%;text-align:right"'
_CELL = 'style="padding:2px 8px;border-bottom:1px solid #ddd"'
FLAG = "color:#b00020;font-weight:bold"
GOOD = "color:#1b7a2f"


def esc(x: Any) -> str:
    """``x`` as text safe in HTML."""
    return html.escape(str(x))


def number(x: Any) -> str:
    """A number to 4 significant digits (text otherwise)."""
    try:
        return f"{float(x):.4g}"
    except (TypeError, ValueError):
        return esc(x)


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    flagged: set[tuple[int, int]] | None = None,
    left: set[int] | None = None,
) -> str:
    """An HTML table; ``flagged`` (row, column) cells are shown as warnings.

    Columns are right-aligned (numbers) except those in ``left`` (text).
    """
    flagged, left = flagged or set(), left or set()

    def cell(tag: str, j: int) -> str:
        return f'<{tag} {_CELL[:-1]};text-align:{"left" if j in left else "right"}">'

    head = "".join(f"{cell('th', j)}{esc(h)}</th>" for j, h in enumerate(header))
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, v in enumerate(row):
            style = f' style="{FLAG}"' if (i, j) in flagged else ""
            cells.append(f"{cell('td', j)}<span{style}>{esc(v)}</span></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table {_TABLE}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def prior_text(kind: str, a: float, b: float) -> str:
    """A prior as one short phrase in the parameter's unit."""
    if kind == "lognormal":
        return f"lognormal(median {a:.4g}, log-sd {b:.3g})"
    if kind == "normal":
        return f"normal({a:.4g}, sd {b:.3g})"
    if kind == "uniform":
        return f"uniform({a:.4g}, {b:.4g})"
    return f"halfnormal(sd {a:.4g})"
