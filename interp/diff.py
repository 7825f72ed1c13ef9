"""Checkpoint diff reports: what changed between two checkpoints, and in which terms.

    from interp import Run
    from interp.diff import compare
    run = Run.open("checkpoints/demo")
    report = compare((run, 400), (run, 2_000))
    print(report.to_markdown())
    Path("diff.html").write_text(report.to_html())     # one self-contained file, opens offline

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

Across runs neurons, heads and parameter coordinates are not aligned (any permutation of the hidden
units is the same function), so only basis-free quantities are compared: norms, singular values,
frequency spectra and key-frequency sets, CKA, losses. The report says so in its notes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp.cli import UsageError
from interp.errors import StoreError
from interp.store import DEFAULT_ROOT, Run

SCHEMA_VERSION = 1
TOP_K = 8  # singular values kept per matrix
MAP_DECIMALS = 4  # the p×p attention-change maps are rounded to this many decimals (JSON size)

#: probes a report reads, and the names it takes from each
PROBE_NAMES = (
    "fourier.embed", "fourier.logit_map", "fourier.key_freqs", "fourier.neurons", "fourier.logits",
    "progress.loss", "progress.restricted", "progress.weights", "attention.sparsity", "attention.sinks",
)

#: behaviour metrics shown before/after: (probe, name, label)
BEHAVIOUR_METRICS = (
    ("progress.loss", "train_loss", "train loss"),
    ("progress.loss", "test_loss", "test loss"),
    ("progress.loss", "train_acc", "train accuracy"),
    ("progress.loss", "test_acc", "test accuracy"),
    ("progress.restricted", "logit.restricted_loss", "restricted loss"),
    ("progress.restricted", "logit.excluded_loss", "excluded loss"),
    ("progress.weights", "ssq_total", "sum of squared weights"),
)

#: codes of the prediction-flip map
BOTH_WRONG, BOTH_RIGHT, WRONG_TO_RIGHT, RIGHT_TO_WRONG, INVALID = 0, 1, 2, 3, -1


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
            raise UsageError(f"{self.run.path} has no checkpoint at step {self.step} "
                               f"(nearest saved: {self.run.nearest_step(self.step)}; saved {steps[0]}..{steps[-1]})")

    @classmethod
    def of(cls, x: Checkpoint | tuple[Run, int]) -> Checkpoint:
        return x if isinstance(x, Checkpoint) else cls(*x)

    @classmethod
    def parse(cls, spec: str, root: str | Path = DEFAULT_ROOT) -> Checkpoint:
        """``RUN@STEP`` where RUN is a run directory (or a name under ``root``) and STEP an integer
        or ``first`` / ``last``."""
        path, at, step = spec.rpartition("@")
        if not at or not path or not step:
            raise UsageError(f"bad checkpoint {spec!r}: expected RUN@STEP, e.g. checkpoints/demo@1000")
        run = open_run(path, root)
        return cls(run, parse_step(step, run))

    @property
    def label(self) -> str:
        return f"{self.run.name}@{self.step}"


def open_run(path: str | Path, root: str | Path = DEFAULT_ROOT) -> Run:
    """Open ``path``, or ``root/path`` if ``path`` is not a directory."""
    path = Path(path)
    if not path.is_dir() and (Path(root) / path).is_dir():
        path = Path(root) / path
    return Run.open(path)


def parse_step(text: str, run: Run) -> int:
    """An integer step, or ``first`` / ``last`` (the run's first / last checkpoint)."""
    if text in ("first", "last"):
        steps = run.steps
        if not steps:
            raise StoreError(f"{run.path} has no checkpoints yet")
        return steps[0] if text == "first" else steps[-1]
    try:
        step = int(text)
    except ValueError:
        raise UsageError(f"bad step {text!r}: expected an integer, 'first' or 'last'") from None
    if step < 0:
        raise UsageError(f"bad step {step}: steps are >= 0")
    return step


def transition_steps(run: Run) -> tuple[int, int]:
    """Checkpoints around the grokking transition that ``probes.phases.detect`` finds: the end of
    memorisation (else the start of circuit formation) to the end of cleanup (else the grokking
    step, else the end of circuit formation), each snapped to the nearest saved checkpoint."""
    from probes import phases

    try:
        ph = phases.detect(run)
    except ValueError as e:  # e.g. a run with no logged test loss yet
        raise UsageError(f"{run.path}: cannot detect the phases: {e}") from None
    start, end = phases.transition_bounds(ph)
    if start is None or end is None:
        found = ", ".join(f"{k}={getattr(ph, k)}" for k in ("memorization_end", "circuit_start", "circuit_end",
                                                              "cleanup_end", "grok_step"))
        raise UsageError(f"{run.path}: no grokking transition detected ({found}); pick steps with --from/--to")
    a, b = run.nearest_step(start), run.nearest_step(end)
    if a >= b:
        raise UsageError(f"{run.path}: transition {start}->{end} snaps to one checkpoint ({a}); use --from/--to")
    return a, b


# ====================================================================== weights
def _flat_segments(tensors: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """All tensors flattened into one float64 vector, and the index of the tensor each entry came from."""
    flat = torch.cat([t.reshape(-1).double() for t in tensors])
    seg = torch.repeat_interleave(torch.arange(len(tensors)), torch.tensor([t.numel() for t in tensors]))
    return flat, seg


@torch.no_grad()
def weight_stats(sd_a: dict[str, Tensor], sd_b: dict[str, Tensor], aligned: bool) -> list[dict[str, Any]]:
    """Per parameter ‖W_A‖_F, ‖W_B‖_F and ‖W_B‖ − ‖W_A‖ (basis-free, always) and, when the parameters
    are aligned (same run, same shapes), ‖ΔW‖_F, ‖ΔW‖_F/‖W_A‖_F and cos(W_A, W_B) = ⟨W_A, W_B⟩/(‖W_A‖‖W_B‖).

    Vectorized over parameters: the flattened tensors are concatenated once and the sums Σa², Σb²,
    Σab and Σ(a−b)² are segment-summed per parameter with ``index_add_``.
    """
    names = [n for n in sd_a if n in sd_b]
    n = len(names)
    flat_a, seg_a = _flat_segments([sd_a[k] for k in names])
    flat_b, seg_b = _flat_segments([sd_b[k] for k in names])
    norm_a = torch.zeros(n, dtype=torch.float64).index_add_(0, seg_a, flat_a * flat_a).sqrt()
    norm_b = torch.zeros(n, dtype=torch.float64).index_add_(0, seg_b, flat_b * flat_b).sqrt()
    dot = delta = torch.full((n,), math.nan, dtype=torch.float64)
    if aligned:
        sums = torch.zeros(2, n, dtype=torch.float64).index_add_(
            1, seg_a, torch.stack([flat_a * flat_b, (flat_a - flat_b) ** 2]))
        dot, delta = sums[0], sums[1].sqrt()
    cos, rel = dot / (norm_a * norm_b), delta / norm_a
    return [{"name": k, "shape_a": list(sd_a[k].shape), "shape_b": list(sd_b[k].shape),
             "norm_a": norm_a[i].item(), "norm_b": norm_b[i].item(), "norm_change": (norm_b[i] - norm_a[i]).item(),
             "delta": delta[i].item(), "rel_change": rel[i].item(), "cosine": cos[i].item()}
            for i, k in enumerate(names)]


def weight_matrices(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every weight matrix of a state dict (tensors with ≥ 2 dims); stacked ones such as
    W_Q [h, d, e] are split into their matrices, named ``blocks.0.attn.W_Q[h]``."""
    out: dict[str, Tensor] = {}
    for name, t in sd.items():
        if t.ndim == 2:
            out[name] = t
        elif t.ndim > 2:
            for i, m in enumerate(t.reshape(-1, *t.shape[-2:])):
                out[f"{name}[{i}]"] = m
    return out


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the enclosed torch ops on one CPU thread. LAPACK on a batch of small matrices gains nothing
    from threads, and on a busy machine its thread pool waits for cores: the spectra of the ``nanda``
    model take ~20 ms on one thread and 0.3-2 s on two threads when other processes hold the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@torch.no_grad()
def top_singular_values(mats: Sequence[Tensor], k: int = TOP_K) -> list[list[float]]:
    """The ``k`` largest singular values of each matrix (fewer if it has lower rank), in float64.
    Matrices of equal shape go through one batched ``torch.linalg.svdvals`` call."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, m in enumerate(mats):
        groups[tuple(m.shape)].append(i)
    out: list[list[float]] = [[] for _ in mats]
    with _one_thread():
        for idx in groups.values():
            s = torch.linalg.svdvals(torch.stack([mats[i] for i in idx]).double())[:, :k]
            for i, row in zip(idx, s.tolist()):
                out[i] = row
    return out


def spectra(sd_a: dict[str, Tensor], sd_b: dict[str, Tensor], k: int = TOP_K) -> list[dict[str, Any]]:
    """Top-k singular values of every weight matrix before and after (None where a side lacks it)."""
    ma, mb = weight_matrices(sd_a), weight_matrices(sd_b)
    names = list(ma) + [n for n in mb if n not in ma]
    mats = [ma[n] for n in names if n in ma] + [mb[n] for n in names if n in mb]
    sv = iter(top_singular_values(mats, k))
    sa = {n: next(sv) for n in names if n in ma}
    sb = {n: next(sv) for n in names if n in mb}
    return [{"name": n, "shape_a": list(ma[n].shape) if n in ma else None,
             "shape_b": list(mb[n].shape) if n in mb else None, "a": sa.get(n), "b": sb.get(n)} for n in names]


# ====================================================================== representation
@torch.no_grad()
def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited",
    arXiv:1905.00414, eq. for the linear kernel) between representations x [n, d1], y [n, d2] of the
    same n inputs:

        CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F),   X, Y with centred columns,

    the feature-space form of HSIC(K, L)/√(HSIC(K, K) HSIC(L, L)) with K = XXᵀ, L = YYᵀ (cost O(n d²)
    rather than O(n²)). Invariant to orthogonal transforms and isotropic scaling of either side, so it
    compares runs whose neurons are not aligned. NaN if either side is constant over the inputs.
    """
    x = x.reshape(x.shape[0], -1).float()
    y = y.reshape(y.shape[0], -1).float()
    x, y = x - x.mean(0), y - y.mean(0)  # the three d×d products in float32 (the O(n d²) cost), norms in float64
    xx, yy, yx = (torch.linalg.matrix_norm((u.T @ v).double()) for u, v in ((x, x), (y, y), (y, x)))
    if xx * yy == 0:
        return float("nan")
    return (yx**2 / (xx * yy)).item()


@dataclass
class _Forward:
    """What a report needs from one full-grid forward (``ProbeContext.cache``): logits at ``=`` and
    activations at the readout position, and the attention patterns."""

    logits: Tensor  # [p², d_vocab_out]
    mlp: list[Tensor]  # per layer [p², d_mlp] MLP activations (hook_post) at the readout position
    resid: list[Tensor]  # per layer [p², d_model] resid_post at the readout position
    pattern: list[Tensor]  # per layer [p², H, S, S]


def representation(fa: _Forward, fb: _Forward) -> list[dict[str, Any]]:
    """Linear CKA between the two checkpoints' MLP activations and residual streams (readout position,
    every layer) over the full p×p input grid."""
    rows = [{"name": f"mlp.{i}", "what": f"MLP activations of layer {i}", "cka": linear_cka(x, y)}
            for i, (x, y) in enumerate(zip(fa.mlp, fb.mlp))]
    rows += [{"name": f"resid_post.{i}", "what": f"residual stream after layer {i}", "cka": linear_cka(x, y)}
             for i, (x, y) in enumerate(zip(fa.resid, fb.resid))]
    return rows


# ====================================================================== behaviour
def prediction_flips(logits_a: Tensor, logits_b: Tensor, task_a: Any, task_b: Any) -> dict[str, Any]:
    """Which inputs (a, b) changed from wrong to right or right to wrong (argmax of the logits at
    ``=``), as a p×p map of codes (0 both wrong, 1 both right, 2 wrong→right, 3 right→wrong,
    −1 undefined cell) and counts per split (per split only when the two runs share their split)."""
    p, valid = task_b.p, task_a.valid & task_b.valid
    right_a = (logits_a.argmax(-1) == task_a.labels) & valid
    right_b = (logits_b.argmax(-1) == task_b.labels) & valid
    # (right_a, right_b) = (0,0) -> 0, (1,1) -> 1, (0,1) -> 2, (1,0) -> 3
    code = torch.where(valid, right_a.long() + 2 * (right_a != right_b).long(), INVALID)
    splits = {"all": valid}
    if torch.equal(task_a.train_mask, task_b.train_mask):
        splits |= {"train": task_a.train_mask, "test": task_a.test_mask}
    names = {BOTH_WRONG: "both_wrong", BOTH_RIGHT: "both_right", WRONG_TO_RIGHT: "wrong_to_right",
             RIGHT_TO_WRONG: "right_to_wrong"}
    counts = {}
    for split, mask in splits.items():
        n = torch.bincount(code[mask & valid], minlength=4).tolist()
        counts[split] = {names[c]: n[c] for c in (WRONG_TO_RIGHT, RIGHT_TO_WRONG, BOTH_RIGHT, BOTH_WRONG)}
    return {"counts": counts, "map": code.view(p, p).tolist()}


# ====================================================================== JSON-safe values
def _plain(x: Any) -> Any:
    """Tensors / arrays / NumPy scalars -> lists and Python numbers; NaN and ±inf -> None (JSON null)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f" or np.isfinite(x).all():
            return x.tolist()
        obj = x.astype(object)
        obj[~np.isfinite(x)] = None
        return obj.tolist()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return _plain(x.item())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


