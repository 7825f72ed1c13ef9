"""Per-step data for the dashboard's client-side animations that no other probe stores.

``fourier.attention``: per head, the norm per Fourier frequency of the attention the readout query ``=`` pays
to ``a``, as a function of a (averaged over b) — the per-head attention frequency pattern of Nanda et al. 2023
(arXiv:2301.05217, §4: the attention patterns are periodic in the key frequencies), at every checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch

from probes.fourier import fourier_basis, per_freq
from probes.registry import ProbeContext, probe


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
