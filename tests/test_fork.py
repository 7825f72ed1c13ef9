"""Forks (interp.fork), interventions (interp.interventions), the new optimizer/loss options and
the kept training states (issue 15)."""

from __future__ import annotations

import math
import shutil

import pandas as pd
import pytest
import torch

import interp
from interp import ConfigError, Run, preset, train
from interp.config import snapshot_steps
from interp.fork import resume_fork
from interp.interventions import ForkContext, apply, frequency_norms
from interp.loop import TrainState
from interp.losses import log_probs
from interp.optim import orthogonalize_


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Run:
    cfg = preset("tiny").replace(n_steps=60, ckpt_dense_until=20, ckpt_log_count=5, ckpt_every=20,
                                 state_snapshots=4)
    return train(cfg, tmp_path_factory.mktemp("fork") / "parent", progress=False)


def _rows(run: Run, start: int) -> pd.DataFrame:
    m = run.metrics
    return m[m["step"] >= start].drop(columns="wall_time").reset_index(drop=True)


def test_states_are_kept_at_log_spaced_checkpoints(parent):
    cfg = parent.train_config
    assert parent.snapshot_steps == snapshot_steps(cfg)
    assert 0 in parent.snapshot_steps and set(parent.snapshot_steps) <= set(parent.steps)
    assert len(snapshot_steps(preset("nanda"))) <= 25


def test_fork_without_change_is_bit_identical(parent, tmp_path):
    step = 37  # between kept states: replayed from the nearest earlier one
    assert step not in parent.snapshot_steps
    child = interp.fork(parent, step, out=tmp_path / "same")
    lineage = child.meta["fork"]
    assert lineage["exact"] and lineage["step"] == step and lineage["base_step"] < step
    assert lineage["parent"] == str(parent.path.resolve()) and lineage["changes"] == {}
    for k, v in parent.state_dict_at(60).items():
        assert torch.equal(child.state_dict_at(60)[k], v), k
    a, b = _rows(parent, 0), _rows(child, 0)
    assert a["step"].tolist() == b["step"].tolist()
    at = a["step"] == step  # the fork evaluates the test split at its fork step; the parent did not
    pd.testing.assert_frame_equal(a[~at], b[~at])
    pd.testing.assert_frame_equal(a[at].drop(columns=["test_loss", "test_acc"]),
                                  b[at].drop(columns=["test_loss", "test_acc"]))


def test_fork_with_intervention_records_and_applies_it(parent, tmp_path):
    child = interp.fork(parent, 30, set=["weight_decay=0"], interventions=["ablate:3,5"], out=tmp_path / "abl",
                        train=False)
    lineage = child.meta["fork"]
    assert lineage["changes"]["weight_decay"] == 0 and lineage["changes"]["ablate"]["frequencies"] == [3, 5]
    state = TrainState.load(child)
    assert state.param_groups[0]["weight_decay"] == 0
    norms = frequency_norms(state.model["embed.W_E"], child.train_config.p)
    assert norms[2] < 1e-5 and norms[4] < 1e-5 and norms.max() > 1e-2
    child = resume_fork(child.path)  # train it: fork step is checkpointed
    w = child.state_dict_at(30)["embed.W_E"]
    assert frequency_norms(w, child.train_config.p)[2] < 1e-5
    assert child.meta["final_step"] == 60 and child.train_config.weight_decay == 0


