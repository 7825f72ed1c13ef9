"""A sequence-task run end to end (issue 13): the ``tiny_seq`` preset trains in seconds and forms a
measurable BOS sink; probes skip what does not apply; the dashboard, diff and sweeps take it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import probes
from apps import data
from interp import Run, preset, train
from interp.errors import ConfigError

DASHBOARD = Path(__file__).resolve().parents[1] / "apps" / "dashboard.py"


@pytest.fixture(scope="module")
def seq_run(tmp_path_factory) -> Run:
    """The ``tiny_seq`` preset (bigram_backcopy), trained once, with its probes computed."""
    run = train(preset("tiny_seq"), tmp_path_factory.mktemp("seq") / "tiny_seq", progress=False)
    data.compute_probes(str(run.path))
    return Run.open(run.path)


def _scalars(run: Run):
    return probes.load(run).pivot_table(index="step", columns="name", values="value")


def test_tiny_seq_forms_a_bos_sink(seq_run):
    df = _scalars(seq_run)
    first, last = df.index.min(), df.index.max()
    assert df.loc[first, "sink_rate_non_trigger"] < 20 and df.loc[last, "sink_rate_non_trigger"] > 80
    assert df.loc[last, "value_ratio"] < df.loc[first, "value_ratio"], "BOS's value state drains"
    m = seq_run.metrics
    assert m.train_loss.iloc[-1] < m.train_loss.iloc[0]
    assert json.loads((seq_run.path / "run.json").read_text())["split"]["data_sha256"]


def test_probe_applicability(seq_run):
    status = probes.status(seq_run)
    assert status["complete"]
    assert status["probes"]["fourier.embed"]["reason"].startswith("does not apply")
    assert status["probes"]["attention.seq_sinks"]["reason"] == ""
    assert not (seq_run.path / "probes" / "fourier.embed.safetensors").exists()


def test_batched_refuses_sequence_tasks(seq_run, tmp_path):
    from interp.batched import BatchedTrainer
    from interp.train import create_run

    cfg = preset("tiny_seq")
    with pytest.raises(ConfigError, match="sequence tasks"):
        BatchedTrainer([cfg], [create_run(cfg, tmp_path / "b")])


def test_diff_reduced_report(seq_run, tmp_path):
    """A sequence run's diff: behaviour, weights, sinks and CKA, and one line on why Fourier is absent;
    Markdown, HTML and JSON (read back, it renders the same)."""
    from apps.cli.main import main
    from apps.report import to_html, to_markdown
    from probes.diff import DiffReport, compare

    report = compare((seq_run, seq_run.steps[0]), (seq_run, seq_run.steps[-1]))
    d = report.data
    assert d["kind"] == "sequence" and "fourier" not in d and d["representation"]
    rates = d["sinks"]["by_type"]["non_trigger"]["sink_rate"]
    assert rates["a"] < 20 and rates["b"] > 80
    md, page = to_markdown(report), to_html(report)
    assert "## Attention and sinks" in md and "non-trigger queries" in md and "## Representation similarity" in md
    assert "Task bigram\\_backcopy has no modular structure" in md.split("## Fourier")[1].split("##")[0]
    assert "id='sinks'" in page and "no modular structure" in page and "<code>&lt;bos&gt;</code>" in page
    back = DiffReport.from_dict(json.loads(report.to_json()))
    assert to_markdown(back) == md
    out = {k: tmp_path / f"r.{k}" for k in ("md", "html", "json")}
    flags = [x for k, v in out.items() for x in (f"--{k}", str(v))]
    assert main(["diff", str(seq_run.path), "--from", "first", "--to", "last", *flags]) == 0
    assert json.loads(out["json"].read_text())["kind"] == "sequence"
    assert "Attention and sinks" in out["html"].read_text() and "## Fourier" in out["md"].read_text()


def test_diff_refuses_grid_against_sequence(seq_run, tmp_path):
    from probes.diff import compare

    grid = train(preset("tiny").replace(n_steps=10), tmp_path / "grid", progress=False)
    with pytest.raises(ConfigError, match="grid task and the other a sequence task"):
        compare((grid, 0), (seq_run, seq_run.steps[-1]))


@pytest.fixture(autouse=True)
def _clear_caches(clear_streamlit_caches):
    """Streamlit's caches, emptied around every test of this module."""


@pytest.mark.parametrize("page", ["overview", "fourier", "progress", "attention", "diff", "compare"])
def test_dashboard_pages(monkeypatch, seq_run, page):
    monkeypatch.setenv("GROKSCOPE_RUNS", str(seq_run.path))
    at = AppTest.from_file(str(DASHBOARD), default_timeout=180).run()
    at = at.switch_page(f"page_{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    if page in ("fourier", "progress"):
        assert any("does not apply" in el.value for el in at.info)
    if page == "diff":  # the reduced sequence report, inline
        assert not any("does not apply" in el.value for el in at.info)
        assert not at.error, [e.value for e in at.error]
    if page == "attention":
        titles = [json.loads(el.proto.spec)["layout"]["title"]["text"] for el in at.get("plotly_chart")]
        assert any(t.startswith("Layer 0: attention of probe input") for t in titles)
        assert any(t.startswith("Sink rate per head, non-trigger") for t in titles)


def test_sweep_over_n_train(tmp_path):
    """A sweep over N (the data-amount knob) on a sequence task, in-process pool of one worker."""
    from interp import sweep

    base = preset("tiny_seq").replace(n_steps=20, ckpt_every=10, eval_every=10)
    df = sweep.run(base, ["n_train=200,400"], out=tmp_path / "sw", backend="local-pool", workers=1,
                   progress=False)
    assert sorted(df["n_train"]) == [200, 400] and set(df["action"]) == {"trained"}