# ====================================================================== the report
@dataclass
class DiffReport:
    """A comparison of two checkpoints. Everything lives in :attr:`data` (plain JSON values, NaN as
    None), so ``DiffReport.from_dict(json.loads(json.dumps(r.to_dict())))`` renders identically."""

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

    def to_markdown(self) -> str:
        from interp.diff_render import render_markdown

        return render_markdown(self.data)

    def to_html(self) -> str:
        from interp.diff_render import render_html

        return render_html(self.data)


# ====================================================================== probes
def _key_set(is_key: Any) -> list[int]:
    """Frequencies k ≥ 1 flagged by ``fourier.key_freqs``'s ``is_key`` [K+1]."""
    return [int(k) for k in np.flatnonzero(np.nan_to_num(np.asarray(is_key, dtype=float)) > 0.5) if k >= 1]


@dataclass
class _Side:
    """Everything measured on one checkpoint: probe outputs (``probes.measure`` semantics) and the
    activations of the same forward pass over the grid."""

    ckpt: Checkpoint
    task: Any
    state_dict: dict[str, Tensor]
    probes: dict[str, dict[str, Any]]
    fwd: _Forward
    params: dict[str, Any]
    dead: np.ndarray  # [d_mlp] bool, last MLP layer: activation ≤ 0 on every input (fourier.neurons' rule)

    @classmethod
    def measure(cls, ckpt: Checkpoint, params: dict[str, Any] | None) -> _Side:
        from probes.registry import ProbeContext
        from probes.runner import measure_context, merged_params, resolve

        run = ckpt.run
        model, task = run.model_at(ckpt.step), run.task
        ctx = ProbeContext(model=model, task=task, step=ckpt.step, params=merged_params(params))
        results = measure_context(ctx, resolve(PROBE_NAMES))  # the same code path as probes.measure
        cache, n_layers = ctx.cache, model.cfg.n_layers
        fwd = _Forward(
            logits=ctx.logits,
            mlp=[cache["post", i][:, -1] for i in range(n_layers) if f"blocks.{i}.mlp.hook_post" in cache],
            resid=[cache["resid_post", i][:, -1] for i in range(n_layers)],
            pattern=[cache["pattern", i] for i in range(n_layers)],
        )
        dead = (fwd.mlp[-1].amax(0) <= 0).numpy() if fwd.mlp else np.zeros(0, dtype=bool)
        return cls(ckpt=ckpt, task=task, state_dict=model.state_dict(), probes=results, fwd=fwd, params=ctx.params,
                   dead=dead)

    def get(self, probe: str, name: str) -> Any:
        return self.probes[probe][name]

    def describe(self) -> dict[str, Any]:
        cfg = self.ckpt.run.config
        return {"label": self.ckpt.label, "run": str(self.ckpt.run.path), "name": self.ckpt.run.name,
                "step": self.ckpt.step, "op": cfg.get("op"), "p": self.task.p, "d_model": cfg.get("d_model"),
                "d_mlp": cfg.get("d_mlp"), "n_layers": cfg.get("n_layers"), "n_heads": cfg.get("n_heads")}


