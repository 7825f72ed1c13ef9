"""Checkpoint diff: what changed between two checkpoints of the run. Defaults to the checkpoints
around the detected transition. Shows ``interp.diff.compare(...).to_html()`` inline when the diff
module is installed, else a per-parameter change table computed directly from the weights."""

from __future__ import annotations

import importlib

import streamlit as st

from apps import data, plots, ui
from apps.state import Ctx, context, mark_corrupt, nearest
from interp.store import CorruptCheckpointError, Run, StoreError


def default_pair(ctx: Ctx, phases: data.Phases) -> tuple[int, int]:
    """(before, after) the transition: end of memorisation (else start of circuit formation) to the
    end of cleanup (else the grokking step, else the end of circuit formation), snapped to saved
    steps; the first and last checkpoints when no phase is known."""
    start = next((s for s in (phases.memorization_end, phases.circuit_start) if s is not None), None)
    end = next((s for s in (phases.cleanup_end, phases.grok_step, phases.circuit_end) if s is not None), None)
    a = nearest(ctx.steps, start) if start is not None else ctx.steps[0]
    b = nearest(ctx.steps, end) if end is not None else ctx.steps[-1]
    if a >= b:
        a, b = ctx.steps[0], ctx.steps[-1]
    return a, b


def diff_module():
    try:
        diff = importlib.import_module("interp.diff")
    except ImportError:
        return None
    return diff if hasattr(diff, "compare") else None


@st.cache_data(max_entries=16, show_spinner="Comparing the checkpoints…")
def report(path: str, a: int, b: int, manifest: data.Sig) -> str:
    """The HTML of ``interp.diff.compare((run, a), (run, b))`` (it opens with its own summary)."""
    run = Run.open(path)
    return diff_module().compare((run, a), (run, b)).to_html()


def embed(html: str) -> None:
    """The report inline: ``st.iframe`` (sized to its content) where Streamlit has it, else
    ``st.components.v1.html``."""
    if hasattr(st, "iframe"):
        st.iframe(html, height="content", alt="checkpoint diff report")
    else:
        import streamlit.components.v1 as components

        components.html(html, height=1400, scrolling=True)


def change_table(ctx: Ctx, a: int, b: int) -> None:
    df = data.param_changes(ctx.path, a, b, ctx.key.manifest)
    st.dataframe(df, hide_index=True, key="diff_table",
                 column_config={c: st.column_config.NumberColumn(format="%.4g")
                                for c in ["‖W_a‖", "‖W_b‖", "‖ΔW‖", "relative change", "cosine"]})
    fig = plots.bar(df["parameter"], df["relative change"], title=f"Relative change ‖ΔW‖/‖W_a‖, step {a} → {b}",
                    x_title="parameter", y_title="‖ΔW‖ / ‖W_a‖ (ratio)",
                    log_y=plots.spans_decades(df["relative change"]))
    ui.chart(fig, "diff_relative_change")


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
    if a == b:
        st.info("Pick two different checkpoints.")
        return
    try:
        if diff_module() is not None:
            embed(report(ctx.path, a, b, ctx.key.manifest))
        else:
            st.caption("`interp.diff` is not installed: per-parameter changes computed from the weights.")
            change_table(ctx, a, b)
    except CorruptCheckpointError as e:
        mark_corrupt(ctx.path, a if str(e.path).endswith(f"{a:08d}.safetensors") else b, e)
    except StoreError as e:
        st.error(str(e))
    except Exception as e:  # the report is someone else's code: keep the page, say what failed
        st.error(f"The diff report failed ({type(e).__name__}): {e}")


if __name__ == "__main__":
    render()
