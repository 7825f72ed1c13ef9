"""Sweeps.

* Local pool vs one after another: the same 8 ``tiny`` members (seeds 0..7) trained by the process
  pool (one worker per core, worker start-up included) and by a pool of one; the throughput ratio
  is measured within one call, since the machines are shared.
* Batched vs sequential on a GPU (a "no GPU" row otherwise): 64 ``nanda``-shaped members in one
  ``BatchedTrainer`` against the same trainer holding one model at a time, in member-steps per
  second (the sequential rate is measured on 2 members).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from interp import preset, sweep
from tests.bench.common import row, timed


def bench_pool(n_members: int = 8, n_steps: int = 300) -> list[dict]:
    """Runs/min of the local pool and of one-after-another training, and their ratio."""
    cfg = preset("tiny").replace(n_steps=n_steps)
    grid = {"seed": list(range(n_members))}
    workers = sweep.default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        seq = timed(lambda: sweep.run(cfg, grid, out=Path(tmp) / "seq", backend="local-pool", workers=1,
                                      progress=False))
        pool = timed(lambda: sweep.run(cfg, grid, out=Path(tmp) / "pool", backend="local-pool", workers=workers,
                                       progress=False))
    return [
        row(f"sweep: {n_members} tiny members × {n_steps} steps, one after another", 60 * n_members / seq, "runs/min"),
        row(f"sweep: same, local pool ({workers} workers, start-up included)", 60 * n_members / pool, "runs/min"),
        # no target: at most min(workers, n_members)x, less the pool's start-up
        row("sweep: local pool / one after another", seq / pool, "x"),
    ]


def bench_batched_gpu(n_members: int = 64, n_steps: int = 200, n_sequential: int = 2) -> list[dict]:
    """Member-steps/s of ``n_members`` models batched on the GPU against one model at a time."""
    name = f"sweep: batched {n_members} nanda members vs one at a time (GPU)"
    if not torch.cuda.is_available():
        return [row(f"{name}: skipped, no GPU", "no GPU", "x")]
    from interp.batched import BatchedTrainer
    from interp.train import create_run

    cfg = preset("nanda").replace(n_steps=n_steps, ckpt_dense_until=0, ckpt_log_count=0, ckpt_every=n_steps)
    fracs = [0.2, 0.3, 0.4, 0.5]
    cfgs = [cfg.replace(seed=i, frac_train=fracs[i % len(fracs)]) for i in range(n_members)]

    def fit(batch: list, root: Path) -> float:
        runs = [create_run(c, root / f"m{i}") for i, c in enumerate(batch)]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        BatchedTrainer(batch, runs, device="cuda", progress=False).fit()
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        fit(cfgs[:2], Path(tmp) / "warm")  # CUDA context, kernels
        batched = n_members * n_steps / fit(cfgs, Path(tmp) / "batched")
        seq_time = sum(fit([c], Path(tmp) / f"seq{i}") for i, c in enumerate(cfgs[:n_sequential]))
        sequential = n_sequential * n_steps / seq_time
    return [
        row(f"sweep: batched, {n_members} nanda members on {torch.cuda.get_device_name()}", batched, "member-steps/s"),
        row("sweep: one model at a time, same GPU", sequential, "member-steps/s"),
        row(name, batched / sequential, "x"),
    ]


def bench(quick: bool) -> list[dict]:
    return bench_pool(n_steps=150 if quick else 300) + bench_batched_gpu(n_steps=100 if quick else 200)
