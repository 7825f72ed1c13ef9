"""Issue 16: a tiny run killed in the middle of each atomic write of the store (fault injection
through ``GROKSCOPE_CRASH_AT_WRITE``) resumes to exactly the run that never crashed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from interp import Run, train
from interp.atomic import CRASH_ENV
from interp.train import resume

ROOT = Path(__file__).resolve().parents[1]
CODE = ("import torch; torch.set_num_threads(1)\n"
        "from interp import preset, train\n"
        "cfg = preset('tiny').replace(n_steps=20, ckpt_dense_until=10, ckpt_log_count=0, ckpt_every=10)\n"
        "train(cfg, {out!r}, progress=False)\n")


def crash_at(n: int, out: Path) -> int:
    env = {**os.environ, CRASH_ENV: str(n), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", CODE.format(out=str(out))], cwd=ROOT, env=env,
                          capture_output=True, timeout=300).returncode


@pytest.mark.slow
def test_crash_at_every_write_point_resumes_exactly(tmp_path):
    from interp import preset

    cfg = preset("tiny").replace(n_steps=20, ckpt_dense_until=10, ckpt_log_count=0, ckpt_every=10)
    clean = train(cfg, tmp_path / "clean", progress=False)
    n, points = 1, 0
    while True:
        out = tmp_path / f"crash{n}"
        code = crash_at(n, out)
        if code == 0:  # fewer writes than n: every write point has been crashed at
            break
        assert code == 137
        if (out / "run.json").exists():
            run = resume(out, progress=False)
        else:  # died before the run existed: training it again is the way on
            run = train(cfg, out, progress=False)
        run = Run.open(run.path)
        assert run.manifest == clean.manifest, f"crash at write {n}"
        assert run.metrics.drop(columns="wall_time").equals(clean.metrics.drop(columns="wall_time")), n
        assert not list(out.rglob(".*.tmp")), n
        n, points = n + 1, points + 1
    assert points >= 15
