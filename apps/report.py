"""Rendering of checkpoint diff reports (:func:`probes.diff.compare`) as Markdown and as one HTML file.

    from apps.report import to_html, to_markdown
    Path("diff.html").write_text(to_html(report))

Both renderers read only the report's plain-data dict (``DiffReport.data``), so a report loaded
back from JSON renders exactly as the original. The HTML embeds the plotly.js bundle once, inline,
with the first figure; the file needs no network to open.

:func:`render_markdown` and :func:`render_html` list the sections in order; each section is built
by :mod:`apps.report_sections` (tables from :mod:`apps.report_rows`, figures from
:mod:`apps.report_figures`, the sequence-task sinks from :mod:`apps.report_seq`). Grid reports have
behaviour, Fourier, weights, attention and representation; sequence-task reports (issue 13) have
behaviour, weights, attention and sinks and representation, and say why Fourier does not apply.
A new section is a function ``(d, html) -> Section | None`` (see :class:`apps.report_sections.Section`)
and one line in each renderer: ``parts += section_markdown(...)``, ``body += section_html(...)``. The
Theories section (:mod:`apps.report_theories`, issue 15) ends both pages.
"""

from __future__ import annotations

import html
import re
from typing import Any

from apps import report_theories
from apps.report_rows import ARROW, html_table, md_table, md_text
from apps.report_sections import Section, attention, behaviour, fourier, representation, sinks, weights
from probes.diff import DiffReport

__all__ = ["ARROW", "md_text", "render_html", "render_markdown", "to_html", "to_markdown"]


# ====================================================================== Markdown
def section_markdown(s: Section | None) -> list[str]:
    """A section's Markdown lines (none for None): title, intro, notes, then each table."""
    if s is None:
        return []
    out = [f"## {s.title}", ""]
    out += [s.intro, ""] if s.intro else []
    for note in s.notes:
        out += [md_text(note), ""]
    for t in s.tables:
        out += [t.caption, ""] if t.caption else []
        out += [md_table(t.header, t.rows), ""]
    return out


def render_markdown(d: dict[str, Any]) -> str:
    """Compact Markdown: summary, then one table per section."""
    a, b = d["a"], d["b"]
    parts = [f"# Checkpoint diff: {md_text(a['label'])} {ARROW} {md_text(b['label'])}", ""]
    parts += [f"- {md_text(s)}" for s in d["summary"]]
    parts += [""] + [f"> **Note.** {md_text(n)}\n" for n in d["notes"]]
    parts += section_markdown(behaviour(d, html=False))
    parts += section_markdown(fourier(d, html=False))
    parts += section_markdown(weights(d, html=False))
    parts += section_markdown(attention(d, html=False))
    parts += section_markdown(sinks(d, html=False))
    parts += section_markdown(representation(d, html=False))
    parts += report_theories.markdown_lines(d)
    return "\n".join(parts).rstrip() + "\n"


# ====================================================================== HTML
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}
th{background:#f4f4f4}.summary{background:#f6f8fa;border-left:4px solid #4c78a8;padding:.6em 1.2em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}.meta{color:#666;font-size:.9em}
"""


def _inline_html(text: str) -> str:
    """Our own intro text as HTML: escaped, with `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


def _figure_html(fig: dict[str, Any], first: bool, div_id: str) -> str:
    import plotly.io as pio

    return pio.to_html(fig, include_plotlyjs=first, full_html=False, validate=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


class _Figures:
    """Numbers the figures of a page; the first one carries the plotly.js bundle."""

    def __init__(self) -> None:
        self.n = 0

    def html(self, key: str, figs: list[dict[str, Any]]) -> str:
        out = []
        for fig in figs:
            out.append(_figure_html(fig, first=self.n == 0, div_id=f"fig-{key}-{self.n}"))
            self.n += 1
        return "\n".join(out)


def section_html(s: Section | None, figures: _Figures) -> list[str]:
    """A section's HTML blocks (none for None): heading, intro, notes and tables, figures."""
    if s is None:
        return []
    text = f"<p>{_inline_html(s.intro)}</p>" if s.intro else ""
    text += "".join(f"<p class='note'>{html.escape(n)}</p>" for n in s.notes)
    text += "".join(html_table(t.header, t.rows) for t in s.tables)
    return [f"<h2 id='{s.key}'>{html.escape(s.title)}</h2>", text, figures.html(s.key, s.figures)]


def render_html(d: dict[str, Any]) -> str:
    """One self-contained HTML page: summary, notes, then each section's tables and figures."""
    e = html.escape
    a, b = d["a"], d["b"]
    figures = _Figures()
    body = [f"<h1>Checkpoint diff: {e(a['label'])} {ARROW} {e(b['label'])}</h1>",
            f"<p class='meta'>before: {e(a['run'])} step {a['step']} · after: {e(b['run'])} step {b['step']}</p>",
            "<div class='summary' id='summary'><ul>" + "".join(f"<li>{e(s)}</li>" for s in d["summary"])
            + "</ul></div>"]
    body += [f"<p class='note'><b>Note.</b> {e(note)}</p>" for note in d["notes"]]
    body += section_html(behaviour(d, html=True), figures)
    body += section_html(fourier(d, html=True), figures)
    body += section_html(weights(d, html=True), figures)
    body += section_html(attention(d, html=True), figures)
    body += section_html(sinks(d, html=True), figures)
    body += section_html(representation(d, html=True), figures)
    body.append(report_theories.html_blocks(d, with_plotlyjs=figures.n == 0))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>diff {e(a['label'])} {ARROW} {e(b['label'])}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _data(report: DiffReport | dict[str, Any]) -> dict[str, Any]:
    return report.data if isinstance(report, DiffReport) else report


def to_markdown(report: DiffReport | dict[str, Any]) -> str:
    """A report (or its ``data`` dict) as Markdown."""
    return render_markdown(_data(report))


def to_html(report: DiffReport | dict[str, Any]) -> str:
    """A report (or its ``data`` dict) as one self-contained HTML page."""
    return render_html(_data(report))

