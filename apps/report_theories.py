"""The diff report's Theories section (issue 15): every theory's measure of progress over the whole
run, normalised to [0, 1] on one step axis, with the two compared checkpoints marked, where each
measure places the transition (the change-point rule of :mod:`probes.theories`) and how far apart
they are. Computed by :func:`probes.theories.diff_section` (the report's ``theories`` entry);
rendered here as a Markdown table, and in HTML as a Plotly figure and the table.

:func:`markdown_lines` and :func:`html_blocks` are the section; :mod:`apps.report`'s renderers end
both pages with it.
"""

from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go

from apps.report_rows import html_table, md_table, md_text

TITLE = "Theories"
INTRO = ("Each theory's measure of progress over the whole run, normalised to [0, 1] (0 → 1 = progress), "
         "with the compared checkpoints marked. Transition rule: ")
HEADER = ["measure", "transition (step)", "from median", "vs compared steps"]
MARK_COLORS = {"a": "#9ecae1", "b": "#08519c"}


def _where(step: int | None, marks: dict[str, int]) -> str:
    if step is None:
        return "none"
    a, b = marks.get("a"), marks.get("b")
    if a is not None and b is not None:
        return "before" if step < a else "after" if step > b else "between"
    (label, m), = marks.items()
    return f"{'before' if step < m else 'at' if step == m else 'after'} {'before' if label == 'a' else 'after'}"


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:+.0f}" if isinstance(x, float) else str(x)


def rows(part: dict[str, Any]) -> list[list[str]]:
    """One table row per measure of one run's part of the section."""
    return [[r["measure"], _num(r["transition"]), _num(r["from_median"]), _where(r["transition"], part["marks"])]
            for r in part["table"]]


def _lines(part: dict[str, Any]) -> tuple[str, str, str]:
    """(heading line, spread line, missing line) of one run's part, plain text."""
    marks = ", ".join(f"{'before' if k == 'a' else 'after'} = step {v}" for k, v in part["marks"].items())
    spread = part["spread"]
    found = sum(r["transition"] is not None for r in part["table"])
    spread_text = (f"Spread of the transitions (latest − earliest): {spread} steps over {found} measures."
                   if spread is not None else "No measure crosses half-way for good: no transition to compare.")
    missing = "; ".join(f"{m['measure']} ({m['how']})" for m in part["missing"])
    return (f"Run {part['name']} ({marks}).", spread_text,
            f"Missing measures: {missing}." if missing else "Every measure is present.")


def _absent(d: dict[str, Any]) -> str:
    if d.get("kind") == "sequence":
        return "Not computed for sequence tasks (the theories' measures are probes of the p×p grid tasks)."
    return "Not in this report (written before the section existed)."


def markdown_lines(d: dict[str, Any]) -> list[str]:
    """The section as Markdown lines."""
    out = [f"## {TITLE}", ""]
    parts = d.get("theories")
    if parts is None:
        return [*out, _absent(d), ""]
    out += [INTRO + parts[0]["rule"] + "." if parts else INTRO, ""]
    for part in parts:
        head, spread, missing = _lines(part)
        out += [md_text(head), "", md_table(HEADER, rows(part))]
        out += ["", spread, "", md_text(missing), ""]
    return out


def figure(part: dict[str, Any]) -> go.Figure:
    """The normalised curves of one run on its step axis, compared steps as solid lines,
    transitions as dotted ones."""
    curves = part["curves"]
    fig = go.Figure()
    for name in (k for k in curves if k != "step"):
        fig.add_trace(go.Scatter(x=curves["step"], y=curves[name], mode="lines", name=name, connectgaps=True))
    for label, step in part["marks"].items():
        fig.add_vline(x=step, line_color=MARK_COLORS.get(label, "#444"), line_width=2,
                      annotation_text=f"{'before' if label == 'a' else 'after'} ({step})")
    for r in part["table"]:
        if r["transition"] is not None:
            fig.add_vline(x=r["transition"], line_dash="dot", line_width=1, opacity=0.6)
    fig.update_layout(title=f"Measures of progress, normalised: {part['name']}", height=420,
                      legend_title_text="measure")
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="progress (0 → 1)", range=[-0.05, 1.05])
    return fig


def html_blocks(d: dict[str, Any], with_plotlyjs: bool) -> str:
    """The section as HTML; ``with_plotlyjs``: embed the plotly.js bundle (the page has none yet)."""
    import plotly.io as pio

    e = html.escape
    out = [f"<h2 id='theories'>{TITLE}</h2>"]
    parts = d.get("theories")
    if parts is None:
        return out[0] + f"<p>{e(_absent(d))}</p>"
    out.append(f"<p>{e(INTRO + (parts[0]['rule'] + '.' if parts else ''))}</p>")
    for i, part in enumerate(parts):
        head, spread, missing = _lines(part)
        out += [f"<p><b>{e(head)}</b></p>", html_table(HEADER, rows(part)), f"<p>{e(spread)}</p>",
                f"<p class='note'>{e(missing)}</p>" if part["missing"] else f"<p>{e(missing)}</p>"]
        if len(part["curves"]) > 1:
            out.append(pio.to_html(figure(part), include_plotlyjs=with_plotlyjs and i == 0, full_html=False,
                                   div_id=f"fig-theories-{i}", config={"displaylogo": False, "responsive": True}))
    return "\n".join(out)
