"""The three phases of grokking, located on a run's measured curves.

Nanda et al. 2023 ("Progress measures for grokking via mechanistic interpretability", ICLR 2023,
arXiv:2301.05217) split training on modular addition into three contiguous phases:

* **memorization** — train loss falls to ~0 while test loss rises to its peak; excluded loss falls
  with train loss;
* **circuit formation** — train and test loss stay flat, the sum of squared weights falls,
  excluded loss rises and restricted loss starts to fall: the Fourier circuit forms while the
  memorised solution still dominates the test loss;
* **clean-up** — weight decay removes the memorisation components: test loss falls sharply
  (the grokking step lies here) and the weight norm drops; it ends when test loss plateaus at
  its minimum.

:func:`detect` turns that description into a rule (the exact rule is in its docstring and in
``docs/probes.md``), using the run's metrics and, when cached, the progress-measure probe scalars.
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


#: the step fields of :class:`Phases`, in phase order
PHASE_FIELDS = ("memorization_end", "circuit_start", "circuit_end", "cleanup_end", "grok_step")
#: ``Phases.signal`` of :meth:`Phases.from_metrics` (accuracy landmarks only)
ACCURACY_SIGNAL = "metrics:accuracy"


@dataclass(frozen=True)
class Phases:
    """Phase boundaries (training steps, or None where the curves do not show them).

    memorization → circuit formation → clean-up: ``memorization_end ≤ circuit_start ≤ circuit_end
    ≤ cleanup_end`` (circuit formation spans [circuit_start, circuit_end], clean-up
    [circuit_end, cleanup_end]); ``grok_step`` is the first step with test accuracy ≥ 99%.
    ``signal`` names what placed circuit_start ("probes:logit.excluded_loss",
    "probes:logit.restricted_loss" or "metrics:weight_norm"; :data:`ACCURACY_SIGNAL` when only the
    accuracy landmarks are known), ``rule`` says it in words, and ``snapped`` is True when the steps
    were moved to the nearest saved checkpoint."""

    memorization_end: int | None = None
    circuit_start: int | None = None
    circuit_end: int | None = None
    cleanup_end: int | None = None
    grok_step: int | None = None
    signal: str = ""
    rule: str = ""
    snapped: bool = False
    landmarks: dict[str, Any] = field(default_factory=dict)  # unsnapped steps and the test-loss levels used

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def detected(self) -> bool:
        """Whether :func:`detect` placed the phases (rather than :meth:`from_metrics`)."""
        return self.signal != ACCURACY_SIGNAL

    def spans(self) -> list[tuple[str, int, int]]:
        """(label, start, end) of each phase whose bounds are known."""
        b = [("memorization", 0, self.memorization_end), ("circuit formation", self.circuit_start, self.circuit_end),
             ("cleanup", self.circuit_end, self.cleanup_end)]
        return [(name, int(lo), int(hi)) for name, lo, hi in b if lo is not None and hi is not None and hi > lo]

    @classmethod
    def from_metrics(cls, metrics: pd.DataFrame, note: str = "") -> Phases:
        """Only the accuracy landmarks (:func:`interp.store.grok_steps`): memorization_end, the first
        step with train accuracy 100%, and grok_step, the first with test accuracy ≥ 99%."""
        g = grok_steps(metrics)
        return cls(memorization_end=g["memorized_step"], grok_step=g["grokked_step"], signal=ACCURACY_SIGNAL,
                   rule="first 100% train accuracy and first ≥99% test accuracy" + note)


def transition_bounds(phases: Any) -> tuple[int | None, int | None]:
    """The steps just before and after the grokking transition, as the diff reports pick them: the end
    of memorisation (else the start of circuit formation) and the end of clean-up (else the grokking
    step, else the end of circuit formation). ``phases`` is any object with :class:`Phases`'s fields."""
    start = next((s for s in (phases.memorization_end, phases.circuit_start) if s is not None), None)
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


