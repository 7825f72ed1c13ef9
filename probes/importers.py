"""Import foreign checkpoints as a grokscope run directory.

Two layouts are understood (keys as in each project's ``Transformer``):

``tl``  TransformerLens ``HookedTransformer`` state dicts, already grokscope's layout:
        embed.W_E [d_vocab, d], pos_embed.W_pos [n_ctx, d], blocks.{l}.attn.W_Q/W_K/W_V [h, d, e],
        blocks.{l}.attn.W_O [h, e, d], blocks.{l}.mlp.W_in [d, m], blocks.{l}.mlp.W_out [m, d],
        unembed.W_U [d, d_vocab_out], optional biases and ln1/ln2/ln_final; buffers attn.mask and
        attn.IGNORE are dropped.
``nanda2023``  the progress-measures paper's code (Nanda et al. 2023, arXiv:2301.05217,
        ``transformers.py``): embed.W_E [d, d_vocab], attn.W_Q/W_K/W_V [h, e, d],
        attn.W_O [d, h·e] (heads major), mlp.W_in [m, d], mlp.W_out [d, m], unembed.W_U [d, p+1]
        (the extra ``=`` column is dropped, as the paper does with ``logits[:, :, :-1]``).

A file may hold one state dict, ``{"model": sd, "epoch": n}``, a list of either, or
``{"checkpoints": [sd, ...], "checkpoint_epochs": [...]}`` (the paper's and TL demo's
``full_run_data``). Files are read with ``torch.load(weights_only=True)`` only. The model
config is inferred from the shapes; the task (op, p, split) comes from the options, since
the files do not record it in a form we can trust. The split is grokscope's own seeded
split, not the original run's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from interp.config import TrainConfig
from interp.errors import ConfigError, StoreError
from interp.metrics import METRIC_COLUMNS
from interp.store import Run, sha256_bytes

FORMATS = ("tl", "nanda2023")
DROPPED_BUFFERS = re.compile(r"blocks\.\d+\.attn\.(mask|IGNORE)$")
StateDict = dict[str, Tensor]


# ------------------------------------------------------------------ reading files
def read_checkpoints(path: str | os.PathLike) -> list[tuple[int, StateDict]]:
    """(step, state dict) pairs held by a foreign file, sorted by step."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StoreError(f"no file at {path}") from None
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StoreError(f"{path}: cannot be read with torch.load(weights_only=True): {first}") from None
    found = _checkpoints_in(obj)
    if not found:
        raise StoreError(f"{path}: found no state dict (expected a state dict, {{'model': ...}}, "
                         "a list of them or {'checkpoints': [...]})")
    steps = [s for s, _ in found]
    if len(set(steps)) != len(steps):
        raise StoreError(f"{path}: two checkpoints share step {next(s for s in steps if steps.count(s) > 1)}")
    return sorted(found, key=lambda x: x[0])


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _checkpoints_in(obj: Any) -> list[tuple[int, StateDict]]:
    if _is_state_dict(obj):
        return [(0, obj)]
    if isinstance(obj, dict):
        for key in ("checkpoints", "state_dicts"):
            if isinstance(obj.get(key), (list, tuple)):
                return _listed(obj[key], obj.get("checkpoint_epochs", obj.get("checkpoint_steps")))
        if _is_state_dict(obj.get("model")):
            return [(int(obj.get("epoch", obj.get("step", 0))), obj["model"])]
    if isinstance(obj, (list, tuple)):
        return _listed(obj, None)
    return []


def _listed(items: Sequence[Any], steps: Sequence[int] | Tensor | None) -> list[tuple[int, StateDict]]:
    """Checkpoints of a list of state dicts or ``{"model", "epoch"}`` dicts; step = given step,
    else the item's epoch, else its index."""
    if steps is not None and len(steps) != len(items):
        raise StoreError(f"{len(items)} checkpoints but {len(steps)} checkpoint epochs")
    out = []
    for i, item in enumerate(items):
        step = int(steps[i]) if steps is not None else i
        if _is_state_dict(item):
            out.append((step, item))
        elif isinstance(item, dict) and _is_state_dict(item.get("model")):
            out.append((int(item.get("epoch", item.get("step", step))) if steps is None else step, item["model"]))
    return out


# ------------------------------------------------------------------ layout conversion
def from_tl(sd: StateDict, p: int) -> StateDict:
    """A TransformerLens state dict in grokscope's layout: buffers dropped, W_U/b_U cut to p classes."""
    out = {k: v for k, v in sd.items() if not DROPPED_BUFFERS.search(k)}
    return _cut_unembed(out, p)


