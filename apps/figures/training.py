"""Figures over training (probe time series) and the per-head attention spectrum, plus client-side animations
of per-step views (Plotly frames built from the cached probe arrays: no rerun per frame)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

from apps import plots
from apps.figures import source
from apps.figures.fourier import FREQ_AXIS, KEY_COLOR, OTHER_COLOR, _need, final_keys, key_at
from interp import Run
from probes.frames import head_freq_norms


def _time_fig(run: Run, step: int | None, title: str, y_title: str, series: dict, log_y: bool | None = None):
    if log_y is None:
        vals = np.concatenate([np.asarray(y, dtype=float) for _, y in series.values()]) if series else []
        log_y = plots.spans_decades(vals)
    fig = plots.time_figure(title, y_title, log_y=log_y)
    for name, (x, y) in series.items():
        plots.add_line(fig, x, y, name)
    return plots.decorate(fig, source.phases(run), step)


def logit_coefficients(run: Run, step: int | None = None) -> go.Figure:
    """Each final key frequency's logit coefficient α_k (``fourier.logits`` ``coef``) over training
    (Nanda et al. 2023, Fig. 14; the TransformerLens demo's "look during training")."""
    steps_arr, arr = _need(source.arrays(run, "fourier.logits"), "fourier.logits")
    coef = arr["coef"]
    keys = final_keys(run) or list(np.argsort(-np.nan_to_num(np.abs(coef[-1, 1:])))[:3] + 1)
    series = {f"k = {k}": (steps_arr, coef[:, k]) for k in keys}
    return _time_fig(run, step, "Logit coefficient of each key frequency over training",
                     "α_k in logits ≈ Σ α_k cos(w_k(a+b−c))", series, log_y=False)


def excluded_loss(run: Run, step: int | None = None) -> go.Figure:
    """Excluded loss when one key frequency is removed from the logits, per frequency, with the restricted
    and full-excluded losses (``progress.restricted``, logit convention, train split; Nanda et al. 2023, Fig. 15)."""
    series = {}
    got = source.arrays(run, "progress.restricted")
    if got is not None and "logit.excluded_loss_per_freq" in got[1]:
        steps_arr, arr = got
        per = arr["logit.excluded_loss_per_freq"]
        for k in final_keys(run) or [int(k) for k in np.flatnonzero(np.isfinite(per[-1])) if k >= 1]:
            series[f"excluded k = {k}"] = (steps_arr, per[:, k])
    sc = source.scalars(run)
    for label, col in [("restricted (key only)", "progress.restricted/logit.restricted_loss"),
                       ("excluded (all key)", "progress.restricted/logit.excluded_loss"),
                       ("train loss", "progress.loss/train_loss")]:
        if col in sc:
            s = sc[col].dropna()
            series[label] = (s.index.to_numpy(), s.to_numpy(dtype=float))
    if not series:
        raise LookupError("no cached `progress.restricted` results: run `grokscope probe RUN` first")
    return _time_fig(run, step, "Excluded and restricted loss over training", "cross-entropy loss (train split)",
                     series)


def attention_freq(run: Run, step: int) -> go.Figure:
    """Per head: norm per Fourier frequency of the attention the ``=`` query pays to a, as a function of a
    (averaged over b). A head that reads a key frequency shows a peak there (Nanda et al. 2023, §4: attention
    patterns are periodic in the key frequencies)."""
    pattern = source.readout(run, step)["pattern"]  # [L, H, 3, p, p]
    n_layers, n_heads, _, p, _ = pattern.shape
    att_a = torch.from_numpy(pattern[:, :, 0].mean(-1).astype(np.float64))  # [L, H, p]: attention to a, over b
    z = head_freq_norms(att_a, p)[..., 1:].reshape(n_layers * n_heads, -1).numpy()
    names = [f"L{layer}H{h}" for layer in range(n_layers) for h in range(n_heads)]
    keys = set(key_at(run, step))
    x = [f"{k}*" if k in keys else str(k) for k in range(1, z.shape[1] + 1)]
    fig = plots.heatmap(z, x, names, title=f"Attention to a: norm per frequency, per head (step "
                        f"{run.nearest_step(step)}; * key)", x_title=FREQ_AXIS, y_title="head",
                        colorbar="‖attention(a) on {cos k, sin k}‖", colorscale="Blues",
                        height=160 + 40 * len(names))
    return fig


# ------------------------------------------------------------------ animations
def _animated_bars(steps_arr, frames_y: np.ndarray, *, title: str, y_title: str, keys_by_frame=None,
                   log_y: bool = False, fps: int = 10) -> go.Figure:
    """Bars over frequencies 1..K animated over steps: one Plotly frame per step, played in the browser
    (``fps`` frames per second; frames are plain dicts, built without Plotly's per-object validation)."""
    k = np.arange(1, frames_y.shape[1] + 1).tolist()

    def bar(i):
        colors = KEY_COLOR if keys_by_frame is None else [KEY_COLOR if kk in keys_by_frame[i] else OTHER_COLOR
                                                          for kk in k]
        return {"type": "bar", "x": k, "y": np.round(frames_y[i], 6).tolist(), "marker": {"color": colors},
                "name": "value"}

    layout = {
        "title": {"text": title}, "height": 420, "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "yaxis": {"range": _range(frames_y, log_y), "type": "log" if log_y else "linear", "title": {"text": y_title}},
        "xaxis": {"title": {"text": FREQ_AXIS}}, **_play_controls(steps_arr, fps, redraw=False)}
    frames = [{"name": str(int(s)), "data": [bar(i)]} for i, s in enumerate(steps_arr)]
    return go.Figure({"data": [bar(0)], "layout": layout, "frames": frames}, _validate=False)


def _range(y: np.ndarray, log_y: bool) -> list[float]:
    v = np.asarray(y, dtype=float)
    v = v[np.isfinite(v)]
    if log_y:
        v = v[v > 0]
        return [float(np.log10(v.min())) - 0.1, float(np.log10(v.max())) + 0.1] if len(v) else [-3, 0]
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    return [min(lo, 0.0) - (pad if lo < 0 else 0.0), hi + pad]


def _keys_by_step(run: Run, steps_arr) -> list[set[int]]:
    got = source.arrays(run, "fourier.key_freqs")
    if got is None:
        return [set() for _ in steps_arr]
    ks, arr = got
    rows = [source.row(ks, int(s)) for s in steps_arr]
    return [{int(k) for k in np.flatnonzero(arr["is_key"][r] > 0.5) if k >= 1} for r in rows]


def animate_norms(run: Run, which: str = "fourier.embed") -> go.Figure:
    """W_E (``fourier.embed``) or W_L (``fourier.logit_map``) norms per frequency, animated over every probed step."""
    steps_arr, arr = _need(source.arrays(run, which), which)
    y = arr["norms"][:, 1:].astype(np.float64)
    name = {"fourier.embed": "W_E", "fourier.logit_map": "W_L"}.get(which, which)
    return _animated_bars(steps_arr, y, title=f"Animated: {name} norm per frequency (dark: key)",
                          y_title="‖projection on {cos k, sin k}‖", keys_by_frame=_keys_by_step(run, steps_arr))


def animate_clusters(run: Run) -> go.Figure:
    """Neurons per frequency cluster (``fourier.neurons`` ``cluster_sizes``), animated over every probed step."""
    steps_arr, arr = _need(source.arrays(run, "fourier.neurons"), "fourier.neurons")
    return _animated_bars(steps_arr, np.nan_to_num(arr["cluster_sizes"][:, 1:]).astype(np.float64),
                          title="Animated: neurons per frequency cluster (dark: key)",
                          y_title="neurons (FVE ≥ threshold)", keys_by_frame=_keys_by_step(run, steps_arr))


def animate_logit_coef(run: Run) -> go.Figure:
    """Logit coefficients α_k per frequency (``fourier.logits`` ``coef``), animated over every probed step."""
    steps_arr, arr = _need(source.arrays(run, "fourier.logits"), "fourier.logits")
    return _animated_bars(steps_arr, np.nan_to_num(arr["coef"][:, 1:]).astype(np.float64),
                          title="Animated: logit coefficient per frequency (dark: key)",
                          y_title="α_k (logit units)", keys_by_frame=_keys_by_step(run, steps_arr))


def _play_controls(steps_arr, fps: int, redraw: bool) -> dict:
    """The Play / Pause buttons and the step slider of a client-side animation (layout entries)."""
    ms = int(1000 / fps)
    play = {"frame": {"duration": ms, "redraw": redraw}, "transition": {"duration": 0}, "fromcurrent": True}
    still = {"frame": {"duration": 0, "redraw": redraw}, "transition": {"duration": 0}, "mode": "immediate"}
    return {
        "updatemenus": [{"type": "buttons", "direction": "left", "x": 0, "y": 1.12, "showactive": False, "buttons": [
            {"label": "▶ Play", "method": "animate", "args": [None, play]},
            {"label": "❚❚ Pause", "method": "animate", "args": [[None], still]}]}],
        "sliders": [{"active": 0, "currentvalue": {"prefix": "step "}, "pad": {"t": 40},
                     "steps": [{"label": str(int(s)), "method": "animate", "args": [[str(int(s))], still]}
                               for s in steps_arr]}]}


def animate_attention_freq(run: Run, fps: int = 10) -> go.Figure:
    """Per head, the norm per frequency of the attention ``=`` pays to a (``fourier.attention``, the view
    :func:`attention_freq` at every probed step), animated over training: a head × frequency heatmap per frame,
    one colour scale for all frames."""
    steps_arr, arr = _need(source.arrays(run, "fourier.attention"), "fourier.attention")
    norms = arr["norms"][:, :, :, 1:].astype(np.float32)  # [n_steps, L, H, K]
    n, n_layers, n_heads, K = norms.shape
    z = norms.reshape(n, n_layers * n_heads, K)
    names = [f"L{layer}H{h}" for layer in range(n_layers) for h in range(n_heads)]
    k = list(range(1, K + 1))
    zmax = float(np.nanmax(z)) if np.isfinite(z).any() else 1.0

    def heat(i):
        return {"type": "heatmap", "z": np.round(z[i], 6).tolist(), "x": k, "y": names, "zmin": 0, "zmax": zmax,
                "colorscale": "Blues", "colorbar": {"title": {"text": "‖attention(a) on {cos k, sin k}‖"}},
                "hovertemplate": "%{y} k=%{x}<br>norm=%{z:.3g}<extra></extra>"}

    layout = {"title": {"text": "Animated: attention to a, norm per frequency, per head"},
              "height": 260 + 40 * len(names), "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
              "xaxis": {"title": {"text": FREQ_AXIS}}, "yaxis": {"title": {"text": "head"}, "autorange": "reversed"},
              **_play_controls(steps_arr, fps, redraw=True)}
    frames = [{"name": str(int(s)), "data": [heat(i)]} for i, s in enumerate(steps_arr)]
    return go.Figure({"data": [heat(0)], "layout": layout, "frames": frames}, _validate=False)
