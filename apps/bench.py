"""Dashboard responsiveness benchmark: page switches and step changes on a 300-checkpoint run.

    python -m apps.bench [--preset nanda] [--checkpoints 300] [--workdir bench-results/dashboard]

What is measured: the server-side time of one rerun of the dashboard, through Streamlit's
``AppTest`` (the full script, every page element serialised to its protocol message), with the
run's probe results computed and the caches warm from a first visit of every page. Browser
rendering and the websocket round trip are not included.

The run is synthetic: the model of ``preset`` (default ``nanda``: p = 113, d_mlp 512) saved at
``checkpoints`` evenly spaced steps of its schedule, weights drifting from their initialisation
along a sigmoid, and a metrics table with one row per step; then every default probe is computed
(once; reused from ``workdir`` on later runs). Rows: ``{"name", "value", "unit", "target", "ok"}``,
``value`` the worst of the repeats; the first-load row is informational (target None).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from interp.store import METRIC_COLUMNS, Run
from interp.train import checkpoint_steps, preset

TARGET_S = 1.0
DASHBOARD = Path(__file__).with_name("dashboard.py")
PAGES = ["page_overview.py", "page_fourier.py", "page_progress.py", "page_attention.py", "page_diff.py",
         "page_compare.py"]


# ------------------------------------------------------------------ the synthetic run
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def synthetic_metrics(n_steps: int, grok: int, eval_every: int = 100) -> pd.DataFrame:
    s = np.arange(n_steps + 1, dtype=float)
    rise = _sigmoid((s - grok) / (0.05 * n_steps))
    train_loss = 4.7 * np.exp(-s / (0.01 * n_steps)) + 1e-7 + 1e-3 * (1 - rise)
    test_loss = 4.7 + 8 * (1 - np.exp(-s / (0.01 * n_steps))) * (1 - rise) - 4.7 * rise + 1e-4
    test_acc = 0.01 + 0.99 * rise
    tested = (s % eval_every == 0) | (s == n_steps)
    df = pd.DataFrame({"step": s.astype(np.int64), "train_loss": train_loss,
                       "train_acc": np.minimum(1.0, 1 - np.exp(-s / (0.02 * n_steps))),
                       "test_loss": np.where(tested, test_loss, np.nan), "test_acc": np.where(tested, test_acc, np.nan),
                       "lr": 1e-3, "weight_norm": 30 + 10 * np.exp(-s / (0.3 * n_steps)) - 8 * rise,
                       "grad_norm": 0.3 * np.exp(-s / (0.2 * n_steps)) + 1e-4, "wall_time": s * 0.01})
    return df[METRIC_COLUMNS]


def synthetic_run(path: str | Path, preset_name: str = "nanda", n_checkpoints: int = 300, seed: int = 0) -> Run:
    """A complete run directory of ``preset_name``'s model with ``n_checkpoints`` checkpoints (see module doc)."""
    cfg = preset(preset_name)
    task = cfg.task()
    steps = np.unique(np.linspace(0, cfg.n_steps, n_checkpoints).round().astype(int)).tolist()
    run = Run.create(path, {
        "name": Path(path).name, "config": cfg.to_dict(), "status": "complete", "synthetic": True,
        "split": {"data_seed": cfg.data_seed, "frac_train": cfg.frac_train, "train_idx": task.train_idx.tolist()},
        "model": {"params": cfg.build_model().param_count()}, "checkpoint_schedule": checkpoint_steps(cfg),
    })
    theta0 = cfg.build_model().state_dict()
    gen = torch.Generator().manual_seed(seed)
    delta = {k: torch.randn(v.shape, generator=gen) * v.std().clamp_min(1e-3) for k, v in theta0.items()}
    grok = int(0.3 * cfg.n_steps)
    for step in steps:
        u = float(_sigmoid(np.array((step - grok) / (0.05 * cfg.n_steps))))
        decay = math.exp(-step / cfg.n_steps)
        sd = {k: v * decay + 0.7 * u * delta[k] for k, v in theta0.items()}
        run.save_checkpoint(step, sd, {"train_loss": 0.0})
    run.write_metrics(synthetic_metrics(cfg.n_steps, grok))
    run.update_meta(final_step=cfg.n_steps)
    return run


