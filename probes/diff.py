"""Checkpoint diff reports: what changed between two checkpoints, and in which terms.

    from interp import Run
    from probes.diff import compare
    from apps.report import to_html, to_markdown      # rendering lives in apps/report.py
    run = Run.open("checkpoints/demo")
    report = compare((run, 400), (run, 2_000))        # plain data: report.data, report.to_json()
    print(to_markdown(report))
    Path("diff.html").write_text(to_html(report))     # one self-contained file, opens offline

    grokscope diff RUN --from 400 --to 2000 [--html F] [--md F] [--json F]
    grokscope diff RUN --transition                     # memorization_end -> cleanup_end
    grokscope diff RUN_A@STEP RUN_B@STEP                # two runs

A report has five parts, each "before" (checkpoint A) and "after" (checkpoint B):

* **weights**: per parameter ‖ΔW‖_F, ‖ΔW‖/‖W_A‖, cos(W_A, W_B) = ⟨W_A, W_B⟩/(‖W_A‖‖W_B‖) and
  ‖W_B‖ − ‖W_A‖; the top-k singular values of every weight matrix (attention weights per head);
* **fourier**: per-frequency norms and Gini of W_E and W_L, key frequencies gained / kept / lost,
  neurons that changed dominant frequency, died or joined a frequency cluster, and the logit
  coefficients on cos(w_k(a+b−c)) -- all read from the probes (``probes.measure``), so every number
  equals what the probe API reports for the same checkpoint;
* **behaviour**: losses, accuracies, restricted / excluded loss and Σ‖W‖² (probes), and the inputs
  whose prediction flipped, as a p×p map;
* **attention**: per head entropy, effective number of attended tokens and sink share (probes), and
  the change in the readout attention pattern over the grid;
* **representation**: linear CKA (Kornblith et al. 2019) between the two checkpoints' MLP activations
  and residual streams over the full input grid.

On sequence tasks (issue 13) the report is reduced (:mod:`probes.diff_seq`): behaviour over the
train and test sets, weights and spectra, the sink measures of ``attention.seq_sinks`` with the
readout query's sparsity, CKA over the fixed probe batch, and a line for each grid section that does
not apply, saying why.

Across runs neurons, heads and parameter coordinates are not aligned (any permutation of the hidden
units is the same function), so only basis-free quantities are compared: norms, singular values,
frequency spectra and key-frequency sets, CKA, losses. The report says so in its notes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.errors import ConfigError, StoreError
from interp.store import DEFAULT_ROOT, Run
from probes import phases
from probes.diff_sections import (
    BOTH_RIGHT,
    BOTH_WRONG,
    INVALID,
    RIGHT_TO_WRONG,
    SCHEMA_VERSION,
    TOP_K,
    WRONG_TO_RIGHT,
    Side,
    attention_section,
    behaviour_section,
    fourier_section,
    linear_cka,
    plain,
    prediction_flips,
    representation,
    spectra,
    weight_stats,
)
from probes.diff_seq import compare_seq
from probes.steps import parse_step
from probes.theories import diff_section as theories_section

__all__ = [
    "BOTH_RIGHT", "BOTH_WRONG", "INVALID", "RIGHT_TO_WRONG", "TOP_K", "WRONG_TO_RIGHT", "Checkpoint", "DiffReport",
    "compare", "fmt", "fmt_set", "linear_cka", "open_run", "prediction_flips", "summarize", "summarize_seq",
    "transition_steps",
]


# ====================================================================== checkpoints
@dataclass(frozen=True, eq=False)
class Checkpoint:
    """One saved checkpoint of a run: ``Checkpoint(run, step)`` or ``Checkpoint.parse("RUN@STEP")``."""

    run: Run
    step: int

    def __post_init__(self) -> None:
        steps = self.run.steps
        if not steps:
            raise StoreError(f"{self.run.path} has no checkpoints yet")
        if self.step not in steps:
            raise ConfigError(f"{self.run.path} has no checkpoint at step {self.step} "
                              f"(nearest saved: {self.run.nearest_step(self.step)}; saved {steps[0]}..{steps[-1]})")

    @classmethod
    def of(cls, x: Checkpoint | tuple[Run, int]) -> Checkpoint:
        return x if isinstance(x, Checkpoint) else cls(*x)

    @classmethod
    def parse(cls, spec: str, root: str | Path = DEFAULT_ROOT) -> Checkpoint:
        """``RUN@STEP`` where RUN is a run directory (or a name under ``root``) and STEP an integer,
        ``first`` or ``last`` (:func:`probes.steps.parse_step`)."""
        path, at, step = spec.rpartition("@")
        if not at or not path or not step:
            raise ConfigError(f"bad checkpoint {spec!r}: expected RUN@STEP, e.g. checkpoints/demo@1000")
        run = open_run(path, root)
        return cls(run, parse_step(step, run.steps))

    @property
    def label(self) -> str:
        return f"{self.run.name}@{self.step}"


def open_run(path: str | Path, root: str | Path = DEFAULT_ROOT) -> Run:
    """Open ``path``, or ``root/path`` if ``path`` is not a directory."""
    path = Path(path)
    if not path.is_dir() and (Path(root) / path).is_dir():
        path = Path(root) / path
    return Run.open(path)


def transition_steps(run: Run) -> tuple[int, int]:
    """Checkpoints around the grokking transition that ``probes.phases.detect`` finds: the end of
    memorisation (else the start of circuit formation) to the end of cleanup (else the grokking
    step, else the end of circuit formation), each snapped to the nearest saved checkpoint."""
    try:
        ph = phases.detect(run)
    except ValueError as e:  # e.g. a run with no logged test loss yet
        raise ConfigError(f"{run.path}: cannot detect the phases: {e}") from None
    start, end = phases.transition_bounds(ph)
    if start is None or end is None:
        found = ", ".join(f"{k}={getattr(ph, k)}" for k in ("memorization_end", "circuit_start", "circuit_end",
                                                              "cleanup_end", "grok_step"))
        raise ConfigError(f"{run.path}: no grokking transition detected ({found}); pick steps with --from/--to")
    a, b = run.nearest_step(start), run.nearest_step(end)
    if a >= b:
        raise ConfigError(f"{run.path}: transition {start}->{end} snaps to one checkpoint ({a}); use --from/--to")
    return a, b


# ====================================================================== the report
@dataclass
class DiffReport:
    """A comparison of two checkpoints. Everything lives in :attr:`data` (plain JSON values, NaN as
    None), so ``DiffReport.from_dict(json.loads(json.dumps(r.to_dict())))`` renders identically
    (rendering: :func:`apps.report.to_markdown`, :func:`apps.report.to_html`)."""

    data: dict[str, Any] = field(repr=False)

    def __repr__(self) -> str:
        return f"DiffReport({self.data['a']['label']} -> {self.data['b']['label']})"

    @property
    def summary(self) -> list[str]:
        return list(self.data["summary"])

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.data))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffReport:
        version = d.get("schema")
        if version != SCHEMA_VERSION:
            raise StoreError(f"diff report schema {version!r} is not supported (this grokscope reads {SCHEMA_VERSION})")
        return cls(data=json.loads(json.dumps(d)))

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.data, indent=indent, allow_nan=False)


# ====================================================================== compare
def compare(a: Checkpoint | tuple[Run, int], b: Checkpoint | tuple[Run, int], *, top_k: int = TOP_K,
            params: dict[str, Any] | None = None) -> DiffReport:
    """Compare checkpoint ``a`` (before) with ``b`` (after); see the module docstring for the contents.
    ``params`` overrides probe parameters (``probes.DEFAULT_PARAMS``)."""
    ca, cb = Checkpoint.of(a), Checkpoint.of(b)
    seq = [c.run.train_config.seq_task is not None for c in (ca, cb)]
    if any(seq):  # issue 13: sequence tasks get the reduced report of probes.diff_seq
        if not all(seq):
            raise ConfigError("diff: one checkpoint is a grid task and the other a sequence task; compare "
                              "checkpoints of the same kind of task")
        data = compare_seq(ca, cb, top_k, params)
        data["summary"] = summarize_seq(data)
        return DiffReport(data=data)
    sa, sb = Side.measure(ca.run, ca.step, params), Side.measure(cb.run, cb.step, params)
    same_run = ca.run.path.resolve() == cb.run.path.resolve()
    same_shapes = ({k: v.shape for k, v in sa.state_dict.items()} == {k: v.shape for k, v in sb.state_dict.items()})
    aligned = same_run and same_shapes
    same_inputs = sa.task.p == sb.task.p  # the same p×p grid of inputs: CKA is defined
    same_task = same_inputs and sa.task.op == sb.task.op  # the same labels too: prediction flips are defined
    notes = []
    if not same_run:
        notes.append("The checkpoints come from different runs: neurons, heads and weight coordinates are not "
                     "aligned across runs, so only basis-free quantities are compared (norms, singular values, "
                     "Fourier spectra and key-frequency sets, CKA, losses); per-parameter and per-neuron changes "
                     "are omitted.")
    elif not same_shapes:
        notes.append("The checkpoints' parameter shapes differ: per-parameter and per-neuron changes are omitted.")
    if not same_task:
        notes.append(f"The tasks differ ({sa.task.op} mod {sa.task.p} vs {sb.task.op} mod {sb.task.p}): prediction "
                     f"flips{'' if same_inputs else ' and CKA over the input grid'} are omitted.")
    data: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "kind": "grid",
        "a": sa.describe(), "b": sb.describe(),
        "same_run": same_run, "aligned": aligned, "same_inputs": same_inputs, "same_task": same_task, "notes": notes,
        "params": plain({k: v for k, v in sa.params.items() if isinstance(v, int | float | str)}),
        "weights": plain(weight_stats(sa.state_dict, sb.state_dict, aligned)),
        "spectra": {"k": top_k, "matrices": plain(spectra(sa.state_dict, sb.state_dict, top_k))},
        "fourier": fourier_section(sa, sb, aligned),
        "behaviour": behaviour_section(sa, sb, same_task),
        "attention": attention_section(sa, sb, aligned),
        "representation": plain(representation(sa.fwd, sb.fwd)) if same_inputs else [],
        "theories": theories_section(ca.run, ca.step, cb.run, cb.step),  # issue 15
    }
    data["summary"] = summarize(data)
    return DiffReport(data=data)


# ====================================================================== plain-language summary
def fmt(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; "n/a" for None (NaN)."""
    if x is None:
        return "n/a"
    if isinstance(x, int) or (float(x).is_integer() and abs(x) < 1e6):
        return str(int(x))
    return f"{x:.{digits}g}"