def _pair(sa: _Side, sb: _Side, probe: str, name: str) -> dict[str, Any]:
    return {"a": _plain(sa.get(probe, name)), "b": _plain(sb.get(probe, name))}


def fourier_section(sa: _Side, sb: _Side, aligned: bool) -> dict[str, Any]:
    """Fourier view, every number read from the ``fourier.*`` probes."""
    out: dict[str, Any] = {}
    for probe, key in (("fourier.embed", "embed"), ("fourier.logit_map", "logit_map")):
        out[key] = {"norms": _pair(sa, sb, probe, "norms"), "gini": _pair(sa, sb, probe, "gini")}
    ka, kb = _key_set(sa.get("fourier.key_freqs", "is_key")), _key_set(sb.get("fourier.key_freqs", "is_key"))
    out["key_freqs"] = {"a": ka, "b": kb, "gained": sorted(set(kb) - set(ka)), "kept": sorted(set(ka) & set(kb)),
                        "lost": sorted(set(ka) - set(kb))}
    out["logits"] = {n: _pair(sa, sb, "fourier.logits", n) for n in ("coef", "fve_key", "fve_all")}
    out["neurons"] = neuron_changes(sa, sb, aligned)
    return out


def neuron_changes(sa: _Side, sb: _Side, aligned: bool) -> dict[str, Any]:
    """Cluster sizes and counts (``fourier.neurons``) before/after and, for aligned neurons, which
    ones changed dominant frequency, died, revived, joined, left or switched a frequency cluster.
    A neuron is in the cluster of its dominant frequency if its FVE there is ≥ ``fve_threshold``."""
    thr = sa.params["fve_threshold"]
    out: dict[str, Any] = {"fve_threshold": thr}
    for name in ("cluster_sizes", "n_clustered", "frac_clustered", "n_dead"):
        out[name] = _pair(sa, sb, "fourier.neurons", name)
    out["d_mlp"] = {"a": len(sa.dead), "b": len(sb.dead)}  # 0 for attention-only models
    if not aligned or not len(sa.dead):
        return out

    def state(s: _Side) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        freq = np.asarray(s.get("fourier.neurons", "dominant_freq"), dtype=float)
        fve = np.asarray(s.get("fourier.neurons", "dominant_fve"), dtype=float)
        return freq, fve, s.dead

    fa, va, da = state(sa)
    fb, vb, db = state(sb)
    ca, cb = (va >= thr) & ~da, (vb >= thr) & ~db
    idx = lambda m: np.flatnonzero(m).tolist()
    out["per_neuron"] = {"dominant_freq": {"a": _plain(fa), "b": _plain(fb)},
                         "dominant_fve": {"a": _plain(va), "b": _plain(vb)},
                         "clustered": {"a": ca.astype(int).tolist(), "b": cb.astype(int).tolist()},
                         "dead": {"a": da.astype(int).tolist(), "b": db.astype(int).tolist()}}
    out["changed_freq"] = idx((fa != fb) & ~da & ~db)
    out["changed_freq_clustered"] = idx((fa != fb) & ca & cb)
    out["became_dead"], out["revived"] = idx(db & ~da), idx(da & ~db)
    out["joined_cluster"], out["left_cluster"] = idx(cb & ~ca), idx(ca & ~cb)
    return out


