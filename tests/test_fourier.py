"""Fourier probes (probes/fourier.py): basis, per-frequency norms and Gini, neuron FVE, key frequencies,
logit structure, Clock/Pizza diagnostics, and the output contract of docs/probes.md."""

from __future__ import annotations

import math

import pytest
import torch

from interp import ModelConfig, Task, Transformer
from probes import fourier as F
from probes.registry import ProbeContext

# output contract of docs/probes.md: probe -> {name: shape (None: scalar)}; K1 = K+1, P = p, M = d_mlp
CONTRACT = {
    "fourier.embed": {"norms": "K1", "basis_norms": "P", "gini": None},
    "fourier.unembed": {"norms": "K1", "basis_norms": "P", "gini": None},
    "fourier.logit_map": {"norms": "K1", "basis_norms": "P", "gini": None},
    "fourier.neurons": {"fve": "M,K1", "dominant_freq": "M", "dominant_fve": "M", "cluster_sizes": "K1",
                        "n_clustered": None, "frac_clustered": None, "n_dead": None},
    "fourier.key_freqs": {"is_key": "K1", "n_key": None},
    "fourier.logits": {"coef": "K1", "fve_key": None, "fve_all": None},
    "fourier.clock_pizza": {"gradient_symmetricity": None, "distance_irrelevance": None},
}
PROBES = {
    "fourier.embed": F.embed_probe, "fourier.unembed": F.unembed_probe, "fourier.logit_map": F.logit_map_probe,
    "fourier.neurons": F.neurons_probe, "fourier.key_freqs": F.key_freqs_probe, "fourier.logits": F.logits_probe,
    "fourier.clock_pizza": F.clock_pizza_probe,
}


