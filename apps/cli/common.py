"""What every subcommand shares: the usage error and the text table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class UsageError(Exception):
    """Bad command-line input; printed as one line, exit code 2."""


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, trailing blanks stripped; header first."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [list(header), *rows])


def num(x: Any, spec: str = ".3g") -> str:
    """A number as text; "-" for None / NaN."""
    try:
        missing = x is None or bool(x != x)  # NaN is the one value unequal to itself
    except TypeError:  # pandas.NA: its comparisons are NA, which has no truth value
        missing = True
    return "-" if missing else format(x, spec)
