"""One column-aligning table formatter for every table splitnet prints (torch-free).

Two renderings of the same rows: ``text`` pads each column to its widest cell
and rules the header with dashes (terminal output); ``markdown`` writes a pipe
table whose rule row carries each column's alignment (``table.md`` files, the
README).

Example:
    >>> print(format_table(["name", "kB"], [["a", "1.5"], ["bb", "12.0"]], align="lr"))
    name    kB
    ----  ----
    a      1.5
    bb    12.0
"""

from __future__ import annotations

from collections.abc import Sequence

from splitnet._errors import SplitnetError

__all__ = ["TableError", "format_table", "human_bytes"]


class TableError(SplitnetError):
    """Rows that do not fit the header, or an unknown alignment or style."""


def format_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    align: str | None = None,
    style: str = "text",
) -> str:
    """Formats ``rows`` under ``header``.

    Args:
        header: column titles.
        rows: cells, already formatted as strings, one sequence per row.
        align: one ``"l"`` (left) or ``"r"`` (right) per column; default all left.
        style: ``"text"`` (columns padded, two spaces apart, a dashed rule under the
            header, trailing blanks stripped) or ``"markdown"`` (a pipe table).

    Returns:
        The table, lines joined by ``"\\n"``, without a final newline.

    Raises:
        TableError: a row or ``align`` whose length differs from the header's, an
            alignment other than ``l``/``r``, or an unknown style.
    """
    n = len(header)
    align = align if align is not None else "l" * n
    if len(align) != n or set(align) - {"l", "r"}:
        raise TableError(f"align needs one 'l' or 'r' per column ({n}), got {align!r}")
    table = [list(header), *(list(r) for r in rows)]
    bad = next((r for r in table if len(r) != n), None)
    if bad is not None:
        raise TableError(f"a row has {len(bad)} cells, the header {n}: {bad}")
    if style == "markdown":
        rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
        lines = ["| " + " | ".join(r) + " |" for r in table]
        return "\n".join([lines[0], rule, *lines[1:]])
    if style != "text":
        raise TableError(f"unknown table style {style!r}; styles: text, markdown")
    widths = [max(len(r[i]) for r in table) for i in range(n)]
    lines = [
        "  ".join(
            c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align, strict=True)
        ).rstrip()
        for r in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    """``1536 -> "1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
