"""Training: fast-path steps/s against a full-sequence baseline kept here, the ``demo`` preset's wall
time to ≥ 99% test accuracy, a step on its last (confident) checkpoint against one at initialisation
with the share of subnormal floats (issue 17), and the full 40k-step ``nanda`` run (skipped with
``--quick``).

The two step rates are measured interleaved within one process, because the machines are shared."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp import grok_steps, preset, train
from interp.losses import cross_entropy, masked_cross_entropy
from interp.numerics import subnormal_share
from tests.bench.common import row


class FullSequenceBaseline(nn.Module):
    """The same one-layer model written the straightforward way (as in the 2023 code):
    every position goes through attention, MLP and unembedding, and the loss then
    takes the last position's logits. Shares nothing with ``interp.model``'s fast path."""

    def __init__(self, sd: dict[str, Tensor]):
        super().__init__()
        names = ["embed.W_E", "pos_embed.W_pos", "blocks.0.attn.W_Q", "blocks.0.attn.W_K", "blocks.0.attn.W_V",
                 "blocks.0.attn.W_O", "blocks.0.mlp.W_in", "blocks.0.mlp.b_in", "blocks.0.mlp.W_out",
                 "blocks.0.mlp.b_out", "unembed.W_U"]
        self.w = nn.ParameterDict({n.replace(".", "_"): nn.Parameter(sd[n].clone()) for n in names})

    def forward(self, x: Tensor) -> Tensor:  # [b, s] -> [b, s, p]
        w = self.w
        resid = w["embed_W_E"][x] + w["pos_embed_W_pos"]
        q = torch.einsum("bsd,hde->bshe", resid, w["blocks_0_attn_W_Q"])
        k = torch.einsum("bsd,hde->bshe", resid, w["blocks_0_attn_W_K"])
        v = torch.einsum("bsd,hde->bshe", resid, w["blocks_0_attn_W_V"])
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        mask = torch.tril(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool))
        pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        resid = resid + torch.einsum("bqhe,hed->bqd", z, w["blocks_0_attn_W_O"])
        hidden = F.relu(resid @ w["blocks_0_mlp_W_in"] + w["blocks_0_mlp_b_in"])
        resid = resid + hidden @ w["blocks_0_mlp_W_out"] + w["blocks_0_mlp_b_out"]
        return resid @ w["unembed_W_U"]


def _step_time(forward, params, x: Tensor, y: Tensor, steps: int) -> float:
    """Seconds per full-batch AdamW step (fused AdamW and float64 loss, as in training)."""
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0, fused=True)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(forward(x).double(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def bench_fast_path(rounds: int = 5, steps: int = 10) -> list[dict]:
    cfg = preset("nanda")
    model = cfg.build_model()
    base = FullSequenceBaseline(model.state_dict())
    task = cfg.task()
    x, y = task.inputs[task.train_idx], task.labels[task.train_idx]
    with torch.no_grad():
        err = (base(x)[:, -1] - model.forward_last(x)).abs().max().item()
    assert err < 1e-4, f"baseline and fast path disagree by {err}"
    contenders = [(model.forward_last, list(model.parameters())),
                  (lambda t: base(t)[:, -1], list(base.parameters()))]
    for forward, params in contenders:  # warm-up
        _step_time(forward, params, x, y, 2)
    fast, slow = [], []
    for _ in range(rounds):  # interleaved so load changes hit both alike
        fast.append(_step_time(*contenders[0], x, y, steps))
        slow.append(_step_time(*contenders[1], x, y, steps))
    f, s = statistics.median(fast), statistics.median(slow)
    return [
        row("train: fast path (nanda, full batch)", 1 / f, "steps/s"),
        row("train: full-sequence baseline", 1 / s, "steps/s"),
        row("train: fast path / baseline", s / f, "x", "≥ 5", s / f >= 5),
    ]


def _seq_step_time(forward, model, x: Tensor, y: Tensor, steps: int) -> float:
    """Seconds per AdamW step on every-position loss (``interp.losses.masked_cross_entropy``)."""
    cfg = preset("sinks")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = masked_cross_entropy(forward(x), y, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def bench_per_position(rounds: int = 5, steps: int = 10) -> list[dict]:
    """Every-position (next-token) training step of the ``sinks`` preset's model and batch:
    ``Transformer.forward_all`` (what the trainer uses) against the plain hooked ``forward``."""
    cfg = preset("sinks")
    model, task = cfg.build_model(), cfg.task()
    x, y = task.inputs[: cfg.batch_size], task.targets[: cfg.batch_size]
    with torch.no_grad():
        err = (model(x) - model.forward_all(x)).abs().max().item()
    assert err < 1e-4, f"hooked forward and forward_all disagree by {err}"
    for forward in (model.forward_all, model):  # warm-up
        _seq_step_time(forward, model, x, y, 2)
    fast, plain = [], []
    for _ in range(rounds):  # interleaved so load changes hit both alike
        fast.append(_seq_step_time(model.forward_all, model, x, y, steps))
        plain.append(_seq_step_time(model, model, x, y, steps))
    f, s = statistics.median(fast), statistics.median(plain)
    return [
        row("train: per-position forward_all (sinks batch)", 1 / f, "steps/s"),
        row("train: per-position plain hooked forward", 1 / s, "steps/s"),
        row("train: per-position forward_all / hooked", s / f, "x", "≥ 0.9", s / f >= 0.9),  # no slower
    ]


def _trainer_step_time(model, cfg, x: Tensor, y: Tensor, steps: int) -> tuple[float, torch.optim.Optimizer]:
    """Seconds per fast-path step with the trainer's own loss (``interp.losses.cross_entropy``)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay, fused=True)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = cross_entropy(model.forward_last(x), y, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps, opt


