"""Theories: every measure of progress on one time axis, normalised to [0, 1], with where each one
places the transition and how far apart they are (issue 15; ``probes.theories``)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps import data, ui
from apps.state import Ctx, context
from probes.theories import theories_table, theory_curves


def table_and_curves(ctx: Ctx) -> tuple[pd.DataFrame, pd.DataFrame]:
    run = data.run_of(ctx.key)
    return theories_table(theory_curves(run))


def render() -> None:
    ctx = context()
    ui.header("Theories", ctx, "each theory's measure of progress, normalised to [0, 1], and its transition")
    table, norm = table_and_curves(ctx)
    if norm.empty:
        st.info("No curves yet: train the run, then compute probes (progress.restricted, li2, stability.collapse).")
        return
    series = {k: norm[k].dropna() for k in norm.columns}
    fig = ui.time_plot(ctx, "Measures of progress, normalised", "progress (0 → 1)", series, log_y=False,
                       phases=ui.phases(ctx))
    for _, row in table.dropna(subset=["transition"]).iterrows():
        fig.add_vline(x=int(row["transition"]), line_dash="dot", line_width=1, opacity=0.5)
    ui.chart(fig, "theories_curves")
    spread = table.attrs.get("spread")
    st.caption(f"Transition rule: {table.attrs['rule']}. Spread (latest − earliest): "
               f"{spread if spread is not None else '-'} steps.")
    st.dataframe(table, hide_index=True)


if __name__ == "__main__":
    render()
