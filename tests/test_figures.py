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
