"""The sections of a checkpoint diff report, as :class:`Section` values that :mod:`apps.report`
renders to Markdown and to HTML. Each builder reads the report's plain-data dict
(``DiffReport.data``, grid or sequence kind) and returns a Section, or None when the section is not
part of that kind of report. A section that does not apply says why in its ``notes``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apps import report_figures as figs
from apps import report_rows as rows
from apps import report_seq
from probes.diff import fmt


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""  # Markdown only: a line before the table


@dataclass
class Section:
    """One report section: ``intro`` is our own text (``code`` in backticks), ``notes`` plain text
    (escaped when rendered), then tables and, in HTML, plotly figure dicts."""

    key: str
    title: str
    intro: str = ""
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)


def is_seq(d: dict[str, Any]) -> bool:
    return d.get("kind", "grid") == "sequence"


def behaviour(d: dict[str, Any], html: bool) -> Section:
    s = Section("behaviour", "Behaviour", tables=[Table(["metric", "before", "after", "Δ"], rows.behaviour_rows(d))])
    if is_seq(d):
        s.notes = [f"Losses and accuracies over {d['behaviour']['scope']}.", d["absent"]["flips"],
                   d["absent"]["restricted"]]
        return s
    flips = rows.flip_rows(d)
    if flips:
        s.tables.append(Table(["inputs", "wrong → right", "right → wrong", "both right", "both wrong"], flips,
                              caption="Prediction flips:"))
    s.figures = figs.behaviour_figures(d) if html else []
    return s


def fourier(d: dict[str, Any], html: bool) -> Section:
    if is_seq(d):
        return Section("fourier", "Fourier", notes=[d["absent"]["fourier"]])
    s = Section("fourier", "Fourier", tables=[Table(["", "before", "after"], rows.fourier_rows(d)),
                                              Table(rows.FREQ_HEADER, rows.freq_table(d))])
    neurons = rows.neuron_rows(d)
    if neurons:
        s.tables.append(Table(["neurons that…", "count", "ids"], neurons))
    s.figures = figs.fourier_figures(d) if html else []
    return s


def weights(d: dict[str, Any], html: bool) -> Section:
    header, wrows = rows.weight_rows(d)
    spectrum = (Table(["matrix", "σ before (top 3)", "σ after (top 3)"], rows.spectrum_rows(d)) if html else
                Table(["matrix", "σ before", "σ after"], rows.spectrum_rows(d, per_head=False),
                      caption=f"Top singular values (first 3 of {d['spectra']['k']}, all in the JSON):"))
    return Section("weights", "Weights", tables=[Table(header, wrows), spectrum],
                   figures=figs.weight_figures(d) if html else [])


def attention(d: dict[str, Any], html: bool) -> Section | None:
    """The grid's readout attention (sequence reports have :func:`sinks` instead)."""
    if is_seq(d):
        return None
    return Section("attention", "Attention",
                   intro="At the readout (`=`) query; sink share = share of readout attention on `=`.",
                   tables=[Table(["head", "entropy", "effective tokens", "sink share"], rows.attention_rows(d)),
                           Table(["", "before", "after"], rows.attention_summary_rows(d))],
                   figures=figs.attention_figures(d) if html else [])


def sinks(d: dict[str, Any], html: bool) -> Section | None:
    """Sequence reports: sinks, value drain, residual peak and readout sparsity (:mod:`apps.report_seq`)."""
    if not is_seq(d):
        return None
    return Section("sinks", "Attention and sinks", intro=report_seq.intro(d),
                   tables=[Table(["", "before", "after"], report_seq.summary_rows(d)),
                           Table(report_seq.head_header(d), report_seq.head_rows(d),
                                 caption="Per head (before → after):"),
                           Table(report_seq.STREAM_HEADER, report_seq.stream_rows(d),
                                 caption="Per residual stream (before → after):")],
                   figures=report_seq.figures(d) if html else [])


def representation(d: dict[str, Any], html: bool) -> Section | None:
    rep = d["representation"]
    if not rep:
        return None
    where = ("the loss-carrying positions of the run's fixed probe batch" if is_seq(d) else "the full input grid")
    return Section("representation", "Representation similarity",
                   intro=f"Linear CKA (Kornblith et al. 2019) over {where}.",
                   tables=[Table(["activations", "CKA"], [[r["what"], fmt(r["cka"], 4)] for r in rep])],
                   figures=figs.representation_figures(d) if html else [])