# detect is longer than ~60 lines: it follows its docstring's rule step by step, one landmark after
# the other; split up, the rule would be read across functions out of order.
def detect(run_or_frames: Run | pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame | None],
           scalars: pd.DataFrame | None = None, *, snap: bool = True, fall: float = 0.1,
           min_fall: float = 1.0, window: int = 5, grok_threshold: float = GROK_THRESHOLD) -> Phases:
    """Locate memorization, circuit formation and clean-up (Nanda et al. 2023, arXiv:2301.05217).

    ``run_or_frames``: a :class:`~interp.store.Run`, its metrics DataFrame (columns step,
    train_acc, test_loss, test_acc, weight_norm as in ``run.metrics``), or a tuple
    (metrics, probe scalars). ``scalars``: probe scalars in ``probes.load`` long format (step,
    probe, name, value); for a Run they are loaded from its probe cache when not given.

    Rule (every curve is a centred rolling median over ``window`` logged points; T = log10 of
    the test loss):

    1. ``memorization_end`` — first step with train accuracy 100% (the train loss has
       reached its floor; None if it never does).
    2. Clean-up, from the test loss. peak = argmax T over steps ≥ memorization_end;
       T_min = min T after the peak; D = T(peak) − T_min, the fall in decades. If D < ``min_fall``
       the test loss never collapses (no clean-up): circuit_end = cleanup_end = None. Otherwise
       ``cleanup_end`` = first step after the peak with T ≤ T_min + ``fall``·D (the test loss has
       reached the plateau at its minimum, within 10% of the fall in log space) and
       ``circuit_end`` (= start of clean-up) = last step between the peak and cleanup_end with
       T ≥ T(peak) − ``fall``·D (the start of the final collapse).
    3. ``circuit_start`` — the turn that starts circuit formation, searched in
       [memorization_end, circuit_end] (or to the last step without clean-up), located on the
       smoothed curve and refined to the raw extremum within ±``window``//2 points:
       the minimum of the excluded loss (``logit.excluded_loss`` of ``progress.restricted``:
       it stops falling with the train loss and rises as the Fourier circuit takes over);
       without it, the maximum of the restricted loss (``logit.restricted_loss``: where it
       starts to fall); without probe scalars, the maximum of the weight norm (the sum of
       squared weights starts to fall, the only metrics-only sign of circuit formation).
    4. ``grok_step`` — first step with test accuracy ≥ ``grok_threshold``, as in
       :func:`interp.metrics.grok_steps`.

    The phases are contiguous as in the paper, so the order memorization_end ≤ circuit_start ≤
    circuit_end ≤ cleanup_end holds by construction; grok_step normally falls inside clean-up
    but is not forced to. With a Run and ``snap=True`` every step is moved to the nearest saved
    checkpoint (``run.nearest_step``, which preserves the order), so it can be loaded directly;
    the unsnapped steps are kept in ``landmarks``.
    """
    run = run_or_frames if isinstance(run_or_frames, Run) else None
    if isinstance(run_or_frames, tuple):
        metrics = run_or_frames[0]
        scalars = run_or_frames[1] if scalars is None else scalars
    elif run is not None:
        metrics = run.metrics
        if scalars is None:
            scalars = _load_scalars(run)
    elif isinstance(run_or_frames, pd.DataFrame):
        metrics = run_or_frames
    else:
        raise TypeError(f"detect: expected a Run, a metrics DataFrame or (metrics, scalars), "
                        f"got {type(run_or_frames).__name__}")
    if not 0 < fall < 0.5:
        raise ValueError(f"fall: must be in (0, 0.5), got {fall}")

    train_acc, test_acc = _series(metrics, "train_acc"), _series(metrics, "test_acc")
    test_loss = _series(metrics, "test_loss")
    if not len(test_loss):
        raise ValueError("detect: the metrics have no test_loss values")

    def first_at_least(s: pd.Series, level: float) -> int | None:
        hit = s.index[s.to_numpy() >= level]
        return int(hit[0]) if len(hit) else None

    memorization_end = first_at_least(train_acc, 1.0)
    grok_step = first_at_least(test_acc, grok_threshold)
    start = memorization_end if memorization_end is not None else int(test_loss.index[0])

    # ---- clean-up from the log test loss
    t = _smooth(np.log10(test_loss.clip(lower=1e-30)), window)
    t = t[t.index >= start] if (t.index >= start).any() else t
    peak = int(t.idxmax())
    after = t[t.index >= peak]
    t_peak, t_min = float(t[peak]), float(after.min())
    drop = t_peak - t_min
    circuit_end = cleanup_end = None
    if drop >= min_fall:
        cleanup_end = int(after.index[after.to_numpy() <= t_min + fall * drop][0])
        collapse = after[after.index <= cleanup_end]
        circuit_end = int(collapse.index[collapse.to_numpy() >= t_peak - fall * drop][-1])

    # ---- circuit formation starts at the turn of the best available signal
    stop = circuit_end if circuit_end is not None else int(test_loss.index[-1])
    candidates = [
        ("probes:logit.excluded_loss", _probe_series(scalars, EXCLUDED), "min",
         "minimum of the excluded loss (it turns from falling to rising)"),
        ("probes:logit.restricted_loss", _probe_series(scalars, RESTRICTED), "max",
         "maximum of the restricted loss (it starts to fall)"),
        ("metrics:weight_norm", _series(metrics, "weight_norm"), "max",
         "maximum of the weight norm (the sum of squared weights starts to fall)"),
    ]
    signal, circuit_start, how = "none", None, "no signal"
    for name, series, kind, text in candidates:
        span = series[(series.index >= start) & (series.index <= stop)]
        if len(span):
            signal, how = name, text
            circuit_start = _turn(np.log10(span.clip(lower=1e-30)) if name.startswith("probes") else span, kind,
                                  window)
            break

    rule = (
        "memorization_end: first step with train acc 100%; "
        f"circuit_start: {how} between memorization_end and circuit_end [{signal}]; "
        f"circuit_end / cleanup_end: last step within {fall:.0%} (of the fall, in log10) of the test-loss peak / "
        f"first step within {fall:.0%} of its minimum, if the test loss falls ≥ {min_fall:g} decades; "
        f"grok_step: first test acc ≥ {grok_threshold:.0%}; curves smoothed by a {window}-point rolling median."
    )
    steps = {"memorization_end": memorization_end, "circuit_start": circuit_start, "circuit_end": circuit_end,
             "cleanup_end": cleanup_end, "grok_step": grok_step}
    landmarks: dict[str, Any] = {"unsnapped": dict(steps), "test_loss_peak_step": peak,
                                 "test_loss_fall_decades": drop}
    snapped = bool(snap and run is not None and run.steps)
    if snapped:
        steps = {k: None if v is None else run.nearest_step(v) for k, v in steps.items()}
    return Phases(**steps, signal=signal, rule=rule, snapped=snapped, landmarks=landmarks)
