"""How the report writes a figure, a parameter count, a verdict and a markdown table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.speed.rows import Verdict

#: a table column: its header and how a row's cell is written
Column = tuple[str, Callable[[Any], Any]]


def fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


def params(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def met_text(row: Verdict) -> str:
    if not row.applies:
        return "n/a"
    if row.met is None:
        return "reported" if row.goal == "reported" else "-"
    return "**yes**" if row.met else "**NO**"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(columns: Sequence[Column], rows: Sequence[Any]) -> str:
    """A markdown table of ``rows``, one cell per column."""
    return table([h for h, _ in columns], [[cell(r) for _, cell in columns] for r in rows])
