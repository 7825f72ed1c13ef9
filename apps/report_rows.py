"""Table rows of the checkpoint diff report (:mod:`apps.report`): formatting helpers and the rows
of the grid report's sections (behaviour, Fourier, weights, attention). Every function reads the
report's plain-data dict (``DiffReport.data``) and returns lists of strings."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from probes.diff import fmt, fmt_set

ARROW = "→"


# ====================================================================== text: Markdown and HTML
_MD_ACTIVE = str.maketrans({c: "\\" + c for c in "\\`*_[]|~"})


def md_text(s: Any) -> str:
    """``s`` as literal Markdown text: one line, HTML characters as entities, Markdown's markup
    characters backslash-escaped (run names and other user strings go through here)."""
    text = html.escape(" ".join(str(s).splitlines()), quote=False).translate(_MD_ACTIVE)
    return "\\" + text if text[:1] in ("#", "+", "-", "!", ">", "=") else text


def md_cell(s: Any) -> str:
    return html.escape(" ".join(str(s).splitlines()), quote=False).replace("|", "\\|")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(map(md_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(md_cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ====================================================================== shared helpers
def delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def sv(vals: Sequence[float] | None, n: int = 3) -> str:
    return "n/a" if vals is None else ", ".join(fmt(v) for v in vals[:n])


def head_labels(arr: list[list[Any]]) -> list[str]:
    return [f"L{i}H{h}" for i, row in enumerate(arr) for h in range(len(row))]


def flat(arr: list[list[Any]]) -> list[Any]:
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


def at(arr: Sequence[float | None] | None, k: int) -> float | None:
    return None if arr is None or k >= len(arr) else arr[k]


def behaviour_rows(d: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in d["behaviour"]["metrics"]:
        show = pct if r["name"].endswith("_acc") else fmt
        dlt = delta(r["a"], r["b"])
        rows.append([r["label"], show(r["a"]), show(r["b"]),
                     "n/a" if dlt is None else (f"{100 * dlt:+.1f} pp" if r["name"].endswith("_acc")
                                                else f"{dlt:+.3g}")])
    return rows


def flip_rows(d: dict[str, Any]) -> list[list[str]]:
    flips = d["behaviour"].get("flips")
    if not flips:
        return []
    return [[split, str(c["wrong_to_right"]), str(c["right_to_wrong"]), str(c["both_right"]), str(c["both_wrong"])]
            for split, c in flips["counts"].items()]


def fourier_rows(d: dict[str, Any]) -> list[list[str]]:
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


def freq_table(d: dict[str, Any]) -> list[list[str]]:
    f = d["fourier"]
    kf = f["key_freqs"]
    rows = []
    for k in _freq_rows(d):
        status = ("gained" if k in kf["gained"] else "kept" if k in kf["kept"] else
                  "lost" if k in kf["lost"] else "")
        rows.append([str(k), status,
                     fmt(at(f["embed"]["norms"]["a"], k)), fmt(at(f["embed"]["norms"]["b"], k)),
                     fmt(at(f["logit_map"]["norms"]["a"], k)), fmt(at(f["logit_map"]["norms"]["b"], k)),
                     fmt(at(f["logits"]["coef"]["a"], k)), fmt(at(f["logits"]["coef"]["b"], k)),
                     fmt(at(f["neurons"]["cluster_sizes"]["a"], k)), fmt(at(f["neurons"]["cluster_sizes"]["b"], k))])
    return rows


FREQ_HEADER = ["k", "", "‖W_E‖ before", "after", "‖W_L‖ before", "after", "logit coef before", "after",
               "cluster before", "after"]


def neuron_rows(d: dict[str, Any]) -> list[list[str]]:
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


def weight_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    if d["aligned"]:
        header = ["parameter", "shape", "‖W_A‖", "‖W_B‖", "‖ΔW‖", "‖ΔW‖/‖W_A‖", "cos(W_A, W_B)", "Δ‖W‖"]
        rows = [[r["name"], "×".join(map(str, r["shape_a"])), fmt(r["norm_a"]), fmt(r["norm_b"]), fmt(r["delta"]),
                 pct(r["rel_change"]), fmt(r["cosine"], 4), f"{r['norm_change']:+.3g}"] for r in d["weights"]]
    else:
        header = ["parameter", "shape A", "shape B", "‖W_A‖", "‖W_B‖", "Δ‖W‖"]
        rows = [[r["name"], "×".join(map(str, r["shape_a"])), "×".join(map(str, r["shape_b"])), fmt(r["norm_a"]),
                 fmt(r["norm_b"]), f"{r['norm_change']:+.3g}"] for r in d["weights"]]
    return header, rows


def spectrum_rows(d: dict[str, Any], per_head: bool = True) -> list[list[str]]:
    """Top-3 singular values per matrix; with ``per_head=False`` the matrices of one stacked parameter
    (``W_Q[0]``, ``W_Q[1]``, …) share a row listing σ₁ of each head."""
    if per_head:
        return [[m["name"], sv(m["a"]), sv(m["b"])] for m in d["spectra"]["matrices"]]
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in d["spectra"]["matrices"]:
        groups.setdefault(m["name"].split("[")[0], []).append(m)
    rows = []
    for base, ms in groups.items():
        if len(ms) == 1 and "[" not in ms[0]["name"]:
            rows.append([base, sv(ms[0]["a"]), sv(ms[0]["b"])])
        else:
            first = lambda m, side: "n/a" if not m[side] else fmt(m[side][0])
            rows.append([f"{base}[0–{len(ms) - 1}] (σ₁ per head)", ", ".join(first(m, "a") for m in ms),
                         ", ".join(first(m, "b") for m in ms)])
    return rows


def attention_rows(d: dict[str, Any]) -> list[list[str]]:
    h = d["attention"]["heads"]
    labels = head_labels(h["entropy"]["b"])
    cols = [(flat(h[k]["a"]), flat(h[k]["b"])) for k in ("entropy", "eff_tokens", "sink_share")]
    rows = []
    for i, label in enumerate(labels):
        cells = []
        for a, b in cols:
            av, bv = at(a, i), at(b, i)
            dl = delta(av, bv)
            cells.append(f"{fmt(av)} {ARROW} {fmt(bv)}" + ("" if dl is None else f" ({dl:+.3g})"))
        rows.append([label, *cells])
    return rows


def attention_summary_rows(d: dict[str, Any]) -> list[list[str]]:
    at = d["attention"]
    return [["mean readout entropy (nats)", fmt(at["readout_entropy"]["a"]), fmt(at["readout_entropy"]["b"])],
            ["mean readout effective tokens", fmt(at["readout_eff_tokens"]["a"]), fmt(at["readout_eff_tokens"]["b"])],
            ["sink rate (% heads)", fmt(at["sink_rate"]["a"]), fmt(at["sink_rate"]["b"])]]

