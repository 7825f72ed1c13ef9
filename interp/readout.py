"""The probes' analysis forward of an :class:`interp.model.Transformer`: :func:`readout_cache`.

It computes what the last position's output and every attention pattern depend on, and no
more, as a TransformerLens ``ActivationCache``. A free function of the model (which
``Transformer.readout_cache`` delegates to); this module imports ``interp.fastpath`` and never
``interp.model``, so imports run one way. Shape letters as in ``interp.model``: b = batch,
s = position, h = head, d = d_model, e = d_head, m = d_mlp, v = d_vocab, o = d_vocab_out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens import ActivationCache

from interp.fastpath import affine, layer0_tables


@torch.no_grad()
def readout_cache(model: nn.Module, tokens: Tensor) -> tuple[Tensor, ActivationCache]:
    """The analysis forward: (logits at the last position [b, o], ActivationCache) of ``model``
    on ``tokens`` [b, s], computing what the last position's output and every attention pattern
    depend on, and no more.

    Entries, with TL names (equal to ``run_with_cache``'s to 1e-5, tested):

    * every layer: ``hook_resid_pre`` [b, s, d], ``attn.hook_v`` [b, s, h, e] and
      ``attn.hook_pattern`` [b, h, s, s] (every query position);
    * layers before the last: ``attn.hook_z``, ``hook_attn_out``, ``hook_resid_mid``,
      ``mlp.hook_pre/post``, ``hook_mlp_out`` and ``hook_resid_post`` at every position;
    * the last layer: the same at the last (readout) position only, with a position axis of
      length 1 ([b, 1, ...]), so ``cache["post", -1][:, -1]`` works as on the full cache. The
      last layer's MLP and unembedding at the other positions (most of the full forward's
      cost) are never read by the model's output, so they are not computed.

    Layer 0's queries, keys, values and every possible score come from per-(position, token)
    tables as in ``interp.fastpath.forward_last`` (and, with one layer and no LayerNorm, the
    readout MLP's pre-activation too: :func:`_readout_pre_from_tables`). Not in this cache:
    ``hook_embed``, ``hook_pos_embed``, ``attn.hook_q/k/attn_scores`` and the LayerNorm hooks (so
    TL's ``accumulated_resid`` / ``decompose_resid``, which need every layer at every position,
    do not apply). Runs without autograd (entries detached, as TL caches are). Hooks do not fire;
    use ``run_with_cache`` for those and for interventions.
    """
    cfg, n_layers, n = model.cfg, len(model.blocks), tokens.shape[1]
    pos_tok = tokens + torch.arange(n, device=tokens.device) * cfg.d_vocab  # [b, s] into (s, v)
    resid0, q_tab, k_tab, v_tab = layer0_tables(model, n)  # [s, v, d], then [s, v, h, e] each
    resid = F.embedding(pos_tok, resid0.flatten(0, 1))  # [b, s, d]
    mask = model.blocks[0].attn.mask[:n, :n]  # [q, k]
    cache: dict[str, Tensor] = {}
    for layer, block in enumerate(model.blocks):
        attn, name, last = block.attn, f"blocks.{layer}", layer == n_layers - 1
        cache[f"{name}.hook_resid_pre"] = resid
        if layer == 0:  # from a score table over (query pos, token) x (key pos, token): [(s v), (s v), h]
            score_tab = torch.einsum("qhe,khe->qkh", q_tab.flatten(0, 1), k_tab.flatten(0, 1))
            scores = score_tab[pos_tok[:, None, :], pos_tok[:, :, None]]  # [b, k, q, h]
            v = v_tab.flatten(0, 1)[pos_tok]  # [b, s, h, e]
        else:
            scores, v = _scores_and_values(block, resid)
        probs = _pattern(scores, mask, cfg.d_head)  # [b, k, q, h]
        cache[f"{name}.attn.hook_v"] = v
        cache[f"{name}.attn.hook_pattern"] = probs.permute(0, 3, 2, 1).contiguous()  # [b, h, q, k]
        if last:  # from here on, the readout position only
            probs, resid = probs[:, :, -1:], resid[:, -1:]
        z = (probs[..., None] * v[:, :, None]).sum(1)  # [b, q, h, e]
        attn_out = attn.out(z)  # [b, q, d]
        resid = resid + attn_out
        cache[f"{name}.attn.hook_z"], cache[f"{name}.hook_attn_out"] = z, attn_out
        if not cfg.attn_only:
            cache[f"{name}.hook_resid_mid"] = resid
            if n_layers == 1 and not cfg.layernorm:
                pre = _readout_pre_from_tables(model, tokens, pos_tok, probs[:, :, 0], resid0, v_tab)[:, None]
            else:
                pre = affine(block.ln2_(resid), block.mlp.W_in, block.mlp.b_in if cfg.mlp_bias else None)
            resid = resid + _mlp_entries(block.mlp, pre, cache, name)  # pre [b, q, m]
        cache[f"{name}.hook_resid_post"] = resid
    logits = model.unembed(model.ln_final(resid) if cfg.layernorm else resid)  # [b, q, o]
    return logits[:, -1], ActivationCache(cache, model)


def _scores_and_values(block: nn.Module, resid: Tensor) -> tuple[Tensor, Tensor]:
    """A block after layer 0: its unscaled attention scores [b, k, q, h] and values [b, s, h, e]
    from its residual input [b, s, d]."""
    attn, x = block.attn, block.ln1_(resid)
    q, k, v = attn.project(x, "Q"), attn.project(x, "K"), attn.project(x, "V")  # [b, s, h, e]
    return torch.einsum("bqhe,bkhe->bkqh", q, k), v


def _pattern(scores: Tensor, mask: Tensor, d_head: int) -> Tensor:  # [b, k, q, h] -> [b, k, q, h]
    """Attention probabilities from unscaled scores and the causal mask [q, k].

    Laid out [b, k, q, h]: the softmax runs over axis 1, which CPU kernels do much faster than
    over a size-3 innermost axis; the cached pattern is permuted to TL's [b, h, q, k]."""
    return (scores / math.sqrt(d_head)).masked_fill_(~mask.T[:, :, None], float("-inf")).softmax(1)


def _mlp_entries(mlp: nn.Module, pre: Tensor, cache: dict[str, Tensor], name: str) -> Tensor:
    """The MLP after its pre-activation [b, q, m]: records ``{name}.mlp.hook_pre/post`` and
    ``{name}.hook_mlp_out`` in ``cache`` and returns the MLP's output [b, q, d]."""
    post = mlp.act(pre)
    mlp_out = affine(post, mlp.W_out, mlp.b_out if mlp.cfg.mlp_bias else None)
    cache.update({f"{name}.mlp.hook_pre": pre, f"{name}.mlp.hook_post": post, f"{name}.hook_mlp_out": mlp_out})
    return mlp_out


def _readout_pre_from_tables(model: nn.Module, tokens: Tensor, pos_tok: Tensor, alpha: Tensor, resid0: Tensor,
                             v_tab: Tensor) -> Tensor:
    """One layer, no LayerNorm: the readout position's MLP pre-activation [b, m] from tables.

    The residual there is linear in the gathered values, so W_in moves into the tables:
    pre = (W_E[t_last] + W_pos[-1]) W_in + Σ_{k,h} α_bkh v[k, t_k, h] W_O[h] W_in + b_O W_in + b_in,
    with α [b, k, h] the readout attention, ``pos_tok`` [b, s] the inputs' rows of the (s, v)
    tables, ``resid0`` [s, v, d] and ``v_tab`` [s, v, h, e] from :func:`layer0_tables`: one
    ``F.embedding_bag`` (a weighted sum of 1 + s·h rows per input) instead of a [b, d] × [d, m]
    matmul."""
    cfg, attn, mlp = model.cfg, model.blocks[0].attn, model.blocks[0].mlp
    n, h = tokens.shape[1], cfg.n_heads
    W_OI = attn.W_O @ mlp.W_in  # [h, e, m]
    table = torch.cat([resid0[n - 1] @ mlp.W_in,  # [v, m]
                       torch.einsum("svhe,hem->svhm", v_tab, W_OI).reshape(-1, cfg.d_mlp)])  # [(s v h), m]
    head = torch.arange(h, device=tokens.device)
    idx = torch.cat([tokens[:, -1:], cfg.d_vocab + (pos_tok[:, :, None] * h + head).flatten(1)], 1)  # [b, 1 + s·h]
    weights = torch.cat([alpha.new_ones(len(tokens), 1), alpha.flatten(1)], 1)  # [b, 1 + s·h]
    pre = F.embedding_bag(idx, table, per_sample_weights=weights, mode="sum")  # [b, m]
    if cfg.attn_bias:
        pre.add_(attn.b_O @ mlp.W_in)
    return pre.add_(mlp.b_in) if cfg.mlp_bias else pre
