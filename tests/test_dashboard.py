"""Dashboard tests through Streamlit's AppTest: every page on a small trained run with its probes
computed, checked against ``probes.load`` / ``probes.load_arrays`` / ``run.metrics``; the shared
step selector and URL; bad input (no runs, corrupt checkpoint, unknown step, old format); the CLI."""

from __future__ import annotations

import argparse
import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from apps import data, state
from apps.cli import app as app_cli
from interp import Run, train
from interp.atomic import atomic_write_json, read_json

DASHBOARD = Path(__file__).resolve().parents[1] / "apps" / "dashboard.py"
TIMEOUT = 180


# ------------------------------------------------------------------ fixtures and helpers
@pytest.fixture(scope="module")
def probed_run(tiny_run_path, tmp_path_factory) -> Run:
    """A copy of the tiny run with every default probe computed (once per module)."""
    dst = tmp_path_factory.mktemp("dash") / "tiny"
    shutil.copytree(tiny_run_path, dst)
    n = data.compute_probes(str(dst))
    assert n == len(Run.open(dst).steps)
    return Run.open(dst)


@pytest.fixture(autouse=True)
def _clear_caches(clear_streamlit_caches):
    """Streamlit's caches, emptied around every test of this module."""


def app(monkeypatch, *runs, root: Path | None = None, query: dict | None = None) -> AppTest:
    monkeypatch.setenv("GROKSCOPE_RUNS", ":".join(str(getattr(r, "path", r)) for r in runs))
    if root is not None:
        monkeypatch.setenv("GROKSCOPE_ROOT", str(root))
    at = AppTest.from_file(str(DASHBOARD), default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def goto(at: AppTest, page: str) -> AppTest:
    return ok(at.switch_page(f"page_{page}.py").run())


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly specs of the page by figure title."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        out[spec["layout"]["title"]["text"]] = spec
    return out


def chart(at: AppTest, prefix: str) -> dict:
    found = [spec for title, spec in charts(at).items() if title.startswith(prefix)]
    assert len(found) == 1, (prefix, list(charts(at)))
    return found[0]


def arr(v) -> np.ndarray:
    """A Plotly data array: a plain list or a typed array {dtype, bdata, shape}."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        if "shape" in v:
            a = a.reshape([int(x) for x in str(v["shape"]).split(",")])
        return a.astype(np.float64)
    return np.asarray(v, dtype=np.float64)


def trace(spec: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    found = [t for t in spec["data"] if t.get("name") == name]
    assert len(found) == 1, (name, [t.get("name") for t in spec["data"]])
    return arr(found[0]["x"]), arr(found[0]["y"])


def step_lines(spec: dict) -> list[float]:
    return [s["x0"] for s in spec["layout"].get("shapes", []) if s.get("name") == "selected step"]


def scalar(run: Run, probe: str, name: str):
    import probes.runner as api

    df = api.load(run)
    df = df[(df["probe"] == probe) & (df["name"] == name)].sort_values("step")
    return df["step"].to_numpy(), df["value"].to_numpy()


def arrays(run: Run, probe: str):
    import probes.runner as api

    return api.load_arrays(run, probe)


def frame(at: AppTest, column: str):
    """The first dataframe shown with ``column``."""
    tables = [*at.dataframe, *at.table]
    found = [d.value for d in tables if column in d.value.columns]
    assert found, [list(d.value.columns) for d in tables]
    return found[0]


def tab(at: AppTest, key: str, label: str) -> AppTest:
    """Open the lazy tab ``label`` of the tabs ``key`` (only the open tab's content runs)."""
    at.session_state[key] = label
    return ok(at.run())


def slider(at: AppTest):
    return at.select_slider(key="step")


# ------------------------------------------------------------------ overview
def test_overview_curves_match_metrics(monkeypatch, probed_run):
    at = ok(app(monkeypatch, probed_run))
    run, steps = probed_run, probed_run.steps
    assert [t.value for t in at.title] == ["Overview"]
    assert slider(at).options == [str(s) for s in steps]
    assert slider(at).value == steps[-1]
    assert at.toggle(key="playing").value is False
    assert at.query_params["step"] == str(steps[-1])
    m = run.metrics
    loss = chart(at, "Loss")
    assert loss["layout"]["yaxis"]["type"] == "log"
    x, y = trace(loss, "train loss")
    drawn = data.downsample_index(len(m), data.MAX_POINTS)  # curves are drawn at ≤ MAX_POINTS points
    np.testing.assert_array_equal(x, m["step"].to_numpy()[drawn])
    np.testing.assert_allclose(y, m["train_loss"].to_numpy()[drawn], rtol=1e-12)
    tested = m.dropna(subset=["test_loss"])
    assert len(tested) <= data.MAX_POINTS  # all of them drawn
    x, y = trace(loss, "test loss")
    np.testing.assert_array_equal(x, tested["step"].to_numpy())
    np.testing.assert_allclose(y, tested["test_loss"].to_numpy(), rtol=1e-12)
    x, y = trace(chart(at, "Accuracy"), "test accuracy")
    np.testing.assert_allclose(y, tested["test_acc"].to_numpy())
    for title in ("Loss", "Accuracy", "Total weight norm", "Gradient norm"):
        assert step_lines(chart(at, title)) == [steps[-1]]
    # the grokking step is marked and a phase is shaded
    shapes = loss["layout"]["shapes"]
    ph = data.phases(str(run.path), data.RunKey.of(run.path).metrics, data.RunKey.of(run.path).probes)
    assert ph.grok_step is not None
    assert [s["x0"] for s in shapes if s.get("name") == "grokking step"] == [ph.grok_step]
    assert any(s.get("type") == "rect" for s in shapes)
    # config table and the runs table
    cfg = frame(at, "field")
    assert dict(zip(cfg["field"], cfg["value"]))["p"] == "47"
    runs = frame(at, "memorized at")
    assert runs["checkpoints"].tolist() == [len(steps)]


def test_step_change_moves_every_line(monkeypatch, probed_run):
    at = ok(app(monkeypatch, probed_run))
    step = probed_run.steps[len(probed_run.steps) // 2]
    ok(slider(at).set_value(step).run())
    assert at.query_params["step"] == str(step)
    assert {t: step_lines(s) for t, s in charts(at).items()} == {t: [step] for t in charts(at)}
    assert f"step {step}" in at.caption[0].value


def test_url_step_snaps_to_nearest_saved(monkeypatch, probed_run):
    steps = probed_run.steps
    wanted = steps[5] + 1
    assert wanted not in steps
    nearest = min(steps, key=lambda s: (abs(s - wanted), s))
    at = ok(app(monkeypatch, probed_run, query={"step": str(wanted)}))
    assert slider(at).value == nearest
    assert at.query_params["step"] == str(nearest)
    assert any(f"step {wanted} is not a saved checkpoint" in i.value for i in at.sidebar.info)
    at = ok(app(monkeypatch, probed_run, query={"step": "abc"}))
    assert slider(at).value == steps[-1]


def test_url_step_is_kept_across_page_switches(monkeypatch, probed_run):
    step = probed_run.steps[20]
    at = ok(app(monkeypatch, probed_run, query={"step": str(step)}))
    for page in ("fourier", "progress", "attention", "compare", "overview"):
        goto(at, page)
        assert slider(at).value == step, page
        assert at.query_params["step"] == str(step), page
        lines = [step_lines(s) for t, s in charts(at).items() if "across runs" in t or "step" in
                 json.dumps(s["layout"].get("xaxis", {}).get("title", {}))]
        # the step is marked where it is drawn (the heavy pages mark it on their timeline strip only)
        assert all(x in ([], [step]) for x in lines) and [step] in lines, page


def test_prev_next_and_play(monkeypatch, probed_run):
    steps = probed_run.steps
    at = ok(app(monkeypatch, probed_run, query={"step": str(steps[-3])}))
    ok(at.button(key="prev_step").click().run())
    assert slider(at).value == steps[-4]
    ok(at.button(key="next_step").click().run())
    assert slider(at).value == steps[-3]
    ok(at.select_slider(key="play_delay").set_value(0.25).run())
    ok(at.toggle(key="playing").set_value(True).run())  # plays to the last checkpoint, then stops
    assert slider(at).value == steps[-1]
    assert at.toggle(key="playing").value is False
    assert at.query_params["step"] == str(steps[-1])


# ------------------------------------------------------------------ fourier
def test_fourier_page_shows_probe_values(monkeypatch, probed_run):
    run = probed_run
    step = run.steps[40]
    at = goto(app(monkeypatch, run, query={"step": str(step)}), "fourier")
    assert [t.value for t in at.title] == ["Fourier"]
    p_steps, emb = arrays(run, "fourier.embed")
    heat = chart(at, "W_E norm per frequency")["data"][0]
    z = arr(heat["customdata"]) if "customdata" in heat else arr(heat["z"])
    np.testing.assert_allclose(z, emb["norms"][:, 1:].T, rtol=1e-6)
    np.testing.assert_array_equal(arr(heat["x"]), p_steps)
    from probes.fourier import logit_shares

    _, lg = arrays(run, "fourier.logits")
    fve_all = scalar(run, "fourier.logits", "fve_all")[1]
    strength = chart(at, "Share of logit variance per frequency")
    shares = np.stack([logit_shares(c, f, run.task.p) for c, f in zip(lg["coef"], fve_all)])[:, 1:].T
    np.testing.assert_allclose(arr(strength["data"][0]["customdata"]), shares, rtol=1e-5, atol=1e-9)
    assert strength["data"][1]["type"] == "contour"  # the significance floor is drawn
    assert step_lines(strength) == []  # over training: the same figure at every step (the timeline marks it)
    assert step_lines(chart(at, "Timeline")) == [step]
    norms = chart(at, f"Weight norms per Fourier frequency at step {step}")
    np.testing.assert_allclose(arr(norms["data"][0]["y"]), emb["norms"][list(p_steps).index(step), 1:], rtol=1e-6)
    assert chart(at, "Embedding in the plane")["data"]
    gini = chart(at, "Sparsity in the Fourier basis")
    for label, probe in [("W_E", "fourier.embed"), ("W_L = W_out·W_U", "fourier.logit_map")]:
        s, v = scalar(run, probe, "gini")
        x, y = trace(gini, label)
        np.testing.assert_array_equal(x, s)
        np.testing.assert_allclose(y, v)
    cp = chart(at, "Clock vs Pizza")
    s, v = scalar(run, "fourier.clock_pizza", "gradient_symmetricity")
    np.testing.assert_allclose(trace(cp, "gradient symmetricity")[1], v)
    assert step_lines(cp) == []  # over training: unchanged across steps
    assert not any(t.startswith("Neurons per frequency cluster") for t in charts(at))  # other tabs: not drawn

    i = list(p_steps).index(step)
    tab(at, "fourier_tab", "Neurons")
    _, neu = arrays(run, "fourier.neurons")
    bars = chart(at, "Neurons per frequency cluster")["data"][0]
    np.testing.assert_allclose(arr(bars["y"]), neu["cluster_sizes"][i, 1:])
    hist = chart(at, "Fraction of variance explained")["data"][0]
    np.testing.assert_allclose(arr(hist["x"]), neu["dominant_fve"][i], rtol=1e-6)
    assert chart(at, "Neuron FVE by frequency")["data"]
    assert step_lines(chart(at, "Timeline")) == [step]  # the timeline stays above the tabs

    tab(at, "fourier_tab", "Logits")
    _, logits = arrays(run, "fourier.logits")
    np.testing.assert_allclose(arr(chart(at, "Logits ≈")["data"][0]["y"]), logits["coef"][i, 1:], rtol=1e-6)
    for prefix in ("Logit coefficient of each key", "Logit norms in the 2D Fourier basis"):
        assert chart(at, prefix)["data"], prefix


def test_fourier_neuron_spectrum_on_demand(monkeypatch, probed_run):
    from probes.fourier import neuron_spectrum

    run, step = probed_run, probed_run.steps[-1]
    at = tab(goto(app(monkeypatch, run), "fourier"), "fourier_tab", "One neuron")
    _, neu = arrays(run, "fourier.neurons")
    best = int(np.argmax(neu["dominant_fve"][-1]))
    assert at.number_input(key="fourier_neuron").value == best
    ok(at.number_input(key="fourier_neuron").set_value(7).run())
    model = run.model_at(step)
    with torch.no_grad():
        _, cache = model.run_with_cache(run.task.inputs)
    acts = cache["post", 0][:, -1, 7].reshape(47, 47)
    heat = chart(at, "Neuron 7: 2D Fourier spectrum")["data"][0]
    centred = acts.double() - acts.double().mean()
    np.testing.assert_allclose(arr(heat["customdata"]), neuron_spectrum(centred).numpy(), rtol=1e-3, atol=1e-4)
    # float32: the dashboard's table forward and run_with_cache sum in different orders (values up to ~4)
    np.testing.assert_allclose(arr(chart(at, "Neuron 7 activation")["data"][0]["z"]), acts.numpy(), rtol=1e-5,
                               atol=1e-5)


def test_fourier_watch_one_neuron(monkeypatch, probed_run):
    """"Watch it form" → one neuron: the chosen watched neuron's activation, one frame per probed step."""
    at = tab(goto(app(monkeypatch, probed_run), "fourier"), "fourier_tab", "Watch it form")
    assert not charts(at).keys() - {k for k in charts(at) if k.startswith("Timeline")}  # nothing until chosen
    at.session_state["fourier_animation"] = "one neuron"
    ok(at.run())
    steps, acts = arrays(probed_run, "fourier.neuron_acts")
    neurons = acts["neurons"][-1].tolist()
    assert at.selectbox(key="fourier_watch_neuron").options == [f"neuron {n} (frequency k = {k})" for n, k in
                                                                 zip(neurons, acts["freqs"][-1].tolist())]
    ok(at.selectbox(key="fourier_watch_neuron").set_value(neurons[-1]).run())
    spec = chart(at, f"Animated: neuron {neurons[-1]}'s activation")
    assert len(spec["frames"]) == len(steps) and len(spec["data"]) == 1  # one neuron on the wire


# ------------------------------------------------------------------ progress
def test_progress_page_shows_both_conventions(monkeypatch, probed_run):
    run = probed_run
    at = goto(app(monkeypatch, run), "progress")
    for conv in ("logit", "act"):
        spec = chart(at, f"Restricted / excluded loss — {'logit' if conv == 'logit' else 'activation'} convention")
        assert spec["layout"]["yaxis"]["type"] == "log"
        for label, name in [("restricted loss", f"{conv}.restricted_loss"), ("excluded loss", f"{conv}.excluded_loss")]:
            s, v = scalar(run, "progress.restricted", name)
            x, y = trace(spec, label)
            np.testing.assert_array_equal(x, s)
            np.testing.assert_allclose(y, v)
        s, v = scalar(run, "progress.loss", "test_loss")
        np.testing.assert_allclose(trace(spec, "test loss")[1], v)
    s, v = scalar(run, "progress.weights", "ssq_total")
    np.testing.assert_allclose(trace(chart(at, "Total sum of squared weights"), "Σθ²")[1], v)
    s, v = scalar(run, "progress.weights", "ssq.embed.W_E")
    np.testing.assert_allclose(trace(chart(at, "Sum of squared weights per parameter"), "embed.W_E")[1], v)
    assert any("memorization" in c.value for c in at.caption)  # the transition is named


# ------------------------------------------------------------------ attention
def test_attention_patterns_and_series(monkeypatch, probed_run):
    run = probed_run
    step = run.steps[30]
    at = goto(app(monkeypatch, run, query={"step": str(step)}), "attention")
    spec = chart(at, "Layer 0: attention from `=`")
    assert len(spec["data"]) in (4 * 2, 4 * 3)  # the `=` column only when some head attends there
    with torch.no_grad():
        _, cache = run.model_at(step).run_with_cache(run.task.inputs)
    pattern = cache["pattern", 0][:, :, -1, :]  # [p², H, 3]
    for tr in spec["data"]:
        h, key = tr["name"].removeprefix("head ").split(" → ")
        k = ["a", "b", "="].index(key)
        np.testing.assert_allclose(arr(tr["z"]), pattern[:, int(h), k].reshape(47, 47).numpy(), atol=1e-6)
    assert chart(at, "Attention to a: norm per frequency")["data"]
    tab(at, "attention_tab", "Sparsity and sinks over training")  # a lazy tab: drawn only when open
    p_steps, sp = arrays(run, "attention.sparsity")
    ent = chart(at, "Readout attention: entropy")
    for h in range(4):
        x, y = trace(ent, f"head {h}")
        np.testing.assert_array_equal(x, p_steps)
        np.testing.assert_allclose(y, sp["entropy"][:, 0, h, 2], rtol=1e-6)
    ok(at.selectbox(key="attn_measure").set_value("eff_tokens").run())
    np.testing.assert_allclose(trace(chart(at, "Readout attention: effective tokens"), "head 1")[1],
                               sp["eff_tokens"][:, 0, 1, 2], rtol=1e-6)
    _, v = scalar(run, "attention.sinks", "sink_rate")
    names = [t.get("name") for t in chart(at, "Sink rate")["data"]]
    if np.unique(v).size > 1:
        np.testing.assert_allclose(trace(chart(at, "Sink rate"), "sink rate")[1], v)
    else:  # constant (100% on 3-token inputs): not drawn
        assert "sink rate" not in names
    _, v = scalar(run, "attention.sinks", "sink_rate_choice")
    np.testing.assert_allclose(trace(chart(at, "Sink rate"), "sink rate, query 0 left out")[1], v)
    _, sinks = arrays(run, "attention.sinks")
    np.testing.assert_allclose(trace(chart(at, "Value drain"), "key =")[1],
                               sinks["value_drain"][:, 0, :, 2].mean(1), rtol=1e-6)
    np.testing.assert_allclose(trace(chart(at, "Share of readout attention"), "head 0")[1],
                               sinks["eq_share"][:, 0, 0], rtol=1e-6)
    assert step_lines(chart(at, "Sink rate")) == []  # time series leave the step out: unchanged across steps
    assert step_lines(chart(at, "Timeline")) == [step]  # the timeline strip carries it


# ------------------------------------------------------------------ diff
def test_diff_defaults_to_the_transition(monkeypatch, probed_run):
    from apps.page_diff import default_pair

    run = probed_run
    at = goto(app(monkeypatch, run), "diff")
    a, b = at.select_slider(key="diff_range").value
    key = data.RunKey.of(run.path)
    ph = data.phases(str(run.path), key.metrics, key.probes)
    ctx = state.Ctx(root="", runs=[str(run.path)], key=key, steps=run.steps, step=run.steps[-1])
    assert (a, b) == default_pair(ctx, ph)
    assert a < b and a in run.steps and b in run.steps
    start = ph.memorization_end if ph.memorization_end is not None else ph.circuit_start
    assert a == min(run.steps, key=lambda s: (abs(s - start), s))
    frames = at.get("iframe")
    assert len(frames) == 1
    html = frames[0].proto.srcdoc
    assert f"@{a}" in html and f"@{b}" in html and "embed.W_E" in html
    ok(slider(at).set_value(run.steps[3]).run())  # the shared step moves; the pair stays
    assert at.select_slider(key="diff_range").value == (a, b)
    ok(at.select_slider(key="diff_range").set_value((run.steps[1], run.steps[-1])).run())
    assert f"@{run.steps[1]}" in at.get("iframe")[0].proto.srcdoc
    pair = chart(at, "Loss, with checkpoints A and B")  # the curve marks A, B and the selected step
    assert step_lines(pair) == [run.steps[3]]
    assert {f"A {run.steps[1]}", f"B {run.steps[-1]}"} <= {x["text"] for x in pair["layout"]["annotations"]}
    ok(at.button(key="diff_set_b").click().run())  # the selected step becomes B (the pair stays ordered)
    assert at.select_slider(key="diff_range").value == (run.steps[1], run.steps[3])
    ok(slider(at).set_value(run.steps[0]).run())
    ok(at.button(key="diff_set_a").click().run())
    assert at.select_slider(key="diff_range").value == (run.steps[0], run.steps[3])
    assert not at.warning, [w.value for w in at.warning]


# ------------------------------------------------------------------ compare
def test_compare_overlays_runs(monkeypatch, probed_run, tiny_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(probed_run.path, other)
    meta = read_json(other / "run.json")
    atomic_write_json(other / "run.json", {**meta, "name": "other"})
    m = Run.open(other).metrics
    m["train_loss"] = m["train_loss"] * 2
    Run.open(other).write_metrics(m)
    at = goto(app(monkeypatch, probed_run, other), "compare")
    assert at.multiselect(key="compare_runs").value == [str(probed_run.path), str(other)]
    assert at.multiselect(key="compare_series").value == ["metric:test_acc"]  # the default
    ok(at.multiselect(key="compare_series").set_value(["metric:train_loss"]).run())
    spec = chart(at, "train loss (nats) across runs")
    assert any(sh.get("name") == "grok tiny" for sh in spec["layout"]["shapes"])
    x0, y0 = trace(spec, "tiny")
    x1, y1 = trace(spec, "other")
    np.testing.assert_array_equal(x0, x1)
    np.testing.assert_allclose(y1, 2 * y0)
    m0 = probed_run.metrics
    np.testing.assert_allclose(y0, m0["train_loss"].to_numpy()[data.downsample_index(len(m0), data.MAX_POINTS)])
    ok(at.multiselect(key="compare_series").set_value(["probe:fourier.embed/gini"]).run())
    _, v = scalar(probed_run, "fourier.embed", "gini")
    np.testing.assert_allclose(trace(chart(at, "W_E Fourier sparsity (Gini)"), "tiny")[1], v)
    ok(at.multiselect(key="compare_series").set_value(["metric:test_acc", "metric:train_acc"]).run())
    ok(at.toggle(key="compare_align").set_value(True).run())
    spec = chart(at, "test accuracy / train accuracy across runs")
    g = data.phases(str(probed_run.path), data.RunKey.of(probed_run.path).metrics,
                    data.RunKey.of(probed_run.path).probes).grok_step
    x, _ = trace(spec, "tiny · test accuracy")
    assert g is not None and x.min() < 0 <= x.max() and len(spec["data"]) == 4


# ------------------------------------------------------------------ missing probes, live runs
def test_missing_probes_offer_to_compute(monkeypatch, short_config, tmp_path):
    run = train(short_config, tmp_path / "short", progress=False)
    at = goto(app(monkeypatch, run), "fourier")
    assert any("does not have yet" in i.value for i in at.info)
    assert not at.get("plotly_chart")
    ok(at.button(key="compute_fourier.embed_fourier.neurons").click().run())
    import probes.runner as api

    assert api.status(run)["complete"]
    assert chart(at, "W_E norm per frequency")
    assert not at.info or all("does not have yet" not in i.value for i in at.info)


def test_new_checkpoints_appear_on_rerun(monkeypatch, tiny_run_copy):
    run, steps = tiny_run_copy, tiny_run_copy.steps
    manifest = read_json(run.path / "manifest.json")
    last = str(steps[-1])
    atomic_write_json(run.path / "manifest.json", {k: v for k, v in manifest.items() if k != last})
    at = ok(app(monkeypatch, run))
    assert slider(at).options[-1] == str(steps[-2])
    assert slider(at).value == steps[-2]
    atomic_write_json(run.path / "manifest.json", manifest)  # training wrote one more checkpoint
    ok(at.run())
    assert slider(at).options[-1] == last


# ------------------------------------------------------------------ bad input
def test_no_runs_explains_how_to_make_one(monkeypatch, tmp_path):
    at = ok(app(monkeypatch, root=tmp_path / "missing"))
    assert any("grokscope train --preset demo" in e.value for e in at.error)
    empty = tmp_path / "empty"
    empty.mkdir()
    at = ok(app(monkeypatch, root=empty))
    assert any("grokscope train --preset demo" in e.value and "No runs" in e.value for e in at.error)
    assert not at.get("plotly_chart")


def test_corrupt_checkpoint_is_named_and_skipped(monkeypatch, tiny_run_copy):
    run = tiny_run_copy
    bad = run.steps[10]
    path = run.path / run.manifest[bad]["file"]
    path.write_bytes(b"\0" * path.stat().st_size)
    at = goto(app(monkeypatch, run, query={"step": str(bad)}), "attention")
    assert any(str(path) in w.value for w in at.sidebar.warning)
    assert slider(at).value != bad
    assert str(bad) not in slider(at).options
    assert chart(at, "Layer 0: attention from `=`")


def test_old_format_run_reports_store_error(monkeypatch, tiny_run_copy, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_run_copy.path, old)
    meta = read_json(old / "run.json")
    atomic_write_json(old / "run.json", {**meta, "format_version": 0})
    at = ok(app(monkeypatch, old))
    assert any("format version 0 is not supported" in w.value for w in at.sidebar.warning)
    assert any("No runs" in e.value for e in at.error)
    at = ok(app(monkeypatch, tiny_run_copy, old))  # the readable run still shows
    assert any("format version 0" in w.value for w in at.sidebar.warning)
    assert chart(at, "Loss")


def test_root_listing_with_several_runs(monkeypatch, tiny_run_copy, tmp_path):
    root = tmp_path / "root"
    for name in ("a", "b"):
        shutil.copytree(tiny_run_copy.path, root / name)
    monkeypatch.delenv("GROKSCOPE_RUNS", raising=False)
    monkeypatch.setenv("GROKSCOPE_ROOT", str(root))
    at = ok(AppTest.from_file(str(DASHBOARD), default_timeout=TIMEOUT).run())
    assert at.selectbox(key="run").options == ["a", "b"]
    ok(at.selectbox(key="run").set_value(str(root / "b")).run())
    assert at.query_params["run"] == "b"
    assert frame(at, "memorized at")["run"].tolist() == ["a", "b"]


# ------------------------------------------------------------------ inputs and CLI
def test_parse_args_and_env(monkeypatch):
    monkeypatch.setenv("GROKSCOPE_RUNS", "x:y")
    monkeypatch.setenv("GROKSCOPE_ROOT", "r")
    assert state.parse_args() == (("x", "y"), "r")  # not run as dashboard.py: the environment
    assert state.parse_args([]) == (("x", "y"), "r")
    assert state.parse_args(["a", "b", "--root", "sweeps"]) == (("a", "b"), "sweeps")


def test_cli_runs_streamlit_on_localhost(monkeypatch, tiny_run):
    parser = argparse.ArgumentParser()
    app_cli.register(parser.add_subparsers())
    args = parser.parse_args(["app", str(tiny_run.path), "--port", "8600"])
    seen = {}
    monkeypatch.setattr(app_cli, "serve", lambda cmd, env: seen.update(cmd=cmd, env=env) or 0)
    assert args.func(args) == 0
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "apps.serve", "run"] and cmd[4].endswith("apps/dashboard.py")
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    after = cmd[cmd.index("--") + 1:]
    assert state.parse_args(after) == ((str(tiny_run.path),), "checkpoints")


def test_cli_missing_run_is_a_usage_error(tmp_path):
    from apps.cli.common import UsageError

    parser = argparse.ArgumentParser()
    app_cli.register(parser.add_subparsers())
    args = parser.parse_args(["app", str(tmp_path / "nope")])
    with pytest.raises(UsageError, match="grokscope train --preset demo"):
        args.func(args)


def test_downsampling_keeps_ends_and_bounds_points():
    idx = data.downsample_index(40_001, 2000)
    assert idx[0] == 0 and idx[-1] == 40_000 and len(idx) <= 2002
    assert np.all(np.diff(idx) > 0)
    assert (idx < 100).sum() > 20  # dense early, where training moves fastest
    np.testing.assert_array_equal(data.downsample_index(50, 2000), np.arange(50))


def test_new_checkpoint_without_probe_results_is_offered(monkeypatch, probed_run, tmp_path):
    """A run still training: a checkpoint newer than the probe cache is counted and can be computed."""
    live = tmp_path / "live"
    shutil.copytree(probed_run.path, live)
    run = Run.open(live)
    last = run.steps[-1]
    run.save_checkpoint(last + 25, run.state_dict_at(last), {"train_loss": 0.0})
    at = goto(app(monkeypatch, run), "fourier")
    assert slider(at).value == last + 25
    labels = [e.label for e in at.expander]
    assert "Probe results are missing for 1 checkpoint(s)" in labels
    ok(at.button(key="compute_stale").click().run())
    import probes.runner as api

    assert api.status(run)["complete"]
    assert "Probe results are missing for 1 checkpoint(s)" not in [e.label for e in at.expander]
    _, emb = arrays(run, "fourier.embed")
    heat = chart(at, "W_E norm per frequency")["data"][0]
    assert arr(heat["x"])[-1] == last + 25
    z = arr(heat["customdata"]) if "customdata" in heat else arr(heat["z"])
    np.testing.assert_allclose(z, emb["norms"][:, 1:].T, rtol=1e-6)


def test_run_without_checkpoints_yet(monkeypatch, tiny_run_copy):
    atomic_write_json(tiny_run_copy.path / "manifest.json", {})  # training has just started
    at = ok(app(monkeypatch, tiny_run_copy))
    assert any("has no readable checkpoints yet" in w.value for w in at.warning)
    assert not at.get("plotly_chart")
    assert not at.select_slider  # no step selector without steps


def test_phase_buttons_jump_to_the_grok_step(monkeypatch, probed_run):
    from probes import phases as phases_api

    run = probed_run
    at = app(monkeypatch, run)
    grok = phases_api.detect(run).grok_step
    buttons = [b for b in at.button if b.key == "goto_grokked"]
    assert grok is not None and buttons
    ok(buttons[0].click().run())
    assert at.session_state["step"] == min(run.steps, key=lambda s: (abs(s - grok), s))


def test_sweep_member_outside_the_listed_runs_opens(monkeypatch, probed_run, tiny_run):
    """A run directory under the root that the command line did not list (a sweep member) still opens by
    ?run=PATH; one outside the root does not (a URL never leaves the runs root)."""
    at = app(monkeypatch, tiny_run, root=probed_run.path.parent, query={"run": str(probed_run.path)})
    assert at.session_state["run"] == str(probed_run.path)
    outside = app(monkeypatch, tiny_run, root=Path(tiny_run.path).parent / "elsewhere",
                  query={"run": str(probed_run.path)})
    assert outside.session_state["run"] != str(probed_run.path)
