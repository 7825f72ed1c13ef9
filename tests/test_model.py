import pytest
import torch
from transformer_lens import ActivationCache

from interp.errors import ConfigError
from interp.fastpath import folds_readout
from interp.model import ModelConfig, Transformer
from interp.tasks import Task

P = 13
TASK = Task("add", P, 0.5, 0)


def make(**kw) -> Transformer:
    """A small float64 model; its biases (zero at initialisation) are random, so that equality
    tests see where each one enters."""
    torch.manual_seed(0)
    m = Transformer(ModelConfig(**{"d_vocab": P + 1, "d_vocab_out": P, "d_model": 32, "n_heads": 4, "d_head": 8,
                                   "d_mlp": 64, "dtype": "float64", **kw}))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("b_"):
                p.normal_(0, 0.3)
    return m


def test_parameter_names_and_shapes_follow_transformer_lens():
    m = Transformer(ModelConfig(d_vocab=114, d_vocab_out=113, attn_bias=True, unembed_bias=True))
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "embed.W_E": (114, 128), "pos_embed.W_pos": (3, 128),
        "blocks.0.attn.W_Q": (4, 128, 32), "blocks.0.attn.W_K": (4, 128, 32), "blocks.0.attn.W_V": (4, 128, 32),
        "blocks.0.attn.W_O": (4, 32, 128), "blocks.0.attn.b_Q": (4, 32), "blocks.0.attn.b_K": (4, 32),
        "blocks.0.attn.b_V": (4, 32), "blocks.0.attn.b_O": (128,),
        "blocks.0.mlp.W_in": (128, 512), "blocks.0.mlp.b_in": (512,), "blocks.0.mlp.W_out": (512, 128),
        "blocks.0.mlp.b_out": (128,), "unembed.W_U": (128, 113), "unembed.b_U": (113,),
    }


def test_hook_names_and_activation_cache():
    m = make(n_layers=2, layernorm=True)
    logits, cache = m.run_with_cache(TASK.inputs[:10])
    assert isinstance(cache, ActivationCache)
    for name in ["hook_embed", "hook_pos_embed", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid",
                 "blocks.1.hook_resid_post", "blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v",
                 "blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z",
                 "blocks.0.hook_attn_out", "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post",
                 "blocks.0.hook_mlp_out", "blocks.0.ln1.hook_scale", "ln_final.hook_normalized"]:
        assert name in cache.cache_dict, name
    pattern = cache["pattern", 0]
    assert pattern.shape == (10, 4, 3, 3)
    assert torch.allclose(pattern.sum(-1), torch.ones(10, 4, 3, dtype=torch.float64))
    assert (pattern[:, :, 0, 1:] == 0).all(), "causal: query 0 sees only key 0"
    assert logits.shape == (10, 3, P)


def test_hooks_can_edit_activations():
    """Zeroing hook_mlp_out leaves exactly the embedding + attention path through W_U."""
    m = make()
    x = TASK.inputs[:5]
    ablated = m.run_with_hooks(x, fwd_hooks=[("blocks.0.hook_mlp_out", lambda t, hook: t * 0)])
    _, cache = m.run_with_cache(x)
    assert torch.allclose(ablated, cache["blocks.0.hook_resid_mid"] @ m.W_U)
    assert not torch.allclose(ablated, m(x))


@pytest.mark.parametrize(
    "kw",
    [{}, {"layernorm": True}, {"attn_bias": True, "unembed_bias": True}, {"act_fn": "gelu"}, {"attn_only": True},
     {"n_layers": 2}, {"n_layers": 3, "layernorm": True, "attn_bias": True}, {"mlp_bias": False},
     {"d_model": 8, "n_heads": 2, "d_head": 4, "attn_bias": True}],  # the last: folding would not pay
)
def test_fast_path_equals_full_forward_logits_and_gradients(kw):
    m = make(**kw)
    if kw.get("d_model") == 8:
        assert not folds_readout(m, len(TASK.inputs))
    elif not kw:
        assert folds_readout(m, len(TASK.inputs))
    x, y = TASK.inputs, TASK.labels
    full = m(x)[:, -1]
    fast = m.forward_last(x)
    assert torch.allclose(full, fast, atol=1e-5, rtol=0)
    g_full = torch.autograd.grad(torch.nn.functional.cross_entropy(full, y), list(m.parameters()), allow_unused=True)
    g_fast = torch.autograd.grad(torch.nn.functional.cross_entropy(m.forward_last(x), y), list(m.parameters()),
                                 allow_unused=True)
    for (name, _), a, b in zip(m.named_parameters(), g_full, g_fast, strict=True):
        a = torch.zeros(1, dtype=torch.float64) if a is None else a
        b = torch.zeros(1, dtype=torch.float64) if b is None else b
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-6), name


