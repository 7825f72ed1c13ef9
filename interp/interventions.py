"""Interventions applied when forking a run (:func:`interp.fork.fork`), registered by name.

An intervention is ``fn(ctx, arg)``: it may replace ``ctx.cfg`` (the fork's
:class:`~interp.config.TrainConfig` from the fork step on) and edit ``ctx.state`` (the
:class:`~interp.loop.TrainState` at the fork step: weights, optimizer moments, Grokfast
buffers) in place, and appends a line to ``ctx.notes`` saying what it did. ``arg`` is the text
after ``NAME:`` on the command line (``--intervene ablate:14,35``), or None.

Registered: ``wd``, ``lr``, ``optimizer`` (adamw | adam | sgd), ``grokfast`` (none | ema | ma),
``float64``, ``stablemax`` and ``orthograd`` (Prieto et al. 2025, arXiv:2501.04697), ``ablate``
(Fourier frequencies of W_E, optionally of W_L = W_out W_U through W_U), ``freeze`` (a parameter
group). Each one's docstring is its definition.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from interp.config import TrainConfig, parse_field
from interp.errors import ConfigError
from interp.loop import TrainState


@dataclass
class ForkContext:
    """What an intervention edits: the config and training state at the fork step."""

    cfg: TrainConfig
    state: TrainState
    notes: list[str] = field(default_factory=list)
    changes: dict[str, object] = field(default_factory=dict)  # recorded in the fork's run.json


Intervention = Callable[[ForkContext, "str | None"], None]
INTERVENTIONS: dict[str, Intervention] = {}


def intervention(name: str) -> Callable[[Intervention], Intervention]:
    """Register ``fn`` under ``name``."""
    def deco(fn: Intervention) -> Intervention:
        INTERVENTIONS[name] = fn
        return fn
    return deco


def parse(spec: str) -> tuple[str, str | None]:
    """``"NAME"`` or ``"NAME:ARGS"`` -> (name, args or None); ConfigError for an unknown name."""
    name, _, arg = spec.partition(":")
    name = name.strip()
    if name not in INTERVENTIONS:
        raise ConfigError(f"--intervene {spec!r}: unknown intervention (known: {', '.join(sorted(INTERVENTIONS))})")
    return name, (arg.strip() or None)


def apply(ctx: ForkContext, spec: str) -> None:
    name, arg = parse(spec)
    INTERVENTIONS[name](ctx, arg)


def _set(ctx: ForkContext, key: str, value: object) -> None:
    ctx.cfg = ctx.cfg.replace(**{key: value})
    ctx.changes[key] = value
    ctx.notes.append(f"{key} = {value!r}")


def _need(arg: str | None, what: str) -> str:
    if arg is None:
        raise ConfigError(f"--intervene: {what} needs a value, as {what}:VALUE")
    return arg


# ------------------------------------------------------------------ optimisation
@intervention("wd")
def weight_decay(ctx: ForkContext, arg: str | None) -> None:
    """Weight decay from the fork step on: ``wd:0``."""
    _set(ctx, "weight_decay", parse_field("weight_decay", _need(arg, "wd")))


@intervention("lr")
def learning_rate(ctx: ForkContext, arg: str | None) -> None:
    """Learning rate (after warm-up) from the fork step on: ``lr:3e-3``."""
    _set(ctx, "lr", parse_field("lr", _need(arg, "lr")))


@intervention("optimizer")
def optimizer(ctx: ForkContext, arg: str | None) -> None:
    """Optimizer from the fork step on: ``optimizer:adamw`` | ``adam`` (Adam, no weight decay)
    | ``sgd`` (momentum beta1). Adam and AdamW share their moments; a switch to or from SGD
    starts the optimizer state afresh (:func:`interp.fork.fork` does this and says so)."""
    _set(ctx, "optimizer", parse_field("optimizer", _need(arg, "optimizer")))


@intervention("grokfast")
def grokfast(ctx: ForkContext, arg: str | None) -> None:
    """Grokfast filter (Lee et al. 2024) from the fork step on: ``grokfast:ema`` | ``ma`` |
    ``none`` (default ``ema``). Switching kind discards the old filter's buffers."""
    kind = arg or "ema"
    if kind != ctx.cfg.grokfast:
        ctx.state.grokfast, ctx.state.grokfast_count = {}, 0
    _set(ctx, "grokfast", kind)


@intervention("float64")
def float64(ctx: ForkContext, arg: str | None) -> None:
    """Weights, optimizer state and Grokfast buffers in float64 from the fork step on."""
    ctx.state.grokfast = {k: v.double() for k, v in ctx.state.grokfast.items()}
    _set(ctx, "dtype", "float64")


