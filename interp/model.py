"""A decoder-only transformer with TransformerLens's parameter names, shapes and hooks.

Shapes follow TransformerLens (b = batch, s = position, h = head, d = d_model,
e = d_head, m = d_mlp, v = d_vocab, o = d_vocab_out):

    embed.W_E              [v, d]        blocks.{l}.attn.W_Q/W_K/W_V  [h, d, e]
    pos_embed.W_pos        [s, d]        blocks.{l}.attn.W_O          [h, e, d]
    blocks.{l}.mlp.W_in    [d, m]        blocks.{l}.mlp.W_out         [m, d]
    unembed.W_U            [d, o]        (biases b_Q, b_K, b_V [h, e], b_O [d], b_in [m],
                                          b_out [d], b_U [o] when enabled)

Hook names are TL's (``hook_embed``, ``blocks.0.attn.hook_pattern``, ...), so
``model.run_with_cache(tokens)`` returns a ``transformer_lens.ActivationCache`` on
which ``cache["pattern", 0]`` works.

Three forwards: :meth:`Transformer.forward` is the full hooked forward over every
position; :meth:`Transformer.forward_last` is the training fast path, which only
computes what the last position's logits depend on; :meth:`Transformer.readout_cache`
is the analysis forward the probes share (what the last position's output and every
attention pattern depend on, as an ``ActivationCache``). See their docstrings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    d_vocab: int
    d_vocab_out: int
    n_ctx: int = 3
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    n_layers: int = 1
    act_fn: str = "relu"  # "relu" | "gelu"
    layernorm: bool = False
    attn_only: bool = False
    attn_bias: bool = False
    mlp_bias: bool = True
    unembed_bias: bool = False
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ConfigError(f"n_layers: must be >= 1, got {self.n_layers}")
        if self.act_fn not in ("relu", "gelu"):
            raise ConfigError(f"act_fn: must be 'relu' or 'gelu', got {self.act_fn!r}")
        for field in ("d_model", "n_heads", "d_head", "d_mlp", "n_ctx"):
            if getattr(self, field) < 1:
                raise ConfigError(f"{field}: must be >= 1, got {getattr(self, field)}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype: must be 'float32' or 'float64', got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def to_dict(self) -> dict:
        return asdict(self)


def affine(x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
    """x @ W + b for x [..., i], W [i, o]: one fused addmm (much faster than a separate add)."""
    if b is None:
        return x @ W
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), W).view(*x.shape[:-1], W.shape[-1])


def _param(*shape: int, scale: float, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape, dtype=dtype) * scale)


def _zeros(*shape: int, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape, dtype=dtype))


class Embed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_E = _param(cfg.d_vocab, cfg.d_model, scale=cfg.d_model**-0.5, dtype=cfg.torch_dtype)

    def forward(self, tokens: Tensor) -> Tensor:  # [b, s] -> [b, s, d]
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_pos = _param(cfg.n_ctx, cfg.d_model, scale=cfg.d_model**-0.5, dtype=cfg.torch_dtype)

    def forward(self, tokens: Tensor) -> Tensor:  # [b, s] -> [b, s, d]
        return self.W_pos[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)


class LayerNorm(nn.Module):
    """TL's LayerNorm: ``w * (x - mean) / sqrt(var + eps) + b``, with hook_scale and hook_normalized."""

    def __init__(self, cfg: ModelConfig, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(cfg.d_model, dtype=cfg.torch_dtype))
        self.b = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.torch_dtype))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dt, s = cfg.torch_dtype, cfg.d_model**-0.5
        self.cfg = cfg
        self.W_Q = _param(cfg.n_heads, cfg.d_model, cfg.d_head, scale=s, dtype=dt)
        self.W_K = _param(cfg.n_heads, cfg.d_model, cfg.d_head, scale=s, dtype=dt)
        self.W_V = _param(cfg.n_heads, cfg.d_model, cfg.d_head, scale=s, dtype=dt)
        self.W_O = _param(cfg.n_heads, cfg.d_head, cfg.d_model, scale=s, dtype=dt)
        if cfg.attn_bias:
            self.b_Q = _zeros(cfg.n_heads, cfg.d_head, dtype=dt)
            self.b_K = _zeros(cfg.n_heads, cfg.d_head, dtype=dt)
            self.b_V = _zeros(cfg.n_heads, cfg.d_head, dtype=dt)
            self.b_O = _zeros(cfg.d_model, dtype=dt)
        self.register_buffer(
            "mask", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)), persistent=False
        )
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern, self.hook_z = HookPoint(), HookPoint(), HookPoint()

    def _proj(self, x: Tensor, name: str) -> Tensor:  # [..., d] -> [..., h, e]
        W = getattr(self, f"W_{name}")  # [h, d, e] -> one [d, h*e] matmul
        out = (x @ W.transpose(0, 1).flatten(1)).unflatten(-1, W.shape[::2])
        return out + getattr(self, f"b_{name}") if self.cfg.attn_bias else out

    def _out(self, z: Tensor) -> Tensor:  # [..., h, e] -> [..., d]
        out = z.flatten(-2) @ self.W_O.flatten(0, 1)
        return out + self.b_O if self.cfg.attn_bias else out

    def forward(self, x: Tensor) -> Tensor:  # [b, s, d] -> [b, s, d]
        n = x.shape[1]
        q = self.hook_q(self._proj(x, "Q"))  # [b, s, h, e]
        k = self.hook_k(self._proj(x, "K"))
        v = self.hook_v(self._proj(x, "V"))
        # Sequences are short (n_ctx = 3): broadcast products beat b·h tiny batched matmuls.
        scores = (q[:, :, None] * k[:, None]).sum(-1).permute(0, 3, 1, 2) / math.sqrt(self.cfg.d_head)
        scores = self.hook_attn_scores(scores.masked_fill(~self.mask[:n, :n], float("-inf")))  # [b, h, q, k]
        pattern = self.hook_pattern(scores.softmax(-1))
        z = self.hook_z((pattern.permute(0, 2, 3, 1)[..., None] * v[:, None]).sum(2))  # [b, q, h, e]
        return self._out(z)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dt = cfg.torch_dtype
        self.cfg = cfg
        self.W_in = _param(cfg.d_model, cfg.d_mlp, scale=cfg.d_model**-0.5, dtype=dt)
        self.W_out = _param(cfg.d_mlp, cfg.d_model, scale=cfg.d_model**-0.5, dtype=dt)
        if cfg.mlp_bias:
            self.b_in = _zeros(cfg.d_mlp, dtype=dt)
            self.b_out = _zeros(cfg.d_model, dtype=dt)
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def act(self, pre: Tensor) -> Tensor:
        return F.relu(pre) if self.cfg.act_fn == "relu" else F.gelu(pre)

    def forward(self, x: Tensor) -> Tensor:  # [..., d] -> [..., d]
        pre = affine(x, self.W_in, self.b_in if self.cfg.mlp_bias else None)
        post = self.hook_post(self.act(self.hook_pre(pre)))
        return affine(post, self.W_out, self.b_out if self.cfg.mlp_bias else None)

    def forward_fast(self, x: Tensor) -> Tensor:  # [..., d] -> [..., d]
        """:meth:`forward` without hooks, with ReLU applied in place to the fresh pre-activation
        (no [b, d_mlp] copy; the matmul's backward does not need its output)."""
        pre = affine(x, self.W_in, self.b_in if self.cfg.mlp_bias else None)
        post = F.relu_(pre) if self.cfg.act_fn == "relu" else F.gelu(pre)
        return affine(post, self.W_out, self.b_out if self.cfg.mlp_bias else None)


