"""Sweeps: train a grid of runs, skip or resume them on re-runs, summarise and plot them.

    grokscope sweep --preset nanda --grid frac_train=0.2,0.3,0.5 weight_decay=0.1,0.3,1 seed=0..4
    grokscope sweep plot checkpoints/sweep_nanda_frac_train_weight_decay_seed

    from interp import preset, sweep
    df = sweep.run(preset("tiny"), {"frac_train": [0.3, 0.5], "seed": [0, 1]}, out="checkpoints/s")

Layout of a sweep directory::

    SWEEP/
      sweep.json                         grid, base config, members (name -> parameters)
      frac_train=0.3,seed=0/             one ordinary run directory per member (interp.store.Run)
      ...
      summary.parquet                    one row per member (see :func:`summarize`)
      plots/*.html (+ .png with kaleido) written by ``grokscope sweep plot``

Backends (none is a scheduler; each hands members to something that already is one):

* ``local`` (default): on a CUDA machine, ``local-batched``; otherwise ``local-pool``.
* ``local-pool``: a spawn-context process pool sized to the cores, one torch thread per
  process, one member per task (:func:`interp.train.train` / :func:`interp.train.resume`).
* ``local-batched``: same-shape members trained together in one vmapped computation
  (:mod:`interp.batched`) on the GPU when there is one, else on the CPU.
* ``ray``: one Ray task per member (``num_cpus=1``), or, with ``num_gpus > 0``, one task per
  batch of same-shape members on a GPU; outputs go to ``out``, which must be on a filesystem
  every Ray node sees.

Re-running the same sweep skips complete members and resumes unfinished ones from their
last saved state, so an interrupted sweep is continued by running the same command again.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.errors import ConfigError, StoreError
from interp.metrics import final_values, grok_steps
from interp.store import DEFAULT_ROOT, Run, atomic_write_json, atomic_write_parquet, read_json
from interp.train import PRESETS, TrainConfig, create_run, parse_field, preset, resume, train

_FIELDS = frozenset(TrainConfig.__dataclass_fields__)
SWEEP_FILE = "sweep.json"
SUMMARY_FILE = "summary.parquet"
KEY_FREQS_CACHE = "key_freqs.json"
FAILURES_FILE = "failures.log"
FORMAT_VERSION = 1
BACKENDS = ("local", "local-pool", "local-batched", "ray")
#: swept parameters that only repeat an experiment (aggregated over in plots)
REPLICATE_KEYS = ("seed", "data_seed")

# outcome classes (Liu et al. 2022, "Towards Understanding Grokking: An Effective Theory of
# Representation Learning", arXiv:2205.10343: comprehension, grokking, memorization, confusion)
COMPREHENSION = "comprehension"
GROKKING = "grokking"
MEMORIZATION = "memorization"
NO_LEARNING = "no learning"
UNFINISHED = "unfinished"
OUTCOMES = (COMPREHENSION, GROKKING, MEMORIZATION, NO_LEARNING)
DELAY_FACTOR = 2.0


class SweepError(RuntimeError):
    """Some members failed; the message has one line per failed member."""


# ====================================================================== grid
def _parse_values(key: str, text: str) -> list[Any]:
    """``text`` is a comma list whose items are values or inclusive integer ranges ``a..b``."""
    out: list[Any] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            raise ConfigError(f"--grid {key}: empty value in {text!r}")
        if ".." in item:
            lo_s, hi_s = item.split("..", 1)
            lo, hi = parse_field(key, lo_s.strip()), parse_field(key, hi_s.strip())
            if type(lo) is not int or type(hi) is not int:
                raise ConfigError(f"--grid {key}: ranges a..b are for integer fields, got {item!r}")
            if hi < lo:
                raise ConfigError(f"--grid {key}: empty range {item!r}")
            out.extend(range(lo, hi + 1))
        else:
            out.append(parse_field(key, item))
    return out


def parse_grid(grid: Mapping[str, Any] | Iterable[str]) -> dict[str, list[Any]]:
    """The grid as {field: [values]} in the given order.

    Accepts ``["frac_train=0.2,0.3", "seed=0..4"]`` (values parsed by the field's type with
    :func:`interp.train.parse_field`; ``a..b`` is an inclusive integer range) or a mapping
    {field: value or list of values} (string values are parsed the same way)."""
    items: list[tuple[str, Any]] = []
    if isinstance(grid, Mapping):
        items = list(grid.items())
    else:
        for spec in grid:
            key, sep, text = str(spec).partition("=")
            if not sep or not key.strip() or not text.strip():
                raise ConfigError(f"--grid {spec!r}: expected KEY=V1,V2,... or KEY=A..B")
            items.append((key.strip(), text.strip()))
    out: dict[str, list[Any]] = {}
    for key, raw in items:
        if key not in _FIELDS:
            raise ConfigError(f"--grid {key}: unknown config key (known: {', '.join(sorted(_FIELDS))})")
        if key in out:
            raise ConfigError(f"--grid {key}: given twice")
        seq = [raw] if isinstance(raw, str) or not isinstance(raw, (list, tuple, range)) else list(raw)
        # strings are parsed; other values are normalised to the field's type the same way
        values = [v for x in seq for v in _parse_values(key, x if isinstance(x, str) else str(x))]
        if not values:
            raise ConfigError(f"--grid {key}: no values")
        dup = [v for i, v in enumerate(values) if v in values[:i]]
        if dup:
            raise ConfigError(f"--grid {key}: value {dup[0]!r} listed twice")
        out[key] = values
    if not out:
        raise ConfigError("--grid: no parameters to sweep; e.g. --grid frac_train=0.2,0.3 seed=0..2")
    return out


def format_value(v: Any) -> str:
    """Short, exact text of a parameter value for member names: 1.0 -> '1', 0.3 -> '0.3'."""
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return str(v)


def member_name(params: Mapping[str, Any]) -> str:
    """``frac_train=0.3,weight_decay=1,seed=0``: the member's directory name."""
    return ",".join(f"{k}={format_value(v)}" for k, v in params.items())


