"""The three phases of grokking, located on a run's measured curves, in the paper's terms.

Nanda et al. 2023 ("Progress measures for grokking via mechanistic interpretability", ICLR 2023,
arXiv:2301.05217, §5.2) split training on modular addition into three contiguous phases:

* **memorization** — train loss falls while test loss rises; the excluded loss falls with the train
  loss (the network memorises). It ends where the excluded loss stops falling and starts to rise:
  the Fourier circuit starts to form. (That is not the first step with 100% train accuracy,
  which comes much earlier on the paper's runs; that step is kept as its own landmark,
  ``full_train_acc_step``.)
* **circuit formation** — train and test loss stay roughly flat, the sum of squared weights falls,
  excluded loss rises and restricted loss falls: the circuit forms while the memorised solution
  still dominates the test loss;
* **clean-up** — weight decay removes the memorisation components: test loss falls sharply (the
  grokking step lies here); it ends when test loss plateaus at its minimum.

:func:`detect` turns that description into a rule (its docstring and ``docs/probes.md``), using the
run's metrics and, when cached, the progress-measure probe scalars. A boundary whose turn lies on
the edge of the data (the first or last measured step, or the edge of its search window) is not
returned as found: its field is None and :attr:`Phases.edges` says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from interp.errors import StoreError
from interp.metrics import GROK_THRESHOLD, grok_steps
from interp.store import Run

#: probe scalars used when present: (probe, name) in the long format of ``probes.load``
EXCLUDED = ("progress.restricted", "logit.excluded_loss")
RESTRICTED = ("progress.restricted", "logit.restricted_loss")


#: the step fields of :class:`Phases`: the phase boundaries in phase order, then the landmarks
PHASE_FIELDS = ("memorization_end", "circuit_start", "circuit_end", "cleanup_end", "grok_step",
                "full_train_acc_step")
#: ``Phases.signal`` of :meth:`Phases.from_metrics` (accuracy landmarks only)
ACCURACY_SIGNAL = "metrics:accuracy"


@dataclass(frozen=True)
class Phases:
    """Phase boundaries in the paper's terms (training steps, or None where the curves do not show
    them).

    memorization [0, memorization_end] → circuit formation [circuit_start, circuit_end] → clean-up
    [circuit_end, cleanup_end]. The phases are contiguous, as in the paper, so ``circuit_start ==
    memorization_end`` whenever both are known. Landmarks, not boundaries: ``grok_step``, the first
    step with test accuracy ≥ 99%, and ``full_train_acc_step``, the first with train accuracy 100%.
    ``signal`` names what placed memorization_end ("probes:logit.excluded_loss",
    "probes:logit.restricted_loss" or "metrics:weight_norm"; :data:`ACCURACY_SIGNAL` when only the
    accuracy landmarks are known), ``rule`` says it in words, ``snapped`` is True when the steps
    were moved to the nearest saved checkpoint, and ``edges`` maps each boundary that was *not*
    found because its turn sits on the edge of the data to the reason (its field is then None)."""

    memorization_end: int | None = None
    circuit_start: int | None = None
    circuit_end: int | None = None
    cleanup_end: int | None = None
    grok_step: int | None = None
    signal: str = ""
    rule: str = ""
    snapped: bool = False
    landmarks: dict[str, Any] = field(default_factory=dict)  # unsnapped steps and the levels used
    full_train_acc_step: int | None = None  # issue 12: first 100% train accuracy, a landmark
    edges: dict[str, str] = field(default_factory=dict)  # issue 12: boundary -> why it is not found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def detected(self) -> bool:
        """Whether :func:`detect` placed the phases (rather than :meth:`from_metrics`)."""
        return self.signal != ACCURACY_SIGNAL

    def spans(self) -> list[tuple[str, int, int]]:
        """(label, start, end) of each phase whose bounds are known."""
        b = [("memorization", 0, self.memorization_end), ("circuit formation", self.circuit_start, self.circuit_end),
             ("clean-up", self.circuit_end, self.cleanup_end)]
        return [(name, int(lo), int(hi)) for name, lo, hi in b if lo is not None and hi is not None and hi > lo]

    @classmethod
    def from_metrics(cls, metrics: pd.DataFrame, note: str = "") -> Phases:
        """Only the accuracy landmarks (:func:`interp.store.grok_steps`): full_train_acc_step, the first
        step with train accuracy 100%, and grok_step, the first with test accuracy ≥ 99%; no phase
        boundary."""
        g = grok_steps(metrics)
        return cls(full_train_acc_step=g["memorized_step"], grok_step=g["grokked_step"], signal=ACCURACY_SIGNAL,
                   rule="first 100% train accuracy and first ≥99% test accuracy" + note)


def transition_bounds(phases: Any) -> tuple[int | None, int | None]:
    """The steps just before and after the grokking transition, as the diff reports pick them: the end
    of memorisation (else the first 100% train accuracy) and the end of clean-up (else the grokking
    step, else the end of circuit formation). ``phases`` is any object with :class:`Phases`'s fields."""
    first = (phases.memorization_end, phases.circuit_start, getattr(phases, "full_train_acc_step", None))
    start = next((s for s in first if s is not None), None)
    end = next((s for s in (phases.cleanup_end, phases.grok_step, phases.circuit_end) if s is not None), None)
    return start, end


