"""Sweeps: train a grid of runs, skip or resume them on re-runs, summarise them.

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
      plots/*.html (+ .png with kaleido) written by ``grokscope sweep plot`` (apps.sweep_plots)

Backends (:mod:`interp.sweep_backends`): ``local`` (default) is ``local-batched`` on a CUDA
machine and ``local-pool`` otherwise; ``local-pool``, ``local-batched`` and ``ray`` are
described there. The summary's key-frequency column is added by :mod:`probes.sweep_summary`.

Re-running the same sweep skips complete members and resumes unfinished ones from their
last saved state, so an interrupted sweep is continued by running the same command again.
"""

from __future__ import annotations

import itertools
import math
import os
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.atomic import atomic_write_json, atomic_write_parquet, read_json
from interp.config import TrainConfig, format_value
from interp.config import parse_field as parse_config_field
from interp.errors import ConfigError, StoreError
from interp.fork import FORK_STEP, INTERVENE, point_args, split_interventions
from interp.metrics import final_values, grok_steps
from interp.store import DEFAULT_ROOT, Run
from interp.sweep_backends import (
    default_workers,
    import_ray,
    member_status,
    run_pool,
    run_ray,
    train_member,
    train_members_batched,
)

__all__ = [
    "BACKENDS", "COMPREHENSION", "DELAY_FACTOR", "FORK_AXES", "GROKKING", "MEMORIZATION", "NO_LEARNING", "OUTCOMES",
    "Member", "Sweep", "SweepError", "classify", "default_out", "default_workers", "find_sweeps", "format_value",
    "member_status", "members", "parse_grid", "run", "summarize", "train_member", "train_members_batched",
]

#: a summary column computed per complete run: name -> function(run) -> value
Columns = Mapping[str, Callable[[Run], Any]]

_FIELDS = frozenset(TrainConfig.__dataclass_fields__)
SWEEP_FILE = "sweep.json"
SUMMARY_FILE = "summary.parquet"
FAILURES_FILE = "failures.log"
FORMAT_VERSION = 1
BACKENDS = ("local", "local-pool", "local-batched", "ray")
#: swept parameters that only repeat an experiment (aggregated over in plots)
REPLICATE_KEYS = ("seed", "data_seed")
#: grid axes of a fork sweep that are not config fields (:func:`interp.sweep_fork.run_fork`)
FORK_AXES = (FORK_STEP, INTERVENE)

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
    """``text`` is a comma list whose items are values or inclusive integer ranges ``a..b``
    (fork sweeps: :data:`INTERVENE` items are intervention points, see
    :func:`interp.fork.split_interventions`)."""
    if key == INTERVENE:
        return split_interventions(text)
    parse = _parse_step if key == FORK_STEP else parse_config_field
    out: list[Any] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            raise ConfigError(f"--grid {key}: empty value in {text!r}")
        if ".." in item:
            lo_s, hi_s = item.split("..", 1)
            lo, hi = parse(key, lo_s.strip()), parse(key, hi_s.strip())
            if type(lo) is not int or type(hi) is not int:
                raise ConfigError(f"--grid {key}: ranges a..b are for integer fields, got {item!r}")
            if hi < lo:
                raise ConfigError(f"--grid {key}: empty range {item!r}")
            out.extend(range(lo, hi + 1))
        else:
            out.append(parse(key, item))
    return out