def from_nanda2023(sd: StateDict, p: int) -> StateDict:
    """The 2023 paper's layout (see module docstring) converted to grokscope's (TransformerLens's)."""
    out: StateDict = {}
    rest = {k: v for k, v in sd.items() if not DROPPED_BUFFERS.search(k)}
    take = rest.pop
    out["embed.W_E"] = take("embed.W_E").T  # [d, v] -> [v, d]
    out["pos_embed.W_pos"] = take("pos_embed.W_pos")
    out["unembed.W_U"] = take("unembed.W_U")
    layers = sorted({int(m.group(1)) for k in rest if (m := re.match(r"blocks\.(\d+)\.", k))})
    for layer in layers:
        pre = f"blocks.{layer}."
        for name in ("W_Q", "W_K", "W_V"):
            out[pre + f"attn.{name}"] = take(pre + f"attn.{name}").transpose(1, 2)  # [h, e, d] -> [h, d, e]
        n_heads, d_head = out[pre + "attn.W_Q"].shape[0], out[pre + "attn.W_Q"].shape[2]
        w_o = take(pre + "attn.W_O")  # [d, h·e], column index head·e + i
        out[pre + "attn.W_O"] = w_o.T.reshape(n_heads, d_head, w_o.shape[0])
        if pre + "mlp.W_in" in rest:
            out[pre + "mlp.W_in"] = take(pre + "mlp.W_in").T  # [m, d] -> [d, m]
            out[pre + "mlp.W_out"] = take(pre + "mlp.W_out").T  # [d, m] -> [m, d]
            for bias in ("b_in", "b_out"):
                if pre + f"mlp.{bias}" in rest:
                    out[pre + f"mlp.{bias}"] = take(pre + f"mlp.{bias}")
    if rest:
        raise ConfigError(f"nanda2023: unexpected key {sorted(rest)[0]!r} in the state dict")
    return _cut_unembed(out, p)


def _cut_unembed(sd: StateDict, p: int) -> StateDict:
    w_u = sd.get("unembed.W_U")
    if w_u is None:
        raise ConfigError("state dict has no unembed.W_U")
    if w_u.shape[1] not in (p, p + 1):
        raise ConfigError(f"unembed.W_U has {w_u.shape[1]} output columns; expected p={p} or p+1")
    sd = {**sd, "unembed.W_U": w_u[:, :p]}
    if "unembed.b_U" in sd:
        sd["unembed.b_U"] = sd["unembed.b_U"][:p]
    return sd


# ------------------------------------------------------------------ config inference
def infer_config(sds: Sequence[StateDict], *, op: str, p: int | None, frac_train: float, data_seed: int,
                 act_fn: str, n_steps: int) -> TrainConfig:
    """A TrainConfig whose model has exactly the parameters of ``sds`` (grokscope layout)."""
    sd = sds[0]
    d_vocab, d_model = _shape(sd, "embed.W_E", 2)
    if p is not None and d_vocab != p + 1:
        raise ConfigError(f"p: embed.W_E holds {d_vocab} tokens, so p = {d_vocab - 1}, not {p}")
    n_ctx = _shape(sd, "pos_embed.W_pos", 2)[0]
    if n_ctx != 3:
        raise ConfigError(f"pos_embed.W_pos has {n_ctx} positions; grokscope models read (a, b, =), 3 positions")
    n_layers = sum(1 for k in sd if re.fullmatch(r"blocks\.\d+\.attn\.W_Q", k))
    n_heads, _, d_head = _shape(sd, "blocks.0.attn.W_Q", 3)
    attn_only = "blocks.0.mlp.W_in" not in sd
    d_mlp = 4 * d_model if attn_only else _shape(sd, "blocks.0.mlp.W_in", 2)[1]

    def used(pattern: str) -> bool:  # present and non-zero in some checkpoint
        return any(re.fullmatch(pattern, k) and bool(v.any()) for s in sds for k, v in s.items())

    return TrainConfig(
        op=op, p=d_vocab - 1, frac_train=frac_train, data_seed=data_seed, d_model=d_model, n_heads=n_heads,
        d_head=d_head, d_mlp=d_mlp, n_layers=n_layers, act_fn=act_fn, layernorm="blocks.0.ln1.w" in sd,
        attn_only=attn_only, attn_bias=used(r"blocks\.\d+\.attn\.b_[QKVO]"),
        mlp_bias=not attn_only and "blocks.0.mlp.b_in" in sd, unembed_bias=used(r"unembed\.b_U"),
        dtype="float64" if sd["embed.W_E"].dtype == torch.float64 else "float32", n_steps=n_steps,
    )


