"""A sweep's summary with the key-frequency column (:func:`interp.sweep.summarize` plus probes).

``key_freqs`` is the final checkpoint's key frequencies (:func:`probes.runner.final_key_frequencies`),
kept in ``SWEEP/key_freqs.json`` by checkpoint hash so a re-summarised sweep does not recompute them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from interp.atomic import atomic_write_json, read_json
from interp.store import Run
from interp.sweep import DELAY_FACTOR
from interp.sweep import summarize as summarize_core
from probes.runner import final_key_frequencies, merged_params

KEY_FREQS_CACHE = "key_freqs.json"


def key_freqs_column(sweep_path: str | os.PathLike) -> Callable[[Run], list[int]]:
    """A summary column function (``interp.sweep.summarize(columns=...)``): a run's final key
    frequencies, cached in ``sweep_path/key_freqs.json``."""
    cache_path = Path(sweep_path) / KEY_FREQS_CACHE
    cache: dict[str, Any] = {}
    loaded = False

    def key_freqs(run: Run) -> list[int]:
        nonlocal cache, loaded
        if not loaded:  # read on first use: the sweep directory may not exist when the column is made
            cache, loaded = (read_json(cache_path) if cache_path.exists() else {}), True
        sha = run.checkpoint_hash(run.steps[-1])
        hit = cache.get(run.path.name)
        if hit and hit.get("sha256") == sha:
            return hit["key_freqs"]
        freqs = final_key_frequencies(run, merged_params(None))
        cache[run.path.name] = {"sha256": sha, "key_freqs": freqs}
        atomic_write_json(cache_path, cache)
        return freqs

    return key_freqs


def columns(sweep_path: str | os.PathLike) -> dict[str, Callable[[Run], Any]]:
    """The probe-derived summary columns of a sweep, for ``interp.sweep.run(columns=...)``."""
    return {"key_freqs": key_freqs_column(sweep_path)}


def summarize(path: str | os.PathLike, delay_factor: float = DELAY_FACTOR) -> pd.DataFrame:
    """:func:`interp.sweep.summarize` with the ``key_freqs`` column."""
    return summarize_core(path, delay_factor=delay_factor, columns=columns(path))
