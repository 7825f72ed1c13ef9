"""Shared fixtures. ``tiny_run`` trains the ``tiny`` preset once per test session
(a few seconds) into a temporary directory; tests that modify a run copy it first."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from interp import Run, preset, train


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and never oversubscribes


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest runs app scripts as ``__main__`` and leaves them there; spawn-based
    process pools (sweeps) would then re-run the app in every worker. Put the real one back."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def tiny_run_path(tmp_path_factory) -> Path:
    """A grokked ``tiny`` run (read-only: copy it before changing it)."""
    path = tmp_path_factory.mktemp("runs") / "tiny"
    train(preset("tiny"), path, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_run_path) -> Run:
    return Run.open(tiny_run_path)


@pytest.fixture
def tiny_run_copy(tiny_run_path, tmp_path) -> Run:
    """A private copy of the tiny run that the test may modify."""
    dst = tmp_path / "tiny_copy"
    shutil.copytree(tiny_run_path, dst)
    return Run.open(dst)


@pytest.fixture
def short_config():
    """A few-hundred-step tiny config for tests that only need a valid run."""
    return preset("tiny").replace(n_steps=60, ckpt_dense_until=20, ckpt_log_count=5, ckpt_every=20)


@pytest.fixture
def clear_streamlit_caches():
    """Empty Streamlit's data and resource caches before and after a test (AppTest shares them)."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()
