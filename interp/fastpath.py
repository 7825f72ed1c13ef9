"""The training fast path: the last position's logits of an :class:`interp.model.Transformer`.

:func:`forward_last` equals ``model(tokens)[:, -1]`` (values and gradients, tested) but
computes only what those logits depend on. It is a free function of the model (which
``Transformer.forward_last`` delegates to); this module never imports ``interp.model``, so the
import runs one way, model -> fastpath. Shape letters as in ``interp.model``: b = batch,
s = position, h = head, d = d_model, e = d_head, m = d_mlp, v = d_vocab, o = d_vocab_out.

Also here, shared with ``interp.model`` and ``interp.readout``: :func:`affine` and
:func:`layer0_tables`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def affine(x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:  # [..., i] @ [i, o] + [o] -> [..., o]
    """``x @ W + b``, with the bias added inside one fused ``addmm`` rather than as a separate add."""
    if b is None:
        return x @ W
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), W).view(*x.shape[:-1], W.shape[-1])


class ReluMLPReadout(torch.autograd.Function):
    """Training fast path's readout: ``logits = r W_U`` with ``r = x + relu(x W_in + b_in) W_out + b_out``,
    x [b, d] -> logits [b, o], with a hand-written backward.

    Same values and gradients as autograd through the plain ops (tested); it saves the
    allocations and passes autograd would make (a ReLU output, the residual sum and its gradient
    copies) by applying the ReLU in place and folding the residual into the ``addmm``
    accumulators. Biases may be ``None``.
    ``generate_vmap_rule`` lets ``torch.func`` (``interp.batched``) vmap and differentiate it.
    First-order only: h and r are saved as constants, so a double backward (Hessian-vector
    products, sharpness) would miss their second-order terms; use ``Transformer.forward``
    for those.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, W_in, b_in, W_out, b_out, W_U):
        h = (x @ W_in if b_in is None else torch.addmm(b_in, x, W_in)).relu_()  # [b, m]
        r = torch.addmm(x, h, W_out)  # [b, d]: residual + MLP out
        if b_out is not None:
            r = r + b_out
        return r @ W_U, h, r  # [b, o], [b, m], [b, d]

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, W_in, b_in, W_out, b_out, W_U = inputs
        _, h, r = output
        ctx.mark_non_differentiable(h, r)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for h and r
        ctx.save_for_backward(x, W_in, W_out, W_U, h, r)
        ctx.has_b_in, ctx.has_b_out = b_in is not None, b_out is not None

    @staticmethod
    def backward(ctx, g, _gh, _gr):  # g [b, o]
        x, W_in, W_out, W_U, h, r = ctx.saved_tensors
        g_r = g @ W_U.T  # [b, d]
        g_h = torch.ops.aten.threshold_backward(g_r @ W_out.T.contiguous(), h, 0)  # [b, m]: ReLU' (ATen kernel)
        g_x = torch.addmm(g_r, g_h, W_in.T)  # [b, d]: residual gradient folded in
        return (g_x, x.T @ g_h, g_h.sum(0) if ctx.has_b_in else None, h.T @ g_r,
                g_r.sum(0) if ctx.has_b_out else None, r.T @ g)


