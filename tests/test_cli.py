import subprocess
import sys

import pytest

from apps.cli.main import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apps.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--preset", "nope"], "preset: unknown preset 'nope'"),
        (["train", "--set", "p=1"], "p: must be an integer >= 2"),
        (["train", "--set", "op=div", "p=12"], "p: must be prime for op 'div'"),
        (["train", "--set", "frac_train=1.5"], "frac_train: must be in (0, 1]"),
        (["train", "--set", "lr=fast"], "lr: expected float, got 'fast'"),
        (["train", "--set", "colour=red"], "colour: unknown config key"),
        (["train", "--set", "n_steps"], "expected key=value"),
        (["train", "--resume", "/nonexistent/run"], "no run directory at /nonexistent/run"),
        (["train", "--resume", "/nonexistent/run", "--set", "n_steps=many"], "n_steps: expected int, got 'many'"),
        (["train", "--resume", "/nonexistent/run", "--set", "lr=1"], "only n_steps may change when resuming"),
        (["train", "--resume", "/nonexistent/run", "--out", "x"], "drop --out"),
        (["train", "--set", "lr=inf"], "lr: invalid value inf"),
        (["train", "--set", "grokfast_lamb=nan"], "grokfast_lamb: invalid value nan"),
        (["train", "--set", "ckpt_dense_until=-5"], "ckpt_dense_until: invalid value -5"),
        (["train", "--preset", "tiny", "--out", "/proc/grokscope-test/run"], "/proc/grokscope-test"),
    ],
)
def test_bad_values_exit_2_with_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err


@pytest.mark.parametrize("args", [["train", "--bogus"], ["nope"], ["runs", "a", "b"], ["sweep", "plot"]])
def test_argparse_errors_are_one_line_too(args):
    proc = run_cli(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "error:" in proc.stderr and "--help" in proc.stderr, proc.stderr


def test_help_everywhere():
    for args in (["--help"], ["train", "--help"], ["runs", "--help"]):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "usage: grokscope" in proc.stdout


def test_train_runs_and_resume_from_the_shell(tmp_path):
    out = tmp_path / "r"
    proc = run_cli("train", "--preset", "tiny", "--set", "n_steps=40", "ckpt_every=20", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "40 steps" in proc.stdout
    proc = run_cli("train", "--resume", str(out), "--set", "n_steps=60", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "60 steps" in proc.stdout
    proc = run_cli("runs", str(tmp_path))
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["run", "status", "steps", "ckpts"]
    assert lines[1].split()[:3] == ["r", "complete", "60"]
    assert run_cli("train", "--preset", "tiny", "--out", str(out)).returncode == 2, "refuses to overwrite a run"


def test_runs_on_missing_root_points_to_train(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "none")]) == 2
    assert "grokscope train --preset demo" in capsys.readouterr().err


def test_runs_lists_the_readable_runs_and_names_the_damaged_ones(tmp_path, short_config, capsys):
    from interp import train

    for name in ("a", "b", "c"):
        train(short_config, tmp_path / name, progress=False)
    (tmp_path / "b" / "metrics.parquet").write_bytes(b"not parquet")
    (tmp_path / "b" / "metrics.prev.parquet").write_bytes(b"not parquet")  # both generations: no fallback
    (tmp_path / "c" / "manifest.json").write_text("{")
    assert main(["runs", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.strip().splitlines()[1:]] == ["a"]
    assert "skipping" in err and "b/metrics.parquet" in err and "c/manifest.json" in err
    (tmp_path / "a" / "manifest.json").write_text("[")
    assert main(["runs", str(tmp_path)]) == 0, "every run damaged: still a listing, no traceback"
    out, err = capsys.readouterr()
    assert "no readable runs" in out and err.count("skipping") == 3


def test_resume_refuses_to_shorten_a_run_and_leaves_it_untouched(tmp_path, short_config, capsys):
    from interp import Run, train

    run = train(short_config, tmp_path / "r", progress=False)
    before = (run.path / "run.json").read_text(), run.metrics
    assert main(["train", "--resume", str(run.path), "--set", "n_steps=30", "--quiet"]) == 2
    assert "n_steps: 30 is before step 60" in capsys.readouterr().err
    assert (run.path / "run.json").read_text() == before[0]
    assert Run.open(run.path).metrics.equals(before[1])


def test_resume_of_a_run_that_died_before_its_first_checkpoint_starts_it(tmp_path, short_config):
    from interp import Run
    from interp.train import create_run

    create_run(short_config, tmp_path / "r")  # run.json written, then the process died
    assert main(["train", "--resume", str(tmp_path / "r"), "--quiet"]) == 0
    assert Run.open(tmp_path / "r").steps[-1] == 60


def test_one_step_syntax():
    from interp.errors import ConfigError
    from probes.steps import parse_step, select_steps

    saved = [0, 10, 20, 50, 100]
    assert select_steps(None, saved) is None and select_steps([], saved) is None
    assert select_steps(["first", "last"], saved) == [0, 100]
    assert select_steps(["10..50"], saved) == select_steps(["10:50"], saved) == [10, 20, 50]
    assert select_steps(["..20", "100.."], saved) == [0, 10, 20, 100]
    assert select_steps("0,last,15", saved) == [0, 15, 100]
    assert select_steps(["first..last"], saved) == saved
    assert parse_step("last", saved) == 100 and parse_step(" 7 ", saved) == 7
    for bad in ("x", "-1", "50..10", "1..x"):
        with pytest.raises(ConfigError, match="step"):
            select_steps([bad], saved)
    with pytest.raises(ConfigError, match="bad step"):
        parse_step("10..20", saved)