class ReluMLPReadout(torch.autograd.Function):
    """Training fast path's readout: ``logits = r W_U`` with ``r = x + relu(x W_in + b_in) W_out + b_out``,
    x [b, d] -> logits [b, o], with a hand-written backward.

    Same values and gradients as autograd through the plain ops (tested); it saves the
    allocations and passes autograd would make (a ReLU output, the residual sum and its gradient
    copies) by applying the ReLU in place and folding the residual into the ``addmm``
    accumulators. Biases may be ``None``.
    ``generate_vmap_rule`` lets ``torch.func`` (``interp.batched``) vmap and differentiate it.
    First-order only: h and r are saved as constants, so a double backward (Hessian-vector
    products, sharpness) would miss their second-order terms; use :meth:`Transformer.forward`
    for those.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, W_in, b_in, W_out, b_out, W_U):
        h = (x @ W_in if b_in is None else torch.addmm(b_in, x, W_in)).relu_()  # [b, m]
        r = torch.addmm(x, h, W_out)  # [b, d]: residual + MLP out
        if b_out is not None:
            r = r + b_out
        return r @ W_U, h, r

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, W_in, b_in, W_out, b_out, W_U = inputs
        _, h, r = output
        ctx.mark_non_differentiable(h, r)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for h and r
        ctx.save_for_backward(x, W_in, W_out, W_U, h, r)
        ctx.has_b_in, ctx.has_b_out = b_in is not None, b_out is not None

    @staticmethod
    def backward(ctx, g, _gh, _gr):
        x, W_in, W_out, W_U, h, r = ctx.saved_tensors
        g_r = g @ W_U.T  # [b, d]
        g_h = torch.ops.aten.threshold_backward(g_r @ W_out.T.contiguous(), h, 0)  # [b, m]: ReLU' (ATen kernel)
        g_x = torch.addmm(g_r, g_h, W_in.T)  # residual gradient folded in
        return (g_x, x.T @ g_h, g_h.sum(0) if ctx.has_b_in else None, h.T @ g_r,
                g_r.sum(0) if ctx.has_b_out else None, r.T @ g)


class FoldedReluReadout(torch.autograd.Function):
    """One-layer fast path's readout with the linear maps around the MLP multiplied out:

        pre = pre0 + z A,   h = relu(pre),   logits = logit0 + z OU + h M

    z [b, h·e] is the readout attention's mixed values; A = W_O W_in [h·e, m], OU = W_O W_U
    [h·e, o] and M = W_out W_U [m, o] are formed once per step (≈ 18 M multiply-adds for
    ``nanda``, which a batch of ≳ 750 repays); pre0
    [b, m] or [m] and logit0 [b, o] or [o] carry everything that depends only on the last token
    (its embedding, b_O, b_in, b_out, b_U). Equal to ``resid = x + z W_O;
    logits = (resid + relu(resid W_in) W_out) W_U`` (tested), but the batch never passes through
    W_O, W_out or W_U on their own: per example, forward and backward alike, (h·e)·m + (h·e)·o
    + m·o multiply-adds instead of (h·e)·d + 2·d·m + d·o (15% fewer for the ``nanda`` model;
    :meth:`Transformer.folds_readout` says when it pays). Otherwise as :class:`ReluMLPReadout`
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
    def backward(ctx, g, _gh):
        z, A, OU, M, h = ctx.saved_tensors
        g_h = torch.ops.aten.threshold_backward(g @ M.T, h, 0)  # [b, m]
        g_z = torch.addmm(g @ OU.T, g_h, A.T)  # [b, h·e]
        g_pre0, g_logit0 = (g_h.sum(0), g.sum(0)) if ctx.shared else (g_h, g)
        return g_z, g_pre0, g_logit0, z.T @ g_h, z.T @ g, h.T @ g


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


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.layernorm:
            self.ln1 = LayerNorm(cfg)
        self.attn = Attention(cfg)
        if not cfg.attn_only:
            if cfg.layernorm:
                self.ln2 = LayerNorm(cfg)
            self.mlp = MLP(cfg)
            self.hook_mlp_out = HookPoint()
            self.hook_resid_mid = HookPoint()
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def ln1_(self, x: Tensor) -> Tensor:
        return self.ln1(x) if self.cfg.layernorm else x

    def ln2_(self, x: Tensor) -> Tensor:
        return self.ln2(x) if self.cfg.layernorm else x

    def forward(self, resid: Tensor) -> Tensor:
        resid = self.hook_resid_pre(resid)
        resid = resid + self.hook_attn_out(self.attn(self.ln1_(resid)))
        if not self.cfg.attn_only:
            resid = self.hook_resid_mid(resid)
            resid = resid + self.hook_mlp_out(self.mlp(self.ln2_(resid)))
        return self.hook_resid_post(resid)


