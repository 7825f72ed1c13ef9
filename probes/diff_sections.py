"""The sections of a checkpoint diff report (:func:`probes.diff.compare`): weights, spectra,
representation similarity (CKA), behaviour (prediction flips), and the Fourier and attention views read
from the probes. Every function returns plain JSON values (see :func:`plain`)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp.store import Run
from probes.registry import ProbeContext
from probes.runner import measure_context, merged_params, resolve

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


@torch.no_grad()
def top_singular_values(mats: Sequence[Tensor], k: int = TOP_K) -> list[list[float]]:
    """The ``k`` largest singular values of each matrix (fewer if it has lower rank), in float64.
    Matrices of equal shape go through one batched ``torch.linalg.svdvals`` call."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, m in enumerate(mats):
        groups[tuple(m.shape)].append(i)
    out: list[list[float]] = [[] for _ in mats]
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
class Forward:
    """What a report needs from one full-grid forward (``ProbeContext.cache``): logits at ``=`` and
    activations at the readout position, and the attention patterns."""

    logits: Tensor  # [p², d_vocab_out]
    mlp: list[Tensor]  # per layer [p², d_mlp] MLP activations (hook_post) at the readout position
    resid: list[Tensor]  # per layer [p², d_model] resid_post at the readout position
    pattern: list[Tensor]  # per layer [p², H, S, S]


def representation(fa: Forward, fb: Forward) -> list[dict[str, Any]]:
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
def plain(x: Any) -> Any:
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
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    if isinstance(x, np.generic):
        return plain(x.item())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x



# ====================================================================== probes
def _key_set(is_key: Any) -> list[int]:
    """Frequencies k ≥ 1 flagged by ``fourier.key_freqs``'s ``is_key`` [K+1]."""
    return [int(k) for k in np.flatnonzero(np.nan_to_num(np.asarray(is_key, dtype=float)) > 0.5) if k >= 1]


@dataclass
class Side:
    """Everything measured on one checkpoint: probe outputs (``probes.measure`` semantics) and the
    activations of the same forward pass over the grid."""

    run: Run
    step: int
    task: Any
    state_dict: dict[str, Tensor]
    probes: dict[str, dict[str, Any]]
    fwd: Forward
    params: dict[str, Any]
    dead: np.ndarray  # [d_mlp] bool, last MLP layer: activation ≤ 0 on every input (fourier.neurons' rule)

    @classmethod
    def measure(cls, run: Run, step: int, params: dict[str, Any] | None) -> Side:
        model, task = run.model_at(step), run.task
        ctx = ProbeContext(model=model, task=task, step=step, params=merged_params(params))
        results = measure_context(ctx, resolve(PROBE_NAMES))  # the same code path as probes.measure
        cache, n_layers = ctx.cache, model.cfg.n_layers
        fwd = Forward(
            logits=ctx.logits,
            mlp=[cache["post", i][:, -1] for i in range(n_layers) if f"blocks.{i}.mlp.hook_post" in cache],
            resid=[cache["resid_post", i][:, -1] for i in range(n_layers)],
            pattern=[cache["pattern", i] for i in range(n_layers)],
        )
        dead = (fwd.mlp[-1].amax(0) <= 0).numpy() if fwd.mlp else np.zeros(0, dtype=bool)
        return cls(run=run, step=step, task=task, state_dict=model.state_dict(), probes=results, fwd=fwd,
                   params=ctx.params, dead=dead)

    def get(self, probe: str, name: str) -> Any:
        return self.probes[probe][name]

    def describe(self) -> dict[str, Any]:
        cfg = self.run.config
        return {"label": f"{self.run.name}@{self.step}", "run": str(self.run.path), "name": self.run.name,
                "step": self.step, "op": cfg.get("op"), "p": self.task.p, "d_model": cfg.get("d_model"),
                "d_mlp": cfg.get("d_mlp"), "n_layers": cfg.get("n_layers"), "n_heads": cfg.get("n_heads")}


def _pair(sa: Side, sb: Side, probe: str, name: str) -> dict[str, Any]:
    return {"a": plain(sa.get(probe, name)), "b": plain(sb.get(probe, name))}


