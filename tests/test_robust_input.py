"""Issue 16: hostile or odd input gets one line on stderr and exit code 2, never a traceback or a
huge allocation. Each case runs the real command line in a subprocess (a traceback would show)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from apps.cli.main import main
from interp import Run
from interp.atomic import atomic_write_json, read_json

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_run_path) -> Path:
    """A directory with a copy of the tiny run, foreign checkpoint files and hostile runs."""
    w = tmp_path_factory.mktemp("bad")
    shutil.copytree(tiny_run_path, w / "run")
    torch.save({"embed.W_E": torch.zeros(48, 64)}, w / "tl.pt")  # a TL-style dict, not Nanda's layout
    for name, change in {"nullconfig": {"config": None}, "nullsplit": {"split": None},
                         "bigp": "p", "strp": "p-str", "array": "array"}.items():
        dst = w / name
        shutil.copytree(tiny_run_path, dst)
        meta = read_json(dst / "run.json")
        if change == "p":  # an attacker who also recomputes the checksum
            meta["config"]["p"] = 100_000
        elif change == "p-str":
            meta["config"]["frac_train"] = "lots"
        elif change == "array":
            atomic_write_json(dst / "run.json", [1, 2])
            continue
        else:
            meta.update(change)
        atomic_write_json(dst / "run.json", meta)
    return w


CASES = {
    "seed=2**70": ["train", "--preset", "tiny", "--set", f"seed={2**70}", "--out", "{w}/x"],
    "negative seed": ["train", "--preset", "tiny", "--set", "seed=-1", "--out", "{w}/x"],
    "grokfast_window=1e9 (ma)": ["train", "--preset", "tiny", "--set", "grokfast=ma", "grokfast_window=1e9",
                                 "--out", "{w}/x"],
    "p=100000": ["train", "--preset", "tiny", "--set", "p=100000", "--out", "{w}/x"],
    "d_mlp=1e9": ["train", "--preset", "tiny", "--set", "d_mlp=1e9", "--out", "{w}/x"],
    "name ../../x": ["train", "--preset", "tiny", "--root", "{w}/root", "--name", "../../x"],
    "diff --threads -1": ["diff", "{w}/run", "--from", "first", "--to", "last", "--threads", "-1"],
    "sweep seed=0..1e9": ["sweep", "--preset", "tiny", "--grid", "seed=0..1e9", "--out", "{w}/sw"],
    "sweep 1e3 x 1e3": ["sweep", "--preset", "tiny", "--grid", "seed=0..999", "data_seed=0..999", "--out", "{w}/sw"],
    "app --port 99999": ["app", "{w}/run", "--port", "99999"],
    "app --port 0": ["app", "{w}/run", "--port", "0"],
    "import wrong --format": ["import", "{w}/tl.pt", "--format", "nanda2023", "--out", "{w}/imp"],
    "probe --key-freqs -3": ["probe", "{w}/run", "--probes", "progress.restricted", "--key-freqs", "-3"],
    "probe --key-freqs 0": ["probe", "{w}/run", "--probes", "progress.restricted", "--key-freqs", "0"],
    "probe --key-freqs 1000": ["probe", "{w}/run", "--probes", "progress.restricted", "--key-freqs", "1000"],
    "resume null config": ["train", "--resume", "{w}/nullconfig", "--set", "n_steps=2000"],
    "resume null split": ["train", "--resume", "{w}/nullsplit", "--set", "n_steps=2000"],
    "resume hostile p=100000": ["train", "--resume", "{w}/bigp", "--set", "n_steps=2000"],
    "resume frac_train='lots'": ["train", "--resume", "{w}/strp", "--set", "n_steps=2000"],
    "resume run.json array": ["train", "--resume", "{w}/array", "--set", "n_steps=2000"],
    "probe null config": ["probe", "{w}/nullconfig"],
    "diff hostile p": ["diff", "{w}/bigp", "--from", "first", "--to", "last"],
}


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of the command line run in this process: anything but an expected
    error propagates (and fails the test) as the traceback a user would have seen."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own one-line errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(work, case, capsys):
    code, err = cli([a.replace("{w}", str(work)) for a in CASES[case]], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    assert not (work / "x").exists() and not (work.parent / "x").exists()


def test_key_freqs_refusal_leaves_cached_measures(work, capsys):
    """The cached progress measures are untouched by a refused --key-freqs."""
    probes_dir = work / "run" / "probes"
    before = sorted(p.name for p in probes_dir.iterdir()) if probes_dir.exists() else []
    assert cli(["probe", str(work / "run"), "--key-freqs", "0"], capsys)[0] == 2
    after = sorted(p.name for p in probes_dir.iterdir()) if probes_dir.exists() else []
    assert [n for n in after if n != ".lock"] == [n for n in before if n != ".lock"]
    assert Run.open(work / "run").steps


def test_one_subprocess_shows_no_traceback(work):
    """The same path through a real process (the module entry point), for one case."""
    proc = subprocess.run([sys.executable, "-m", "apps.cli", "train", "--resume", str(work / "bigp")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