def behaviour_section(sa: _Side, sb: _Side, same_task: bool) -> dict[str, Any]:
    """Losses, accuracies, restricted/excluded loss and Σ‖W‖² (probes), and prediction flips."""
    metrics = [{"probe": probe, "name": name, "label": label, **_pair(sa, sb, probe, name)}
               for probe, name, label in BEHAVIOUR_METRICS]
    out: dict[str, Any] = {"metrics": metrics}
    if same_task:
        out["flips"] = prediction_flips(sa.fwd.logits, sb.fwd.logits, sa.task, sb.task)
    return out


def attention_section(sa: _Side, sb: _Side, aligned: bool) -> dict[str, Any]:
    """Per head, at the readout (``=``) query: entropy, effective number of attended tokens and sink
    share (share of readout attention on the ``=`` token) from ``attention.*`` probes; for aligned
    checkpoints the mean change of the readout pattern over the grid, as a p×p map per head and key."""

    def heads(s: _Side) -> dict[str, np.ndarray]:
        ent = np.asarray(s.get("attention.sparsity", "entropy"))[..., -1]  # [L, H] at the readout query
        eff = np.asarray(s.get("attention.sparsity", "eff_tokens"))[..., -1]
        sink = np.asarray(s.get("attention.sinks", "eq_share"))
        return {"entropy": ent, "eff_tokens": eff, "sink_share": sink}

    ha, hb = heads(sa), heads(sb)
    out: dict[str, Any] = {
        "readout_entropy": _pair(sa, sb, "attention.sparsity", "readout_entropy"),
        "readout_eff_tokens": _pair(sa, sb, "attention.sparsity", "readout_eff_tokens"),
        "sink_rate": _pair(sa, sb, "attention.sinks", "sink_rate"),
        "heads": {k: {"a": _plain(ha[k]), "b": _plain(hb[k])} for k in ha},
    }
    if aligned:
        p = sb.task.p
        # readout attention [L, H, S(keys), p, p]: B − A
        delta = torch.stack([(pb[:, :, -1] - pa[:, :, -1]) for pa, pb in zip(sa.fwd.pattern, sb.fwd.pattern)])
        n_layers, _, n_heads, n_keys = delta.shape
        maps = delta.permute(0, 2, 3, 1).reshape(n_layers, n_heads, n_keys, p, p)
        out["pattern_delta"] = {"keys": ["a", "b", "="][:n_keys],
                                "mean": _plain(delta.mean(1)),  # [L, H, S]
                                "max_abs": _plain(delta.abs().amax(1)),  # [L, H, S]
                                "map": _plain(maps.double().round(decimals=MAP_DECIMALS))}  # [L, H, S, p, p]
    return out


