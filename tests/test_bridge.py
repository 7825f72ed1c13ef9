"""interp.bridge.to_bridge: the TL 4 TransformerBridge computes the same function as our Transformer."""

from __future__ import annotations

import pytest
import torch

from interp import ConfigError, ModelConfig, Task, Transformer
from interp.bridge import to_bridge


def _grid(p: int) -> torch.Tensor:
    return Task("add", p, 0.5, 0).inputs


def _random_model(seed: int = 0, **changes) -> Transformer:
    """A p=47 model with every parameter (biases and LayerNorm weights included) moved off its init."""
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(d_vocab=48, d_vocab_out=47, d_model=32, n_heads=4, d_head=8, d_mlp=64, **changes))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def _assert_same_logits(model: Transformer, tokens: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    bridge = to_bridge(model)
    with torch.no_grad():
        ours, theirs = model(tokens), bridge(tokens)
    assert theirs.shape == ours.shape == (tokens.shape[0], 3, model.cfg.d_vocab_out)
    torch.testing.assert_close(theirs, ours, atol=atol, rtol=rtol)


def test_nanda_shaped_grokked_model_float32(tiny_run):
    """The trained tiny run (1 layer, 4 heads, ReLU, no LayerNorm, no attention biases): logits
    up to ~50 in float32 agree to 1e-5 relative (absolute float32 round-off of the two op orders)."""
    model = tiny_run.model_at(tiny_run.steps[-1])
    _assert_same_logits(model, tiny_run.task.inputs, atol=1e-5, rtol=1e-5)


def test_nanda_shaped_grokked_model_float64(tiny_run):
    """The same weights in float64: equal to 1e-5 absolute (in fact ~1e-13) on the full p×p grid."""
    model = tiny_run.model_at(tiny_run.steps[-1]).double()
    bridge = to_bridge(model)
    assert next(bridge.parameters()).dtype == torch.float64
    with torch.no_grad():
        diff = (model(tiny_run.task.inputs) - bridge(tiny_run.task.inputs)).abs().max().item()
    assert diff < 1e-10


VARIANTS = [
    {"n_layers": 2, "layernorm": True, "act_fn": "gelu", "attn_bias": True, "unembed_bias": True},
    {"n_layers": 2, "layernorm": False, "mlp_bias": False},
    {"attn_only": True},
]


@pytest.mark.parametrize("changes", VARIANTS)
def test_variants_match_on_full_grid_float64(changes):
    """Exactness of the mapping: in float64 the logits agree to 1e-10 (asked: 1e-5) on the whole grid."""
    _assert_same_logits(_random_model(dtype="float64", **changes), _grid(47), atol=1e-10)


@pytest.mark.parametrize("changes", VARIANTS)
def test_variants_match_on_full_grid_float32(changes):
    """In float32 the two op orders differ by round-off, amplified through two un-normalised layers."""
    _assert_same_logits(_random_model(**changes), _grid(47), atol=1e-5, rtol=1e-5)


def test_activations_and_hooks_match(tiny_run):
    """The bridge's TL hooks carry the same activations as ours: patterns, values, residual stream."""
    model = tiny_run.model_at(tiny_run.steps[-1])
    bridge = to_bridge(model)
    tokens = tiny_run.task.inputs[:500]
    with torch.no_grad():
        _, ours = model.run_with_cache(tokens)
        _, theirs = bridge.run_with_cache(tokens)
    for name in ("blocks.0.attn.hook_pattern", "blocks.0.attn.hook_v", "blocks.0.hook_resid_pre",
                 "blocks.0.hook_resid_post"):
        torch.testing.assert_close(theirs[name], ours[name], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bridge.blocks[0].attn.W_O, model.blocks[0].attn.W_O, atol=0, rtol=0)


def test_missing_biases_are_zero_in_the_bridge():
    model = _random_model(attn_bias=False, mlp_bias=False)
    state = to_bridge(model).state_dict()
    for key in ("blocks.0.attn.q.bias", "blocks.0.attn.o.bias", "blocks.0.mlp.in.bias", "unembed.bias"):
        assert torch.count_nonzero(state[key]) == 0, key
    assert torch.equal(state["embed.weight"], model.embed.W_E)
    assert torch.equal(state["unembed.weight"], model.unembed.W_U.T)


def test_global_rng_untouched_and_bad_input():
    model = _random_model()
    before = torch.random.get_rng_state()
    to_bridge(model)
    assert torch.equal(before, torch.random.get_rng_state())
    with pytest.raises(ConfigError, match=r"expected an interp\.model\.Transformer"):
        to_bridge(torch.nn.Linear(2, 2))
