"""Import foreign checkpoints as a grokscope run directory, keeping what the file says.

Two layouts are understood (keys as in each project's ``Transformer``):

``tl``  TransformerLens ``HookedTransformer`` state dicts, already grokscope's layout:
        embed.W_E [d_vocab, d], pos_embed.W_pos [n_ctx, d], blocks.{l}.attn.W_Q/W_K/W_V [h, d, e],
        blocks.{l}.attn.W_O [h, e, d], blocks.{l}.mlp.W_in [d, m], blocks.{l}.mlp.W_out [m, d],
        unembed.W_U [d, d_vocab_out], optional biases and ln1/ln2/ln_final; buffers attn.mask and
        attn.IGNORE are dropped.
``nanda2023``  the progress-measures paper's code (Nanda et al. 2023, arXiv:2301.05217,
        ``transformers.py``): embed.W_E [d, d_vocab], attn.W_Q/W_K/W_V [h, e, d],
        attn.W_O [d, h·e] (heads major), mlp.W_in [m, d], mlp.W_out [d, m], unembed.W_U [d, p+1].

A W_U with p + 1 columns (the ``=`` token is an output class, as in the paper's code) is kept: the
run's config gets ``output_eq=True``, so its losses are the file's own (softmax over p + 1
classes); the probes read the p answer columns, as the paper's metrics do.

What a file may hold (read with ``torch.load(weights_only=True)`` only; anything else is refused):

* weights: one state dict; ``{"model": sd, "epoch": n}`` (the paper's ``final.pth``, and its
  per-epoch saves); a list of either; or ``{"checkpoints": [sd, ...], "checkpoint_epochs": [...]}``.
  Steps are the stored epochs as they are (the paper's per-epoch saves hold the weights after that
  epoch's update, i.e. step epoch + 1 in grokscope's convention; the final save's ``epoch`` is
  ``num_epochs``, already the step of its weights).
* ``config``: a dict of the paper's ``Config`` fields: p, fn_name (or op/operation), frac_train, seed
  (the split's, kept as data_seed), lr, weight_decay, num_epochs (the run's n_steps), act_type.
* ``optimizer``: an optimizer state dict; its ``param_groups[0]["weight_decay"]`` is the weight decay
  actually used, and wins (with one warning line) where it disagrees with ``config``.
* ``train_losses`` / ``test_losses``: per-epoch loss curves, written as metrics rows (step = epoch,
  the loss of the weights before that epoch's update, grokscope's row convention); a file may hold
  only these (then the run has metrics and no checkpoints).
* ``train_indices`` (grid indices ``a·p + b``) or ``train_data`` / ``train`` (``(a, b, p)`` triples):
  the split itself. It is recorded as ``nanda2023`` or ``grokscope`` when one of those schemes gives
  it, else as an ``explicit`` split (indices and SHA-256 in run.json).

Without a stored split the ``nanda2023`` format uses the paper's split scheme and ``tl`` grokscope's
(``split=`` overrides). Options given to :func:`import_checkpoints` override the file's config.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from interp.atomic import sha256_bytes
from interp.config import TrainConfig, lr_at
from interp.errors import ConfigError, StoreError
from interp.losses import cross_entropy
from interp.metrics import METRIC_COLUMNS
from interp.store import Run, split_record

FORMATS = ("tl", "nanda2023")
DROPPED_BUFFERS = re.compile(r"blocks\.\d+\.attn\.(mask|IGNORE)$")
StateDict = dict[str, Tensor]


# ------------------------------------------------------------------ reading files
def read_checkpoints(path: str | os.PathLike) -> list[tuple[int, StateDict]]:
    """(step, state dict) pairs held by a foreign file, sorted by step."""
    found = _checkpoints_in(read_file(path))
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
    """A TransformerLens state dict in grokscope's layout: buffers dropped; W_U has p or p + 1 classes."""
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
    """``sd`` after checking that W_U has p or p + 1 (``=`` included) output columns; kept as is."""
    w_u = sd.get("unembed.W_U")
    if w_u is None:
        raise ConfigError("state dict has no unembed.W_U")
    if w_u.ndim != 2 or w_u.shape[1] not in (p, p + 1):
        raise ConfigError(f"unembed.W_U has shape {tuple(w_u.shape)}; expected p={p} or p+1 output columns")
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
        output_eq=sd["unembed.W_U"].shape[1] == d_vocab,
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