# ====================================================================== compare
def compare(a: Checkpoint | tuple[Run, int], b: Checkpoint | tuple[Run, int], *, top_k: int = TOP_K,
            params: dict[str, Any] | None = None) -> DiffReport:
    """Compare checkpoint ``a`` (before) with ``b`` (after); see the module docstring for the contents.
    ``params`` overrides probe parameters (``probes.DEFAULT_PARAMS``)."""
    ca, cb = Checkpoint.of(a), Checkpoint.of(b)
    sa, sb = _Side.measure(ca, params), _Side.measure(cb, params)
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
        "schema": SCHEMA_VERSION,
        "a": sa.describe(), "b": sb.describe(),
        "same_run": same_run, "aligned": aligned, "same_inputs": same_inputs, "same_task": same_task, "notes": notes,
        "params": _plain({k: v for k, v in sa.params.items() if isinstance(v, int | float | str)}),
        "weights": _plain(weight_stats(sa.state_dict, sb.state_dict, aligned)),
        "spectra": {"k": top_k, "matrices": _plain(spectra(sa.state_dict, sb.state_dict, top_k))},
        "fourier": fourier_section(sa, sb, aligned),
        "behaviour": behaviour_section(sa, sb, same_task),
        "attention": attention_section(sa, sb, aligned),
        "representation": _plain(representation(sa.fwd, sb.fwd)) if same_inputs else [],
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
    w = [r for r in d["weights"] if r["delta"] is not None]
    ssq = m["ssq_total"]
    if w:
        tot = math.sqrt(sum(r["delta"] ** 2 for r in w)) / math.sqrt(sum(r["norm_a"] ** 2 for r in w) or 1)
        top = max(w, key=lambda r: r["rel_change"] or 0)
        out.append(f"Weights moved by {100 * tot:.1f}% of their norm (most: {top['name']}, "
                   f"{100 * (top['rel_change'] or 0):.1f}%); "
                   f"{_movement('sum of squared weights', ssq['a'], ssq['b'])}.")
    else:
        out.append(f"{_movement('Sum of squared weights', ssq['a'], ssq['b'])}.")
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


