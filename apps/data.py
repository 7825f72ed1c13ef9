"""Cached data access for the dashboard: everything a page reads goes through here.

Cache keys carry file signatures (mtime, size) of the files the value derives from,
so a run that is still training shows its new checkpoints on the next rerun, and fresh
probe results replace stale ones without clearing anything by hand:

* ``manifest.json`` for steps, models and activations,
* ``metrics.parquet`` for training curves,
* every file under ``probes/`` for probe results.

Small results use ``st.cache_data`` (copied on every read); models and large arrays use
``st.cache_resource`` (shared; treat them as read-only).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

import probes
from apps.figures import source
from interp.errors import StoreError
from interp.store import Run
from probes import phases as phases_api
from probes.phases import PHASE_FIELDS, Phases

CREATE_HINT = "grokscope train --preset demo"
Sig = tuple


# ------------------------------------------------------------------ signatures
def file_sig(path: Path) -> tuple[int, int]:
    """(mtime_ns, size) of ``path``, (0, -1) when it does not exist."""
    try:
        s = path.stat()
    except OSError:
        return (0, -1)
    return (s.st_mtime_ns, s.st_size)


def dir_sig(path: Path) -> Sig:
    """Signature of every file directly under ``path`` (names, mtimes, sizes)."""
    try:
        with os.scandir(path) as it:
            entries = [(e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in it
                       if e.is_file() and not e.name.startswith(".")]
    except OSError:
        return ()
    return tuple(sorted(entries))


@dataclass(frozen=True)
class RunKey:
    """A run directory and the signatures of the files cached values derive from."""

    path: str
    manifest: Sig
    metrics: Sig
    meta: Sig
    probes: Sig

    @classmethod
    def of(cls, path: str | Path) -> RunKey:
        p = Path(path)
        return cls(str(p), file_sig(p / "manifest.json"), file_sig(p / "metrics.parquet"),
                   file_sig(p / "run.json"), dir_sig(p / "probes"))


# ------------------------------------------------------------------ runs
@st.cache_data(ttl=5, show_spinner=False)
def discover(root: str, explicit: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Run directories to offer (the explicit ones, else every run under ``root``) and
    one message per directory that could not be opened."""
    paths, errors = [], []
    if explicit:
        for raw in explicit:
            try:
                paths.append(str(Run.open(raw).path))
            except StoreError as e:
                errors.append(str(e))
        return paths, errors
    if not Path(root).is_dir():
        return [], [f"no runs directory at {root}; create a run with `{CREATE_HINT}`"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = Run.list(root)
    errors = [str(w.message) for w in caught]
    return [str(r.path) for r in runs], errors


@st.cache_resource(max_entries=64, show_spinner=False)
def open_run(path: str, meta: Sig) -> Run:
    return Run.open(path)


def run_of(key: RunKey) -> Run:
    return open_run(key.path, key.meta)


@st.cache_data(max_entries=64, show_spinner=False)
def steps(path: str, manifest: Sig) -> list[int]:
    return Run.open(path).steps


@st.cache_data(max_entries=64, show_spinner=False)
def summary(path: str, meta: Sig, metrics: Sig, manifest: Sig) -> dict:
    return Run.open(path).summary()


def run_label(path: str, root: str | None = None) -> str:
    p = Path(path)
    if root:
        try:
            return str(p.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return p.name


# ------------------------------------------------------------------ metrics
@st.cache_resource(max_entries=16, show_spinner=False)
def metrics(path: str, sig: Sig) -> pd.DataFrame:
    """The run's metrics table (shared: do not modify)."""
    return Run.open(path).metrics


def downsample_index(n: int, max_points: int) -> np.ndarray:
    """At most ``max_points`` row indices out of ``n``: half evenly spaced, half log-spaced
    (dense early, where training changes fastest), always including the first and last."""
    if n <= max_points:
        return np.arange(n)
    half = max_points // 2
    lin = np.linspace(0, n - 1, half)
    log = np.geomspace(1, n, max_points - half) - 1
    return np.unique(np.concatenate([lin, log, [0, n - 1]]).round().astype(int))


#: points per drawn metrics curve: clickable curves carry a marker per point, and Chromium draws 2 × 2000
#: markers in ~150–350 ms per chart against ~60–90 ms for 2 × 600 (measured on this machine, loaded)
MAX_POINTS = 600


@st.cache_data(max_entries=32, show_spinner=False)
def metric_series(path: str, sig: Sig, column: str, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """(step, value) rows of one metrics column, NaNs dropped, downsampled to ``max_points``
    (:func:`downsample_index`: half linear, half log-spaced, first and last kept)."""
    df = metrics(path, sig)
    if column not in df:
        return pd.DataFrame({"step": [], "value": []})
    s = df[["step", column]].dropna()
    s = s.iloc[downsample_index(len(s), max_points)]
    return pd.DataFrame({"step": s["step"].to_numpy(), "value": s[column].to_numpy(dtype=float)})


# ------------------------------------------------------------------ probes
@st.cache_data(max_entries=32, show_spinner=False)
def probe_status(path: str, manifest: Sig, probes_sig: Sig) -> dict | None:
    """``probes.status(run)``: which (probe, step) pairs are missing."""
    return probes.status(Run.open(path))


def compute_probes(path: str, on_progress=None, chunks: int = 20) -> int:
    """Compute the missing default probes of a run, ``chunks`` batches of checkpoints at a time,
    calling ``on_progress(done, total)`` after each batch. Returns the number of checkpoints measured."""
    run = Run.open(path)
    st_ = probes.status(run)
    todo = sorted({s for p in st_["probes"].values() for s in p["missing"]})
    size = max(1, -(-len(todo) // chunks))
    for i in range(0, len(todo), size):
        probes.run(run, steps=todo[i:i + size], progress=False)
        if on_progress is not None:
            on_progress(min(i + size, len(todo)), len(todo))
    return len(todo)


@st.cache_data(max_entries=16, show_spinner=False)
def probe_scalars(path: str, sig: Sig) -> pd.DataFrame:
    """Probe scalars, wide: one row per step, one column per ``probe/name``."""
    if not sig:
        return pd.DataFrame()
    try:
        df = probes.load(Run.open(path))
    except (FileNotFoundError, StoreError, KeyError):
        return pd.DataFrame()
    if df is None or not len(df):
        return pd.DataFrame()
    df = df.assign(col=df["probe"] + "/" + df["name"])
    wide = df.pivot_table(index="step", columns="col", values="value", aggfunc="last")
    return wide.sort_index()


@st.cache_resource(max_entries=64, show_spinner=False)
def probe_arrays(path: str, probe: str, sig: Sig) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """``probes.load_arrays`` as NumPy (shared: do not modify); None when not computed."""
    if not sig:
        return None
    try:
        got = probes.load_arrays(Run.open(path), probe)
    except (FileNotFoundError, StoreError, KeyError):
        return None
    if got is None:
        return None
    step_arr, arrays = got
    if not len(step_arr) or not arrays:
        return None
    return np.asarray(step_arr, dtype=np.int64), {k: _np(v) for k, v in arrays.items()}


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def at_step(steps_arr: np.ndarray, step: int) -> int:
    """Row index of the probe step nearest to ``step``."""
    return int(np.argmin(np.abs(steps_arr - step)))


@st.cache_data(max_entries=32, show_spinner=False)
def phases(path: str, metrics_sig: Sig, probes_sig: Sig) -> Phases:
    """``probes.phases.detect(run)``; if it cannot decide (e.g. no test loss logged yet), the
    memorization and grokking steps from the metrics (``Phases.from_metrics``)."""
    run = Run.open(path)
    try:
        ph = phases_api.detect(run)
    except (StoreError, ValueError, KeyError, IndexError) as e:
        return Phases.from_metrics(run.metrics, note=f" (probes.phases failed: {e})")
    return replace(ph, **{f: None if getattr(ph, f) is None else int(getattr(ph, f)) for f in PHASE_FIELDS})


# ------------------------------------------------------------------ models and activations
@st.cache_resource(max_entries=8, show_spinner="Loading checkpoint…")
def model_at(path: str, step: int, manifest: Sig):
    return Run.open(path).model_at(step)


def _grid(path: str, step: int, manifest: Sig) -> dict[str, np.ndarray]:
    """One forward of the checkpoint over the p×p grid, shared with the figure library
    (:func:`apps.figures.source.readout`: ``pattern`` [L, H, 3, p, p], ``post`` [p, p, d_mlp] when there is an MLP)."""
    return source.readout(Run.open(path), step)


@st.cache_resource(max_entries=64, show_spinner="Running the model over the p×p grid…")
def attention_patterns(path: str, step: int, manifest: Sig) -> np.ndarray:
    """[L, H, 3, p, p] attention from the ``=`` query to keys a, b, ``=`` at ``step``, indexed by (a, b)
    (about 0.6 MB for p = 113 and 4 heads, so many steps stay cached)."""
    return _grid(path, step, manifest)["pattern"]


@st.cache_resource(max_entries=4, show_spinner="Running the model over the p×p grid…")
def mlp_acts(path: str, step: int, manifest: Sig) -> np.ndarray | None:
    """[p, p, d_mlp] last-layer MLP activations at ``=`` at ``step`` (None for attention-only models)."""
    return _grid(path, step, manifest).get("post")


def clear_all() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()