# ------------------------------------------------------------------ what else the file says
#: the paper's ``fn_name`` (and other spellings) -> grokscope's op
OP_NAMES = {"add": "add", "subtract": "sub", "sub": "sub", "multiply": "mul", "mul": "mul", "divide": "div",
            "div": "div", "x2xyy2": "x2_xy_y2", "x2_xy_y2": "x2_xy_y2", "x2_plus_y2": "x2_plus_y2",
            "x3_xy": "x3_xy", "rand": "rand"}
#: TrainConfig field <- the keys a file's ``config`` may hold it under, first found wins
CONFIG_KEYS = {"p": ("p",), "op": ("fn_name", "op", "operation", "fn"), "frac_train": ("frac_train",),
               "data_seed": ("seed", "data_seed"), "lr": ("lr",), "weight_decay": ("weight_decay", "wd"),
               "n_steps": ("num_epochs", "n_steps"), "act_fn": ("act_type", "act_fn")}


def file_config(obj: Any) -> dict[str, Any]:
    """TrainConfig fields from the file's ``config`` dict (the paper's Config fields; module docstring)."""
    raw = obj.get("config") if isinstance(obj, dict) else None
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Any] = {}
    for name, keys in CONFIG_KEYS.items():
        key = next((k for k in keys if raw.get(k) is not None), None)
        if key is not None:
            out[name] = raw[key]
    if "op" in out:
        if str(out["op"]) not in OP_NAMES:
            raise ConfigError(f"op: the file's operation {out['op']!r} is not one grokscope knows "
                              f"({', '.join(sorted(OP_NAMES))})")
        out["op"] = OP_NAMES[str(out["op"])]
    if "act_fn" in out:
        out["act_fn"] = str(out["act_fn"]).lower()
    for name, kind in (("p", int), ("frac_train", float), ("data_seed", int), ("lr", float),
                       ("weight_decay", float), ("n_steps", int)):
        if name in out:
            out[name] = kind(out[name])
    return out


def optimizer_weight_decay(obj: Any) -> float | None:
    """``param_groups[0]["weight_decay"]`` of the file's optimizer state dict, or None."""
    opt = obj.get("optimizer") if isinstance(obj, dict) else None
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    if isinstance(groups, (list, tuple)) and groups and isinstance(groups[0], dict):
        wd = groups[0].get("weight_decay")
        return None if wd is None else float(wd)
    return None


def loss_curves(obj: Any) -> pd.DataFrame | None:
    """Rows (step = epoch, train_loss, test_loss) of the file's per-epoch loss curves, or None."""
    if not isinstance(obj, dict):
        return None
    cols = {}
    for name in ("train_losses", "test_losses"):
        v = obj.get(name)
        if isinstance(v, (list, tuple, Tensor)) and len(v):
            cols[name[:-2]] = [float(x) for x in v]
    if not cols:
        return None
    n = max(len(v) for v in cols.values())
    df = pd.DataFrame({"step": range(n)})
    for name, values in cols.items():
        df[name] = values + [float("nan")] * (n - len(values))
    return df


def stored_split(obj: Any, p: int) -> list[int] | None:
    """Sorted grid indices of the file's own train split (``train_indices``, or ``train_data`` /
    ``train`` as (a, b, p) triples), or None."""
    if not isinstance(obj, dict):
        return None
    idx = obj.get("train_indices")
    if isinstance(idx, (list, tuple, Tensor)) and len(idx):
        cells = [int(i) for i in (idx.reshape(-1).tolist() if isinstance(idx, Tensor) else idx)]
    else:
        data = next((obj[k] for k in ("train_data", "train") if isinstance(obj.get(k), (list, tuple, Tensor))), None)
        if data is None or not len(data):
            return None
        rows = data.tolist() if isinstance(data, Tensor) else data
        cells = [int(r[0]) * p + int(r[1]) for r in rows]
    if any(not 0 <= c < p * p for c in cells) or len(set(cells)) != len(cells):
        raise StoreError(f"the file's train split is not a set of distinct grid indices for p = {p}")
    return sorted(cells)


