"""Issue 16, one writer per run: training and probing take an advisory lock; a second writer
exits 2 naming the holder's PID; readers never lock."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from apps.cli.main import main
from interp import Run, train
from interp.errors import StoreError
from interp.hooks import Hook
from interp.locking import write_lock
from interp.train import resume

ROOT = Path(__file__).resolve().parents[1]


class _Holder:
    """A second process that holds ``directory``'s lock until stopped."""

    def __init__(self, directory: Path):
        code = ("import sys; from interp.locking import write_lock\n"
                f"with write_lock({str(directory)!r}):\n    print('held', flush=True); sys.stdin.read()\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_second_thread_is_refused_while_first_holds(tmp_path):
    held, release, errors = threading.Event(), threading.Event(), []

    def first():
        with write_lock(tmp_path):
            held.set()
            release.wait(10)

    t = threading.Thread(target=first)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(StoreError, match=r"process \d+"):
            with write_lock(tmp_path):
                errors.append("second writer got in")
    finally:
        release.set()
        t.join()
    assert not errors
    with write_lock(tmp_path):  # released: the next writer gets it
        pass


def test_wait_gets_the_lock_once_released(tmp_path):
    held = threading.Event()

    def first():
        with write_lock(tmp_path):
            held.set()
            threading.Event().wait(0.3)

    t = threading.Thread(target=first)
    t.start()
    held.wait(10)
    with write_lock(tmp_path, wait=10):
        pass
    t.join()


def test_two_resumes_one_run(tiny_run_copy, short_config, tmp_path):
    """Thread A resumes and pauses inside training; thread B's resume is refused; A finishes."""
    run = train(short_config.replace(n_steps=40), tmp_path / "r", progress=False)
    inside, go = threading.Event(), threading.Event()

    class Pause(Hook):
        def on_train_start(self, trainer):
            inside.set()
            go.wait(30)

    results = {}
    t = threading.Thread(target=lambda: results.setdefault("a", resume(run.path, n_steps=60, hooks=[Pause()],
                                                                        progress=False)))
    t.start()
    assert inside.wait(30)
    with pytest.raises(StoreError, match="already writing"):
        resume(run.path, n_steps=50, progress=False)
    assert Run.open(run.path).steps  # a reader is never blocked
    go.set()
    t.join()
    done = Run.open(run.path)
    assert done.status == "complete" and done.state_step == 60 and max(done.steps) == 60


def test_cli_train_resume_exits_2_naming_the_pid(tiny_run_copy, capsys):
    holder = _Holder(tiny_run_copy.path)
    try:
        code = main(["train", "--resume", str(tiny_run_copy.path), "--set", "n_steps=5000", "--quiet"])
    finally:
        holder.stop()
    err = capsys.readouterr().err
    assert code == 2 and f"process {holder.proc.pid}" in err and len(err.strip().splitlines()) == 1


def test_cli_probe_exits_2_naming_the_pid(tiny_run_copy, capsys):
    holder = _Holder(tiny_run_copy.path / "probes")
    try:
        code = main(["probe", str(tiny_run_copy.path), "--probes", "li2", "--quiet"])
    finally:
        holder.stop()
    err = capsys.readouterr().err
    assert code == 2 and f"process {holder.proc.pid}" in err and "probing" in err