def fourier_section(sa: Side, sb: Side, aligned: bool) -> dict[str, Any]:
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


def neuron_changes(sa: Side, sb: Side, aligned: bool) -> dict[str, Any]:
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

    def state(s: Side) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        freq = np.asarray(s.get("fourier.neurons", "dominant_freq"), dtype=float)
        fve = np.asarray(s.get("fourier.neurons", "dominant_fve"), dtype=float)
        return freq, fve, s.dead

    fa, va, da = state(sa)
    fb, vb, db = state(sb)
    ca, cb = (va >= thr) & ~da, (vb >= thr) & ~db
    idx = lambda m: np.flatnonzero(m).tolist()
    out["per_neuron"] = {"dominant_freq": {"a": plain(fa), "b": plain(fb)},
                         "dominant_fve": {"a": plain(va), "b": plain(vb)},
                         "clustered": {"a": ca.astype(int).tolist(), "b": cb.astype(int).tolist()},
                         "dead": {"a": da.astype(int).tolist(), "b": db.astype(int).tolist()}}
    out["changed_freq"] = idx((fa != fb) & ~da & ~db)
    out["changed_freq_clustered"] = idx((fa != fb) & ca & cb)
    out["became_dead"], out["revived"] = idx(db & ~da), idx(da & ~db)
    out["joined_cluster"], out["left_cluster"] = idx(cb & ~ca), idx(ca & ~cb)
    return out


def behaviour_section(sa: Side, sb: Side, same_task: bool) -> dict[str, Any]:
    """Losses, accuracies, restricted/excluded loss and Σ‖W‖² (probes), and prediction flips."""
    metrics = [{"probe": probe, "name": name, "label": label, **_pair(sa, sb, probe, name)}
               for probe, name, label in BEHAVIOUR_METRICS]
    out: dict[str, Any] = {"metrics": metrics}
    if same_task:
        out["flips"] = prediction_flips(sa.fwd.logits, sb.fwd.logits, sa.task, sb.task)
    return out


def attention_section(sa: Side, sb: Side, aligned: bool) -> dict[str, Any]:
    """Per head, at the readout (``=``) query: entropy, effective number of attended tokens and sink
    share (share of readout attention on the ``=`` token) from ``attention.*`` probes; for aligned
    checkpoints the mean change of the readout pattern over the grid, as a p×p map per head and key."""

    def heads(s: Side) -> dict[str, np.ndarray]:
        ent = np.asarray(s.get("attention.sparsity", "entropy"))[..., -1]  # [L, H] at the readout query
        eff = np.asarray(s.get("attention.sparsity", "eff_tokens"))[..., -1]
        sink = np.asarray(s.get("attention.sinks", "eq_share"))
        return {"entropy": ent, "eff_tokens": eff, "sink_share": sink}

    ha, hb = heads(sa), heads(sb)
    out: dict[str, Any] = {
        "readout_entropy": _pair(sa, sb, "attention.sparsity", "readout_entropy"),
        "readout_eff_tokens": _pair(sa, sb, "attention.sparsity", "readout_eff_tokens"),
        "sink_rate": _pair(sa, sb, "attention.sinks", "sink_rate"),
        "heads": {k: {"a": plain(ha[k]), "b": plain(hb[k])} for k in ha},
    }
    if aligned:
        p = sb.task.p
        # readout attention [L, H, S(keys), p, p]: B − A
        delta = torch.stack([(pb[:, :, -1] - pa[:, :, -1]) for pa, pb in zip(sa.fwd.pattern, sb.fwd.pattern)])
        n_layers, _, n_heads, n_keys = delta.shape
        maps = delta.permute(0, 2, 3, 1).reshape(n_layers, n_heads, n_keys, p, p)
        out["pattern_delta"] = {"keys": ["a", "b", "="][:n_keys],
                                "mean": plain(delta.mean(1)),  # [L, H, S]
                                "max_abs": plain(delta.abs().amax(1)),  # [L, H, S]
                                "map": plain(maps.double().round(decimals=MAP_DECIMALS))}  # [L, H, S, p, p]
    return out


