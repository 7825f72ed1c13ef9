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
    return plots.decorate(plots.side_legend(fig), source.phases(run), step)


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


#: colour levels of :func:`animate_neuron` (z travels as uint8 codes 0..LEVELS−1)
LEVELS = 256


def quantise(z: np.ndarray, levels: int = LEVELS) -> tuple[np.ndarray, float, float]:
    """Float values -> (codes uint8, lo, hi): code = round((levels − 1)·(z − lo)/(hi − lo)) with lo = min(0, min z)
    and hi = max z over all of ``z`` (one scale for every frame); NaN -> 0. A code c stands for
    lo + c·(hi − lo)/(levels − 1), within half a level, (hi − lo)/(2(levels − 1)), of the value."""
    v = np.asarray(z, dtype=np.float32)
    finite = v[np.isfinite(v)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    hi = hi if hi > lo else lo + 1.0
    codes = np.rint((levels - 1) * (np.nan_to_num(v, nan=lo) - lo) / (hi - lo))
    return np.clip(codes, 0, levels - 1).astype(np.uint8), lo, hi


def _level_ticks(lo: float, hi: float, levels: int = LEVELS, n: int = 5) -> tuple[list[float], list[str]]:
    """Colour-bar ticks of a quantised scale: (codes, labels in the original units) at n round values."""
    values = np.linspace(lo, hi, n)
    return ((values - lo) * (levels - 1) / (hi - lo)).round(2).tolist(), [f"{v:.3g}" for v in values]


def animate_neuron(run: Run, neuron: int | None = None, fps: int = 10) -> go.Figure:
    """One MLP neuron's activation over (a, b) (``fourier.neuron_acts``: the last layer's ``hook_post`` at ``=``),
    animated over every probed step: the neurons are fixed for the run, one per final key frequency (the neuron that
    frequency explains best; :func:`probes.frames.watched_neurons`). ``neuron``: one of them by its index in the MLP
    (default: all, with a dropdown to pick one). a = 0 at the top, as on every (a, b) heatmap.

    Payload: each neuron's activations are quantised to :data:`LEVELS` colour levels over its own range across all
    steps (:func:`quantise`: one colour scale for all frames, labelled in activation units; the hover shows the
    level) and travel as uint8 typed arrays (one byte per cell per frame)."""
    steps_arr, arr = _need(source.arrays(run, "fourier.neuron_acts"), "fourier.neuron_acts")
    neurons, freqs = arr["neurons"][-1].tolist(), arr["freqs"][-1].tolist()  # fixed for the run
    if not neurons:
        raise LookupError("`fourier.neuron_acts` watched no neuron in this run")
    if neuron is None:
        shown = list(range(len(neurons)))
    elif int(neuron) in neurons:
        shown = [neurons.index(int(neuron))]
    else:
        raise LookupError(f"neuron {neuron} is not watched by `fourier.neuron_acts` (watched: {neurons})")
    scales = [quantise(arr["acts"][:, j]) for j in shown]  # per neuron: codes [n_steps, p, p], lo, hi

    def title(j: int) -> str:
        return f"Animated: neuron {neurons[j]}'s activation over (a, b) (frequency k = {freqs[j]})"

    def heat(m: int, i: int, first: bool) -> dict:
        codes, lo, hi = scales[m]
        if not first:  # frames carry z only; the rest stays from the figure's trace
            return {"type": "heatmap", "z": codes[i]}
        tickvals, ticktext = _level_ticks(lo, hi)
        return {"type": "heatmap", "z": codes[i], "zmin": 0, "zmax": LEVELS - 1, "colorscale": "Viridis",
                "visible": m == 0, "name": f"neuron {neurons[shown[m]]}",
                "colorbar": {"title": {"text": "activation"}, "tickvals": tickvals, "ticktext": ticktext},
                "hovertemplate": (f"a=%{{y}} b=%{{x}}<br>level %{{z}} of {LEVELS - 1}: "
                                  f"activation ≈ {lo:.3g} + level × {(hi - lo) / (LEVELS - 1):.3g}<extra></extra>")}

    controls = _play_controls(steps_arr, fps, redraw=True)
    if len(shown) > 1:
        controls["updatemenus"].append({
            "type": "dropdown", "x": 1.0, "xanchor": "right", "y": 1.12, "showactive": True, "buttons": [
                {"label": f"neuron {neurons[j]} (k = {freqs[j]})", "method": "update",
                 "args": [{"visible": [m == n for m in range(len(shown))]}, {"title.text": title(j)}]}
                for n, j in enumerate(shown)]})
    layout = {"title": {"text": title(shown[0]), "y": 0.98, "yanchor": "top"}, "height": 640,
              "margin": {"l": 60, "r": 20, "t": 120, "b": 50},  # the title above the Play buttons and the dropdown
              "xaxis": {"title": {"text": "b (second operand)"}, "constrain": "domain"},
              "yaxis": {"title": {"text": "a (first operand)"}, "autorange": "reversed", "scaleanchor": "x"},
              **controls}
    frames = [{"name": str(int(s)), "data": [heat(m, i, False) for m in range(len(shown))]}
              for i, s in enumerate(steps_arr)]
    return go.Figure({"data": [heat(m, 0, True) for m in range(len(shown))], "layout": layout, "frames": frames},
                     _validate=False)
