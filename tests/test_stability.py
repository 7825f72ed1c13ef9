"""Stability probes (Prieto et al. 2025) on hand-built logits with known answers (issue 15)."""

from __future__ import annotations

import pytest
import torch

import probes
from interp import preset
from probes.stability import collapse_fractions, nlm_cosine, nlm_cosine_unembed


def _margin_logits(margins: list[float], o: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i: the label (i mod o) has logit margins[i], every other class 0."""
    labels = torch.arange(len(margins)) % o
    z = torch.zeros(len(margins), o)
    z[torch.arange(len(margins)), labels] = torch.tensor(margins, dtype=torch.float32)
    return z, labels


def test_collapse_depends_on_the_precision():
    # margin 30: e^-30 ≈ 9e-14 vanishes beside 1 in float32 but not in float64; 1000: in both; 1: in neither
    z, y = _margin_logits([30, 30, 1000, 1])
    assert collapse_fractions(z, y, torch.float32) == {"collapse": 0.75, "zero_loss": 0.75}
    assert collapse_fractions(z, y, torch.float64) == {"collapse": 0.25, "zero_loss": 0.25}


def test_nlm_cosine_is_one_for_centred_correct_logits_and_minus_one_for_wrong():
    o = 5
    y = torch.tensor([0, 3, 1])
    onehot = torch.nn.functional.one_hot(y, o).double()
    z = 4.0 * (onehot - 1 / o)  # descent direction ∝ z: scaling the logits is all the gradient does
    assert nlm_cosine(z, y) == pytest.approx(1.0)
    assert nlm_cosine(-z, y) == pytest.approx(-1.0)


def test_nlm_cosine_unembed_matches_the_logit_form():
    torch.manual_seed(0)
    r, W, y = torch.randn(20, 6), torch.randn(6, 4), torch.randint(0, 4, (20,))
    W_star = W.clone().double().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(r.double() @ W_star, y)
    loss.backward()
    expected = torch.nn.functional.cosine_similarity(-W_star.grad.flatten(), W.double().flatten(), dim=0).item()
    assert nlm_cosine_unembed(r, W, y) == pytest.approx(expected)


def test_stability_probe_is_registered_and_runs_on_a_model():
    cfg = preset("tiny")
    out = probes.measure(cfg.build_model(), cfg.task(), names=["stability.collapse"])["stability.collapse"]
    assert out["collapse.float32"] == 0.0 and -1 <= out["nlm_cosine"] <= 1 and "nlm_cosine_unembed" in out


def test_llc_probe_is_optional_and_records_its_settings():
    import probes.llc as llc

    assert "llc" in probes.REGISTRY and not probes.REGISTRY["llc"].default
    if not llc.available():
        pytest.skip("devinterp is not installed (optional extra grokscope[llc])")
    cfg = preset("tiny")
    ctx = probes.ProbeContext(cfg.build_model().eval(), cfg.task(), params={"llc_chains": 1, "llc_draws": 5})
    out = llc.llc_probe(ctx)
    assert set(out) >= {"llc_mean", "llc_std", "setting.llc_lr", "setting.llc_draws"} and out["setting.llc_draws"] == 5


def test_stability_probe_on_a_sequence_task_reads_every_loss_position():
    """tiny_seq (next-token loss at every position): the probe's rows are the loss-carrying positions of
    the first SEQ_TRAIN_INPUTS train inputs, and its numbers equal the functions applied to those rows."""
    from probes.stability import PRECISIONS, SEQ_TRAIN_INPUTS

    cfg = preset("tiny_seq")
    torch.manual_seed(0)
    model, task = cfg.build_model(), cfg.task()
    out = probes.measure(model, task, names=["stability.collapse"])["stability.collapse"]
    idx = task.train_idx[:SEQ_TRAIN_INPUTS]
    with torch.no_grad():
        logits = model(task.inputs[idx])
    keep = task.loss_mask[idx]
    assert keep.all()  # every position of bigram_backcopy carries loss
    z, y = logits[keep], task.targets[idx][keep]
    assert out["nlm_cosine"] == pytest.approx(nlm_cosine(z, y), rel=1e-6)
    for name in PRECISIONS:
        assert out[f"collapse.{name}"] == collapse_fractions(z, y, getattr(torch, name))["collapse"]
    assert -1 <= out["nlm_cosine_unembed"] <= 1


def test_stability_probe_on_a_last_position_sequence_task():
    cfg = preset("sparse").replace(n_train=64, n_test=16)
    out = probes.measure(cfg.build_model(), cfg.task(), names=["stability.collapse"])["stability.collapse"]
    assert out["collapse.float64"] == 0.0 and -1 <= out["nlm_cosine"] <= 1
