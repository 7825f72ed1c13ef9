"""Checkpoint diff reports (probes.diff, rendered by apps.report): zero change against itself, numbers
equal to the probe API's, the grokking transition of the tiny run, JSON/Markdown round trip, cross-run
reports, CLI errors, and the HTML page in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import probes
from apps.cli.main import main
from apps.report import to_html, to_markdown
from interp import train
from interp.errors import ConfigError
from interp.tasks import Task
from probes.diff import (
    BOTH_RIGHT,
    BOTH_WRONG,
    INVALID,
    RIGHT_TO_WRONG,
    WRONG_TO_RIGHT,
    Checkpoint,
    DiffReport,
    compare,
    fmt_set,
    linear_cka,
    prediction_flips,
    transition_steps,
)


def arr(x) -> np.ndarray:
    """A report value (lists with None for NaN) or a probe value as a float array with NaN."""
    if isinstance(x, torch.Tensor):
        x = x.numpy()
    return np.array(x, dtype=float) if not isinstance(x, list) else np.array(
        json.loads(json.dumps(x).replace("null", "NaN")), dtype=float)


# ---------------------------------------------------------------- shared reports (computed once)
@pytest.fixture(scope="module")
def steps(tiny_run) -> tuple[int, int]:
    """The checkpoints around the tiny run's transition, as ``--transition`` picks them."""
    return transition_steps(tiny_run)


@pytest.fixture(scope="module")
def transition_report(tiny_run, steps) -> DiffReport:
    return compare((tiny_run, steps[0]), (tiny_run, steps[1]))


@pytest.fixture(scope="module")
def self_report(tiny_run, steps) -> DiffReport:
    return compare(Checkpoint(tiny_run, steps[1]), Checkpoint(tiny_run, steps[1]))


@pytest.fixture(scope="module")
def measured(tiny_run, steps) -> tuple[dict, dict]:
    """probes.measure on the two transition checkpoints (the reference numbers)."""
    return tuple(probes.measure(tiny_run.model_at(s), tiny_run.task) for s in steps)


# ---------------------------------------------------------------- a checkpoint against itself
def test_self_comparison_shows_zero_change_and_cka_one(self_report):
    d = self_report.to_dict()
    assert d["aligned"] and d["same_run"] and d["notes"] == []
    for r in d["weights"]:
        assert r["delta"] == 0.0 and r["rel_change"] == 0.0 and r["norm_change"] == 0.0, r["name"]
        assert r["cosine"] == pytest.approx(1.0, abs=1e-12), r["name"]
    for m in d["spectra"]["matrices"]:
        assert m["a"] == m["b"] and len(m["a"]) == min(d["spectra"]["k"], *m["shape_a"]), m["name"]
    for r in d["behaviour"]["metrics"]:
        assert r["a"] == r["b"], r["name"]
    for counts in d["behaviour"]["flips"]["counts"].values():
        assert counts["wrong_to_right"] == 0 and counts["right_to_wrong"] == 0
    kf = d["fourier"]["key_freqs"]
    assert kf["gained"] == [] and kf["lost"] == [] and kf["kept"] == kf["a"] == kf["b"] != []
    nr = d["fourier"]["neurons"]
    assert all(nr[k] == [] for k in ("changed_freq", "became_dead", "revived", "joined_cluster", "left_cluster"))
    for name in ("embed", "logit_map"):
        assert d["fourier"][name]["norms"]["a"] == d["fourier"][name]["norms"]["b"]
    heads = d["attention"]["heads"]
    assert all(heads[k]["a"] == heads[k]["b"] for k in heads)
    assert np.all(arr(d["attention"]["pattern_delta"]["max_abs"]) == 0)
    assert [r["name"] for r in d["representation"]] == ["mlp.0", "resid_post.0"]
    for r in d["representation"]:
        assert r["cka"] == pytest.approx(1.0, abs=1e-6)
    assert "unchanged" in d["summary"][0]


