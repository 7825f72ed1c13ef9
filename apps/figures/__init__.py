"""One figure library for the dashboard, the HTML diff report and notebooks.

Every figure is a function of a :class:`interp.Run` (or a run directory) and a step returning a Plotly figure::

    from apps import figures
    fig = figures.fourier_norms(run, step)              # W_E / W_L norms per frequency (Nanda et al. Fig. 3)
    fig = figures.view(run, "fve_heatmap", step)        # the same through the catalogue
    figures.VIEWS                                       # name -> View(fn, title, needs, over_training, ...)
    figures.at(run, step).view("embedding_circle")      # MIScope-style: a run at a step, then a view
    figures.export(fig, "fig.csv")                      # the data behind it; .html always, .svg/.png need kaleido

Probe-based views read ``RUN/probes/`` (run ``grokscope probe RUN`` first; they raise LookupError otherwise);
views marked ``checkpoint`` run the checkpoint once over the p×p grid (cached per step).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from apps.figures import source
from apps.figures.fourier import (
    before_after,
    embedding_circle,
    fourier_norms,
    fve_heatmap,
    key_at,
    key_freq_strength,
    logit_fourier_2d,
    top_neurons,
)
from apps.figures.training import (
    animate_attention_freq,
    animate_clusters,
    animate_logit_coef,
    animate_neuron,
    animate_norms,
    attention_freq,
    excluded_loss,
    logit_coefficients,
)
from interp import Run


@dataclass(frozen=True)
class View:
    """A named figure: ``fn(run, step)``; ``needs``: probe results it reads ('checkpoint' for a grid readout);
    ``over_training``: a time series / animation (the step only marks it); ``page``: where the dashboard shows it."""

    name: str
    fn: Callable[..., go.Figure]
    title: str
    needs: tuple[str, ...]
    page: str
    over_training: bool = False


VIEWS: dict[str, View] = {v.name: v for v in [
    View("fourier_norms", fourier_norms, "W_E and W_L norms per Fourier frequency, before/after overlay (Fig. 3)",
         ("fourier.embed", "fourier.logit_map", "fourier.key_freqs"), "Fourier"),
    View("fve_heatmap", fve_heatmap, "Neuron × frequency FVE, neurons sorted by cluster", ("fourier.neurons",),
         "Fourier"),
    View("top_neurons", top_neurons, "Top neurons of each key frequency over (a, b)",
         ("fourier.neurons", "checkpoint"), "Fourier"),
    View("embedding_circle", embedding_circle, "Embedding in the plane of each key frequency",
         ("checkpoint", "fourier.key_freqs"), "Fourier"),
    View("logit_fourier_2d", logit_fourier_2d, "Logit norms in the 2D Fourier basis (Fig. 4)", ("checkpoint",),
         "Fourier"),
    View("key_freq_strength", key_freq_strength, "Share of logit variance per frequency over training, key floor",
         ("fourier.logits",), "Fourier", over_training=True),
    View("logit_coefficients", logit_coefficients, "Each key frequency's logit coefficient over training (Fig. 14)",
         ("fourier.logits", "fourier.key_freqs"), "Fourier", over_training=True),
    View("excluded_loss", excluded_loss, "Excluded loss per key frequency over training (Fig. 15)",
         ("progress.restricted",), "Progress measures", over_training=True),
    View("attention_freq", attention_freq, "Per-head attention frequency", ("checkpoint",), "Attention"),
    View("animate_embed_norms", lambda run, step=None: animate_norms(run, "fourier.embed"),
         "W_E norms per frequency, animated over training", ("fourier.embed",), "Fourier", over_training=True),
    View("animate_logit_map_norms", lambda run, step=None: animate_norms(run, "fourier.logit_map"),
         "W_L norms per frequency, animated over training", ("fourier.logit_map",), "Fourier", over_training=True),
    View("animate_clusters", lambda run, step=None: animate_clusters(run),
         "Neuron cluster sizes, animated over training", ("fourier.neurons",), "Fourier", over_training=True),
    View("animate_attention_freq", lambda run, step=None: animate_attention_freq(run),
         "Per-head attention frequency, animated over training", ("fourier.attention",), "Attention",
         over_training=True),
    View("animate_logit_coef", lambda run, step=None: animate_logit_coef(run),
         "Logit coefficients per frequency, animated over training", ("fourier.logits",), "Fourier",
         over_training=True),
    View("animate_neuron", lambda run, step=None, neuron=None: animate_neuron(run, neuron),
         "One neuron of each final key frequency over (a, b), animated over training", ("fourier.neuron_acts",),
         "Fourier", over_training=True),
]}


def view(run: Run | str | os.PathLike, name: str, step: int | None = None, **options) -> go.Figure:
    """The named view of ``run`` at ``step`` (default: the last saved step); ``options`` go to the view's
    function (e.g. ``neuron=`` for ``animate_neuron``)."""
    if name not in VIEWS:
        raise KeyError(f"unknown view {name!r}; known: {', '.join(VIEWS)}")
    run = source.as_run(run)
    return VIEWS[name].fn(run, run.steps[-1] if step is None else run.nearest_step(int(step)), **options)


@dataclass(frozen=True)
class RunAt:
    """A run at one step: ``at(run, step).view(name)``."""

    run: Run
    step: int

    def view(self, name: str) -> go.Figure:
        return view(self.run, name, self.step)


def at(run: Run | str | os.PathLike, step: int | None = None) -> RunAt:
    run = source.as_run(run)
    return RunAt(run, run.steps[-1] if step is None else run.nearest_step(int(step)))


def to_frame(fig: go.Figure) -> pd.DataFrame:
    """The data behind a figure, long format: one row per point of every trace (trace, x, y[, z])."""
    parts = []
    for i, tr in enumerate(fig.data):
        name = tr.name or f"trace {i}"
        z = getattr(tr, "z", None)
        if z is not None:
            zz = pd.DataFrame(list(z), index=list(tr.y) if tr.y is not None else None,
                              columns=list(tr.x) if tr.x is not None else None)
            long = zz.stack(future_stack=True).reset_index()
            long.columns = ["y", "x", "z"]
            parts.append(long.assign(trace=name)[["trace", "x", "y", "z"]])
        elif getattr(tr, "x", None) is not None and getattr(tr, "y", None) is not None:
            parts.append(pd.DataFrame({"trace": name, "x": list(tr.x), "y": list(tr.y)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["trace", "x", "y"])


def can_export_images() -> bool:
    """Whether static PNG/SVG export is available (Plotly's ``to_image`` needs the kaleido package)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return True


def export(fig: go.Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` by suffix: ``.csv`` (:func:`to_frame`), ``.html`` (self-contained, works offline),
    ``.json`` (Plotly JSON), ``.svg`` / ``.png`` / ``.pdf`` (need kaleido: RuntimeError when it is missing)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        to_frame(fig).to_csv(path, index=False)
    elif suffix == ".html":
        fig.write_html(path, include_plotlyjs=True, full_html=True)
    elif suffix == ".json":
        path.write_text(fig.to_json())
    elif suffix in (".svg", ".png", ".pdf"):
        if not can_export_images():
            raise RuntimeError(f"exporting {suffix} needs the kaleido package (pip install kaleido); "
                               "export .html or .csv instead")
        fig.write_image(path)
    else:
        raise ValueError(f"unknown export format {suffix!r}: use .csv, .html, .json, .svg, .png or .pdf")
    return path


__all__ = [
    "VIEWS",
    "View",
    "animate_attention_freq",
    "animate_clusters",
    "animate_logit_coef",
    "animate_neuron",
    "animate_norms",
    "at",
    "attention_freq",
    "before_after",
    "can_export_images",
    "embedding_circle",
    "excluded_loss",
    "export",
    "fourier_norms",
    "fve_heatmap",
    "key_at",
    "key_freq_strength",
    "logit_coefficients",
    "logit_fourier_2d",
    "source",
    "to_frame",
    "top_neurons",
    "view",
]
