"""Measure checkpoints with the registered probes and cache the results under ``RUN/probes/``.

Cache layout::

    RUN/probes/scalars.parquet        long format: step, probe, name, value (float64)
    RUN/probes/<probe>.safetensors    one tensor per array output, [n_steps, ...], plus
                                      ``steps`` [n_steps] int64 (sorted); metadata: version, params
    RUN/probes/index.json             {"format": 1, "probes": {probe: {"version": v, "params": hash,
                                                               "steps": {step: checkpoint sha256}}}}

A (probe, step) pair is up to date when the index holds it with the probe's current
version, the current params hash and the checkpoint's SHA-256 from the run's manifest
(so a rewritten checkpoint is recomputed; files are never re-hashed here). When a probe's
version or params change, all its cached results are dropped and recomputed as asked.
Results are written in batches (at the end, and every ``FLUSH_SECONDS`` of a long run),
data files first and the index last, each atomically: a crash loses at most one batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from tqdm.auto import tqdm

from interp.atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet, read_json, read_parquet
from interp.errors import ConfigError, StoreError
from interp.integrity import seal_safetensors, verify_safetensors
from interp.locking import write_lock
from interp.store import Run
from interp.tasks import Task
from probes.cache_heal import verified_index
from probes.registry import DEFAULT_PARAMS, REGISTRY, RUN_LEVEL_PARAMS, ProbeContext, ProbeSpec, available

INDEX_FORMAT = 1
SCALAR_COLUMNS = ["step", "probe", "name", "value"]
FLUSH_SECONDS = 30.0  # write the cache at least this often during a long run
STEPS_KEY = "steps"  # the steps vector in each arrays file (reserved: no probe output may use it)

Results = dict[str, dict[str, Any]]  # probe -> output name -> float | ndarray


# ------------------------------------------------------------------ helpers
def resolve(names: Iterable[str] | None) -> list[ProbeSpec]:
    """The specs of ``names`` (all default probes if None); unknown names raise ConfigError."""
    if names is None:
        return [REGISTRY[n] for n in available(default_only=True)]
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ConfigError(f"probe: unknown probe {unknown[0]!r} (available: {', '.join(available())})")
    return [REGISTRY[n] for n in names]


def merged_params(params: dict[str, Any] | None) -> dict[str, Any]:
    unknown = sorted(set(params or {}) - set(DEFAULT_PARAMS))
    if unknown:
        raise ConfigError(f"params: unknown probe parameter {unknown[0]!r} (known: {', '.join(DEFAULT_PARAMS)})")
    return {**DEFAULT_PARAMS, **(params or {})}


def params_hash(params: dict[str, Any], spec: ProbeSpec | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the parameters ``spec`` depends on, as sorted JSON: every
    per-checkpoint parameter, plus the run-level ones it declares in ``uses`` (all if no spec)."""
    if spec is not None:
        params = {k: v for k, v in params.items() if k not in RUN_LEVEL_PARAMS or k in spec.uses}
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


_FINAL: dict[tuple[str, str, str], dict[str, list]] = {}


def final_checkpoint_params(run: Run, params: dict[str, Any]) -> dict[str, list]:
    """The run-level parameters read off the run's last readable checkpoint, in one pass over it:
    ``key_freqs`` (``probes.fourier.key_frequencies``) and ``watch_neurons`` (``probes.frames.watched_neurons``:
    for each of those key frequencies, the neuron whose activation it explains best). Memoized per
    (run, checkpoint hash, per-checkpoint params) in this process; a corrupt last checkpoint falls back to the one
    before."""
    from probes.fourier import key_frequencies
    from probes.frames import watched_neurons

    own = {k: v for k, v in params.items() if k not in RUN_LEVEL_PARAMS}
    manifest = run.manifest
    for step in reversed(sorted(manifest)):
        key = (str(run.path.resolve()), manifest[step]["sha256"], params_hash(own))
        if key in _FINAL:
            return _FINAL[key]
        try:
            model = run.model_at(step)
        except StoreError:
            continue  # corrupt: fall back to the one before
        ctx = ProbeContext(model=model, task=run.task, step=step, params=own)
        _FINAL[key] = {"key_freqs": sorted(int(k) for k in key_frequencies(ctx)), "watch_neurons": watched_neurons(ctx)}
        return _FINAL[key]
    raise StoreError(f"{run.path} has no readable checkpoint")