# ====================================================================== CLI
def _checkpoints_from_args(args: argparse.Namespace) -> tuple[Checkpoint, Checkpoint]:
    targets, root = args.targets, args.root
    steps_given = args.from_step is not None or args.to_step is not None
    if len(targets) == 2:
        if steps_given or args.transition:
            raise UsageError("with two RUN@STEP arguments, drop --from/--to/--transition")
        return Checkpoint.parse(targets[0], root), Checkpoint.parse(targets[1], root)
    if len(targets) != 1:
        raise UsageError("expected RUN (with --from/--to or --transition) or RUN_A@STEP RUN_B@STEP")
    if "@" in targets[0] and not Path(targets[0]).is_dir():
        raise UsageError(f"{targets[0]!r}: give a second RUN@STEP to compare with, or RUN --from A --to B")
    run = open_run(targets[0], root)
    if args.transition:
        if steps_given:
            raise UsageError("--transition picks the steps itself; drop --from/--to")
        a, b = transition_steps(run)
        return Checkpoint(run, a), Checkpoint(run, b)
    if args.from_step is None or args.to_step is None:
        raise UsageError("give both --from STEP and --to STEP (or --transition)")
    return Checkpoint(run, parse_step(args.from_step, run)), Checkpoint(run, parse_step(args.to_step, run))


