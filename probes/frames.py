"""Per-step data for the dashboard's client-side animations that no other probe stores.

``fourier.attention``: per head, the norm per Fourier frequency of the attention the readout query ``=`` pays
to ``a``, as a function of a (averaged over b) — the per-head attention frequency pattern of Nanda et al. 2023
(arXiv:2301.05217, §4: the attention patterns are periodic in the key frequencies), at every checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch

from probes.fourier import fourier_norms
from probes.registry import ProbeContext, probe


def attention_freq_norms(pattern: torch.Tensor, p: int) -> torch.Tensor:
    """[L, p², H, S, S] attention patterns over the grid (row a·p + b) -> [L, H, K+1]: for each head, the
    norms per frequency (:func:`probes.fourier.fourier_norms`) of f(a) = mean_b attention(= → a), centred."""
    att = pattern[:, :, :, -1, 0].double()  # [L, p², H]: readout query, key a
    n_layers, _, n_heads = att.shape
    f = att.reshape(n_layers, p, p, n_heads).mean(2)  # [L, p(a), H]
    f = f - f.mean(1, keepdim=True)
    return torch.stack([torch.stack([fourier_norms(f[layer, :, h][:, None], p, axis=0)[0]
                                     for h in range(n_heads)]) for layer in range(n_layers)]).float()


@probe("fourier.attention", version=1)
def attention_freq_probe(ctx: ProbeContext) -> dict[str, Any]:
    """``norms`` [L, H, K+1]: :func:`attention_freq_norms` of the checkpoint's readout attention."""
    layers = range(ctx.model.cfg.n_layers)
    pattern = ctx.memo("attention.patterns", lambda: torch.stack([ctx.cache["pattern", layer] for layer in layers]))
    return {"norms": attention_freq_norms(pattern, ctx.p)}
