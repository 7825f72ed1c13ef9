"""Plotly figures of the checkpoint diff report's HTML (:func:`apps.report.render_html`), as plain
figure dicts per section, read from the report's plain-data dict (``DiffReport.data``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from apps.report_rows import flat, head_labels
from probes.diff import BOTH_RIGHT, BOTH_WRONG, INVALID, RIGHT_TO_WRONG, WRONG_TO_RIGHT

BEFORE, AFTER = "#9ecae1", "#08519c"


def none_to_nan(x: Any) -> Any:
    if isinstance(x, list):
        return [none_to_nan(v) for v in x]
    return math.nan if x is None else x


def bars(title: str, x: Sequence[Any], a: Sequence[Any], b: Sequence[Any], xlabel: str, ylabel: str,
          log: bool = False) -> dict[str, Any]:
    return {"data": [{"type": "bar", "name": "before", "x": list(x), "y": none_to_nan(list(a)),
                      "marker": {"color": BEFORE}},
                     {"type": "bar", "name": "after", "x": list(x), "y": none_to_nan(list(b)),
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


def weight_figures(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Relative change (aligned) or norms per parameter, and the top singular values per matrix."""
    w = d["weights"]
    names = [r["name"] for r in w]
    if d["aligned"]:
        figs = [{"data": [{"type": "bar", "x": names, "y": none_to_nan([r["rel_change"] for r in w]),
                           "marker": {"color": AFTER}}],
                 "layout": {"title": {"text": "Relative change ‖ΔW‖/‖W_A‖ per parameter"}, "height": 380,
                            "yaxis": {"tickformat": ".0%"}, "margin": {"b": 140}}}]
    else:
        figs = [bars("Parameter norms", names, [r["norm_a"] for r in w], [r["norm_b"] for r in w], "", "‖W‖_F")]
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


def behaviour_figures(d: dict[str, Any]) -> list[dict[str, Any]]:
    flips = d["behaviour"].get("flips")
    return [_flip_figure(flips)] if flips else []


def fourier_figures(d: dict[str, Any]) -> list[dict[str, Any]]:
    """W_E, W_L norms, logit coefficients and cluster sizes per frequency, then the figure library's
    views of the 'after' checkpoint (when its run is at hand)."""
    f = d["fourier"]
    k = list(range(len(f["embed"]["norms"]["b"])))
    return [
        bars("Embedding W_E: norm per frequency", k, f["embed"]["norms"]["a"], f["embed"]["norms"]["b"],
              "frequency k", "‖W_E projected on cos k, sin k‖"),
        bars("Logit map W_L = W_out·W_U: norm per frequency", k, f["logit_map"]["norms"]["a"],
              f["logit_map"]["norms"]["b"], "frequency k", "‖W_L projected on cos k, sin k‖"),
        bars("Logit coefficient on cos(w_k(a+b−c))", k[1:], f["logits"]["coef"]["a"][1:],
              f["logits"]["coef"]["b"][1:], "frequency k", "coefficient"),
        bars("Neurons per frequency cluster", k, f["neurons"]["cluster_sizes"]["a"],
              f["neurons"]["cluster_sizes"]["b"], "frequency k", "neurons"),
        *_library_figures(d),
    ]


def attention_figures(d: dict[str, Any]) -> list[dict[str, Any]]:
    h = d["attention"]["heads"]
    labels = head_labels(h["entropy"]["b"])
    figs = [bars("Readout attention entropy per head", labels, flat(h["entropy"]["a"]), flat(h["entropy"]["b"]),
                  "head", "entropy (nats)")]
    pd_ = d["attention"].get("pattern_delta")
    if pd_:
        figs.append(_pattern_figure(pd_))
    return figs


def representation_figures(d: dict[str, Any]) -> list[dict[str, Any]]:
    rep = d["representation"]
    if not rep:
        return []
    return [{"data": [{"type": "bar", "x": [r["what"] for r in rep], "y": none_to_nan([r["cka"] for r in rep]),
                       "marker": {"color": AFTER}}],
             "layout": {"title": {"text": "Linear CKA between the checkpoints"}, "yaxis": {"range": [0, 1.05]},
                        "height": 340}}]


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


def _library_figures(d: dict[str, Any]) -> list[dict[str, Any]]:
    """``apps.figures``' W_E/W_L norms and key-frequency strength at the 'after' step (when the run is at hand)."""
    from apps import figures

    try:
        return [figures.view(d["b"]["run"], name, int(d["b"]["step"])).to_plotly_json()
                for name in ("fourier_norms", "key_freq_strength")]
    except Exception:  # a report read back without its run, or a run without probe results: tables only
        return []


