"""Plotly helpers shared by the pages: time plots with the selected step and the phases,
frequency labels, heatmaps. Every figure gets labelled axes (with units where they apply)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from probes.phases import Phases

PHASE_COLORS = {"memorization": "rgba(99,110,250,0.10)", "circuit formation": "rgba(239,85,59,0.12)",
                "clean-up": "rgba(0,204,150,0.12)"}
STEP_LINE = {"color": "black", "width": 1.5, "dash": "dot"}
HEIGHT = 340
#: line colours (Plotly's qualitative palette), assigned in trace order so series stay distinguishable
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#000000", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5"]  # 16 distinct (issue 14)


def time_figure(title: str, y_title: str, *, log_y: bool = False, height: int = HEIGHT) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      legend={"orientation": "h", "y": -0.25}, hovermode="x unified")
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear")
    return fig


def side_legend(fig: go.Figure) -> go.Figure:
    """With more than four series the legend goes on the right, one entry a row (under the x axis it would
    wrap into rows that cover the axis title)."""
    if sum(1 for t in fig.data if t.showlegend is not False) > 4:
        fig.update_layout(legend={"orientation": "v", "x": 1.02, "y": 1, "yanchor": "top"})
    return fig


def add_line(fig: go.Figure, x, y, name: str, **kw) -> go.Figure:
    color = PALETTE[len(fig.data) % len(PALETTE)]
    fig.add_trace(go.Scatter(x=np.asarray(x), y=np.asarray(y, dtype=np.float64), name=name,
                             mode=kw.pop("mode", "lines"), line=kw.pop("line", {"color": color}), **kw))
    return fig


def _vline(x: float, name: str, line: dict) -> dict:
    return {"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1, "line": line,
            "name": name}


def _label(x: float, text: str, top: bool, anchor: str = "left") -> dict:
    return {"x": x, "xref": "x", "y": 1 if top else 0, "yref": "paper", "text": text, "showarrow": False,
            "xanchor": anchor, "yanchor": "top" if top else "bottom", "font": {"size": 10}}


def mark_step(fig: go.Figure, step: int | None) -> go.Figure:
    """The selected step as a vertical dotted line (a layout shape named ``selected step``)."""
    return decorate(fig, None, step)


def decorate(fig: go.Figure, phases: Phases | None, step: int | None, *, annotate: bool = True,
             layer: str = "below") -> go.Figure:
    """Shade the known phases (labels alternate top / bottom so neighbours never overlap), draw the
    grokking step as a dashed green line and the selected step as a dotted black one. Everything
    goes in as plain dicts in one layout update (``layer="above"`` for heatmaps, which hide what is
    below): ``add_vrect`` / ``add_vline`` cost ~5 ms each, and a
    page draws dozens."""
    shapes, labels = [], []
    if phases is not None:
        for i, (label, lo, hi) in enumerate(phases.spans()):
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": lo, "x1": hi, "y0": 0, "y1": 1,
                           "fillcolor": PHASE_COLORS[label], "line": {"width": 0}, "layer": layer, "name": label})
            labels.append(_label(lo, label, top=i % 2 == 0))
        if phases.grok_step is not None:
            shapes.append(_vline(phases.grok_step, "grokking step", {"color": "green", "width": 1.5, "dash": "dash"}))
            labels.append(_label(phases.grok_step, f"grok {phases.grok_step}", top=True))
    if step is not None:
        shapes.append(_vline(step, "selected step", STEP_LINE))
    if not shapes:
        return fig
    if fig.layout.shapes or fig.layout.annotations:  # rare: keep what is there
        shapes, labels = [*fig.layout.shapes, *shapes], [*fig.layout.annotations, *labels]
    fig.update_layout(shapes=shapes, annotations=labels if annotate else list(fig.layout.annotations))
    return fig


def freq_labels(p: int) -> list[str]:
    """Labels of the Fourier basis of Z_p in the probes' order: const, cos 1, sin 1, …"""
    labels = ["const"]
    for k in range(1, p // 2 + 1):
        labels.append(f"cos {k}")
        if 2 * k != p:
            labels.append(f"sin {k}")
    return labels


def heatmap(z: np.ndarray, x: Sequence, y: Sequence, *, title: str, x_title: str, y_title: str,
            colorbar: str, colorscale: str = "Viridis", zmid: float | None = None, height: int = 380,
            log_color: bool = False, **kw) -> go.Figure:
    """A heatmap; z travels as a float32 typed array. ``log_color`` colours by log10 of
    the value (for values spanning decades) while the hover shows the value itself."""
    z = np.asarray(z, dtype=np.float32)
    extra = {}
    if log_color:
        extra = {"customdata": z, "hovertemplate": "x=%{x}<br>y=%{y}<br>value=%{customdata:.4g}<extra></extra>"}
        z = np.log10(np.clip(z, 1e-12, None)).astype(np.float32)
        colorbar = f"log₁₀ {colorbar}"
    fig = go.Figure(go.Heatmap(z=z, x=list(x), y=list(y), colorscale=colorscale, zmid=zmid,
                               colorbar={"title": {"text": colorbar}}, **extra, **kw))
    fig.update_layout(title=title, height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


def bar(x: Sequence, y: Sequence, *, title: str, x_title: str, y_title: str, height: int = HEIGHT,
        log_y: bool = False) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(x), y=np.asarray(y, dtype=np.float64)))
    fig.update_layout(title=title, height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear")
    return fig


def spans_decades(values, decades: float = 2.0) -> bool:
    """True when the positive values span at least ``decades`` orders of magnitude."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return bool(len(v)) and np.log10(v.max() / v.min()) >= decades