@dataclass(frozen=True)
class Member:
    name: str
    params: dict[str, Any]
    config: TrainConfig


def members(base: TrainConfig, grid: Mapping[str, Sequence[Any]]) -> list[Member]:
    """Every point of the grid (cartesian product, last key fastest), its config validated."""
    out = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        name = member_name(params)
        try:
            cfg = base.replace(**params)
        except ConfigError as e:
            raise ConfigError(f"sweep member {name}: {e}") from None
        except TypeError as e:  # dataclasses.replace on an unknown field
            raise ConfigError(f"sweep member {name}: {e}") from None
        out.append(Member(name, params, cfg))
    return out


# ====================================================================== sweep directory
@dataclass
class Sweep:
    """An opened sweep directory."""

    path: Path
    grid: dict[str, list[Any]]
    base: TrainConfig
    preset: str | None = None

    @property
    def members(self) -> list[Member]:
        return members(self.base, self.grid)

    def member_path(self, m: Member) -> Path:
        return self.path / m.name

    @classmethod
    def open(cls, path: str | os.PathLike) -> Sweep:
        path = Path(path)
        if not (path / SWEEP_FILE).exists():
            raise StoreError(f"no sweep at {path} (missing {SWEEP_FILE})")
        meta = read_json(path / SWEEP_FILE)
        if meta.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{path / SWEEP_FILE}: sweep format version {meta.get('format_version')!r} "
                             f"is not supported (this grokscope reads version {FORMAT_VERSION})")
        return cls(path=path, grid={k: list(v) for k, v in meta["grid"]},  # [[key, values], ...]: ordered
                   base=TrainConfig.from_dict(meta["base_config"]), preset=meta.get("preset"))

    @classmethod
    def create_or_check(cls, path: Path, grid: dict[str, list[Any]], base: TrainConfig,
                        preset_name: str | None) -> Sweep:
        """Write sweep.json, or check that the existing one describes the same sweep."""
        sweep = cls(path=path, grid=grid, base=base, preset=preset_name)
        if (path / SWEEP_FILE).exists():
            old = cls.open(path)
            if list(old.grid.items()) != list(grid.items()):
                raise ConfigError(f"{path} holds a sweep over a different grid ({_grid_text(old.grid)}); "
                                  f"use another --out")
            if old.base != base:
                diff = [f"{k}: {v!r} -> {getattr(base, k)!r}" for k, v in old.base.to_dict().items()
                        if getattr(base, k) != v]
                raise ConfigError(f"{path} holds a sweep with a different base config ({'; '.join(diff[:3])}); "
                                  f"use another --out")
            return old
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / SWEEP_FILE, {
            "format_version": FORMAT_VERSION, "kind": "grokscope.sweep", "preset": preset_name,
            "grid": [[k, v] for k, v in grid.items()], "base_config": base.to_dict(),
            "members": [{"name": m.name, "params": m.params} for m in sweep.members],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        return sweep


def _grid_text(grid: Mapping[str, Sequence[Any]]) -> str:
    return " ".join(f"{k}={','.join(format_value(v) for v in vs)}" for k, vs in grid.items())


def find_sweeps(root: str | os.PathLike = DEFAULT_ROOT) -> list[Path]:
    """Sweep directories (holding sweep.json) under ``root``, sorted."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(SWEEP_FILE)) if root.is_dir() else []


# ====================================================================== one member
def member_status(path: Path, cfg: TrainConfig) -> str:
    """``new`` (nothing there), ``complete``, ``partial`` (has a state to resume from) or
    ``stale`` (created, never reached its first saved state). A run directory trained with
    a different config raises StoreError."""
    if not (path / "run.json").exists():
        return "new"
    run = Run.open(path)
    if run.config != cfg.to_dict():
        diff = [k for k, v in cfg.to_dict().items() if run.config.get(k) != v]
        raise StoreError(f"{path} was trained with a different config ({', '.join(diff[:3])}); move it away")
    if run.status == "complete":
        return "complete"
    return "partial" if run.has_state else "stale"


def train_member(path: str | os.PathLike, config: TrainConfig | dict, threads: int | None = 1,
                 progress: bool = False) -> str:
    """Train, resume or skip one member; returns ``trained``, ``resumed`` or ``skipped``.
    Idempotent, so a worker that dies can simply be retried."""
    if threads:
        torch.set_num_threads(threads)
    path = Path(path)
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    status = member_status(path, cfg)
    if status == "complete":
        return "skipped"
    if status == "partial":
        resume(path, progress=progress)
        return "resumed"
    if status == "stale":
        shutil.rmtree(path)
    train(cfg, path, progress=progress)
    return "trained"


def train_members_batched(items: Sequence[tuple[str | os.PathLike, TrainConfig | dict]], *,
                          device: str | None = None, max_batch: int = 128, progress: bool = True) -> list[str]:
    """Train, resume or skip members, batching same-shape ones that continue from the same
    step (:class:`interp.batched.BatchedTrainer`); returns one action per item."""
    from interp.batched import BatchedTrainer, batch_key

    actions, groups = [], {}
    for path, config in items:
        path = Path(path)
        cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        status = member_status(path, cfg)
        if status == "complete":
            actions.append("skipped")
            continue
        if status == "stale":
            shutil.rmtree(path)
        run = Run.open(path) if status == "partial" else create_run(cfg, path)
        actions.append("resumed" if status == "partial" else "trained")
        groups.setdefault((batch_key(cfg), run.state_step or 0), []).append((cfg, run))
    for group in groups.values():
        for i in range(0, len(group), max_batch):
            chunk = group[i:i + max_batch]
            BatchedTrainer([c for c, _ in chunk], [r for _, r in chunk], device=device, progress=progress).fit()
    return actions


def _init_worker() -> None:
    torch.set_num_threads(1)


def _ray_unit(items: list[tuple[str, dict]], device: str | None) -> list[str]:
    """A Ray task: one member on a CPU, or a batch of members on the task's GPU."""
    if device is None:
        return [train_member(p, c, threads=1) for p, c in items]
    return train_members_batched(items, device=device, progress=False)


# ====================================================================== backends
def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _run_pool(todo: list[tuple[Member, Path]], workers: int, progress: bool,
              report: Callable[[Member, str | None, BaseException | None], None]) -> None:
    if workers <= 1:  # one after another in this process, one torch thread like a pool worker
        threads = torch.get_num_threads()
        try:
            for m, path in todo:
                try:
                    report(m, train_member(path, m.config, threads=1), None)
                except Exception as e:  # reported per member, like a pool worker's failure
                    report(m, None, e)
        finally:
            torch.set_num_threads(threads)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_init_worker) as pool:
        futures: dict[Future, Member] = {pool.submit(train_member, str(p), m.config.to_dict(), 1): m
                                         for m, p in todo}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    exc = f.exception()
                    report(futures[f], None if exc else f.result(), exc)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("backend ray: Ray is not installed; pip install 'grokscope[ray]'") from None
    return ray