def prepare(workdir: str | Path, preset_name: str, n_checkpoints: int, log=print) -> Run:
    """The benchmark run under ``workdir`` with every probe computed (built on first use)."""
    from apps import data

    path = Path(workdir) / f"synthetic_{preset_name}_{n_checkpoints}"
    if (path / "run.json").exists():
        run = Run.open(path)
    else:
        log(f"building a synthetic {preset_name} run with {n_checkpoints} checkpoints in {path}")
        run = synthetic_run(path, preset_name, n_checkpoints)
    t0 = time.perf_counter()
    n = data.compute_probes(str(path), lambda d, t: log(f"  probes: {d}/{t} checkpoints "
                                                        f"({time.perf_counter() - t0:.0f} s)"))
    if n:
        log(f"computed probes for {n} checkpoints in {time.perf_counter() - t0:.0f} s")
    return run


# ------------------------------------------------------------------ timing
def _timed(at, fn) -> float:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the dashboard raised: {at.exception[0].value}")
    return dt


def _row(name: str, values: list[float], target: float | None = TARGET_S) -> dict:
    """``value`` is the worst of the repeats; ``median`` and ``n`` are extra keys."""
    worst = max(values)
    return {"name": name, "value": round(worst, 3), "unit": "s", "target": target,
            "ok": None if target is None else bool(worst <= target), "median": round(float(np.median(values)), 3),
            "n": len(values)}


def time_dashboard(run_path: str | Path, repeats: int = 3) -> list[dict]:
    """Rows for a first load, warm page switches and step changes (see the module doc)."""
    from streamlit.testing.v1 import AppTest

    from apps import data

    old = os.environ.get("GROKSCOPE_RUNS")
    os.environ["GROKSCOPE_RUNS"] = str(run_path)
    data.clear_all()
    pages = PAGES  # the sweeps page is a callable page, which AppTest cannot switch to
    try:
        at = AppTest.from_file(str(DASHBOARD), default_timeout=600)
        rows = [_row("first load, Overview (cold caches, imports)", [_timed(at, at.run)], None)]
        for page in pages:  # first visit of each page warms its caches
            _timed(at, lambda p=page: at.switch_page(p).run())
        switch: dict[str, list[float]] = {p: [] for p in pages}
        for _ in range(repeats):
            for page in pages:
                switch[page].append(_timed(at, lambda p=page: at.switch_page(p).run()))
        rows += [_row(f"page switch to {p[5:-3]} (warm)", v) for p, v in switch.items()]
        steps = list(at.select_slider(key="step").options)
        unvisited = steps[1:-1][:: max(1, (len(steps) - 2) // (repeats * len(pages) + 1))]
        for n, page in enumerate(pages):
            at.switch_page(page).run()
            chosen = unvisited[n * repeats:(n + 1) * repeats]
            new = [_timed(at, lambda s=s: at.select_slider(key="step").set_value(s).run()) for s in chosen]
            rows.append(_row(f"step change on {page[5:-3]} (new step)", new))
            back = [_timed(at, lambda s=s: at.select_slider(key="step").set_value(s).run()) for s in chosen]
            rows.append(_row(f"step change on {page[5:-3]} (visited step)", back))
        return rows
    finally:
        if old is None:
            os.environ.pop("GROKSCOPE_RUNS", None)
        else:
            os.environ["GROKSCOPE_RUNS"] = old


def bench(preset_name: str = "nanda", n_checkpoints: int = 300, workdir: str | Path = "bench-results/dashboard",
          repeats: int = 3, log=print) -> list[dict]:
    """Build (or reuse) the synthetic run, then time the dashboard on it."""
    torch.set_num_threads(1)
    run = prepare(workdir, preset_name, n_checkpoints, log)
    rows = time_dashboard(run.path, repeats)
    n = len(run.steps)
    for r in rows:
        r["name"] = f"{r['name']} [{preset_name}, {n} checkpoints]"
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="nanda")
    ap.add_argument("--checkpoints", type=int, default=300)
    ap.add_argument("--workdir", default="bench-results/dashboard")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    rows = bench(args.preset, args.checkpoints, args.workdir, args.repeats,
                 log=lambda m: print(m, file=sys.stderr, flush=True))
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        target = "" if r["target"] is None else f"(target ≤ {r['target']} {r['unit']}) {'ok' if r['ok'] else 'SLOW'}"
        print(f"{r['name']:<{width}}  max {r['value']:6.3f} {r['unit']}  median {r['median']:6.3f} {r['unit']}  "
              f"{target}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