def final_key_frequencies(run: Run, params: dict[str, Any]) -> list[int]:
    """Key frequencies (``probes.fourier.key_frequencies``) of the run's last readable checkpoint
    (:func:`final_checkpoint_params`, memoized)."""
    return final_checkpoint_params(run, params)["key_freqs"]


def run_params(run: Run, params: dict[str, Any] | None, key_freqs: str | Iterable[int],
               specs: list[ProbeSpec]) -> dict[str, Any]:
    """The full parameter dict for probing ``run`` with ``specs``: defaults, then ``params``, then
    the run-level parameters (:data:`~probes.registry.RUN_LEVEL_PARAMS`) that one of ``specs`` uses and
    ``params`` does not set:

    ``key_freqs``: "final" (the last checkpoint's key frequencies, the default), "checkpoint" (each
    checkpoint's own) or an explicit list of frequencies;
    ``watch_neurons``: always the last checkpoint's choice (:func:`final_checkpoint_params`), so that the
    neuron animation watches the same neurons at every step.

    The final checkpoint is only measured when one of ``specs`` uses a parameter that needs it."""
    merged = merged_params(params)
    uses = {name for spec in specs for name in spec.uses}
    if "watch_neurons" in uses and merged["watch_neurons"] is None:
        merged["watch_neurons"] = final_checkpoint_params(run, merged)["watch_neurons"] if run.manifest else None
    if "key_freqs" not in uses or merged["key_freqs"] is not None:
        return merged  # set by the caller, or no probe reads it (and it is not part of their cache keys)
    if key_freqs == "final":
        merged["key_freqs"] = final_key_frequencies(run, merged) if run.manifest else None
    elif key_freqs == "checkpoint":
        merged["key_freqs"] = None
    elif isinstance(key_freqs, str):
        raise ConfigError(f"key_freqs: expected 'final', 'checkpoint' or a list of frequencies, got {key_freqs!r}")
    else:
        freqs, top = sorted(int(k) for k in key_freqs), run.train_config.p // 2
        bad = [k for k in freqs if not 1 <= k <= top]
        if bad or not freqs:  # 0 or a negative frequency would silently replace the cached measures
            raise ConfigError(f"key_freqs: frequencies must be from 1 to p//2 = {top}, got "
                              f"{bad[0] if bad else 'none'}")
        merged["key_freqs"] = freqs
    return merged


