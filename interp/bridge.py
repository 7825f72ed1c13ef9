"""Convert a grokscope :class:`~interp.model.Transformer` into a TransformerLens 4 ``TransformerBridge``.

TransformerLens 4 removed ``HookedTransformer``; a TL-native model is now a ``TransformerBridge``
booted with ``TransformerBridge.boot_native(TransformerBridgeConfig)`` (no download). ``to_bridge``
boots one with our architecture and loads our weights, so any TL 4 tool that takes a bridge
(``run_with_cache``, patching, ``transformer_lens.patching``, ...) works on a grokscope checkpoint::

    bridge = to_bridge(run.model_at(run.steps[-1]))
    logits, cache = bridge.run_with_cache(task.inputs)   # same logits as the Transformer

The weights go through TL's own converter (``convert_tl_checkpoint``): our state dict already uses
TL's property names and per-head shapes (``blocks.0.attn.W_Q`` [head, d_model, d_head], ...), which
it maps onto the bridge's ``nn.Linear`` layout (``blocks.0.attn.q.weight`` [head·d_head, d_model], ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from interp.errors import ConfigError
from interp.model import Transformer

if TYPE_CHECKING:  # importing the bridge stack costs ~1.5 s, so only do it when converting
    from transformer_lens.model_bridge import TransformerBridge

#: our act_fn -> the native model's (both are the exact erf GELU / ReLU, not the tanh approximation)
_ACT_FN = {"relu": "relu", "gelu": "gelu"}


def to_bridge(model: Transformer) -> TransformerBridge:
    """The TL 4 ``TransformerBridge`` computing the same function as ``model`` (on the same device, same dtype).

    Built with ``TransformerBridge.boot_native`` from a ``TransformerBridgeConfig`` with our
    d_model, n_heads, d_head, d_mlp, n_layers, n_ctx, d_vocab, d_vocab_out and act_fn;
    ``normalization_type="LN"`` when ``cfg.layernorm`` else ``None`` (the native model then uses
    identities where the norms go, exactly our no-LayerNorm model); ``attn_only`` as ours;
    standard learned positional embeddings; attention scaled by 1/√d_head; causal mask.
    The logits agree with ``model(tokens)`` up to round-off of the different op orders (tested on
    the full p×p grid: the grokked Nanda-shaped tiny run to 1e-5 relative in float32 and 1e-10 in
    float64; 2-layer LayerNorm/GELU/biases, 2-layer no-LayerNorm and attention-only variants to
    1e-5 in float32 and 1e-10 in float64).

    Limits of the native bridge, and how they are handled:

    * Its attention, MLP and unembedding always carry biases. Where our config has none
      (``attn_bias=False``, ``mlp_bias=False``, ``unembed_bias=False``) they are loaded as
      zeros, so ``bridge.state_dict()`` has extra all-zero ``*.bias`` tensors; training the
      bridge would make them non-zero (it is then no longer our architecture).
    * Its LayerNorm is ``nn.LayerNorm`` (eps 1e-5, biased variance), the same formula as ours,
      but it has no ``hook_scale`` / ``hook_normalized``; it exposes ``ln1.hook_in`` / ``hook_out``.
    * ``forward_last`` (our training fast path) has no bridge counterpart; use ``bridge(tokens)[:, -1]``.
    * Sequences are limited to ``n_ctx`` (= 3 for the grokking tasks), as in our model.

    Every ``ModelConfig`` that grokscope can build is expressible; anything else (another module
    type, an unknown activation) raises :class:`~interp.tasks.ConfigError`.
    """
    if not isinstance(model, Transformer):
        raise ConfigError(f"to_bridge: expected an interp.model.Transformer, got {type(model).__name__}")
    cfg = model.cfg
    if cfg.act_fn not in _ACT_FN:
        raise ConfigError(f"to_bridge: act_fn {cfg.act_fn!r} has no TransformerBridge equivalent")

    from transformer_lens import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    param = next(model.parameters())
    bridge_cfg = TransformerBridgeConfig(
        d_model=cfg.d_model, d_head=cfg.d_head, n_layers=cfg.n_layers, n_ctx=cfg.n_ctx, n_heads=cfg.n_heads,
        d_vocab=cfg.d_vocab, d_vocab_out=cfg.d_vocab_out, d_mlp=cfg.d_mlp, act_fn=_ACT_FN[cfg.act_fn],
        normalization_type="LN" if cfg.layernorm else None, attn_only=cfg.attn_only, eps=1e-5,
        positional_embedding_type="standard", attention_dir="causal", dtype=param.dtype,
        seed=0, model_name="grokscope",  # seeded init runs under fork_rng: global RNG untouched
    )
    bridge = TransformerBridge.boot_native(bridge_cfg, device=param.device, dtype=param.dtype)
    ours = convert_tl_checkpoint({k: v.detach() for k, v in model.state_dict().items()}, bridge_cfg)
    target = bridge.state_dict()
    unknown = sorted(set(ours) - set(target))
    if unknown:
        raise ConfigError(f"to_bridge: the bridge has no parameter for {', '.join(unknown)}")
    for key, value in ours.items():
        if value.shape != target[key].shape:
            raise ConfigError(f"to_bridge: {key} has shape {tuple(value.shape)}, the bridge expects "
                              f"{tuple(target[key].shape)}")
    # biases our config leaves out (see the docstring) are zero in the bridge
    full = {k: ours[k] if k in ours else torch.zeros_like(v) for k, v in target.items()}
    bridge.load_state_dict(full, strict=True)
    return bridge.eval()
