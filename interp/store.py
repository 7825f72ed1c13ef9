"""Run directories: the only code that reads or writes checkpoints.

Layout of one run::

    RUN/
      run.json                     config, seeds, library versions, split, status
      manifest.json                {step: {file, sha256, bytes}} for every checkpoint
      weights/step_00001000.safetensors   model state dict; step and losses in metadata
      metrics.parquet              one row per logged step
      state/state_00001000_<sha>.safetensors  latest model + optimizer + Grokfast + RNG
      state/state.json             its file name and SHA-256, step, wall time, optimizer
                                   param groups, hook states (exact resume)
      probes/                      probe cache (written by ``probes``)

Every write is atomic (temporary file in the same directory, fsync, ``os.replace``),
the manifest is written after the file it lists, and ``state.json`` is switched to a new
state file only after that file is complete (the previous one is deleted after), so a
crash at any moment leaves a loadable, resumable run. Reading a checkpoint verifies its
SHA-256; a corrupt or truncated file raises :class:`CorruptCheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
import platform
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from interp.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    read_json,
    read_parquet,
    sha256_bytes,
)
from interp.config import TrainConfig
from interp.errors import ConfigError, CorruptCheckpointError, StoreError
from interp.generations import (
    METRICS,
    PREV_METRICS,
    PREV_STATE,
    STATE,
    keep_previous,
    load_state,
    read_with_fallback,
)
from interp.integrity import canonical_safetensors
from interp.metrics import METRIC_COLUMNS, final_values, grok_steps
from interp.tasks import split_hash

FORMAT_VERSION = 1
DEFAULT_ROOT = Path("checkpoints")


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a run's numbers depend on, from package metadata."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("grokscope", "torch", "numpy", "transformer-lens", "safetensors", "pandas", "pyarrow"):
        try:
            out[dist.replace("-", "_")] = version(dist)
        except PackageNotFoundError:
            out[dist.replace("-", "_")] = "not installed"
    return out


def check_run_name(name: str) -> str:
    """``name`` if it is a plain directory name (no path separator, not ``.``/``..``, no NUL),
    else ConfigError: names are names, so a run never lands outside its root."""
    seps = {"/", "\\", os.sep, os.altsep or "/"}
    if not name or name in (".", "..") or "\0" in name or any(sep in name for sep in seps):
        raise ConfigError(f"name: {name!r} is not a run name (no path separators, '.' or '..'); "
                          "use --out DIR to choose a directory")
    return name


def step_file(step: int) -> str:
    return f"weights/step_{step:08d}.safetensors"


def split_record(cfg: TrainConfig, train_idx: list[int]) -> dict[str, Any]:
    """run.json's ``split``: scheme, seed, fraction, the sorted train indices and their SHA-256."""
    return {"scheme": cfg.split, "data_seed": cfg.data_seed, "frac_train": cfg.frac_train,
            "train_idx": sorted(int(i) for i in train_idx), "sha256": split_hash(train_idx)}