def fmt_set(ks: Sequence[int]) -> str:
    return "{" + ", ".join(str(k) for k in ks) + "}"


def _movement(label: str, a: float | None, b: float | None, pct: bool = False) -> str:
    """"test loss fell from 22.4 to 0.003" / "rose" / "unchanged at" / "essentially unchanged at … (+1e-05)"."""
    show = (lambda v: "n/a" if v is None else f"{100 * v:.1f}%") if pct else fmt
    if a is None or b is None:
        return f"{label} {show(a)} → {show(b)}"
    if a == b:
        return f"{label} unchanged at {show(b)}"
    if show(a) == show(b):
        change = f"{100 * (b - a):+.2g} pp" if pct else f"{b - a:+.2g}"
        return f"{label} essentially unchanged at {show(b)} ({change})"
    return f"{label} {'rose' if b > a else 'fell'} from {show(a)} to {show(b)}"


def summarize(d: dict[str, Any]) -> list[str]:
    """Plain-language sentences generated from the numbers of a report (its ``data`` dict)."""
    out: list[str] = []
    m = {r["name"]: r for r in d["behaviour"]["metrics"]}
    out.append(f"{_movement('Test loss', m['test_loss']['a'], m['test_loss']['b'])}; "
               f"{_movement('test accuracy', m['test_acc']['a'], m['test_acc']['b'], pct=True)} "
               f"(train loss {fmt(m['train_loss']['a'])} → {fmt(m['train_loss']['b'])}, train accuracy "
               f"{100 * (m['train_acc']['a'] or 0):.1f}% → {100 * (m['train_acc']['b'] or 0):.1f}%).")
    kf = d["fourier"]["key_freqs"]
    parts = []
    if kf["gained"]:
        parts.append(f"key frequencies {fmt_set(kf['gained'])} formed")
    if kf["kept"]:
        parts.append(f"{fmt_set(kf['kept'])} kept")
    if kf["lost"]:
        parts.append(f"{fmt_set(kf['lost'])} lost")
    out.append(f"Fourier: {', '.join(parts)} (key frequencies after: {fmt_set(kf['b'])})." if parts else
               "Fourier: no key frequencies at either checkpoint.")
    nr = d["fourier"]["neurons"]
    n_b = nr["d_mlp"]["b"]
    if n_b == 0 and nr["d_mlp"]["a"] == 0:
        out.append("No MLP neurons (attention-only models).")
    elif "joined_cluster" in nr:
        out.append(f"{len(nr['joined_cluster'])} of {n_b} neurons joined a frequency cluster and "
                   f"{len(nr['left_cluster'])} left one ({fmt(nr['n_clustered']['a'])} → "
                   f"{fmt(nr['n_clustered']['b'])} clustered); {len(nr['changed_freq_clustered'])} clustered "
                   f"neurons switched frequency; {len(nr['became_dead'])} became dead.")
    else:
        out.append(f"Clustered neurons: {fmt(nr['n_clustered']['a'])} of {nr['d_mlp']['a']} → "
                   f"{fmt(nr['n_clustered']['b'])} of {n_b}; dead neurons {fmt(nr['n_dead']['a'])} → "
                   f"{fmt(nr['n_dead']['b'])}.")
    g = d["fourier"]
    out.append(f"Fourier sparsity (Gini): W_E {fmt(g['embed']['gini']['a'])} → {fmt(g['embed']['gini']['b'])}, "
               f"W_L {fmt(g['logit_map']['gini']['a'])} → {fmt(g['logit_map']['gini']['b'])}; restricted loss "
               f"{fmt(m['logit.restricted_loss']['a'])} → {fmt(m['logit.restricted_loss']['b'])}, excluded loss "
               f"{fmt(m['logit.excluded_loss']['a'])} → {fmt(m['logit.excluded_loss']['b'])}.")
    out.append(_weight_sentence(d, m["ssq_total"]))
    flips = d["behaviour"].get("flips")
    if flips:
        c = flips["counts"].get("test", flips["counts"]["all"])
        where = "test" if "test" in flips["counts"] else "grid"
        out.append(f"{c['wrong_to_right']} {where} inputs went wrong → right and {c['right_to_wrong']} right → wrong.")
    rep = d["representation"]
    if rep:
        out.append("Linear CKA between the checkpoints: " + "; ".join(
            f"{r['what']}: {fmt(r['cka'])}" for r in rep) + ".")
    return out


