"""Issue 16: identical training gives identical files; every file a reader trusts is verified on
read, so a flipped bit is named (StoreError), never served as different data."""

from __future__ import annotations

import random
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import probes
from interp import Run, train
from interp.errors import StoreError
from interp.train import resume
from probes.runner import read_index

ARRAY_PROBE = "fourier.embed"


def test_identical_runs_have_identical_checkpoint_hashes(short_config, tmp_path):
    a = train(short_config, tmp_path / "a", progress=False)
    b = train(short_config, tmp_path / "b", progress=False)
    assert a.manifest == b.manifest  # same files, same SHA-256 at every step
    for step in a.steps:
        assert (a.path / a.manifest[step]["file"]).read_bytes() == (b.path / b.manifest[step]["file"]).read_bytes()


def test_resume_keeps_the_probe_cache_of_the_resaved_step(short_config, tmp_path):
    run = train(short_config.replace(n_steps=40), tmp_path / "r", progress=False)
    probes.run(run, names=["li2"], progress=False, key_freqs=[1, 2])
    before = run.manifest[40]["sha256"]
    resume(run.path, n_steps=60, progress=False)  # re-runs iteration 40 and saves it again
    run = Run.open(run.path)
    assert run.manifest[40]["sha256"] == before
    assert 40 not in probes.status(run, ["li2"], key_freqs=[1, 2])["probes"]["li2"]["missing"]


# ------------------------------------------------------------------ bit flips
@pytest.fixture(scope="module")
def probed_run(tmp_path_factory, tiny_run_path) -> Path:
    path = tmp_path_factory.mktemp("flip") / "run"
    shutil.copytree(tiny_run_path, path)
    run = Run.open(path)
    probes.run(run, names=["li2", ARRAY_PROBE], steps=run.steps[:3], progress=False)
    return path


READERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "run.json": ("run.json", lambda p: Run.open(p).meta),
    "manifest.json": ("manifest.json", lambda p: Run.open(p).manifest),
    "state.json": ("state/state.json", lambda p: Run.open(p).load_state()[1]),
    "metrics.parquet": ("metrics.parquet", lambda p: Run.open(p).metrics),
    "probe scalars": ("probes/scalars.parquet", lambda p: probes.load(p)),
    "probe arrays": (f"probes/{ARRAY_PROBE}.safetensors", lambda p: probes.load_arrays(p, ARRAY_PROBE)),
    "probe index": ("probes/index.json", lambda p: read_index(p / "probes")),
}


def same(a, b) -> bool:
    if isinstance(a, pd.DataFrame):
        return isinstance(b, pd.DataFrame) and a.equals(b) and list(a.dtypes) == list(b.dtypes)
    if isinstance(a, tuple):  # (steps, {name: array})
        return (np.array_equal(a[0], b[0]) and a[1].keys() == b[1].keys()
                and all(np.array_equal(a[1][k], b[1][k]) for k in a[1]))
    return a == b


def flip_outcomes(run_path: Path, kind: str, trials: int, seed: int = 0) -> dict[str, int]:
    """Flip one random bit of ``kind``'s file ``trials`` times (restoring it after each) and
    count what the reader did: 'detected' (StoreError), 'fallback' (a warning naming the file, then
    the previous generation), 'same' (identical data: the flip hit bytes the reader does not use)
    or 'silent' (different data) / 'traceback' (other exception)."""
    rel, read = READERS[kind]
    path = run_path / rel
    original, good = path.read_bytes(), read(run_path)
    rng = random.Random(seed)
    counts = {"detected": 0, "fallback": 0, "same": 0, "silent": 0, "traceback": 0}
    try:
        for _ in range(trials):
            data = bytearray(original)
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
            path.write_bytes(bytes(data))
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    got = read(run_path)
                if any(path.name in str(w.message) for w in caught):  # named, then fell back
                    counts["fallback"] += 1
                else:
                    counts["same" if same(good, got) else "silent"] += 1
            except StoreError:
                counts["detected"] += 1
            except Exception:
                counts["traceback"] += 1
    finally:
        path.write_bytes(original)
    return counts


@pytest.mark.parametrize("kind", list(READERS))
def test_bit_flip_is_detected_never_served(probed_run, kind):
    counts = flip_outcomes(probed_run, kind, trials=40)
    assert counts["silent"] == 0 and counts["traceback"] == 0, counts
    assert counts["detected"] + counts["fallback"] >= 1, counts
