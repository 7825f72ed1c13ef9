"""Sequence tasks (issue 13): generators, splits, the training paths and the sink/sparsity metrics."""

import math

import numpy as np
import pytest
import torch

from interp import TrainConfig
from interp.errors import ConfigError
from interp.losses import IGNORE_INDEX, masked_cross_entropy
from interp.seqtasks import IGNORE, SEQ_TASKS, SequenceTask, SparseParity
from probes.seqattention import first_token_attention, seq_sink_stats, sink_rate

SMALL = {
    "sum": dict(p=7, seq_k=4),
    "sparse_sum": dict(p=7, seq_len=8),
    "sparse_parity": dict(seq_len=12, seq_k=3),
    "bigram_backcopy": dict(p=9, seq_len=12, bos=True),
}


def _task(name, **kw):
    return SequenceTask(name, **{**SMALL[name], "n_train": 300, "n_test": 100, **kw})


@pytest.mark.parametrize("name", sorted(SEQ_TASKS))
def test_deterministic_and_disjoint(name):
    t = _task(name)
    assert torch.equal(t.inputs, _task(name).inputs) and torch.equal(t.targets, _task(name).targets)
    assert not torch.equal(t.inputs, _task(name, data_seed=1).inputs)
    assert t.inputs.shape == t.targets.shape == (400, t.n_ctx)
    rows = {tuple(r) for r in t.inputs[t.train_idx].tolist()}
    assert len(rows) == t.n_train, "train inputs are distinct"
    assert not rows & {tuple(r) for r in t.inputs[t.test_idx].tolist()}, "test is disjoint from train"
    assert int(t.inputs.max()) < t.d_vocab and int(t.targets[t.loss_mask].max()) < t.d_vocab_out
    assert t.probe_inputs.shape[1] == t.n_ctx and torch.equal(t.probe_inputs, t.inputs[t.test_idx][:100])
    assert t.split_meta()["data_sha256"] == _task(name).data_sha256()


def test_last_position_labels():
    t = _task("sum")
    x = t.inputs
    assert (x[:, -1] == t.eq_token).all() and t.vocab[t.eq_token] == "="
    assert torch.equal(t.labels, x[:, :-1].sum(1) % 7)
    assert (t.targets[:, :-1] == IGNORE).all() and not t.per_position
    s = _task("sparse_sum")
    ops = s.inputs[:, :-1] < s.p
    assert (ops.sum(1) == 2).all(), "exactly two operands among distractors"
    assert torch.equal(s.labels, torch.where(ops, s.inputs[:, :-1], 0).sum(1) % s.p)
    par = _task("sparse_parity")
    secret = torch.from_numpy(SparseParity.secret(par))
    assert torch.equal(par.labels, par.inputs[:, secret].sum(1) % 2)


def test_backcopy_rule():
    t = _task("bigram_backcopy")
    x, y = t.inputs, t.targets
    assert (x[:, 0] == t.bos_token).all() and t.vocab[t.bos_token] == "<bos>" and t.per_position
    assert torch.equal(x[:, 1:], y[:, :-1]), "targets are the next tokens"
    trig = x < t.n_triggers
    trig[:, :2] = False  # position 1 follows BOS
    assert trig.any()
    rows, cols = trig.nonzero(as_tuple=True)
    assert torch.equal(y[rows, cols], x[rows, cols - 1]), "after a trigger the token before it is copied"
    assert (x[:, 1] >= t.n_triggers).all(), "the first token is not a trigger"
    types = t.query_types(x)
    assert not types["trigger"][:, 0].any() and not types["non_trigger"][:, 0].any()


def test_too_small_space_and_bad_fields():
    with pytest.raises(ConfigError, match="distinct inputs"):
        _ = SequenceTask("sum", p=3, seq_k=2, n_train=8, n_test=4).inputs
    with pytest.raises(ConfigError, match="bos"):
        SequenceTask("bigram_backcopy", bos=False)
    with pytest.raises(ConfigError, match="seq_task"):
        TrainConfig(seq_task="nope")


def test_grid_task_unchanged_interface():
    cfg = TrainConfig(p=11)
    assert cfg.model_config().n_ctx == 3 and cfg.task().kind == "grid" and cfg.task().vocab[-1] == "="
    assert set(cfg.task().split_meta()) == {"scheme", "data_seed", "frac_train", "train_idx", "sha256"}


