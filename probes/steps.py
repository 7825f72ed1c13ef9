"""Step selection: the one text syntax every command uses to pick saved checkpoints.

A selection is a list of items (comma-separated items count as several); each item is

* an integer ``N``: step N;
* ``first`` / ``last``: the run's first / last saved step;
* ``A..B``: every saved step with A ≤ step ≤ B (inclusive; either end may be left out,
  ``..500`` or ``1000..``). ``A:B`` is accepted as an alias of ``A..B``.

A single step (``parse_step``) is an integer, ``first`` or ``last``. Sweep grids use the same
``A..B`` and comma syntax for integer values (:func:`interp.sweep.parse_grid`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from interp.errors import ConfigError, StoreError

ONE_STEP = "an integer, first or last"


def _end(saved: Sequence[int], text: str, which: str) -> int:
    if not saved:
        raise StoreError(f"no checkpoints saved yet: no {which} step")
    return saved[0] if text == "first" else saved[-1]


def _int(text: str) -> int:
    try:
        step = int(text)
    except ValueError:
        raise ConfigError(f"bad step {text!r}: expected {ONE_STEP} (ranges: A..B)") from None
    if step < 0:
        raise ConfigError(f"bad step {text!r}: steps are >= 0")
    return step


def parse_step(text: str, saved: Sequence[int]) -> int:
    """One step: an integer, ``first`` or ``last`` (of the sorted ``saved`` steps)."""
    text = text.strip()
    if text in ("first", "last"):
        return _end(saved, text, text)
    return _int(text)


def select_steps(items: str | Iterable[str] | None, saved: Sequence[int]) -> list[int] | None:
    """The sorted steps named by ``items`` (see the module docstring); None when nothing is given."""
    if items is None:
        return None
    parts = [p.strip() for item in ([items] if isinstance(items, str) else items) for p in str(item).split(",")]
    parts = [p for p in parts if p]
    if not parts:
        return None
    out: set[int] = set()
    for part in parts:
        sep = ".." if ".." in part else ":" if ":" in part else None
        if sep is None:
            out.add(parse_step(part, saved))
            continue
        lo_s, hi_s = (s.strip() for s in part.split(sep, 1))
        lo = parse_step(lo_s, saved) if lo_s else min(saved, default=0)
        hi = parse_step(hi_s, saved) if hi_s else max(saved, default=0)
        if hi < lo:
            raise ConfigError(f"step range {part!r}: empty ({hi} < {lo})")
        out.update(s for s in saved if lo <= s <= hi)
    return sorted(out)