def _as_value(probe: str, name: str, value: Any) -> float | np.ndarray:
    """A 0-d output as a Python float, anything else as a NumPy array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == object:
        raise TypeError(f"probe {probe}: output {name!r} is not numeric ({type(value).__name__})")
    if arr.ndim == 0:
        return float(arr)
    if name == STEPS_KEY:
        raise ValueError(f"probe {probe}: array output name {STEPS_KEY!r} is reserved for the steps vector")
    return np.ascontiguousarray(arr)


def measure_context(ctx: ProbeContext, specs: list[ProbeSpec]) -> Results:
    """Run each probe on one context: ``{probe: {name: float | ndarray}}``. Probes run without
    autograd; one that needs gradients opens ``torch.enable_grad()`` itself."""
    out: Results = {}
    for spec in specs:
        with torch.no_grad():
            raw = spec.fn(ctx)
        if not isinstance(raw, dict):
            raise TypeError(f"probe {spec.name}: returned {type(raw).__name__}, expected a dict of outputs")
        out[spec.name] = {str(k): _as_value(spec.name, str(k), v) for k, v in raw.items()}
    return out


def measure(model: Any, task: Task, names: Iterable[str] | None = None,
            params: dict[str, Any] | None = None) -> Results:
    """Probe a model held in memory (nothing is cached): ``{probe: {name: float | ndarray}}``."""
    ctx = ProbeContext(model=model, task=task, params=merged_params(params))
    return measure_context(ctx, applicable(resolve(names), task, bool(getattr(model.cfg, "attn_only", False))))


def applicable(specs: list[ProbeSpec], task: Any, attn_only: bool = False) -> list[ProbeSpec]:
    """The specs that apply to ``task`` and to a model that is ``attn_only`` or not (the others are skipped,
    not failed: see :func:`status`)."""
    return [s for s in specs if not s.reason_skipped(task, attn_only)]


def _open(run: Run | str | os.PathLike) -> Run:
    return run if isinstance(run, Run) else Run.open(run)


def _probe_file(probe: str) -> str:
    return f"{probe}.safetensors"


# ------------------------------------------------------------------ cache
class ProbeCache:
    """The on-disk cache of one run, with pending results held in memory until :meth:`flush`."""

    def __init__(self, root: Path):
        self.root = root
        self.index, messages, self.damaged = verified_index(root, read_index(root))  # the cache heals
        for msg in messages:
            warnings.warn(msg, stacklevel=3)
        self.dropped: set[str] = set()  # probes whose old results are invalid (version/params changed)
        self.scalars: list[tuple[int, str, str, float]] = []
        self.done: dict[str, dict[int, str]] = {}  # probe -> step -> sha computed since the last flush
        self.arrays: dict[str, dict[int, dict[str, np.ndarray]]] = {}  # probe -> step -> outputs
        self.last_flush = time.monotonic()

    # ---- freshness
    def prepare(self, spec: ProbeSpec, phash: str) -> None:
        """Start a fresh index entry for ``spec`` if its version or params differ from the cached ones."""
        entry = self.index.get(spec.name)
        if entry is None or entry.get("version") != spec.version or entry.get("params") != phash:
            if entry is not None:
                self.dropped.add(spec.name)
            self.index[spec.name] = {"version": spec.version, "params": phash, "steps": {}}

    def is_fresh(self, probe: str, step: int, sha: str) -> bool:
        return self.index.get(probe, {}).get("steps", {}).get(str(step)) == sha

    # ---- adding results
    def add(self, step: int, sha: str, results: Results) -> None:
        for probe, outputs in results.items():
            self.done.setdefault(probe, {})[step] = sha
            arrays = {}
            for name, value in outputs.items():
                if isinstance(value, np.ndarray):
                    arrays[name] = value
                else:
                    self.scalars.append((step, probe, name, value))
            self.index[probe].update(arrays=bool(arrays), scalars=len(arrays) < len(outputs))
            if arrays:
                self._arrays_of(probe)[step] = arrays

    def _arrays_of(self, probe: str) -> dict[int, dict[str, np.ndarray]]:
        """All array results of ``probe``: the cached file's (unless dropped), read once, plus new ones."""
        if probe not in self.arrays:
            path = self.root / _probe_file(probe)
            fresh = probe in self.dropped or probe in self.damaged
            self.arrays[probe] = {} if fresh else _read_array_steps(path)
        return self.arrays[probe]

    @property
    def due(self) -> bool:
        return time.monotonic() - self.last_flush >= FLUSH_SECONDS

    # ---- writing
    def flush(self) -> None:
        """Merge pending results into the files (data first, index last), atomically."""
        if self.done or self.dropped:
            self._write_scalars()
            for probe in {p for p in self.done if p in self.arrays} | self.dropped:
                self._write_arrays(probe)
            for probe, steps in self.done.items():
                self.index[probe]["steps"].update({str(s): sha for s, sha in steps.items()})
            atomic_write_json(self.root / "index.json", {"format": INDEX_FORMAT, "probes": self.index})
        self.scalars, self.done, self.dropped = [], {}, set()
        self.last_flush = time.monotonic()

    def _write_scalars(self) -> None:
        old = read_scalars(self.root) if "scalars" not in self.damaged else read_scalars(self.root / "-")
        self.damaged.discard("scalars")
        replaced = {(p, s) for p, steps in self.done.items() for s in steps}
        if len(old):
            stale = old["probe"].isin(self.dropped) | pd.Series(
                [(p, s) in replaced for p, s in zip(old["probe"], old["step"])], index=old.index, dtype=bool)
            old = old[~stale]
        # strings as str: an empty object column would make the concatenation object-typed, and the frame's
        # digest would then not match the string columns it reads back as (a run of array-only probes)
        new = pd.DataFrame(self.scalars, columns=SCALAR_COLUMNS).astype(
            {"step": "int64", "probe": str, "name": str, "value": "float64"})
        df = pd.concat([old, new], ignore_index=True) if len(old) else new
        df = df.sort_values(["probe", "step", "name"], kind="stable").reset_index(drop=True)
        atomic_write_parquet(self.root / "scalars.parquet", df)

    def _write_arrays(self, probe: str) -> None:
        """Rewrite ``<probe>.safetensors`` with every step of :meth:`_arrays_of` (deleted if none)."""
        path = self.root / _probe_file(probe)
        by_step = self.arrays.get(probe, {})
        if not by_step:
            path.unlink(missing_ok=True)
            return
        steps = sorted(by_step)
        names = sorted(by_step[steps[0]])
        tensors = {STEPS_KEY: np.asarray(steps, dtype=np.int64)}
        for name in names:
            rows = [by_step[s].get(name) for s in steps]
            shapes = {r.shape for r in rows if r is not None}
            if any(r is None for r in rows) or len(shapes) != 1:
                raise ValueError(f"probe {probe}: array {name!r} must have one shape at every step, got {shapes}")
            tensors[name] = np.ascontiguousarray(np.stack(rows))
        meta = {"probe": probe, "version": str(self.index[probe]["version"]), "params": self.index[probe]["params"]}
        atomic_write_bytes(path, seal_safetensors(st_save(tensors, metadata=meta)))