def _split_scheme(cells: list[int], cfg: TrainConfig) -> str:
    """The seeded scheme that gives ``cells`` with cfg's seed and fraction, else "explicit"."""
    for scheme in ("nanda2023", "grokscope"):
        if cfg.replace(split=scheme).task().train_idx.tolist() == cells:
            return scheme
    return "explicit"


# ------------------------------------------------------------------ the import
def read_file(path: str | os.PathLike) -> Any:
    """The object a foreign file holds, loaded with ``torch.load(weights_only=True)`` only."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StoreError(f"no file at {path}") from None
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StoreError(f"{path}: cannot be read with torch.load(weights_only=True) (refusing to unpickle "
                         f"anything else): {first}") from None


def import_checkpoints(file: str | os.PathLike, fmt: str, out: str | os.PathLike, *, op: str | None = None,
                       p: int | None = None, frac_train: float | None = None, data_seed: int | None = None,
                       act_fn: str | None = None, split: str | None = None) -> Run:
    """Create run directory ``out`` from a foreign file (module docstring): one checkpoint per state
    dict, the file's config, optimizer weight decay, split and loss curves; metrics rows from the
    curves and from evaluating each checkpoint. Options that are not None override the file."""
    if fmt not in FORMATS:
        raise ConfigError(f"format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    obj = read_file(file)
    found, curves = _checkpoints_in(obj), loss_curves(obj)
    if not found and curves is None:
        raise StoreError(f"{file}: found no state dict and no loss curves (expected a state dict, "
                         "{'model': ...}, a list of them, {'checkpoints': [...]} or 'train_losses')")
    given = {k: v for k, v in {"op": op, "p": p, "frac_train": frac_train, "data_seed": data_seed,
                               "act_fn": act_fn}.items() if v is not None}
    fields_ = {**file_config(obj), **given}
    notes = _weight_decay(fields_, optimizer_weight_decay(obj))
    cfg, converted = _config(found, fmt, fields_, curves)
    cells = stored_split(obj, cfg.p)
    if cells is not None:
        cfg = cfg.replace(split=_split_scheme(cells, cfg))
    elif split is not None or fmt == "nanda2023":
        cfg = cfg.replace(split=split or "nanda2023")
    task = cfg.task() if cfg.split != "explicit" else replace(cfg.task(), train_cells=tuple(cells))
    run = Run.create(out, {
        "name": Path(out).name, "config": cfg.to_dict(), "status": "imported",
        "split": split_record(cfg, task.train_idx.tolist()),
        "model": {"params": cfg.build_model().param_count()},
        "checkpoint_schedule": [s for s, _ in converted],
        "imported": {"file": str(Path(file).resolve()), "format": fmt, "sha256": sha256_bytes(Path(file).read_bytes()),
                     "config_from_file": file_config(obj), **notes},
    })
    rows = _save_checkpoints(run, cfg, task, converted, Path(file).name)
    run.write_metrics(_metrics(cfg, rows, curves))
    return run


def _weight_decay(fields_: dict[str, Any], opt_wd: float | None) -> dict[str, Any]:
    """Put the optimizer's weight decay into ``fields_`` (warning once where the config's differs)."""
    if opt_wd is None:
        return {}
    cfg_wd = fields_.get("weight_decay")
    if cfg_wd is not None and not math.isclose(cfg_wd, opt_wd, rel_tol=1e-9, abs_tol=0.0):
        warnings.warn(f"weight decay: the file's config says {cfg_wd:g} but its optimizer used {opt_wd:g}; "
                      f"recording {opt_wd:g}", stacklevel=3)
    fields_["weight_decay"] = opt_wd
    return {"weight_decay_config": cfg_wd, "weight_decay_optimizer": opt_wd}


def _config(found: list[tuple[int, StateDict]], fmt: str, fields_: dict[str, Any],
            curves: pd.DataFrame | None) -> tuple[TrainConfig, list[tuple[int, StateDict]]]:
    """The run's TrainConfig (architecture from the weights' shapes, the rest from ``fields_``) and
    the state dicts in grokscope's layout."""
    steps = [s for s, _ in found]
    if len(set(steps)) != len(steps):
        raise StoreError(f"two checkpoints share step {next(s for s in steps if steps.count(s) > 1)}")
    found = sorted(found, key=lambda x: x[0])
    paper = {"warmup_from_zero": True} if fmt == "nanda2023" else {}
    last = max([found[-1][0] if found else 0, len(curves) - 1 if curves is not None else 0])
    n_steps = int(fields_.get("n_steps", last))
    task_fields = {k: fields_[k] for k in ("op", "frac_train", "data_seed", "lr", "weight_decay") if k in fields_}
    if not found:  # loss curves alone: the architecture is the preset's
        base = TrainConfig(output_eq=fmt == "nanda2023", **paper)
        p = int(fields_.get("p", base.p))
        extra = {"act_fn": fields_["act_fn"]} if "act_fn" in fields_ else {}
        return base.replace(p=p, n_steps=n_steps, seed=int(fields_.get("data_seed", 0)), **task_fields, **extra), []
    embed_p = _infer_p(found[0][1], fmt)
    if fields_.get("p", embed_p) != embed_p:
        raise ConfigError(f"p: embed.W_E holds {embed_p + 1} tokens, so p = {embed_p}, not {fields_['p']}")
    convert = from_tl if fmt == "tl" else from_nanda2023
    converted = [(step, convert(sd, embed_p)) for step, sd in found]
    cfg = infer_config([sd for _, sd in converted], op=fields_.get("op", "add"), p=embed_p,
                       frac_train=fields_.get("frac_train", 0.3), data_seed=fields_.get("data_seed", 0),
                       act_fn=fields_.get("act_fn", "relu"), n_steps=max(n_steps, converted[-1][0]))
    return cfg.replace(seed=cfg.data_seed, **task_fields, **paper), converted


