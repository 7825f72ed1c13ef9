"""Per-step data for the dashboard's client-side animations that no other probe stores.

``fourier.attention``: per head, the norm per Fourier frequency of the attention the readout query ``=`` pays
to ``a``, as a function of a (averaged over b) — the per-head attention frequency pattern of Nanda et al. 2023
(arXiv:2301.05217, §4: the attention patterns are periodic in the key frequencies), at every checkpoint.

``fourier.neuron_acts``: the activation over the p×p grid of a few MLP neurons, the same neurons at every checkpoint
(the run-level parameter ``watch_neurons``, chosen at the final checkpoint by :func:`watched_neurons`), for the
animation of one neuron forming its frequency (Nanda et al. 2023, §4: the neurons of a key frequency k compute
products of cos/sin of w_k a and w_k b).
"""

from __future__ import annotations

from typing import Any

import torch

from probes.fourier import fourier_basis, key_frequencies, neurons_probe, per_freq
from probes.registry import ProbeContext, probe

#: neurons watched when the checkpoint has no key frequency (:func:`watched_neurons`)
WATCH_FALLBACK = 3


def head_freq_norms(att_a: torch.Tensor, p: int) -> torch.Tensor:
    """[..., p] attention of each head to a, as a function of a -> [..., K+1]: the norm per Fourier frequency
    (as :func:`probes.fourier.fourier_norms`) of f(a), centred, for every leading index at once."""
    f = att_a.double()
    coef = (f - f.mean(-1, keepdim=True)) @ fourier_basis(p, torch.float64).T  # [..., p]
    return per_freq(coef.pow(2), p).sqrt()


def attention_freq_norms(pattern: torch.Tensor, p: int) -> torch.Tensor:
    """[L, p², H, S, S] attention patterns over the grid (row a·p + b) -> [L, H, K+1]: for each head, the
    norms per frequency of f(a) = mean_b attention(= → a) (:func:`head_freq_norms`)."""
    att = pattern[:, :, :, -1, 0]  # [L, p², H]: readout query, key a
    n_layers, _, n_heads = att.shape
    f = att.double().reshape(n_layers, p, p, n_heads).mean(2)  # [L, p(a), H]
    return head_freq_norms(f.transpose(1, 2), p).float()


@probe("fourier.attention", version=1)
def attention_freq_probe(ctx: ProbeContext) -> dict[str, Any]:
    """``norms`` [L, H, K+1]: :func:`attention_freq_norms` of the checkpoint's readout attention."""
    layers = range(ctx.model.cfg.n_layers)
    pattern = ctx.memo("attention.patterns", lambda: torch.stack([ctx.cache["pattern", layer] for layer in layers]))
    return {"norms": attention_freq_norms(pattern, ctx.p)}


def choose_neurons(fve: torch.Tensor, key_freqs: list[int], n_fallback: int = WATCH_FALLBACK) -> list[list[int]]:
    """[[neuron, frequency], ...]: for each frequency k of ``key_freqs`` (ascending), the neuron n maximising
    fve[n, k] (``fve`` [d_mlp, K+1], :func:`probes.fourier.neuron_fve`: the fraction of the neuron's centred
    activation variance over the grid explained by frequency k); one neuron may be chosen for two frequencies.
    With no key frequency: the ``n_fallback`` neurons with the highest dominant FVE max_{k≥1} fve[n, k], each with
    its dominant frequency (ties: the lower index). NaN (attention-only) counts as 0."""
    fve = torch.nan_to_num(fve.double(), nan=0.0)
    if key_freqs:
        k = torch.tensor(sorted(int(k) for k in key_freqs), dtype=torch.int64)
        return torch.stack([fve[:, k].argmax(0), k], 1).tolist()
    dominant_fve, dominant = fve[:, 1:].max(1)  # [d_mlp]
    top = torch.argsort(dominant_fve, descending=True, stable=True)[:n_fallback]
    return torch.stack([top, dominant[top] + 1], 1).tolist()


def watched_neurons(ctx: ProbeContext) -> list[list[int]]:
    """The neurons the ``fourier.neuron_acts`` probe watches, chosen at ``ctx``'s checkpoint (the run's final one
    when ``probes.run`` sets the run-level ``watch_neurons``): :func:`choose_neurons` of the checkpoint's
    ``fourier.neurons`` FVE and its key frequencies (:func:`probes.fourier.key_frequencies`), i.e. per key
    frequency the neuron best explained by it; without key frequencies, the :data:`WATCH_FALLBACK` neurons with
    the highest dominant-frequency FVE. [] for an attention-only model."""
    if ctx.model.cfg.attn_only:
        return []
    return choose_neurons(neurons_probe(ctx)["fve"], key_frequencies(ctx).tolist())


@probe("fourier.neuron_acts", version=1, uses=("watch_neurons",), needs_mlp=True)
def neuron_acts_probe(ctx: ProbeContext) -> dict[str, Any]:
    """``acts`` [n_watch, p, p] float16: the watched neurons' activations (last layer's ``mlp.hook_post`` at the
    ``=`` position) over the grid, acts[i, a, b]; ``neurons`` and ``freqs`` [n_watch] int64: which neurons, and
    the frequency each was chosen for. The neurons are the run-level ``watch_neurons`` (fixed for the run:
    :func:`watched_neurons` of the final checkpoint), or this checkpoint's own choice when it is None."""
    watch = ctx.params["watch_neurons"]
    watch = watched_neurons(ctx) if watch is None else watch
    pairs = torch.tensor(watch, dtype=torch.int64).reshape(-1, 2)  # [n_watch, 2]: neuron, frequency
    post = ctx.cache["post", ctx.model.cfg.n_layers - 1][:, -1]  # [p², d_mlp] at the `=` position
    acts = post[:, pairs[:, 0]].T.reshape(-1, ctx.p, ctx.p)  # [n_watch, p(a), p(b)]
    return {"acts": acts.to(torch.float16), "neurons": pairs[:, 0], "freqs": pairs[:, 1]}
