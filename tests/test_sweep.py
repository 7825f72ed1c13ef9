"""Sweeps: grid parsing, the local/Ray/batched backends, skip and resume, summaries, outcome
classes, the critical-fraction fit, plots and the dashboard page."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import apps.cli.main as cli
from apps import sweep_plots as ph
from interp import Hook, Run, preset, resume, train
from interp import sweep as sw
from interp.errors import ConfigError
from interp.metrics import METRIC_COLUMNS, grok_steps
from interp.train import create_run
from probes import sweep_summary

#: a 60-step tiny config on p = 23 (conftest's ``short_config`` on a 4× smaller grid)
BASE = preset("tiny").replace(p=23, n_steps=60, ckpt_dense_until=20, ckpt_log_count=5, ckpt_every=20)
GRID = {"weight_decay": [1.0, 3.0]}


class Interrupt(Exception):
    pass


class InterruptAt(Hook):
    """Raises during ``step`` (after the checkpoints before it were saved): a killed worker."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step, metrics):
        if step == self.step:
            raise Interrupt(step)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    run = Run.open(run_dir)
    return run.state_dict_at(run.steps[-1])


def assert_same_run(a: Path, b: Path, atol: float = 0.0) -> None:
    ra, rb = Run.open(a), Run.open(b)
    assert ra.steps == rb.steps
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        if atol == 0:
            assert torch.equal(wa[k], wb[k]), k
        else:
            torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0)
    cols = [c for c in METRIC_COLUMNS if c != "wall_time"]
    ma, mb = ra.metrics[cols], rb.metrics[cols]
    if atol == 0:
        pd.testing.assert_frame_equal(ma, mb)
    else:
        pd.testing.assert_frame_equal(ma, mb, atol=atol, rtol=0, check_dtype=False)