def _run_ray(todo: list[tuple[Member, Path]], address: str | None, num_gpus: float, max_retries: int,
             max_batch: int, report: Callable[[Member, str | None, BaseException | None], None]) -> None:
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    if num_gpus > 0:  # batches of same-shape members, one GPU task each
        from interp.batched import batch_key

        groups: dict[tuple, list[tuple[Member, Path]]] = {}
        for m, p in todo:
            groups.setdefault(batch_key(m.config), []).append((m, p))
        units = [g[i:i + max_batch] for g in groups.values() for i in range(0, len(g), max_batch)]
        device = "cuda"
    else:
        units, device = [[item] for item in todo], None
    task = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=max_retries)(_ray_unit)
    refs = {task.remote([(str(p.resolve()), m.config.to_dict()) for m, p in unit], device): unit for unit in units}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        unit = refs[done[0]]
        try:
            actions = ray.get(done[0])
        except Exception as e:  # a task that failed after its retries; one line per member
            for m, _ in unit:
                report(m, None, e)
        else:
            for (m, _), action in zip(unit, actions):
                report(m, action, None)


def run(base_config: TrainConfig, grid: Mapping[str, Any] | Iterable[str], *, out: str | os.PathLike | None = None,
        backend: str = "local", workers: int | None = None, address: str | None = None, device: str | None = None,
        max_batch: int = 128, num_gpus: float = 0.0, max_retries: int = 3, progress: bool = True,
        preset_name: str | None = None) -> pd.DataFrame:
    """Train every member of ``grid`` over ``base_config`` into ``out`` and return the summary.

    ``grid``: {field: values} or ``["field=v1,v2", "seed=0..4"]`` (see :func:`parse_grid`).
    ``backend``: one of :data:`BACKENDS` (see the module docstring). ``workers``: pool size
    (default: the cores this process may use). ``address``: the Ray cluster (``None``: a
    local Ray instance, unless one is already initialised). ``device``/``max_batch``: for
    ``local-batched``. ``num_gpus``/``max_retries``: Ray task options.

    Complete members are skipped, unfinished ones resumed. The returned DataFrame is
    :func:`summarize`'s table plus an ``action`` column (trained / resumed / skipped /
    failed); it is also written to ``out/summary.parquet``. Raises :class:`SweepError`
    after writing the summary if any member failed.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    grid = parse_grid(grid)
    mems = members(base_config, grid)
    out = Path(out) if out is not None else default_out(preset_name, grid)
    sweep = Sweep.create_or_check(out, grid, base_config, preset_name)
    if backend == "ray":
        _import_ray()  # fail before any work when Ray is missing
    if backend == "local":
        backend = "local-batched" if torch.cuda.is_available() else "local-pool"

    actions: dict[str, str] = {}
    failures: list[str] = []
    tracebacks: list[str] = []
    todo = []
    for m in mems:
        path = sweep.member_path(m)
        if member_status(path, m.config) == "complete":
            actions[m.name] = "skipped"
        else:
            todo.append((m, path))
    bar = tqdm(total=len(mems), initial=len(mems) - len(todo), desc=f"sweep {out.name}", unit="run",
               dynamic_ncols=True, disable=not progress)

    def report(m: Member, action: str | None, exc: BaseException | None) -> None:
        if exc is not None:
            actions[m.name] = "failed"
            failures.append(f"{m.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            tracebacks.append(f"== {m.name}\n" + "".join(traceback.format_exception(exc)))
        else:
            actions[m.name] = action or "trained"
        bar.update(1)
        bar.set_postfix_str(f"last {m.name}", refresh=False)

    try:
        if not todo:  # everything already complete
            pass
        elif backend == "local-pool":
            _run_pool(todo, min(workers or default_workers(), len(todo)), progress, report)
        elif backend == "local-batched":
            acts = train_members_batched([(p, m.config) for m, p in todo], device=device, max_batch=max_batch,
                                         progress=progress)
            for (m, _), a in zip(todo, acts):
                report(m, a, None)
        else:
            _run_ray(todo, address, num_gpus, max_retries, max_batch, report)
    finally:
        bar.close()
    df = summarize(out)
    df.insert(1, "action", [actions.get(n, "skipped") for n in df["name"]])
    if failures:
        (out / FAILURES_FILE).write_text("\n".join(tracebacks))
        raise SweepError(f"{len(failures)} of {len(mems)} members failed (tracebacks in {out / FAILURES_FILE}):\n"
                         + "\n".join(failures))
    return df


def default_out(preset_name: str | None, grid: Mapping[str, Any]) -> Path:
    """``checkpoints/sweep_<preset>_<swept fields>``: the same command finds the same directory."""
    return DEFAULT_ROOT / f"sweep_{preset_name or 'custom'}_{'_'.join(grid)}"


# ====================================================================== summary
def classify(memorized_step: int | None, grokked_step: int | None, eval_every: int = 1,
             delay_factor: float = DELAY_FACTOR) -> str:
    """Outcome of one run, after Liu et al. 2022 (arXiv:2205.10343)'s four phases.

    With t_train the first step with train accuracy 100% and t_test the first step with
    test accuracy ≥ the grokking threshold (99%):

    * ``no learning``: neither happened (Liu et al.'s *confusion*);
    * ``memorization``: t_train only — fits the training set, never generalises;
    * ``comprehension``: t_test ≤ delay_factor · t_train + eval_every (generalises at about
      the time it fits; eval_every absorbs the test-evaluation interval), or t_test without
      t_train;
    * ``grokking``: t_test later than that — generalisation long after memorisation.
    """
    if grokked_step is None:
        return MEMORIZATION if memorized_step is not None else NO_LEARNING
    if memorized_step is None or grokked_step <= delay_factor * memorized_step + eval_every:
        return COMPREHENSION
    return GROKKING


def _key_freqs(run: Run, cache: dict[str, Any]) -> list[int]:
    """The final checkpoint's key frequencies (``probes.runner.final_key_frequencies``), kept in the
    sweep's cache by checkpoint hash so a re-summarised sweep does not recompute them."""
    from probes.runner import final_key_frequencies, merged_params

    sha = run.checkpoint_hash(run.steps[-1])
    hit = cache.get(run.path.name)
    if hit and hit.get("sha256") == sha:
        return hit["key_freqs"]
    freqs = final_key_frequencies(run, merged_params(None))
    cache[run.path.name] = {"sha256": sha, "key_freqs": freqs}
    return freqs


def summarize(path: str | os.PathLike, delay_factor: float = DELAY_FACTOR, key_freqs: bool = True) -> pd.DataFrame:
    """One row per member, written to ``SWEEP/summary.parquet``:

    name, run (its directory), the swept parameters, status, last_step, memorized_step (first
    step with train acc 100%), grokked_step (first step with test acc ≥ the config's
    grok_threshold, 99% by default; <NA>: did not grok), final train/test loss and accuracy,
    key_freqs (final checkpoint's key frequencies, unless ``key_freqs=False``), wall_time
    (s), stopped_early, outcome (:func:`classify`; ``unfinished`` for runs not complete).
    """
    sweep = Sweep.open(path)
    use_kf = key_freqs
    cache_path = sweep.path / KEY_FREQS_CACHE
    cache = read_json(cache_path) if use_kf and cache_path.exists() else {}
    rows = []
    for m in sweep.members:
        mpath = sweep.member_path(m)
        row: dict[str, Any] = {"name": m.name, "run": str(mpath), **m.params}
        if not (mpath / "run.json").exists():
            rows.append({**row, "status": "missing", "outcome": UNFINISHED})
            continue
        r = Run.open(mpath)
        met = r.metrics
        steps = grok_steps(met, m.config.grok_threshold)
        final = final_values(met, ("train_loss", "test_loss", "train_acc", "test_acc", "wall_time"))
        row.update(status=r.status, last_step=final.pop("last_step"), **steps, **final)
        row["stopped_early"] = bool(r.meta.get("stopped_early", False))
        complete = r.status == "complete"
        row["outcome"] = (classify(steps["memorized_step"], steps["grokked_step"], m.config.eval_every, delay_factor)
                          if complete else UNFINISHED)
        if use_kf and complete and r.steps:
            try:
                row["key_freqs"] = _key_freqs(r, cache)
            except Exception as e:  # a probe failure must not lose the summary
                warnings.warn(f"{m.name}: key frequencies not computed: {e}", stacklevel=2)
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in SUMMARY_COLUMNS:  # members not started yet leave holes; keep every column
        if col not in df:
            df[col] = math.nan
    for col in ("last_step", "memorized_step", "grokked_step"):
        df[col] = df[col].astype("Int64")
    df["grokked"] = df["grokked_step"].notna()
    if use_kf:
        if "key_freqs" not in df:
            df["key_freqs"] = None
        atomic_write_json(cache_path, cache)
    atomic_write_parquet(sweep.path / SUMMARY_FILE, df)
    return df


SUMMARY_COLUMNS = ("status", "last_step", "memorized_step", "grokked_step", "train_loss", "test_loss", "train_acc",
                   "test_acc", "wall_time", "stopped_early", "outcome")


def load_summary(path: str | os.PathLike) -> pd.DataFrame:
    """``SWEEP/summary.parquet`` (recomputed when missing or older than a member's metrics)."""
    path = Path(path)
    f = path / SUMMARY_FILE
    if f.exists():
        mtime = f.stat().st_mtime
        newer = any((p.stat().st_mtime > mtime) for p in path.glob("*/metrics.parquet"))
        if not newer:
            return pd.read_parquet(f)
    return summarize(path)


def format_table(df: pd.DataFrame, params: Sequence[str]) -> str:
    """The summary as aligned text: parameters, outcome, steps, losses, key frequencies, wall time."""
    def step(v: Any, missing: str) -> str:
        return missing if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(int(v))

    def num(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"

    header = [*params, "outcome", "train 100%", "test 99%", "train_loss", "test_loss"]
    kf = "key_freqs" in df
    header += ["key_freqs"] if kf else []
    header += ["wall_s"] + (["action"] if "action" in df else [])
    lines = []
    for r in df.to_dict("records"):
        line = [format_value(r[p]) for p in params]
        line += [r.get("outcome", ""), step(r.get("memorized_step"), "-"), step(r.get("grokked_step"), "did not grok"),
                 num(r.get("train_loss")), num(r.get("test_loss"))]
        if kf:
            k = r.get("key_freqs")
            line.append(" ".join(str(int(x)) for x in k) if k is not None and len(k) else "-")
        line.append(num(r.get("wall_time")))
        if "action" in df:
            line.append(str(r["action"]))
        lines.append(line)
    widths = [max(len(h), *(len(x[i]) for x in lines)) if lines else len(h) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *lines])


# ====================================================================== CLI
def _usage(msg: str) -> Exception:
    from interp.cli import UsageError

    return UsageError(msg)


def _cmd_run(args: argparse.Namespace) -> int:
    if not args.grid:
        raise _usage("sweep: --grid is required, e.g. --grid frac_train=0.2,0.3 seed=0..2 "
                     "(or `grokscope sweep plot SWEEP_DIR`)")
    for opt, value, lo in (("--workers", args.workers, 1), ("--max-batch", args.max_batch, 1),
                           ("--num-gpus", args.num_gpus, 0), ("--max-retries", args.max_retries, 0)):
        if value is not None and value < lo:
            raise _usage(f"{opt}: must be >= {lo}, got {value}")
    name = args.preset or "nanda"
    base = preset(name).with_overrides(args.set or [])
    if args.steps is not None:
        base = base.replace(n_steps=args.steps)
    if args.stop_after_grok is not None:
        base = base.replace(stop_after_grok=args.stop_after_grok)
    grid = parse_grid(args.grid)
    out = Path(args.out) if args.out else default_out(name, grid)
    try:
        df = run(base, grid, out=out, backend=args.backend, workers=args.workers, address=args.address,
                 device=args.device, max_batch=args.max_batch, num_gpus=args.num_gpus, max_retries=args.max_retries,
                 progress=not args.quiet, preset_name=name)
    except SweepError as e:
        print(f"grokscope: error: {e}", file=sys.stderr)
        print(f"summary of the others in {out / SUMMARY_FILE}; re-run the same command to retry", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"grokscope: interrupted; re-run the same command to continue the sweep in {out}", file=sys.stderr)
        return 130
    print(format_table(df, list(grid)))
    n = {a: int((df["action"] == a).sum()) for a in ("trained", "resumed", "skipped")}
    print(f"{out}: {len(df)} members ({n['trained']} trained, {n['resumed']} resumed, {n['skipped']} skipped); "
          f"{int(df['grokked'].sum())} grokked. Plots: grokscope sweep plot {out}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    sweep = Sweep.open(args.sweep_dir)
    df = summarize(sweep.path, delay_factor=args.delay_factor)
    print(format_table(df, list(sweep.grid)))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from interp import phase

    written, notes = phase.plot_sweep(args.sweep_dir, out=args.out, delay_factor=args.delay_factor,
                                      x=args.x, y=args.y)
    for note in notes:
        print(note)
    for p in written:
        print(p)
    return 0


def _cmd(args: argparse.Namespace) -> int:
    return {"plot": _cmd_plot, "summary": _cmd_summary}.get(args.sweep_command, _cmd_run)(args)


def _run_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--preset", default=d(None), help=f"base config: {' | '.join(PRESETS)} (default nanda)")
    p.add_argument("--grid", nargs="+", action="extend", default=d(None), metavar="KEY=VALUES",
                   help="swept fields: comma lists and inclusive integer ranges, e.g. frac_train=0.2,0.3 seed=0..4")
    p.add_argument("--set", nargs="+", action="extend", default=d(None), metavar="KEY=VALUE",
                   help="override base config fields, e.g. --set p=97 eval_every=50")
    p.add_argument("--steps", type=int, default=d(None), help="n_steps of every member")
    p.add_argument("--stop-after-grok", type=int, default=d(None), metavar="N",
                   help="stop a member once test acc has stayed >= 99%% for N steps")
    p.add_argument("--out", default=d(None), help="sweep directory (default checkpoints/sweep_<preset>_<fields>)")
    p.add_argument("--backend", choices=BACKENDS, default=d("local"),
                   help="local (batched on a GPU, else a process pool), local-pool, local-batched, ray")
    p.add_argument("--workers", type=int, default=d(None), help="pool size (default: the cores available)")
    p.add_argument("--address", default=d(None), help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--device", default=d(None), help="local-batched device (default cuda if available, else cpu)")
    p.add_argument("--max-batch", type=int, default=d(128), help="most models trained in one batch")
    p.add_argument("--num-gpus", type=float, default=d(0.0),
                   help="ray: GPUs per task; > 0 trains batches of members on GPUs")
    p.add_argument("--max-retries", type=int, default=d(3), help="ray: retries of a failed task")
    p.add_argument("--quiet", action="store_true", default=d(False), help="no progress bars")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="train a grid of runs; `sweep plot DIR` for phase diagrams",
        description="Train every point of a parameter grid (re-running resumes), print a summary. "
                    "`grokscope sweep --grid ...` is `grokscope sweep run --grid ...`.")
    _run_options(p, suppress=False)
    p.set_defaults(func=_cmd, sweep_command=None)
    sub = p.add_subparsers(dest="sweep_command", metavar="{run,plot,summary}")
    r = sub.add_parser("run", help="train the grid (the default)", description="Train every point of a grid.")
    _run_options(r, suppress=True)
    for cmd, hlp in (("plot", "write phase-diagram plots of a sweep"), ("summary", "print a sweep's summary")):
        q = sub.add_parser(cmd, help=hlp, description=hlp[0].upper() + hlp[1:] + ".")
        q.add_argument("sweep_dir", metavar="SWEEP_DIR")
        q.add_argument("--delay-factor", type=float, default=DELAY_FACTOR,
                       help="comprehension if test 99%% comes within this factor of train 100%% (default 2)")
        if cmd == "plot":
            q.add_argument("--out", help="where the plots go (default SWEEP_DIR/plots)")
            q.add_argument("--x", help="phase diagram x parameter (default frac_train or the first swept)")
            q.add_argument("--y", help="phase diagram y parameter (default weight_decay or the second swept)")