def test_fork_without_kept_states_starts_the_optimizer_afresh(parent, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(parent.path, old)
    shutil.rmtree(old / "state" / "snapshots")
    child = interp.fork(old, 40, out=tmp_path / "fresh", train=False)
    assert not child.meta["fork"]["exact"] and "afresh" in child.meta["fork"]["note"]
    with pytest.raises(ConfigError):
        interp.fork(parent, 30, set=["d_model=32"], out=tmp_path / "bad")
    with pytest.raises(ConfigError):
        interp.fork(parent, 30, interventions=["nonsense"], out=tmp_path / "bad2")


# ------------------------------------------------------------------ interventions
@pytest.fixture
def ctx(parent) -> ForkContext:
    return ForkContext(cfg=parent.train_config, state=TrainState.load(parent, snapshot=parent.snapshot_steps[-1]))


@pytest.mark.parametrize(("spec", "field", "value"), [
    ("wd:0", "weight_decay", 0.0), ("lr:3e-4", "lr", 3e-4), ("optimizer:sgd", "optimizer", "sgd"),
    ("optimizer:adam", "optimizer", "adam"), ("grokfast:ema", "grokfast", "ema"), ("float64", "dtype", "float64"),
    ("stablemax", "loss", "stablemax"), ("orthograd", "orthograd", True), ("freeze:embed", "frozen", "embed"),
])
def test_each_intervention_sets_its_field(ctx, spec, field, value):
    apply(ctx, spec)
    assert getattr(ctx.cfg, field) == value and ctx.notes


def test_ablate_top_removes_the_strongest_frequency(ctx):
    p = ctx.cfg.p
    top = int(frequency_norms(ctx.state.model["embed.W_E"], p).argmax()) + 1
    apply(ctx, "ablate:top:W_L")
    assert ctx.changes["ablate"]["frequencies"] == [top]
    assert frequency_norms(ctx.state.model["embed.W_E"], p)[top - 1] < 1e-5
    assert frequency_norms(ctx.state.model["unembed.W_U"].T, p)[top - 1] < 1e-5


def test_frozen_group_and_options_train(tmp_path, parent):
    cfg = parent.train_config.replace(n_steps=20, frozen="embed", optimizer="adam", orthograd=True, loss="stablemax")
    run = train(cfg, tmp_path / "opts", progress=False)
    assert torch.equal(run.state_dict_at(20)["embed.W_E"], run.state_dict_at(0)["embed.W_E"])
    assert not torch.equal(run.state_dict_at(20)["unembed.W_U"], run.state_dict_at(0)["unembed.W_U"])
    assert math.isfinite(run.metrics["train_loss"].iloc[-1])
    sgd = train(cfg.replace(optimizer="sgd", frozen="", lr=0.1), tmp_path / "sgd", progress=False)
    assert math.isfinite(sgd.metrics["train_loss"].iloc[-1])


def test_stablemax_and_orthograd_definitions():
    z = torch.tensor([[2.0, -1.0, 0.0]], dtype=torch.float64)
    cfg = preset("tiny").replace(loss="stablemax")
    s = torch.tensor([3.0, 0.5, 1.0])
    assert torch.allclose(log_probs(z, cfg).exp()[0], (s / s.sum()).double())
    w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    w.grad = torch.tensor([3.0, 4.0])
    orthogonalize_([w])
    assert torch.allclose(w.grad, torch.tensor([0.0, 5.0]))  # parallel part removed, norm kept


def test_cli_fork_and_runs_show_lineage(parent, tmp_path, capsys):
    from apps.cli.main import main

    root = tmp_path / "root"
    shutil.copytree(parent.path, root / "parent")
    assert main(["fork", str(root / "parent"), "--at", "50", "--intervene", "wd:0", "--name", "kid", "--quiet"]) == 0
    assert "forked parent at step 50 (weight_decay = 0.0)" in capsys.readouterr().out
    assert main(["fork", str(root / "parent"), "--at", "5", "--intervene", "bogus"]) == 2
    assert "unknown intervention" in capsys.readouterr().err
    assert main(["runs", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("parent ") and lines[2].startswith("└ kid @50")
    assert main(["fork", str(root / "parent"), "--at", "40,50", "--grid", "weight_decay=0,2", "--no-train"]) == 0
    out = capsys.readouterr().out
    assert out.count("forked parent") == 4
    assert Run.open(root / "parent_fork50_weight_decay2").train_config.weight_decay == 2


def test_float64_and_sgd_fork_trains(parent, tmp_path):
    child = interp.fork(parent, 50, interventions=["float64", "optimizer:sgd", "lr:0.05"], out=tmp_path / "f64")
    assert child.state_dict_at(60)["embed.W_E"].dtype == torch.float64
    assert any("afresh" in n for n in child.meta["fork"]["notes"])
    assert math.isfinite(child.metrics["train_loss"].iloc[-1])
