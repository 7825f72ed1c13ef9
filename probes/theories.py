"""Every theory's measure of progress on one time axis, and where each one places the transition
(issue 15).

Measures (those a run has; probe scalars come from the cache, :func:`probes.load`):

* ``test_loss`` (metrics) — the grokking curve itself (Power et al. 2022);
* ``restricted_loss`` / ``excluded_loss`` — Nanda et al. 2023 (arXiv:2301.05217), logit convention;
* ``li2_grad_norm_hidden`` — ‖G_F‖ of Tian 2025 (arXiv:2509.21519);
* ``softmax_collapse`` / ``nlm_cosine`` — Prieto et al. 2025 (arXiv:2501.04697), float32 collapse;
* ``llc`` — the local learning coefficient (developmental interpretability), if cached.

Normalisation. Each curve x(t) (log10 first for the losses and ‖G_F‖, :data:`LOG_MEASURES`) is
smoothed by a 5-point rolling median, scaled to [0, 1] by its minimum and maximum, and oriented
so that its last value is the nearer end to 1 (a curve that ends low is flipped): every measure
then reads as "progress", 0 → 1, on the run's step axis.

Change-point rule. A measure's transition is the first step after the LAST time its normalised
curve is below 0.5 — the step at which it crosses half-way between its extremes for good. The
table gives each transition, its distance from the median transition of all measures, and the
spread (latest − earliest). Curves that never cross (flat, or still below 0.5 at the end) get None.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from interp.store import Run

#: (curve name, probe, scalar name) read from the probe cache when present
PROBE_MEASURES = (
    ("restricted_loss", "progress.restricted", "logit.restricted_loss"),
    ("excluded_loss", "progress.restricted", "logit.excluded_loss"),
    ("li2_grad_norm_hidden", "li2", "grad_norm_hidden"),
    ("softmax_collapse", "stability.collapse", "collapse.float32"),
    ("nlm_cosine", "stability.collapse", "nlm_cosine"),
    ("llc", "llc", "llc_mean"),
)
#: measures normalised on a log10 scale (they span decades)
LOG_MEASURES = frozenset({"test_loss", "restricted_loss", "excluded_loss", "li2_grad_norm_hidden"})
SMOOTH = 5
HALF = 0.5


def normalise(curve: pd.Series, *, log: bool = False) -> pd.Series:
    """``curve`` (indexed by step; log10 first if ``log``) smoothed, scaled to [0, 1] and oriented
    to end near 1 (module docstring)."""
    s = curve.dropna().astype(float).sort_index()
    if log:
        s = np.log10(s[s > 0])
    s = s.rolling(SMOOTH, center=True, min_periods=1).median()
    lo, hi = s.min(), s.max()
    if not len(s) or not np.isfinite(hi - lo) or hi == lo:
        return s * np.nan
    n = (s - lo) / (hi - lo)
    return 1 - n if n.iloc[-1] < 0.5 else n


def transition(normalised: pd.Series, level: float = HALF) -> int | None:
    """The first step after the last step with the curve below ``level`` (None: never crosses)."""
    s = normalised.dropna()
    if not len(s) or s.iloc[-1] < level:
        return None
    below = np.flatnonzero(s.to_numpy() < level)
    if not len(below):
        return None
    return int(s.index[below[-1] + 1])


def theory_curves(run: Run, scalars: pd.DataFrame | None = None) -> dict[str, pd.Series]:
    """The run's measures by name, each a Series indexed by step (see the module docstring).
    ``scalars``: the probe cache in ``probes.load``'s long format (read from the run if None)."""
    out: dict[str, pd.Series] = {}
    m = run.metrics
    if len(m):
        tl = m.dropna(subset=["test_loss"])
        out["test_loss"] = pd.Series(tl["test_loss"].to_numpy(), index=tl["step"].to_numpy())
    if scalars is None:
        from probes.runner import load

        scalars = load(run)
    for name, probe_name, scalar in PROBE_MEASURES:
        sel = scalars[(scalars["probe"] == probe_name) & (scalars["name"] == scalar)] if len(scalars) else scalars
        if len(sel):
            out[name] = pd.Series(sel["value"].to_numpy(float), index=sel["step"].to_numpy()).sort_index()
    return out


