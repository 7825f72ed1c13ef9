"""Issue 16: names are names, the app listens on localhost and stops with its parent, the Markdown
report escapes user strings, and an unknown ``?run=`` says so."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
from streamlit.testing.v1 import AppTest

from apps.cli.app import streamlit_command
from apps.cli.main import main
from apps.report import md_text, to_markdown
from interp import Run, preset, train
from interp.errors import ConfigError
from probes.diff import Checkpoint, compare

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "", "a\\b", "x\0y"])
def test_train_refuses_a_path_as_name(name, tmp_path):
    with pytest.raises(ConfigError, match="not a run name"):
        train(preset("tiny").replace(n_steps=1), root=tmp_path / "root", name=name, progress=False)
    assert not any(tmp_path.rglob("run.json"))


def test_cli_name_with_dots_exits_2_and_writes_nothing(tmp_path, capsys):
    code = main(["train", "--preset", "tiny", "--set", "n_steps=1", "--root", str(tmp_path / "r"),
                 "--name", "../../x", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "not a run name" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.parent.rglob("x/run.json"))


def test_every_documented_start_binds_localhost():
    assert "--server.address" in (cmd := streamlit_command([], "checkpoints", 8501))
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"  # `streamlit run apps/dashboard.py` from the repo root
    docs = (ROOT / "docs" / "dashboard.md").read_text()
    assert "--server.address 127.0.0.1" in docs


def test_sigterm_to_app_stops_its_server(tmp_path):
    """``grokscope app`` with a stand-in server (a sleeping child): SIGTERM to the parent ends both."""
    (tmp_path / "runs").mkdir()
    code = ("import sys, apps.cli.app as a\n"
            "a.streamlit_command = lambda *x, **k: [sys.executable, '-c', 'import time; time.sleep(120)']\n"
            "from apps.cli.main import main\n"
            f"sys.exit(main(['app', '--root', {str(tmp_path / 'runs')!r}]))\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE)
    children_file = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
    deadline, child = time.monotonic() + 30, None
    while time.monotonic() < deadline and not child:
        child = children_file.read_text().split() if children_file.exists() else None
        time.sleep(0.1)
    assert child, "the app never started its server"
    parent.send_signal(signal.SIGTERM)
    parent.wait(timeout=30)
    for _ in range(100):
        if not Path(f"/proc/{child[0]}").exists() or "Z" in _state(child[0]):
            break
        time.sleep(0.1)
    else:
        os.kill(int(child[0]), signal.SIGKILL)
        pytest.fail("the server outlived grokscope app")


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_markdown_report_escapes_user_strings():
    evil = "<img src=x onerror=alert(1)> [click](http://evil) *bold* | pipe\n# heading"
    out = md_text(evil)
    assert "<" not in out and "\n" not in out and "\\[click\\]" in out and "\\*bold\\*" in out and "\\|" in out


def test_markdown_diff_escapes_run_names(tiny_run_path, tmp_path):
    evil = tmp_path / "<img src=x>_[y]"
    shutil.copytree(tiny_run_path, evil)
    Run.open(evil).update_meta(name=evil.name)
    run = Run.open(evil)
    md = to_markdown(compare(Checkpoint(run, run.steps[0]), Checkpoint(run, run.steps[-1])))
    assert [line for line in md.splitlines() if "<img" in line] == []
    assert "&lt;img src=x&gt;\\_\\[y\\]@" in md.splitlines()[0]


def test_unknown_run_in_url_says_so(monkeypatch, tiny_run_path):
    monkeypatch.setenv("GROKSCOPE_RUNS", str(tiny_run_path))
    at = AppTest.from_file(str(ROOT / "apps" / "dashboard.py"), default_timeout=60)
    at.query_params.update({"run": "no-such-run"})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("No run named 'no-such-run'" in e.value for e in at.error)
    assert at.selectbox(key="run").value is None