def _shape(sd: StateDict, key: str, ndim: int) -> tuple[int, ...]:
    if key not in sd:
        raise ConfigError(f"state dict has no {key}")
    if sd[key].ndim != ndim:
        raise ConfigError(f"{key}: expected {ndim} dimensions, got shape {tuple(sd[key].shape)}")
    return tuple(sd[key].shape)


def fit_to_model(sd: StateDict, cfg: TrainConfig) -> StateDict:
    """``sd`` restricted to the model's parameters (unused zero biases dropped), in its dtype;
    a missing or unexpected key, or a wrong shape, raises ConfigError naming it."""
    expected = cfg.build_model().state_dict()
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected and not (re.search(r"\.b_\w+$", k) and not sd[k].any())]
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected key {extra[0]!r}"
        raise ConfigError(f"state dict does not fit the inferred model: {what}")
    for k, v in expected.items():
        if sd[k].shape != v.shape:
            raise ConfigError(f"{k}: shape {tuple(sd[k].shape)} does not fit the inferred model's {tuple(v.shape)}")
    return {k: sd[k].to(v.dtype).contiguous() for k, v in expected.items()}


# ------------------------------------------------------------------ the import
def import_checkpoints(file: str | os.PathLike, fmt: str, out: str | os.PathLike, *, op: str = "add",
                       p: int | None = None, frac_train: float = 0.3, data_seed: int = 0,
                       act_fn: str = "relu") -> Run:
    """Create run directory ``out`` from a foreign checkpoint file (see module docstring) with one
    checkpoint per state dict, and metrics (train/test loss and accuracy) at each checkpoint."""
    if fmt not in FORMATS:
        raise ConfigError(f"format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    found = read_checkpoints(file)
    embed_p = _infer_p(found[0][1], fmt)
    if p is not None and p != embed_p:
        raise ConfigError(f"p: embed.W_E holds {embed_p + 1} tokens, so p = {embed_p}, not {p}")
    p = embed_p
    convert = from_tl if fmt == "tl" else from_nanda2023
    converted = [(step, convert(sd, p)) for step, sd in found]
    cfg = infer_config([sd for _, sd in converted], op=op, p=p, frac_train=frac_train, data_seed=data_seed,
                       act_fn=act_fn, n_steps=converted[-1][0])
    task = cfg.task()
    run = Run.create(out, {
        "name": Path(out).name, "config": cfg.to_dict(), "status": "imported",
        "split": {"data_seed": data_seed, "frac_train": frac_train, "train_idx": task.train_idx.tolist()},
        "model": {"params": cfg.build_model().param_count()},
        "checkpoint_schedule": [s for s, _ in converted],
        "imported": {"file": str(Path(file).resolve()), "format": fmt,
                     "sha256": sha256_bytes(Path(file).read_bytes())},
    })
    model, rows = cfg.build_model().eval(), []
    for step, sd in converted:
        weights = fit_to_model(sd, cfg)
        model.load_state_dict(weights)
        metrics = _evaluate(model, task)
        run.save_checkpoint(step, weights, {**metrics, "imported_from": Path(file).name})
        rows.append({"step": step, **metrics})
    run.write_metrics(pd.DataFrame(rows).reindex(columns=METRIC_COLUMNS))
    return run


def _infer_p(sd: StateDict, fmt: str) -> int:
    w_e = sd.get("embed.W_E")
    if w_e is None or w_e.ndim != 2:
        raise ConfigError("state dict has no 2-D embed.W_E")
    return (w_e.shape[0] if fmt == "tl" else w_e.shape[1]) - 1


@torch.no_grad()
def _evaluate(model, task) -> dict[str, float]:
    logits = model.forward_last(task.inputs).double()  # [p², p]
    out = {}
    for split, mask in (("train", task.train_mask), ("test", task.test_mask)):
        y = task.labels[mask]
        out[f"{split}_loss"] = F.cross_entropy(logits[mask], y).item() if len(y) else float("nan")
        out[f"{split}_acc"] = (logits[mask].argmax(-1) == y).double().mean().item() if len(y) else float("nan")
    return out
