"""Attention probes: how concentrated each head's attention is (``attention.sparsity``) and whether
it dumps attention on a sink (``attention.sinks``), with the value-state and residual-stream
companions of the sink literature.

Shapes: L layers, H heads, S positions (3 in the grokking tasks: a, b, ``=``), N inputs (the p² grid).
Patterns use TL's ``hook_pattern`` layout [..., q, k] with a causal mask: query q sees the
n_q = q + 1 keys 0..q and gives the others weight 0. The readout query is the last position.

The metrics are pure functions of a pattern tensor, so they can be tested on hand-set patterns
and reused on any TL model: :func:`measure_bridge` computes the same outputs for a TL 4
``TransformerBridge`` language model over a batch of token ids.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from probes.registry import ProbeContext, probe

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

PERCENTILES = (0.1, 0.5, 0.9)


# ====================================================================== per-row metrics
# Each metric reduces over the keys of a row. Torch reduces a tiny trailing dim (S = 3) slowly, so
# the pattern is first laid out keys-first, pk [k, ..., q], and the reductions run over dim 0.
def _keys_first(pattern: Tensor) -> Tensor:
    if pattern.ndim < 2 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"pattern: expected [..., q, k] with q = k, got shape {tuple(pattern.shape)}")
    return pattern.movedim(-1, 0).contiguous()


def _n_visible(pk: Tensor) -> Tensor:
    """[q] number of keys each query sees under the causal mask, n_q = q + 1."""
    return torch.arange(1, pk.shape[0] + 1, device=pk.device, dtype=pk.dtype)


def _entropy(pk: Tensor) -> Tensor:
    return -torch.special.xlogy(pk, pk).sum(0)


def _normalise(h: Tensor, n: Tensor) -> Tensor:
    return torch.where(n > 1, h / n.log(), torch.full_like(h, math.nan))


def _ipr(pk: Tensor) -> Tensor:
    return pk.pow(2).sum(0).reciprocal()


def _gini(pk: Tensor) -> Tensor:
    size, n, total = pk.shape[0], _n_visible(pk), pk.sum(0)
    if size > 16:  # sorted form; masked zeros sort first, shifting ranks in the full row by S − n
        j = torch.arange(1, size + 1, device=pk.device, dtype=pk.dtype)[:, None]  # [k, 1]
        coef = (2 * j - 2 * size + n - 1) / n  # [k, q]
        return (pk.sort(0).values * coef.view(size, *[1] * (pk.ndim - 2), size)).sum(0) / total
    # Σ_{i,j} |a_i − a_j| over the full row; each of the S − n masked zeros adds Σ a twice over
    diff_sum = (pk[:, None] - pk[None]).abs().sum((0, 1))
    return (diff_sum - 2 * (size - n) * total) / (2 * n * total)


def entropy(pattern: Tensor) -> Tensor:
    """[..., q] Shannon entropy of each attention row in nats, H = −Σ_k a_k log a_k (0 log 0 = 0).

    0 for one-hot attention, log n for uniform attention over n keys (Shannon 1948; used for
    attention heads by e.g. Clark et al. 2019, "What Does BERT Look At?", arXiv:1906.04341)."""
    return _entropy(_keys_first(pattern))


def entropy_norm(pattern: Tensor) -> Tensor:
    """[..., q] entropy divided by its maximum over the visible keys, H / log n_q, in [0, 1].

    Query 0 sees a single key, where log 1 = 0 and the ratio is undefined: it is NaN there."""
    pk = _keys_first(pattern)
    return _normalise(_entropy(pk), _n_visible(pk))


def eff_tokens(pattern: Tensor) -> Tensor:
    """[..., q] effective number of attended keys, exp(H): the Hill number of order 1
    (Hill 1973, "Diversity and evenness: a unifying notation", Ecology 54:427). 1 for one-hot
    attention, n for uniform attention over n keys."""
    return entropy(pattern).exp()


def ipr(pattern: Tensor) -> Tensor:
    """[..., q] participation ratio 1 / Σ_k a_k²: the Hill number of order 2 (Hill 1973), i.e. the
    reciprocal of the inverse participation ratio Σ a² of localisation physics (Bell & Dean 1970,
    Discuss. Faraday Soc. 50:55). The probe contract names this output ``ipr``; it is the 1/Σa²
    form requested for it (1 for one-hot attention, n for uniform attention over n keys)."""
    return _ipr(_keys_first(pattern))


def max_weight(pattern: Tensor) -> Tensor:
    """[..., q] largest attention weight of each row, max_k a_k."""
    return pattern.amax(-1)


def gini(pattern: Tensor) -> Tensor:
    """[..., q] Gini index of each row over its n = q + 1 visible keys (Hurley & Rickard 2009,
    "Comparing measures of sparsity", IEEE Trans. Inf. Theory 55:4723), in Gini's mean-difference
    form, equal to the sorted form:

        G = Σ_{i,j ≤ q} |a_i − a_j| / (2 n Σ_i a_i) = Σ_{i=1..n} (2i − n − 1) a_(i) / (n Σ a),  a_(i) ascending.

    0 for uniform attention, 1 − 1/n for one-hot attention, 0 for query 0 (one key). The
    pairwise form costs S² per row and is used up to S = 16; longer rows are sorted."""
    return _gini(_keys_first(pattern))


def row_metrics(pattern: Tensor) -> dict[str, Tensor]:
    """All six per-row metrics above, each [..., q], from one keys-first copy of ``pattern``."""
    pk = _keys_first(pattern)
    h = _entropy(pk)
    return {"entropy": h, "entropy_norm": _normalise(h, _n_visible(pk)), "eff_tokens": h.exp(),
            "ipr": _ipr(pk), "max_weight": pk.amax(0), "gini": _gini(pk)}


def key_importance(pattern: Tensor) -> Tensor:
    """[..., k] importance of each key: the mean attention it receives from the queries that see it,
    α_k = Σ_{q ≥ k} a_{q,k} / (S − k) (Gu et al. 2025, "When Attention Sink Emerges in Language
    Models: An Empirical View", ICLR 2025, arXiv:2410.10781; their reference code,
    ``compute_attention_sink`` in sail-sg/Attention-Sink, divides the column sum by S − k like this)."""
    size = pattern.shape[-1]
    seen_by = torch.arange(size, 0, -1, device=pattern.device, dtype=pattern.dtype)  # S − k
    return pattern.movedim(-2, 0).contiguous().sum(0) / seen_by  # queries-first: fast sum over q


def sink_rate(importance: Tensor, epsilon: float = 0.3, position: int = 0) -> float:
    """Sink rate of Gu et al. 2025 (arXiv:2410.10781), in percent:

        Sink_k^ε = 100 · mean over inputs, layers and heads of 1(α_k > ε),   k = first token,

    with α from :func:`key_importance` given as [..., k] (any leading dims: inputs, layers,
    heads). The indicator is taken per input before averaging, as in their reference code;
    ε = 0.3 is their default. Note: on a length-S sequence α_0 ≥ 1/S (query 0 sees only key 0),
    so for S = 3 and ε < 1/3 every head counts and the rate is 100% by construction."""
    return float((importance[..., position] > epsilon).float().mean() * 100)


def choice_importance(pattern: Tensor) -> Tensor:
    """[..., k] importance over the queries that have a choice: α'_k = Σ_{q ≥ max(k, 1)} a_{q,k} / (S − max(k, 1)).

    The same as :func:`key_importance` except that query 0, which can only attend to key 0 and so
    gives it weight 1 by construction, is left out. Gu et al.'s ε-threshold on α'_0 then measures
    a learned preference for the first token, which on short sequences α_0 cannot (α_0 ≥ 1/S)."""
    size = pattern.shape[-1]
    if size < 2:
        return torch.full((*pattern.shape[:-2], size), float("nan"), dtype=pattern.dtype, device=pattern.device)
    cols = pattern.movedim(-2, 0)[1:].sum(0)  # [..., k] summed over queries 1..S-1
    seen_by = (size - torch.arange(size, device=pattern.device, dtype=pattern.dtype)).clamp(max=size - 1)
    return cols / seen_by


# ====================================================================== aggregates
def percentiles(x: Tensor, levels: tuple[float, ...] = PERCENTILES) -> Tensor:
    """[..., len(levels)] nearest-rank percentiles over the last dim: the order statistic of 0-based
    rank round(level · (N − 1)), i.e. ``torch.quantile(..., interpolation="nearest")`` (up to
    rounding of exact halves). Order statistics commute with increasing maps (exp(H) ↔ H); a
    ``kthvalue`` per level avoids quantile's full sort."""
    n = x.shape[-1]
    return torch.stack([x.kthvalue(round(q * (n - 1)) + 1, dim=-1).values for q in levels], dim=-1)