class FoldedReluReadout(torch.autograd.Function):
    """One-layer fast path's readout with the linear maps around the MLP multiplied out:

        pre = pre0 + z A,   h = relu(pre),   logits = logit0 + z OU + h M

    z [b, h·e] is the readout attention's mixed values; A = W_O W_in [h·e, m], OU = W_O W_U
    [h·e, o] and M = W_out W_U [m, o] are formed once per step ((h·e)·d·m + (h·e)·d·o + m·d·o
    multiply-adds, which a large enough batch repays: :func:`folds_readout`); pre0 [b, m] or [m]
    and logit0 [b, o] or [o] carry everything that depends only on the last token (its
    embedding, b_O, b_in, b_out, b_U). Equal to ``resid = x + z W_O;
    logits = (resid + relu(resid W_in) W_out) W_U`` (tested), but the batch never passes through
    W_O, W_out or W_U on their own: per example, forward and backward alike, (h·e)·m + (h·e)·o
    + m·o multiply-adds instead of (h·e)·d + 2·d·m + d·o. Otherwise as :class:`ReluMLPReadout`
    (in-place ReLU, ATen ``threshold_backward``, vmappable, first-order only). A 1-D
    pre0/logit0 is shared by the whole batch (its gradient is summed).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z, pre0, logit0, A, OU, M):
        h = torch.addmm(pre0, z, A).relu_()  # [b, m]
        return torch.addmm(torch.addmm(logit0, z, OU), h, M), h  # [b, o] (addmm_ has no vmap rule)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, pre0, _, A, OU, M = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(z, A, OU, M, output[1])
        ctx.shared = pre0.dim() == 1

    @staticmethod
    def backward(ctx, g, _gh):  # g [b, o]
        z, A, OU, M, h = ctx.saved_tensors
        g_h = torch.ops.aten.threshold_backward(g @ M.T, h, 0)  # [b, m]
        g_z = torch.addmm(g @ OU.T, g_h, A.T)  # [b, h·e]
        g_pre0, g_logit0 = (g_h.sum(0), g.sum(0)) if ctx.shared else (g_h, g)
        return g_z, g_pre0, g_logit0, z.T @ g_h, z.T @ g, h.T @ g


def forward_last(model: nn.Module, tokens: Tensor) -> Tensor:  # [b, s] -> [b, o]
    """Training fast path: the logits of ``model`` (an ``interp.model.Transformer``) at the last
    position only.

    Equal to ``model(tokens)[:, -1]`` (tested to 1e-5, with equal gradients), but computes
    only what those logits depend on:

    * the last block's queries, MLP and unembedding run at the last position only;
    * layer 0's residual input is ``W_E[tok] + W_pos[pos]``, a function of (token, position),
      so its queries, keys and values are computed once per vocabulary entry and position
      ([s, v, h, e] tables, v ≪ b); with one layer, every possible readout score q·k is one
      entry of a [v, s, v, h] table, so the batch gathers scalar scores and value vectors
      instead of computing them (:func:`_layer0_gather`);
    * without LayerNorm and with ReLU, MLP and unembedding run as one autograd function with a
      hand-written, allocation-saving backward: :class:`FoldedReluReadout` for one layer (W_O,
      W_out and W_U multiplied into the maps around the MLP, and the last token's embedding
      into per-token tables; shared by the batch when every input ends in the same token, as
      the tasks' ``=`` does), :class:`ReluMLPReadout` for more.

    Hooks do not fire here; use ``model(tokens)`` / ``model.run_with_cache`` for analysis.
    """
    cfg, blocks = model.cfg, model.blocks
    relu_readout = not cfg.attn_only and not cfg.layernorm and cfg.act_fn == "relu"
    if len(blocks) > 1:
        return _readout(model, _last_resid_deep(model, tokens), relu_readout)
    resid_tab, scores, v = _layer0_gather(model, tokens)  # [v, d], [b, s, h], [b, s, h, e]
    z = (scores.softmax(1)[..., None] * v).sum(1).flatten(1)  # [b, h·e]
    if relu_readout and folds_readout(model, len(tokens)):
        return _folded_readout(model, tokens[:, -1], resid_tab, z)
    resid_last = torch.addmm(F.embedding(tokens[:, -1], resid_tab), z, blocks[0].attn.W_O.flatten(0, 1))  # [b, d]
    return _readout(model, resid_last, relu_readout)


def _last_resid_deep(model: nn.Module, tokens: Tensor) -> Tensor:  # [b, s] -> [b, d]
    """Two or more layers: the last block's residual after attention (before b_O) at the last
    position. Every block but the last runs in full; the last one's query at the last position only."""
    cfg, last = model.cfg, model.blocks[-1]
    resid = model.embed.W_E[tokens] + model.pos_embed.W_pos[: tokens.shape[1]]  # [b, s, d]
    for block in model.blocks[:-1]:
        resid = block(resid)
    resid_last, x = resid[:, -1], last.ln1_(resid)  # [b, d], [b, s, d]
    q, k, v = last.attn.project(x[:, -1], "Q"), last.attn.project(x, "K"), last.attn.project(x, "V")
    # elementwise products beat tiny batched matmuls here
    scores = (q[:, None] * k).sum(-1) / math.sqrt(cfg.d_head)  # [b, s, h]
    z = (scores.softmax(1)[..., None] * v).sum(1)  # [b, h, e]
    return torch.addmm(resid_last, z.flatten(1), last.attn.W_O.flatten(0, 1))  # + attn_out, [b, d]


def _readout(model: nn.Module, resid_last: Tensor, relu_readout: bool) -> Tensor:  # [b, d] -> [b, o]
    """The last block after attention, from its residual before b_O: b_O, MLP, final LayerNorm
    and unembedding, through :class:`ReluMLPReadout` when ``relu_readout``."""
    cfg, last = model.cfg, model.blocks[-1]
    if cfg.attn_bias:
        resid_last = resid_last + last.attn.b_O
    if relu_readout:
        mlp = last.mlp
        b_in, b_out = (mlp.b_in, mlp.b_out) if cfg.mlp_bias else (None, None)
        logits = ReluMLPReadout.apply(resid_last, mlp.W_in, b_in, mlp.W_out, b_out, model.unembed.W_U)[0]
        return logits + model.unembed.b_U if cfg.unembed_bias else logits
    if not cfg.attn_only:
        resid_last = resid_last + _mlp_fast(last.mlp, last.ln2_(resid_last))
    if cfg.layernorm:
        resid_last = model.ln_final(resid_last)
    return model.unembed(resid_last)


def _mlp_fast(mlp: nn.Module, x: Tensor) -> Tensor:  # [..., d] -> [..., d]
    """``mlp(x)`` without hooks, with ReLU applied in place to the fresh pre-activation
    (no [b, m] copy; the matmul's backward does not need its output)."""
    b_in, b_out = (mlp.b_in, mlp.b_out) if mlp.cfg.mlp_bias else (None, None)
    pre = affine(x, mlp.W_in, b_in)  # [..., m]
    post = F.relu_(pre) if mlp.cfg.act_fn == "relu" else F.gelu(pre)
    return affine(post, mlp.W_out, b_out)


def folds_readout(model: nn.Module, batch: int) -> bool:
    """Whether :func:`forward_last` of this one-layer model uses :class:`FoldedReluReadout`
    for a batch of ``batch`` inputs: when the multiply-adds it saves per example, plain
    (h·e)·d + 2·d·m + d·o minus folded (h·e)·m + (h·e)·o + m·o, times the batch, exceed the
    cost of forming A, OU and M, (h·e)·d·m + (h·e)·d·o + m·d·o. Not so when d_vocab_out ≫
    d_model, nor for small minibatches (``nanda``: folds from 734 inputs)."""
    cfg = model.cfg
    he, d, m, o = cfg.n_heads * cfg.d_head, cfg.d_model, cfg.d_mlp, cfg.d_vocab_out
    saved = (he * d + 2 * d * m + d * o) - (he * m + he * o + m * o)
    return saved > 0 and batch * saved > he * d * m + he * d * o + m * d * o


def _folded_readout(model: nn.Module, last_tok: Tensor, resid_tab: Tensor, z: Tensor) -> Tensor:
    """One layer, no LayerNorm, ReLU: logits [b, o] from the last tokens [b], the last position's
    residual table ``W_E + W_pos[-1]`` [v, d] and the readout attention's z [b, h·e], through
    :class:`FoldedReluReadout`."""
    cfg, attn, mlp, W_U = model.cfg, model.blocks[0].attn, model.blocks[0].mlp, model.unembed.W_U
    W_O = attn.W_O.flatten(0, 1)  # [h·e, d]
    shared = _shared_value(last_tok)
    if shared is not None:  # one row for the whole batch: no [b, m] gather or scatter
        resid_tab = resid_tab[shared]  # [d]
    if cfg.attn_bias:
        resid_tab = resid_tab + attn.b_O
    pre0 = resid_tab @ mlp.W_in  # [v, m] or [m]: what the last token adds to the pre-activation
    logit0 = (resid_tab + mlp.b_out if cfg.mlp_bias else resid_tab) @ W_U  # [v, o] or [o]
    if cfg.mlp_bias:
        pre0 = pre0 + mlp.b_in
    if cfg.unembed_bias:
        logit0 = logit0 + model.unembed.b_U
    if shared is None:
        pre0, logit0 = F.embedding(last_tok, pre0), F.embedding(last_tok, logit0)  # [b, m], [b, o]
    return FoldedReluReadout.apply(z, pre0, logit0, W_O @ mlp.W_in, W_O @ W_U, mlp.W_out @ W_U)[0]


def _shared_value(t: Tensor) -> int | None:
    """The value every entry of the 1-D integer tensor ``t`` has, or None: when they differ,
    when ``t`` is batched under ``torch.func`` (no data-dependent branching there), or off the
    CPU (the check would cost a host sync a step). None only costs the shared-row shortcut."""
    if t.device.type != "cpu" or len(t) == 0:
        return None
    try:
        return int(t[0]) if bool((t == t[0]).all()) else None
    except RuntimeError:  # vmap: "data-dependent control flow is not supported"
        return None


def layer0_tables(model: nn.Module, n: int, last_query_only: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Layer 0's input ``W_E[tok] + W_pos[pos]`` as a [s, v, d] table over the first ``n``
    positions, and its queries, keys and values [s, v, h, e]: layer 0 sees each (position,
    token) on its own. With ``last_query_only``, the queries of the last position only,
    [v, h, e] (all the fast path reads)."""
    attn = model.blocks[0].attn
    resid0 = model.embed.W_E[None] + model.pos_embed.W_pos[:n, None]  # [s, v, d]
    x = model.blocks[0].ln1_(resid0)
    q = attn.project(x[n - 1] if last_query_only else x, "Q")
    return resid0, q, attn.project(x, "K"), attn.project(x, "V")


def _layer0_gather(model: nn.Module, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Layer 0 from per-(position, token) tables: the last position's residual as a table
    over its token [v, d], the readout attention scores [b, s, h] and values [b, s, h, e].

    The readout query depends only on the last token and each key only on (position,
    token), so every possible score is one entry of a [v, s, v, h] table (v = d_vocab),
    computed once per step and gathered as scalars."""
    b, n = tokens.shape
    cfg = model.cfg
    resid0, q_tab, k_tab, v_tab = layer0_tables(model, n, last_query_only=True)  # q [v, h, e]; k, v [s, v, h, e]
    score_tab = torch.einsum("uhe,svhe->usvh", q_tab, k_tab) / math.sqrt(cfg.d_head)  # [v, s, v, h]
    # F.embedding: its backward is a dense index-add, much cheaper than advanced indexing's
    pos_tok = tokens + torch.arange(n, device=tokens.device) * cfg.d_vocab  # [b, s] index into (s, v)
    scores = F.embedding(pos_tok + tokens[:, -1:] * (n * cfg.d_vocab), score_tab.reshape(-1, cfg.n_heads))
    v = F.embedding(pos_tok, v_tab.flatten(2).flatten(0, 1)).view(b, n, cfg.n_heads, cfg.d_head)
    return resid0[n - 1], scores, v