@intervention("stablemax")
def stablemax(ctx: ForkContext, arg: str | None) -> None:
    """StableMax instead of softmax in the loss (Prieto et al. 2025; :func:`interp.losses.log_stablemax`)."""
    _set(ctx, "loss", "stablemax" if arg in (None, "on", "1", "true") else "cross_entropy")


@intervention("orthograd")
def orthograd(ctx: ForkContext, arg: str | None) -> None:
    """⊥Grad (Prieto et al. 2025; :func:`interp.optim.orthogonalize_`): ``orthograd`` or ``orthograd:off``."""
    _set(ctx, "orthograd", arg not in ("off", "0", "false"))


@intervention("freeze")
def freeze(ctx: ForkContext, arg: str | None) -> None:
    """Stop updating a parameter group: ``freeze:embed``, ``freeze:blocks.0.attn`` (name
    prefixes, comma-separated; added to ``cfg.frozen``)."""
    prefixes = [p for p in (ctx.cfg.frozen + "," + _need(arg, "freeze")).split(",") if p.strip()]
    names = list(ctx.state.model)
    for p in prefixes:
        if not any(n == p or n.startswith(p + ".") for n in names):
            raise ConfigError(f"freeze:{p}: no parameter named so (parameters: {', '.join(names)})")
    _set(ctx, "frozen", ",".join(dict.fromkeys(prefixes)))


# ------------------------------------------------------------------ Fourier ablation
def fourier_pair(p: int, k: int) -> Tensor:
    """[2, p] unit vectors cos(2πkx/p), sin(2πkx/p) over x = 0..p−1 (Nanda et al. 2023's basis;
    the same as ``probes.fourier``'s, reimplemented here because interp cannot import probes)."""
    x = torch.arange(p, dtype=torch.float64)
    b = torch.stack([torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)])
    return b / b.norm(dim=1, keepdim=True)


def frequency_norms(W_E: Tensor, p: int) -> Tensor:
    """[(p−1)//2] norm of each frequency k = 1..(p−1)/2 in the token embeddings W_E[:p]."""
    W = W_E[:p].double()
    return torch.stack([(fourier_pair(p, k) @ W).norm() for k in range(1, (p - 1) // 2 + 1)])


def _project_out(W: Tensor, basis: Tensor, axis: int) -> Tensor:
    """W minus its projection on the rows of ``basis`` along ``axis`` (0: rows of W, 1: columns)."""
    B = basis.to(W.dtype)
    return W - B.T @ (B @ W) if axis == 0 else W - (W @ B.T) @ B


@intervention("ablate")
def ablate(ctx: ForkContext, arg: str | None) -> None:
    """Remove Fourier frequencies from the token embeddings W_E (rows 0..p−1) at the fork step:
    ``ablate:14,35``; ``ablate:top`` / ``ablate:top2`` (default ``top``) picks the strongest key
    frequencies by their norm in W_E; a suffix ``:W_L`` also removes them from the output side
    (the columns of W_U, hence of W_L = W_out W_U). The first Adam moment (momentum) of those
    weights is projected the same way, so the update does not restore the frequency at once;
    the second moment is elementwise and is kept."""
    spec, _, side = (arg or "top").partition(":")
    p, model = ctx.cfg.p, ctx.state.model
    if spec.startswith("top"):
        n = int(spec[3:] or 1)
        freqs = (frequency_norms(model["embed.W_E"], p).argsort(descending=True)[:n] + 1).tolist()
    else:
        freqs = [int(k) for k in spec.split(",") if k.strip()]
    if not freqs or any(not 1 <= k <= (p - 1) // 2 for k in freqs):
        raise ConfigError(f"ablate:{arg}: frequencies must be in 1..{(p - 1) // 2}")
    basis = torch.cat([fourier_pair(p, k) for k in freqs])
    targets = [("embed.W_E", 0)] + ([("unembed.W_U", 1)] if side.upper().replace("_", "") == "WL" else [])
    order = _param_order(ctx)
    for name, axis in targets:
        sl = (slice(0, p),) if axis == 0 else (slice(None), slice(0, p))
        model[name][sl] = _project_out(model[name][sl], basis, axis)
        m = ctx.state.opt.get(order.index(name))
        if m is not None and "exp_avg" in m:
            m["exp_avg"][sl] = _project_out(m["exp_avg"][sl], basis, axis)
    ctx.changes["ablate"] = {"frequencies": freqs, "weights": [n for n, _ in targets]}
    ctx.notes.append(f"ablated frequencies {freqs} from {', '.join(n for n, _ in targets)}")


def _param_order(ctx: ForkContext) -> list[str]:
    """Parameter names in optimizer index order (the model's named_parameters order)."""
    return [n for n, _ in ctx.cfg.build_model().named_parameters()]