def sparsity_stats(patterns: Tensor) -> dict[str, Any]:
    """The ``attention.sparsity`` outputs from stacked patterns [L, N, H, S, S]: each per-row
    metric averaged over the N inputs ([L, H, S]), 10/50/90th percentiles over inputs of the entropy
    and effective number at the readout query ([L, H, 3], see :func:`percentiles`), and the means
    over layers and heads of the readout query's mean entropy and mean exp(H) (scalars)."""
    rows = row_metrics(patterns)  # each [L, N, H, S]
    out: dict[str, Any] = {name: value.mean(1) for name, value in rows.items()}
    h = rows["entropy"]
    out["entropy_pct"] = percentiles(h[..., -1].transpose(1, 2))  # [L, H, 3]
    out["eff_tokens_pct"] = out["entropy_pct"].exp()  # exp is increasing: the same order statistics
    out["readout_entropy"] = float(out["entropy"][..., -1].mean())
    out["readout_eff_tokens"] = float(out["eff_tokens"][..., -1].mean())
    return out


class Distinct(NamedTuple):
    """The distinct (token, position) pairs of a batch: ``index`` into the flattened [N·S] batch
    (one occurrence of each pair), its ``position`` and its ``count``. A layer-0 activation
    (``hook_v`` of layer 0, ``hook_resid_pre`` of layer 0) is a function of the token at its
    position alone, so a mean, max or median over the batch is one over these U ≤ S·d_vocab rows
    weighted by ``count`` — the same number, without touching the other N·S − U rows."""

    index: Tensor
    position: Tensor
    count: Tensor

    @classmethod
    def of(cls, tokens: Tensor) -> Distinct:
        size = tokens.shape[1]
        ids = (tokens * size + torch.arange(size, device=tokens.device)).flatten()  # token·S + position
        count = torch.bincount(ids)
        index = torch.zeros_like(count).scatter_(0, ids, torch.arange(ids.numel(), device=ids.device))
        present = count.nonzero().squeeze(1)
        return cls(index[present], present % size, count[present])

    def mean(self, x: Tensor, size: int) -> Tensor:
        """[S, ...] mean over the batch per position of per-row values ``x`` [U, ...]."""
        count = self.count.to(x.dtype)
        total = torch.zeros(size, *x.shape[1:], dtype=x.dtype, device=x.device)
        total.index_add_(0, self.position, x * count.view(-1, *[1] * (x.ndim - 1)))
        n = torch.zeros(size, dtype=x.dtype, device=x.device).index_add_(0, self.position, count)  # N each
        return total / n.view(-1, *[1] * (x.ndim - 1))


