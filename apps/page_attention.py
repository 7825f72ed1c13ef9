"""Attention: each head's attention from ``=`` to a, b and ``=`` over the p×p inputs at the
selected step (computed from the checkpoint, cached), and the ``attention.*`` probes over time:
sparsity (entropy, effective tokens, max weight, …), sink rate, value drain, residual norms.
Sequence-task runs get :mod:`apps.attention_seq` instead (query × key patterns of probe inputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from apps import attention_seq, ui
from apps.state import Ctx, context
from interp.errors import StoreError
from probes.phases import Phases

KEYS = ["a", "b", "="]
READOUT = 2  # query position of `=`
SPARSITY = {  # name -> (label, unit)
    "entropy": ("entropy H = −Σ a log a", "nats"),
    "entropy_norm": ("normalised entropy H / log n", "0..1"),
    "eff_tokens": ("effective tokens exp(H)", "tokens"),
    "ipr": ("inverse participation 1/Σ a²", "tokens"),
    "max_weight": ("max attention weight", "0..1"),
    "gini": ("Gini of the attention row", "0..1"),
}


def pattern_figure(pattern: np.ndarray, layer: int, step: int) -> go.Figure:
    """[H, 3, p, p] attention from ``=`` to each key over the inputs (a rows, b columns)."""
    n_heads = pattern.shape[0]
    # the `=` column is left out when no head ever puts ≥ 1% there (then "→ b" = 1 − "→ a")
    shown = [0, 1] + ([2] if float(np.nanmax(pattern[:, 2])) >= 0.01 else [])
    titles = [f"head {h} → {KEYS[k]}" for h in range(n_heads) for k in shown]
    fig = make_subplots(rows=n_heads, cols=len(shown), subplot_titles=titles, horizontal_spacing=0.04,
                        vertical_spacing=0.22 / max(n_heads, 1), shared_xaxes=True, shared_yaxes=True)
    for h in range(n_heads):
        for col, k in enumerate(shown):  # x = b and y = a are the column and row indices: Plotly's default
            fig.add_trace(go.Heatmap(z=pattern[h, k].astype(np.float32), zmin=0, zmax=1,
                                     coloraxis="coloraxis", name=f"head {h} → {KEYS[k]}",
                                     hovertemplate="a=%{y}, b=%{x}<br>attention=%{z:.3f}<extra></extra>"),
                          row=h + 1, col=col + 1)
    fig.update_layout(title=f"Layer {layer}: attention from `=` to a, b, = over all inputs (step {step})",
                      height=260 * n_heads + 80, margin={"l": 60, "r": 20, "t": 80, "b": 50},
                      coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1,
                                 "colorbar": {"title": {"text": "attention weight"}}})
    for h in range(n_heads):
        fig.update_yaxes(title_text="a", row=h + 1, col=1, autorange="reversed")
    for col in range(len(shown)):
        fig.update_xaxes(title_text="b", row=n_heads, col=col + 1)
    fig.update_yaxes(autorange="reversed")
    return fig


def per_head_series(steps_arr: np.ndarray, values: np.ndarray) -> dict[str, pd.Series]:
    """[n_steps, H] -> one series per head."""
    return {f"head {h}": pd.Series(values[:, h], index=steps_arr) for h in range(values.shape[1])}


def sparsity_plot(ctx: Ctx, layer: int, measure: str, phases: Phases) -> go.Figure | None:
    got = ui.arrays(ctx, "attention.sparsity")
    if got is None or measure not in got[1]:
        return None
    steps_arr, arr = got
    label, unit = SPARSITY[measure]
    series = per_head_series(steps_arr, arr[measure][:, layer, :, READOUT])
    return ui.time_plot(ctx, f"Readout attention: {label}", f"{label} ({unit})", series, log_y=False,
                        phases=phases, mark=False)


def sink_plot(ctx: Ctx, phases: Phases) -> go.Figure | None:
    s = ui.scalar(ctx, "attention.sinks/sink_rate")
    if s is None:
        return None
    series = {"sink rate": s} if s.nunique() > 1 else {}  # constant (100% on 3-token inputs): drawn as nothing
    choice = ui.scalar(ctx, "attention.sinks/sink_rate_choice")
    if choice is not None:  # query 0 can only see key 0: the plain rate is 100% on 3 tokens
        series["sink rate, query 0 left out"] = choice
    fig = ui.time_plot(ctx, "Sink rate (Gu et al. 2025)", "% of (layer, head) with a sink", series,
                       log_y=False, phases=phases, mark=False)
    return fig.update_yaxes(range=[-2, 102])


def eq_share_plot(ctx: Ctx, layer: int, phases: Phases) -> go.Figure | None:
    got = ui.arrays(ctx, "attention.sinks")
    if got is None:
        return None
    steps_arr, arr = got
    fig = ui.time_plot(ctx, "Share of readout attention on `=`", "share (0..1)",
                       per_head_series(steps_arr, arr["eq_share"][:, layer]), log_y=False, phases=phases, mark=False)
    return fig.update_yaxes(range=[0, 1.02])


def value_drain_plot(ctx: Ctx, layer: int, phases: Phases) -> go.Figure | None:
    got = ui.arrays(ctx, "attention.sinks")
    if got is None:
        return None
    steps_arr, arr = got
    drain = arr["value_drain"][:, layer].mean(1)  # [n_steps, S], mean over heads
    series = {f"key {k}": pd.Series(drain[:, i], index=steps_arr) for i, k in enumerate(KEYS)}
    return ui.time_plot(ctx, "Value drain ‖v_k·W_O‖ (mean over heads)", "norm of the value written (resid units)",
                        series, log_y=None, phases=phases, mark=False)


def residual_plot(ctx: Ctx, phases: Phases) -> go.Figure | None:
    got = ui.arrays(ctx, "attention.sinks")
    if got is None:
        return None
    steps_arr, arr = got
    rn, massive = arr["resid_norm"], arr["massive_ratio"]  # [n, L+1, S], [n, L+1]
    series = {}
    for layer in range(rn.shape[1]):
        where = "final at =" if layer == rn.shape[1] - 1 else f"resid_pre {layer}"
        if not np.isnan(rn[:, layer, :2]).all():  # the final stream is measured at `=` only
            series[f"‖x_=‖ / mean(‖x_a‖, ‖x_b‖), {where}"] = pd.Series(rn[:, layer, 2] / rn[:, layer, :2].mean(1),
                                                                          index=steps_arr)
        series[f"max|x| / median|x|, {where}"] = pd.Series(massive[:, layer], index=steps_arr)
    return ui.time_plot(ctx, "Residual stream: norm ratio and massive activations", "ratio", series, log_y=None,
                        phases=phases, mark=False)


def render() -> None:
    ctx = context()
    ui.header("Attention", ctx, "readout attention over the inputs, sparsity and sinks over time")
    if ctx.run.train_config.seq_task is not None:  # sequence tasks (issue 13)
        attention_seq.render(ctx)
        return
    phases = ui.phases(ctx)
    ui.position(ctx, phases, "attention_position")
    n_layers = int(ctx.run.train_config.n_layers)
    layer = st.selectbox("layer", list(range(n_layers)), key="attn_layer") if n_layers > 1 else 0
    ui.lazy_tabs("attention_tab", {"Patterns at the step": lambda: at_step(ctx, layer),
                                   "Sparsity and sinks over training": lambda: over_training(ctx, layer, phases)})


def at_step(ctx: Ctx, layer: int) -> None:
    """The readout attention over the p×p inputs and each head's attention per frequency, at the step."""
    patterns = ui.attention_patterns(ctx, ctx.step)
    if patterns is not None:
        ui.chart(pattern_figure(patterns[layer], layer, ctx.step), "attention_patterns")
    try:
        ui.chart(ui.view(ctx, "attention_freq"), "attention_freq")
    except (LookupError, StoreError, ValueError) as e:
        st.info(f"Per-head attention frequency: {e}")


