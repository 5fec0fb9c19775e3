"""Markdown tables of the benchmarks' figures, printed to paste into docs/benchmarks.md.

The scripts run as `python benchmarks/NAME.py`, so this module imports as `benchmark_tables`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown(header: Sequence[str], rows: Iterable[Sequence[object]], align: str) -> str:
    """A Markdown table: one `align` letter per column, `l` (text) or `r` (numbers)."""
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align needs one of 'l' or 'r' per column, got {align!r}.")
    rule = "".join("---|" if side == "l" else "---:|" for side in align)
    lines = ["| " + " | ".join(header) + " |", "|" + rule]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