def value_drain(v: Tensor, W_O: Tensor, distinct: Distinct | None = None) -> Tensor:
    """[H, S] mean over inputs of ‖v_k W_O‖, the norm of what key k writes to the residual stream
    per unit of attention (Gu et al. 2025 find that sink tokens act like key biases with small
    value norms, contributing little to the output).

    v: [N, S, H, e] (TL's ``hook_v``); W_O: [H, e, d]. Computed as √(v G vᵀ) with G_h = W_O W_Oᵀ
    [e, e]. Pass ``distinct`` (see :class:`Distinct`) only for layer 0."""
    n, size = v.shape[:2]
    gram = torch.einsum("hed,hfd->hef", W_O, W_O)  # [H, e, e]
    rows = v.flatten(0, 1) if distinct is None else v.flatten(0, 1)[distinct.index]  # [N·S or U, H, e]
    norms = (torch.einsum("rhe,hef->rhf", rows, gram) * rows).sum(-1).clamp_min(0).sqrt()  # [rows, H]
    return (norms.view(n, size, -1).mean(0) if distinct is None else distinct.mean(norms, size)).T


@functools.lru_cache(maxsize=8)
def _sample_index(n: int, m: int) -> Tensor:
    """m indices into range(n), one uniformly at random (fixed seed) in each of m equal strata."""
    gen = torch.Generator().manual_seed(0)
    start = torch.arange(m) * n // m
    width = torch.arange(1, m + 1) * n // m - start
    return start + (torch.rand(m, generator=gen, dtype=torch.float64) * width).long()