def grid(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    return a.double(), b.double()


def model_cfg(p: int, **kw) -> ModelConfig:
    base = dict(d_vocab=p + 1, d_vocab_out=p, d_model=32, n_heads=2, d_head=16, d_mlp=48)
    return ModelConfig(**{**base, **kw})


def random_model(p: int, seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(model_cfg(p, **kw)).eval()


def fourier_model(p: int, freqs: list[int], d_mlp: int = 60, b_in: float = 3.0) -> Transformer:
    """A hand-built one-layer model whose W_E, W_U and W_L = W_out·W_U are pure cos/sin of ``freqs``.

    Dimensions (2i, 2i+1) of the residual stream carry (cos, sin)(w_k x) of frequency k = freqs[i]. Attention is
    uniform (W_Q = W_K = 0) with W_V·W_O = 3·I and W_pos = 0, so the ``=`` position reads E_a + E_b. Neuron n reads
    frequency freqs[n % len(freqs)] along the angle φ_n and writes back along it; with b_in = 3 its pre-activation
    cos(w_k a − φ_n) + cos(w_k b − φ_n) + 3 is positive, so the ReLU is linear and the centred activation lies in
    the {const, cos k, sin k}² block of its frequency (FVE 1). W_L[n, c] = cos(w_k c − φ_n).
    """
    n_f = len(freqs)
    d_model = 2 * n_f
    model = Transformer(model_cfg(p, d_model=d_model, n_heads=1, d_head=d_model, d_mlp=d_mlp)).eval()
    x = torch.arange(p).double()
    w = 2 * math.pi / p
    phi = 2 * math.pi * torch.arange(d_mlp).double() / d_mlp
    which = torch.arange(d_mlp) % n_f
    with torch.no_grad():
        for p_ in model.parameters():
            p_.zero_()
        W_E, W_U = torch.zeros(p + 1, d_model), torch.zeros(d_model, p)
        dirs = torch.zeros(d_mlp, d_model)
        for i, k in enumerate(freqs):
            W_E[:p, 2 * i], W_E[:p, 2 * i + 1] = torch.cos(w * k * x), torch.sin(w * k * x)
            W_U[2 * i], W_U[2 * i + 1] = torch.cos(w * k * x), torch.sin(w * k * x)
        dirs[torch.arange(d_mlp), 2 * which] = phi.cos().float()
        dirs[torch.arange(d_mlp), 2 * which + 1] = phi.sin().float()
        model.embed.W_E.copy_(W_E)
        model.unembed.W_U.copy_(W_U)
        model.blocks[0].attn.W_V.copy_(torch.eye(d_model)[None])
        model.blocks[0].attn.W_O.copy_(3 * torch.eye(d_model)[None])
        mlp = model.blocks[0].mlp
        mlp.W_in.copy_(dirs.T)
        mlp.b_in.fill_(b_in)
        mlp.W_out.copy_(dirs)
    return model


def check_contract(out: dict, probe: str, p: int, d_mlp: int) -> None:
    sizes = {"K1": p // 2 + 1, "P": p, "M": d_mlp}
    assert set(out) == set(CONTRACT[probe]), probe
    for name, shape in CONTRACT[probe].items():
        value = out[name]
        if shape is None:
            assert torch.as_tensor(value).ndim == 0, (probe, name)
        else:
            assert tuple(value.shape) == tuple(sizes[s] for s in shape.split(",")), (probe, name, value.shape)


# ---------------------------------------------------------------- basis, norms, Gini
@pytest.mark.parametrize("p", [2, 5, 6, 47, 48])
def test_basis_orthonormal_and_complete(p):
    B = F.fourier_basis(p, torch.float64)
    assert torch.allclose(B @ B.T, torch.eye(p, dtype=torch.float64), atol=1e-12)
    fi = F.freq_index(p)
    assert fi.tolist() == [(i + 1) // 2 for i in range(p)]
    assert sorted(set(fi.tolist())) == list(range(p // 2 + 1))  # no frequency skipped
    x = torch.arange(p).double()
    assert torch.allclose(B[0], torch.full((p,), p**-0.5, dtype=torch.float64))
    if p > 2:
        assert torch.allclose(B[1], torch.cos(2 * math.pi * x / p) / math.sqrt(p / 2))
        assert torch.allclose(B[2], torch.sin(2 * math.pi * x / p) / math.sqrt(p / 2))
    if p % 2 == 0:  # the last frequency p/2 has only its cosine, (−1)^x / √p
        assert torch.allclose(B[-1], (-1.0) ** x / math.sqrt(p))
    assert F.fourier_basis(p, torch.float64) is B  # cached
    assert F.basis_labels(p)[:3] == ["const", "cos 1", "sin 1"][: min(3, p)]


def test_gini_formula():
    assert F.gini(torch.ones(10)).item() == pytest.approx(0.0, abs=1e-12)
    assert F.gini(torch.tensor([0.0] * 9 + [5.0])).item() == pytest.approx(1 - 1 / 10)
    c = torch.tensor([1.0, 2.0, 3.0])  # 1 − 2·(1·2.5 + 2·1.5 + 3·0.5)/(6·3) = 1 − 14/18
    assert F.gini(c).item() == pytest.approx(1 - 14 / 18)
    assert math.isnan(F.gini(torch.zeros(4)).item())


def test_fourier_norms_of_pure_frequency():
    p = 13
    x = torch.arange(p).double()
    W = torch.stack([3 * torch.cos(2 * math.pi * 4 * x / p), torch.sin(2 * math.pi * 4 * x / p)], dim=1)  # [p, 2]
    norms, basis_norms = F.fourier_norms(W, p, axis=0)
    expected = torch.zeros(p // 2 + 1, dtype=torch.float64)
    expected[4] = math.sqrt(9 * p / 2 + p / 2)
    assert torch.allclose(norms, expected, atol=1e-10)
    assert basis_norms[7].item() == pytest.approx(3 * math.sqrt(p / 2))  # row 2k−1 = cos 4
    assert torch.allclose(F.fourier_norms(W.T, p, axis=1)[0], norms)
    with pytest.raises(ValueError, match="expected p = 13"):
        F.fourier_norms(W, p, axis=1)


# ---------------------------------------------------------------- hand-built model
def test_hand_built_model_key_frequencies_and_gini():
    p, freqs = 47, [3, 7, 11]
    model = fourier_model(p, freqs)
    # The hand-built neurons are linear in cos(w_k a) + cos(w_k b): the weights are pure Fourier but the logits
    # hold no cos(w_k(a+b−c)) term, so the significance floor (issue 14) finds no key frequency.
    assert F.key_frequencies(ProbeContext(model, Task("add", p))).numel() == 0
    no_floor = {"key_freq_min_logit_share": 0.0}  # the weight rules alone
    ctx = ProbeContext(model, Task("add", p), params=no_floor)
    K = p // 2
    gini_three = 1 - 2 * (2.5 + 1.5 + 0.5) / (3 * K)  # three equal non-zero entries out of K
    for out in (F.embed_probe(ctx), F.unembed_probe(ctx), F.logit_map_probe(ctx)):
        nonzero = torch.nonzero(out["norms"] > 1e-3 * out["norms"].max()).squeeze(1).tolist()
        assert nonzero == freqs
        assert out["gini"] == pytest.approx(gini_three, abs=1e-4)
        assert out["gini"] > 0.85
    neurons = F.neurons_probe(ctx)
    assert neurons["n_dead"] == 0
    assert torch.allclose(neurons["dominant_fve"], torch.ones(60), atol=1e-4)
    assert neurons["dominant_freq"].long().tolist() == [freqs[n % 3] for n in range(60)]
    assert neurons["cluster_sizes"][freqs].tolist() == [20.0, 20.0, 20.0]
    assert neurons["n_clustered"] == 60 and neurons["frac_clustered"] == 1.0
    key = F.key_frequencies(ctx)
    assert key.dtype == torch.int64 and key.tolist() == freqs
    assert ctx.memo("key_freqs", lambda: None) is key  # memoized for the progress measures
    out = F.key_freqs_probe(ctx)
    assert out["n_key"] == 3 and torch.nonzero(out["is_key"]).squeeze(1).tolist() == freqs
    # each rule alone finds them: clusters only (W_L rule disabled), W_L only (clusters impossible)
    for params in ({"key_freq_wl_fraction": 2.0, **no_floor}, {"key_freq_min_neurons": 61, **no_floor}):
        assert F.key_frequencies(ProbeContext(model, Task("add", p), params=params)).tolist() == freqs


def test_random_model_low_gini_and_no_key_frequencies():
    p = 47
    ctx = ProbeContext(random_model(p), Task("add", p))
    for out in (F.embed_probe(ctx), F.unembed_probe(ctx), F.logit_map_probe(ctx)):
        assert 0 <= out["gini"] < 0.15
    assert F.key_frequencies(ctx).numel() == 0
    assert F.neurons_probe(ctx)["n_clustered"] == 0


def test_symmetric_model_gradient_symmetricity_is_one():
    """Uniform attention (W_Q = W_K = 0): the `=` position depends on E_a + E_b only, so ∂Q/∂E_a = ∂Q/∂E_b."""
    p = 23
    model = random_model(p, seed=1)
    with torch.no_grad():
        model.blocks[0].attn.W_Q.zero_()
        model.blocks[0].attn.W_K.zero_()
    ctx = ProbeContext(model, Task("add", p))
    out = F.clock_pizza_probe(ctx)
    assert out["gradient_symmetricity"] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= out["distance_irrelevance"] <= 1.0
    # a model with real attention is not exactly symmetric
    asym = F.clock_pizza_probe(ProbeContext(random_model(p, seed=2, d_model=32, d_head=16), Task("add", p)))
    assert -1.0 <= asym["gradient_symmetricity"] < 0.9999
    assert 0.0 <= asym["distance_irrelevance"] <= 1.0


def test_clock_pizza_triples_fixed_by_seed():
    t1 = F.clock_pizza_triples(11, 100, 0)
    assert t1.shape == (100, 3) and int(t1.max()) < 11
    assert len({tuple(r) for r in t1.tolist()}) == 100  # without replacement
    assert torch.equal(F.clock_pizza_triples(11, 100, 0), t1)
    assert not torch.equal(F.clock_pizza_triples(11, 100, 1), t1)
    assert F.clock_pizza_triples(3, 100, 0).shape == (27, 3)


def test_distance_irrelevance_extremes():
    p = 31
    a, b = grid(p)
    w = 2 * math.pi / p
    assert F.distance_irrelevance(torch.cos(w * (a - b))) == pytest.approx(0.0, abs=1e-9)  # depends on a − b only
    assert F.distance_irrelevance(torch.cos(w * 3 * (a + b))) == pytest.approx(1.0, abs=1e-9)  # on a + b only


# ---------------------------------------------------------------- neuron FVE
@pytest.mark.parametrize("p", [13, 12])
def test_neuron_fve_matches_2d_basis_definition(p):
    """The fast path equals Σ of the 3×3 block {const, cos k, sin k}² minus (const, const) of the 2D spectrum."""
    torch.manual_seed(0)
    acts = torch.randn(p * p, 7, dtype=torch.float64).relu()
    fve = F.neuron_fve(acts, p)
    fi = F.freq_index(p)
    spectra = torch.stack([F.neuron_spectrum(a - a.mean()) for a in acts.T.reshape(7, p, p)])  # [7, p, p]
    block = ((fi[None, :] == torch.arange(p // 2 + 1)[:, None]) | (fi[None, :] == 0)).double()  # [K+1, p]
    ref = torch.einsum("ki,nij,kj->nk", block, spectra, block) - spectra[:, :1, 0]
    ref = ref / spectra.sum((1, 2))[:, None]
    ref[:, 0] = 0.0
    assert torch.allclose(fve, ref, atol=1e-10)
    assert (fve.sum(1) <= 1 + 1e-10).all()


@pytest.mark.parametrize(("p", "k"), [(47, 5), (47, 23), (12, 6), (12, 1)])
def test_neuron_fve_of_pure_frequency_is_one(p, k):
    a, b = grid(p)
    w = 2 * math.pi / p
    sin_a = torch.sin(w * k * a) if 2 * k != p else torch.cos(w * k * a)  # sin(w_{p/2} x) vanishes on Z_p
    acts = torch.stack([torch.cos(w * k * (a + b)), sin_a * torch.cos(w * k * b) + 2,
                        torch.cos(w * k * a) + 0.5 * torch.sin(w * k * b) + torch.cos(w * k * b)], dim=-1)
    acts = acts.reshape(p * p, 3)
    fve = F.neuron_fve(acts, p)
    expected = torch.zeros(3, p // 2 + 1, dtype=torch.float64)
    expected[:, k] = 1.0
    assert torch.allclose(fve, expected, atol=1e-10)


def test_neuron_fve_of_constant_neuron_is_zero():
    p = 7
    acts = torch.stack([torch.zeros(p * p), torch.full((p * p,), 3.0)], dim=1)
    assert torch.equal(F.neuron_fve(acts, p), torch.zeros(2, 4))


def test_neuron_spectrum_parseval():
    p = 9
    acts = torch.randn(p, p, dtype=torch.float64)
    assert F.neuron_spectrum(acts).sum().item() == pytest.approx(acts.pow(2).sum().item())
    with pytest.raises(ValueError, match=r"\[p, p\]"):
        F.neuron_spectrum(torch.zeros(3, 4))


# ---------------------------------------------------------------- logits
@pytest.mark.parametrize(("p", "freqs"), [(47, [3, 7]), (48, [5, 24])])
def test_logit_fourier_of_pure_cosines(p, freqs):
    a, b = grid(p)
    c = torch.arange(p).double()
    w = 2 * math.pi / p
    phase = a[..., None] + b[..., None] - c  # [p, p, p]
    logits = sum(torch.cos(w * k * phase) for k in freqs).reshape(p * p, p)
    logits = logits + torch.randn(p * p, 1, dtype=torch.float64)  # per-input shifts do not matter
    coef, fve_key, fve_all = F.logit_fourier(logits, p, torch.tensor(freqs))
    expected = torch.zeros(p // 2 + 1)
    expected[freqs] = 1.0
    assert math.isnan(coef[0].item())
    assert torch.allclose(coef[1:], expected[1:], atol=1e-5)
    assert fve_key == pytest.approx(1.0, abs=1e-9) and fve_all == pytest.approx(1.0, abs=1e-9)
    _, fve_one, _ = F.logit_fourier(logits, p, torch.tensor(freqs[:1]))
    energy = [p**3 if 2 * k == p else p**3 / 2 for k in freqs]  # ‖cos(w_k(a+b−c))‖² over the p³ grid
    assert fve_one == pytest.approx(energy[0] / sum(energy), abs=1e-9)
    with pytest.raises(ValueError, match="logits: expected shape"):
        F.logit_fourier(logits[:, :-1], p)


# ---------------------------------------------------------------- contract, architectures
@pytest.mark.parametrize("kw", [{}, {"act_fn": "gelu"}, {"n_layers": 2}, {"attn_only": True}, {"layernorm": True}])
@pytest.mark.parametrize("p", [11, 12])
def test_output_contract_any_architecture(p, kw):
    model = random_model(p, **kw)
    ctx = ProbeContext(model, Task("add", p))
    for name, fn in PROBES.items():
        out = fn(ctx)
        check_contract(out, name, p, model.cfg.d_mlp)
    neurons = F.neurons_probe(ctx)
    if kw.get("attn_only"):
        assert torch.isnan(neurons["fve"]).all() and math.isnan(F.logit_map_probe(ctx)["gini"])
    else:
        assert ((neurons["fve"] >= 0) & (neurons["fve"] <= 1 + 1e-5)).all()


def test_other_operations_run():
    p = 11
    for op in ("sub", "mul", "div"):
        ctx = ProbeContext(random_model(p), Task(op, p))
        out = F.clock_pizza_probe(ctx)
        assert 0.0 <= out["distance_irrelevance"] <= 1.0
        assert 0.0 <= F.logits_probe(ctx)["fve_all"] <= 1.0


# ---------------------------------------------------------------- a grokked run
def test_tiny_run_fourier_structure_emerges(tiny_run):
    task = tiny_run.task
    first, last = tiny_run.steps[0], tiny_run.steps[-1]
    early = ProbeContext(tiny_run.model_at(first).eval(), task)
    final = ProbeContext(tiny_run.model_at(last).eval(), task)
    assert F.embed_probe(final)["gini"] > F.embed_probe(early)["gini"] + 0.2
    assert F.logit_map_probe(final)["gini"] > F.logit_map_probe(early)["gini"] + 0.3
    key = F.key_frequencies(final)
    assert key.numel() >= 1
    assert F.key_frequencies(early).numel() == 0
    logits = F.logits_probe(final)
    assert logits["fve_key"] > 0.8
    neurons = F.neurons_probe(final)
    assert neurons["frac_clustered"] > 0.5
    assert set(torch.nonzero(neurons["cluster_sizes"] >= 10).squeeze(1).tolist()) <= set(key.tolist())
    for name, fn in PROBES.items():
        check_contract(fn(final), name, task.p, final.model.cfg.d_mlp)
