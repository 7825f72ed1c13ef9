"""The diff report's Theories section (issue 15): computed from the run's probe cache
(probes.theories.diff_section), rendered by apps.report_theories in Markdown, HTML and JSON."""

from __future__ import annotations

import json
import shutil

import pytest

import probes
from apps.report import to_html, to_markdown
from interp import Run, preset, train
from probes.diff import DiffReport, compare


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """A short tiny run whose cache holds the restricted-loss and collapse probes, not li2 or llc."""
    cfg = preset("tiny").replace(p=23, n_steps=60, ckpt_dense_until=20, ckpt_log_count=5, ckpt_every=20)
    run = train(cfg, tmp_path_factory.mktemp("theories") / "run", progress=False)
    probes.run(run, names=["progress.restricted", "stability.collapse"], progress=False)
    return run


@pytest.fixture(scope="module")
def report(probed) -> DiffReport:
    return compare((probed, 20), (probed, 60))


def test_section_in_json_with_curves_marks_and_missing_measures(report, probed):
    (part,) = json.loads(report.to_json())["theories"]
    assert part["marks"] == {"a": 20, "b": 60} and part["run"] == str(probed.path)
    measures = [r["measure"] for r in part["table"]]
    assert measures == ["test_loss", "restricted_loss", "excluded_loss", "softmax_collapse", "nlm_cosine"]
    assert [m["measure"] for m in part["missing"]] == ["li2_grad_norm_hidden", "llc"]
    assert part["missing"][0]["how"] == "grokscope probe RUN li2"
    curves = part["curves"]
    assert curves["step"] == sorted(set(curves["step"])) and {20, 60} <= set(curves["step"])
    assert set(curves) == {"step", *measures}
    vals = [v for k in measures for v in curves[k] if v is not None]
    assert vals and min(vals) >= 0 and max(vals) <= 1
    assert "below 0.5" in part["rule"]


def test_section_in_markdown_and_html(report):
    md = to_markdown(report)
    assert "## Theories" in md and "| measure | transition (step) | from median | vs compared steps |" in md
    assert "Missing measures: li2\\_grad\\_norm\\_hidden (grokscope probe RUN li2)" in md
    assert "before = step 20, after = step 60" in md
    page = to_html(report)
    assert "<h2 id='theories'>Theories</h2>" in page and "fig-theories-0" in page
    assert page.count("window.PlotlyConfig") == 1  # one plotly.js bundle on the page
    assert page.rstrip().endswith("</body></html>")
    again = DiffReport.from_dict(json.loads(report.to_json()))
    assert to_markdown(again) == md


def test_unprobed_run_names_every_missing_probe_measure(probed, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(probed.path, bare, ignore=shutil.ignore_patterns("probes"))
    rep = compare((Run.open(bare), 0), (Run.open(bare), 60))
    (part,) = rep.data["theories"]
    assert [r["measure"] for r in part["table"]] == ["test_loss"]
    assert [m["measure"] for m in part["missing"]] == [
        "restricted_loss", "excluded_loss", "li2_grad_norm_hidden", "softmax_collapse", "nlm_cosine", "llc"]
    md = to_markdown(rep)
    assert "restricted\\_loss (grokscope probe RUN progress.restricted)" in md


def test_report_without_the_section_still_renders(report):
    d = report.to_dict()
    del d["theories"]
    assert "Not in this report" in to_markdown(d) and "Not in this report" in to_html(d)


def test_sequence_report_says_why_there_are_no_theories(tmp_path):
    cfg = preset("tiny_seq").replace(n_steps=10, ckpt_every=10, n_train=256, n_test=64)
    run = train(cfg, tmp_path / "seq", progress=False)
    d = compare((run, 0), (run, 10)).to_dict()
    assert d["kind"] == "sequence" and "theories" not in d
    assert "Not computed for sequence tasks" in to_markdown(d) and "Not computed for sequence tasks" in to_html(d)