class Unembed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dt = cfg.torch_dtype
        self.cfg = cfg
        self.W_U = _param(cfg.d_model, cfg.d_vocab_out, scale=cfg.d_vocab**-0.5, dtype=dt)
        if cfg.unembed_bias:
            self.b_U = _zeros(cfg.d_vocab_out, dtype=dt)

    def forward(self, x: Tensor) -> Tensor:  # [..., d] -> [..., o]
        return affine(x, self.W_U, self.b_U if self.cfg.unembed_bias else None)


class Transformer(HookedRootModule):
    """Decoder-only transformer (Nanda et al. 2023 architecture by default: one layer,
    no LayerNorm, ReLU MLP, no attention biases), initialised as in that paper:
    N(0, 1/d_model) for every matrix except W_U ~ N(0, 1/d_vocab)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()
        self.pos_embed = PosEmbed(cfg)
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        if cfg.layernorm:
            self.ln_final = LayerNorm(cfg)
        self.unembed = Unembed(cfg)
        self.setup()

    # ---------------------------------------------------------------- full forward
    def forward(self, tokens: Tensor, return_type: str | None = "logits") -> Tensor | None:
        """Full hooked forward: tokens [b, s] -> logits [b, s, d_vocab_out]."""
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            resid = block(resid)
        if self.cfg.layernorm:
            resid = self.ln_final(resid)
        logits = self.unembed(resid)
        return None if return_type is None else logits

    def run_with_cache(self, *args, **kwargs) -> tuple[Tensor, ActivationCache]:
        """Like TL's: returns (logits, ActivationCache), so ``cache["pattern", 0]`` works."""
        out, cache_dict = super().run_with_cache(*args, **kwargs)
        return out, ActivationCache(cache_dict, self)

    # ---------------------------------------------------------------- readout cache
    @torch.no_grad()
    def readout_cache(self, tokens: Tensor) -> tuple[Tensor, ActivationCache]:
        """The analysis forward: (logits at the last position [b, o], ActivationCache), computing
        what the last position's output and every attention pattern depend on, and no more.

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
        tables as in :meth:`forward_last` (and, with one layer and no LayerNorm, the readout MLP's
        pre-activation too: :meth:`_readout_pre_from_tables`). Not in this cache: ``hook_embed``,
        ``hook_pos_embed``, ``attn.hook_q/k/attn_scores`` and the LayerNorm hooks (so TL's
        ``accumulated_resid`` / ``decompose_resid``, which need every layer at every position, do
        not apply). Runs without autograd (entries detached, as TL caches are). Hooks do not fire;
        use ``run_with_cache`` for those and for interventions.
        """
        cfg, n_layers = self.cfg, len(self.blocks)
        n = tokens.shape[1]
        pos_tok = tokens + torch.arange(n, device=tokens.device) * cfg.d_vocab  # [b, s] into (s, v)
        resid0, q_tab, k_tab, v_tab = self._layer0_tables(n)  # [s, v, ...]
        resid = F.embedding(pos_tok, resid0.flatten(0, 1))  # [b, s, d]
        mask = self.blocks[0].attn.mask[:n, :n]
        cache: dict[str, Tensor] = {}
        for layer, block in enumerate(self.blocks):
            attn, name, last = block.attn, f"blocks.{layer}", layer == n_layers - 1
            cache[f"{name}.hook_resid_pre"] = resid
            # scores laid out [b, k, q, h]: the softmax runs over axis 1, which CPU kernels do ~4x
            # faster than over a size-3 innermost axis; the cached pattern is [b, h, q, k] as in TL
            if layer == 0:  # from a score table over (query pos, token) x (key pos, token): [(s v), (s v), h]
                score_tab = torch.einsum("qhe,khe->qkh", q_tab.flatten(0, 1), k_tab.flatten(0, 1))
                scores = score_tab[pos_tok[:, None, :], pos_tok[:, :, None]]  # [b, k, q, h]
                v = v_tab.flatten(0, 1)[pos_tok]  # [b, s, h, e]
            else:
                x = block.ln1_(resid)
                q, k, v = attn._proj(x, "Q"), attn._proj(x, "K"), attn._proj(x, "V")
                scores = torch.einsum("bqhe,bkhe->bkqh", q, k)
            scores = (scores / math.sqrt(cfg.d_head)).masked_fill_(~mask.T[:, :, None], float("-inf"))
            probs = scores.softmax(1)  # [b, k, q, h]
            cache[f"{name}.attn.hook_v"] = v
            cache[f"{name}.attn.hook_pattern"] = probs.permute(0, 3, 2, 1).contiguous()  # [b, h, q, k]
            if last:  # from here on, the readout position only
                probs, resid = probs[:, :, -1:], resid[:, -1:]
            z = (probs[..., None] * v[:, :, None]).sum(1)  # [b, q, h, e]
            attn_out = attn._out(z)
            resid = resid + attn_out
            cache[f"{name}.attn.hook_z"], cache[f"{name}.hook_attn_out"] = z, attn_out
            if not cfg.attn_only:
                mlp = block.mlp
                cache[f"{name}.hook_resid_mid"] = resid
                if n_layers == 1 and not cfg.layernorm:
                    pre = self._readout_pre_from_tables(tokens, pos_tok, probs[:, :, 0], resid0, v_tab)[:, None]
                else:
                    pre = affine(block.ln2_(resid), mlp.W_in, mlp.b_in if cfg.mlp_bias else None)
                post = mlp.act(pre)
                mlp_out = affine(post, mlp.W_out, mlp.b_out if cfg.mlp_bias else None)
                resid = resid + mlp_out
                cache.update({f"{name}.mlp.hook_pre": pre, f"{name}.mlp.hook_post": post,
                              f"{name}.hook_mlp_out": mlp_out})
            cache[f"{name}.hook_resid_post"] = resid
        logits = self.unembed(self.ln_final(resid) if cfg.layernorm else resid)
        return logits[:, -1], ActivationCache(cache, self)

    def _readout_pre_from_tables(self, tokens: Tensor, pos_tok: Tensor, alpha: Tensor, resid0: Tensor,
                                 v_tab: Tensor) -> Tensor:
        """One layer, no LayerNorm: the readout position's MLP pre-activation [b, m] from tables.

        The residual there is linear in the gathered values, so W_in moves into the tables:
        pre = (W_E[t_last] + W_pos[-1]) W_in + Σ_{k,h} α_bkh v[k, t_k, h] W_O[h] W_in + b_O W_in + b_in,
        with α [b, k, h] the readout attention: one ``F.embedding_bag`` (a weighted sum of 1 + s·h
        rows per input) instead of a [b, d] × [d, m] matmul, about 2.5x cheaper on the p² grid."""
        cfg, attn, mlp = self.cfg, self.blocks[0].attn, self.blocks[0].mlp
        n, h = tokens.shape[1], cfg.n_heads
        W_OI = attn.W_O @ mlp.W_in  # [h, e, m]
        table = torch.cat([resid0[n - 1] @ mlp.W_in,  # [v, m]
                           torch.einsum("svhe,hem->svhm", v_tab, W_OI).reshape(-1, cfg.d_mlp)])  # [(s v h), m]
        head = torch.arange(h, device=tokens.device)
        idx = torch.cat([tokens[:, -1:], cfg.d_vocab + (pos_tok[:, :, None] * h + head).flatten(1)], 1)
        weights = torch.cat([alpha.new_ones(len(tokens), 1), alpha.flatten(1)], 1)  # [b, 1 + s·h]
        pre = F.embedding_bag(idx, table, per_sample_weights=weights, mode="sum")
        if cfg.attn_bias:
            pre.add_(attn.b_O @ mlp.W_in)
        return pre.add_(mlp.b_in) if cfg.mlp_bias else pre

    def _layer0_tables(self, n: int, last_query_only: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Layer 0's input ``W_E[tok] + W_pos[pos]`` as a [s, v, d] table, and its queries, keys and
        values [s, v, h, e]: layer 0 sees each (position, token) on its own. With
        ``last_query_only``, the queries of the last position only, [v, h, e] (all the fast path reads)."""
        attn = self.blocks[0].attn
        resid0 = self.embed.W_E[None] + self.pos_embed.W_pos[:n, None]  # [s, v, d]
        x = self.blocks[0].ln1_(resid0)
        q = attn._proj(x[n - 1] if last_query_only else x, "Q")
        return resid0, q, attn._proj(x, "K"), attn._proj(x, "V")

    # ---------------------------------------------------------------- fast path
    def forward_last(self, tokens: Tensor) -> Tensor:
        """Training fast path: logits of the last position only, [b, s] -> [b, d_vocab_out].

        Equal to ``forward(tokens)[:, -1]`` (tested to 1e-5, with equal gradients),
        but computes only what those logits depend on:

        * the last block's queries, MLP and unembedding run at the last position only;
        * layer 0's residual input is ``W_E[tok] + W_pos[pos]``, a function of
          (token, position), so its queries, keys and values are computed once per
          vocabulary entry and position ([s, v, h, e] tables, v ≪ b); with one layer,
          every possible readout score q·k is one entry of a [v, s, v, h] table, so the
          batch gathers scalar scores and value vectors instead of computing them;
        * without LayerNorm and with ReLU, MLP and unembedding run as one autograd function
          with a hand-written, allocation-saving backward: :class:`FoldedReluReadout` for one
          layer (W_O, W_out and W_U multiplied into the maps around the MLP, and the last
          token's embedding into per-token tables; shared by the batch when every input ends
          in the same token, as the tasks' ``=`` does), :class:`ReluMLPReadout` for more.

        Hooks do not fire here; use :meth:`forward` / ``run_with_cache`` for analysis.
        """
        blocks, n = self.blocks, tokens.shape[1]
        last = blocks[-1]
        cfg = self.cfg
        relu_readout = not cfg.attn_only and not cfg.layernorm and cfg.act_fn == "relu"
        if len(blocks) == 1:
            resid_tab, scores, v = self._layer0_gather(tokens)
            z = (scores.softmax(1)[..., None] * v).sum(1).flatten(1)  # [b, h·e]
            if relu_readout and self.folds_readout(len(tokens)):
                return self._folded_readout(tokens[:, -1], resid_tab, z)
            resid_last = torch.addmm(F.embedding(tokens[:, -1], resid_tab), z, last.attn.W_O.flatten(0, 1))
        else:
            resid = self.embed.W_E[tokens] + self.pos_embed.W_pos[:n]
            for block in blocks[:-1]:
                resid = block(resid)
            resid_last, x = resid[:, -1], last.ln1_(resid)
            q, k, v = last.attn._proj(x[:, -1], "Q"), last.attn._proj(x, "K"), last.attn._proj(x, "V")
            # elementwise products beat tiny batched matmuls here
            scores = (q[:, None] * k).sum(-1) / math.sqrt(cfg.d_head)  # [b, s, h]
            z = (scores.softmax(1)[..., None] * v).sum(1)  # [b, h, e]
            resid_last = torch.addmm(resid_last, z.flatten(1), last.attn.W_O.flatten(0, 1))  # + attn_out [b, d]
        if cfg.attn_bias:
            resid_last = resid_last + last.attn.b_O
        if relu_readout:
            mlp = last.mlp
            b_in, b_out = (mlp.b_in, mlp.b_out) if cfg.mlp_bias else (None, None)
            logits = ReluMLPReadout.apply(resid_last, mlp.W_in, b_in, mlp.W_out, b_out, self.unembed.W_U)[0]
            return logits + self.unembed.b_U if cfg.unembed_bias else logits
        if not cfg.attn_only:
            resid_last = resid_last + last.mlp.forward_fast(last.ln2_(resid_last))
        if cfg.layernorm:
            resid_last = self.ln_final(resid_last)
        return self.unembed(resid_last)

    def folds_readout(self, batch: int) -> bool:
        """Whether :meth:`forward_last` of this one-layer model uses :class:`FoldedReluReadout`
        for a batch of ``batch`` inputs: when the multiply-adds it saves per example, plain
        (h·e)·d + 2·d·m + d·o minus folded (h·e)·m + (h·e)·o + m·o, times the batch, exceed the
        cost of forming A, OU and M, (h·e)·d·m + (h·e)·d·o + m·d·o. Not so when d_vocab_out ≫
        d_model, nor for small minibatches (``nanda``: folds from 734 inputs)."""
        cfg = self.cfg
        he, d, m, o = cfg.n_heads * cfg.d_head, cfg.d_model, cfg.d_mlp, cfg.d_vocab_out
        saved = (he * d + 2 * d * m + d * o) - (he * m + he * o + m * o)
        return saved > 0 and batch * saved > he * d * m + he * d * o + m * d * o

    def _folded_readout(self, last_tok: Tensor, resid_tab: Tensor, z: Tensor) -> Tensor:
        """One layer, no LayerNorm, ReLU: logits [b, o] from the readout attention's z [b, h·e]
        and the last position's residual table ``W_E + W_pos[-1]`` [v, d], through
        :class:`FoldedReluReadout`."""
        cfg, attn, mlp, W_U = self.cfg, self.blocks[0].attn, self.blocks[0].mlp, self.unembed.W_U
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
            logit0 = logit0 + self.unembed.b_U
        if shared is None:
            pre0, logit0 = F.embedding(last_tok, pre0), F.embedding(last_tok, logit0)
        return FoldedReluReadout.apply(z, pre0, logit0, W_O @ mlp.W_in, W_O @ W_U, mlp.W_out @ W_U)[0]

    def _layer0_gather(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Layer 0 from per-(position, token) tables: the last position's residual as a table
        over its token [v, d], the readout attention scores [b, s, h] and values [b, s, h, e].

        The readout query depends only on the last token and each key only on (position,
        token), so every possible score is one entry of a [v, s, v, h] table (v = d_vocab),
        computed once per step and gathered as scalars."""
        b, n = tokens.shape
        cfg = self.cfg
        resid0, q_tab, k_tab, v_tab = self._layer0_tables(n, last_query_only=True)  # q [v, h, e]; k, v [s, v, h, e]
        score_tab = torch.einsum("uhe,svhe->usvh", q_tab, k_tab) / math.sqrt(cfg.d_head)  # [v, s, v, h]
        # F.embedding: its backward is a dense index-add, much cheaper than advanced indexing's
        pos_tok = tokens + torch.arange(n, device=tokens.device) * cfg.d_vocab  # [b, s] index into (s, v)
        scores = F.embedding(pos_tok + tokens[:, -1:] * (n * cfg.d_vocab), score_tab.reshape(-1, cfg.n_heads))
        v = F.embedding(pos_tok, v_tab.flatten(2).flatten(0, 1)).view(b, n, cfg.n_heads, cfg.d_head)
        return resid0[n - 1], scores, v

    # ---------------------------------------------------------------- helpers
    @property
    def W_E(self) -> Tensor:
        return self.embed.W_E

    @property
    def W_U(self) -> Tensor:
        return self.unembed.W_U

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
