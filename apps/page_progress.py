"""Progress measures (Nanda et al. 2023): restricted and excluded loss in both conventions,
the sum of squared weights (total and per parameter), with the transition shaded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from apps import data, plots, ui
from apps.state import Ctx, context
from interp.errors import StoreError
from probes.phases import Phases

CONVENTIONS = {
    "logit": ("Logit convention", "logits projected onto (restricted) / off (excluded) the key-frequency "
              "directions cos/sin(w_k(a+b)) over the grid, train split"),
    "act": ("Activation convention", "the same on the MLP activations before the unembedding, train split"),
}


def loss_series(ctx: Ctx, conv: str) -> dict[str, pd.Series]:
    cols = [("train loss", "progress.loss/train_loss"), ("test loss", "progress.loss/test_loss"),
            ("restricted loss", f"progress.restricted/{conv}.restricted_loss"),
            ("excluded loss", f"progress.restricted/{conv}.excluded_loss")]
    return ui.scalars(ctx, cols)


def loss_plot(ctx: Ctx, conv: str, phases: Phases) -> go.Figure | None:
    series = loss_series(ctx, conv)
    if not any(k.startswith(("restricted", "excluded")) for k in series):
        return None
    title, _ = CONVENTIONS[conv]
    return ui.time_plot(ctx, f"Restricted / excluded loss — {title.lower()}", "cross-entropy loss (nats)", series,
                        log_y=True, phases=phases, mark=False)


def accuracy_plot(ctx: Ctx, phases: Phases) -> go.Figure | None:
    """Accuracy of the restricted and excluded logits (train split), both conventions, with the train and
    test accuracy: the restricted logits reach ~1 once the circuit has formed."""
    series = ui.scalars(ctx, [("train accuracy", "progress.loss/train_acc"),
                              ("test accuracy", "progress.loss/test_acc"),
                              ("restricted, logit conv.", "progress.restricted/logit.restricted_acc"),
                              ("restricted, activation conv.", "progress.restricted/act.restricted_acc"),
                              ("excluded, logit conv.", "progress.restricted/logit.excluded_acc"),
                              ("excluded, activation conv.", "progress.restricted/act.excluded_acc")])
    if not any(k.startswith(("restricted", "excluded")) for k in series):
        return None
    fig = ui.time_plot(ctx, "Restricted / excluded accuracy", "accuracy (fraction correct, train split)", series,
                       log_y=False, phases=phases, mark=False)
    return fig.update_yaxes(range=[0, 1.02])


def weight_plots(ctx: Ctx, phases: Phases) -> tuple[go.Figure | None, go.Figure | None]:
    total = ui.scalar(ctx, "progress.weights/ssq_total")
    df = data.probe_scalars(ctx.path, ctx.key.probes)
    per = {c.split("/ssq.", 1)[1]: df[c].dropna() for c in df.columns if c.startswith("progress.weights/ssq.")}
    fig_total = None if total is None else ui.time_plot(
        ctx, "Total sum of squared weights", "Σ θ² (all parameters)", {"Σθ²": total}, log_y=False,
        phases=phases, mark=False)
    fig_per = None if not per else ui.time_plot(
        ctx, "Sum of squared weights per parameter", "Σ θ² of the parameter", per, log_y=None,
        phases=phases, mark=False)
    return fig_total, fig_per


def excluded_per_freq(ctx: Ctx) -> go.Figure | None:
    got = ui.arrays(ctx, "progress.restricted")
    if got is None or "logit.excluded_loss_per_freq" not in got[1]:
        return None
    steps_arr, arr = got
    i = data.at_step(steps_arr, ctx.step)
    vals = arr["logit.excluded_loss_per_freq"][i]
    ks = np.nonzero(np.isfinite(vals))[0]
    if not len(ks):
        return None
    fig = plots.bar([str(k) for k in ks], vals[ks], title=f"Excluded loss removing one key frequency "
                    f"(step {int(steps_arr[i])})", x_title="key frequency k removed",
                    y_title="train loss (nats), logit convention", log_y=plots.spans_decades(vals[ks]))
    return fig.update_xaxes(type="category")


def li2_plot(ctx: Ctx, phases: Phases) -> go.Figure | None:
    series = ui.scalars(ctx, [("‖∂L/∂F‖ hidden", "li2/grad_norm_hidden"),
                                  ("energy share of key neurons", "li2/energy_key_share")])
    if not series:
        return None
    norm = {k: v for k, v in series.items() if k.startswith("‖")}
    fig = ui.time_plot(ctx, "Li² signals (Tian 2025)", "‖∂L/∂F‖ (gradient norm)", norm, log_y=None,
                       phases=phases, mark=False)
    share = series.get("energy share of key neurons")
    if share is not None:  # a 0..1 share on its own linear axis, not on the norm's log axis
        fig.add_trace(go.Scatter(x=share.index.to_numpy(), y=share.to_numpy(dtype=float), yaxis="y2", mode="lines",
                                 name="energy share of key neurons", line={"color": plots.PALETTE[1]}))
        fig.update_layout(yaxis2={"title": {"text": "energy share of key neurons (0..1)"}, "overlaying": "y",
                                  "side": "right", "range": [0, 1.02]}, margin={"r": 70})  # room for its labels
    return fig


def transition_caption(phases: Phases) -> str:
    parts = [f"{label}: steps {lo}–{hi}" for label, lo, hi in phases.spans()]
    if phases.grok_step is not None:
        parts.append(f"grokking step {phases.grok_step}")
    return " · ".join(parts) if parts else "no phases detected yet"


def render() -> None:
    ctx = context()
    ui.header("Progress measures", ctx, "restricted / excluded loss and weight norm (Nanda et al. 2023)")
    if not ui.grid_only(ctx, "The progress page"):
        return
    if not ui.need_probes(ctx, ["progress.restricted", "progress.weights", "progress.loss"], "The progress page"):
        return
    phases = ui.phases(ctx)
    st.caption(f"Shaded: {transition_caption(phases)} ({phases.signal}).")
    ui.position(ctx, phases, "progress_position")
    c1, c2 = st.columns(2)
    for col, conv in [(c1, "logit"), (c2, "act")]:
        with col:
            fig = loss_plot(ctx, conv, phases)
            ui.chart(fig, f"progress_{conv}", f"No {CONVENTIONS[conv][0].lower()} results yet.")
            st.caption(CONVENTIONS[conv][1])
    fig_total, fig_per = weight_plots(ctx, phases)
    c3, c4 = st.columns(2)
    with c3:
        if fig_total is not None:
            ui.chart(fig_total, "progress_ssq_total")
    with c4:
        if fig_per is not None:
            ui.chart(fig_per, "progress_ssq_params")
    c5, c6 = st.columns(2)
    with c5:
        fig = excluded_per_freq(ctx)
        if fig is not None:
            ui.chart(fig, "progress_excluded_per_freq")
    with c6:
        fig = li2_plot(ctx, phases)
        if fig is not None:
            ui.chart(fig, "progress_li2")
    c7, c8 = st.columns(2)
    with c7:
        ui.chart(accuracy_plot(ctx, phases), "progress_accuracy",
                 "No restricted accuracy yet: compute the probes (progress.restricted, version 3).")
    with c8:
        try:
            ui.chart(ui.view(ctx, "excluded_loss"), "progress_excluded_loss_time")
        except (LookupError, StoreError, ValueError) as e:
            st.info(f"Excluded loss per key frequency over training: {e}")


if __name__ == "__main__":
    render()
