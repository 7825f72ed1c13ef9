"""Issue 16: one damaged file does not end a run. The previous generation of the training state
and of the metrics is kept; a damaged newest one falls back (with a warning) and the replay is
exact; temporary files of a crash are cleaned by the next writer; a damaged run is skipped with one
warning by ``grokscope runs``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apps.cli.main import main
from interp import Run, train
from interp.generations import PREV_METRICS, PREV_STATE
from interp.train import resume


@pytest.fixture
def pair(short_config, tmp_path):
    """A run stopped at step 40 (to be damaged and resumed to 60) and an undamaged copy resumed to 60."""
    part = train(short_config.replace(n_steps=40), tmp_path / "part", progress=False)
    shutil.copytree(part.path, tmp_path / "whole")
    whole = resume(tmp_path / "whole", n_steps=60, progress=False)
    return part, whole


def assert_same(a: Run, b: Run) -> None:
    a, b = Run.open(a.path), Run.open(b.path)
    # identical weights at every checkpoint (a replay from an earlier state may add checkpoints
    # of the new schedule that the undamaged resume skipped: those are extra, not different)
    assert {s: a.manifest[s] for s in b.manifest} == b.manifest
    ma, mb = a.metrics, b.metrics
    cols = ["step", "train_loss", "train_acc", "weight_norm", "grad_norm"]
    assert ma[cols].equals(mb[cols])
    both = ma["test_loss"].notna() & mb["test_loss"].notna()  # evaluated rows follow each run's schedule
    assert both.sum() > 5 and ma["test_loss"][both].equals(mb["test_loss"][both])


def flip(path, at: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["state file", "state.json", "truncated state file"])
def test_damaged_state_falls_back_to_the_previous_generation(pair, damage):
    part, whole = pair
    state = part.path / "state"
    info = part.load_state()[1]
    assert (state / PREV_STATE).exists()
    if damage == "state.json":
        flip(state / "state.json", at=30)
    elif damage == "state file":
        flip(state / info["file"])
    else:
        (state / info["file"]).write_bytes((state / info["file"]).read_bytes()[:100])
    with pytest.warns(UserWarning, match="falling back to the previous training state"):
        prev_step = Run.open(part.path).state_step
    assert prev_step < info["step"]
    with pytest.warns(UserWarning, match="falling back"):
        resume(part.path, n_steps=60, progress=False)
    assert_same(part, whole)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete rows"])
def test_damaged_metrics_fall_back_and_resume_exactly(pair, damage):
    part, whole = pair
    path = part.path / "metrics.parquet"
    assert (part.path / PREV_METRICS).exists()
    if damage == "flip":
        flip(path, at=len(path.read_bytes()) // 3)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    else:  # a valid parquet file whose rows no longer match its checksum
        df = pd.read_parquet(path)
        table = pa.Table.from_pandas(df.iloc[:5], preserve_index=False)
        pq.write_table(table.replace_schema_metadata(pq.read_schema(path).metadata), path)
    with pytest.warns(UserWarning, match="previous generation"):
        m = Run.open(part.path).metrics
    assert len(m) > 0
    with pytest.warns(UserWarning):
        resume(part.path, n_steps=60, progress=False)
    assert_same(part, whole)


def test_temp_files_of_a_crash_are_cleaned_by_the_next_writer(pair):
    part, whole = pair
    debris = [part.path / ".run.json.abc.tmp", part.path / "weights" / ".step_00000050.safetensors.x.tmp",
              part.path / "state" / ".state.json.y.tmp"]
    for d in debris:
        d.write_bytes(b"partial")
    Run.open(part.path)  # a reader leaves them (a live writer may own them)
    assert all(d.exists() for d in debris)
    resume(part.path, n_steps=60, progress=False)
    assert not any(d.exists() for d in debris)
    assert_same(part, whole)


@pytest.mark.parametrize("damage", ["non-utf8", "json array", "flipped lr", "truncated manifest"])
def test_runs_listing_skips_a_damaged_run_with_one_warning(tiny_run_path, tmp_path, capsys, damage):
    root = tmp_path / "root"
    for name in ("good", "bad"):
        shutil.copytree(tiny_run_path, root / name)
    bad = root / "bad"
    if damage == "non-utf8":
        (bad / "run.json").write_bytes(b"\xff" + (bad / "run.json").read_bytes())
    elif damage == "json array":
        (bad / "run.json").write_text("[1, 2]")
    elif damage == "flipped lr":
        text = (bad / "run.json").read_text()
        (bad / "run.json").write_text(text.replace('"lr": 0.003', '"lr": 0.002'))
    else:
        (bad / "manifest.json").write_bytes((bad / "manifest.json").read_bytes()[:50])
    assert main(["runs", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "good" in out and "bad" not in out.replace(str(root), "")
    assert len([line for line in err.splitlines() if "bad" in line]) == 1


def test_dashboard_overview_skips_a_damaged_run(tiny_run_path, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "root"
    for name in ("bad", "good"):
        shutil.copytree(tiny_run_path, root / name)
    (root / "bad" / "manifest.json").write_bytes((root / "bad" / "manifest.json").read_bytes()[:50])
    monkeypatch.delenv("GROKSCOPE_RUNS", raising=False)
    monkeypatch.setenv("GROKSCOPE_ROOT", str(root))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "apps" / "dashboard.py"), default_timeout=90)
    at.query_params.update({"run": "good"})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [w.value for w in at.warning if "bad" in w.value and "skipping" in w.value]
