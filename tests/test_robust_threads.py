"""Issue 16: the thread count is recorded in run.json; ``grokscope train --resume`` resumes with
it (bit-identical continuation), and a Python resume with another count says so."""

from __future__ import annotations

import pytest
import torch

from apps.cli.main import main
from interp import Run, train
from interp.train import resume


def test_thread_count_is_recorded_and_used_on_resume(short_config, tmp_path):
    run = train(short_config.replace(n_steps=40), tmp_path / "r", progress=False)
    assert run.meta["threads"] == torch.get_num_threads() == 1  # tests run with one thread
    try:
        torch.set_num_threads(2)
        assert main(["train", "--resume", str(run.path), "--set", "n_steps=50", "--quiet"]) == 0
        assert torch.get_num_threads() == 1  # the entry point set the recorded count
        torch.set_num_threads(2)
        with pytest.warns(UserWarning, match="trained with 1 torch threads"):
            resume(run.path, n_steps=60, progress=False)
    finally:
        torch.set_num_threads(1)
    assert Run.open(run.path).state_step == 60
