"""Sweep outcome plots: phase diagrams, steps to grok, and the critical training fraction.

(Not to be confused with :mod:`probes.phases`, the training phases of one run.) ``grokscope sweep
plot`` and the dashboard's Sweeps page draw these. Everything here reads a sweep's summary table
(:func:`probes.sweep_summary.summarize`): one row per
member with its swept parameters, ``memorized_step``, ``grokked_step`` and ``outcome``.

* **Outcome** of a run (:func:`interp.sweep.classify`, after Liu et al. 2022,
  arXiv:2205.10343): comprehension (test acc ≥ 99% within ``delay_factor`` × the step train
  acc reached 100%), grokking (later), memorization (train 100%, test never ≥ 99%), no
  learning (neither). A cell of the phase diagram shows the majority over its seeds.
* **Critical training fraction** f_c(p): for each modulus p, the fractions are ordered and
  the *generalisation rate* r(f) is the share of a cell's runs that reached test acc ≥ 99%.
  f_c is the midpoint between the largest fraction with r < ½ and the smallest fraction f*
  such that r ≥ ½ at f* and at every larger swept fraction. Where even the smallest swept
  fraction generalises (or the largest does not), f_c is censored (only a bound) and left
  out of the fit.
* **Fit**: Tian 2025 (Li2, "Provable Scaling Laws of Feature Emergence from Learning
  Dynamics of Grokking", arXiv:2509.21519) predicts that about M log M training pairs
  suffice for group arithmetic on M elements, i.e. a critical fraction
  f_c(p) = n/p² ≈ c·ln(p)/p. With g = ln(p)/p, least squares gives the closed form
  c = Σ f_c·g / Σ g².
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.sweep import (
    COMPREHENSION,
    DELAY_FACTOR,
    GROKKING,
    MEMORIZATION,
    NO_LEARNING,
    OUTCOMES,
    REPLICATE_KEYS,
    Sweep,
    format_value,
)
from probes.sweep_summary import summarize

OUTCOME_LABELS = {COMPREHENSION: "comprehension (no delay)", GROKKING: "grokking",
                  MEMORIZATION: "memorization only", NO_LEARNING: "no learning"}
OUTCOME_COLORS = {COMPREHENSION: "#2ca02c", GROKKING: "#1f77b4", MEMORIZATION: "#ff7f0e", NO_LEARNING: "#7f7f7f"}
AXIS_TITLES = {"frac_train": "training fraction", "weight_decay": "weight decay", "p": "modulus p",
               "lr": "learning rate", "d_model": "d_model", "d_mlp": "d_mlp", "n_heads": "attention heads",
               "n_layers": "layers", "seed": "seed", "data_seed": "data seed", "grokfast_lamb": "Grokfast λ",
               "batch_size": "batch size", "op": "operation", "n_steps": "training steps",
               "fork_step": "fork step", "intervene": "intervention"}


def axis_title(key: str) -> str:
    return AXIS_TITLES.get(key, key)


def varied(grid: dict[str, list[Any]]) -> list[str]:
    """Swept parameters with more than one value, replicate keys (seeds) excluded, in grid order."""
    return [k for k, v in grid.items() if len(v) > 1 and k not in REPLICATE_KEYS]


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _axis_type(values: Sequence[Any]) -> str:
    """``log`` for positive numbers spanning a decade or more, ``category`` for non-numbers."""
    if not _numeric(values):
        return "category"
    vals = [float(v) for v in values if v is not None]
    return "log" if vals and min(vals) > 0 and max(vals) / min(vals) >= 10 else "linear"


def _complete(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["outcome"].isin(OUTCOMES)]


def majority(outcomes: Sequence[str]) -> str:
    """The most common outcome; ties go to the earlier one in :data:`interp.sweep.OUTCOMES`."""
    counts = Counter(outcomes)
    return max(OUTCOMES, key=lambda o: (counts[o], -OUTCOMES.index(o)))


def _label(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in zip(keys, values)) or "all"


# ====================================================================== phase diagram
def phase_axes(grid: dict[str, list[Any]], x: str | None = None, y: str | None = None) -> tuple[str, str] | None:
    """The two parameters of the phase diagram: the given ones, else frac_train and weight_decay
    when swept, else the first two swept parameters."""
    keys = varied(grid)
    for k in (x, y):
        if k is not None and k not in grid:
            from interp.errors import ConfigError

            raise ConfigError(f"{k}: not a swept parameter (swept: {', '.join(grid)})")
    first = ("fork_step", "frac_train", "weight_decay")  # fork sweeps: the fork step on x
    pref = [k for k in first if k in keys] + [k for k in keys if k not in first]
    x = x or next((k for k in pref if k != y), None)
    y = y or next((k for k in pref if k != x), None)
    return (x, y) if x and y else None


def phase_table(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """One row per (x, y) cell: majority outcome, number of runs and the count of each outcome."""
    rows = []
    for (xv, yv), cell in _complete(df).groupby([x, y], sort=True):
        counts = Counter(cell["outcome"])
        rows.append({x: xv, y: yv, "outcome": majority(list(cell["outcome"])), "n": len(cell),
                     **{o: counts[o] for o in OUTCOMES}})
    return pd.DataFrame(rows, columns=[x, y, "outcome", "n", *OUTCOMES])


def fig_phase_diagram(df: pd.DataFrame, grid: dict[str, list[Any]], x: str | None = None,
                      y: str | None = None) -> go.Figure | None:
    """Cells of two swept parameters coloured by their majority outcome (None if fewer than two
    parameters vary). Other parameters and seeds are pooled into each cell's majority."""
    axes = phase_axes(grid, x, y)
    if axes is None:
        return None
    x, y = axes
    table = phase_table(df, x, y)
    pooled = [k for k in grid if k not in (x, y) and len(grid[k]) > 1]
    fig = go.Figure()
    for outcome in OUTCOMES:
        part = table[table["outcome"] == outcome]
        hover = [", ".join(f"{OUTCOME_LABELS[o]} {r[o]}" for o in OUTCOMES if r[o]) + f" (of {r['n']})"
                 for r in part.to_dict("records")]
        fig.add_trace(go.Scatter(
            x=part[x].tolist(), y=part[y].tolist(), mode="markers", name=OUTCOME_LABELS[outcome],
            marker={"symbol": "square", "size": 26, "color": OUTCOME_COLORS[outcome], "line": {"width": 0}},
            text=hover, hovertemplate=f"{axis_title(x)} %{{x}}<br>{axis_title(y)} %{{y}}<br>%{{text}}<extra></extra>",
        ))
    title = "Phase diagram (majority outcome" + (f" over {', '.join(pooled)})" if pooled else ")")
    fig.update_layout(title=title, legend_title_text="outcome", height=460)
    fig.update_xaxes(title_text=axis_title(x), type=_axis_type(grid[x]))
    fig.update_yaxes(title_text=axis_title(y), type=_axis_type(grid[y]))
    return fig