@pytest.fixture(scope="module")
def pool_sweep(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Two 60-step tiny members trained by the local process pool (2 workers)."""
    out = tmp_path_factory.mktemp("sweeps") / "pool"
    df = sw.run(BASE, ["weight_decay=1,3"], out=out, backend="local-pool", workers=2, progress=False,
                preset_name="tiny", columns=sweep_summary.columns(out))
    return out, df


# ====================================================================== grid
def test_parse_grid_types_ranges_and_order():
    grid = sw.parse_grid(["frac_train=0.2,0.25", "weight_decay=1", "seed=0..2,7", "stop_after_grok=none,50"])
    assert list(grid) == ["frac_train", "weight_decay", "seed", "stop_after_grok"]
    assert grid["frac_train"] == [0.2, 0.25] and all(type(v) is float for v in grid["frac_train"])
    assert grid["weight_decay"] == [1.0] and type(grid["weight_decay"][0]) is float
    assert grid["seed"] == [0, 1, 2, 7] and all(type(v) is int for v in grid["seed"])
    assert grid["stop_after_grok"] == [None, 50]
    # mappings are normalised the same way
    assert sw.parse_grid({"weight_decay": [1, 3], "seed": "0..1"}) == {"weight_decay": [1.0, 3.0], "seed": [0, 1]}


@pytest.mark.parametrize("spec, msg", [
    (["frac_train=0.1..0.3"], "ranges a..b are for integer fields"),
    (["seed=3..1"], "empty range"),
    (["nope=1"], "nope: unknown config key"),
    (["seed"], "expected KEY=V1,V2"),
    (["seed=1,1"], "listed twice"),
    (["seed=1", "seed=2"], "given twice"),
    (["frac_train=abc"], "frac_train: expected float"),
])
def test_parse_grid_errors(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        sw.parse_grid(spec)


def test_member_names_and_configs():
    grid = sw.parse_grid(["frac_train=0.3,0.5", "weight_decay=1", "seed=0..1"])
    ms = sw.members(BASE, grid)
    assert [m.name for m in ms] == ["frac_train=0.3,weight_decay=1,seed=0", "frac_train=0.3,weight_decay=1,seed=1",
                                    "frac_train=0.5,weight_decay=1,seed=0", "frac_train=0.5,weight_decay=1,seed=1"]
    assert ms[3].config == BASE.replace(frac_train=0.5, weight_decay=1.0, seed=1)
    assert sw.format_value(1e-5) == "1e-05" and sw.format_value(0.1) == "0.1" and sw.format_value(3.0) == "3"
    with pytest.raises(ConfigError, match=r"sweep member frac_train=1.5: frac_train"):
        sw.members(BASE, {"frac_train": [1.5]})


# ====================================================================== local pool: summary, skip, resume
def test_local_pool_summary_matches_runs(pool_sweep):
    out, df = pool_sweep
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["grid"] == [["weight_decay", [1.0, 3.0]]] and meta["base_config"] == BASE.to_dict()
    assert list(df["name"]) == ["weight_decay=1", "weight_decay=3"]
    assert list(df["action"]) == ["trained", "trained"]
    saved = pd.read_parquet(out / "summary.parquet")
    assert list(saved["name"]) == list(df["name"])
    for row in df.to_dict("records"):
        run = Run.open(out / row["name"])
        assert run.status == "complete" and run.config == BASE.replace(weight_decay=row["weight_decay"]).to_dict()
        m = run.metrics
        assert row["last_step"] == 60 == int(m["step"].iloc[-1])
        g = grok_steps(m)
        for col in ("memorized_step", "grokked_step"):
            assert (None if pd.isna(row[col]) else int(row[col])) == g[col]
        assert row["grokked"] == (g["grokked_step"] is not None)
        for col in ("train_loss", "test_loss", "train_acc", "test_acc"):
            assert row[col] == pytest.approx(float(m[col].dropna().iloc[-1]), abs=0)
        assert row["wall_time"] == pytest.approx(float(m["wall_time"].iloc[-1]))
        assert row["outcome"] == sw.classify(g["memorized_step"], g["grokked_step"], BASE.eval_every)
    import probes  # key frequencies: probes.measure on the final checkpoint

    run = Run.open(out / "weight_decay=1")
    is_key = np.asarray(probes.measure(run.model_at(60), run.task, names=["fourier.key_freqs"])
                        ["fourier.key_freqs"]["is_key"])
    assert list(df["key_freqs"].iloc[0]) == [int(k) for k in np.flatnonzero(is_key > 0.5) if k > 0]


def test_rerun_skips_finished_members(pool_sweep):
    out, _ = pool_sweep
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.parquet")}
    df = sw.run(BASE, {"weight_decay": [1, 3]}, out=out, backend="local-pool", workers=2, progress=False)
    assert list(df["action"]) == ["skipped", "skipped"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.parquet")} == before
    with pytest.raises(ConfigError, match="different base config"):
        sw.run(BASE.replace(lr=1e-3), GRID, out=out, progress=False)
    with pytest.raises(ConfigError, match="different grid"):
        sw.run(BASE, {"weight_decay": [1.0]}, out=out, progress=False)


def test_interrupted_member_resumes_bit_identical(pool_sweep, tmp_path):
    ref, _ = pool_sweep
    out = tmp_path / "again"
    out.mkdir()
    shutil.copytree(ref / "weight_decay=1", out / "weight_decay=1")  # finished before the "crash"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a pool worker
    try:
        with pytest.raises(Interrupt):  # a worker killed at step 45: last saved state is step 40
            train(BASE.replace(weight_decay=3.0), out / "weight_decay=3", hooks=[InterruptAt(45)], progress=False)
    finally:
        torch.set_num_threads(threads)
    assert Run.open(out / "weight_decay=3").status == "running"
    df = sw.run(BASE, GRID, out=out, backend="local-pool", workers=1, progress=False)
    assert dict(zip(df["name"], df["action"])) == {"weight_decay=1": "skipped", "weight_decay=3": "resumed"}
    assert_same_run(out / "weight_decay=3", ref / "weight_decay=3")


def test_stale_member_is_retrained(tmp_path):
    out = tmp_path / "stale"
    sw.Sweep.create_or_check(out, {"seed": [0]}, BASE.replace(n_steps=10), None)
    create_run(BASE.replace(n_steps=10, seed=0), out / "seed=0")  # created, never saved a state
    assert sw.member_status(out / "seed=0", BASE.replace(n_steps=10, seed=0)) == "stale"
    df = sw.run(BASE.replace(n_steps=10), {"seed": [0]}, out=out, backend="local-pool", workers=1, progress=False)
    assert list(df["action"]) == ["trained"] and Run.open(out / "seed=0").status == "complete"


# ====================================================================== batched (torch.func)
def test_batched_matches_separate_runs(tmp_path):
    """N models in one vmapped computation = N runs of interp.train, to 1e-5 (float64), including
    different training fractions and per-model early stopping."""
    base = BASE.replace(n_steps=16, dtype="float64", eval_every=5, ckpt_dense_until=10, ckpt_dense_every=5,
                        ckpt_log_count=2, ckpt_every=8, grok_threshold=1e-9)
    grid = {"frac_train": [0.3, 0.5], "stop_after_grok": [None, 10]}
    df = sw.run(base, grid, out=tmp_path / "batched", backend="local-batched", device="cpu", progress=False)
    assert list(df["action"]) == ["trained"] * 4
    assert list(df["stopped_early"]) == [False, True, False, True]
    assert list(df["last_step"]) == [16, 10, 16, 10]
    for m in sw.members(base, sw.parse_grid(grid)):
        train(m.config, tmp_path / "separate" / m.name, progress=False)
        assert_same_run(tmp_path / "batched" / m.name, tmp_path / "separate" / m.name, atol=1e-5)
        assert Run.open(tmp_path / "batched" / m.name).meta["stopped_early"] == (m.params["stop_after_grok"] == 10)


@pytest.mark.slow
def test_batched_resume_and_grokfast_interoperate(tmp_path):
    """A run interrupted under interp.train resumes in a batch; a batched run resumes under
    interp.train; Grokfast EMA and minibatches match interp.train too."""
    base = BASE.replace(n_steps=16, dtype="float64", eval_every=5, ckpt_dense_until=10, ckpt_dense_every=5,
                        ckpt_log_count=2, ckpt_every=8, grokfast="ema", batch_size=64)
    cfgs = [base.replace(seed=0), base.replace(seed=1, frac_train=0.3)]
    for i, c in enumerate(cfgs):
        train(c, tmp_path / f"ref{i}", progress=False)
        with pytest.raises(Interrupt):
            train(c, tmp_path / f"b{i}", hooks=[InterruptAt(12)], progress=False)  # state at step 10
    acts = sw.train_members_batched([(tmp_path / f"b{i}", c) for i, c in enumerate(cfgs)], device="cpu",
                                    progress=False)
    assert acts == ["resumed", "resumed"]
    for i in range(2):
        assert_same_run(tmp_path / f"b{i}", tmp_path / f"ref{i}", atol=1e-5)
    # the batched run's final state continues under interp.train
    resume(tmp_path / "b0", n_steps=24, progress=False)
    train(cfgs[0].replace(n_steps=24), tmp_path / "ref_long", progress=False)
    wa, wb = weights(tmp_path / "b0"), weights(tmp_path / "ref_long")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0)


# ====================================================================== Ray
@pytest.mark.slow
def test_ray_backend_matches_local(pool_sweep, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'grokscope[ray]')")
    ref, _ = pool_sweep
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        df = sw.run(BASE, ["weight_decay=1,3"], out=tmp_path / "ray", backend="ray", progress=False)
    finally:
        ray.shutdown()
    assert list(df["action"]) == ["trained", "trained"]
    for name in df["name"]:
        assert_same_run(tmp_path / "ray" / name, ref / name)


def test_ray_missing_is_one_line_error(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"Ray is not installed; pip install 'grokscope\[ray\]'"):
        sw.run(BASE, GRID, out=tmp_path / "r", backend="ray", progress=False)


# ====================================================================== outcomes, fit, plots
@pytest.mark.parametrize("mem, grok, expected", [
    (None, None, sw.NO_LEARNING), (300, None, sw.MEMORIZATION), (300, 650, sw.COMPREHENSION),
    (300, 700, sw.COMPREHENSION), (300, 800, sw.GROKKING), (None, 500, sw.COMPREHENSION), (0, 100, sw.COMPREHENSION),
])
def test_classify(mem, grok, expected):
    assert sw.classify(mem, grok, eval_every=100, delay_factor=2.0) == expected


def test_fit_recovers_c():
    p = np.array([23, 31, 47, 59, 97, 113])
    f = 1.7 * np.log(p) / p
    fit = ph.fit_log_over_p(p, f)
    assert fit["c"] == pytest.approx(1.7, rel=1e-12) and fit["rms"] < 1e-12 and fit["n"] == 6
    noisy = f * (1 + 0.05 * np.random.default_rng(0).standard_normal(len(p)))
    g = np.log(p) / p
    assert ph.fit_log_over_p(p, noisy)["c"] == pytest.approx((noisy * g).sum() / (g * g).sum(), rel=1e-12)
    assert ph.fit_log_over_p(p, noisy)["c"] == pytest.approx(1.7, rel=0.1)


def _synthetic(grid: dict, outcome) -> pd.DataFrame:
    """A summary table whose outcome per member is ``outcome(params)``."""
    steps = {sw.COMPREHENSION: (200, 300), sw.GROKKING: (100, 3000), sw.MEMORIZATION: (100, None),
             sw.NO_LEARNING: (None, None)}
    rows = []
    for m in sw.members(BASE, grid):
        o = outcome(m.params)
        mem, grok = steps[o]
        rows.append({"name": m.name, **m.params, "memorized_step": mem, "grokked_step": grok, "outcome": o})
    df = pd.DataFrame(rows)
    df["grokked_step"] = df["grokked_step"].astype("Int64")
    return df


def test_critical_fraction_and_fit_from_synthetic_sweep():
    c_true = 1.5
    fracs = [round(x, 2) for x in np.arange(0.04, 0.5, 0.04)]
    grid = {"p": [23, 47, 97], "frac_train": fracs, "seed": [0, 1]}
    def outcome(q):  # seed 0 generalises from the threshold on; seed 1 one grid step later, and by luck at 0.08
        thr = c_true * math.log(q["p"]) / q["p"] + (0.04 if q["seed"] == 1 else 0.0)
        return sw.GROKKING if q["frac_train"] >= thr or (q["seed"] == 1 and q["frac_train"] == 0.08) \
            else sw.MEMORIZATION

    # rate ½ counts as generalising; an isolated lucky fraction below the threshold does not move f_c
    df = _synthetic(grid, outcome)
    table = ph.critical_fractions(df, grid)
    for row in table.to_dict("records"):
        hi = min(f for f in fracs if f >= c_true * math.log(row["p"]) / row["p"])
        lo = max(f for f in fracs if f < hi)
        assert (row["lo"], row["hi"], row["censored"]) == (lo, hi, "")
        assert row["f_c"] == pytest.approx((lo + hi) / 2)
    res = ph.fig_critical_fraction(df, grid)
    assert res is not None
    fig, fits = res
    assert fits[0]["n"] == 3 and fits[0]["c"] == pytest.approx(c_true, rel=0.15)
    assert fig.layout.xaxis.title.text == "modulus p" and fig.layout.yaxis.title.text.startswith("critical")


def test_phase_diagram_and_steps_to_grok_from_synthetic_summary():
    grid = {"frac_train": [0.2, 0.3, 0.5], "weight_decay": [0.1, 0.3, 1.0], "seed": [0, 1, 2]}

    def outcome(q):
        if q["weight_decay"] == 0.1:
            return sw.MEMORIZATION
        if q["frac_train"] == 0.5:
            return sw.COMPREHENSION if q["seed"] < 2 else sw.GROKKING
        return sw.NO_LEARNING if q["frac_train"] == 0.2 and q["weight_decay"] == 0.3 else sw.GROKKING

    df = _synthetic(grid, outcome)
    table = ph.phase_table(df, "frac_train", "weight_decay").set_index(["frac_train", "weight_decay"])
    assert table.loc[(0.5, 1.0), "outcome"] == sw.COMPREHENSION and table.loc[(0.5, 1.0), sw.GROKKING] == 1
    assert table.loc[(0.2, 0.3), "outcome"] == sw.NO_LEARNING
    assert table.loc[(0.3, 0.1), "outcome"] == sw.MEMORIZATION and table.loc[(0.3, 1.0), "outcome"] == sw.GROKKING
    fig = ph.fig_phase_diagram(df, grid)
    assert {t.name for t in fig.data} == set(ph.OUTCOME_LABELS.values())
    assert fig.layout.xaxis.title.text == "training fraction" and fig.layout.yaxis.type == "log"  # 0.1..1
    s = ph.steps_to_grok(df, grid).set_index(["weight_decay", "frac_train"])
    assert s.loc[(1.0, 0.5), "n_grokked"] == 3 and s.loc[(1.0, 0.5), "median"] == 300
    assert s.loc[(0.1, 0.5), "n_grokked"] == 0
    fig = ph.fig_steps_to_grok(df, grid)
    assert fig.layout.yaxis.type == "log" and len(fig.data) == 3
    assert ph.fig_steps_to_grok(df, {"weight_decay": [0.1, 1.0]}) is None


def _fake_sweep(root: Path) -> Path:
    """A sweep directory over p × frac × wd whose members have synthetic metrics (no training)."""
    base = BASE.replace(d_model=8, n_heads=1, d_head=8, d_mlp=8, n_steps=1000, eval_every=100)
    grid = {"p": [23, 31], "frac_train": [0.3, 0.6], "weight_decay": [0.5, 1.0]}
    out = root / "fake_sweep"
    sweep = sw.Sweep.create_or_check(out, grid, base, "tiny")
    for m in sweep.members:
        run = create_run(m.config, out / m.name)
        steps = np.arange(0, 1001, 100)
        grok_at = 300 if m.params["frac_train"] == 0.6 else (800 if m.params["weight_decay"] == 1.0 else 10_000)
        rows = pd.DataFrame({"step": steps, "train_loss": 1.0 / (steps + 1), "train_acc": (steps >= 200) * 1.0,
                             "test_loss": 2.0, "test_acc": (steps >= grok_at) * 1.0, "lr": 1e-3, "weight_norm": 1.0,
                             "grad_norm": 1.0, "wall_time": steps / 100})
        run.write_metrics(rows[METRIC_COLUMNS])
        run.update_meta(status="complete", final_step=1000, stopped_early=False)
    return out


def test_plot_cli_writes_html(tmp_path, capsys):
    out = _fake_sweep(tmp_path)
    assert cli.main(["sweep", "plot", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("steps_to_grok", "phase_diagram", "critical_fraction"):
        html = (out / "plots" / f"{name}.html").read_text()
        assert "plotly" in html and len(html) > 1_000_000  # plotly.js inlined: self-contained
    fits = json.loads((out / "plots" / "critical_fraction.json").read_text())["fits"]
    assert len(fits) == 2 and "c = " in printed
    df = pd.read_parquet(out / "summary.parquet")
    assert set(df["outcome"]) == {sw.COMPREHENSION, sw.GROKKING, sw.MEMORIZATION}
    assert cli.main(["sweep", "summary", str(out)]) == 0
    assert "did not grok" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    for argv, msg in [(["sweep", "--grid", "frac_train=0.1..0.3"], "ranges a..b are for integer fields"),
                      (["sweep", "--preset", "tiny"], "--grid is required"),
                      (["sweep", "plot", str(tmp_path)], "no sweep at"),
                      (["sweep", "run", "--preset", "nope", "--grid", "seed=0"], "unknown preset")]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and msg in err, err


def test_dashboard_page_renders(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    out = _fake_sweep(tmp_path)
    monkeypatch.setenv("GROKSCOPE_ROOT", str(tmp_path))
    at = AppTest.from_string("from apps.page_sweeps import render\nrender()\n", default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="sweep_dir").value == str(out)
    assert len(at.get("plotly_chart")) == 3
    table = at.dataframe[0].value
    assert len(table) == 8 and table["run"].str.startswith("overview?run=fake_sweep/").all()
    at.button(key="sweeps_open").click().run()
    assert at.session_state["run"] == str(out / at.selectbox(key="sweeps_member").value)
