"""probes.progress: restricted/excluded loss (both conventions), Li2 gradient and energy, the story on tiny_run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import probes
from probes import progress as P
from probes.fourier import fourier_basis, key_frequencies
from probes.registry import ProbeContext

P_SMALL = 31
KEYS = torch.tensor([3, 7])


def _grid(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.arange(p)
    ab = (a[:, None] + a[None, :]).reshape(-1)  # [p²]
    return ab, torch.arange(p)


def trig_logits(p: int, freqs: list[int], scale: float = 4.0) -> torch.Tensor:
    """[p², p] logits Σ_k scale·cos(w_k(a + b − c)), float64."""
    ab, c = _grid(p)
    diff = (ab[:, None] - c[None, :]).double()
    return sum(scale * torch.cos(2 * math.pi * k * diff / p) for k in freqs)


@pytest.fixture
def hand_built():
    p = P_SMALL
    ab, _ = _grid(p)
    labels = ab % p
    train = torch.rand(p * p, generator=torch.Generator().manual_seed(0)) < 0.5
    return p, labels, train


def _ce(logits, labels):
    return F.cross_entropy(logits.double(), labels).item()


# ---------------------------------------------------------------- logit convention
def test_logit_restricted_equals_full_when_logits_are_key_trig(hand_built):
    p, y, tr = hand_built
    L = trig_logits(p, KEYS.tolist())
    out = P.logit_losses(L, y, tr, KEYS)
    full = _ce(L[tr], y[tr])
    assert out["restricted"] == pytest.approx(full, abs=1e-9)
    assert out["excluded"] == pytest.approx(math.log(p), abs=1e-9)  # nothing left: uniform logits
    assert out["excluded"] > full + 2.0
    # removing only k = 3 leaves the k = 7 term, and vice versa
    per = out["excluded_per_freq"]
    assert per.shape == (p // 2 + 1,)
    assert per[3].item() == pytest.approx(_ce(trig_logits(p, [7])[tr], y[tr]), abs=1e-5)
    assert per[7].item() == pytest.approx(_ce(trig_logits(p, [3])[tr], y[tr]), abs=1e-5)
    assert torch.isnan(per[[0, 1, 2, 4, 5, 6, 8]]).all()


def test_logit_bias_correction_restores_class_bias(hand_built):
    p, y, tr = hand_built
    bias = torch.linspace(-1, 1, p, dtype=torch.float64)  # a per-class bias, constant over the grid
    L = trig_logits(p, KEYS.tolist()) + bias
    out = P.logit_losses(L, y, tr, KEYS)
    assert out["restricted"] == pytest.approx(_ce(L[tr], y[tr]), abs=1e-9)  # bias added back as mean
    assert out["excluded"] == pytest.approx(_ce(bias.expand(int(tr.sum()), -1), y[tr]), abs=1e-9)


def test_logit_non_key_frequency_is_not_kept(hand_built):
    p, y, tr = hand_built
    L = trig_logits(p, [5])
    out = P.logit_losses(L, y, tr, KEYS)
    assert out["restricted"] == pytest.approx(math.log(p), abs=1e-9)
    assert out["excluded"] == pytest.approx(_ce(L[tr], y[tr]), abs=1e-9)


def test_logit_no_key_frequencies(hand_built):
    p, y, tr = hand_built
    L = trig_logits(p, KEYS.tolist())
    out = P.logit_losses(L, y, tr, torch.zeros(0, dtype=torch.long))
    assert out["restricted"] == pytest.approx(math.log(p), abs=1e-9)
    assert out["excluded"] == pytest.approx(_ce(L[tr], y[tr]), abs=1e-9)
    assert torch.isnan(out["excluded_per_freq"]).all()


# ---------------------------------------------------------------- activation convention
def test_key_coefficients_match_full_2d_transform():
    p, m = 23, 6
    B = fourier_basis(p, torch.float64)
    acts = torch.randn(p * p, m, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    C, B_S = P.key_coefficients(acts, B, KEYS)
    got = P.to_grid(C, B_S)
    full = torch.einsum("ia,jb,abm->ijm", B, B, acts.view(p, p, m))  # every 2D coefficient
    freq = (torch.arange(p) + 1) // 2
    in_block = (freq[:, None] == freq[None]) | (freq[:, None] == 0) | (freq[None] == 0)
    is_key = torch.isin(freq, KEYS) | (freq == 0)
    mask = in_block & is_key[:, None] & is_key[None]
    mask[0, 0] = False
    want = torch.einsum("ia,jb,ijm->abm", B, B, full * mask[..., None]).reshape(p * p, m)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # a pure key-block function (cos 3a · sin 3b) is kept whole; a cross term cos 3a · cos 7b is not
    ca, sb, cb = B[5], B[6], B[13]  # rows: cos 3 = 5, sin 3 = 6, cos 7 = 13
    kept = torch.outer(ca, sb).reshape(-1, 1)
    torch.testing.assert_close(P.to_grid(*P.key_coefficients(kept, B, KEYS)), kept, rtol=0, atol=1e-12)
    cross = torch.outer(ca, cb).reshape(-1, 1)
    assert P.to_grid(*P.key_coefficients(cross, B, KEYS)).abs().max() < 1e-12


def _hooked_loss(model, task, replace) -> float:
    """Train loss with the last position's MLP activations replaced by ``replace(acts [p², m])``."""
    def hook(act, hook):
        act = act.clone()
        act[:, -1] = replace(act[:, -1])
        return act

    with torch.no_grad():
        logits = model.run_with_hooks(task.inputs, fwd_hooks=[("blocks.0.mlp.hook_post", hook)])[:, -1]
    tr = task.train_mask
    return _ce(logits[tr], task.labels[tr])