# ====================================================================== steps to grok
def _steps_x(grid: dict[str, list[Any]]) -> str | None:
    """The x axis of steps to grok: frac_train, else a fork sweep's fork step (swept over 2+ values)."""
    return next((k for k in ("frac_train", "fork_step") if len(grid.get(k, [])) > 1), None)


def steps_to_grok(df: pd.DataFrame, grid: dict[str, list[Any]]) -> pd.DataFrame:
    """Median / min / max ``grokked_step`` over the runs that grokked, per training fraction (fork
    sweeps: per fork step) and combination of the other varied parameters (``line``); n_grokked
    of n runs."""
    x = _steps_x(grid) or "frac_train"
    lines = [k for k in varied(grid) if k != x]
    rows = []
    for key, cell in _complete(df).groupby([*lines, x] if lines else [x], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        g = cell["grokked_step"].dropna().astype(float)
        rows.append({"line": _label(lines, key[:-1]), **dict(zip(lines, key[:-1])), x: key[-1],
                     "n": len(cell), "n_grokked": len(g), "median": g.median() if len(g) else math.nan,
                     "min": g.min() if len(g) else math.nan, "max": g.max() if len(g) else math.nan})
    return pd.DataFrame(rows, columns=["line", *lines, x, "n", "n_grokked", "median", "min", "max"])


def fig_steps_to_grok(df: pd.DataFrame, grid: dict[str, list[Any]]) -> go.Figure | None:
    """Steps until test acc ≥ 99% vs training fraction (fork sweeps: vs fork step; log y), one
    line per weight decay (per combination of the other varied parameters); None unless
    frac_train (or the fork step) is swept."""
    x = _steps_x(grid)
    if x is None:
        return None
    table = steps_to_grok(df, grid)
    fig = go.Figure()
    for line, part in table.groupby("line", sort=False):
        part = part[part["n_grokked"] > 0]
        fig.add_trace(go.Scatter(
            x=part[x], y=part["median"], mode="lines+markers", name=str(line),
            error_y={"type": "data", "symmetric": False, "array": part["max"] - part["median"],
                     "arrayminus": part["median"] - part["min"]},
            text=[f"{a} of {b} grokked" for a, b in zip(part["n_grokked"], part["n"])],
            hovertemplate=axis_title(x) + " %{x}<br>median step %{y}<br>%{text}<extra>%{fullData.name}</extra>",
        ))
    fig.update_layout(title="Steps to grok (test acc ≥ 99%; median over seeds, bars min–max)",
                      legend_title_text="line", height=460)
    fig.update_xaxes(title_text=axis_title(x), type=_axis_type(grid[x]))
    fig.update_yaxes(title_text="steps until test acc ≥ 99%", type="log")
    return fig


# ====================================================================== critical fraction
def fit_log_over_p(p: Sequence[float], f: Sequence[float]) -> dict[str, float]:
    """Least-squares fit f ≈ c·ln(p)/p (Tian 2025, arXiv:2509.21519): c = Σ f·g / Σ g², g = ln p / p.
    Also returns the RMS residual, R² (about the mean) and the number of points."""
    p, f = np.asarray(p, dtype=np.float64), np.asarray(f, dtype=np.float64)
    if len(p) == 0:
        return {"c": math.nan, "rms": math.nan, "r2": math.nan, "n": 0}
    g = np.log(p) / p
    c = float((f * g).sum() / (g * g).sum())
    res = f - c * g
    ss_tot = float(((f - f.mean()) ** 2).sum())
    return {"c": c, "rms": float(np.sqrt((res**2).mean())),
            "r2": 1 - float((res**2).sum()) / ss_tot if ss_tot > 0 else math.nan, "n": len(p)}


def critical_fractions(df: pd.DataFrame, grid: dict[str, list[Any]], rate: float = 0.5) -> pd.DataFrame:
    """f_c per p (and per combination of the other varied parameters, ``group``); see the module
    docstring. Columns: group, p, f_c, lo, hi, censored (``""``, ``"below"`` or ``"above"``)."""
    others = [k for k in varied(grid) if k not in ("p", "frac_train")]
    rows = []
    done = _complete(df)
    for key, part in done.groupby([*others, "p"], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        r = part.groupby("frac_train")["grokked_step"].apply(lambda s: s.notna().mean()).sort_index()
        fracs, ok = r.index.to_numpy(dtype=float), (r.to_numpy() >= rate)
        tail = np.flatnonzero(~ok)  # f* = first fraction after the last failing one
        j = int(tail[-1]) + 1 if len(tail) else 0
        row = {"group": _label(others, key[:-1]), **dict(zip(others, key[:-1])), "p": key[-1]}
        if j >= len(fracs):
            row.update(f_c=math.nan, lo=fracs[-1], hi=math.nan, censored="above")
        elif j == 0:
            row.update(f_c=fracs[0], lo=math.nan, hi=fracs[0], censored="below")
        else:
            row.update(f_c=(fracs[j - 1] + fracs[j]) / 2, lo=fracs[j - 1], hi=fracs[j], censored="")
        rows.append(row)
    return pd.DataFrame(rows, columns=["group", *others, "p", "f_c", "lo", "hi", "censored"])


def fig_critical_fraction(df: pd.DataFrame, grid: dict[str, list[Any]]
                          ) -> tuple[go.Figure, list[dict[str, Any]]] | None:
    """Measured f_c vs p with the fitted c·ln(p)/p per group, and the fits; None unless both p and
    frac_train are swept."""
    if len(grid.get("p", [])) < 2 or len(grid.get("frac_train", [])) < 2:
        return None
    table = critical_fractions(df, grid)
    fig, fits = go.Figure(), []
    ps = np.asarray(sorted(grid["p"]), dtype=float)
    dense = np.geomspace(ps.min(), ps.max(), 200)
    for i, (group, part) in enumerate(table.groupby("group", sort=False)):
        color = f"hsl({(i * 67) % 360},60%,40%)"
        good = part[part["censored"] == ""]
        fit = {"group": group, **fit_log_over_p(good["p"], good["f_c"])}
        fits.append(fit)
        fig.add_trace(go.Scatter(
            x=good["p"], y=good["f_c"], mode="markers", name=f"measured f_c ({group})", marker={"color": color},
            error_y={"type": "data", "symmetric": False, "array": good["hi"] - good["f_c"],
                     "arrayminus": good["f_c"] - good["lo"]},
            hovertemplate="p %{x}<br>f_c %{y:.3f}<extra></extra>"))
        cens = part[part["censored"] == "below"]
        if len(cens):
            fig.add_trace(go.Scatter(x=cens["p"], y=cens["hi"], mode="markers", name=f"f_c ≤ this ({group})",
                                     marker={"color": color, "symbol": "triangle-down-open", "size": 10}))
        if fit["n"]:
            fig.add_trace(go.Scatter(x=dense, y=fit["c"] * np.log(dense) / dense, mode="lines",
                                     name=f"fit c·ln(p)/p, c = {fit['c']:.3g} ({group})",
                                     line={"color": color, "dash": "dash"}))
    fig.update_layout(title="Critical training fraction vs p (fit c·ln p / p, Tian 2025)", height=460)
    fig.update_xaxes(title_text="modulus p", type=_axis_type(grid["p"]))
    f_all = table[["f_c", "lo", "hi"]].to_numpy(dtype=float).ravel()
    f_all = f_all[np.isfinite(f_all)]
    fig.update_yaxes(title_text="critical training fraction f_c",
                     type="log" if len(f_all) and f_all.min() > 0 and f_all.max() / f_all.min() >= 10 else "linear")
    return fig, fits


# ====================================================================== files
def write_figure(fig: go.Figure, path: Path) -> list[Path]:
    """Self-contained HTML, and PNG when kaleido is installed (and works)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    html = path.with_suffix(".html")
    fig.write_html(html, include_plotlyjs=True, full_html=True)
    out = [html]
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return out
    try:
        fig.write_image(path.with_suffix(".png"), width=900, height=500, scale=2)
        out.append(path.with_suffix(".png"))
    except Exception:  # kaleido present but unable to render (e.g. no browser): HTML is enough
        pass
    return out


def plot_sweep(path: str | os.PathLike, out: str | os.PathLike | None = None, delay_factor: float = DELAY_FACTOR,
               x: str | None = None, y: str | None = None) -> tuple[list[Path], list[str]]:
    """Write every plot that the sweep's grid allows; returns (files written, notes to print)."""
    sweep = Sweep.open(path)
    df = summarize(sweep.path, delay_factor=delay_factor)
    out = Path(out) if out is not None else sweep.path / "plots"
    written, notes = [], []
    fig = fig_steps_to_grok(df, sweep.grid)
    if fig is None:
        notes.append("steps-to-grok plot: needs frac_train (or a fork sweep's fork step) swept over two or more values")
    else:
        written += write_figure(fig, out / "steps_to_grok")
    fig = fig_phase_diagram(df, sweep.grid, x, y)
    if fig is None:
        notes.append("phase diagram: needs two swept parameters besides seeds")
    else:
        written += write_figure(fig, out / "phase_diagram")
    res = fig_critical_fraction(df, sweep.grid)
    if res is None:
        notes.append("critical fraction vs p: needs p and frac_train both swept")
    else:
        fig, fits = res
        written += write_figure(fig, out / "critical_fraction")
        (out / "critical_fraction.json").write_text(json.dumps({"fits": fits, "table": json.loads(
            critical_fractions(df, sweep.grid).to_json(orient="records"))}, indent=1))
        written.append(out / "critical_fraction.json")
        for f in fits:
            notes.append(f"critical fraction fit ({f['group']}): c = {f['c']:.4g} from {f['n']} points "
                         f"(f_c ≈ c·ln p / p; RMS residual {f['rms']:.3g})")
    if not any(p.suffix == ".png" for p in written) and written:
        notes.append("(PNG needs kaleido: pip install kaleido; wrote HTML only)")
    return written, notes