def bench_late(run, rounds: int = 5, steps: int = 5) -> list[dict]:
    """Issue 17: a step on the last, confident checkpoint of a grokked run against a step at its
    initialisation (interleaved), and the share of subnormal floats in the loss gradient: with a
    plain float64 cross-entropy (what the trainer did before) and with the trainer's loss, whose
    gradient, parameter gradients and AdamW moments must hold none."""
    cfg, task = run.train_config, run.task
    x, y = task.inputs[task.train_idx], task.labels[task.train_idx]
    with torch.no_grad():
        logits = run.model_at(run.steps[-1]).forward_last(x)
    plain, ours = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    F.cross_entropy(plain.double(), y).backward()
    cross_entropy(ours, y, cfg).backward()
    times: dict[str, list[float]] = {"early": [], "late": []}
    for _ in range(rounds):  # interleaved; each round restarts from the saved weights
        for key, step in (("early", run.steps[0]), ("late", run.steps[-1])):
            model = run.model_at(step)
            dt, opt = _trainer_step_time(model, cfg, x, y, steps)
            times[key].append(dt)
    states = [t for st in opt.state.values() for t in st.values() if t.dim()]
    after = subnormal_share([*(p.grad for p in model.parameters()), *states])
    e, la = statistics.median(times["early"]), statistics.median(times["late"])
    return [
        row(f"train: step at initialisation (step {run.steps[0]})", e * 1e3, "ms"),
        row(f"train: step on the last checkpoint (step {run.steps[-1]})", la * 1e3, "ms"),
        row("train: late step / early step", la / e, "x", "≤ 1.5", la / e <= 1.5),
        row("train: subnormal share of dlogits, plain float64 cross-entropy", subnormal_share([plain.grad]), ""),
        row("train: subnormal share of dlogits, trainer loss", subnormal_share([ours.grad]), "", "= 0",
            subnormal_share([ours.grad]) == 0),
        row("train: subnormal share of gradients and AdamW state after late steps", after, "", "= 0", after == 0),
    ]


def bench_preset(name: str, grok_range: tuple[int, int], target_s: float, to_grok: bool,
                 late: bool = False) -> list[dict]:
    """Train preset ``name`` once: the step it grokked at (ok inside ``grok_range``) and its wall time,
    either to ≥ 99% test accuracy (``to_grok``) or in total, against ``target_s``; with ``late``, also
    :func:`bench_late` on the finished run."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = train(preset(name), Path(tmp) / name, progress=False)
        total = time.perf_counter() - t0
        m, n_ckpt = run.metrics, len(run.steps)
        late_rows = bench_late(run) if late else []
    step = grok_steps(m)["grokked_step"]
    lo, hi = grok_range
    rows = [row(f"train: {name} grokked at step", step or math.nan, "step", f"{lo}–{hi}" if lo else f"≤ {hi}",
                step is not None and lo <= step <= hi),
            row(f"train: {name} total wall time ({m.step.max()} steps, {n_ckpt} checkpoints)", total, "s")]
    if to_grok:
        grok_wall = float(m.loc[m.step == step, "wall_time"].iloc[0]) if step else math.nan
        rows.append(row(f"train: {name} wall time to ≥99% test acc", grok_wall, "s", f"≤ {target_s:.0f}",
                        grok_wall <= target_s))
    else:
        rows[-1].update(target=f"≤ {target_s:.0f}", ok=total <= target_s)
    return rows + late_rows


def bench(quick: bool) -> list[dict]:
    rows = bench_fast_path() + bench_per_position() + bench_preset("demo", (0, 5_000), 120, to_grok=True, late=True)
    if not quick:
        rows += bench_preset("nanda", (5_000, 25_000), 1200, to_grok=False)
    return rows