# ---------------------------------------------------------------- numbers equal the probe API's
def test_report_numbers_equal_probe_api(transition_report, measured, tiny_run, steps):
    d = transition_report.to_dict()
    for side, m in zip("ab", measured):
        for probe, key in (("fourier.embed", "embed"), ("fourier.logit_map", "logit_map")):
            np.testing.assert_array_equal(arr(d["fourier"][key]["norms"][side]), arr(m[probe]["norms"]))
            assert d["fourier"][key]["gini"][side] == m[probe]["gini"]
        assert d["fourier"]["key_freqs"][side] == np.flatnonzero(m["fourier.key_freqs"]["is_key"]).tolist()
        np.testing.assert_array_equal(arr(d["fourier"]["logits"]["coef"][side]), arr(m["fourier.logits"]["coef"]))
        assert d["fourier"]["logits"]["fve_key"][side] == m["fourier.logits"]["fve_key"]
        nr = d["fourier"]["neurons"]
        np.testing.assert_array_equal(arr(nr["cluster_sizes"][side]), arr(m["fourier.neurons"]["cluster_sizes"]))
        for name in ("n_clustered", "n_dead"):
            assert nr[name][side] == m["fourier.neurons"][name]
        # the per-neuron dead / clustered flags agree with the probe's counts
        assert sum(nr["per_neuron"]["dead"][side]) == m["fourier.neurons"]["n_dead"]
        assert sum(nr["per_neuron"]["clustered"][side]) == m["fourier.neurons"]["n_clustered"]
        for r in d["behaviour"]["metrics"]:
            assert r[side] == m[r["probe"]][r["name"]], r["name"]
        heads = d["attention"]["heads"]
        np.testing.assert_array_equal(arr(heads["entropy"][side]), m["attention.sparsity"]["entropy"][..., -1])
        np.testing.assert_array_equal(arr(heads["eff_tokens"][side]), m["attention.sparsity"]["eff_tokens"][..., -1])
        np.testing.assert_array_equal(arr(heads["sink_share"][side]), m["attention.sinks"]["eq_share"])
        assert d["attention"]["sink_rate"][side] == m["attention.sinks"]["sink_rate"]
    # the behaviour numbers also match the training log at those steps
    log = tiny_run.metrics.set_index("step")
    for side, step in zip("ab", steps):
        acc = next(r[side] for r in d["behaviour"]["metrics"] if r["name"] == "test_acc")
        assert acc == pytest.approx(log.loc[step, "test_acc"], abs=1e-6)


def test_weight_numbers_equal_direct_computation(transition_report, tiny_run, steps):
    sd_a, sd_b = (tiny_run.state_dict_at(s) for s in steps)
    rows = {r["name"]: r for r in transition_report.data["weights"]}
    assert set(rows) == set(sd_a)
    for name in ("embed.W_E", "blocks.0.mlp.W_in", "blocks.0.attn.W_Q"):
        a, b = sd_a[name].double(), sd_b[name].double()
        assert rows[name]["delta"] == pytest.approx((b - a).norm().item(), rel=1e-12)
        assert rows[name]["rel_change"] == pytest.approx(((b - a).norm() / a.norm()).item(), rel=1e-12)
        assert rows[name]["cosine"] == pytest.approx(torch.nn.functional.cosine_similarity(
            a.flatten(), b.flatten(), dim=0).item(), rel=1e-12)
    spectra = {m["name"]: m for m in transition_report.data["spectra"]["matrices"]}
    assert spectra["blocks.0.attn.W_K[2]"]["b"] == pytest.approx(
        torch.linalg.svdvals(sd_b["blocks.0.attn.W_K"][2].double())[:8].tolist(), rel=1e-10)
    assert spectra["blocks.0.mlp.W_out"]["a"] == pytest.approx(
        torch.linalg.svdvals(sd_a["blocks.0.mlp.W_out"].double())[:8].tolist(), rel=1e-10)


