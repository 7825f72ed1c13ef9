"""probes.phases.detect: on synthetic curves with known breakpoints, and on the grokked tiny run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from probes.phases import Phases, detect

# Synthetic run: train acc reaches 100% at 1000; log10 test loss rises to a peak plateau (1.0) at
# 1000, stays until 4000, falls linearly to −3 at 6000, then stays; weight norm peaks at 2000;
# test acc crosses 99% at 5000. Expected with fall = 10% of the 4-decade drop (0.4 decades,
# i.e. 200 steps of the linear fall): circuit_end 4200, cleanup_end 5800.
STEPS = np.arange(0, 8001, 10)


def synthetic_metrics(noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    s = STEPS.astype(float)
    log_test = np.interp(s, [0, 1000, 4000, 6000, 8000], [0.6, 1.0, 1.0, -3.0, -3.0])
    log_test = log_test + noise * rng.standard_normal(len(s))
    return pd.DataFrame({
        "step": STEPS,
        "train_loss": np.interp(s, [0, 1000, 8000], [4.0, 0.01, 1e-5]),
        "train_acc": np.clip(s / 1000, 0, 1),
        "test_loss": 10**log_test,
        "test_acc": np.interp(s, [0, 4000, 5000, 6000], [0.01, 0.05, 0.99, 1.0]),
        "weight_norm": np.interp(s, [0, 2000, 8000], [20.0, 30.0, 15.0]),
    })


def probe_scalars(excluded_min: int | None = 2500, restricted_max: int | None = 3000) -> pd.DataFrame:
    """Long-format probe scalars at sparser 'checkpoint' steps, as probes.load returns them."""
    steps = np.arange(0, 8001, 50)
    rows = []
    if excluded_min is not None:
        log_excl = np.interp(steps, [0, excluded_min, 4500, 8000], [0.5, -1.0, 1.5, 1.5])
        rows += [(s, "progress.restricted", "logit.excluded_loss", 10**v) for s, v in zip(steps, log_excl)]
    if restricted_max is not None:
        log_restr = np.interp(steps, [0, restricted_max, 6000, 8000], [0.5, 0.8, -3.0, -3.0])
        rows += [(s, "progress.restricted", "logit.restricted_loss", 10**v) for s, v in zip(steps, log_restr)]
    rows += [(s, "progress.loss", "train_acc", 1.0) for s in steps]  # unrelated scalars are ignored
    return pd.DataFrame(rows, columns=["step", "probe", "name", "value"])


def test_known_breakpoints_from_metrics():
    ph = detect(synthetic_metrics())
    assert isinstance(ph, Phases) and ph.signal == "metrics:weight_norm" and not ph.snapped
    assert ph.memorization_end == 1000
    assert ph.circuit_start == 2000
    assert ph.circuit_end == 4200
    assert ph.cleanup_end == 5800
    assert ph.grok_step == 5000
    assert ph.landmarks["test_loss_fall_decades"] == pytest.approx(4.0)


def test_known_breakpoints_with_noise():
    """Noise of 0.05 decades on the test loss moves the boundaries by at most a few logged steps."""
    ph = detect(synthetic_metrics(noise=0.05, seed=1))
    assert ph.memorization_end == 1000 and ph.grok_step == 5000
    assert abs(ph.circuit_end - 4200) <= 60
    assert abs(ph.cleanup_end - 5800) <= 60


def test_probe_signals_take_precedence():
    metrics = synthetic_metrics()
    ph = detect(metrics, probe_scalars())
    assert ph.signal == "probes:logit.excluded_loss" and ph.circuit_start == 2500
    assert "excluded loss" in ph.rule
    ph = detect((metrics, probe_scalars(excluded_min=None)))  # tuple form; restricted loss only
    assert ph.signal == "probes:logit.restricted_loss" and ph.circuit_start == 3000
    # the other boundaries come from the metrics in every case
    assert (ph.memorization_end, ph.circuit_end, ph.cleanup_end, ph.grok_step) == (1000, 4200, 5800, 5000)


def test_circuit_start_is_clamped_to_the_formation_window():
    """A turning point before memorization ends cannot start circuit formation."""
    ph = detect(synthetic_metrics(), probe_scalars(excluded_min=500, restricted_max=None))
    assert ph.circuit_start == 1000  # the excluded loss only rises after memorization_end


def test_no_grokking_no_cleanup():
    metrics = synthetic_metrics()
    metrics["test_loss"] = 10 ** np.interp(metrics["step"], [0, 1000, 8000], [0.6, 1.0, 0.8])
    metrics["test_acc"] = 0.05
    ph = detect(metrics)
    assert ph.circuit_end is None and ph.cleanup_end is None and ph.grok_step is None
    assert ph.memorization_end == 1000 and ph.circuit_start == 2000


def test_to_dict_and_bad_input():
    d = detect(synthetic_metrics()).to_dict()
    assert {"memorization_end", "circuit_start", "circuit_end", "cleanup_end", "grok_step", "signal", "rule",
            "snapped", "landmarks"} <= set(d)
    with pytest.raises(TypeError, match="expected a Run"):
        detect([1, 2, 3])
    with pytest.raises(ValueError, match="no test_loss"):
        detect(synthetic_metrics().drop(columns="test_loss"))


def test_tiny_run_phases(tiny_run):
    ph = detect(tiny_run)
    assert ph.snapped
    steps = [ph.memorization_end, ph.circuit_start, ph.circuit_end, ph.cleanup_end]
    assert None not in steps and ph.grok_step is not None
    assert steps == sorted(steps)
    assert ph.circuit_end <= ph.grok_step <= ph.cleanup_end
    assert set([*steps, ph.grok_step]) <= set(tiny_run.steps)  # snapped to saved checkpoints
    raw = detect(tiny_run.metrics)  # metrics only, unsnapped
    assert raw.signal == "metrics:weight_norm"
    assert raw.memorization_end == tiny_run.summary()["memorized_step"]
    assert raw.grok_step == tiny_run.summary()["grokked_step"]
    for name, step in raw.to_dict().items():
        if name in ph.landmarks["unsnapped"] and ph.signal == raw.signal:
            assert ph.landmarks["unsnapped"][name] == step
            assert getattr(ph, name) == tiny_run.nearest_step(step)