def test_masked_loss_and_forward_all():
    cfg = TrainConfig(seq_task="bigram_backcopy", p=9, seq_len=12, bos=True, n_train=64, n_test=16,
                      d_model=32, n_heads=2, d_head=16, d_mlp=64, n_layers=2)
    model, task = cfg.build_model(), cfg.task()
    x, y = task.inputs[:16], task.targets[:16]
    full = model(x)
    assert torch.allclose(model.forward_all(x), full, atol=1e-5)
    y2 = y.clone()
    y2[:, :3] = IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(full.double()[:, 3:].flatten(0, 1), y[:, 3:].flatten())
    assert torch.allclose(masked_cross_entropy(full, y2, cfg), ref)


# ---------------------------------------------------------------- metrics on hand-set patterns
def _causal(rows):
    """[S, S] pattern from lists of the visible weights of each query."""
    size = len(rows)
    p = torch.zeros(size, size, dtype=torch.float64)
    for q, r in enumerate(rows):
        p[q, : q + 1] = torch.tensor(r, dtype=torch.float64)
    return p


def test_sink_rate_excludes_query0():
    # head 0: every query puts 0.9 on key 0; head 1: only query 0 does (it has no choice)
    sink = _causal([[1.0], [0.9, 0.1], [0.9, 0.05, 0.05]])
    none = _causal([[1.0], [0.0, 1.0], [0.0, 0.5, 0.5]])
    patterns = torch.stack([sink, none])[None, None]  # [L=1, N=1, H=2, 3, 3]
    choice = torch.tensor([[False, True, True]])
    rate, per_head = sink_rate(patterns, choice, epsilon=0.3)
    assert rate == 50.0 and per_head.tolist() == [[100.0, 0.0]]
    everything = torch.ones(1, 3, dtype=torch.bool)  # query 0 counted: head 1 gets 1/3 for free
    assert torch.allclose(first_token_attention(patterns, everything)[0, 0], torch.tensor([2.8 / 3, 1 / 3],
                          dtype=torch.float64))
    only_q0 = torch.tensor([[True, False, False]])
    assert sink_rate(patterns, only_q0, 0.3)[0] == 100.0, "query 0 alone: both 'sink', which is why it is excluded"
    nothing = torch.zeros(1, 3, dtype=torch.bool)
    assert math.isnan(first_token_attention(patterns, nothing)[0, 0, 0])


def test_seq_sink_stats_by_type():
    size, d = 4, 6
    sink = _causal([[1.0], [1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # q3 (a trigger) is active
    patterns = sink[None, None, None]  # [1, 1, 1, S, S]
    types = {"trigger": torch.tensor([[False, False, False, True]]),
             "non_trigger": torch.tensor([[False, True, True, False]])}
    v = torch.ones(1, size, 1, 2)
    v[:, 0] = 0.01  # value drain at the first token
    resid = torch.ones(1, size, d)
    resid[:, 0] = 10.0  # residual peak
    out = seq_sink_stats(patterns, [v], [torch.eye(2, d)[None]], [resid, resid], types, epsilon=0.3)
    assert out["sink_rate_non_trigger"] == 100.0 and out["sink_rate_trigger"] == 0.0
    assert out["first_attn_non_trigger"].item() == 1.0 and out["first_attn_trigger"].item() == 0.0
    assert out["eff_tokens_trigger"].item() == pytest.approx(1.0)
    assert out["value_ratio"] == pytest.approx(0.01)
    assert out["resid_ratio"] == pytest.approx(10.0)
    assert out["massive_at_first"].tolist() == [1.0, 1.0]
    assert np.isfinite(out["massive_ratio"].numpy()).all()


def test_probe_applicability_by_task():
    import probes
    from probes.registry import REGISTRY

    grid, sparse, bigram = TrainConfig(p=11).task(), _task("sparse_sum"), _task("bigram_backcopy")
    embed = REGISTRY["fourier.embed"]
    assert embed.reason_skipped(grid) == "" and embed.reason_skipped(sparse) == ""
    assert "bigram_backcopy" in embed.reason_skipped(bigram)
    assert REGISTRY["fourier.neurons"].reason_skipped(sparse)
    assert REGISTRY["attention.seq_sinks"].reason_skipped(grid)  # the grid has attention.sinks
    cfg = TrainConfig(seq_task="sparse_sum", p=7, seq_len=8, n_train=50, n_test=20, d_model=16, n_heads=2, d_head=8,
                      d_mlp=32)
    out = probes.measure(cfg.build_model(), cfg.task())
    assert {"fourier.embed", "attention.seq_sinks", "attention.sparsity"} <= set(out)
    assert "fourier.neurons" not in out and "progress.loss" not in out
    assert out["attention.sparsity"]["eff_tokens"].shape == (1, 2, 9)
