"""The figure library (apps.figures): every named view draws labelled, non-empty figures from a probed run;
export to CSV/HTML; animations carry one frame per probed step; key frequencies need evidence."""

from __future__ import annotations

import shutil

import numpy as np
import plotly.graph_objects as go
import pytest

import probes
from apps import figures
from interp import Run


@pytest.fixture(scope="module")
def probed(tiny_run_path, tmp_path_factory) -> Run:
    dst = tmp_path_factory.mktemp("fig") / "tiny"
    shutil.copytree(tiny_run_path, dst)
    run = Run.open(dst)
    probes.run(run, progress=False)
    return run


def _axis_titles(fig: go.Figure) -> list[str]:
    return [getattr(fig.layout[k].title, "text", None) for k in fig.layout if k.startswith(("xaxis", "yaxis"))]


@pytest.mark.parametrize("name", list(figures.VIEWS))
def test_every_view_draws_labelled_data(probed, name):
    step = probed.steps[len(probed.steps) // 2]
    fig = figures.view(probed, name, step)
    assert isinstance(fig, go.Figure) and fig.layout.title.text
    assert len(fig.data) >= 1
    titles = [t for t in _axis_titles(fig) if t]
    assert titles, f"{name}: no labelled axis"
    df = figures.to_frame(fig)
    assert len(df) > 0 and {"trace", "x", "y"} <= set(df.columns)


def test_catalogue_at_and_functions_agree(probed):
    step = probed.steps[-1]
    a = figures.at(probed, step).view("fourier_norms")
    b = figures.fourier_norms(probed, step)
    assert a.to_json() == b.to_json()
    with pytest.raises(KeyError, match="unknown view"):
        figures.view(probed, "nope")


def test_fourier_norms_overlays_before_and_after(probed):
    fig = figures.fourier_norms(probed, probed.steps[-1])
    names = {tr.name for tr in fig.data}
    before, after = figures.before_after(probed)
    assert any(str(before) in n for n in names) and any(str(after) in n for n in names)


def test_export_csv_html_and_images(probed, tmp_path):
    fig = figures.view(probed, "logit_coefficients")
    csv = figures.export(fig, tmp_path / "f.csv")
    assert csv.read_text().startswith("trace,x,y")
    html = figures.export(fig, tmp_path / "f.html").read_text()
    assert "<html>" in html and "<script src=\"http" not in html  # self-contained: plotly.js inline, offline
    if figures.can_export_images():
        assert figures.export(fig, tmp_path / "f.svg").stat().st_size > 0
    else:
        with pytest.raises(RuntimeError, match="kaleido"):
            figures.export(fig, tmp_path / "f.svg")


def test_animation_has_a_frame_per_probed_step(probed):
    fig = figures.view(probed, "animate_embed_norms")
    steps, _ = probes.load_arrays(probed, "fourier.embed")
    assert len(fig.frames) == len(steps)
    play = fig.layout.updatemenus[0].buttons[0].args[1]
    assert play["frame"]["duration"] <= 200  # >= 5 frames per second
    assert fig.layout.sliders[0].steps[-1].label == str(int(steps[-1]))


def test_attention_frequency_animation_matches_the_view(probed):
    """``fourier.attention`` (stored at probe time) is the per-head attention frequency view at every step."""
    fig = figures.view(probed, "animate_attention_freq")
    steps, _ = probes.load_arrays(probed, "fourier.attention")
    assert len(fig.frames) == len(steps)
    assert fig.layout.updatemenus[0].buttons[0].args[1]["frame"]["duration"] <= 200
    last = np.asarray(fig.frames[-1].data[0].z)
    view = np.asarray(figures.attention_freq(probed, int(steps[-1])).data[0].z)
    assert np.allclose(last, view, atol=1e-5)


def test_neuron_acts_probe_watches_fixed_neurons_with_their_activations(probed):
    """``fourier.neuron_acts``: per step, the hook_post activations at `=` over the grid of the neurons chosen at
    the final checkpoint (per final key frequency, the neuron with the highest FVE on it), the same at every step."""
    from probes import runner

    steps, arr = probes.load_arrays(probed, "fourier.neuron_acts")
    p, n = probed.task.p, len(steps)
    final = runner.final_checkpoint_params(probed, runner.merged_params(None))
    n_watch = len(final["key_freqs"])
    assert n_watch >= 1 and steps.tolist() == probed.steps
    assert arr["acts"].dtype == np.float16 and arr["acts"].shape == (n, n_watch, p, p)
    assert arr["neurons"].dtype == np.int64 and arr["neurons"].shape == arr["freqs"].shape == (n, n_watch)
    assert (arr["neurons"] == arr["neurons"][-1]).all() and (arr["freqs"] == arr["freqs"][-1]).all()
    assert arr["freqs"][-1].tolist() == final["key_freqs"]
    assert np.stack([arr["neurons"][-1], arr["freqs"][-1]], 1).tolist() == final["watch_neurons"]
    _, neurons = probes.load_arrays(probed, "fourier.neurons")
    fve = neurons["fve"][-1]  # [d_mlp, K+1] at the final step
    assert arr["neurons"][-1].tolist() == [int(fve[:, k].argmax()) for k in final["key_freqs"]]
    i = len(steps) // 2
    model = probed.model_at(int(steps[i]))
    _, cache = model.run_with_cache(probed.task.inputs)
    post = cache["blocks.0.mlp.hook_post"][:, -1].detach().numpy()  # [p², d_mlp] at `=`
    want = post[:, arr["neurons"][i]].T.reshape(n_watch, p, p)
    # float16 precision: one unit in the last place (the readout and run_with_cache round float32 differently)
    np.testing.assert_allclose(arr["acts"][i].astype(np.float32), want, rtol=2 ** -10, atol=2 ** -24)


def test_neuron_animation_has_a_frame_per_step_and_one_colour_scale(probed):
    fig = figures.view(probed, "animate_neuron")
    steps, arr = probes.load_arrays(probed, "fourier.neuron_acts")
    neurons, n_watch = arr["neurons"][-1].tolist(), arr["neurons"].shape[1]
    assert len(fig.frames) == len(steps) and len(fig.data) == n_watch
    assert fig.layout.updatemenus[0].buttons[0].args[1]["frame"]["duration"] <= 200  # >= 5 frames per second
    assert fig.layout.sliders[0].steps[-1].label == str(int(steps[-1]))
    assert [tr.visible for tr in fig.data] == [True] + [False] * (n_watch - 1)
    assert len(fig.layout.updatemenus[1].buttons) == n_watch  # the neuron dropdown
    assert f"neuron {neurons[0]}" in fig.layout.title.text and f"k = {arr['freqs'][-1][0]}" in fig.layout.title.text
    assert fig.layout.xaxis.title.text == "b (second operand)" and fig.layout.yaxis.title.text == "a (first operand)"
    assert fig.layout.yaxis.autorange == "reversed"
    for tr in fig.data:  # one fixed colour scale per neuron: the frames carry z only
        assert (tr.zmin, tr.zmax) == (0, 255) and tr.colorbar.title.text == "activation"
    assert all(set(d.to_plotly_json()) == {"type", "z"} for fr in fig.frames for d in fr.data)
    acts = arr["acts"][:, 0].astype(np.float64)  # the first neuron, every step
    lo, hi = min(0.0, acts.min()), acts.max()
    z = np.asarray(fig.frames[-1].data[0].z, dtype=np.float64)
    assert z.shape == acts.shape[1:]
    assert np.abs(lo + z * (hi - lo) / 255 - acts[-1]).max() <= (hi - lo) / 510 + 1e-6  # within half a level
    labels = [float(t) for t in fig.data[0].colorbar.ticktext]
    assert labels[0] == pytest.approx(lo, abs=1e-3 * (hi - lo)) and labels[-1] == pytest.approx(hi, rel=1e-3)
    one = figures.animate_neuron(probed, neurons[-1])
    assert len(one.data) == 1 and len(one.frames) == len(steps) and len(one.layout.updatemenus) == 1
    with pytest.raises(LookupError, match="not watched"):
        figures.animate_neuron(probed, max(neurons) + 1)


def test_key_frequencies_need_evidence(probed):
    _, arr = probes.load_arrays(probed, "fourier.key_freqs")
    assert arr["is_key"][0].sum() == 0  # initialisation: no key frequency
    assert arr["is_key"][-1].sum() >= 1  # grokked: some
    strength = figures.key_freq_strength(probed, probed.steps[-1])
    contour = [tr for tr in strength.data if tr.type == "contour"]
    assert contour and "floor" in contour[0].name
    assert np.isfinite(np.asarray(strength.data[0].z, dtype=float)).any()


@pytest.mark.slow
def test_example_notebook_runs(tmp_path, monkeypatch):
    """docs/example.ipynb, executed cell by cell in one namespace (nbclient is not a dependency)."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / "docs" / "example.ipynb").read_text())
    monkeypatch.setenv("GROKSCOPE_EXAMPLE_OUT", str(tmp_path / "tiny"))
    ns: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "example.ipynb", "exec"), ns)
    assert sorted(p.name for p in (tmp_path / "tiny").glob("fourier_norms.*"))[:2] == ["fourier_norms.csv",
                                                                                      "fourier_norms.html"]
