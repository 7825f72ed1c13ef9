"""Sinks on sequence tasks (``attention.seq_sinks``): how much each head attends to the first token
(BOS where the task has one), split by query type, with the value-state drain, residual-state
peak and massive activations that accompany a sink.

Shapes: L layers, N probe inputs (the task's fixed probe batch), H heads, S positions, patterns
[..., q, k] causal (query q sees keys 0..q). Query 0 can only attend to key 0, so it gives the
first token weight 1 by construction: every statistic here leaves it out (Gu et al. 2025 count it;
on short sequences that alone puts α_0 ≥ 1/S). Query types come from the task
(``SequenceTask.query_types``): "trigger" / "non_trigger" on ``bigram_backcopy`` (the
active-dormant split of Guo et al. 2024), "all" elsewhere.

The functions are pure functions of tensors, so they are tested on hand-set patterns.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from probes.attention import eff_tokens, value_drain
from probes.registry import ProbeContext, probe


def first_token_attention(patterns: Tensor, queries: Tensor) -> Tensor:
    """[L, N, H] mean attention to key 0 over the queries selected by ``queries`` [N, S] (bool):

        α'_0(n, l, h) = (1/|Q_n|) Σ_{q ∈ Q_n} a^{l,h}_{n, q, 0}

    (NaN for an input with no selected query). patterns: [L, N, H, S, S]."""
    w = queries.to(patterns.dtype)  # [N, S]
    total = (patterns[..., 0] * w[None, :, None]).sum(-1)  # [L, N, H]
    count = w.sum(-1)[None, :, None]
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def sink_rate(patterns: Tensor, queries: Tensor, epsilon: float = 0.3) -> tuple[float, Tensor]:
    """Sink rate of Gu et al. 2025 ("When Attention Sink Emerges in Language Models: An Empirical
    View", ICLR 2025, arXiv:2410.10781) on the first token, over the selected queries only:

        Sink^ε = 100 · mean_{n, l, h} 1(α'_0(n, l, h) > ε)   with α'_0 from :func:`first_token_attention`,

    i.e. the share (in percent) of heads whose mean attention to the first token exceeds ε, taken per
    input as in their reference code. Pass ``queries`` without query 0 (it sees only key 0; Gu et
    al. average over every query, which on short sequences counts 1/S for free). Returns
    (rate over inputs, layers and heads, per-head rate [L, H]); inputs without a selected query
    are left out."""
    alpha = first_token_attention(patterns, queries)  # [L, N, H]
    keep = ~alpha.isnan()
    hit = ((alpha > epsilon) & keep).to(patterns.dtype)
    per_head = 100 * hit.sum(1) / keep.sum(1).clamp(min=1)
    return float(100 * hit.sum() / keep.sum().clamp(min=1)), per_head


def first_vs_rest(x: Tensor) -> tuple[Tensor, Tensor]:
    """[..., S] -> (value at position 0 [...], mean over positions 1..S−1 [...])."""
    return x[..., 0], x[..., 1:].mean(-1)


def massive_stats(resid: Tensor) -> tuple[Tensor, Tensor]:
    """Residual stream [N, S, d] -> (max|h| / median|h| over all entries, share of inputs whose largest
    |h| sits at position 0): the massive activations of Sun et al. 2024 ("Massive Activations in
    Large Language Models", arXiv:2402.17762), which they find at the first token, acting as a
    fixed bias that makes it a sink."""
    mag = resid.abs()
    ratio = mag.amax() / mag.flatten().median()
    at_first = (mag.amax(-1).argmax(-1) == 0).to(resid.dtype).mean()
    return ratio, at_first


def seq_sink_stats(patterns: Tensor, values: list[Tensor], W_O: list[Tensor], resids: list[Tensor],
                   query_types: dict[str, Tensor], epsilon: float) -> dict[str, Any]:
    """The ``attention.seq_sinks`` outputs (see the probe). patterns [L, N, H, S, S]; values per layer
    [N, S, H, e]; W_O per layer [H, e, d]; resids: L + 1 full streams [N, S, d]; query_types:
    name -> [N, S] bool (query 0 in none)."""
    out: dict[str, Any] = {}
    eff = eff_tokens(patterns)  # [L, N, H, S]
    for name, q in query_types.items():
        rate, per_head = sink_rate(patterns, q, epsilon)
        out[f"sink_rate_{name}"] = rate
        out[f"head_sink_rate_{name}"] = per_head
        out[f"first_attn_{name}"] = first_token_attention(patterns, q).nanmean(1)  # [L, H]
        w = q.to(eff.dtype)[None, :, None]
        out[f"eff_tokens_{name}"] = (eff * w).sum((1, 3)) / w.sum((1, 3)).clamp(min=1)  # [L, H]
    out["first_attn_by_query"] = patterns[..., 0].mean(1)  # [L, H, S]
    drains = torch.stack([value_drain(v, w) for v, w in zip(values, W_O)])  # [L, H, S]
    out["value_norm_first"], out["value_norm_rest"] = first_vs_rest(drains)  # [L, H] each
    out["value_ratio"] = float(out["value_norm_first"].mean() / out["value_norm_rest"].mean())
    norms = torch.stack([torch.linalg.vector_norm(r, dim=-1).mean(0) for r in resids])  # [L+1, S]
    out["resid_norm_first"], out["resid_norm_rest"] = first_vs_rest(norms)  # [L+1] each
    ratio = out["resid_norm_first"] / out["resid_norm_rest"]
    out["resid_ratio"] = float(ratio.max())  # the peak over streams (Guo et al.'s residual-state peak)
    massive = [massive_stats(r) for r in resids]
    out["massive_ratio"] = torch.stack([m[0] for m in massive])  # [L+1]
    out["massive_at_first"] = torch.stack([m[1] for m in massive])  # [L+1]
    return out


@probe("attention.seq_sinks", version=1, tasks=("sequence",))  # grid runs: attention.sinks
def attention_seq_sinks(ctx: ProbeContext) -> dict[str, Any]:
    """First-token (BOS) sink per query type: Gu et al. 2025's sink rate without query 0, attention on
    the first token per head, effective attended tokens per query type, value-state drain, residual
    peak and massive activations, over the task's fixed probe batch.

    Outputs (``<type>``: the task's query types, "trigger"/"non_trigger" on ``bigram_backcopy``):

    * ``sink_rate_<type>`` (percent) and ``head_sink_rate_<type>`` [L, H]: :func:`sink_rate`, ε =
      ``sink_epsilon``; ``first_attn_<type>`` [L, H]: mean a_{q,0} over those queries; the
      active-dormant split of Guo et al. 2024 ("Active-Dormant Attention Heads", arXiv:2410.13835)
      is ``first_attn_non_trigger`` high (dormant) with ``first_attn_trigger`` low (active).
    * ``eff_tokens_<type>`` [L, H]: exp(H) of the rows (:func:`probes.attention.eff_tokens`) averaged
      over those queries; ``first_attn_by_query`` [L, H, S].
    * value-state drain (Guo et al. 2024; Gu et al. 2025): ``value_norm_first`` / ``value_norm_rest``
      [L, H], the mean ‖v_k W_O‖ (:func:`probes.attention.value_drain`) at the first token and over
      the others, and ``value_ratio`` = their ratio (mean over layers and heads): falls as the sink
      forms.
    * residual-state peak (Guo et al. 2024): ``resid_norm_first`` / ``resid_norm_rest`` [L + 1]
      (each layer's ``resid_pre`` and the last ``resid_post``), ``resid_ratio`` = the largest
      first/rest ratio over those streams: rises as the sink forms.
    * massive activations (Sun et al. 2024, arXiv:2402.17762): ``massive_ratio`` [L + 1] = max|h| /
      median|h| and ``massive_at_first`` [L + 1] = share of inputs whose largest |h| is at position 0.

    It runs on grid tasks too (one query type, "all"), where the first token is the operand a and
    has no special role; the informative runs are sequence tasks with a BOS token.
    """
    cache, n_layers = ctx.full_cache, ctx.model.cfg.n_layers  # every position of the last layer too
    layers = range(n_layers)
    patterns = torch.stack([cache["pattern", la] for la in layers])
    return seq_sink_stats(
        patterns,
        values=[cache["v", la] for la in layers],
        W_O=[block.attn.W_O.detach() for block in ctx.model.blocks],
        resids=[cache["resid_pre", la] for la in layers] + [cache["resid_post", n_layers - 1]],
        query_types=ctx.task.query_types(ctx.inputs),
        epsilon=ctx.params["sink_epsilon"],
    )