# ---------------------------------------------------------------- the grokking transition
def test_transition_report_names_the_key_frequencies(transition_report, measured, steps):
    d = transition_report.to_dict()
    key_b = np.flatnonzero(measured[1]["fourier.key_freqs"]["is_key"]).tolist()
    key_a = np.flatnonzero(measured[0]["fourier.key_freqs"]["is_key"]).tolist()
    assert key_b, "the grokked tiny run has key frequencies"
    assert d["fourier"]["key_freqs"]["gained"] == sorted(set(key_b) - set(key_a))
    summary = " ".join(transition_report.summary)
    assert f"(key frequencies after: {fmt_set(key_b)})" in summary
    if d["fourier"]["key_freqs"]["gained"]:
        assert f"key frequencies {fmt_set(d['fourier']['key_freqs']['gained'])} formed" in summary
    md = to_markdown(transition_report)
    assert f"| key frequencies | {fmt_set(key_a)} | {fmt_set(key_b)} |" in md
    # the transition is where test loss collapses and neurons organise into clusters
    m = {r["name"]: r for r in d["behaviour"]["metrics"]}
    assert m["test_loss"]["b"] < 0.1 < m["test_loss"]["a"] and m["test_acc"]["b"] > 0.95
    assert summary.startswith(f"Test loss fell from {m['test_loss']['a']:.3g}")
    nr = d["fourier"]["neurons"]
    assert nr["n_clustered"]["b"] > nr["n_clustered"]["a"]
    assert len(nr["joined_cluster"]) - len(nr["left_cluster"]) == nr["n_clustered"]["b"] - nr["n_clustered"]["a"]
    assert f"{len(nr['joined_cluster'])} of 128 neurons joined a frequency cluster" in summary
    flips = d["behaviour"]["flips"]["counts"]
    assert flips["test"]["wrong_to_right"] > 10 * flips["test"]["right_to_wrong"]
    assert 0 < d["representation"][0]["cka"] < 0.99
    assert steps[0] < steps[1]


# ---------------------------------------------------------------- pure pieces
def test_linear_cka_invariances_and_gram_form():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=gen, dtype=torch.float64))
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-6)  # orthogonal, scale, shift
    y = torch.randn(200, 7, generator=gen, dtype=torch.float64) + x[:, :7]
    # the centred-Gram (HSIC) form: tr(K H L H) / sqrt(tr(K H K H) tr(L H L H))
    h = torch.eye(200, dtype=torch.float64) - 1 / 200
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: torch.trace(a @ h @ b @ h)
    expected = (hsic(k, l_) / (hsic(k, k) * hsic(l_, l_)).sqrt()).item()
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-5)
    assert linear_cka(x, torch.zeros(200, 4)) != linear_cka(x, torch.zeros(200, 4))  # NaN: constant side


def test_prediction_flips_codes_and_counts():
    task = Task("add", 5, 0.4, 0)
    right = torch.nn.functional.one_hot(task.labels, 5).float()
    wrong = torch.nn.functional.one_hot((task.labels + 1) % 5, 5).float()
    a, b = right.clone(), right.clone()
    a[[0, 1, 2]] = wrong[[0, 1, 2]]  # wrong before
    b[[2, 7]] = wrong[[2, 7]]  # wrong after
    out = prediction_flips(a, b, task, task)
    codes = np.array(out["map"]).reshape(-1)
    assert codes[[0, 1]].tolist() == [WRONG_TO_RIGHT] * 2 and codes[2] == BOTH_WRONG and codes[7] == RIGHT_TO_WRONG
    assert (codes == BOTH_RIGHT).sum() == 25 - 4 and INVALID not in codes
    c = out["counts"]
    assert c["all"] == {"wrong_to_right": 2, "right_to_wrong": 1, "both_right": 21, "both_wrong": 1}
    assert c["train"]["wrong_to_right"] + c["test"]["wrong_to_right"] == 2


