"""Rendering of checkpoint diff reports (:func:`probes.diff.compare`) as Markdown and as one HTML file.

    from apps.report import to_html, to_markdown
    Path("diff.html").write_text(to_html(report))

Both renderers read only the report's plain-data dict (``DiffReport.data``), so a report loaded
back from JSON renders exactly as the original. The HTML embeds the plotly.js bundle once, inline,
with the first figure; the file needs no network to open.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from apps.report_theories import with_theories
from probes.diff import BOTH_RIGHT, BOTH_WRONG, INVALID, RIGHT_TO_WRONG, WRONG_TO_RIGHT, DiffReport, fmt, fmt_set

ARROW = "→"


# ====================================================================== shared helpers
def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _sv(vals: Sequence[float] | None, n: int = 3) -> str:
    return "n/a" if vals is None else ", ".join(fmt(v) for v in vals[:n])


def _head_labels(arr: list[list[Any]]) -> list[str]:
    return [f"L{i}H{h}" for i, row in enumerate(arr) for h in range(len(row))]


def _flat(arr: list[list[Any]]) -> list[Any]:
    return [v for row in arr for v in row]


def _freq_rows(d: dict[str, Any]) -> list[int]:
    """Frequencies to tabulate: the key frequencies of either side, else the 5 largest W_L (or, without
    an MLP, W_E) norms after."""
    kf = d["fourier"]["key_freqs"]
    ks = sorted(set(kf["a"]) | set(kf["b"]))
    if ks:
        return ks
    norms = np.asarray(d["fourier"]["logit_map"]["norms"]["b"], dtype=float)[1:]
    if not np.isfinite(norms).any():  # attention-only: no W_L
        norms = np.asarray(d["fourier"]["embed"]["norms"]["b"], dtype=float)[1:]
    return sorted((np.argsort(-np.nan_to_num(norms, nan=-1.0), kind="stable")[:5] + 1).tolist())


def _at(arr: Sequence[float | None] | None, k: int) -> float | None:
    return None if arr is None or k >= len(arr) else arr[k]


def _behaviour_rows(d: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in d["behaviour"]["metrics"]:
        show = _pct if r["name"].endswith("_acc") else fmt
        dlt = _delta(r["a"], r["b"])
        rows.append([r["label"], show(r["a"]), show(r["b"]),
                     "n/a" if dlt is None else (f"{100 * dlt:+.1f} pp" if r["name"].endswith("_acc")
                                                else f"{dlt:+.3g}")])
    return rows


def _flip_rows(d: dict[str, Any]) -> list[list[str]]:
    flips = d["behaviour"].get("flips")
    if not flips:
        return []
    return [[split, str(c["wrong_to_right"]), str(c["right_to_wrong"]), str(c["both_right"]), str(c["both_wrong"])]
            for split, c in flips["counts"].items()]


def _fourier_rows(d: dict[str, Any]) -> list[list[str]]:
    f = d["fourier"]
    kf, nr, lg = f["key_freqs"], f["neurons"], f["logits"]
    rows = [
        ["key frequencies", fmt_set(kf["a"]), fmt_set(kf["b"])],
        ["W_E Gini", fmt(f["embed"]["gini"]["a"]), fmt(f["embed"]["gini"]["b"])],
        ["W_L Gini", fmt(f["logit_map"]["gini"]["a"]), fmt(f["logit_map"]["gini"]["b"])],
        ["clustered neurons", f"{fmt(nr['n_clustered']['a'])} / {nr['d_mlp']['a']}",
         f"{fmt(nr['n_clustered']['b'])} / {nr['d_mlp']['b']}"],
        ["dead neurons", fmt(nr["n_dead"]["a"]), fmt(nr["n_dead"]["b"])],
        ["logit FVE, key freqs", fmt(lg["fve_key"]["a"]), fmt(lg["fve_key"]["b"])],
        ["logit FVE, all freqs", fmt(lg["fve_all"]["a"]), fmt(lg["fve_all"]["b"])],
    ]
    return rows


def _freq_table(d: dict[str, Any]) -> list[list[str]]:
    f = d["fourier"]
    kf = f["key_freqs"]
    rows = []
    for k in _freq_rows(d):
        status = ("gained" if k in kf["gained"] else "kept" if k in kf["kept"] else
                  "lost" if k in kf["lost"] else "")
        rows.append([str(k), status,
                     fmt(_at(f["embed"]["norms"]["a"], k)), fmt(_at(f["embed"]["norms"]["b"], k)),
                     fmt(_at(f["logit_map"]["norms"]["a"], k)), fmt(_at(f["logit_map"]["norms"]["b"], k)),
                     fmt(_at(f["logits"]["coef"]["a"], k)), fmt(_at(f["logits"]["coef"]["b"], k)),
                     fmt(_at(f["neurons"]["cluster_sizes"]["a"], k)), fmt(_at(f["neurons"]["cluster_sizes"]["b"], k))])
    return rows


FREQ_HEADER = ["k", "", "‖W_E‖ before", "after", "‖W_L‖ before", "after", "logit coef before", "after",
               "cluster before", "after"]


def _neuron_rows(d: dict[str, Any]) -> list[list[str]]:
    nr = d["fourier"]["neurons"]
    if "joined_cluster" not in nr:
        return []
    labels = [("joined_cluster", "joined a frequency cluster"), ("left_cluster", "left a frequency cluster"),
              ("changed_freq_clustered", "switched cluster (clustered before and after)"),
              ("changed_freq", "changed dominant frequency (alive before and after)"),
              ("became_dead", "became dead"), ("revived", "came back to life")]
    return [[text, str(len(nr[key])), _ids(nr[key])] for key, text in labels]


def _ids(ids: Sequence[int], n: int = 12) -> str:
    more = f", … (+{len(ids) - n})" if len(ids) > n else ""
    return ", ".join(str(i) for i in ids[:n]) + more


def _weight_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    if d["aligned"]:
        header = ["parameter", "shape", "‖W_A‖", "‖W_B‖", "‖ΔW‖", "‖ΔW‖/‖W_A‖", "cos(W_A, W_B)", "Δ‖W‖"]
        rows = [[r["name"], "×".join(map(str, r["shape_a"])), fmt(r["norm_a"]), fmt(r["norm_b"]), fmt(r["delta"]),
                 _pct(r["rel_change"]), fmt(r["cosine"], 4), f"{r['norm_change']:+.3g}"] for r in d["weights"]]
    else:
        header = ["parameter", "shape A", "shape B", "‖W_A‖", "‖W_B‖", "Δ‖W‖"]
        rows = [[r["name"], "×".join(map(str, r["shape_a"])), "×".join(map(str, r["shape_b"])), fmt(r["norm_a"]),
                 fmt(r["norm_b"]), f"{r['norm_change']:+.3g}"] for r in d["weights"]]
    return header, rows


def _spectrum_rows(d: dict[str, Any], per_head: bool = True) -> list[list[str]]:
    """Top-3 singular values per matrix; with ``per_head=False`` the matrices of one stacked parameter
    (``W_Q[0]``, ``W_Q[1]``, …) share a row listing σ₁ of each head."""
    if per_head:
        return [[m["name"], _sv(m["a"]), _sv(m["b"])] for m in d["spectra"]["matrices"]]
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in d["spectra"]["matrices"]:
        groups.setdefault(m["name"].split("[")[0], []).append(m)
    rows = []
    for base, ms in groups.items():
        if len(ms) == 1 and "[" not in ms[0]["name"]:
            rows.append([base, _sv(ms[0]["a"]), _sv(ms[0]["b"])])
        else:
            first = lambda m, side: "n/a" if not m[side] else fmt(m[side][0])
            rows.append([f"{base}[0–{len(ms) - 1}] (σ₁ per head)", ", ".join(first(m, "a") for m in ms),
                         ", ".join(first(m, "b") for m in ms)])
    return rows


def _attention_rows(d: dict[str, Any]) -> list[list[str]]:
    h = d["attention"]["heads"]
    labels = _head_labels(h["entropy"]["b"])
    cols = [(_flat(h[k]["a"]), _flat(h[k]["b"])) for k in ("entropy", "eff_tokens", "sink_share")]
    rows = []
    for i, label in enumerate(labels):
        cells = []
        for a, b in cols:
            av, bv = _at(a, i), _at(b, i)
            dl = _delta(av, bv)
            cells.append(f"{fmt(av)} {ARROW} {fmt(bv)}" + ("" if dl is None else f" ({dl:+.3g})"))
        rows.append([label, *cells])
    return rows


def _attention_summary_rows(d: dict[str, Any]) -> list[list[str]]:
    at = d["attention"]
    return [["mean readout entropy (nats)", fmt(at["readout_entropy"]["a"]), fmt(at["readout_entropy"]["b"])],
            ["mean readout effective tokens", fmt(at["readout_eff_tokens"]["a"]), fmt(at["readout_eff_tokens"]["b"])],
            ["sink rate (% heads)", fmt(at["sink_rate"]["a"]), fmt(at["sink_rate"]["b"])]]


# ====================================================================== Markdown
_MD_ACTIVE = str.maketrans({c: "\\" + c for c in "\\`*_[]|~"})


def md_text(s: Any) -> str:
    """``s`` as literal Markdown text: one line, HTML characters as entities, Markdown's markup
    characters backslash-escaped (run names and other user strings go through here)."""
    text = html.escape(" ".join(str(s).splitlines()), quote=False).translate(_MD_ACTIVE)
    return "\\" + text if text[:1] in ("#", "+", "-", "!", ">", "=") else text


def _md_cell(s: Any) -> str:
    return html.escape(" ".join(str(s).splitlines()), quote=False).replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = _md_cell
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(d: dict[str, Any]) -> str:
    """Compact Markdown: summary, then one table per section."""
    a, b = d["a"], d["b"]
    parts = [f"# Checkpoint diff: {md_text(a['label'])} {ARROW} {md_text(b['label'])}", ""]
    parts += [f"- {md_text(s)}" for s in d["summary"]]
    parts += [""] + [f"> **Note.** {md_text(n)}\n" for n in d["notes"]]
    parts += ["## Behaviour", "", _md_table(["metric", "before", "after", "Δ"], _behaviour_rows(d)), ""]
    flips = _flip_rows(d)
    if flips:
        parts += ["Prediction flips:", "",
                  _md_table(["inputs", "wrong → right", "right → wrong", "both right", "both wrong"], flips), ""]
    parts += ["## Fourier", "", _md_table(["", "before", "after"], _fourier_rows(d)), "",
              _md_table(FREQ_HEADER, _freq_table(d)), ""]
    neurons = _neuron_rows(d)
    if neurons:
        parts += [_md_table(["neurons that…", "count", "ids"], neurons), ""]
    header, rows = _weight_rows(d)
    parts += ["## Weights", "", _md_table(header, rows), "",
              f"Top singular values (first 3 of {d['spectra']['k']}, all in the JSON):", "",
              _md_table(["matrix", "σ before", "σ after"], _spectrum_rows(d, per_head=False)), ""]
    parts += ["## Attention", "", "At the readout (`=`) query; sink share = share of readout attention on `=`.", "",
              _md_table(["head", "entropy", "effective tokens", "sink share"], _attention_rows(d)), "",
              _md_table(["", "before", "after"], _attention_summary_rows(d)), ""]
    if d["representation"]:
        parts += ["## Representation similarity", "", "Linear CKA (Kornblith et al. 2019) over the full input grid.",
                  "", _md_table(["activations", "CKA"], [[r["what"], fmt(r["cka"], 4)] for r in d["representation"]]),
                  ""]
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

BEFORE, AFTER = "#9ecae1", "#08519c"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _none_to_nan(x: Any) -> Any:
    if isinstance(x, list):
        return [_none_to_nan(v) for v in x]
    return math.nan if x is None else x


def _bars(title: str, x: Sequence[Any], a: Sequence[Any], b: Sequence[Any], xlabel: str, ylabel: str,
          log: bool = False) -> dict[str, Any]:
    return {"data": [{"type": "bar", "name": "before", "x": list(x), "y": _none_to_nan(list(a)),
                      "marker": {"color": BEFORE}},
                     {"type": "bar", "name": "after", "x": list(x), "y": _none_to_nan(list(b)),
                      "marker": {"color": AFTER}}],
            "layout": {"title": {"text": title}, "barmode": "group", "xaxis": {"title": {"text": xlabel}},
                       "yaxis": {"title": {"text": ylabel}, "type": "log" if log else "linear"},
                       "height": 360, "margin": {"t": 50, "b": 50}}}


def _flip_figure(flips: dict[str, Any]) -> dict[str, Any]:
    """Heatmap of the prediction-flip codes over the input grid."""
    codes = [(INVALID, "undefined", "#ffffff"), (BOTH_WRONG, "wrong both", "#d9d9d9"),
             (BOTH_RIGHT, "right both", "#f7fbff"), (WRONG_TO_RIGHT, "wrong → right", "#2ca02c"),
             (RIGHT_TO_WRONG, "right → wrong", "#d62728")]
    lo, hi = INVALID, RIGHT_TO_WRONG
    return {
        "data": [{"type": "heatmap", "z": flips["map"], "zmin": lo - 0.5, "zmax": hi + 0.5,
                  "colorscale": _discrete_scale(codes, lo, hi),
                  "colorbar": {"tickvals": [c for c, _, _ in codes], "ticktext": [t for _, t, _ in codes]},
                  "hovertemplate": "a=%{y} b=%{x}: %{z}<extra></extra>"}],
        "layout": {"title": {"text": "Prediction flips over the input grid (a, b)"},
                   "xaxis": {"title": {"text": "b"}}, "yaxis": {"title": {"text": "a"}, "autorange": "reversed"},
                   "height": 520, "width": 620}}


def _weight_figures(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Relative change (aligned) or norms per parameter, and the top singular values per matrix."""
    w = d["weights"]
    names = [r["name"] for r in w]
    if d["aligned"]:
        figs = [{"data": [{"type": "bar", "x": names, "y": _none_to_nan([r["rel_change"] for r in w]),
                           "marker": {"color": AFTER}}],
                 "layout": {"title": {"text": "Relative change ‖ΔW‖/‖W_A‖ per parameter"}, "height": 380,
                            "yaxis": {"tickformat": ".0%"}, "margin": {"b": 140}}}]
    else:
        figs = [_bars("Parameter norms", names, [r["norm_a"] for r in w], [r["norm_b"] for r in w], "", "‖W‖_F")]
    traces = []
    for m in d["spectra"]["matrices"]:
        visible = True if "[" not in m["name"] else "legendonly"  # per-head matrices: click the legend
        for side, dash, color in (("a", "dot", BEFORE), ("b", "solid", AFTER)):
            if m[side] is not None:
                traces.append({"type": "scatter", "mode": "lines+markers", "name": f"{m['name']} {side}",
                               "legendgroup": m["name"], "showlegend": side == "b", "visible": visible,
                               "x": list(range(1, len(m[side]) + 1)), "y": m[side],
                               "line": {"dash": dash, "color": color}})
    figs.append({"data": traces, "layout": {
        "title": {"text": "Top singular values per matrix (dotted: before, solid: after; click the legend)"},
        "xaxis": {"title": {"text": "index i"}}, "yaxis": {"title": {"text": "σ_i"}, "type": "log"}, "height": 460}})
    return figs