@pytest.mark.parametrize("kw", [{}, {"attn_bias": True, "unembed_bias": True}, {"mlp_bias": False}])
def test_fast_path_last_token_varying_or_under_vmap(kw):
    """The one-layer readout shares one last-token row when every input ends in the same token;
    inputs with different last tokens (gathered rows) and vmapped calls give the same logits
    and gradients as the full forward."""
    m = make(**kw)
    x, y = TASK.inputs.clone(), TASK.labels
    x[:, -1] = torch.arange(len(x)) % (P + 1)  # every last token, not only `=`
    full = m(x)[:, -1]
    assert torch.allclose(full, m.forward_last(x), atol=1e-10, rtol=0)
    params = list(m.parameters())
    g_full = torch.autograd.grad(torch.nn.functional.cross_entropy(full, y), params)
    g_fast = torch.autograd.grad(torch.nn.functional.cross_entropy(m.forward_last(x), y), params)
    for (name, _), a, b in zip(m.named_parameters(), g_full, g_fast, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-8), name
    tokens = torch.stack([TASK.inputs, x])  # batched under vmap: gathered rows
    batched = torch.func.vmap(m.forward_last)(tokens)
    assert torch.allclose(batched[0], m(TASK.inputs)[:, -1], atol=1e-10, rtol=0)
    assert torch.allclose(batched[1], full, atol=1e-10, rtol=0)
    last = _Last(m)

    def loss(params, t):
        return torch.nn.functional.cross_entropy(torch.func.functional_call(last, params, (t,)), y)

    params = {f"m.{n}": p.detach() for n, p in m.named_parameters()}
    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, tokens)  # vmap(grad), tokens batched
    for (name, _), want in zip(m.named_parameters(), g_fast, strict=True):
        assert torch.allclose(grads[f"m.{name}"][1], want, atol=1e-10, rtol=1e-8), name


class _Last(torch.nn.Module):
    """Routes ``functional_call`` to the fast path (as ``interp.batched`` does)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, t):
        return self.m.forward_last(t)


def test_readout_folds_only_where_it_saves_work():
    from interp import preset

    nanda = preset("nanda").build_model()
    assert folds_readout(nanda, 3830) and not folds_readout(nanda, 512)  # full batch vs a minibatch
    assert not folds_readout(preset("nanda").replace(p=401).build_model(), 10**6)  # d_vocab_out >> d_model


def test_fast_path_float32_within_1e5():
    torch.manual_seed(1)
    m = Transformer(ModelConfig(d_vocab=114, d_vocab_out=113))
    x = Task("add", 113, 0.3, 0).inputs
    assert (m(x)[:, -1] - m.forward_last(x)).abs().max() < 1e-5


@pytest.mark.parametrize(("kw", "field"), [({"n_layers": 0}, "n_layers"), ({"act_fn": "tanh"}, "act_fn")])
def test_invalid_model_config(kw, field):
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        ModelConfig(d_vocab=8, d_vocab_out=7, **kw)


@pytest.mark.parametrize(
    "kw",
    [{}, {"attn_bias": True, "unembed_bias": True}, {"act_fn": "gelu", "mlp_bias": False},
     {"layernorm": True, "attn_bias": True, "unembed_bias": True}, {"attn_only": True}, {"n_layers": 2},
     {"n_layers": 3, "act_fn": "gelu", "mlp_bias": False, "layernorm": True}],
)
def test_readout_cache_equals_run_with_cache(kw):
    """Every entry of the analysis forward equals the full hooked forward's (the last layer's at `=`)."""
    m = make(**kw)
    x = TASK.inputs
    with torch.no_grad():
        logits, full = m.run_with_cache(x)
        readout_logits, cache = m.readout_cache(x)
    assert torch.allclose(readout_logits, logits[:, -1], atol=1e-5, rtol=0)
    last = m.cfg.n_layers - 1
    expected = {f"blocks.{layer}.{name}" for layer in range(m.cfg.n_layers)
                for name in ("hook_resid_pre", "attn.hook_v", "attn.hook_pattern", "attn.hook_z", "hook_attn_out",
                             "hook_resid_post")}
    if not m.cfg.attn_only:
        expected |= {f"blocks.{layer}.{name}" for layer in range(m.cfg.n_layers)
                     for name in ("hook_resid_mid", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out")}
    assert set(cache.keys()) == expected
    for name in expected:
        want, got = full[name], cache[name]
        if name.startswith(f"blocks.{last}.") and "pattern" not in name and "hook_v" not in name \
                and "resid_pre" not in name:
            assert got.shape[1] == 1, name  # the last layer past attention: readout position only
            want = want[:, -1:]
        assert got.shape == want.shape, name
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), name


def test_reuse_freed_memory_takes_on_glibc():
    import sys

    from interp.perf import reuse_freed_memory

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    assert reuse_freed_memory() is True