def read_index(root: Path) -> dict[str, dict]:
    path = root / "index.json"
    if not path.exists():
        return {}
    index = read_json(path)
    if index.get("format") != INDEX_FORMAT:
        raise StoreError(f"{path}: probe index format {index.get('format')!r} is not supported")
    return dict(index.get("probes", {}))


def read_scalars(root: Path) -> pd.DataFrame:
    path = root / "scalars.parquet"
    if not path.exists():
        return pd.DataFrame({"step": pd.Series(dtype="int64"), "probe": pd.Series(dtype=object),
                             "name": pd.Series(dtype=object), "value": pd.Series(dtype="float64")})
    return read_parquet(path)  # checksum verified


def _read_arrays(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    data = path.read_bytes()
    verify_safetensors(data, path)
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError) as e:
        raise StoreError(f"corrupt {path}: {e}") from None
    steps = tensors.pop(STEPS_KEY)
    return steps, tensors


def _read_array_steps(path: Path) -> dict[int, dict[str, np.ndarray]]:
    if not path.exists():
        return {}
    steps, tensors = _read_arrays(path)
    return {int(s): {k: v[i] for k, v in tensors.items()} for i, s in enumerate(steps)}


# ------------------------------------------------------------------ public API
def run(run: Run | str | os.PathLike, names: Iterable[str] | None = None, steps: Iterable[int] | None = None,
        params: dict[str, Any] | None = None, progress: bool = True,
        key_freqs: str | Iterable[int] = "final") -> pd.DataFrame:
    """Measure every checkpoint (or ``steps``) of ``run`` with the default probes (or ``names``),
    skipping (probe, step) pairs already cached, and return the scalars of those probes and steps
    (long format: step, probe, name, value). Corrupt checkpoints are skipped with a warning.
    ``key_freqs`` fixes the frequencies of the progress measures (see :func:`run_params`)."""
    run = _open(run)
    specs = applicable(resolve(names), run.task, run.train_config.attn_only)
    with write_lock(run.path / "probes", what="probing", subdirs=()):  # one writer per probe cache (issue 16)
        return _run_locked(run, specs, steps, params, progress, key_freqs)


def _run_locked(run: Run, specs: list[ProbeSpec], steps: Iterable[int] | None, params: dict[str, Any] | None,
                progress: bool, key_freqs: str | Iterable[int]) -> pd.DataFrame:
    params = run_params(run, params, key_freqs, specs)
    manifest = run.manifest
    steps = sorted(manifest) if steps is None else _check_steps(run, steps, manifest)
    cache = ProbeCache(run.path / "probes")
    for spec in specs:
        cache.prepare(spec, params_hash(params, spec))
    todo = {s: [sp for sp in specs if not cache.is_fresh(sp.name, s, manifest[s]["sha256"])] for s in steps}
    todo = {s: sp for s, sp in todo.items() if sp}
    if todo:
        _measure_steps(run, todo, manifest, params, cache, progress)
    cache.flush()
    df = load(run)
    return df[df["probe"].isin([s.name for s in specs]) & df["step"].isin(steps)].reset_index(drop=True)