# ---------------------------------------------------------------- round trip
def test_json_round_trip_renders_the_same_markdown_and_html(transition_report):
    text = json.dumps(transition_report.to_dict(), allow_nan=False)  # strict JSON: NaN stored as null
    back = DiffReport.from_dict(json.loads(text))
    assert to_markdown(back) == to_markdown(transition_report)
    assert to_html(back) == to_html(transition_report)
    assert back.to_dict() == transition_report.to_dict()
    with pytest.raises(Exception, match="schema"):
        DiffReport.from_dict({**transition_report.to_dict(), "schema": 99})


# ---------------------------------------------------------------- across runs
def test_cross_run_report_compares_only_basis_free_quantities(tiny_run, short_config, tmp_path):
    other = train(short_config.replace(d_mlp=64, seed=1), tmp_path / "other", progress=False)
    rep = compare((tiny_run, tiny_run.steps[-1]), (other, other.steps[-1]))
    d = rep.to_dict()
    assert not d["same_run"] and not d["aligned"] and d["same_inputs"] and d["same_task"]
    assert "not aligned across runs" in d["notes"][0] and "not aligned across runs" in to_markdown(rep)
    w = {r["name"]: r for r in d["weights"]}
    assert w["blocks.0.mlp.W_in"]["shape_b"] == [64, 64] and w["blocks.0.mlp.W_in"]["delta"] is None
    assert all(r["delta"] is None and r["cosine"] is None and r["norm_a"] > 0 for r in d["weights"])
    assert "per_neuron" not in d["fourier"]["neurons"] and "joined_cluster" not in d["fourier"]["neurons"]
    assert "pattern_delta" not in d["attention"]
    assert d["fourier"]["neurons"]["d_mlp"] == {"a": 128, "b": 64}
    assert all(0 <= r["cka"] <= 1 for r in d["representation"])
    assert "‖ΔW‖" not in to_markdown(rep)


def test_cross_task_report_omits_grid_comparisons(tiny_run, short_config, tmp_path):
    other = train(short_config.replace(p=43, n_steps=20), tmp_path / "p43", progress=False)
    rep = compare((tiny_run, 0), (other, other.steps[-1]))
    d = rep.to_dict()
    assert not d["same_inputs"] and not d["same_task"] and len(d["notes"]) == 2
    assert d["representation"] == [] and "flips" not in d["behaviour"]
    assert len(d["fourier"]["embed"]["norms"]["a"]) == 47 // 2 + 1 and len(d["fourier"]["embed"]["norms"]["b"]) == 22
    md = to_markdown(rep)
    assert "(add mod 47 vs add mod 43)" in md and "Representation similarity" not in md
    assert "Prediction flips" not in to_html(rep)


def test_attention_only_model_has_no_neuron_section(short_config, tmp_path):
    run = train(short_config.replace(attn_only=True, n_steps=20), tmp_path / "attn", progress=False)
    rep = compare((run, 0), (run, 20))
    d = rep.to_dict()
    assert d["fourier"]["neurons"]["d_mlp"] == {"a": 0, "b": 0} and "per_neuron" not in d["fourier"]["neurons"]
    assert [r["name"] for r in d["representation"]] == ["resid_post.0"]
    assert "No MLP neurons (attention-only models)." in rep.summary
    # no key frequencies and no W_L: the frequency table lists the 5 largest W_E norms
    norms = arr(d["fourier"]["embed"]["norms"]["b"])[1:]
    freq_rows = [int(line.split("|")[1]) for line in to_markdown(rep).splitlines() if re.match(r"\| \d+ \|", line)]
    assert freq_rows == sorted((np.argsort(-norms, kind="stable")[:5] + 1).tolist())