def test_activation_losses_match_hooked_forward(tiny_run):
    model, task = tiny_run.model_at(tiny_run.steps[-1]), tiny_run.task
    keys = torch.tensor([2, 5, 11])
    B = fourier_basis(task.p)
    with torch.no_grad():
        _, cache = model.run_with_cache(task.inputs)
        out = P.activation_losses(model, cache, task, keys, B)

    def key_part(acts):
        return P.to_grid(*P.key_coefficients(acts, B, keys))

    restricted = _hooked_loss(model, task, lambda a: a.mean(0) + key_part(a))
    excluded = _hooked_loss(model, task, lambda a: a - key_part(a))
    assert out["restricted"] == pytest.approx(restricted, rel=1e-4, abs=1e-6)
    assert out["excluded"] == pytest.approx(excluded, rel=1e-4, abs=1e-6)
    assert out["excluded"] != pytest.approx(out["restricted"], rel=0.1)


# ---------------------------------------------------------------- Li2
def test_hidden_gradient_matches_autograd_and_finite_differences(tiny_run):
    model = tiny_run.model_at(tiny_run.steps[20]).double()
    task = tiny_run.task
    tr = task.train_mask
    x, y = task.inputs[tr], task.labels[tr]
    G = P.hidden_gradient(model, x, y)  # full hooked backward
    with torch.no_grad():
        _, cache = model.run_with_cache(x)
    G_cache = P.hidden_gradient_from_cache(model, cache["post", 0][:, -1], cache["resid_mid", 0][:, -1], y)
    torch.testing.assert_close(G_cache, G, rtol=1e-9, atol=1e-12)
    G_logits = P.hidden_gradient_from_logits(model, model(x)[:, -1].detach(), y)
    torch.testing.assert_close(G_logits, G, rtol=1e-9, atol=1e-12)
    # closed form for a one-layer model without LayerNorm: −∂L/∂F = −(softmax − onehot)/n · W_Uᵀ W_outᵀ
    logits = cache["resid_post", 0][:, -1] @ model.W_U
    residual = (logits.softmax(-1) - F.one_hot(y, task.p)) / len(y)
    torch.testing.assert_close(G, -residual @ (model.blocks[0].mlp.W_out @ model.W_U).T.detach(),
                               rtol=1e-8, atol=1e-12)
    # central finite difference of L along a random direction u of F: dL = −<G, u>
    u = torch.randn(G.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = 1e-4

    def loss_shifted(sign):
        def hook(act, hook):
            act = act.clone()
            act[:, -1] += sign * eps * u
            return act
        with torch.no_grad():
            out = model.run_with_hooks(x, fwd_hooks=[("blocks.0.mlp.hook_post", hook)])[:, -1]
        return _ce(out, y)

    fd = (loss_shifted(1) - loss_shifted(-1)) / (2 * eps)
    assert fd == pytest.approx(-(G * u).sum().item(), rel=1e-5)


def test_neuron_energy_equals_explicit_centred_labels():
    n, m, c = 40, 5, 7
    gen = torch.Generator().manual_seed(2)
    acts = torch.rand(n, m, generator=gen, dtype=torch.float64)
    labels = torch.randint(c, (n,), generator=gen)
    Y = F.one_hot(labels, c).double()
    Y_c = Y - Y.mean(0)
    want = 0.5 * (Y_c.T @ acts).pow(2).sum(0)
    torch.testing.assert_close(P.neuron_energy(acts, labels, c), want, rtol=1e-12, atol=1e-12)
    # a neuron constant over the samples carries no label information
    assert P.neuron_energy(torch.ones(n, 1), labels, c).item() == pytest.approx(0.0, abs=1e-12)


def test_weights_probe(tiny_run):
    model = tiny_run.model_at(tiny_run.steps[-1])
    out = P.weights_probe(ProbeContext(model=model, task=tiny_run.task))
    assert out["ssq.embed.W_E"] == pytest.approx(model.W_E.double().pow(2).sum().item())
    assert out["ssq_total"] == pytest.approx(sum(v for k, v in out.items() if k.startswith("ssq.")))
    assert len(out) == len(list(model.parameters())) + 1


def test_key_neurons_use_fourier_clusters(tiny_run):
    ctx = ProbeContext(model=tiny_run.model_at(tiny_run.steps[-1]), task=tiny_run.task)
    key = P.key_neurons(ctx)
    neurons = probes.fourier.neurons_probe(ctx)
    assert key.dtype == torch.bool and key.shape == (128,) and key.sum() > 30
    assert torch.isin(neurons["dominant_freq"][key].long(), key_frequencies(ctx)).all()
    assert (neurons["dominant_fve"][key] >= ctx.params["fve_threshold"]).all()


# ---------------------------------------------------------------- the story on a grokked run
def _first_below(series, threshold: float) -> int:
    return int(series[series < threshold].index[0])


def test_restricted_loss_falls_before_test_loss(tiny_run_copy):
    run = tiny_run_copy
    df = probes.run(run, names=["progress.loss", "progress.restricted", "li2"], steps=run.steps[::2], progress=False)
    wide = df.pivot_table(index="step", columns="name", values="value")
    restricted_drop = _first_below(wide["logit.restricted_loss"], 1.0)
    test_drop = _first_below(wide["test_loss"], 1.0)
    assert restricted_drop + 200 <= test_drop  # the circuit forms well before the test loss falls
    assert _first_below(wide["act.restricted_loss"], 1.0) < test_drop
    final = wide.iloc[-1]
    assert final["logit.restricted_loss"] < 0.01 and final["logit.excluded_loss"] > math.log(47)
    assert final["act.excluded_loss"] > 2.0
    assert wide["grad_norm_hidden"].iloc[-1] < 0.01 * wide["grad_norm_hidden"].iloc[0]
    assert final["energy_key_share"] > 0.5 and wide["energy_key_share"].iloc[0] == 0.0


def test_restricted_accuracy_after_grokking(tiny_run_copy):
    """The restricted logits of a grokked run still get (almost) every train example right; the excluded
    logits lose most of them (Nanda et al. 2023's restricted loss, as an accuracy)."""
    run = tiny_run_copy
    df = probes.run(run, names=["progress.restricted"], steps=[run.steps[0], run.steps[-1]], progress=False)
    wide = df.pivot_table(index="step", columns="name", values="value")
    final = wide.loc[run.steps[-1]]
    assert final["logit.restricted_acc"] > 0.99 and final["act.restricted_acc"] > 0.99
    assert final["logit.excluded_acc"] < 0.5
    assert 0.0 <= wide.loc[run.steps[0], "logit.restricted_acc"] <= 1.0
