"""Checkpoint diff reports on the ``nanda`` model (p = 113, d_mlp = 512).

Two checkpoints of a synthetic run: the model at its initialisation (step 0) and a copy with every
parameter perturbed by 10% Gaussian noise (step 1). The time counted is the whole report: loading both
checkpoints, probes, weights, spectra, CKA, then rendering HTML, Markdown and JSON. Target: ≤ 5 s."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from interp import preset
from tests.bench.common import at_most, row, synthetic_run

TARGET_S = 5.0
NOISE = 0.1


def bench(quick: bool) -> list[dict]:
    """Wall and CPU time of one full report and of its stages, best of 3 after a warm-up that pays
    one-off import and allocation costs. The CPU time (``time.process_time``, all threads) does not
    count waiting for a core, so it shows what the report costs when other processes inflate the wall time."""
    from apps.report import to_html, to_markdown
    from probes.diff import compare

    with tempfile.TemporaryDirectory() as tmp:
        run = synthetic_run(preset("nanda"), [0, 1], Path(tmp) / "run", drift=lambda step: (1.0, NOISE * step))
        to_html(compare((run, 0), (run, 1)))  # warm-up: imports, Fourier-basis caches
        best: dict[str, float] = {}
        for _ in range(3):
            c0, t0 = time.process_time(), time.perf_counter()
            report = compare((run, 0), (run, 1))
            t1 = time.perf_counter()
            page = to_html(report)
            t2 = time.perf_counter()
            to_markdown(report)
            report.to_json()
            c3, t3 = time.process_time(), time.perf_counter()
            for name, value in (("compare", t1 - t0), ("html", t2 - t1), ("markdown+json", t3 - t2),
                                ("total", t3 - t0), ("total_cpu", c3 - c0)):
                best[name] = min(best.get(name, float("inf")), value)
    name = "diff.nanda.{}".format
    return [
        at_most(name("report_s"), round(best["total"], 3), "s", TARGET_S),
        row(name("report_cpu_s"), round(best["total_cpu"], 3), "s"),
        row(name("compare_s"), round(best["compare"], 3), "s"),
        row(name("html_s"), round(best["html"], 3), "s"),
        row(name("markdown_json_s"), round(best["markdown+json"], 3), "s"),
        row(name("html_bytes"), len(page.encode()), "bytes"),
        row(name("threads"), torch.get_num_threads(), ""),
    ]
