"""Page building blocks: charts, the 'compute probes' offer, guarded checkpoint access."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from apps import data, figures, plots, state
from apps.state import Ctx, mark_corrupt
from interp.errors import CorruptCheckpointError, StoreError
from probes.phases import Phases

PLOTLY_CONFIG = {"displaylogo": False}
#: every chart: no Plotly logo, and the figure's own (Plotly) template rather than Streamlit's theme, so a figure
#: looks the same in the dashboard, the HTML report and a notebook, and the browser does not restyle each one
PLOTLY_KW = {"config": PLOTLY_CONFIG, "theme": None}


SELECT_TRACE = "select a step"  # the invisible trace of saved steps that a click selects


def chart(fig: go.Figure | None, key: str, missing: str = "", *, select_step: bool | None = None) -> None:
    """Show ``fig``; where it is None (no results for it yet), say so with ``missing``. With ``select_step``
    (default: when the x axis is the training step), clicking a point selects the nearest saved checkpoint."""
    if select_step is None and fig is not None:
        select_step = fig.layout.xaxis.title.text == "training step" and not fig.frames
    if fig is None:
        st.info(missing or f"No results for `{key}` yet.")
    elif not select_step:
        st.plotly_chart(fig, key=key, **PLOTLY_KW)
    else:
        if any(t.type == "heatmap" for t in fig.data):
            add_step_selector(fig, state.context().steps)
        else:
            selectable_lines(fig)
        event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode="points", **PLOTLY_KW)
        follow_click(key, event)


def selectable_lines(fig: go.Figure) -> go.Figure:
    """Let a click on a curve select its point: Plotly selects only points of traces that have markers, so each
    line gets markers, of which one is drawn (``maxdisplayed``) and none is visible. A marker drawn at every
    point (thousands of SVG nodes a page) made each chart several times slower to draw."""
    fig.update_layout(clickmode="event+select")
    invisible = {"size": 6, "opacity": 0, "maxdisplayed": 1}
    return fig.update_traces(mode="lines+markers", marker=invisible, selected={"marker": {"opacity": 0}},
                             unselected={"marker": {"opacity": 0}}, selector={"type": "scatter", "mode": "lines"})


def add_step_selector(fig: go.Figure, steps: list[int]) -> go.Figure:
    """Make a click anywhere on a heatmap over steps select the nearest saved step: heatmaps give no selection
    events, so one invisible marker per saved step is laid across the middle of the plot, and with
    ``hovermode="x"`` the hover (and so the click) picks the marker nearest in x, whatever the height.
    Idempotent (figures may come from a cache)."""
    if any(t.name == SELECT_TRACE for t in fig.data):
        return fig
    heat = next(t for t in fig.data if t.type == "heatmap")
    y = [heat.y[len(heat.y) // 2]] * len(steps) if heat.y is not None and len(heat.y) else \
        [len(heat.z) // 2] * len(steps)
    clear = {"marker": {"opacity": 0}}
    fig.add_trace(go.Scatter(x=np.asarray(steps), y=y, mode="markers", marker={"size": 8, "opacity": 0},
                             hoverinfo="none", showlegend=False, name=SELECT_TRACE, selected=clear,
                             unselected=clear))
    return fig.update_layout(clickmode="event+select", hovermode="x")


@st.cache_resource(max_entries=256, show_spinner=False)
def _view(path: str, probes_sig: data.Sig, manifest: data.Sig, name: str, step: int | None,
          options: tuple = ()) -> go.Figure:
    if step is None and figures.VIEWS[name].over_training:
        return figures.VIEWS[name].fn(data.run_of(data.RunKey.of(path)), None, **dict(options))
    return figures.view(path, name, step, **dict(options))


def view(ctx: Ctx, name: str, step: int | None = None, **options) -> go.Figure:
    """The figure library's view ``name`` at ``step`` (default: the selected step), cached per run, step, probe
    results and ``options`` (shared: :func:`chart` only adds its selection trace once). Views over training (time
    series, animations) are drawn without the selected step and cached once per run: the browser keeps a
    chart whose figure is unchanged, so a step change redraws only what depends on the step."""
    fixed = figures.VIEWS[name].over_training  # time series drawn without the step: the same figure every step
    return _view(ctx.path, ctx.key.probes, ctx.key.manifest, name, None if fixed else (step or ctx.step),
                 tuple(sorted(options.items())))


def follow_click(key: str, event) -> None:
    """Move the shared step to the checkpoint nearest the clicked x (once per new selection)."""
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", []) or []
    xs = tuple(p.get("x") for p in points if isinstance(p.get("x"), (int, float)))
    seen = st.session_state.setdefault("_chart_clicks", {})
    if not xs or seen.get(key) == xs:
        return
    seen[key] = xs
    steps = state.context().steps
    target = state.nearest(steps, round(float(xs[0])))
    if target != st.session_state.get("step"):
        st.session_state["_pending_step"] = target
        st.rerun()


def lazy_tabs(key: str, sections: dict[str, Callable[[], None]]) -> None:
    """The page's ``sections`` as tabs of which only the open one runs, so only its charts are built and sent
    to the browser (``st.tabs(on_change=...)``); the open tab is kept across page switches (a widget's own
    state is dropped while its page is not shown)."""
    keep = "_" + key

    def remember() -> None:
        st.session_state[keep] = st.session_state[key]

    tabs = st.tabs(list(sections), key=key, on_change=remember,
                   default=st.session_state.get(keep, next(iter(sections))))
    for tab, draw in zip(tabs, sections.values()):
        if tab.open:
            with tab:
                draw()


def header(title: str, ctx: Ctx, caption: str) -> None:
    st.title(title)
    st.caption(f"{ctx.label(ctx.path)} · step {ctx.step} · {caption}")


def grid_only(ctx: Ctx, what: str) -> bool:
    """True for a p×p grid run; for a sequence-task run (issue 13) say that ``what`` does not apply."""
    seq = ctx.run.train_config.seq_task
    if seq is None:
        return True
    st.info(f"{what} does not apply to this run: it reads the p×p grid of a∘b mod p, and this run's task "
            f"is the sequence task `{seq}`. The Attention page shows its attention patterns, sinks and sparsity.")
    return False


# ------------------------------------------------------------------ probes
def missing_probes(ctx: Ctx, names: Iterable[str]) -> list[str]:
    """Those of ``names`` with no cached results at all for this run."""
    scal = data.probe_scalars(ctx.path, ctx.key.probes)
    out = []
    for name in names:
        arrays = data.probe_arrays(ctx.path, name, ctx.key.probes)
        has_scalars = len(scal.columns) and any(c.startswith(name + "/") for c in scal.columns)
        if arrays is None and not has_scalars:
            out.append(name)
    return out


def need_probes(ctx: Ctx, names: Iterable[str], what: str) -> bool:
    """True when the probes ``names`` have results; otherwise explain and offer to compute them."""
    names = list(names)
    missing = missing_probes(ctx, names)
    if not missing:
        stale_note(ctx)
        return True
    st.info(f"{what} reads probe results that this run does not have yet: {', '.join(missing)}.")
    compute_button(ctx, key=f"compute_{'_'.join(names)}")
    return False


def stale_note(ctx: Ctx) -> None:
    """A note (and the compute button) when some checkpoints have no probe results yet."""
    status = data.probe_status(ctx.path, ctx.key.manifest, ctx.key.probes)
    if not status or status.get("complete", True):
        return
    n_steps = len({s for p in status["probes"].values() for s in p["missing"]})
    why = ", ".join(f"{name} ({p['reason']})" for name, p in status["probes"].items() if p["missing"])
    with st.expander(f"Probe results are missing for {n_steps} checkpoint(s)", expanded=False):
        st.write(f"Out of date or not computed: {why}. The plots show the results cached so far; new "
                 "checkpoints of a run still training, or probes whose definition changed, appear after computing.")
        compute_button(ctx, key="compute_stale")


def compute_button(ctx: Ctx, key: str) -> None:
    if not st.button("Compute probe results", key=key, type="primary",
                     help="runs probes.run over the checkpoints that lack results (cached under RUN/probes/)"):
        return
    bar = st.progress(0.0, text="Measuring checkpoints…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Measured {done} of {total} checkpoints")

    try:
        n = data.compute_probes(ctx.path, progress)
    except (StoreError, ValueError, RuntimeError) as e:
        st.error(f"Computing probes failed: {e}")
        return
    bar.progress(1.0, text=f"Measured {n} checkpoints")
    st.rerun()


def metric(ctx: Ctx, column: str) -> pd.Series:
    """One training-metrics column over the steps (index: step; ``data.metric_series``: NaNs dropped,
    downsampled for drawing)."""
    df = data.metric_series(ctx.path, ctx.key.metrics, column)
    return pd.Series(df["value"].to_numpy(), index=df["step"].to_numpy(), name=column)


def scalar(ctx: Ctx, column: str) -> pd.Series | None:
    """One probe scalar over the steps (index: step), or None."""
    df = data.probe_scalars(ctx.path, ctx.key.probes)
    if column not in df:
        return None
    return df[column].dropna()


def scalars(ctx: Ctx, columns: list[tuple[str, str]]) -> dict[str, pd.Series]:
    """``{label: series}`` for each (label, ``probe/name``) that has results; missing ones left out."""
    return {label: s for label, column in columns if (s := scalar(ctx, column)) is not None}


def arrays(ctx: Ctx, probe: str) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    return data.probe_arrays(ctx.path, probe, ctx.key.probes)


def phases(ctx: Ctx) -> Phases:
    return data.phases(ctx.path, ctx.key.metrics, ctx.key.probes)


# ------------------------------------------------------------------ checkpoints
def attention_patterns(ctx: Ctx, step: int) -> np.ndarray | None:
    """[L, H, 3, p, p] readout attention at ``step``; a corrupt checkpoint is reported and skipped."""
    return _guarded(data.attention_patterns, ctx, step)


def mlp_acts(ctx: Ctx, step: int) -> np.ndarray | None:
    """[p, p, d_mlp] MLP activations at ``=`` at ``step`` (None: attention-only or unreadable)."""
    return _guarded(data.mlp_acts, ctx, step)


def _guarded(fn, ctx: Ctx, step: int):
    try:
        return fn(ctx.path, step, ctx.key.manifest)
    except CorruptCheckpointError as e:
        mark_corrupt(ctx.path, step, e)
    except StoreError as e:
        st.error(str(e))
    return None


def time_plot(ctx: Ctx, title: str, y_title: str, series: dict[str, pd.Series], *, log_y: bool | None = None,
              phases: Phases | None = None, mark: bool = True) -> go.Figure:
    """Lines over steps (one per series, index = step), the phases and the selected step.
    ``log_y=None`` picks a log axis when the values span two decades or more."""
    if log_y is None:
        log_y = plots.spans_decades(np.concatenate([s.to_numpy(dtype=float) for s in series.values()])
                                    if series else [])
    fig = plots.time_figure(title, y_title, log_y=log_y)
    for name, s in series.items():
        plots.add_line(fig, s.index.to_numpy(), s.to_numpy(dtype=float), name)
    return plots.decorate(plots.side_legend(fig), phases, ctx.step if mark else None)


def position(ctx: Ctx, phases: Phases | None, key: str) -> None:
    """A thin timeline of the run: the phases, the grokking step and the selected step; a click moves the step.
    The pages' time series leave the selected step out (a figure that does not change across steps is not
    redrawn by the browser); this strip, small and cheap to redraw, says where the reader is."""
    steps = ctx.steps
    fig = plots.time_figure(f"Timeline: step {ctx.step} selected (dotted); click to move", "", height=130)
    clear = {"marker": {"opacity": 0}}  # one invisible marker per saved step: a click picks the nearest in x
    fig.add_trace(go.Scatter(x=np.asarray(steps), y=[0.5] * len(steps), mode="markers", name=SELECT_TRACE,
                             marker={"size": 8, "opacity": 0}, hovertemplate="step %{x}<extra></extra>",
                             showlegend=False, selected=clear, unselected=clear))
    fig.update_layout(margin={"l": 60, "r": 20, "t": 30, "b": 40}, showlegend=False, title_font_size=13,
                      hovermode="x")
    fig.update_yaxes(visible=False, range=[0, 1], fixedrange=True)
    fig.update_xaxes(range=[steps[0], steps[-1]])
    plots.decorate(fig, phases, ctx.step)
    chart(fig, key)
