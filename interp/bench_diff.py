"""Benchmark of checkpoint diff reports on the ``nanda`` model (p = 113, d_mlp = 512).

    python -m interp.bench_diff        # prints one row per measurement

Two checkpoints are written through ``Run.save_checkpoint`` into a temporary run: the model at its
initialisation and a copy with every parameter perturbed by 10% Gaussian noise. The time counted is
the whole report: loading both checkpoints, probes, weights, spectra, CKA, then rendering HTML,
Markdown and JSON. Target: ≤ 5 s on 2 CPU cores.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from interp.store import Run
from interp.train import checkpoint_steps, preset

TARGET_S = 5.0
NOISE = 0.1


def make_run(path: Path, seed: int = 0) -> Run:
    """A ``nanda``-preset run with checkpoints at steps 0 (initialisation) and 1 (perturbed copy)."""
    cfg = preset("nanda")
    task = cfg.task()
    run = Run.create(path, {"name": "bench-diff", "config": cfg.to_dict(), "status": "complete",
                            "split": {"data_seed": cfg.data_seed, "frac_train": cfg.frac_train,
                                      "train_idx": task.train_idx.tolist()},
                            "checkpoint_schedule": checkpoint_steps(cfg)})
    sd = cfg.build_model().state_dict()
    gen = torch.Generator().manual_seed(seed)
    perturbed = {k: v + NOISE * v.std().nan_to_num(1.0) * torch.randn(v.shape, generator=gen, dtype=v.dtype)
                 for k, v in sd.items()}
    run.save_checkpoint(0, sd, {})
    run.save_checkpoint(1, perturbed, {})
    return run


def bench(threads: int = 2) -> list[dict]:
    """Rows {"name", "value", "unit", "target", "ok"}: wall and CPU time of one full report (best of 3,
    after a warm-up that pays one-off import and allocation costs), and of its stages.

    The CPU time (``time.process_time``, all threads) does not count waiting for a core, so on a shared
    machine it shows what the report costs when the wall time is inflated by other processes."""
    from interp.diff import compare

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        compare((run, 0), (run, 1)).to_html()  # warm-up: imports, Fourier-basis caches
        best: dict[str, float] = {}
        for _ in range(3):
            c0, t0 = time.process_time(), time.perf_counter()
            report = compare((run, 0), (run, 1))
            t1 = time.perf_counter()
            page = report.to_html()
            t2 = time.perf_counter()
            report.to_markdown()
            report.to_json()
            c3, t3 = time.process_time(), time.perf_counter()
            for name, value in (("compare", t1 - t0), ("html", t2 - t1), ("markdown+json", t3 - t2),
                                ("total", t3 - t0), ("total_cpu", c3 - c0)):
                best[name] = min(best.get(name, float("inf")), value)
    row = lambda name, value, unit="s", target=None, ok=None: {
        "name": f"diff.nanda.{name}", "value": value, "unit": unit, "target": target, "ok": ok}
    return [
        row("report_s", round(best["total"], 3), target=f"<= {TARGET_S}", ok=best["total"] <= TARGET_S),
        row("report_cpu_s", round(best["total_cpu"], 3)),
        row("compare_s", round(best["compare"], 3)),
        row("html_s", round(best["html"], 3)),
        row("markdown_json_s", round(best["markdown+json"], 3)),
        row("html_bytes", len(page.encode()), unit="bytes"),
        row("threads", threads, unit=""),
    ]


if __name__ == "__main__":
    import sys

    for row in bench(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        print(f"{row['name']:<28} {row['value']:>12} {row['unit']:<6} target {row['target']}  ok {row['ok']}")
