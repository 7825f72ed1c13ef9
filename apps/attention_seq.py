"""The Attention page on sequence-task runs (issue 13): query × key attention patterns of chosen probe
inputs at the selected step, with the token strings on the axes, and per-head sink and sparsity
curves over training (``attention.seq_sinks``, ``attention.sparsity``) with the phases shaded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from apps import data, ui
from apps.state import Ctx
from interp import Run
from interp.errors import CorruptCheckpointError, StoreError
from probes.phases import Phases


@st.cache_resource(max_entries=16, show_spinner="Running the model over the probe batch…")
def probe_patterns(path: str, step: int, manifest) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """([L, N, H, S, S] attention patterns, [N, S] tokens, vocabulary) over the run's fixed probe batch."""
    task = Run.open(path).task
    model = data.model_at(path, step, manifest)
    tokens = task.probe_inputs
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    pats = torch.stack([cache["pattern", layer] for layer in range(model.cfg.n_layers)])
    return pats.float().numpy(), tokens.numpy(), list(task.vocab)


def pattern_figure(pattern: np.ndarray, tokens: np.ndarray, vocab: list[str], layer: int, index: int,
                   step: int) -> go.Figure:
    """[H, S, S] attention of one input (queries down, keys across), token strings on the axes."""
    n_heads = pattern.shape[0]
    labels = [f"{i}:{vocab[t]}" for i, t in enumerate(tokens)]
    fig = make_subplots(rows=1, cols=n_heads, subplot_titles=[f"head {h}" for h in range(n_heads)],
                        horizontal_spacing=0.06)
    for h in range(n_heads):
        fig.add_trace(go.Heatmap(z=pattern[h].astype(np.float32), x=labels, y=labels, zmin=0, zmax=1,
                                 coloraxis="coloraxis", name=f"head {h}",
                                 hovertemplate="query %{y}<br>key %{x}<br>attention=%{z:.3f}<extra></extra>"),
                      row=1, col=h + 1)
        fig.update_xaxes(title_text="key", row=1, col=h + 1, tickangle=-90)
    fig.update_yaxes(title_text="query", row=1, col=1)
    fig.update_yaxes(autorange="reversed")
    size = min(900, 120 + 14 * len(labels))
    fig.update_layout(title=f"Layer {layer}: attention of probe input {index} (step {step})", height=size,
                      coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1,
                                 "colorbar": {"title": {"text": "attention weight"}}},
                      margin={"l": 70, "r": 20, "t": 80, "b": 70})
    return fig


def _heads(steps: np.ndarray, values: np.ndarray, prefix: str = "head") -> dict[str, pd.Series]:
    """[n_steps, H] -> one series per head."""
    return {f"{prefix} {h}": pd.Series(values[:, h], index=steps) for h in range(values.shape[1])}


def curves(ctx: Ctx, layer: int, phases: Phases) -> list[tuple[go.Figure | None, str]]:
    """Per-head sink and sparsity figures over training (None where the probe has no results)."""
    figs: list[tuple[go.Figure | None, str]] = []
    got = ui.arrays(ctx, "attention.seq_sinks")
    if got is not None:
        steps, arr = got
        types = sorted(k[len("head_sink_rate_"):] for k in arr if k.startswith("head_sink_rate_"))
        for t in types:
            fig = ui.time_plot(ctx, f"Sink rate per head, {t.replace('_', '-')} queries (Gu et al. 2025, query 0 "
                               "left out)", "% of inputs with mean attention on token 0 > ε",
                               _heads(steps, arr[f"head_sink_rate_{t}"][:, layer]), log_y=False, phases=phases)
            figs.append((fig.update_yaxes(range=[-2, 102]), f"seq_sink_rate_{t}"))
        series = {f"{t.replace('_', '-')}, head {h}": pd.Series(arr[f"first_attn_{t}"][:, layer, h], index=steps)
                  for t in types for h in range(arr[f"first_attn_{t}"].shape[-1])}
        figs.append((ui.time_plot(ctx, "Attention on the first token by query type (active-dormant)",
                                  "mean attention weight", series, log_y=False, phases=phases), "seq_first_attn"))
        drain = {"first token": pd.Series(arr["value_norm_first"][:, layer].mean(1), index=steps),
                 "other tokens": pd.Series(arr["value_norm_rest"][:, layer].mean(1), index=steps)}
        figs.append((ui.time_plot(ctx, "Value-state drain ‖v W_O‖ (mean over heads)", "norm", drain,
                                  log_y=None, phases=phases), "seq_value_drain"))
        n_streams = arr["resid_norm_first"].shape[1]
        peak = {}
        for i in range(n_streams):
            where = "final resid_post" if i == n_streams - 1 else f"resid_pre {i}"
            peak[f"first token, {where}"] = pd.Series(arr["resid_norm_first"][:, i], index=steps)
            peak[f"others, {where}"] = pd.Series(arr["resid_norm_rest"][:, i], index=steps)
        figs.append((ui.time_plot(ctx, "Residual-state norm: first token against the others", "mean ‖x‖", peak,
                                  log_y=None, phases=phases), "seq_resid_peak"))
        eff = {f"{t.replace('_', '-')}, head {h}": pd.Series(arr[f"eff_tokens_{t}"][:, layer, h], index=steps)
               for t in types for h in range(arr[f"eff_tokens_{t}"].shape[-1])}
        figs.append((ui.time_plot(ctx, "Effective attended tokens exp(H) by query type", "tokens", eff,
                                  log_y=False, phases=phases), "seq_eff_tokens"))
    sp = ui.arrays(ctx, "attention.sparsity")
    if sp is not None and "eff_tokens" in sp[1]:
        steps, arr = sp
        figs.append((ui.time_plot(ctx, "Readout (last) query: effective attended tokens exp(H)", "tokens",
                                  _heads(steps, arr["eff_tokens"][:, layer, :, -1]), log_y=False, phases=phases),
                     "seq_readout_eff_tokens"))
    return figs


def render(ctx: Ctx) -> None:
    """The Attention page body for a sequence-task run."""
    try:
        patterns, tokens, vocab = probe_patterns(ctx.path, ctx.step, ctx.key.manifest)
    except (CorruptCheckpointError, StoreError) as e:
        st.error(str(e))
        patterns = None
    n_layers = 1 if patterns is None else patterns.shape[0]
    layer = st.selectbox("layer", list(range(n_layers)), key="attn_layer") if n_layers > 1 else 0
    if patterns is not None:
        n = patterns.shape[1]
        index = int(st.number_input(f"probe input (0–{n - 1}, the run's fixed probe batch)", 0, n - 1, 0,
                                    key="attn_input"))
        ui.chart(pattern_figure(patterns[layer, index], tokens[index], vocab, layer, index, ctx.step),
                 "attention_seq_pattern")
    if not ui.need_probes(ctx, ["attention.seq_sinks", "attention.sparsity"], "The attention time series"):
        return
    phases = ui.phases(ctx)
    c1, c2 = st.columns(2)
    for i, (fig, key) in enumerate(curves(ctx, layer, phases)):
        with (c1 if i % 2 == 0 else c2):
            ui.chart(fig, key)
