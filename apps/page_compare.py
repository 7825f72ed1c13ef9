"""Compare runs: overlay time series (training metrics or probe scalars) of several runs, aligned by
training step or by step − grok step, each run's grokking step marked. A run with forks
(``interp.fork``) starts with its family selected — the run, its parent and their forks, on the
parent's step axis — with each fork step marked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from apps import data, plots, ui
from apps.state import Ctx, context

METRICS = {"train_loss": "train loss (nats)", "test_loss": "test loss (nats)", "train_acc": "train accuracy",
           "test_acc": "test accuracy", "weight_norm": "weight norm ‖θ‖₂", "grad_norm": "gradient norm ‖∇θ L‖₂",
           "lr": "learning rate"}
MAX_DEFAULT = 4
#: probe scalars in words (the rest show as "probe / name")
PROBE_WORDS = {
    "fourier.embed/gini": "W_E Fourier sparsity (Gini)", "fourier.logit_map/gini": "W_L Fourier sparsity (Gini)",
    "fourier.unembed/gini": "W_U Fourier sparsity (Gini)", "fourier.key_freqs/n_key": "number of key frequencies",
    "fourier.logits/fve_key": "logit variance explained by key frequencies",
    "fourier.logits/fve_all": "logit variance explained by all frequencies",
    "fourier.neurons/frac_clustered": "fraction of neurons in a frequency cluster",
    "fourier.neurons/n_dead": "dead neurons",
    "fourier.clock_pizza/gradient_symmetricity": "gradient symmetricity (Clock vs Pizza)",
    "fourier.clock_pizza/distance_irrelevance": "distance irrelevance (Clock vs Pizza)",
    "progress.restricted/logit.restricted_loss": "restricted loss (logit convention)",
    "progress.restricted/logit.excluded_loss": "excluded loss (logit convention)",
    "progress.weights/ssq_total": "sum of squared weights", "li2/energy_key_share": "Li² energy share of key neurons",
    "attention.sparsity/readout_entropy": "readout attention entropy",
}


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
    return METRICS[name] if kind == "metric" else PROBE_WORDS.get(name, name.replace("/", " / ") + " (probe)")


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


def grok_step(path: str) -> int | None:
    key = data.RunKey.of(path)
    return data.phases(path, key.metrics, key.probes).grok_step


def overlay(ctx: Ctx, paths: list[str], opts: list[str], log_y: bool | None,
            align: bool = False) -> tuple[go.Figure, list[str]]:
    """The figure (one line per run and series; x = step, or step − grok step with ``align``; each run's
    grokking step a dashed line in its colour) and the (run, series) pairs that are missing."""
    series, missing, groks = {}, [], {}
    for path in paths:
        g = grok_step(path)
        if align and g is None:
            missing.append(f"{ctx.label(path)} (no grokking step)")
            continue
        groks[ctx.label(path)] = g
        for opt in opts:
            s = series_of(path, opt)
            name = ctx.label(path) if len(opts) == 1 else f"{ctx.label(path)} · {option_label(opt)}"
            if s is None or not len(s):
                missing.append(name)
            else:
                series[name] = s.set_axis(s.index - g) if align else s
    title = " / ".join(option_label(o) for o in opts)
    fig = ui.time_plot(ctx, f"{title} across runs", title if len(opts) == 1 else "value", series, log_y=log_y,
                       mark=ctx.path in paths and not align)
    if align:
        fig.update_xaxes(title_text="step − grok step")
    shapes = list(fig.layout.shapes)
    for i, (label, g) in enumerate(groks.items()):
        if g is not None:
            x, color = (0 if align else g), plots.PALETTE[i * len(opts) % len(plots.PALETTE)]
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                           "name": f"grok {label}", "line": {"dash": "dash", "width": 1.2, "color": color}})
    fig.update_layout(shapes=shapes)
    for path in [] if align else paths:
        f = fork_of(path)
        if f is not None:
            fig.add_vline(x=f[1], line_dash="dashdot", line_width=1, opacity=0.6,
                          annotation_text=f"fork: {ctx.label(path)}", annotation_position="top left")
    return fig, missing


def render() -> None:
    ctx = context()
    ui.header("Compare runs", ctx, "time series of several runs, aligned by step or by grokking step")
    fam = family(ctx)
    default = fam if len(fam) > 1 else [ctx.path, *[p for p in ctx.runs if p != ctx.path][: MAX_DEFAULT - 1]]
    paths = st.multiselect("runs", ctx.runs, default=default, format_func=ctx.label, key="compare_runs")
    if not paths:
        st.info("Pick at least one run.")
        return
    opts = series_options(paths)
    c1, c2, c3 = st.columns([3, 1, 1])
    chosen = c1.multiselect("series", opts, default=["metric:test_acc"], format_func=option_label,
                            key="compare_series")
    scale = c2.radio("y axis", ["auto", "linear", "log"], horizontal=True, key="compare_scale")
    align = c3.toggle("align on grok step", key="compare_align", help="x = step − the run's grokking step")
    if not chosen:
        st.info("Pick at least one series.")
        return
    fig, missing = overlay(ctx, paths, chosen, {"auto": None, "linear": False, "log": True}[scale], align)
    ui.chart(fig, "compare_overlay", select_step=not align)
    if missing:
        st.caption(f"Not available for: {', '.join(missing)}" + (" (compute their probes first)"
                                                                   if any(o.startswith("probe:") for o in chosen)
                                                                   else ""))
    st.caption("Dashed lines: each run's grokking step (first test accuracy ≥ 99%); dotted: the selected step "
               "of the run chosen in the sidebar; dash-dot: fork steps "
               "(forks keep their parent's step numbers).")


if __name__ == "__main__":
    render()