# ---------------------------------------------------------------- CLI
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["diff", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, message", [
    (["{run}", "--from", "7", "--to", "{last}"], "no checkpoint at step 7"),
    (["{run}", "--from", "x", "--to", "{last}"], "bad step 'x'"),
    (["{run}", "--from", "0"], "give both --from STEP and --to STEP"),
    (["{missing}", "--from", "0", "--to", "10"], "no run directory at"),
    (["{missing}@10", "{run}@0"], "no run directory at"),
    (["{run}@", "{run}@0"], "bad checkpoint"),
    (["{run}@zero", "{run}@0"], "bad step 'zero'"),
    (["{run}@0"], "give a second RUN@STEP"),
    (["{run}@0", "{run}@10", "--from", "0"], "drop --from/--to/--transition"),
    (["{run}", "--transition", "--from", "0"], "drop --from/--to"),
    (["{run}", "--from", "0", "--to", "{last}", "--top-k", "0"], "--top-k"),
    (["{run}", "--from", "0", "--to", "{last}", "--html", "{missing}/r.html"], "cannot write"),
])
def test_cli_errors_exit_2_with_one_line(capsys, tiny_run, tmp_path, args, message):
    subst = {"run": str(tiny_run.path), "last": str(tiny_run.steps[-1]), "missing": str(tmp_path / "nope")}
    code, out, err = run_cli(capsys, *(a.format(**subst) for a in args))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("grokscope: error: ") and message in err


def test_cli_transition_without_grokking_exits_2(capsys, short_config, tmp_path):
    run = train(short_config.replace(n_steps=20), tmp_path / "short", progress=False)
    code, out, err = run_cli(capsys, str(run.path), "--transition")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "no grokking transition detected (memorization_end=None" in err and "--from/--to" in err


def test_cli_writes_reports_and_prints_markdown(capsys, tiny_run, tmp_path, steps):
    a, b = steps
    files = {ext: tmp_path / f"r.{ext}" for ext in ("html", "md", "json")}
    code, out, err = run_cli(capsys, str(tiny_run.path), "--transition", "--html", str(files["html"]),
                             "--md", str(files["md"]), "--json", str(files["json"]))
    assert code == 0 and err == "" and out.count("wrote ") == 3
    rep = DiffReport.from_dict(json.loads(files["json"].read_text()))
    assert (rep.data["a"]["step"], rep.data["b"]["step"]) == (a, b)
    assert files["md"].read_text() == to_markdown(rep)
    assert files["html"].read_text().startswith("<!DOCTYPE html>")
    code, out, err = run_cli(capsys, f"{tiny_run.path}@{a}", f"{tiny_run.path}@last")
    assert code == 0 and out.startswith(f"# Checkpoint diff: tiny@{a} → tiny@{tiny_run.steps[-1]}")


def test_checkpoint_rejects_unsaved_steps(tiny_run):
    with pytest.raises(ConfigError, match=r"no checkpoint at step 7 \(nearest saved: 10"):
        Checkpoint(tiny_run, 7)


# ---------------------------------------------------------------- HTML in a browser
@pytest.mark.slow
@pytest.mark.browser
def test_html_report_renders_offline_in_headless_chromium(transition_report, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is required (apt-get install -y chromium)"
    page_file = Path(tmp_path / "report.html")
    page_file.write_text(to_html(transition_report))
    html = page_file.read_text()
    assert "<script src=" not in html and "<script>/**" in html  # the plotly.js bundle, inline
    n_figures = html.count('class="plotly-graph-div"')
    errors, requests = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto(page_file.as_uri())
            page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n_figures}",
                                   timeout=20_000)
            summary = page.inner_text("#summary")
            rendered = page.eval_on_selector_all(".js-plotly-plot", "els => els.length")
            headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        finally:
            browser.close()
    assert errors == [] and requests == []
    assert n_figures >= 8 and rendered == n_figures
    assert transition_report.summary[0] in summary and "key frequencies after" in summary
    assert headings == ["Behaviour", "Fourier", "Weights", "Attention", "Representation similarity", "Theories"]