def _cmd_diff(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.top_k < 1:
        raise UsageError(f"--top-k: must be >= 1, got {args.top_k}")
    targets = [(Path(f), kind) for f, kind in ((args.html, "html"), (args.md, "md"), (args.json, "json")) if f]
    for path, _ in targets:  # fail before the (slow) comparison
        if not path.parent.is_dir():
            raise UsageError(f"cannot write {path}: no directory {path.parent}")
    a, b = _checkpoints_from_args(args)
    report = compare(a, b, top_k=args.top_k)
    if not targets:
        sys.stdout.write(report.to_markdown())
        return 0
    render = {"html": report.to_html, "md": report.to_markdown, "json": lambda: report.to_json(indent=1)}
    for path, kind in targets:
        try:
            path.write_text(render[kind]())
        except OSError as e:
            raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
        print(f"wrote {path}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``grokscope diff``."""
    p = subparsers.add_parser(
        "diff", help="compare two checkpoints (weights, Fourier, behaviour, attention, CKA)",
        description="Compare two checkpoints of a run (RUN --from A --to B, or RUN --transition) or of two "
                    "runs (RUN_A@STEP RUN_B@STEP). Writes a self-contained HTML report, Markdown and/or JSON; "
                    "with no output flag prints the Markdown summary.")
    p.add_argument("targets", nargs="+", metavar="RUN | RUN@STEP",
                   help="a run directory (or name under --root), or two RUN@STEP (STEP: integer, first, last)")
    p.add_argument("--from", dest="from_step", metavar="STEP", help="the 'before' checkpoint")
    p.add_argument("--to", dest="to_step", metavar="STEP", help="the 'after' checkpoint")
    p.add_argument("--transition", action="store_true",
                   help="compare the end of memorisation with the end of cleanup (probes.phases)")
    p.add_argument("--html", metavar="FILE", help="write the HTML report (one file, opens offline)")
    p.add_argument("--md", metavar="FILE", help="write the Markdown summary")
    p.add_argument("--json", metavar="FILE", help="write every number as JSON")
    p.add_argument("--top-k", type=int, default=TOP_K, help=f"singular values per matrix (default {TOP_K})")
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="where run names are looked up (default checkpoints/)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.set_defaults(func=_cmd_diff)
