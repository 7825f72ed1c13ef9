"""The Fourier figures of Nanda et al. 2023 ("Progress measures for grokking via mechanistic interpretability",
arXiv:2301.05217), each a function of a Run and a step returning a Plotly figure.

Per-step views read the cached probe results (``grokscope probe RUN``); the neuron grid, the embedding
circle and the 2D logit spectrum run the checkpoint once over the p×p grid (:func:`source.readout`).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from apps import plots
from apps.figures import source
from interp import Run
from probes.fourier import basis_labels, fourier_basis, logit_shares, n_freqs
from probes.phases import transition_bounds
from probes.registry import DEFAULT_PARAMS

FREQ_AXIS = "frequency k (w_k = 2πk/p)"
KEY_COLOR, OTHER_COLOR = "#1f4e9c", "#9aa5b1"


def _need(got, probe: str):
    if got is None:
        raise LookupError(f"no cached `{probe}` results: run `grokscope probe RUN` first")
    return got


def key_at(run: Run, step: int) -> list[int]:
    """Key frequencies (``fourier.key_freqs``) at the probed step nearest ``step``; [] when not probed."""
    got = source.arrays(run, "fourier.key_freqs")
    if got is None:
        return []
    steps_arr, arr = got
    return [int(k) for k in np.flatnonzero(arr["is_key"][source.row(steps_arr, step)] > 0.5) if k >= 1]


def final_keys(run: Run) -> list[int]:
    got = source.arrays(run, "fourier.key_freqs")
    return [] if got is None else key_at(run, int(got[0][-1]))


def before_after(run: Run) -> tuple[int, int]:
    """The steps just before and after the transition (``probes.phases.transition_bounds``), else the first
    and last probed steps."""
    steps = run.steps
    lo, hi = transition_bounds(source.phases(run))
    return (steps[0] if lo is None else lo), (steps[-1] if hi is None else hi)


def fourier_norms(run: Run, step: int) -> go.Figure:
    """W_E and W_L norms per Fourier frequency at ``step`` (bars; key frequencies dark) with the same
    norms just before and after the transition as lines (Nanda et al. 2023, Fig. 3)."""
    before, after = before_after(run)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("W_E (embedding)", "W_L = W_out·W_U (neuron → logit)"))
    keys = set(key_at(run, step))
    for col, probe in [(1, "fourier.embed"), (2, "fourier.logit_map")]:
        got = source.arrays(run, probe)
        if got is None:
            continue
        steps_arr, arr = got
        norms = arr["norms"][:, 1:].astype(np.float64)
        k = np.arange(1, norms.shape[1] + 1)
        i = source.row(steps_arr, step)
        colors = [KEY_COLOR if kk in keys else OTHER_COLOR for kk in k]
        fig.add_trace(go.Bar(x=k, y=norms[i], name=f"step {int(steps_arr[i])}", marker_color=colors,
                             showlegend=col == 1, legendgroup="now"), row=1, col=col)
        for s, dash, color in [(before, "dot", "#636efa"), (after, "dash", "#00a67e")]:
            j = source.row(steps_arr, s)
            fig.add_trace(go.Scatter(x=k, y=norms[j], mode="lines", name=f"step {int(steps_arr[j])}",
                                     line={"dash": dash, "color": color}, showlegend=col == 1,
                                     legendgroup=f"s{s}"), row=1, col=col)
        fig.update_xaxes(title_text=FREQ_AXIS, row=1, col=col)
        fig.update_yaxes(title_text="‖projection on {cos k, sin k}‖", row=1, col=col)
    fig.update_layout(title=f"Weight norms per Fourier frequency at step {step} "
                            f"(lines: before {before} / after {after} the transition)",
                      height=380, margin={"l": 60, "r": 20, "t": 70, "b": 50}, bargap=0.1)
    return fig


def fve_heatmap(run: Run, step: int) -> go.Figure:
    """Neuron × frequency fraction of variance explained (``fourier.neurons`` ``fve``), neurons sorted by
    cluster (dominant frequency, then FVE), as in Nanda et al. 2023 (neuron clusters)."""
    steps_arr, arr = _need(source.arrays(run, "fourier.neurons"), "fourier.neurons")
    i = source.row(steps_arr, step)
    fve = arr["fve"][i][:, 1:].astype(np.float32)
    dom, dfve = arr["dominant_freq"][i], arr["dominant_fve"][i]
    clustered = dfve >= DEFAULT_PARAMS["fve_threshold"]
    order = np.lexsort((-dfve, np.where(clustered, dom, 10**6)))  # clustered first, by frequency
    y = [f"n{n}" for n in order]
    fig = plots.heatmap(fve[order], list(range(1, fve.shape[1] + 1)), y, title=f"Neuron FVE by frequency at step "
                        f"{int(steps_arr[i])} (sorted by cluster; {int(clustered.sum())} clustered)",
                        x_title=FREQ_AXIS, y_title="neuron (sorted by cluster)", colorbar="FVE", zmin=0, zmax=1,
                        colorscale="Blues", height=520)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    return fig


def top_neurons(run: Run, step: int, per_freq: int = 3) -> go.Figure:
    """Activations over (a, b) of the ``per_freq`` neurons with the highest FVE on each key frequency
    (the frequencies of largest cluster when none is key); a = 0 at the top."""
    steps_arr, arr = _need(source.arrays(run, "fourier.neurons"), "fourier.neurons")
    i = source.row(steps_arr, step)
    post = source.readout(run, step).get("post")
    if post is None:
        raise LookupError("this model has no MLP (attention-only): no neurons to show")
    fve = arr["fve"][i]
    keys = key_at(run, step) or list(np.argsort(-fve[:, 1:].sum(0))[:3] + 1)
    rows = keys[:6]
    titles = [f"k={k} · n{n} (FVE {fve[n, k]:.2f})" for k in rows for n in np.argsort(-fve[:, k])[:per_freq]]
    fig = make_subplots(rows=len(rows), cols=per_freq, subplot_titles=titles, horizontal_spacing=0.03,
                        vertical_spacing=0.06)
    for r, k in enumerate(rows, start=1):
        for c, n in enumerate(np.argsort(-fve[:, k])[:per_freq], start=1):
            fig.add_trace(go.Heatmap(z=post[:, :, n].astype(np.float32), colorscale="RdBu_r", zmid=0,
                                     showscale=False, hovertemplate="a=%{y} b=%{x} act=%{z:.3g}<extra></extra>"),
                          row=r, col=c)
            fig.update_yaxes(autorange="reversed", title_text="a" if c == 1 else None, row=r, col=c)
            fig.update_xaxes(title_text="b" if r == len(rows) else None, row=r, col=c)
    fig.update_layout(title=f"Top neurons of each key frequency over (a, b) at step {int(steps_arr[i])}",
                      height=220 * len(rows) + 80, margin={"l": 50, "r": 20, "t": 80, "b": 40})
    fig.update_annotations(font_size=10)
    return fig


def embedding_circle(run: Run, step: int) -> go.Figure:
    """Each token's embedding projected on the plane of frequency k (the W_E directions of cos k and sin k):
    a circle in a grokked model (Nanda et al. 2023, §4). Key frequencies, else the 3 largest W_E norms."""
    W = source.readout(run, step)["W_E"].astype(np.float64)  # [p, d_model]
    p = W.shape[0]
    coef = fourier_basis(p, dtype=__import__("torch").float64).numpy() @ W  # [p basis rows, d_model]
    norms = np.array([np.linalg.norm(coef[2 * k - 1:2 * k + 1]) for k in range(1, n_freqs(p) + 1)])
    keys = key_at(run, step) or list(np.argsort(-norms)[:3] + 1)
    keys = keys[:6]
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[f"k = {k}" for k in keys])
    a = np.arange(p)
    for c, k in enumerate(keys, start=1):
        u = coef[2 * k - 1] / max(np.linalg.norm(coef[2 * k - 1]), 1e-12)
        v = coef[2 * k] / max(np.linalg.norm(coef[2 * k]), 1e-12) if 2 * k < p else np.zeros_like(u)
        fig.add_trace(go.Scatter(x=W @ u, y=W @ v, mode="markers+text" if p <= 31 else "markers", text=a,
                                 marker={"color": a, "colorscale": "Phase", "size": 7,
                                         "showscale": c == len(keys), "colorbar": {"title": {"text": "token a"}}},
                                 name=f"k={k}", showlegend=False,
                                 hovertemplate="a=%{text}<br>x=%{x:.3g} y=%{y:.3g}<extra></extra>"), row=1, col=c)
        fig.update_xaxes(title_text=f"W_E·u_cos{k}", row=1, col=c)
        fig.update_yaxes(title_text=f"W_E·u_sin{k}", scaleanchor=f"x{c if c > 1 else ''}", row=1, col=c)
    fig.update_layout(title=f"Embedding in the plane of each key frequency at step {run.nearest_step(step)}",
                      height=380, margin={"l": 60, "r": 20, "t": 70, "b": 50})
    return fig


def logit_fourier_2d(run: Run, step: int) -> go.Figure:
    """Norms of the logits in the 2D Fourier basis over (a, b), taken over the output class c
    (Nanda et al. 2023, Fig. 4): a few cos/sin pairs of the key frequencies carry almost all of it."""
    import torch

    logits = source.readout(run, step)["logits"].astype(np.float64)
    p = logits.shape[1]
    L = logits.reshape(p, p, p)
    B = fourier_basis(p, dtype=torch.float64).numpy()
    # coef[i, j, c] = Σ_a Σ_b B[i, a] L[a, b, c] B[j, b], as two contractions (one einsum over all three
    # operands runs as a p⁵ loop: 25 s at p = 113)
    coef = np.tensordot(np.tensordot(B, L, axes=(1, 0)), B, axes=(1, 1)).transpose(0, 2, 1)  # [i, j, c]
    norms = np.sqrt((coef ** 2).sum(-1))
    labels = basis_labels(p)
    fig = plots.heatmap(norms, labels, labels, title=f"Logit norms in the 2D Fourier basis at step "
                        f"{run.nearest_step(step)}", x_title="basis function of b", y_title="basis function of a",
                        colorbar="‖logits‖ over c", colorscale="Blues", height=520,
                        log_color=plots.spans_decades(norms, 2))
    return fig.update_yaxes(autorange="reversed")


def key_freq_strength(run: Run, step: int | None = None) -> go.Figure:
    """Frequency × step heatmap of each frequency's share of the (centred) logit variance
    (``probes.fourier.logit_shares``), the significance floor ``key_freq_min_logit_share`` drawn as a
    contour, phase bands and the grokking step; key frequencies are those inside the contour that also pass
    the neuron / W_L rule (docs/probes.md)."""
    steps_arr, arr = _need(source.arrays(run, "fourier.logits"), "fourier.logits")
    sc = source.scalars(run)
    fve_all = sc["fourier.logits/fve_all"].reindex(steps_arr).to_numpy() if "fourier.logits/fve_all" in sc \
        else np.full(len(steps_arr), np.nan)
    p = run.task.p
    share = np.stack([logit_shares(arr["coef"][i], fve_all[i], p) for i in range(len(steps_arr))])[:, 1:]
    floor = DEFAULT_PARAMS.get("key_freq_min_logit_share", 0.02)
    k = list(range(1, share.shape[1] + 1))
    fig = plots.heatmap(share.T, steps_arr.tolist(), k, title="Share of logit variance per frequency "
                        f"(contour: key floor {floor:g})", x_title="training step", y_title=FREQ_AXIS,
                        colorbar="share of logit variance", colorscale="Viridis", height=420,
                        log_color=True)
    # colour from 10⁻⁵ (below is noise; the floor is 2·10⁻²); the hover keeps the value itself
    fig.data[0].z = np.log10(np.clip(share.T, 1e-5, None)).astype(np.float32)
    fig.add_trace(go.Contour(z=np.log10(np.clip(share.T, 1e-12, None)), x=steps_arr.tolist(), y=k,
                             contours={"coloring": "none", "start": np.log10(floor), "end": np.log10(floor),
                                       "size": 1}, line={"color": "red", "width": 1.5}, showscale=False,
                             name=f"floor {floor:g}", hoverinfo="skip", showlegend=False))  # the title says it
    return plots.decorate(fig, source.phases(run), step, annotate=False)
