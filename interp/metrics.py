"""The metrics table of a run and the numbers read off it: one home for the grokking
threshold, the memorisation and grokking steps and the final values.

Definitions (Power et al. 2022, arXiv:2201.02177; Nanda et al. 2023, arXiv:2301.05217):
a run has *memorised* at the first step with train accuracy 100%, and has *grokked* at the
first step with test accuracy >= :data:`GROK_THRESHOLD` (99%). A column's *final value* is its
last logged (non-NaN) value; test metrics are NaN off the evaluation cadence.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

#: test accuracy at and above which a run counts as grokked
GROK_THRESHOLD = 0.99
#: columns of metrics.parquet, one row per training step
METRIC_COLUMNS = ["step", "train_loss", "train_acc", "test_loss", "test_acc", "lr",
                  "weight_norm", "grad_norm", "wall_time"]
#: the columns :func:`final_values` reports
FINAL_COLUMNS = ("train_loss", "train_acc", "test_loss", "test_acc", "wall_time")


def first_step(metrics: pd.DataFrame, column: str, threshold: float) -> int | None:
    """The first step whose ``column`` is >= ``threshold``, or None."""
    if column not in metrics or not len(metrics):
        return None
    hit = metrics.loc[metrics[column] >= threshold, "step"]
    return int(hit.iloc[0]) if len(hit) else None


def grok_steps(metrics: pd.DataFrame, threshold: float = GROK_THRESHOLD) -> dict[str, int | None]:
    """First step with train accuracy 100% (``memorized_step``), first step with test
    accuracy >= ``threshold`` (``grokked_step``), or None where it never happened."""
    return {"memorized_step": first_step(metrics, "train_acc", 1.0),
            "grokked_step": first_step(metrics, "test_acc", threshold)}


def final_value(metrics: pd.DataFrame, column: str) -> float:
    """The last non-NaN value of ``column``, or NaN when there is none."""
    vals = metrics[column].dropna() if column in metrics and len(metrics) else []
    return float(vals.iloc[-1]) if len(vals) else math.nan


def final_values(metrics: pd.DataFrame, columns: tuple[str, ...] = FINAL_COLUMNS) -> dict[str, Any]:
    """``last_step`` (the last logged step, 0 for an empty table) and the final value of each column."""
    out: dict[str, Any] = {"last_step": int(metrics["step"].iloc[-1]) if len(metrics) else 0}
    out.update({c: final_value(metrics, c) for c in columns})
    return out
