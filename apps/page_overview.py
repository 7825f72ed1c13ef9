"""Overview: the runs on offer, the selected run's config, and its training curves with the
phases (``probes.phases``) shaded, the grokking step marked and the selected step drawn."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps import data, ui
from apps.state import Ctx, context
from interp.errors import StoreError
from probes.phases import Phases


def runs_table(ctx: Ctx) -> pd.DataFrame:
    rows = []
    for path in ctx.runs:
        key = data.RunKey.of(path)
        try:
            s = data.summary(path, key.meta, key.metrics, key.manifest)
        except StoreError as e:  # one damaged run does not break the others' overview (issue 16)
            st.warning(f"skipping {ctx.label(path)}: {e}")
            continue
        rows.append({"run": ctx.label(path), "status": s["status"], "checkpoints": s["checkpoints"],
                     "last step": s["last_step"], "train acc": s["train_acc"], "test acc": s["test_acc"],
                     "memorized at": s["memorized_step"], "grokked at": s["grokked_step"]})
    return pd.DataFrame(rows)


def config_table(ctx: Ctx) -> pd.DataFrame:
    cfg = ctx.run.config
    return pd.DataFrame({"field": list(cfg), "value": [str(v) for v in cfg.values()]})


def curves(ctx: Ctx, phases: Phases) -> None:
    c1, c2 = st.columns(2)
    with c1:
        fig = ui.time_plot(ctx, "Loss", "cross-entropy loss (nats)", {
            "train loss": ui.metric(ctx, "train_loss"), "test loss": ui.metric(ctx, "test_loss")},
            log_y=True, phases=phases)
        ui.chart(fig, "overview_loss")
    with c2:
        fig = ui.time_plot(ctx, "Accuracy", "accuracy (fraction correct)", {
            "train accuracy": ui.metric(ctx, "train_acc"), "test accuracy": ui.metric(ctx, "test_acc")},
            log_y=False, phases=phases)
        fig.update_yaxes(range=[0, 1.02])
        ui.chart(fig, "overview_acc")
    c3, c4 = st.columns(2)
    with c3:
        fig = ui.time_plot(ctx, "Total weight norm", "‖θ‖₂", {"weight norm": ui.metric(ctx, "weight_norm")},
                           log_y=False, phases=phases)
        ui.chart(fig, "overview_wnorm")
    with c4:
        fig = ui.time_plot(ctx, "Gradient norm", "‖∇θ L‖₂", {"gradient norm": ui.metric(ctx, "grad_norm")},
                           log_y=True, phases=phases)
        ui.chart(fig, "overview_gnorm")


def at_step(ctx: Ctx) -> None:
    m = data.metrics(ctx.path, ctx.key.metrics)
    row = m.loc[m["step"] == ctx.step]
    tested = m.loc[(m["step"] <= ctx.step) & m["test_loss"].notna()]
    cols = st.columns(4)
    if len(row):
        cols[0].metric("train loss", f"{row['train_loss'].iloc[0]:.3g}")
        cols[1].metric("train accuracy", f"{row['train_acc'].iloc[0]:.1%}")
    if len(tested):
        cols[2].metric("test loss", f"{tested['test_loss'].iloc[-1]:.3g}")
        cols[3].metric("test accuracy", f"{tested['test_acc'].iloc[-1]:.1%}")


def phase_table(phases: Phases) -> pd.DataFrame:
    names = {"full_train_acc_step": "first 100% train accuracy", "memorization_end": "end of memorization",
             "circuit_start": "circuit formation starts", "circuit_end": "circuit formation ends (clean-up starts)",
             "cleanup_end": "end of clean-up", "grok_step": "grokking step"}
    return pd.DataFrame({"event": list(names.values()),
                         "step": [getattr(phases, f) for f in names]}).astype({"step": "Int64"})


def render() -> None:
    ctx = context()
    ui.header("Overview", ctx, f"{len(ctx.steps)} saved checkpoints")
    phases = ui.phases(ctx)
    with st.expander(f"Runs ({len(ctx.runs)})", expanded=len(ctx.runs) > 1):
        if len(ctx.runs) > 1:  # sortable
            st.dataframe(runs_table(ctx), hide_index=True, key="runs_table")
        else:  # a static table: the first page drawn need not load the data grid's scripts
            st.table(runs_table(ctx), hide_index=True)
    at_step(ctx)
    if data.metrics(ctx.path, ctx.key.metrics).empty:
        st.warning(f"{ctx.path} has no metrics yet (metrics.parquet is written while it trains).")
    else:
        curves(ctx, phases)
    c1, c2 = st.columns(2)
    with c1:
        st.subheader("Phases")
        st.caption(f"from `probes.phases.detect`: {phases.rule}" if phases.detected else
                   f"from the metrics: {phases.rule}")
        st.table(phase_table(phases), hide_index=True)
        for name, why in phases.edges.items():
            st.caption(f"{name}: not found, {why}")
    with c2:
        st.subheader("Config")
        st.table(config_table(ctx), hide_index=True, height=300)


if __name__ == "__main__":
    render()
