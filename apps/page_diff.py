"""Checkpoint diff: what changed between two checkpoints of the run. Defaults to the checkpoints
around the detected transition. Shows the ``probes.diff.compare`` report inline, rendered by
:func:`apps.report.to_html` (on a sequence-task run, the reduced report of issue 13)."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from apps import data, ui
from apps.report import to_html
from apps.state import Ctx, context, mark_corrupt, nearest
from interp.errors import CorruptCheckpointError, StoreError
from interp.store import Run
from probes.diff import compare
from probes.phases import Phases, transition_bounds


def default_pair(ctx: Ctx, phases: Phases) -> tuple[int, int]:
    """(before, after) the transition: end of memorisation (else start of circuit formation) to the
    end of cleanup (else the grokking step, else the end of circuit formation), snapped to saved
    steps; the first and last checkpoints when no phase is known."""
    start, end = transition_bounds(phases)
    a = nearest(ctx.steps, start) if start is not None else ctx.steps[0]
    b = nearest(ctx.steps, end) if end is not None else ctx.steps[-1]
    if a >= b:
        a, b = ctx.steps[0], ctx.steps[-1]
    return a, b


@st.cache_data(max_entries=16, show_spinner="Comparing the checkpoints…")
def report(path: str, a: int, b: int, manifest: data.Sig) -> str:
    """The HTML of ``probes.diff.compare((run, a), (run, b))`` (it opens with its own summary)."""
    run = Run.open(path)
    return to_html(compare((run, a), (run, b)))


def embed(html: str) -> None:
    """The report inline: ``st.iframe`` (sized to its content) where Streamlit has it, else
    ``st.components.v1.html``."""
    if hasattr(st, "iframe"):
        st.iframe(html, height="content", alt="checkpoint diff report")
    else:
        import streamlit.components.v1 as components

        components.html(html, height=1400, scrolling=True)


def pair_plot(ctx: Ctx, phases: Phases, a: int, b: int) -> go.Figure:
    """Train and test loss with the phases, the selected step (dotted) and checkpoints A and B (solid); a click
    moves the selected step, which the buttons beside it make A or B."""
    series = {"train loss": ui.metric(ctx, "train_loss"), "test loss": ui.metric(ctx, "test_loss")}
    fig = ui.time_plot(ctx, "Loss, with checkpoints A and B", "cross-entropy loss (nats)", series, log_y=True,
                       phases=phases)
    for name, s in (("A", a), ("B", b)):
        fig.add_vline(x=s, line={"color": "#444", "width": 1.5}, annotation_text=f"{name} {s}",
                      annotation_position="top right" if name == "B" else "top left")
    return fig.update_layout(height=260)


def _set_end(which: int, step: int) -> None:
    pair = list(st.session_state["diff_range"])
    pair[which] = step
    st.session_state["diff_range"] = tuple(sorted(pair))


def render() -> None:
    ctx = context()
    ui.header("Checkpoint diff", ctx, "what changed between two checkpoints")
    if len(ctx.steps) < 2:
        st.info("The run needs at least two checkpoints to compare.")
        return
    phases = ui.phases(ctx)
    current = st.session_state.get("diff_range")
    if current is not None and not set(current) <= set(ctx.steps):  # another run was picked
        del st.session_state["diff_range"]
    a, b = st.select_slider("checkpoints A → B", options=ctx.steps, value=default_pair(ctx, phases), key="diff_range",
                            help="defaults to the checkpoints before and after the detected transition")
    c1, c2, c3 = st.columns([6, 1, 1], vertical_alignment="center")
    with c1:
        ui.chart(pair_plot(ctx, phases, a, b), "diff_pair")
    c2.button(f"A ← {ctx.step}", key="diff_set_a", on_click=_set_end, args=(0, ctx.step), width="stretch",
              help="make the selected step (the sidebar's, or a click on the curve) checkpoint A")
    c3.button(f"B ← {ctx.step}", key="diff_set_b", on_click=_set_end, args=(1, ctx.step), width="stretch",
              help="make the selected step checkpoint B")
    if a == b:
        st.info("Pick two different checkpoints.")
        return
    try:
        embed(report(ctx.path, a, b, ctx.key.manifest))
    except CorruptCheckpointError as e:
        mark_corrupt(ctx.path, a if str(e.path).endswith(f"{a:08d}.safetensors") else b, e)
    except StoreError as e:
        st.error(str(e))


if __name__ == "__main__":
    render()