def _check_steps(run: Run, steps: Iterable[int], manifest: dict[int, dict]) -> list[int]:
    steps = sorted({int(s) for s in steps})
    missing = [s for s in steps if s not in manifest]
    if missing:
        raise StoreError(f"{run.path} has no checkpoint at step {missing[0]} (saved: {len(manifest)} steps)")
    return steps


def _measure_steps(run: Run, todo: dict[int, list[ProbeSpec]], manifest: dict[int, dict],
                   params: dict[str, Any], cache: ProbeCache, progress: bool) -> None:
    """Load each checkpoint into one reused model and run its pending probes; flush periodically."""
    model, task = run.train_config.build_model().eval(), run.task
    bar = tqdm(total=len(todo), desc=f"probes {run.name}", unit="ckpt", disable=not progress)
    try:
        for step, state_dict in run.iter_state_dicts(list(todo)):
            model.load_state_dict(state_dict)
            ctx = ProbeContext(model=model, task=task, step=step, params=params)
            cache.add(step, manifest[step]["sha256"], measure_context(ctx, todo[step]))
            bar.update()
            if cache.due:
                cache.flush()
    finally:
        bar.close()
        cache.flush()  # keep what was measured even if a probe raised


def load(run: Run | str | os.PathLike) -> pd.DataFrame:
    """Cached scalars of ``run``: DataFrame with columns step, probe, name, value (empty if none)."""
    return read_scalars(_open(run).path / "probes")


def load_arrays(run: Run | str | os.PathLike, probe: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Cached arrays of one probe: (steps [n_steps], {name: [n_steps, ...]})."""
    run = _open(run)
    path = run.path / "probes" / _probe_file(probe)
    if not path.exists():
        if probe in read_index(run.path / "probes"):
            return np.zeros(0, dtype=np.int64), {}  # computed, but it has no array outputs
        raise StoreError(f"no cached results for probe {probe!r} in {run.path}; run `grokscope probe {run.path}`")
    return _read_arrays(path)


def status(run: Run | str | os.PathLike, names: Iterable[str] | None = None,
           params: dict[str, Any] | None = None, key_freqs: str | Iterable[int] = "final") -> dict[str, Any]:
    """What :func:`run` would compute: ``{"steps": [...], "complete": bool, "n_missing": int,
    "probes": {probe: {"missing": [steps], "up_to_date": int, "reason": str}}}``, where reason is
    "" (up to date), "not computed", "probe version changed", "params changed",
    "checkpoints changed or not yet computed" or "does not apply: ..." (a probe whose declared
    tasks exclude the run's, e.g. Fourier probes on a sequence task, or that needs an MLP on an attention-only
    model: skipped, never missing)."""
    run = _open(run)
    specs = resolve(names)
    attn_only = run.train_config.attn_only
    params = run_params(run, params, key_freqs, applicable(specs, run.task, attn_only))
    index, manifest = verified_index(run.path / "probes", read_index(run.path / "probes"))[0], run.manifest
    steps = sorted(manifest)
    probes: dict[str, dict[str, Any]] = {}
    task = run.task
    for spec in specs:
        skipped = spec.reason_skipped(task, attn_only)
        if skipped:
            probes[spec.name] = {"missing": [], "up_to_date": 0, "reason": f"does not apply: {skipped}"}
            continue
        entry = index.get(spec.name)
        phash = params_hash(params, spec)
        if entry is None or entry.get("version") != spec.version or entry.get("params") != phash:
            reason = ("not computed" if entry is None else
                      "probe version changed" if entry.get("version") != spec.version else "params changed")
            probes[spec.name] = {"missing": steps, "up_to_date": 0, "reason": reason}
            continue
        cached = entry.get("steps", {})
        missing = [s for s in steps if cached.get(str(s)) != manifest[s]["sha256"]]
        reason = "checkpoints changed or not yet computed" if missing else ""
        probes[spec.name] = {"missing": missing, "up_to_date": len(steps) - len(missing), "reason": reason}
    n_missing = sum(len(p["missing"]) for p in probes.values())
    return {"steps": steps, "complete": n_missing == 0, "n_missing": n_missing, "probes": probes}
