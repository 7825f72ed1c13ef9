"""What every benchmark section shares: result rows, the table and JSON report, timing, and a
synthetic run (checkpoints written without training).

A row is ``{"name", "value", "unit", "target", "ok"}`` (sections may add keys, e.g. ``median``);
``target`` is text ("≥ 5", "5000–25000"), a number (an upper bound) or None, ``ok`` True, False or None.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from interp import Run, TrainConfig, checkpoint_steps
from interp.metrics import METRIC_COLUMNS


# ------------------------------------------------------------------ rows and the report
def row(name: str, value, unit: str, target: str | float | None = None, ok: bool | None = None, **extra) -> dict:
    return {"name": name, "value": value, "unit": unit, "target": target, "ok": ok, **extra}


def at_most(name: str, value: float, unit: str, limit: float, **extra) -> dict:
    """A row whose target is an upper bound: ok when ``value <= limit``."""
    return row(name, value, unit, limit, bool(value <= limit), **extra)


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _fmt(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else (f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}")
    return str(v)


def _target(t) -> str:
    return "" if t is None else (f"≤ {t:g}" if isinstance(t, int | float) else str(t))


def print_table(rows: list[dict]) -> None:
    w = max(len(r["name"]) for r in rows)
    print(f"{'benchmark':<{w}}  {'value':>10}  {'unit':<8}  {'target':<12}  ok")
    for r in rows:
        ok = {True: "yes", False: "NO", None: ""}[r.get("ok")]
        print(f"{r['name']:<{w}}  {_fmt(r['value']):>10}  {r['unit']:<8}  {_target(r.get('target')):<12}  {ok}")


def write_report(path: Path, meta: dict, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


# ------------------------------------------------------------------ the synthetic run
def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def grokking_drift(cfg: TrainConfig) -> Callable[[int], tuple[float, float]]:
    """The default weight trajectory: the initial weights decay as exp(-step / n_steps) while the
    weights move along a fixed random direction, along a sigmoid centred on step 0.3 · n_steps."""
    n, grok = cfg.n_steps, int(0.3 * cfg.n_steps)
    return lambda step: (math.exp(-step / n), 0.7 * float(_sigmoid((step - grok) / (0.05 * n))))


def grokking_metrics(n_steps: int, grok: int, eval_every: int = 100) -> pd.DataFrame:
    """A metrics table with one row per step: train loss falls at once, test accuracy rises at ``grok``."""
    s = np.arange(n_steps + 1, dtype=float)
    rise = _sigmoid((s - grok) / (0.05 * n_steps))
    fall = np.exp(-s / (0.01 * n_steps))
    test_loss = 4.7 + 8 * (1 - fall) * (1 - rise) - 4.7 * rise + 1e-4
    tested = (s % eval_every == 0) | (s == n_steps)
    df = pd.DataFrame({"step": s.astype(np.int64), "train_loss": 4.7 * fall + 1e-7 + 1e-3 * (1 - rise),
                       "train_acc": np.minimum(1.0, 1 - np.exp(-s / (0.02 * n_steps))),
                       "test_loss": np.where(tested, test_loss, np.nan),
                       "test_acc": np.where(tested, 0.01 + 0.99 * rise, np.nan),
                       "lr": 1e-3, "weight_norm": 30 + 10 * np.exp(-s / (0.3 * n_steps)) - 8 * rise,
                       "grad_norm": 0.3 * np.exp(-s / (0.2 * n_steps)) + 1e-4, "wall_time": s * 0.01})
    return df[METRIC_COLUMNS]


def synthetic_run(cfg: TrainConfig, steps: Sequence[int], path: str | Path,
                  drift: Callable[[int], tuple[float, float]] | None = None, seed: int = 0) -> Run:
    """A complete run directory of ``cfg``'s model, checkpoints at ``steps``, written without training.

    The weights at a step are ``θ₀ · decay + amount · δ`` with ``(decay, amount) = drift(step)`` (default:
    :func:`grokking_drift`), θ₀ the initial weights and δ a fixed Gaussian direction scaled per tensor by
    the tensor's standard deviation. The metrics table is :func:`grokking_metrics`."""
    drift = drift or grokking_drift(cfg)
    model = cfg.build_model()
    run = Run.create(path, {
        "name": Path(path).name, "config": cfg.to_dict(), "status": "complete", "synthetic": True,
        "split": {"data_seed": cfg.data_seed, "frac_train": cfg.frac_train,
                  "train_idx": cfg.task().train_idx.tolist()},
        "model": {"params": model.param_count()}, "checkpoint_schedule": checkpoint_steps(cfg),
    })
    theta0 = model.state_dict()
    gen = torch.Generator().manual_seed(seed)
    delta = {k: torch.randn(v.shape, generator=gen) * v.std().nan_to_num(1.0).clamp_min(1e-3)
             for k, v in theta0.items()}
    for step in sorted(steps):
        decay, amount = drift(step)
        run.save_checkpoint(step, {k: v * decay + amount * delta[k] for k, v in theta0.items()}, {})
    run.write_metrics(grokking_metrics(cfg.n_steps, int(0.3 * cfg.n_steps)))
    run.update_meta(final_step=cfg.n_steps)
    return run
