"""Plain-text tables for the model tools' reports: rows are data, text is rendered from them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def format_value(value: object) -> str:
    """Numbers to 4 significant digits, None as '-', the rest as str."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ")"
    return str(value)


def render(rows: Sequence[Mapping[str, object]], columns: Sequence[tuple[str, str]]) -> str:
    """A text table of `rows` with `columns` as (key, header) pairs; numbers right-aligned."""
    cells = [[format_value(row.get(key)) for key, _ in columns] for row in rows]
    headers = [header for _, header in columns]
    widths = [
        max([len(header), *(len(line[i]) for line in cells)]) for i, header in enumerate(headers)
    ]
    numeric = [
        all(isinstance(row.get(key), (int, float)) or row.get(key) is None for row in rows)
        for key, _ in columns
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(values) for values in cells)])