def _weight_sentence(d: dict[str, Any], ssq: dict[str, Any]) -> str:
    w = [r for r in d["weights"] if r["delta"] is not None]
    if not w:
        return f"{_movement('Sum of squared weights', ssq['a'], ssq['b'])}."
    tot = math.sqrt(sum(r["delta"] ** 2 for r in w)) / math.sqrt(sum(r["norm_a"] ** 2 for r in w) or 1)
    top = max(w, key=lambda r: r["rel_change"] or 0)
    return (f"Weights moved by {100 * tot:.1f}% of their norm (most: {top['name']}, "
            f"{100 * (top['rel_change'] or 0):.1f}%); {_movement('sum of squared weights', ssq['a'], ssq['b'])}.")


def summarize_seq(d: dict[str, Any]) -> list[str]:
    """Plain-language sentences for a sequence-task report (:mod:`probes.diff_seq`)."""
    m = {r["name"]: r for r in d["behaviour"]["metrics"]}
    out = [f"{_movement('Test loss', m['test_loss']['a'], m['test_loss']['b'])}; "
           f"{_movement('test accuracy', m['test_acc']['a'], m['test_acc']['b'], pct=True)} "
           f"(train loss {fmt(m['train_loss']['a'])} → {fmt(m['train_loss']['b'])}, train accuracy "
           f"{100 * (m['train_acc']['a'] or 0):.1f}% → {100 * (m['train_acc']['b'] or 0):.1f}%)."]
    s = d["sinks"]
    rates = [f"{t.replace('_', '-')} queries {fmt(s['by_type'][t]['sink_rate']['a'])}% → "
             f"{fmt(s['by_type'][t]['sink_rate']['b'])}%" for t in s["query_types"]]
    out.append(f"Sink rate on {s['first_token']} (ε = {s['epsilon']}): " + "; ".join(rates) + ".")
    out.append(f"Value-state drain: {s['first_token']}'s value norm over the others' "
               f"{fmt(s['value_ratio']['a'])} → {fmt(s['value_ratio']['b'])}; residual-state peak: largest "
               f"{s['first_token']}/others residual-norm ratio {fmt(s['resid_ratio']['a'])} → "
               f"{fmt(s['resid_ratio']['b'])}.")
    eff = s["readout_eff_tokens"]
    out.append(f"{_movement('Readout query effective attended tokens', eff['a'], eff['b'])} (of {s['n_keys']} keys).")
    out.append(_weight_sentence(d, m["ssq_total"]))
    rep = d["representation"]
    if rep:
        out.append("Linear CKA between the checkpoints: " + "; ".join(
            f"{r['what']}: {fmt(r['cka'])}" for r in rep) + ".")
    return out