def theories_table(curves: Mapping[str, pd.Series]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, normalised curves). The table has one row per measure: ``measure``, ``transition``
    (step or None), ``from_median`` (steps; + later), and the attrs ``spread`` (latest − earliest
    transition) and ``rule``. The curves frame is indexed by step, one column per measure."""
    norm = {k: normalise(v, log=k in LOG_MEASURES) for k, v in curves.items()}
    steps = {k: transition(v) for k, v in norm.items()}
    found = [s for s in steps.values() if s is not None]
    median = float(np.median(found)) if found else np.nan
    table = pd.DataFrame({"measure": list(steps), "transition": pd.array(list(steps.values()), dtype="Int64"),
                          "from_median": [s - median if s is not None else np.nan for s in steps.values()]})
    table.attrs["spread"] = (max(found) - min(found)) if found else None
    table.attrs["rule"] = ("first step after the last one with the normalised curve (smoothed, [0, 1], "
                           "oriented to end at 1) below 0.5")
    return table, pd.DataFrame(norm).sort_index()


def run_theories(run: Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`theories_table` of :func:`theory_curves`."""
    return theories_table(theory_curves(run))


def missing_measures(curves: Mapping[str, pd.Series]) -> list[dict[str, str]]:
    """The measures a run lacks, each with what would produce it: ``measure``, ``probe``, ``how``."""
    out = [] if "test_loss" in curves else [{"measure": "test_loss", "probe": "", "how": "train the run"}]
    for name, probe_name, _ in PROBE_MEASURES:
        if name not in curves:
            extra = "; needs pip install 'grokscope[llc]'" if probe_name == "llc" else ""
            how = f"grokscope probe RUN {probe_name}{extra}"
            out.append({"measure": name, "probe": probe_name, "how": how})
    return out


def theories_report(run: Run, marks: Mapping[str, int], scalars: pd.DataFrame | None = None) -> dict:
    """The Theories section of a diff report (:func:`probes.diff.compare`), plain data: the run,
    ``marks`` (label -> step, the compared checkpoints), the ``rule``, one ``table`` row per
    measure (transition, from_median), ``spread``, the ``missing`` measures
    (:func:`missing_measures`) and the normalised ``curves`` ({"step": [...], measure: [...]},
    NaN as None) on the run's step axis."""
    curves = theory_curves(run, scalars)
    table, norm = theories_table(curves)

    def num(x):
        return None if x is None or pd.isna(x) else x

    return {
        "run": str(run.path), "name": run.name, "marks": {k: int(v) for k, v in marks.items()},
        "rule": table.attrs["rule"],
        "spread": None if table.attrs["spread"] is None else int(table.attrs["spread"]),
        "table": [{"measure": r["measure"], "transition": None if pd.isna(r["transition"]) else int(r["transition"]),
                   "from_median": num(float(r["from_median"]))}
                  for r in table.to_dict("records")],
        "missing": missing_measures(curves),
        "curves": {"step": [int(s) for s in norm.index],
                   **{k: [num(float(v)) for v in norm[k]] for k in norm.columns}},
    }


def diff_section(run_a: Run, step_a: int, run_b: Run, step_b: int) -> list[dict]:
    """The diff report's Theories section (:func:`probes.diff.compare`): :func:`theories_report`
    of the compared run with both steps marked ("a", "b"), or of each run when they differ."""
    if run_a.path.resolve() == run_b.path.resolve():
        return [theories_report(run_a, {"a": step_a, "b": step_b})]
    return [theories_report(run_a, {"a": step_a}), theories_report(run_b, {"b": step_b})]