def _series(df: pd.DataFrame, col: str) -> pd.Series:
    """Column ``col`` indexed by step, NaNs dropped (test metrics are only logged every eval_every steps)."""
    if col not in df:
        return pd.Series(dtype=float)
    s = df[["step", col]].dropna().drop_duplicates("step", keep="last")
    return pd.Series(s[col].to_numpy(float), index=s["step"].to_numpy(np.int64)).sort_index()


def _smooth(s: pd.Series, window: int) -> pd.Series:
    """Centred rolling median over ``window`` logged points (robust to single-step spikes)."""
    return s.rolling(window, center=True, min_periods=1).median()


#: a weight-norm maximum counts as the end of memorization only if the norm then falls by this share
WEIGHT_NORM_MIN_FALL = 0.02

def _turn(s: pd.Series, kind: str, window: int) -> int:
    """Step of the minimum (``kind="min"``) or maximum of ``s``: located on the rolling-median curve
    (robust to spikes), then refined to the raw extremum within ± window // 2 points of it (a
    median filter moves the apex of an asymmetric peak by up to that much)."""
    sign = 1.0 if kind == "max" else -1.0
    i = int(np.argmax(sign * _smooth(s, window).to_numpy()))
    lo, hi = max(i - window // 2, 0), min(i + window // 2 + 1, len(s))
    return int(s.index[lo + int(np.argmax(sign * s.to_numpy()[lo:hi]))])


def _probe_series(scalars: pd.DataFrame | None, key: tuple[str, str]) -> pd.Series:
    if scalars is None or not len(scalars):
        return pd.Series(dtype=float)
    rows = scalars[(scalars["probe"] == key[0]) & (scalars["name"] == key[1])]
    return _series(rows.rename(columns={"value": key[1]}), key[1])


def _load_scalars(run: Run) -> pd.DataFrame | None:
    """The run's cached probe scalars, or None when there are none."""
    from probes.runner import load

    try:
        df = load(run)
    except StoreError:
        return None
    return df if len(df) else None


def _frames(run_or_frames: Any, scalars: pd.DataFrame | None) -> tuple[Run | None, pd.DataFrame, Any]:
    """(run or None, metrics, probe scalars) of detect's first two arguments."""
    run = run_or_frames if isinstance(run_or_frames, Run) else None
    if isinstance(run_or_frames, tuple):
        return None, run_or_frames[0], run_or_frames[1] if scalars is None else scalars
    if run is not None:
        return run, run.metrics, _load_scalars(run) if scalars is None else scalars
    if isinstance(run_or_frames, pd.DataFrame):
        return None, run_or_frames, scalars
    raise TypeError(f"detect: expected a Run, a metrics DataFrame or (metrics, scalars), "
                    f"got {type(run_or_frames).__name__}")


def _first_at_least(s: pd.Series, level: float) -> int | None:
    hit = s.index[s.to_numpy() >= level]
    return int(hit[0]) if len(hit) else None


def _cleanup(test_loss: pd.Series, window: int, fall: float, min_fall: float, edges: dict[str, str]) -> dict:
    """Clean-up from the log10 test loss T (smoothed) over the whole run: the peak, and circuit_end /
    cleanup_end as in :func:`detect`'s rule 2. Records edge cases in ``edges``."""
    t = _smooth(np.log10(test_loss.clip(lower=1e-30)), window)
    peak = int(t.idxmax())
    after = t[t.index >= peak]
    t_peak, t_min = float(t[peak]), float(after.min())
    drop = t_peak - t_min
    out = {"peak": peak, "drop": drop, "circuit_end": None, "cleanup_end": None}
    if drop < min_fall:
        return out
    cleanup_end = int(after.index[after.to_numpy() <= t_min + fall * drop][0])
    collapse = after[after.index <= cleanup_end]
    out["circuit_end"] = int(collapse.index[collapse.to_numpy() >= t_peak - fall * drop][-1])
    tail = t.to_numpy()[-window:]
    at_end = int(np.argmin(t.to_numpy()[::-1])) <= window // 2  # a minimum among the last points (edge-smoothed)
    if at_end and tail[0] - tail[-1] > fall * drop / 10:
        edges["cleanup_end"] = (f"the test loss is still falling at the last logged step {int(t.index[-1])} "
                                f"(step {cleanup_end} is only within {fall:.0%} of the lowest value so far)")
    else:
        out["cleanup_end"] = cleanup_end
    return out


def _formation_start(metrics: pd.DataFrame, scalars: Any, stop: int | None, window: int,
                     edges: dict[str, str]) -> tuple[str, int | None, str]:
    """(signal, step, words) of the turn that ends memorization and starts circuit formation, searched
    over every measured step up to ``stop`` (the start of clean-up), :func:`detect`'s rule 3."""
    candidates = [
        ("probes:logit.excluded_loss", _probe_series(scalars, EXCLUDED), "min",
         "minimum of the excluded loss (it stops falling and starts to rise)"),
        ("probes:logit.restricted_loss", _probe_series(scalars, RESTRICTED), "max",
         "maximum of the restricted loss (it starts to fall)"),
        ("metrics:weight_norm", _series(metrics, "weight_norm"), "max",
         "maximum of the weight norm (the sum of squared weights starts to fall)"),
    ]
    for name, series, kind, text in candidates:
        span = series[series.index <= stop] if stop is not None else series
        if len(span) < 2:
            continue
        step = _turn(np.log10(span.clip(lower=1e-30)) if name.startswith("probes") else span, kind, window)
        if step in (int(span.index[0]), int(span.index[-1])):
            where = "first" if step == int(span.index[0]) else "last"
            bound = "start of clean-up" if stop is not None and where == "last" else "data"
            edges["memorization_end"] = (f"the {text.split(' (')[0]} is at the {where} measured step {step} "
                                         f"(the edge of the {bound}): its turn is not in the data")
            return name, None, text
        if name == "metrics:weight_norm":
            smooth = _smooth(span, window)
            peak, low = float(smooth.max()), float(smooth[smooth.index >= step].min())
            if peak - low < WEIGHT_NORM_MIN_FALL * peak:
                edges["memorization_end"] = (f"the weight norm falls by less than {WEIGHT_NORM_MIN_FALL:.0%} after "
                                             f"its maximum at step {step}: no turn")
                return name, None, text
        return name, step, text
    return "none", None, "no signal"


def detect(run_or_frames: Run | pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame | None],
           scalars: pd.DataFrame | None = None, *, snap: bool = True, fall: float = 0.1,
           min_fall: float = 1.0, window: int = 5, grok_threshold: float = GROK_THRESHOLD) -> Phases:
    """Locate memorization, circuit formation and clean-up as Nanda et al. 2023 define them
    (arXiv:2301.05217, §5.2).

    ``run_or_frames``: a :class:`~interp.store.Run`, its metrics DataFrame (columns step,
    train_acc, test_loss, test_acc, weight_norm as in ``run.metrics``), or a tuple
    (metrics, probe scalars). ``scalars``: probe scalars in ``probes.load`` long format (step,
    probe, name, value); for a Run they are loaded from its probe cache when not given.

    Rule (every curve is a centred rolling median over ``window`` logged points; T = log10 of
    the test loss). Every turn is searched over the whole run, not after some other landmark:

    1. Clean-up, from the test loss. peak = argmax T over all steps; T_min = min T after it;
       D = T(peak) − T_min, the fall in decades. If D < ``min_fall`` the test loss never collapses
       (no clean-up): circuit_end = cleanup_end = None. Otherwise ``cleanup_end`` = first step after
       the peak with T ≤ T_min + ``fall``·D (the plateau at its minimum, within 10% of the fall in
       log space) and ``circuit_end`` (= start of clean-up) = last step between the peak and
       cleanup_end with T ≥ T(peak) − ``fall``·D (the start of the final collapse). If T is at its
       minimum at the last logged points and still falling (by more than ``fall``·D/10 over the last
       ``window`` points), cleanup_end is on the edge of the data: None, with the reason in ``edges``.
    2. ``memorization_end`` = ``circuit_start`` — where memorization ends and the circuit starts to
       form: the minimum of the excluded loss (``logit.excluded_loss`` of ``progress.restricted``; it
       falls with the train loss, then rises as the Fourier circuit takes over); without it the
       maximum of the restricted loss (``logit.restricted_loss``: where it starts to fall); without
       probe scalars the maximum of the weight norm (the sum of squared weights starts to fall).
       Searched over every measured step up to circuit_end (the whole run without clean-up),
       located on the smoothed curve and refined to the raw extremum within ±``window``//2 points.
       A turn on the first or last point searched is on the edge: None, with the reason in ``edges``;
       so is a weight-norm maximum after which the smoothed norm falls by less than
       ``WEIGHT_NORM_MIN_FALL`` (2%) of its peak (a plateau's noise, as on a run that never groks).
    3. Landmarks: ``full_train_acc_step`` — first step with train accuracy 100%; ``grok_step`` — first
       step with test accuracy ≥ ``grok_threshold`` (:func:`interp.metrics.grok_steps`).

    memorization_end ≤ circuit_end ≤ cleanup_end holds by construction (the excluded-loss minimum is
    searched before clean-up). With a Run and ``snap=True`` every step is moved to the nearest saved
    checkpoint (``run.nearest_step``, which preserves the order), so it can be loaded directly; the
    unsnapped steps are kept in ``landmarks``.
    """
    run, metrics, scalars = _frames(run_or_frames, scalars)
    if not 0 < fall < 0.5:
        raise ValueError(f"fall: must be in (0, 0.5), got {fall}")
    test_loss = _series(metrics, "test_loss")
    if not len(test_loss):
        raise ValueError("detect: the metrics have no test_loss values")
    edges: dict[str, str] = {}
    clean = _cleanup(test_loss, window, fall, min_fall, edges)
    signal, formation, how = _formation_start(metrics, scalars, clean["circuit_end"], window, edges)
    rule = (
        f"memorization_end = circuit_start: {how}, over all steps before clean-up [{signal}]; "
        f"circuit_end / cleanup_end: last step within {fall:.0%} (of the fall, in log10) of the test-loss peak / "
        f"first step within {fall:.0%} of its minimum, if the test loss falls ≥ {min_fall:g} decades; "
        f"landmarks: first 100% train acc, first test acc ≥ {grok_threshold:.0%}; curves smoothed by a "
        f"{window}-point rolling median; a turn on the edge of the data is not reported (see edges)."
    )
    steps = {"memorization_end": formation, "circuit_start": formation, "circuit_end": clean["circuit_end"],
             "cleanup_end": clean["cleanup_end"],
             "grok_step": _first_at_least(_series(metrics, "test_acc"), grok_threshold),
             "full_train_acc_step": _first_at_least(_series(metrics, "train_acc"), 1.0)}
    landmarks: dict[str, Any] = {"unsnapped": dict(steps), "test_loss_peak_step": clean["peak"],
                                 "test_loss_fall_decades": clean["drop"]}
    snapped = bool(snap and run is not None and run.steps)
    if snapped:
        steps = {k: None if v is None else run.nearest_step(v) for k, v in steps.items()}
    return Phases(**steps, signal=signal, rule=rule, snapped=snapped, landmarks=landmarks, edges=edges)
