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
from interp.fork import fork as make_fork
from interp.fork import resume_fork
from interp.perf import reuse_freed_memory
from interp.store import Run
from interp.train import create_run, resume, train

Report = Callable[[Any, "str | None", "BaseException | None"], None]


def member_status(path: Path, cfg: TrainConfig, fork: dict | None = None) -> str:
    """``new`` (nothing there), ``complete``, ``partial`` (has a state to resume from) or
    ``stale`` (created, never reached its first saved state). A run directory trained with
    a different config raises StoreError. ``fork``: the member is a fork (parent, step, set,
    interventions; see :func:`interp.fork.fork`), compared with its run.json's lineage instead."""
    if not (path / "run.json").exists():
        return "new"
    run = Run.open(path)
    if fork is not None:
        return _fork_status(run, fork)
    if run.config != cfg.to_dict():
        diff = [k for k, v in cfg.to_dict().items() if run.config.get(k) != v]
        raise StoreError(f"{path} was trained with a different config ({', '.join(diff[:3])}); move it away")
    if run.status == "complete":
        return "complete"
    return "partial" if run.has_state else "stale"


def _fork_status(run: Run, fork: dict) -> str:
    got = run.meta.get("fork")
    if got is None:  # killed while its fork state was being made (replay): made again
        return "stale"
    keys = ("parent", "step", "set", "interventions")
    if [got[k] for k in keys] != [fork[k] if k in ("parent", "step") else list(fork[k]) for k in keys]:
        raise StoreError(f"{run.path} was forked differently (at {got['step']} with "
                         f"{got['set'] + got['interventions']}); move it away")
    if run.status == "complete":
        return "complete"
    return "partial" if run.has_state else "stale"


def train_member(path: str | os.PathLike, config: TrainConfig | dict, threads: int | None = None,
                 progress: bool = False, fork: dict | None = None) -> str:
    """Train, resume or skip one member; returns ``trained``, ``resumed`` or ``skipped``.
    Idempotent, so a worker that dies can simply be retried. ``threads`` sets torch's CPU threads
    first (for worker processes, which own their process; None leaves them as they are).
    ``fork``: the member is a fork of ``fork["parent"]`` (:func:`interp.fork.fork` with the
    dict's step, set and interventions); ``config`` is then its config before interventions."""
    if threads:
        torch.set_num_threads(threads)
    path = Path(path)
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    status = member_status(path, cfg, fork)
    if status == "complete":
        return "skipped"
    if status == "partial":
        (resume_fork if fork else resume)(path, progress=progress)
        return "resumed"
    if status == "stale":
        shutil.rmtree(path)
    if fork:
        make_fork(fork["parent"], fork["step"], set=fork["set"], interventions=fork["interventions"], out=path,
                  progress=progress)
    else:
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


def _ray_unit(items: list[tuple[str, dict, dict | None]], device: str | None) -> list[str]:
    """A Ray task: one member on a CPU, or a batch of members on the task's GPU."""
    reuse_freed_memory()
    if device is None:
        return [train_member(p, c, threads=1, fork=f) for p, c, f in items]
    return train_members_batched([(p, c) for p, c, _ in items], device=device, progress=False)


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
                    report(m, train_member(path, m.config, threads=1, fork=getattr(m, "fork", None)), None)
                except Exception as e:  # reported per member, like a pool worker's failure
                    report(m, None, e)
        finally:
            torch.set_num_threads(threads)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_init_worker) as pool:
        futures: dict[Future, Any] = {pool.submit(train_member, str(p), m.config.to_dict(), 1, False,
                                                  getattr(m, "fork", None)): m for m, p in todo}
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
    items = [[(str(p.resolve()), m.config.to_dict(), getattr(m, "fork", None)) for m, p in unit] for unit in units]
    refs = {task.remote(batch, device): unit for batch, unit in zip(items, units)}
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

