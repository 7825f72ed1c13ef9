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
position; :meth:`Transformer.forward_last` is the training fast path, which only computes
what the last position's logits depend on (``interp.fastpath``); :meth:`Transformer.readout_cache`
is the analysis forward the probes share, what the last position's output and every attention
pattern depend on, as an ``ActivationCache`` (``interp.readout``). Those two modules take the
model as an argument and never import this one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp.errors import ConfigError
from interp.fastpath import affine
from interp.fastpath import forward_last as _forward_last
from interp.readout import readout_cache as _readout_cache
from interp.seqforward import forward_all as _forward_all

#: sequences up to this length use broadcast products in attention, longer ones batched matmuls
SHORT_SEQ = 4


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

    def project(self, x: Tensor, which: str) -> Tensor:  # [..., d] -> [..., h, e]
        """Queries, keys or values (``which`` = "Q", "K", "V") of ``x``, as one [d, (h e)] matmul."""
        W = rearrange(getattr(self, f"W_{which}"), "h d e -> d (h e)")
        out = rearrange(x @ W, "... (h e) -> ... h e", h=self.cfg.n_heads)
        return out + getattr(self, f"b_{which}") if self.cfg.attn_bias else out

    def out(self, z: Tensor) -> Tensor:  # [..., h, e] -> [..., d]
        """The heads' mixed values z through W_O, summed over heads, plus b_O."""
        out = rearrange(z, "... h e -> ... (h e)") @ rearrange(self.W_O, "h e d -> (h e) d")
        return out + self.b_O if self.cfg.attn_bias else out

    def forward(self, x: Tensor) -> Tensor:  # [b, s, d] -> [b, s, d]
        n = x.shape[1]
        q = self.hook_q(self.project(x, "Q"))  # [b, s, h, e]
        k = self.hook_k(self.project(x, "K"))
        v = self.hook_v(self.project(x, "V"))
        if n > SHORT_SEQ:  # longer sequences (issue 13): batched matmuls
            scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.cfg.d_head)
        else:  # short sequences (n_ctx = 3): broadcast products beat b·h tiny batched matmuls.
            qk = (q[:, :, None] * k[:, None]).sum(-1)  # [b, q, k, h]
            scores = rearrange(qk, "b q k h -> b h q k") / math.sqrt(self.cfg.d_head)
        scores = self.hook_attn_scores(scores.masked_fill(~self.mask[:n, :n], float("-inf")))  # [b, h, q, k]
        pattern = self.hook_pattern(scores.softmax(-1))  # [b, h, q, k]
        if n > SHORT_SEQ:
            return self.out(self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v)))
        weights = rearrange(pattern, "b h q k -> b q k h 1")
        z = self.hook_z((weights * v[:, None]).sum(2))  # [b, q, k, h, e] summed over k: [b, q, h, e]
        return self.out(z)


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

    # ---------------------------------------------------------------- last-position forwards
    def forward_last(self, tokens: Tensor) -> Tensor:  # [b, s] -> [b, o]
        """Training fast path: ``forward(tokens)[:, -1]`` computing only what it depends on
        (same values and gradients, tested; hooks do not fire): :func:`interp.fastpath.forward_last`."""
        return _forward_last(self, tokens)

    def forward_all(self, tokens: Tensor) -> Tensor:  # [b, s] -> [b, s, o]
        """Training forward of every-position tasks: ``forward(tokens)`` without hooks and with fused
        causal attention (same values to float tolerance, tested): :func:`interp.seqforward.forward_all`."""
        return _forward_all(self, tokens)

    def readout_cache(self, tokens: Tensor) -> tuple[Tensor, ActivationCache]:  # [b, s] -> [b, o], cache
        """The probes' analysis forward: (logits at the last position, ``ActivationCache`` of what
        that output and every attention pattern depend on): :func:`interp.readout.readout_cache`."""
        return _readout_cache(self, tokens)

    # ---------------------------------------------------------------- helpers
    @property
    def W_E(self) -> Tensor:
        return self.embed.W_E

    @property
    def W_U(self) -> Tensor:
        return self.unembed.W_U

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
