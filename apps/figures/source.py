"""Where the figures read their data: cached probe results and on-demand readouts of one checkpoint.

No Streamlit here, so a notebook, the diff report and the dashboard share it. Probe results are cached
per (run directory, signature of the files under ``RUN/probes/``), so fresh results replace stale ones;
checkpoint readouts are cached per (run directory, step, checkpoint hash).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import probes
from interp import Run
from interp.errors import StoreError
from probes import phases as phases_api
from probes.phases import Phases

_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_MAX_ENTRIES = 96
_READOUTS: OrderedDict[tuple, Any] = OrderedDict()  # ~27 MB each for nanda (the MLP activations): few of them
_MAX_READOUTS = 12


def _cached(key: tuple, fn, cache: OrderedDict | None = None, max_entries: int = _MAX_ENTRIES):
    cache = _CACHE if cache is None else cache
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = fn()
    cache[key] = value
    while len(cache) > max_entries:
        cache.popitem(last=False)
    return value


def as_run(run: Run | str | os.PathLike) -> Run:
    return run if isinstance(run, Run) else Run.open(run)


def probes_sig(run: Run) -> tuple:
    """(name, mtime, size) of every file under ``RUN/probes/``."""
    root = Path(run.path) / "probes"
    try:
        with os.scandir(root) as it:
            return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in it if e.is_file()))
    except OSError:
        return ()


def arrays(run: Run, probe: str) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """``probes.load_arrays(run, probe)`` as NumPy, None when the probe has no cached arrays."""
    def load():
        try:
            steps, arr = probes.load_arrays(run, probe)
        except (FileNotFoundError, StoreError, KeyError):
            return None
        if not len(steps) or not arr:
            return None
        return np.asarray(steps, dtype=np.int64), {k: np.asarray(v) for k, v in arr.items()}
    return _cached(("arrays", str(run.path), probe, probes_sig(run)), load)


def scalars(run: Run) -> pd.DataFrame:
    """Probe scalars, wide: index step, one column per ``probe/name`` (empty when none)."""
    def load():
        try:
            df = probes.load(run)
        except (FileNotFoundError, StoreError, KeyError):
            return pd.DataFrame()
        if df is None or not len(df):
            return pd.DataFrame()
        df = df.assign(col=df["probe"] + "/" + df["name"])
        return df.pivot_table(index="step", columns="col", values="value", aggfunc="last").sort_index()
    return _cached(("scalars", str(run.path), probes_sig(run)), load)


def phases(run: Run) -> Phases:
    """``probes.phases.detect(run)``, else the accuracy landmarks of the metrics."""
    def load():
        try:
            return phases_api.detect(run)
        except (StoreError, ValueError, KeyError, IndexError) as e:
            return Phases.from_metrics(run.metrics, note=f" (probes.phases failed: {e})")
    return _cached(("phases", str(run.path), probes_sig(run), len(run.steps)), load)


def row(steps_arr: np.ndarray, step: int) -> int:
    """Row of a probe array nearest to ``step``."""
    return int(np.argmin(np.abs(np.asarray(steps_arr) - int(step))))


def _ckpt_key(run: Run, kind: str, step: int) -> tuple:
    step = run.nearest_step(int(step))
    return (kind, str(run.path), step, run.checkpoint_hash(step))


def readout(run: Run, step: int) -> dict[str, np.ndarray]:
    """One forward over the p×p grid at ``step`` (nearest saved checkpoint): ``logits`` [p², p],
    ``pattern`` [L, H, 3, p, p] (attention of ``=`` to a, b, ``=``), ``post`` [p, p, d_mlp] (last MLP layer at
    ``=``, absent for attention-only models) and ``W_E`` [p, d_model] (token rows)."""
    def load():
        model = run.model_at(run.nearest_step(int(step)))
        task = run.task
        p = task.p
        with torch.no_grad():
            logits, cache = model.readout_cache(task.inputs)
        n_layers = model.cfg.n_layers
        pattern = torch.stack([cache["pattern", layer][:, :, -1, :].permute(1, 2, 0) for layer in range(n_layers)])
        out = {"logits": logits.detach().float().numpy(),
               "pattern": pattern.reshape(*pattern.shape[:3], p, p).float().numpy(),
               "W_E": model.embed.W_E.detach()[:p].float().numpy()}
        if not model.cfg.attn_only:
            out["post"] = cache["post", n_layers - 1][:, -1, :].reshape(p, p, -1).float().numpy()
        return out
    return _cached(_ckpt_key(run, "readout", step), load, _READOUTS, _MAX_READOUTS)