def over_training(ctx: Ctx, layer: int, phases: Phases) -> None:
    """The ``attention.*`` probes over the steps, and the per-head attention frequency animated."""
    if not ui.need_probes(ctx, ["attention.sparsity", "attention.sinks"], "The attention time series"):
        return
    measure = st.selectbox("sparsity measure", list(SPARSITY), format_func=lambda m: SPARSITY[m][0],
                           key="attn_measure")
    c1, c2 = st.columns(2)
    figs = [(sparsity_plot(ctx, layer, measure, phases), "attention_sparsity"),
            (sink_plot(ctx, phases), "attention_sink_rate"),
            (eq_share_plot(ctx, layer, phases), "attention_eq_share"),
            (value_drain_plot(ctx, layer, phases), "attention_value_drain"),
            (residual_plot(ctx, phases), "attention_residual")]
    for i, (fig, key) in enumerate(figs):
        if fig is not None:
            with (c1 if i % 2 == 0 else c2):
                ui.chart(fig, key)
    if st.toggle("Watch it form: per-head attention frequency over every probed step (played in the browser)",
                 key="attention_animate"):
        try:
            ui.chart(ui.view(ctx, "animate_attention_freq"), "attention_animate_freq")
        except (LookupError, StoreError, ValueError) as e:
            st.info(f"Per-head attention frequency, animated: {e}")


if __name__ == "__main__":
    render()