# ------------------------------------------------------------------ Run
@dataclass
class Run:
    """A run directory. Open one with :meth:`Run.open`; create one with :meth:`Run.create`."""

    path: Path
    meta: dict = field(repr=False)

    # ---- opening and listing
    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        path = Path(path)
        if not path.is_dir():
            raise StoreError(f"no run directory at {path}")
        meta = read_json(path / "run.json")
        if not isinstance(meta, dict):
            raise StoreError(f"{path / 'run.json'}: not a run description (a JSON {type(meta).__name__})")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(
                f"{path / 'run.json'}: run format version {version!r} is not supported "
                f"(this grokscope reads version {FORMAT_VERSION})"
            )
        if not isinstance(meta.get("config"), dict):
            raise StoreError(f"{path / 'run.json'}: not a run description (no config object)")
        if not isinstance(meta.get("split", {}), dict):
            raise StoreError(f"{path / 'run.json'}: split is not an object")
        return cls(path=path, meta=meta)

    @classmethod
    def create(cls, path: str | os.PathLike, meta: dict) -> Run:
        """Create a new run directory with ``meta`` as its run.json (config, split, ...)."""
        path = Path(path)
        if (path / "run.json").exists():
            raise StoreError(f"a run already exists at {path}; use --resume to continue it")
        (path / "weights").mkdir(parents=True, exist_ok=True)
        meta = {"format_version": FORMAT_VERSION, "versions": library_versions(), **meta}
        # manifest first: run.json marks a run, so a crash between the two leaves a directory that a
        # fresh `train` into the same place simply takes over (issue 16)
        atomic_write_json(path / "manifest.json", {})
        atomic_write_json(path / "run.json", meta)
        return cls(path=path, meta=meta)

    @staticmethod
    def list(root: str | os.PathLike = DEFAULT_ROOT) -> list[Run]:
        """Every readable run under ``root`` (recursively, so sweep members are found),
        sorted by path. Unreadable directories are skipped with a warning."""
        root = Path(root)
        runs = []
        for meta_path in sorted(root.rglob("run.json")):
            try:
                runs.append(Run.open(meta_path.parent))
            except StoreError as e:
                warnings.warn(f"skipping {meta_path.parent}: {e}", stacklevel=2)
        return runs

    # ---- metadata
    @property
    def name(self) -> str:
        return self.meta.get("name", self.path.name)

    @property
    def config(self) -> dict:
        return dict(self.meta["config"])

    @property
    def status(self) -> str:
        return self.meta.get("status", "unknown")

    def update_meta(self, **changes: Any) -> None:
        self.meta.update(changes)
        atomic_write_json(self.path / "run.json", self.meta)

    @cached_property
    def train_config(self) -> TrainConfig:
        try:
            return TrainConfig.from_dict(self.config)
        except (TypeError, ValueError, OverflowError) as e:  # a hostile or damaged run.json
            raise StoreError(f"{self.path / 'run.json'}: invalid config: {e}") from None

    @property
    def task(self):
        """The run's :class:`~interp.tasks.Task`; its split is checked against run.json: a seeded
        scheme (``grokscope``, ``nanda2023``) must give the stored indices, an ``explicit`` one is
        taken from them after checking their SHA-256 (issue 12)."""
        cfg, split = self.train_config, self.meta.get("split", {})
        stored, where = split.get("train_idx"), self.path / "run.json"
        if split.get("scheme", cfg.split) != cfg.split:
            raise StoreError(f"{where}: split scheme {split['scheme']!r} differs from the config's {cfg.split!r}")
        if cfg.split == "explicit":
            if stored is None:
                raise StoreError(f"{where}: an explicit split needs its train indices (split.train_idx)")
            if split.get("sha256") != split_hash(stored):
                raise StoreError(f"{where}: stored train indices do not match their SHA-256")
            return replace(cfg.task(), train_cells=tuple(stored))
        task = cfg.task()
        if stored is not None and stored != task.train_idx.tolist():
            raise StoreError(f"{where}: stored split differs from the one its scheme "
                             f"({cfg.split!r}) and seed give")
        stored = self.meta.get("split", {}).get("data_sha256")  # sequence tasks (issue 13)
        if stored is not None and stored != task.data_sha256():
            raise StoreError(f"{self.path / 'run.json'}: stored data differs from the one its seed gives")
        return task

    # ---- checkpoints
    @property
    def manifest(self) -> dict[int, dict]:
        path = self.path / "manifest.json"
        if not path.exists() and not any((self.path / "weights").glob("*.safetensors")):
            return {}  # created by an older version that died between run.json and manifest.json
        raw = read_json(path)
        try:
            out = {int(k): v for k, v in raw.items()}
            if not all(isinstance(v, dict) and {"file", "sha256", "bytes"} <= set(v) for v in out.values()):
                raise ValueError("an entry lacks file, sha256 or bytes")
        except (AttributeError, TypeError, ValueError) as e:
            raise StoreError(f"corrupt {path}: {e}") from None
        return out

    @property
    def steps(self) -> list[int]:
        return sorted(self.manifest)

    def nearest_step(self, step: int) -> int:
        steps = self.steps
        if not steps:
            raise StoreError(f"{self.path} has no checkpoints yet")
        return min(steps, key=lambda s: (abs(s - step), s))

    def checkpoint_hash(self, step: int) -> str:
        return self.manifest[step]["sha256"]

    def save_checkpoint(self, step: int, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        """Write weights/step_XXXXXXXX.safetensors, then record it in the manifest."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        md = {k: str(v) for k, v in {"step": step, **metadata}.items()}
        data = canonical_safetensors(st_save(tensors, metadata=md))  # same training, same bytes
        rel = step_file(step)
        atomic_write_bytes(self.path / rel, data)
        manifest = read_json(self.path / "manifest.json")
        manifest[str(step)] = {"file": rel, "sha256": sha256_bytes(data), "bytes": len(data)}
        atomic_write_json(self.path / "manifest.json", manifest)

    def _read_verified(self, step: int) -> tuple[bytes, Path]:
        entry = self.manifest.get(step)
        if entry is None:
            raise StoreError(f"{self.path} has no checkpoint at step {step} (saved: {self._steps_hint()})")
        path = self.path / entry["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptCheckpointError(path, "file is missing") from None
        if len(data) != entry["bytes"]:
            raise CorruptCheckpointError(path, f"{len(data)} bytes, manifest says {entry['bytes']} (truncated?)")
        if sha256_bytes(data) != entry["sha256"]:
            raise CorruptCheckpointError(path, "SHA-256 does not match the manifest")
        return data, path

    def _steps_hint(self) -> str:
        s = self.steps
        return f"{len(s)} steps from {s[0]} to {s[-1]}" if s else "none"

    def state_dict_at(self, step: int) -> dict[str, torch.Tensor]:
        """The verified model state dict saved at ``step``."""
        data, path = self._read_verified(step)
        try:
            return st_load(data)
        except (SafetensorError, ValueError) as e:
            raise CorruptCheckpointError(path, str(e)) from None

    def checkpoint_metadata(self, step: int) -> dict[str, str]:
        """The verified checkpoint's safetensors metadata (step, losses, accuracies), as strings."""
        data, path = self._read_verified(step)
        try:
            (n,) = struct.unpack("<Q", data[:8])
            return dict(json.loads(data[8:8 + n]).get("__metadata__") or {})
        except (struct.error, ValueError, AttributeError) as e:
            raise CorruptCheckpointError(path, f"unreadable header: {e}") from None

    def model_at(self, step: int):
        """A :class:`~interp.model.Transformer` with the weights saved at ``step``, in eval mode."""
        model = self.train_config.build_model()
        model.load_state_dict(self.state_dict_at(step))
        return model.eval()

    def iter_state_dicts(self, steps: list[int] | None = None) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Yield (step, state dict) for each step, skipping corrupt files with a warning."""
        for step in self.steps if steps is None else steps:
            try:
                yield step, self.state_dict_at(step)
            except CorruptCheckpointError as e:
                warnings.warn(f"skipping {e}", stacklevel=2)

    # ---- metrics
    @property
    def metrics(self) -> pd.DataFrame:
        """The logged metrics; a damaged file is read from its previous generation with a warning
        (:mod:`interp.generations`)."""
        path = self.path / METRICS
        if not path.exists():
            return pd.DataFrame(columns=METRIC_COLUMNS)
        # the bytes are read once: a live run may replace the file meanwhile
        return read_with_fallback(path, self.path / PREV_METRICS, read_parquet)

    def write_metrics(self, df: pd.DataFrame) -> None:
        keep_previous(self.path / METRICS, self.path / PREV_METRICS)
        atomic_write_parquet(self.path / METRICS, df)

    # ---- resumable training state
    def save_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        """Write state/: the tensors to a new file named by step and hash, then (when the step
        moved on) the current state.json becomes state.prev.json, then state.json points at the
        new file, then state files neither names are deleted. A file a state JSON names is never
        rewritten (same name, same bytes), so a crash anywhere leaves two consistent generations."""
        state_dir = self.path / "state"
        data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        sha = sha256_bytes(data)
        name = f"state_{int(info['step']):08d}_{sha[:12]}.safetensors"
        atomic_write_bytes(state_dir / name, data)
        try:
            current = read_json(state_dir / STATE)
        except StoreError:  # missing or damaged: never made the previous generation
            current = None
        if isinstance(current, dict) and current.get("step") != info["step"]:
            keep_previous(state_dir / STATE, state_dir / PREV_STATE)
        atomic_write_json(state_dir / STATE, {**info, "file": name, "sha256": sha})
        keep = {name}
        try:
            keep.add(read_json(state_dir / PREV_STATE).get("file"))
        except (StoreError, AttributeError):
            pass
        for old in state_dir.glob("state*.safetensors"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def _load_generation(self, json_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        info = read_json(json_path)
        if not isinstance(info, dict) or not isinstance(info.get("step"), int):
            raise StoreError(f"corrupt {json_path}: no step")
        path = json_path.parent / str(info.get("file", "state.safetensors"))  # older runs: one fixed name
        data = path.read_bytes() if path.is_file() else b""
        if sha256_bytes(data) != info.get("sha256"):
            raise CorruptCheckpointError(path, "training state does not match state.json")
        try:
            return st_load(data), info
        except (SafetensorError, ValueError) as e:
            raise CorruptCheckpointError(path, str(e)) from None

    def load_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The newest verifiable training state the metrics can continue from, else the previous
        generation with a warning (:func:`interp.generations.load_state`)."""
        try:
            m = self.metrics
            end = int(m["step"].max()) if len(m) else None
        except StoreError:
            end = None
        return load_state(self.path / "state", self._load_generation, end)

    # ---- saved training states at a subset of checkpoints (issue 15: forks)
    def save_snapshot(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        """Keep a full training state at ``info["step"]`` in state/snapshots/ (the file, then
        its JSON with the SHA-256), besides the single resume state."""
        step = int(info["step"])
        data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        base = self.path / "state" / "snapshots" / f"state_{step:08d}"
        atomic_write_bytes(base.with_suffix(".safetensors"), data)
        atomic_write_json(base.with_suffix(".json"), {**info, "sha256": sha256_bytes(data), "bytes": len(data)})

    @property
    def snapshot_steps(self) -> list[int]:
        """Steps with a saved full training state (see :meth:`save_snapshot`)."""
        d = self.path / "state" / "snapshots"
        return sorted(int(p.stem.split("_")[1]) for p in d.glob("state_*.json")) if d.is_dir() else []

    def load_snapshot(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        base = self.path / "state" / "snapshots" / f"state_{step:08d}"
        info = read_json(base.with_suffix(".json"))
        path = base.with_suffix(".safetensors")
        data = path.read_bytes() if path.exists() else b""
        if sha256_bytes(data) != info.get("sha256"):
            raise CorruptCheckpointError(path, "training state does not match its JSON")
        return st_load(data), info

    @property
    def has_state(self) -> bool:
        return any((self.path / "state" / n).exists() for n in (STATE, PREV_STATE))

    @property
    def state_step(self) -> int | None:
        """The step the saved training state resumes from, or None when there is none."""
        return int(self.load_state()[1]["step"]) if self.has_state else None

    # ---- summaries
    def summary(self) -> dict[str, Any]:
        """Steps, final values and the grokking steps (:mod:`interp.metrics`)."""
        m = self.metrics
        out: dict[str, Any] = {"run": str(self.path), "name": self.name, "status": self.status,
                               "checkpoints": len(self.steps)}
        out.update(final_values(m, ("train_acc", "test_acc", "train_loss", "test_loss")))
        out.update(grok_steps(m))
        return out
