"""The Theories table on a run with known synthetic curves (issue 15)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interp import Run, preset
from interp.train import create_run
from probes.theories import normalise, theories_table, theory_curves, transition

STEPS = np.arange(0, 2001, 10)


def _sigmoid(centre: float, width: float = 40.0) -> np.ndarray:
    return 1 / (1 + np.exp(-(STEPS - centre) / width))


@pytest.fixture
def synthetic_run(tmp_path) -> tuple[Run, pd.DataFrame]:
    """test loss: rises to a peak at 200 then falls 6 decades around 1200; restricted loss falls
    around 800; softmax collapse rises around 1500; a flat LLC."""
    run = create_run(preset("tiny").replace(n_steps=2000), tmp_path / "syn")
    test_loss = 10 ** (1 + 0.5 * _sigmoid(100) - 7 * _sigmoid(1200))
    m = pd.DataFrame({"step": STEPS, "train_loss": 1e-3, "train_acc": 1.0, "test_loss": test_loss, "test_acc": 0.5,
                      "lr": 1e-3, "weight_norm": 1.0, "grad_norm": 1.0, "wall_time": 0.0})
    run.write_metrics(m)
    rows = [(s, "progress.restricted", "logit.restricted_loss", 10 ** (-4 * v)) for s, v in zip(STEPS, _sigmoid(800))]
    rows += [(s, "stability.collapse", "collapse.float32", v) for s, v in zip(STEPS, _sigmoid(1500))]
    rows += [(s, "llc", "llc_mean", 3.0) for s in STEPS]
    return run, pd.DataFrame(rows, columns=["step", "probe", "name", "value"])


def test_normalise_orients_every_curve_to_end_at_one():
    down = pd.Series(10 ** (-5 * _sigmoid(500)), index=STEPS)
    n = normalise(down, log=True)
    assert n.iloc[0] == pytest.approx(0) and n.iloc[-1] == pytest.approx(1)
    assert transition(n) == pytest.approx(500, abs=10)
    assert transition(normalise(pd.Series(1.0, index=STEPS))) is None


def test_theories_table_places_each_known_transition(synthetic_run):
    run, scalars = synthetic_run
    curves = theory_curves(run, scalars)
    assert set(curves) == {"test_loss", "restricted_loss", "softmax_collapse", "llc"}
    table, norm = theories_table(curves)
    got = dict(zip(table["measure"], table["transition"]))
    assert got["test_loss"] == pytest.approx(1200, abs=60)  # the fall, not the early peak
    assert got["restricted_loss"] == pytest.approx(800, abs=20)
    assert got["softmax_collapse"] == pytest.approx(1500, abs=20)
    assert got["llc"] is pd.NA
    assert table.attrs["spread"] == pytest.approx(700, abs=60)
    assert table.set_index("measure").loc["test_loss", "from_median"] == pytest.approx(0, abs=60)
    assert norm.min().min() >= 0 and norm.max().max() <= 1


def test_theories_and_compare_pages_show_a_fork_family(monkeypatch, tiny_run_path, tmp_path):
    """The Theories page draws the table; Compare preselects a run's forks and marks the fork step."""
    import shutil

    import interp
    from tests.test_dashboard import app, goto

    parent = tmp_path / "tiny"
    shutil.copytree(tiny_run_path, parent)
    child = interp.fork(parent, 1500, set=["n_steps=1520"], name="kid")
    at = goto(app(monkeypatch, parent, child.path), "theories")
    assert at.dataframe and "test_loss" in at.dataframe[0].value["measure"].tolist()
    at = goto(at, "compare")
    assert at.multiselect(key="compare_runs").value == [str(parent), str(child.path)]
