"""Clock-vs-Pizza diagnostics (Zhong et al. 2023, "The Clock and the Pizza", arXiv:2306.17844, §4.1), the
``fourier.clock_pizza`` probe; re-exported by :mod:`probes.fourier`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from probes.registry import ProbeContext, probe

_TRIPLES: dict[tuple[int, int, int], Tensor] = {}


def clock_pizza_triples(p: int, n: int, seed: int) -> Tensor:
    """[min(n, p³), 3] int64 (a, b, c) triples drawn without replacement from Z_p³, fixed by ``seed`` (cached)."""
    key = (p, n, seed)
    if key not in _TRIPLES:
        gen = torch.Generator().manual_seed(int(seed))
        flat = torch.randperm(p**3, generator=gen)[: min(n, p**3)]
        _TRIPLES[key] = torch.stack([flat // (p * p), flat // p % p, flat % p], dim=1)
    return _TRIPLES[key]


def gradient_symmetricity(model: Any, p: int, triples: Tensor) -> float:
    """Mean over triples (a, b, c) of cos(∂Q_abc/∂E_a, ∂Q_abc/∂E_b) (Zhong et al. 2023, "The Clock and the Pizza",
    arXiv:2306.17844, §4.1 gradient symmetricity): Q_abc is the logit of class c at the ``=`` position on input
    (a, b, =) and E_a, E_b are the embedding vectors fed in at positions 0 and 1 (the ``hook_embed`` output, as in the
    authors' code, so a = b still gives two separate gradients). ≈1 for Pizza-like (symmetric) models, lower for Clock.

    Batched: every triple is its own batch row, so one backward of Σ_i Q_i gives all per-triple gradients.
    """
    tokens = torch.cat([triples[:, :2], torch.full_like(triples[:, :1], p)], dim=1).to(model.W_E.device)
    emb = model.embed.W_E.detach()[tokens].requires_grad_(True)  # [n, 3, d_model]
    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", lambda act, hook: emb)])
        q = logits[:, -1].gather(1, triples[:, 2:].to(logits.device)).sum()
        (grad,) = torch.autograd.grad(q, emb)
    return float(torch.nn.functional.cosine_similarity(grad[:, 0], grad[:, 1], dim=-1).mean())


def distance_irrelevance(correct_logits: Tensor) -> float:
    """q = mean_d std_i L[i, i+d] / std_{i,j} L[i, j] (Zhong et al. 2023, "The Clock and the Pizza",
    arXiv:2306.17844, §4.1 distance irrelevance; population std as in the authors' code), L [p, p] the logit of the
    correct class on input (a, b) = (i, j), indices mod p. Near 1 when the correct logit does not depend on the
    distance a − b (Clock), near 0 when it does (Pizza, whose correct logit ∝ |cos(w_k(a − b)/2)|).
    """
    p = correct_logits.shape[0]
    L = correct_logits.detach().double()
    i = torch.arange(p, device=L.device)
    by_distance = L[i[None, :], (i[None, :] + i[:, None]) % p]  # [d, i] = L[i, i + d]
    return float(by_distance.std(1, correction=0).mean() / L.std(correction=0))


@probe("fourier.clock_pizza")
def clock_pizza_probe(ctx: ProbeContext) -> dict[str, Any]:
    """Clock-vs-Pizza diagnostics of Zhong et al. 2023 (arXiv:2306.17844, §4.1): gradient_symmetricity over a fixed
    random set of ``clock_pizza_triples`` (a, b, c) triples seeded by ``clock_pizza_seed``
    (:func:`gradient_symmetricity`), and distance_irrelevance of the correct-class logits over the p×p grid
    (:func:`distance_irrelevance`; invalid cells of ``div`` use label 0).
    """
    p = ctx.p
    triples = clock_pizza_triples(p, int(ctx.params["clock_pizza_triples"]), int(ctx.params["clock_pizza_seed"]))
    correct = ctx.logits.gather(1, ctx.labels[:, None].to(ctx.logits.device)).reshape(p, p)
    return {
        "gradient_symmetricity": gradient_symmetricity(ctx.model, p, triples),
        "distance_irrelevance": distance_irrelevance(correct),
    }
