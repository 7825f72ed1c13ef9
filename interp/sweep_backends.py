"""Sweep execution: train, resume or skip members, one by one, in a process pool, batched, or on Ray.

Backends (none is a scheduler; each hands members to something that already is one):

* ``local-pool``: a spawn-context process pool sized to the cores, one torch thread per
  process, one member per task (:func:`interp.train.train` / :func:`interp.train.resume`);
  its workers apply the process settings (:func:`interp.perf.reuse_freed_memory`) themselves.
* ``local-batched``: same-shape members trained together in one vmapped computation
  (:mod:`interp.batched`) on the GPU when there is one, else on the CPU.
* ``ray``: one Ray task per member (``num_cpus=1``), or, with ``num_gpus > 0``, one task per
  batch of same-shape members on a GPU; outputs go to a filesystem every Ray node sees.

A member here is anything with ``.config`` (a :class:`interp.config.TrainConfig`), e.g.
:class:`interp.sweep.Member`; ``report(member, action, exception)`` hears about each one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from interp.config import TrainConfig
from interp.errors import ConfigError, StoreError
from interp.perf import reuse_freed_memory
from interp.store import Run
from interp.train import create_run, resume, train

Report = Callable[[Any, "str | None", "BaseException | None"], None]


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


def train_member(path: str | os.PathLike, config: TrainConfig | dict, threads: int | None = None,
                 progress: bool = False) -> str:
    """Train, resume or skip one member; returns ``trained``, ``resumed`` or ``skipped``.
    Idempotent, so a worker that dies can simply be retried. ``threads`` sets torch's CPU threads
    first (for worker processes, which own their process; None leaves them as they are)."""
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
    """Process settings of a pool worker (an entry point of its own process): one torch thread,
    freed memory kept for reuse."""
    torch.set_num_threads(1)
    reuse_freed_memory()


def _ray_unit(items: list[tuple[str, dict]], device: str | None) -> list[str]:
    """A Ray task: one member on a CPU, or a batch of members on the task's GPU."""
    reuse_freed_memory()
    if device is None:
        return [train_member(p, c, threads=1) for p, c in items]
    return train_members_batched(items, device=device, progress=False)


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_pool(todo: list[tuple[Any, Path]], workers: int, report: Report) -> None:
    """Train ``todo`` (member, path) in a spawn-context pool of ``workers`` processes; with one
    worker, one after another in this process on one torch thread (restored afterwards)."""
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
        futures: dict[Future, Any] = {pool.submit(train_member, str(p), m.config.to_dict(), 1): m
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


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("backend ray: Ray is not installed; pip install 'grokscope[ray]'") from None
    return ray


def run_ray(todo: list[tuple[Any, Path]], address: str | None, num_gpus: float, max_retries: int,
            max_batch: int, report: Report) -> None:
    """One Ray task per member, or with ``num_gpus > 0`` per batch of same-shape members on a GPU."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    if num_gpus > 0:  # batches of same-shape members, one GPU task each
        from interp.batched import batch_key

        groups: dict[tuple, list[tuple[Any, Path]]] = {}
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