def median_abs(x: Tensor, sample: int = 1 << 16, weights: Tensor | None = None) -> Tensor:
    """Lower median of |x| over all entries (``torch.median``'s convention: the order statistic of
    0-based rank (n − 1) // 2).

    With ``weights`` [x.shape[0]] (integer counts of each row of ``x``) it is the exact median
    of the multiset in which row i appears weights[i] times. Otherwise it is exact when ``x``
    has at most 2·``sample`` entries, and above that the median of a stratified sample of
    ``sample`` entries (one drawn uniformly, with a fixed seed, from each of ``sample`` equal
    consecutive blocks): deterministic, with quantile level 0.5 ± 0.006 at 3σ (σ ≤ 0.5/√sample).
    An exact selection over the p²·S·d_model ≈ 4.9M entries of a full Nanda residual stream
    costs ~50 ms, the sample ~1 ms."""
    if weights is not None:
        values, order = x.abs().flatten().sort()
        cum = weights.repeat_interleave(x[0].numel())[order].cumsum(0)
        return values[torch.searchsorted(cum, (cum[-1] - 1) // 2, right=True)]
    flat = x.flatten()
    if flat.numel() > 2 * sample:
        flat = flat[_sample_index(flat.numel(), sample).to(flat.device)]
    return flat.abs().median()


def stream_stats(resid: Tensor, distinct: Distinct | None = None) -> tuple[Tensor, Tensor]:
    """Residual stream [N, S, d] -> (mean norm per position [S], max|h| / median|h|).

    The ratio is the massive-activation statistic of Sun et al. 2024 ("Massive Activations in Large
    Language Models", arXiv:2402.17762: top activation magnitudes against the median magnitude),
    pooled over all inputs, positions and channels (they pool per sequence; a 3-token input has
    too few entries for a stable median). See :func:`median_abs` for the median; ``distinct``
    only for layer 0's resid_pre."""
    size = resid.shape[1]
    if distinct is not None:
        rows = resid.flatten(0, 1)[distinct.index]  # [U, d]
        norm = distinct.mean(torch.linalg.vector_norm(rows, dim=-1), size)
        return norm, rows.abs().amax() / median_abs(rows, weights=distinct.count)
    lo, hi = torch.aminmax(resid)
    return torch.linalg.vector_norm(resid, dim=-1).mean(0), torch.maximum(hi, -lo) / median_abs(resid)


def sink_stats(patterns: Tensor, values: list[Tensor], W_O: list[Tensor], resids: list[Tensor],
               epsilon: float, tokens: Tensor | None = None) -> dict[str, Any]:
    """The ``attention.sinks`` outputs.

    patterns: [L, N, H, S, S]; values: per layer TL ``hook_v`` [N, S, H, e]; W_O: per layer
    [H, e, d]; resids: L + 1 residual streams [N, S, d] (each layer's ``hook_resid_pre``, then the
    last layer's ``hook_resid_post``, which may hold the readout position only, [N, 1, d], as in
    ``Transformer.readout_cache``: its ``resid_norm`` at the other positions is then NaN and its
    ``massive_ratio`` is over the readout position). ``tokens`` [N, S]: pass them when layer 0
    sees each token alone (true of grokscope's models) to evaluate layer 0's value drain and
    resid_pre once per distinct (token, position) (:class:`Distinct`); the results are the same."""
    alpha = key_importance(patterns)  # [L, N, H, S]
    readout = patterns[..., -1, :].mean(1)  # [L, H, S]
    distinct = None if tokens is None else Distinct.of(tokens)
    drain = [value_drain(v, w, distinct if layer == 0 else None) for layer, (v, w) in enumerate(zip(values, W_O))]
    norms, ratios = zip(*[stream_stats(r, distinct if i == 0 else None) for i, r in enumerate(resids)])
    size = patterns.shape[-1]  # positions a stream lacks (readout-only final stream) are NaN
    norms = [torch.cat([n.new_full((size - len(n),), math.nan), n]) for n in norms]
    return {
        "sink_rate": sink_rate(alpha, epsilon),
        "sink_rate_choice": sink_rate(choice_importance(patterns), epsilon),
        "importance": alpha.mean(1),
        "readout_mass": readout,
        "eq_share": readout[..., -1].clone(),
        "value_drain": torch.stack(drain),
        "resid_norm": torch.stack(norms),
        "massive_ratio": torch.stack(ratios),
    }


# ====================================================================== probes
def _patterns(ctx: ProbeContext) -> Tensor:
    """[L, N, H, S, S] attention patterns of every layer, shared by both probes."""
    layers = range(ctx.model.cfg.n_layers)
    return ctx.memo("attention.patterns", lambda: torch.stack([ctx.cache["pattern", layer] for layer in layers]))


@probe("attention.sparsity", version=1)
def attention_sparsity(ctx: ProbeContext) -> dict[str, Any]:
    """Per layer, head and query position, mean over the p² inputs of the attention row's entropy
    H = −Σ a log a, H / log n_q, exp(H), 1/Σ a², max a and Gini; percentiles at the readout query.

    See :func:`sparsity_stats` and the per-row functions for formulas and citations."""
    return sparsity_stats(_patterns(ctx))


@probe("attention.sinks", version=3)
def attention_sinks(ctx: ProbeContext) -> dict[str, Any]:
    """Sink rate and key importance of Gu et al. 2025 (arXiv:2410.10781), readout attention mass per
    position and its share on ``=``, value drain ‖v_k W_O‖, residual norms and the massive-activation
    ratio max|h| / median|h| of Sun et al. 2024 (arXiv:2402.17762).

    See :func:`sink_stats`. On the 3-token tasks ``sink_rate`` is 100% whenever ε < 1/3 (see
    :func:`sink_rate`); ``sink_rate_choice`` (:func:`choice_importance`, query 0 left out),
    ``readout_mass`` and ``eq_share`` carry the informative part. The final residual stream is the
    readout position's (``ctx.cache``): the last layer's outputs at a and b are never read."""
    cache, n_layers = ctx.cache, ctx.model.cfg.n_layers
    return sink_stats(
        _patterns(ctx),
        values=[cache["v", layer] for layer in range(n_layers)],
        W_O=[block.attn.W_O.detach() for block in ctx.model.blocks],
        resids=[cache["resid_pre", layer] for layer in range(n_layers)] + [cache["resid_post", n_layers - 1]],
        epsilon=ctx.params["sink_epsilon"],
        tokens=ctx.inputs,
    )


# ====================================================================== TransformerBridge
def measure_bridge(bridge: TransformerBridge, tokens: Tensor, epsilon: float = 0.3) -> dict[str, dict[str, Any]]:
    """``{"attention.sparsity": {...}, "attention.sinks": {...}}`` for a TL 4 ``TransformerBridge``
    language model over ``tokens`` [N, S] (no padding: every query sees keys 0..q), with the
    same outputs and formulas as the probes; the readout query is the last position.

    Runs ``bridge.run_with_cache`` once, caching only the bridge's ``blocks.{l}.attn.hook_pattern``,
    ``blocks.{l}.attn.hook_v``, ``blocks.{l}.hook_resid_pre`` and the last ``hook_resid_post``;
    W_O is read from ``bridge.blocks[l].attn.W_O`` [H, e, d]. Only causal attention is supported.
    The layer-0 (token, position) shortcut of :func:`sink_stats` is not used (it assumes layer 0
    sees each token alone, true of grokscope models but not checked for arbitrary bridges), so
    the layer-0 ``massive_ratio`` median is sampled above 131,072 entries (:func:`median_abs`)."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens: expected [batch, pos] token ids, got shape {tuple(tokens.shape)}")
    if getattr(bridge.cfg, "attention_dir", "causal") != "causal":
        raise ValueError("measure_bridge: only causal attention is supported (key importance assumes it)")
    n_layers = bridge.cfg.n_layers
    names = [f"blocks.{layer}.{hook}" for layer in range(n_layers)
             for hook in ("attn.hook_pattern", "attn.hook_v", "hook_resid_pre")]
    names.append(f"blocks.{n_layers - 1}.hook_resid_post")
    with torch.no_grad():
        _, cache = bridge.run_with_cache(tokens, names_filter=names)
        patterns = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(n_layers)])
        sinks = sink_stats(
            patterns,
            values=[cache[f"blocks.{layer}.attn.hook_v"] for layer in range(n_layers)],
            W_O=[bridge.blocks[layer].attn.W_O.detach() for layer in range(n_layers)],
            resids=[cache[f"blocks.{layer}.hook_resid_pre"] for layer in range(n_layers)]
            + [cache[f"blocks.{n_layers - 1}.hook_resid_post"]],
            epsilon=epsilon,
        )
        return {"attention.sparsity": sparsity_stats(patterns), "attention.sinks": sinks}
