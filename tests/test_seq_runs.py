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


def test_diff_refuses_clearly(seq_run):
    from probes.diff import compare

    with pytest.raises(ConfigError, match="sequence task 'bigram_backcopy'"):
        compare((seq_run, seq_run.steps[1]), (seq_run, seq_run.steps[-1]))


@pytest.fixture(autouse=True)
def _clear_caches(clear_streamlit_caches):
    """Streamlit's caches, emptied around every test of this module."""


@pytest.mark.parametrize("page", ["overview", "fourier", "progress", "attention", "diff", "compare"])
def test_dashboard_pages(monkeypatch, seq_run, page):
    monkeypatch.setenv("GROKSCOPE_RUNS", str(seq_run.path))
    at = AppTest.from_file(str(DASHBOARD), default_timeout=180).run()
    at = at.switch_page(f"page_{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    if page in ("fourier", "progress", "diff"):
        assert any("does not apply" in el.value for el in at.info)
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
