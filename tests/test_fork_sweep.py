"""Fork sweeps (issue 15): one parent forked at a grid of steps × config values / interventions,
run through the sweep machinery (interp.sweep_fork.run_fork, ``grokscope sweep --fork``)."""

from __future__ import annotations

import pytest
import torch

import apps.cli.main as cli
from apps import sweep_plots as ph
from interp import Run, preset, train
from interp import sweep as sw
from interp.errors import ConfigError, StoreError
from interp.fork import point_args, split_interventions
from interp.interventions import frequency_norms
from interp.sweep_backends import member_status
from interp.sweep_fork import run_fork
from probes import sweep_summary

STEPS = [20, 40]
GRID = ["weight_decay=0,3"]  # 3 is tiny's own weight decay: those members are forks without change


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Run:
    cfg = preset("tiny").replace(p=23, n_steps=60, ckpt_dense_until=20, ckpt_log_count=5, ckpt_every=20,
                                 state_snapshots=4)
    return train(cfg, tmp_path_factory.mktemp("forksweep") / "parent", progress=False)


@pytest.fixture(scope="module")
def fork_sweep(parent):
    out = parent.path.parent / "sweep"
    df = run_fork(parent, STEPS, GRID, out=out, backend="local-pool", workers=1, progress=False,
                     columns=sweep_summary.columns(out))
    return out, df


def test_members_exist_with_their_lineage(parent, fork_sweep):
    out, df = fork_sweep
    assert sorted(df["name"]) == sorted(f"fork_step={s},weight_decay={w}" for s in STEPS for w in (0, 3))
    assert set(df["action"]) == {"trained"} and set(df["status"]) == {"complete"}
    for r in df.to_dict("records"):
        run = Run.open(r["run"])
        lineage = run.meta["fork"]
        assert lineage["parent"] == str(parent.path.resolve()) and lineage["step"] == r["fork_step"]
        assert run.train_config.weight_decay == r["weight_decay"] and run.steps[-1] == 60
        assert lineage["changes"] == ({} if r["weight_decay"] == 3 else {"weight_decay": 0.0})
    same = Run.open(out / "fork_step=20,weight_decay=3")  # no change: bit-identical to the parent
    for k, v in parent.state_dict_at(60).items():
        assert torch.equal(same.state_dict_at(60)[k], v), k


def test_summary_has_the_fork_step_axis(fork_sweep):
    out, df = fork_sweep
    assert list(sw.Sweep.open(out).grid) == ["fork_step", "weight_decay"]
    assert {"fork_step", "weight_decay", "grokked_step", "test_acc", "key_freqs", "outcome"} <= set(df.columns)
    assert sorted(set(df["fork_step"])) == STEPS
    again = sweep_summary.summarize(out)
    assert again[["name", "fork_step", "test_acc"]].equals(df[["name", "fork_step", "test_acc"]])
    grid = sw.Sweep.open(out).grid
    assert ph.phase_axes(grid) == ("fork_step", "weight_decay")
    assert ph.fig_phase_diagram(df, grid) is not None and ph.fig_steps_to_grok(df, grid) is not None


def test_rerun_skips_and_cli_prints_the_table(parent, fork_sweep, capsys):
    out, _ = fork_sweep
    argv = ["sweep", "--fork", str(parent.path), "--at", "20,40", "--grid", *GRID, "--out", str(out),
            "--workers", "1", "--quiet"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "fork_step" in text.splitlines()[0] and "4 members (0 trained, 0 resumed, 4 skipped)" in text
    assert cli.main(["sweep", "plot", str(out)]) == 0
    assert (out / "plots" / "phase_diagram.html").exists() and (out / "plots" / "steps_to_grok.html").exists()


def test_a_member_forked_differently_is_refused(fork_sweep):
    out, _ = fork_sweep
    m = next(m for m in sw.Sweep.open(out).members if m.name == "fork_step=20,weight_decay=0")
    assert member_status(out / m.name, m.config, m.fork) == "complete"
    with pytest.raises(StoreError, match="forked differently"):
        member_status(out / m.name, m.config, {**m.fork, "step": 40})


def test_intervention_axis_and_grid_errors(parent, tmp_path, capsys):
    assert split_interventions("none,stablemax+orthograd,ablate:14,35,wd:0") == [
        "none", "stablemax+orthograd", "ablate:14,35", "wd:0"]
    grid = sw.parse_grid(["intervene=none,ablate:top:W_L"], fork=True)
    assert grid == {"intervene": ["none", "ablate:top:W_L"]}
    assert point_args({"fork_step": 5, "intervene": "stablemax+wd:0", "lr": 0.01}, ["seed=1"], ["float64"]) == (
        5, ["seed=1", "lr=0.01"], ["float64", "stablemax", "wd:0"])
    with pytest.raises(ConfigError, match="unknown config key"):
        sw.parse_grid(["fork_step=1,2"])
    with pytest.raises(ConfigError, match="unknown intervention"):
        sw.parse_grid(["intervene=none,bogus"], fork=True)
    with pytest.raises(ConfigError, match=r"ran steps 0\.\.60"):
        run_fork(parent, [10, 999], out=tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="task and architecture"):
        run_fork(parent, [10], ["d_model=32,64"], out=tmp_path / "x", progress=False)
    assert cli.main(["sweep", "--fork", str(parent.path), "--at", "10", "--preset", "tiny"]) == 2
    assert "--set changes it" in capsys.readouterr().err
    assert cli.main(["sweep", "--at", "10", "--grid", "seed=1"]) == 2
    assert "go together" in capsys.readouterr().err


def test_compare_page_overlays_the_parent_with_its_sweep_members(parent, fork_sweep, monkeypatch):
    """The dashboard's Compare page preselects the parent and every fork sweep member (found under the
    runs root) and marks each fork step on the parent's step axis."""
    from tests.test_dashboard import app, chart, goto

    out, df = fork_sweep
    at = goto(app(monkeypatch, root=parent.path.parent, query={"run": "parent"}), "compare")
    chosen = at.multiselect(key="compare_runs").value
    assert chosen[0] == str(parent.path) and sorted(chosen[1:]) == sorted(str(out / n) for n in df["name"])
    spec = chart(at, "test acc")
    forks = [s["x0"] for s in spec["layout"]["shapes"] if s.get("line", {}).get("dash") == "dashdot"]
    assert sorted(forks) == sorted(2 * STEPS)


def test_interventions_as_an_axis_and_for_every_member(parent):
    out = parent.path.parent / "sweep_intervene"
    df = run_fork(parent, [40], ["intervene=none,ablate:top"], interventions=["wd:0"], out=out, workers=1,
                  progress=False)
    assert sorted(df["name"]) == ["fork_step=40,intervene=ablate:top", "fork_step=40,intervene=none"]
    plain, ablated = (Run.open(out / f"fork_step=40,intervene={v}") for v in ("none", "ablate:top"))
    assert plain.meta["fork"]["interventions"] == ["wd:0"]
    assert ablated.meta["fork"]["interventions"] == ["wd:0", "ablate:top"]
    assert plain.train_config.weight_decay == ablated.train_config.weight_decay == 0
    k = ablated.meta["fork"]["changes"]["ablate"]["frequencies"][0]
    norms = frequency_norms(ablated.state_dict_at(40)["embed.W_E"], ablated.train_config.p)
    assert norms[k - 1] < 1e-5 < frequency_norms(plain.state_dict_at(40)["embed.W_E"], plain.train_config.p)[k - 1]
