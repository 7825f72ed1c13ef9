"""Probe performance benchmarks: ``python -m probes.bench`` prints one row per measurement.

Each benchmark is a function returning rows ``{"name", "value", "unit", "target", "ok"}``;
:data:`BENCHMARKS` lists them in order and :func:`bench` runs them all:

    bench_one_checkpoint   all default probes on one checkpoint of a random ``nanda`` model (median)
    bench_forward          the probes' shared forward (readout_cache) against run_with_cache
    bench_run              runner overhead per checkpoint, probes.run over a synthetic ``nanda`` run of
                           300 checkpoints, and a cached re-run
    bench_neuron_fve       vectorized per-neuron Fourier analysis against a per-neuron loop
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from interp.perf import reuse_freed_memory
from interp.store import Run
from interp.train import TrainConfig, checkpoint_steps, preset
from probes.registry import ProbeContext
from probes.runner import measure_context, resolve
from probes.runner import run as run_probes

ONE_CHECKPOINT_TARGET_MS = 100.0
RUN_TARGET_S = 60.0
RUNNER_OVERHEAD_TARGET_MS = 20.0  # per checkpoint: 300 checkpoints -> 6 s of the 60 s budget


def row(name: str, value: float, unit: str, target: float | None) -> dict:
    """One result; ``ok`` is value <= target (None when there is no target)."""
    return {"name": name, "value": value, "unit": unit, "target": target,
            "ok": None if target is None else bool(value <= target)}


def time_default_probes(model, task, repeats: int) -> list[dict[str, float]]:
    """Wall-clock seconds of all default probes, ``repeats`` times, each on a fresh context: per repeat
    ``{"total", "forward", <probe>...}``. The forward (``ctx.cache``) is timed on its own; probes run in
    registry order, so a memoized quantity is charged to the first probe that needs it."""
    specs, out = resolve(None), []
    for _ in range(repeats):
        ctx = ProbeContext(model=model, task=task)
        t0 = time.perf_counter()
        _ = ctx.cache
        times = {"forward": time.perf_counter() - t0}
        for spec in specs:
            t1 = time.perf_counter()
            measure_context(ctx, [spec])
            times[spec.name] = time.perf_counter() - t1
        out.append({"total": time.perf_counter() - t0, **times})
    return out


def bench_one_checkpoint(repeats: int = 7) -> list[dict]:
    """Median time of every default probe on one checkpoint of a randomly initialised ``nanda`` model
    (forward included), then the median share of the forward and of each probe."""
    cfg = preset("nanda")
    model, task = cfg.build_model().eval(), cfg.task()
    reuse_freed_memory()  # as probes.run and probes.measure do
    time_default_probes(model, task, 1)  # warm-up: caches of bases and index tables
    runs = time_default_probes(model, task, repeats)
    medians = {key: 1000 * statistics.median(r[key] for r in runs) for key in runs[0]}
    rows = [row("one_checkpoint_nanda", medians.pop("total"), "ms", ONE_CHECKPOINT_TARGET_MS)]
    return rows + [row(f"one_checkpoint_nanda.{key}", value, "ms", None) for key, value in medians.items()]


def bench_forward(repeats: int = 7) -> list[dict]:
    """The probe context's forward (``Transformer.readout_cache``) against the full hooked
    ``run_with_cache`` over the ``nanda`` grid (median of ``repeats``, interleaved)."""
    cfg = preset("nanda")
    model, x = cfg.build_model().eval(), cfg.task().inputs
    readout, full = [], []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first round warms up
            readout.append(_timed(lambda: model.readout_cache(x)))
            full.append(_timed(lambda: model.run_with_cache(x)))
    r, f = statistics.median(readout[1:]), statistics.median(full[1:])
    return [row("forward_readout_cache_nanda", 1000 * r, "ms", None),
            row("forward_run_with_cache_nanda", 1000 * f, "ms", None),
            row("forward_run_with_cache_over_readout_cache", f / r, "x", None)]


def synthetic_run(path: Path, cfg: TrainConfig, n_checkpoints: int, noise: float = 0.01) -> Run:
    """A run of ``n_checkpoints`` checkpoints of ``cfg``'s model, each its initial weights plus
    a little Gaussian noise (step i: noise · i / n), saved through :meth:`Run.save_checkpoint`."""
    steps = (checkpoint_steps(cfg) + list(range(cfg.n_steps + 1, cfg.n_steps + 1 + n_checkpoints)))[:n_checkpoints]
    run = Run.create(path, {"name": path.name, "config": cfg.to_dict(), "status": "synthetic",
                            "split": {"data_seed": cfg.data_seed, "frac_train": cfg.frac_train,
                                      "train_idx": cfg.task().train_idx.tolist()}})
    base = cfg.build_model().state_dict()
    gen = torch.Generator().manual_seed(0)
    for i, step in enumerate(sorted(steps)):
        scale = noise * i / max(1, n_checkpoints - 1)
        run.save_checkpoint(step, {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in base.items()}, {})
    return run


def bench_run(n_checkpoints: int = 300) -> list[dict]:
    """probes.run over a synthetic ``nanda`` run: first ``progress.weights`` alone (no forward pass, so
    its time is the runner's own overhead: read + verify + load each checkpoint, write the cache), then
    every default probe (cold cache), then again with everything cached."""
    with tempfile.TemporaryDirectory(prefix="grokscope_bench_") as tmp:
        run = synthetic_run(Path(tmp) / "nanda_synthetic", preset("nanda"), n_checkpoints)
        overhead = _timed(lambda: run_probes(run, names=["progress.weights"], progress=False))
        cold = _timed(lambda: run_probes(run, progress=False))
        warm = _timed(lambda: run_probes(run, progress=False))
    return [row("runner_overhead_per_checkpoint_nanda", 1000 * overhead / n_checkpoints, "ms",
                RUNNER_OVERHEAD_TARGET_MS),
            row(f"run_{n_checkpoints}_checkpoints_nanda", cold, "s", RUN_TARGET_S * n_checkpoints / 300),
            row(f"run_{n_checkpoints}_checkpoints_nanda_per_checkpoint", 1000 * cold / n_checkpoints, "ms", None),
            row(f"rerun_{n_checkpoints}_checkpoints_cached", warm, "s", 1.0)]


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


#: the benchmarks :func:`bench` runs, in order (add new ones here)
BENCHMARKS: list[Callable[[], list[dict]]] = [bench_one_checkpoint, bench_forward, bench_run]


def bench() -> list[dict]:
    """Run every benchmark of :data:`BENCHMARKS`; rows {"name", "value", "unit", "target", "ok"}."""
    return [r for fn in BENCHMARKS for r in fn()]


def main() -> None:
    for r in bench():
        verdict = "" if r["ok"] is None else ("ok" if r["ok"] else "SLOW")
        target = "" if r["target"] is None else f"(target <= {r['target']:g} {r['unit']})"
        print(f"{r['name']:45s} {r['value']:10.2f} {r['unit']:3s} {target:24s} {verdict}")



# ---------------------------------------------------------------- Fourier neuron analysis (probes/fourier.py)
def neuron_fve_loop(acts: torch.Tensor, p: int) -> torch.Tensor:
    """Reference implementation of :func:`probes.fourier.neuron_fve`, written the straightforward way
    (as in Nanda et al.'s notebook): for each neuron, the full 2D transform basis · f · basisᵀ, then for each
    frequency k the sum of its 3×3 block {const, cos k, sin k}² minus (const, const). Kept for the benchmark."""
    from probes.fourier import fourier_basis, n_freqs

    basis, m = fourier_basis(p, acts.dtype), acts.shape[-1]
    out = torch.zeros(m, n_freqs(p) + 1, dtype=acts.dtype)
    for n in range(m):
        f = acts[:, n].reshape(p, p)
        f = f - f.mean()
        spec = (basis @ f @ basis.T).pow(2)
        total = spec.sum()
        if total <= 0:
            continue
        for k in range(1, n_freqs(p) + 1):
            rows = [0, 2 * k - 1] + ([2 * k] if 2 * k < p else [])
            out[n, k] = (spec[rows][:, rows].sum() - spec[0, 0]) / total
    return out


def bench_neuron_fve(repeats: int = 5) -> list[dict]:
    """Per-neuron Python loop (:func:`neuron_fve_loop`) vs the vectorized :func:`probes.fourier.neuron_fve` on the
    MLP activations of a random ``nanda`` model over the whole grid; rows: both times (best of ``repeats``;
    the loop once), their ratio, and the largest difference between the two results."""
    from probes.fourier import neuron_fve

    cfg = preset("nanda")
    model, task = cfg.build_model().eval(), cfg.task()
    with torch.no_grad():
        _, cache = model.run_with_cache(task.inputs)
    acts, p = cache["post", cfg.n_layers - 1][:, -1], task.p
    fast = neuron_fve(acts, p)  # warm-up (basis and index caches)
    vec = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fast = neuron_fve(acts, p)
        vec.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    slow = neuron_fve_loop(acts, p)
    loop = time.perf_counter() - t0
    return [row("neuron_fve_vectorized_nanda", 1000 * min(vec), "ms", None),
            row("neuron_fve_loop_nanda", 1000 * loop, "ms", None),
            row("neuron_fve_loop_over_vectorized", loop / min(vec), "x", None),
            row("neuron_fve_max_abs_diff", float((fast - slow).abs().max()), "", 1e-4)]


BENCHMARKS.append(bench_neuron_fve)


if __name__ == "__main__":
    main()
