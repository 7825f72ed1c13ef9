"""Compare runs: overlay one time series (a training metric or any probe scalar) of several runs,
aligned by training step. A run with forks (``interp.fork``) starts with its family selected —
the run, its parent, and their forks, on the parent's step axis — with each fork step marked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from apps import data, ui
from apps.state import Ctx, context

METRICS = {"train_loss": "train loss (nats)", "test_loss": "test loss (nats)", "train_acc": "train accuracy",
           "test_acc": "test accuracy", "weight_norm": "weight norm ‖θ‖₂", "grad_norm": "gradient norm ‖∇θ L‖₂",
           "lr": "learning rate"}
MAX_DEFAULT = 4


def series_options(paths: list[str]) -> list[str]:
    """``metric:<column>`` for the training metrics, then ``probe:<probe>/<name>`` for every probe
    scalar that at least one of the runs has."""
    opts = [f"metric:{m}" for m in METRICS]
    cols: set[str] = set()
    for path in paths:
        key = data.RunKey.of(path)
        cols.update(data.probe_scalars(path, key.probes).columns)
    return opts + [f"probe:{c}" for c in sorted(cols)]


def option_label(opt: str) -> str:
    kind, name = opt.split(":", 1)
    return METRICS[name] if kind == "metric" else f"{name} (probe)"


def series_of(path: str, opt: str) -> pd.Series | None:
    key = data.RunKey.of(path)
    kind, name = opt.split(":", 1)
    if kind == "metric":
        df = data.metric_series(path, key.metrics, name)
        return pd.Series(df["value"].to_numpy(), index=df["step"].to_numpy()) if len(df) else None
    df = data.probe_scalars(path, key.probes)
    return df[name].dropna() if name in df else None


def fork_of(path: str) -> tuple[str, int] | None:
    """(resolved parent path, fork step) of a fork, else None."""
    f = data.run_of(data.RunKey.of(path)).meta.get("fork")
    return (f["parent"], int(f["step"])) if f else None


def family(ctx: Ctx) -> list[str]:
    """The selected run, its parent (if a fork) and the runs forked from either of them."""
    resolved = {str(Path(p).resolve()): p for p in ctx.runs}
    own = fork_of(ctx.path)
    roots = {str(Path(ctx.path).resolve()), *([own[0]] if own else [])}
    out = [ctx.path] + ([resolved[own[0]]] if own and own[0] in resolved else [])
    for p in ctx.runs:
        f = fork_of(p)
        if f and f[0] in roots and p not in out:
            out.append(p)
    return out


def overlay(ctx: Ctx, paths: list[str], opt: str, log_y: bool | None) -> tuple[go.Figure, list[str]]:
    """The figure and the runs that lack the series."""
    series, missing = {}, []
    for path in paths:
        s = series_of(path, opt)
        if s is None or not len(s):
            missing.append(ctx.label(path))
        else:
            series[ctx.label(path)] = s
    fig = ui.time_plot(ctx, f"{option_label(opt)} across runs", option_label(opt), series, log_y=log_y,
                       mark=ctx.path in paths)
    for path in paths:
        f = fork_of(path)
        if f is not None:
            fig.add_vline(x=f[1], line_dash="dash", line_width=1, opacity=0.6,
                          annotation_text=f"fork: {ctx.label(path)}", annotation_position="top left")
    return fig, missing


def render() -> None:
    ctx = context()
    ui.header("Compare runs", ctx, "one time series of several runs, aligned by step")
    fam = family(ctx)
    default = fam if len(fam) > 1 else [ctx.path, *[p for p in ctx.runs if p != ctx.path][: MAX_DEFAULT - 1]]
    paths = st.multiselect("runs", ctx.runs, default=default, format_func=ctx.label, key="compare_runs")
    if not paths:
        st.info("Pick at least one run.")
        return
    opts = series_options(paths)
    c1, c2 = st.columns([3, 1])
    opt = c1.selectbox("series", opts, format_func=option_label, key="compare_series")
    scale = c2.radio("y axis", ["auto", "linear", "log"], horizontal=True, key="compare_scale")
    fig, missing = overlay(ctx, paths, opt, {"auto": None, "linear": False, "log": True}[scale])
    ui.chart(fig, "compare_overlay")
    if missing:
        st.caption(f"Not available for: {', '.join(missing)}" + (" (compute their probes first)"
                                                                   if opt.startswith("probe:") else ""))
    st.caption("The dotted line is the selected step of the run chosen in the sidebar; dashed lines mark fork "
               "steps (forks keep their parent's step numbers).")


if __name__ == "__main__":
    render()