def _parse_step(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--at: expected a step (an integer), got {text!r}") from None


def parse_grid(grid: Mapping[str, Any] | Iterable[str], fork: bool = False) -> dict[str, list[Any]]:
    """The grid as {field: [values]} in the given order.

    Accepts ``["frac_train=0.2,0.3", "seed=0..4"]`` (values parsed by the field's type with
    :func:`interp.config.parse_field`; ``a..b`` is an inclusive integer range) or a mapping
    {field: value or list of values} (string values are parsed the same way). ``fork``: the
    grid of a fork sweep, which may also hold :data:`FORK_STEP` and :data:`INTERVENE`."""
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
        if key not in _FIELDS and not (fork and key in FORK_AXES):
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


def member_name(params: Mapping[str, Any]) -> str:
    """``frac_train=0.3,weight_decay=1,seed=0``: the member's directory name."""
    return ",".join(f"{k}={format_value(v)}" for k, v in params.items())


@dataclass(frozen=True)
class Member:
    name: str
    params: dict[str, Any]
    config: TrainConfig
    fork: dict[str, Any] | None = None  # a fork sweep's member: parent, step, set, interventions


def members(base: TrainConfig, grid: Mapping[str, Sequence[Any]], fork: Mapping[str, Any] | None = None
            ) -> list[Member]:
    """Every point of the grid (cartesian product, last key fastest), its config validated.
    ``fork`` (a fork sweep's parent, set and interventions): each member forks the parent
    (:func:`interp.fork.point_args`)."""
    out = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        name = member_name(params)
        spec = None
        if fork is not None:
            step, set_, more = point_args(params, fork["set"], fork["interventions"])
            spec = {"parent": fork["parent"], "step": step, "set": set_, "interventions": more}
        try:
            cfg = base.replace(**{k: v for k, v in params.items() if k not in FORK_AXES})
        except ConfigError as e:
            raise ConfigError(f"sweep member {name}: {e}") from None
        except TypeError as e:  # dataclasses.replace on an unknown field
            raise ConfigError(f"sweep member {name}: {e}") from None
        out.append(Member(name, params, cfg, spec))
    return out


# ====================================================================== sweep directory
@dataclass
class Sweep:
    """An opened sweep directory."""

    path: Path
    grid: dict[str, list[Any]]
    base: TrainConfig
    preset: str | None = None
    fork: dict[str, Any] | None = None  # a fork sweep: parent, parent_name, set, interventions

    @property
    def members(self) -> list[Member]:
        return members(self.base, self.grid, self.fork)

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
                   base=TrainConfig.from_dict(meta["base_config"]), preset=meta.get("preset"), fork=meta.get("fork"))

    @classmethod
    def create_or_check(cls, path: Path, grid: dict[str, list[Any]], base: TrainConfig,
                        preset_name: str | None, fork: dict[str, Any] | None = None) -> Sweep:
        """Write sweep.json, or check that the existing one describes the same sweep."""
        sweep = cls(path=path, grid=grid, base=base, preset=preset_name, fork=fork)
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
            if old.fork != fork:
                raise ConfigError(f"{path} holds a sweep of other forks ({old.fork}); use another --out")
            return old
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / SWEEP_FILE, {
            "format_version": FORMAT_VERSION, "kind": "grokscope.sweep", "preset": preset_name,
            "grid": [[k, v] for k, v in grid.items()], "base_config": base.to_dict(), "fork": fork,
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


# ====================================================================== running
class _Progress:
    """Per-member outcomes of a sweep (actions, failure lines, tracebacks) and its progress bar."""

    def __init__(self, total: int, done: int, name: str, progress: bool) -> None:
        self.actions: dict[str, str] = {}
        self.failures: list[str] = []
        self.tracebacks: list[str] = []
        self.bar = tqdm(total=total, initial=done, desc=f"sweep {name}", unit="run", dynamic_ncols=True,
                        disable=not progress)

    def __call__(self, m: Member, action: str | None, exc: BaseException | None) -> None:
        if exc is not None:
            self.actions[m.name] = "failed"
            self.failures.append(f"{m.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            self.tracebacks.append(f"== {m.name}\n" + "".join(traceback.format_exception(exc)))
        else:
            self.actions[m.name] = action or "trained"
        self.bar.update(1)
        self.bar.set_postfix_str(f"last {m.name}", refresh=False)


def _execute(todo: list[tuple[Member, Path]], backend: str, report: _Progress, *, workers: int | None,
             address: str | None, device: str | None, max_batch: int, num_gpus: float, max_retries: int,
             progress: bool) -> None:
    """Hand the unfinished members to the backend (:mod:`interp.sweep_backends`)."""
    if backend == "local-pool":
        run_pool(todo, min(workers or default_workers(), len(todo)), report)
    elif backend == "local-batched":
        acts = train_members_batched([(p, m.config) for m, p in todo], device=device, max_batch=max_batch,
                                     progress=progress)
        for (m, _), a in zip(todo, acts):
            report(m, a, None)
    else:
        run_ray(todo, address, num_gpus, max_retries, max_batch, report)


def run(base_config: TrainConfig, grid: Mapping[str, Any] | Iterable[str], *, out: str | os.PathLike | None = None,
        backend: str = "local", workers: int | None = None, address: str | None = None, device: str | None = None,
        max_batch: int = 128, num_gpus: float = 0.0, max_retries: int = 3, progress: bool = True,
        preset_name: str | None = None, columns: Columns | None = None,
        fork: dict[str, Any] | None = None) -> pd.DataFrame:
    """Train every member of ``grid`` over ``base_config`` into ``out`` and return the summary.

    ``grid``: {field: values} or ``["field=v1,v2", "seed=0..4"]`` (see :func:`parse_grid`).
    ``backend``: one of :data:`BACKENDS` (see :mod:`interp.sweep_backends`). ``workers``: pool size
    (default: the cores this process may use). ``address``: the Ray cluster (``None``: a
    local Ray instance, unless one is already initialised). ``device``/``max_batch``: for
    ``local-batched``. ``num_gpus``/``max_retries``: Ray task options. ``columns``: extra
    summary columns (:func:`summarize`). ``fork``: a fork sweep (see :func:`interp.sweep_fork.run_fork`).

    Complete members are skipped, unfinished ones resumed. The returned DataFrame is
    :func:`summarize`'s table plus an ``action`` column (trained / resumed / skipped /
    failed); it is also written to ``out/summary.parquet``. Raises :class:`SweepError`
    after writing the summary if any member failed.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    grid = parse_grid(grid, fork=fork is not None)
    mems = members(base_config, grid, fork)
    out = Path(out) if out is not None else default_out(preset_name, grid)
    if fork is not None and (backend == "local-batched" or num_gpus > 0):
        raise ConfigError(f"backend {backend}: forks are trained one per worker (local-pool, or ray without GPUs)")
    sweep = Sweep.create_or_check(out, grid, base_config, preset_name, fork)
    if backend == "ray":
        import_ray()  # fail before any work when Ray is missing
    if backend == "local":
        backend = "local-batched" if torch.cuda.is_available() and fork is None else "local-pool"
    todo = [(m, sweep.member_path(m)) for m in mems
            if member_status(sweep.member_path(m), m.config, m.fork) != "complete"]
    report = _Progress(len(mems), len(mems) - len(todo), out.name, progress)
    try:
        if todo:
            _execute(todo, backend, report, workers=workers, address=address, device=device, max_batch=max_batch,
                     num_gpus=num_gpus, max_retries=max_retries, progress=progress)
    finally:
        report.bar.close()
    df = summarize(out, columns=columns)
    df.insert(1, "action", [report.actions.get(n, "skipped") for n in df["name"]])
    if report.failures:
        (out / FAILURES_FILE).write_text("\n".join(report.tracebacks))
        raise SweepError(f"{len(report.failures)} of {len(mems)} members failed "
                         f"(tracebacks in {out / FAILURES_FILE}):\n" + "\n".join(report.failures))
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


def _member_row(m: Member, mpath: Path, delay_factor: float, columns: Columns) -> dict[str, Any]:
    """One summary row (see :func:`summarize`)."""
    row: dict[str, Any] = {"name": m.name, "run": str(mpath), **m.params}
    if not (mpath / "run.json").exists():
        return {**row, "status": "missing", "outcome": UNFINISHED}
    r = Run.open(mpath)
    met = r.metrics
    steps = grok_steps(met, m.config.grok_threshold)
    final = final_values(met, ("train_loss", "test_loss", "train_acc", "test_acc", "wall_time"))
    row.update(status=r.status, last_step=final.pop("last_step"), **steps, **final)
    row["stopped_early"] = bool(r.meta.get("stopped_early", False))
    complete = r.status == "complete"
    row["outcome"] = (classify(steps["memorized_step"], steps["grokked_step"], m.config.eval_every, delay_factor)
                      if complete else UNFINISHED)
    for name, fn in columns.items():
        if complete and r.steps:
            try:
                row[name] = fn(r)
            except Exception as e:  # a failing extra column must not lose the summary
                warnings.warn(f"{m.name}: {name} not computed: {e}", stacklevel=3)
    return row


def summarize(path: str | os.PathLike, delay_factor: float = DELAY_FACTOR,
              columns: Columns | None = None) -> pd.DataFrame:
    """One row per member, written to ``SWEEP/summary.parquet``:

    name, run (its directory), the swept parameters, status, last_step, memorized_step (first
    step with train acc 100%), grokked_step (first step with test acc ≥ the config's
    grok_threshold, 99% by default; <NA>: did not grok), final train/test loss and accuracy,
    wall_time (s), stopped_early, outcome (:func:`classify`; ``unfinished`` for runs not
    complete), and one column per entry of ``columns`` (name -> function of a complete
    :class:`interp.store.Run`; None elsewhere), e.g. :func:`probes.sweep_summary.summarize`'s
    key frequencies.
    """
    sweep = Sweep.open(path)
    columns = dict(columns or {})
    df = pd.DataFrame([_member_row(m, sweep.member_path(m), delay_factor, columns) for m in sweep.members])
    for col in SUMMARY_COLUMNS:  # members not started yet leave holes; keep every column
        if col not in df:
            df[col] = math.nan
    for col in ("last_step", "memorized_step", "grokked_step"):
        df[col] = df[col].astype("Int64")
    df["grokked"] = df["grokked_step"].notna()
    for col in columns:
        if col not in df:
            df[col] = None
    atomic_write_parquet(sweep.path / SUMMARY_FILE, df)
    return df


SUMMARY_COLUMNS = ("status", "last_step", "memorized_step", "grokked_step", "train_loss", "test_loss", "train_acc",
                   "test_acc", "wall_time", "stopped_early", "outcome")
