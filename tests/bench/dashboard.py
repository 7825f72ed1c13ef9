"""Dashboard responsiveness: page switches and step changes on a synthetic 300-checkpoint ``nanda`` run.

What is measured: the server-side time of one rerun of the dashboard, through Streamlit's ``AppTest``
(the full script, every page element serialised to its protocol message), with the run's probe results
computed and the caches warm from a first visit of every page. Browser rendering and the websocket round
trip are not included. The run (checkpoints evenly spaced over the schedule, every default probe computed)
is built once and kept under ``bench-results/dashboard/``. ``value`` is the worst of the repeats (the
rows also give ``median`` and ``n``); the first-load row is informational (no target).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

import apps
from apps import data
from interp import Run, preset
from tests.bench.common import at_most, row, synthetic_run

TARGET_S = 1.0
DASHBOARD = Path(apps.__file__).with_name("dashboard.py")
PAGES = ["page_overview.py", "page_fourier.py", "page_progress.py", "page_attention.py", "page_diff.py",
         "page_compare.py"]  # not the sweeps page: a callable page, which AppTest cannot switch to


def prepare(workdir: str | Path, preset_name: str, n_checkpoints: int) -> Run:
    """The benchmark run under ``workdir`` with every probe computed (built on first use)."""
    path = Path(workdir) / f"synthetic_{preset_name}_{n_checkpoints}"
    if (path / "run.json").exists():
        run = Run.open(path)
    else:
        print(f"building a synthetic {preset_name} run with {n_checkpoints} checkpoints in {path}", flush=True)
        cfg = preset(preset_name)
        steps = np.unique(np.linspace(0, cfg.n_steps, n_checkpoints).round().astype(int)).tolist()
        run = synthetic_run(cfg, steps, path)
    t0 = time.perf_counter()
    if n := data.compute_probes(str(path)):
        print(f"computed probes for {n} checkpoints in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def _stats(name: str, values: list[float], target: float | None = TARGET_S) -> dict:
    worst, extra = round(max(values), 3), {"median": round(float(np.median(values)), 3), "n": len(values)}
    return row(name, worst, "s", **extra) if target is None else at_most(name, worst, "s", target, **extra)


def time_dashboard(repeats: int = 3) -> list[dict]:
    """Rows for a first load, warm page switches and step changes (see the module doc), on the runs
    that ``GROKSCOPE_RUNS`` names."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(DASHBOARD), default_timeout=600)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        if at.exception:
            raise RuntimeError(f"the dashboard raised: {at.exception[0].value}")
        return time.perf_counter() - t0

    def set_step(s) -> float:
        return timed(lambda: at.select_slider(key="step").set_value(s).run())

    rows = [_stats("first load, Overview (cold caches, imports)", [timed(at.run)], None)]
    for page in PAGES:  # the first visit of each page warms its caches
        timed(lambda p=page: at.switch_page(p).run())
    switch: dict[str, list[float]] = {p: [] for p in PAGES}
    for _ in range(repeats):
        for page in PAGES:
            switch[page].append(timed(lambda p=page: at.switch_page(p).run()))
    rows += [_stats(f"page switch to {p[5:-3]} (warm)", v) for p, v in switch.items()]
    steps = list(at.select_slider(key="step").options)
    unvisited = steps[1:-1][:: max(1, (len(steps) - 2) // (repeats * len(PAGES) + 1))]
    for n, page in enumerate(PAGES):
        at.switch_page(page).run()
        chosen = unvisited[n * repeats:(n + 1) * repeats]
        rows.append(_stats(f"step change on {page[5:-3]} (new step)", [set_step(s) for s in chosen]))
        rows.append(_stats(f"step change on {page[5:-3]} (visited step)", [set_step(s) for s in chosen]))
    return rows


def bench(quick: bool, preset_name: str = "nanda", n_checkpoints: int = 300,
          workdir: str | Path = "bench-results/dashboard", repeats: int = 3) -> list[dict]:
    """Build (or reuse) the synthetic run, then time the dashboard on it."""
    run = prepare(workdir, preset_name, n_checkpoints)
    old = os.environ.get("GROKSCOPE_RUNS")
    os.environ["GROKSCOPE_RUNS"] = str(run.path)
    data.clear_all()
    try:
        rows = time_dashboard(repeats)
    finally:
        if old is None:
            os.environ.pop("GROKSCOPE_RUNS", None)
        else:
            os.environ["GROKSCOPE_RUNS"] = old
    for r in rows:
        r["name"] = f"{r['name']} [{preset_name}, {len(run.steps)} checkpoints]"
    return rows