def _figures(d: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Plotly figure dicts per section."""
    f, figs = d["fourier"], {"behaviour": [], "fourier": [], "weights": [], "attention": [], "representation": []}
    flips = d["behaviour"].get("flips")
    if flips:
        figs["behaviour"].append(_flip_figure(flips))
    k = list(range(len(f["embed"]["norms"]["b"])))
    figs["fourier"] += [
        _bars("Embedding W_E: norm per frequency", k, f["embed"]["norms"]["a"], f["embed"]["norms"]["b"],
              "frequency k", "‖W_E projected on cos k, sin k‖"),
        _bars("Logit map W_L = W_out·W_U: norm per frequency", k, f["logit_map"]["norms"]["a"],
              f["logit_map"]["norms"]["b"], "frequency k", "‖W_L projected on cos k, sin k‖"),
        _bars("Logit coefficient on cos(w_k(a+b−c))", k[1:], f["logits"]["coef"]["a"][1:],
              f["logits"]["coef"]["b"][1:], "frequency k", "coefficient"),
        _bars("Neurons per frequency cluster", k, f["neurons"]["cluster_sizes"]["a"],
              f["neurons"]["cluster_sizes"]["b"], "frequency k", "neurons"),
    ]
    figs["weights"] = _weight_figures(d)
    h = d["attention"]["heads"]
    labels = _head_labels(h["entropy"]["b"])
    figs["attention"].append(_bars("Readout attention entropy per head", labels, _flat(h["entropy"]["a"]),
                                   _flat(h["entropy"]["b"]), "head", "entropy (nats)"))
    pd_ = d["attention"].get("pattern_delta")
    if pd_:
        figs["attention"].append(_pattern_figure(pd_))
    rep = d["representation"]
    if rep:
        figs["representation"].append({
            "data": [{"type": "bar", "x": [r["what"] for r in rep], "y": _none_to_nan([r["cka"] for r in rep]),
                      "marker": {"color": AFTER}}],
            "layout": {"title": {"text": "Linear CKA between the checkpoints"}, "yaxis": {"range": [0, 1.05]},
                       "height": 340}})
    return figs


def _discrete_scale(codes: Sequence[tuple[int, str, str]], lo: int, hi: int) -> list[list[Any]]:
    """A stepped colour scale mapping integer codes lo..hi (zmin = lo−½, zmax = hi+½) to colours."""
    n = hi - lo + 1
    scale: list[list[Any]] = []
    for code, _, color in codes:
        i = code - lo
        scale += [[i / n, color], [(i + 1) / n, color]]
    return scale


def _pattern_figure(pd_: dict[str, Any]) -> dict[str, Any]:
    """Heatmaps of the change in readout attention over the grid, one row per head, one column per key."""
    maps, keys = pd_["map"], pd_["keys"]
    heads = [(i, h) for i in range(len(maps)) for h in range(len(maps[i]))]
    n_rows, n_cols = len(heads), len(keys)
    vmax = max(1e-9, max(abs(v) for row in pd_["max_abs"] for hv in row for v in hv))
    data, layout = [], {"title": {"text": "Change in readout attention (after − before) over inputs (a, b)"},
                        "height": 260 * n_rows + 60, "width": 260 * n_cols + 160, "annotations": []}
    gap = 0.04
    for r, (layer, h) in enumerate(heads):
        for c, key in enumerate(keys):
            i = r * n_cols + c + 1
            ax = "" if i == 1 else str(i)
            data.append({"type": "heatmap", "z": maps[layer][h][c], "zmin": -vmax, "zmax": vmax, "colorscale": "RdBu",
                         "reversescale": True, "showscale": i == 1, "xaxis": f"x{ax}", "yaxis": f"y{ax}",
                         "hovertemplate": f"L{layer}H{h} → {key}: a=%{{y}} b=%{{x}} Δ=%{{z:.3f}}<extra></extra>"})
            x0, x1 = c / n_cols + gap / 2, (c + 1) / n_cols - gap / 2
            y1, y0 = 1 - r / n_rows - gap / 2, 1 - (r + 1) / n_rows + gap / 2
            layout[f"xaxis{ax}"] = {"domain": [x0, x1], "anchor": f"y{ax}", "showticklabels": False}
            layout[f"yaxis{ax}"] = {"domain": [y0, y1], "anchor": f"x{ax}", "showticklabels": False,
                                    "autorange": "reversed"}
            layout["annotations"].append({"text": f"L{layer}H{h} → {key}", "showarrow": False, "xref": "paper",
                                          "yref": "paper", "x": (x0 + x1) / 2, "y": y1, "yanchor": "bottom"})
    return {"data": data, "layout": layout}


def _figure_html(fig: dict[str, Any], first: bool, div_id: str) -> str:
    import plotly.io as pio

    return pio.to_html(fig, include_plotlyjs=first, full_html=False, validate=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _library_figures(d: dict[str, Any]) -> list[dict[str, Any]]:
    """``apps.figures``' W_E/W_L norms and key-frequency strength at the 'after' step (when the run is at hand)."""
    from apps import figures

    try:
        return [figures.view(d["b"]["run"], name, int(d["b"]["step"])).to_plotly_json()
                for name in ("fourier_norms", "key_freq_strength")]
    except Exception:  # a report read back without its run, or a run without probe results: tables only
        return []


def render_html(d: dict[str, Any]) -> str:
    """One self-contained HTML page: summary, notes, then each section's tables and figures."""
    e = html.escape
    a, b = d["a"], d["b"]
    figs = _figures(d)
    figs["fourier"] = [*figs.get("fourier", []), *_library_figures(d)]
    n = [0]

    def figures(section: str) -> str:
        out = []
        for fig in figs[section]:
            out.append(_figure_html(fig, first=n[0] == 0, div_id=f"fig-{section}-{n[0]}"))
            n[0] += 1
        return "\n".join(out)

    sec: list[tuple[str, str, Callable[[], str]]] = []
    flips = _flip_rows(d)
    sec.append(("behaviour", "Behaviour", lambda: _html_table(["metric", "before", "after", "Δ"], _behaviour_rows(d))
                + (_html_table(["inputs", "wrong → right", "right → wrong", "both right", "both wrong"], flips)
                   if flips else "")))
    neurons = _neuron_rows(d)
    sec.append(("fourier", "Fourier", lambda: _html_table(["", "before", "after"], _fourier_rows(d))
                + _html_table(FREQ_HEADER, _freq_table(d))
                + (_html_table(["neurons that…", "count", "ids"], neurons) if neurons else "")))
    wh, wr = _weight_rows(d)
    sec.append(("weights", "Weights", lambda: _html_table(wh, wr)
                + _html_table(["matrix", "σ before (top 3)", "σ after (top 3)"], _spectrum_rows(d))))
    sec.append(("attention", "Attention", lambda: "<p>At the readout (<code>=</code>) query; sink share = share of "
                "readout attention on <code>=</code>.</p>"
                + _html_table(["head", "entropy", "effective tokens", "sink share"], _attention_rows(d))
                + _html_table(["", "before", "after"], _attention_summary_rows(d))))
    if d["representation"]:
        sec.append(("representation", "Representation similarity", lambda: "<p>Linear CKA (Kornblith et al. 2019) "
                    "over the full input grid.</p>" + _html_table(
                        ["activations", "CKA"], [[r["what"], fmt(r["cka"], 4)] for r in d["representation"]])))
    body = [f"<h1>Checkpoint diff: {e(a['label'])} {ARROW} {e(b['label'])}</h1>",
            f"<p class='meta'>before: {e(a['run'])} step {a['step']} · after: {e(b['run'])} step {b['step']}</p>",
            "<div class='summary' id='summary'><ul>" + "".join(f"<li>{e(s)}</li>" for s in d["summary"])
            + "</ul></div>"]
    body += [f"<p class='note'><b>Note.</b> {e(note)}</p>" for note in d["notes"]]
    for key, title, tables in sec:
        body += [f"<h2 id='{key}'>{e(title)}</h2>", tables(), figures(key)]
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


render_markdown, render_html = with_theories(render_markdown, "md"), with_theories(render_html, "html")  # issue 15
