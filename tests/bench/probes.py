"""Probes, on the ``nanda`` model (p = 113, d_mlp = 512):

    bench_one_checkpoint   all default probes on one checkpoint of a random model (median), and each one's share
    bench_forward          the probes' shared forward (readout_cache) against run_with_cache
    bench_run              runner overhead per checkpoint, probes.run over a synthetic run of 300 checkpoints,
                           and a cached re-run
    bench_neuron_fve       vectorized per-neuron Fourier analysis against a per-neuron loop kept here
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

import probes
from interp import checkpoint_steps, preset
from probes.fourier import fourier_basis, n_freqs, neuron_fve
from probes.runner import applicable, measure_context, resolve
from tests.bench.common import at_most, row, synthetic_run, timed

ONE_CHECKPOINT_TARGET_MS = 100.0
RUN_TARGET_S = 60.0  # for 300 checkpoints
RUNNER_OVERHEAD_TARGET_MS = 20.0  # per checkpoint: 300 checkpoints -> 6 s of the 60 s budget


def time_default_probes(model, task, repeats: int) -> list[dict[str, float]]:
    """Wall-clock seconds of all default probes that apply to ``task`` (as ``probes.run`` picks them: the
    sequence-task probes are skipped on a grid task), ``repeats`` times, each on a fresh context: per repeat
    ``{"total", "forward", <probe>...}``. The forward (``ctx.cache``) is timed on its own; probes run in
    registry order, so a memoized quantity is charged to the first probe that needs it."""
    specs, out = applicable(resolve(None), task, bool(model.cfg.attn_only)), []
    for _ in range(repeats):
        ctx = probes.ProbeContext(model=model, task=task)
        t0 = time.perf_counter()
        times = {"forward": timed(lambda c=ctx: c.cache)}
        for spec in specs:
            times[spec.name] = timed(lambda c=ctx, s=spec: measure_context(c, [s]))
        out.append({"total": time.perf_counter() - t0, **times})
    return out


def bench_one_checkpoint(repeats: int = 7) -> list[dict]:
    cfg = preset("nanda")
    model, task = cfg.build_model().eval(), cfg.task()
    time_default_probes(model, task, 1)  # warm-up: caches of bases and index tables
    runs = time_default_probes(model, task, repeats)
    medians = {key: 1000 * statistics.median(r[key] for r in runs) for key in runs[0]}
    rows = [at_most("one_checkpoint_nanda", medians.pop("total"), "ms", ONE_CHECKPOINT_TARGET_MS)]
    return rows + [row(f"one_checkpoint_nanda.{key}", value, "ms") for key, value in medians.items()]


def bench_forward(repeats: int = 7) -> list[dict]:
    """Median of ``repeats``, interleaved, after one warm-up round."""
    cfg = preset("nanda")
    model, x = cfg.build_model().eval(), cfg.task().inputs
    readout, full = [], []
    with torch.no_grad():
        for _ in range(repeats + 1):
            readout.append(timed(lambda: model.readout_cache(x)))
            full.append(timed(lambda: model.run_with_cache(x)))
    r, f = statistics.median(readout[1:]), statistics.median(full[1:])
    return [row("forward_readout_cache_nanda", 1000 * r, "ms"),
            row("forward_run_with_cache_nanda", 1000 * f, "ms"),
            row("forward_run_with_cache_over_readout_cache", f / r, "x")]


def bench_run(n_checkpoints: int = 300) -> list[dict]:
    """probes.run over a synthetic run: first ``progress.weights`` alone (no forward pass, so its time is
    the runner's own overhead: read, verify and load each checkpoint, write the cache), then every
    default probe (cold cache), then again with everything cached."""
    cfg = preset("nanda")
    steps = checkpoint_steps(cfg)[:n_checkpoints]
    n = len(steps)
    with tempfile.TemporaryDirectory(prefix="grokscope_bench_") as tmp:
        run = synthetic_run(cfg, steps, Path(tmp) / "nanda_synthetic")
        overhead = timed(lambda: probes.run(run, names=["progress.weights"], progress=False))
        cold = timed(lambda: probes.run(run, progress=False))
        warm = timed(lambda: probes.run(run, progress=False))
    return [at_most("runner_overhead_per_checkpoint_nanda", 1000 * overhead / n, "ms", RUNNER_OVERHEAD_TARGET_MS),
            at_most(f"run_{n}_checkpoints_nanda", cold, "s", RUN_TARGET_S * n / 300),
            row(f"run_{n}_checkpoints_nanda_per_checkpoint", 1000 * cold / n, "ms"),
            at_most(f"rerun_{n}_checkpoints_cached", warm, "s", 1.0)]


def neuron_fve_loop(acts: torch.Tensor, p: int) -> torch.Tensor:
    """Reference for :func:`probes.fourier.neuron_fve`, written the straightforward way (as in Nanda et al.'s
    notebook): for each neuron, the full 2D transform basis · f · basisᵀ, then for each frequency k the sum of
    its 3×3 block {const, cos k, sin k}² minus (const, const)."""
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
            idx = [0, 2 * k - 1] + ([2 * k] if 2 * k < p else [])
            out[n, k] = (spec[idx][:, idx].sum() - spec[0, 0]) / total
    return out


def bench_neuron_fve(repeats: int = 5) -> list[dict]:
    """On the MLP activations of a random model over the whole grid: both times (best of ``repeats``;
    the loop once), their ratio, and the largest difference between the two results."""
    cfg = preset("nanda")
    model, task = cfg.build_model().eval(), cfg.task()
    with torch.no_grad():
        _, cache = model.run_with_cache(task.inputs)
    acts, p = cache["post", cfg.n_layers - 1][:, -1], task.p
    fast = neuron_fve(acts, p)  # warm-up (basis and index caches)
    vec = min(timed(lambda: neuron_fve(acts, p)) for _ in range(repeats))
    t0 = time.perf_counter()
    slow = neuron_fve_loop(acts, p)
    loop = time.perf_counter() - t0
    return [row("neuron_fve_vectorized_nanda", 1000 * vec, "ms"),
            row("neuron_fve_loop_nanda", 1000 * loop, "ms"),
            row("neuron_fve_loop_over_vectorized", loop / vec, "x"),
            at_most("neuron_fve_max_abs_diff", float((fast - slow).abs().max()), "", 1e-4)]


def bench(quick: bool) -> list[dict]:
    return [r for fn in (bench_one_checkpoint, bench_forward, bench_run, bench_neuron_fve) for r in fn()]
