"""The training forward of every-position (next-token) tasks: all positions' logits of an
:class:`interp.model.Transformer`, without hooks and with fused causal attention.

:func:`forward_all` equals ``model(tokens)`` (values and gradients to float tolerance, tested) but
runs attention through ``F.scaled_dot_product_attention`` (no [b, h, q, k] pattern kept for
backward beyond what the fused kernel needs) and skips the hook points. Like
``interp.fastpath``, it is a free function of the model and never imports ``interp.model``.
Hooks do not fire here; use ``model(tokens)`` / ``model.run_with_cache`` for analysis.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from interp.fastpath import affine


def _attention(attn: nn.Module, x: Tensor) -> Tensor:  # [b, s, d] -> [b, s, d]
    q, k, v = (attn.project(x, w).transpose(1, 2) for w in "QKV")  # [b, h, s, e]
    z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(e), as the model's
    return attn.out(z.transpose(1, 2))


def _mlp(mlp: nn.Module, x: Tensor) -> Tensor:
    b_in, b_out = (mlp.b_in, mlp.b_out) if mlp.cfg.mlp_bias else (None, None)
    return affine(mlp.act(affine(x, mlp.W_in, b_in)), mlp.W_out, b_out)


def forward_all(model: nn.Module, tokens: Tensor) -> Tensor:  # [b, s] -> [b, s, o]
    """``model(tokens)``: logits at every position, without hooks (module docstring)."""
    cfg = model.cfg
    resid = model.embed.W_E[tokens] + model.pos_embed.W_pos[: tokens.shape[1]]
    for block in model.blocks:
        resid = resid + _attention(block.attn, block.ln1_(resid))
        if not cfg.attn_only:
            resid = resid + _mlp(block.mlp, block.ln2_(resid))
    if cfg.layernorm:
        resid = model.ln_final(resid)
    return model.unembed(resid)
