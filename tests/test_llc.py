"""The LLC probe's trace check and calibration (issue 15; docs/llc.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import probes.llc as llc
from interp import preset, train


def _trace(curve: np.ndarray, chains: int = 2) -> np.ndarray:
    return np.tile(curve, (chains, 1))


def test_trace_check_on_known_traces():
    t = np.arange(200)
    settled = 1.0 + 0.5 * (1 - np.exp(-t / 10))  # rises by 0.5 from L(w*) = 1 and flattens
    out = llc.trace_check(_trace(settled), 1.0, math.log(47))
    assert out["converged"] and out["local"] and out["rise"] == pytest.approx(0.5, abs=1e-3)
    climbing = 1.0 + 0.01 * t  # still rising at the end: monotone drift
    assert not llc.trace_check(_trace(climbing), 1.0)["converged"]
    escaped = 1.0 + 3.0 * (1 - np.exp(-t / 10))  # settles 3 nats up, near a uniform guess (ln 47 = 3.85)
    out = llc.trace_check(_trace(escaped), 1.0, math.log(47))
    assert out["converged"] and not out["local"]
    bad = settled.copy()
    bad[50] = np.nan
    assert llc.trace_check(_trace(bad), 1.0) == {"finite": False, "rise": pytest.approx(math.nan, nan_ok=True),
                                                "drift": pytest.approx(math.nan, nan_ok=True), "converged": False,
                                                "local": False}


@pytest.mark.skipif(not llc.available(), reason="devinterp is not installed (optional extra grokscope[llc])")
def test_calibration_rows_and_defaults(tmp_path):
    from probes.llc_calibration import calibrate, calibration_steps, markdown

    cfg = preset("tiny").replace(p=23, n_steps=60, ckpt_dense_until=20, ckpt_log_count=5, ckpt_every=20)
    run = train(cfg, tmp_path / "run", progress=False)
    steps = calibration_steps(run)
    assert steps["init"] == 0 and steps["end"] == 60 and steps["init"] <= steps["mid"] <= steps["end"]
    df = calibrate(run, [1e-4], [1000.0], draws=6, chains=1)
    assert list(df["checkpoint"]) == ["init", "mid", "end"]
    assert df["nbeta"].iloc[0] == pytest.approx(256 / math.log(256))  # devinterp's default: batch / ln batch
    assert {"llc_mean", "llc_std", "rise", "drift", "converged", "local", "seconds"} <= set(df.columns)
    assert markdown(df).count("\n") == 4
    assert llc.LLC_DEFAULTS["llc_lr"] == 3e-4 and llc.LLC_DEFAULTS["llc_localization"] == 1000.0