def _save_checkpoints(run: Run, cfg: TrainConfig, task, converted: list[tuple[int, StateDict]],
                      source: str) -> list[dict[str, Any]]:
    model, rows = cfg.build_model().eval(), []
    for step, sd in converted:
        weights = fit_to_model(sd, cfg)
        model.load_state_dict(weights)
        metrics = _evaluate(model, task, cfg)
        run.save_checkpoint(step, weights, {**metrics, "imported_from": source})
        rows.append({"step": step, **metrics})
    return rows


def _metrics(cfg: TrainConfig, rows: list[dict[str, Any]], curves: pd.DataFrame | None) -> pd.DataFrame:
    """Metrics rows: the file's loss curves (authoritative where present) and, at each checkpoint,
    the evaluated losses (where the curves have none) and accuracies; lr from the schedule."""
    evaluated = pd.DataFrame(rows, columns=["step", "train_loss", "train_acc", "test_loss", "test_acc"])
    if curves is None:
        df = evaluated
    else:
        df = curves.merge(evaluated, on="step", how="outer", suffixes=("", "_eval")).sort_values("step")
        for col in ("train_loss", "test_loss"):
            if col not in df:
                df[col] = float("nan")
            if f"{col}_eval" in df:
                df[col] = df[col].fillna(df.pop(f"{col}_eval"))
    df = df.reset_index(drop=True)
    df["lr"] = [lr_at(cfg, int(s)) for s in df["step"]]
    return df.reindex(columns=METRIC_COLUMNS)


def _infer_p(sd: StateDict, fmt: str) -> int:
    w_e = sd.get("embed.W_E")
    if w_e is None or w_e.ndim != 2:
        raise ConfigError("state dict has no 2-D embed.W_E")
    return (w_e.shape[0] if fmt == "tl" else w_e.shape[1]) - 1


@torch.no_grad()
def _evaluate(model, task, cfg: TrainConfig) -> dict[str, float]:
    """Loss (the training loss: softmax over every output class, float64) and accuracy per split."""
    logits = model.forward_last(task.inputs)  # [p², d_vocab_out]
    out = {}
    for split, mask in (("train", task.train_mask), ("test", task.test_mask)):
        y = task.labels[mask]
        out[f"{split}_loss"] = cross_entropy(logits[mask], y, cfg).item() if len(y) else float("nan")
        out[f"{split}_acc"] = (logits[mask].argmax(-1) == y).double().mean().item() if len(y) else float("nan")
    return out
