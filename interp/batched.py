"""Batched training of many same-shape models in one computation, with ``torch.func``.

A sweep trains dozens of small transformers that differ only in a few numbers (seed,
training fraction, weight decay). One such model leaves a GPU idle; :class:`BatchedTrainer`
instead stacks the parameters of N models along a new leading axis
(``torch.func.stack_module_state``) and runs one forward/backward for all of them:

    logits[i] = functional_call(model, params[i], tokens)          (vmap over i)
    loss[i]   = Σ_c w[i, c] · CE(logits[i, c], y_c) / Σ_c w[i, c]   (c over the p×p grid)

Every model sees the *whole* p×p grid; its training set is the weight row ``w[i]`` (its
train mask, or minibatch counts), and its test set another mask. Models with different
training fractions or data seeds therefore batch together, and test metrics come from
the same forward.

The optimiser is AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101) written for stacked
parameters, with per-model learning rate and decoupled weight decay: the update of
``torch.optim.AdamW`` (which :mod:`interp.train` runs with its fused CPU kernel), in the
order of operations of its ``foreach`` implementation:

    θ ← θ·(1 − η_i λ_i);   m ← m + (1 − β₁)(g − m);   v ← β₂ v + (1 − β₂) g²
    θ ← θ − η_i / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

Grokfast filters (Lee et al. 2024, arXiv:2405.20233) and minibatches follow
:mod:`interp.train` exactly. The result is an ordinary run directory per model, written
through :class:`interp.store.Run` by the same hooks :class:`interp.train.Trainer` uses
(metrics every step, checkpoints on the same schedule, resumable state in the same format,
so a batched run resumes with :func:`interp.train.resume` and vice versa). Weights match
separate training to floating-point rounding (the losses are summed over the grid in a
different order; tested to 1e-5 in float64).

The ``wall_time`` of a batched run is the wall time of the batch it trained in.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from tqdm.auto import tqdm

from interp.errors import ConfigError
from interp.model import Transformer
from interp.perf import reuse_freed_memory
from interp.store import Run
from interp.train import Checkpointer, EarlyStop, MetricsLogger, TrainConfig, checkpoint_steps, lr_at

#: config fields that may differ between the models of one batch; every other field must match
PER_MODEL_FIELDS = frozenset({
    "seed", "data_seed", "frac_train", "weight_decay", "lr", "warmup_steps", "n_steps", "stop_after_grok",
    "grok_threshold", "ckpt_dense_until", "ckpt_dense_every", "ckpt_log_count", "ckpt_every", "fast_path",
})
ADAM_EPS = 1e-8  # torch.optim.AdamW's default, which interp.train uses


def batch_key(cfg: TrainConfig) -> tuple:
    """Configs with equal keys can train in one batch (same task grid, shapes and optimiser)."""
    return tuple((k, v) for k, v in sorted(cfg.to_dict().items()) if k not in PER_MODEL_FIELDS)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _LastLogits(nn.Module):
    """``functional_call`` calls ``forward``; this routes it to the training fast path."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model.forward_last(tokens)


@dataclass
class _Member:
    """One model of the batch, seen by the :mod:`interp.train` hooks as its trainer and model."""

    cfg: TrainConfig
    run: Run
    owner: BatchedTrainer
    index: int
    wall_offset: float
    ckpt_steps: set[int]
    hooks: list[Any] = field(default_factory=list)
    should_stop: bool = False
    param_groups: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict[str, Tensor]:  # what Checkpointer saves as the model's weights
        return {n: t[self.index].detach() for n, t in self.owner.params.items()}

    def save_state(self, step: int) -> None:  # what Checkpointer calls on the trainer
        self.owner.save_member_state(self, step)

    def call(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            fn = getattr(hook, method, None)
            if fn is not None:
                fn(*args)


class BatchedTrainer:
    """Trains N models that share :func:`batch_key` and start step, in one vmapped computation.

    ``runs`` are run directories created by :func:`interp.train.create_run` (or interrupted runs with a
    saved state, all at the same step); :meth:`fit` trains each to its own ``n_steps`` (or
    early stop) and marks it complete. Finished models leave the batch.
    """

    def __init__(self, configs: Sequence[TrainConfig], runs: Sequence[Run], *,
                 device: str | torch.device | None = None, progress: bool = True):
        if not configs or len(configs) != len(runs):
            raise ConfigError("batched: need one run per config, and at least one")
        keys = {batch_key(c) for c in configs}
        if len(keys) > 1:
            diff = sorted({k for key in keys for k, _ in key} - set(PER_MODEL_FIELDS))
            raise ConfigError(f"batched: configs differ in fields that must match ({', '.join(diff[:5])} ...)")
        self.cfgs, self.device, self.progress = list(configs), torch.device(device or default_device()), progress
        c0 = self.cfgs[0]
        self.dtype, self.loss_dtype = getattr(torch, c0.dtype), getattr(torch, c0.loss_dtype)
        self.beta1, self.beta2, self.eval_every = c0.beta1, c0.beta2, c0.eval_every

        # ---- data: the whole grid once, per-model masks
        tasks = [r.task for r in runs]  # each checked against the split in its run.json
        self.x, self.y = tasks[0].inputs.to(self.device), tasks[0].labels.to(self.device)
        self.train_idx = [t.train_idx for t in tasks]
        self.train_w = torch.stack([t.train_mask for t in tasks]).to(self.device, self.loss_dtype)
        self.test_w = torch.stack([t.test_mask for t in tasks]).to(self.device, self.loss_dtype)
        self.minibatch = c0.batch_size is not None and any(c0.batch_size < len(i) for i in self.train_idx)

        # ---- models: initial weights, or the saved states
        models = [c.build_model() for c in self.cfgs]
        self.names = [n for n, _ in models[0].named_parameters()]
        states = [r.load_state() if r.has_state else None for r in runs]
        steps = {int(s[1]["step"]) if s else 0 for s in states}
        if len(steps) > 1:
            raise ConfigError(f"batched: runs continue from different steps {sorted(steps)}; batch them separately")
        self.step0 = steps.pop()
        for m, s in zip(models, states):
            if s is not None:
                m.load_state_dict({k[6:]: v for k, v in s[0].items() if k.startswith("model.")})

        def stack(get) -> dict[str, Tensor]:
            return {n: torch.stack([get(i, j, n) for i in range(len(models))]).to(self.device)
                    for j, n in enumerate(self.names)}

        sds = [m.state_dict() for m in models]
        self.params = stack(lambda i, j, n: sds[i][n])
        zeros = lambda i, j, n: torch.zeros_like(sds[i][n])
        opt = lambda key: lambda i, j, n: (states[i][0].get(f"opt.{j}.{key}") if states[i] else None)
        self.exp_avg = stack(lambda i, j, n: _or(opt("exp_avg")(i, j, n), zeros(i, j, n)))
        self.exp_avg_sq = stack(lambda i, j, n: _or(opt("exp_avg_sq")(i, j, n), zeros(i, j, n)))
        # Grokfast: EMA h (created from the first gradient) or the MA ring buffer [window, *shape]
        self.grokfast, self.gf_count = c0.grokfast, int(states[0][1].get("grokfast_count", 0)) if states[0] else 0
        self.gf: dict[str, Tensor] = {}
        if self.grokfast != "none" and states[0] and any(k.startswith("grokfast.") for k in states[0][0]):
            self.gf = stack(lambda i, j, n: states[i][0][f"grokfast.{n}"])
        elif self.grokfast == "ma":
            self.gf = stack(lambda i, j, n: sds[i][n].new_zeros((c0.grokfast_window, *sds[i][n].shape)))
        self.base = _LastLogits(copy.deepcopy(models[0]).to(self.device))

        # ---- per-model bookkeeping (the interp.train hooks, unchanged)
        self.members: list[_Member] = []
        for i, (cfg, run, state) in enumerate(zip(self.cfgs, runs, states)):
            mb = _Member(cfg=cfg, run=run, owner=self, index=i, wall_offset=float(state[1]["wall_time"]) if state
                         else 0.0, ckpt_steps=set(checkpoint_steps(cfg)))
            mb.hooks = [MetricsLogger(run, self.step0), Checkpointer(run)]
            if cfg.stop_after_grok is not None:
                mb.hooks.append(EarlyStop(cfg.stop_after_grok, cfg.grok_threshold))
            opt_template = torch.optim.AdamW(models[i].parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                             weight_decay=cfg.weight_decay, fused=True)
            mb.param_groups = opt_template.state_dict()["param_groups"]
            self.members.append(mb)
        self._t0 = time.perf_counter()

    # ------------------------------------------------------------------ state (interp.train's format)
    def save_member_state(self, mb: _Member, step: int) -> None:
        i = mb.index
        tensors = {f"model.{n}": t[i] for n, t in self.params.items()}
        if step > 0:  # interp.train saves optimiser state only once it has taken a step
            for j, n in enumerate(self.names):
                tensors[f"opt.{j}.step"] = torch.tensor(float(step), dtype=torch.float32)
                tensors[f"opt.{j}.exp_avg"] = self.exp_avg[n][i]
                tensors[f"opt.{j}.exp_avg_sq"] = self.exp_avg_sq[n][i]
        tensors.update({f"grokfast.{n}": t[i] for n, t in self.gf.items()})
        tensors["rng.torch"] = torch.get_rng_state()
        groups = [{**g, "lr": lr_at(mb.cfg, step - 1) if step > 0 else mb.cfg.lr} for g in mb.param_groups]
        mb.run.save_state(tensors, {"step": step, "wall_time": mb.wall_offset + time.perf_counter() - self._t0,
                                    "param_groups": groups, "grokfast_count": self.gf_count,
                                    "config": mb.cfg.to_dict()})

    # ------------------------------------------------------------------ one step
    def _weights(self, step: int) -> Tensor:
        """[N, p²] per-cell weights of the training loss: the train mask, or minibatch counts
        drawn exactly as :meth:`interp.train.Trainer._batch` draws them."""
        if not self.minibatch:
            return self.train_w
        rows = []
        for mb in self.members:
            idx, bs = self.train_idx[mb.index], mb.cfg.batch_size
            if bs >= len(idx):
                rows.append(self.train_w[mb.index])
                continue
            gen = torch.Generator().manual_seed(mb.cfg.seed * 1_000_003 + step)
            pick = idx[torch.randint(len(idx), (bs,), generator=gen)]
            rows.append(torch.bincount(pick, minlength=self.x.shape[0]).to(self.device, self.loss_dtype))
        return torch.stack(rows)

    def _loss(self, params: dict[str, Tensor], w: Tensor, w_test: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One model: mean cross-entropy over its weighted training cells; test metrics as aux."""
        logits = functional_call(self.base, {f"model.{n}": t for n, t in params.items()}, (self.x,))
        nll = -logits.to(self.loss_dtype).log_softmax(-1).gather(-1, self.y[:, None]).squeeze(-1)  # [p²]
        correct = (logits.argmax(-1) == self.y).to(self.loss_dtype)
        loss = (nll * w).sum() / w.sum()
        n_test = w_test.sum()
        return loss, ((correct * w).sum() / w.sum(), (nll.detach() * w_test).sum() / n_test,
                      (correct * w_test).sum() / n_test)

    def _forward_backward(self, step: int) -> tuple[dict[str, Tensor], Tensor]:
        """Per-model gradients and the metrics [N, 6]: train loss/acc, test loss/acc, ‖θ‖, ‖g‖."""
        fn = vmap(grad_and_value(self._loss, has_aux=True), in_dims=(0, 0, 0))
        grads, (loss, (train_acc, test_loss, test_acc)) = fn(self.params, self._weights(step), self.test_w)
        with torch.no_grad():
            norm = lambda d: torch.stack([t.flatten(1).pow(2).sum(1) for t in d.values()]).sum(0).sqrt()
            metrics = torch.stack([loss, train_acc, test_loss, test_acc,
                                   norm(self.params).to(self.loss_dtype), norm(grads).to(self.loss_dtype)], 1)
        return grads, metrics

    @torch.no_grad()
    def _grokfast(self, grads: dict[str, Tensor]) -> None:
        """Grokfast filter on the stacked gradients, as :class:`interp.train.Grokfast`."""
        c0 = self.cfgs[0]
        if self.grokfast == "ema":
            for n, g in grads.items():
                h = self.gf.get(n)
                if h is None:
                    self.gf[n] = h = g.clone()
                else:
                    h.mul_(c0.grokfast_alpha).add_(g, alpha=1 - c0.grokfast_alpha)
                g.add_(h, alpha=c0.grokfast_lamb)
        elif self.grokfast == "ma":
            slot = self.gf_count % c0.grokfast_window
            for n, g in grads.items():
                buf = self.gf[n]  # [N, window, *shape]
                buf[:, slot] = g
                if self.gf_count + 1 >= c0.grokfast_window:
                    g.add_(buf.mean(1), alpha=c0.grokfast_lamb)
            self.gf_count += 1

    @torch.no_grad()
    def _adamw(self, grads: dict[str, Tensor], step: int) -> None:
        """Update ``step`` → ``step + 1`` for every model (see the module docstring)."""
        lr = torch.tensor([lr_at(mb.cfg, step) for mb in self.members], dtype=torch.float64)
        wd = torch.tensor([mb.cfg.weight_decay for mb in self.members], dtype=torch.float64)
        t = step + 1
        decay = (1 - lr * wd).to(self.device, self.dtype)
        step_size = (-lr / (1 - self.beta1**t)).to(self.device, self.dtype)
        bc2_sqrt = (1 - self.beta2**t) ** 0.5
        for n, p in self.params.items():
            g, m, v = grads[n], self.exp_avg[n], self.exp_avg_sq[n]
            shape = (-1,) + (1,) * (p.dim() - 1)
            p.mul_(decay.view(shape))
            m.lerp_(g, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            p.add_(m / (v.sqrt() / bc2_sqrt + ADAM_EPS) * step_size.view(shape))

    # ------------------------------------------------------------------ the loop
    def _is_eval(self, mb: _Member, step: int) -> bool:
        return step in mb.ckpt_steps or step % self.eval_every == 0 or step == mb.cfg.n_steps

    def _process(self, pending: list[tuple[int, Tensor, float]]) -> list[_Member]:
        """Log the buffered steps of every model; checkpoint and finish models. The last
        pending step is the current one (the weights in ``params`` are its weights)."""
        values = torch.stack([m for _, m, _ in pending]).cpu().tolist()  # [T][N][6]
        finished = []
        for (step, _, wall), rows in zip(pending, values):
            for mb in self.members:
                r, ev = rows[mb.index], self._is_eval(mb, step)
                metrics = {"train_loss": r[0], "train_acc": r[1], "test_loss": r[2] if ev else math.nan,
                           "test_acc": r[3] if ev else math.nan, "lr": lr_at(mb.cfg, step), "weight_norm": r[4],
                           "grad_norm": r[5], "wall_time": mb.wall_offset + wall}
                mb.call("on_step_end", step, metrics)
                done = step == mb.cfg.n_steps or mb.should_stop
                if step in mb.ckpt_steps or done:
                    mb.call("on_checkpoint", step, mb)
                if done:
                    mb.run.update_meta(status="complete", final_step=step, stopped_early=bool(mb.should_stop))
                    mb.call("on_train_end", mb)
                    finished.append(mb)
        return finished

    def _drop(self, finished: list[_Member], grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """Remove finished models from every stacked tensor."""
        gone = {id(mb) for mb in finished}
        self.members = [mb for mb in self.members if id(mb) not in gone]
        if not self.members:
            return grads
        keep = torch.tensor([mb.index for mb in self.members], device=self.device)
        pick = lambda d: {n: t.index_select(0, keep) for n, t in d.items()}
        self.params, self.exp_avg, self.exp_avg_sq, self.gf = (pick(self.params), pick(self.exp_avg),
                                                               pick(self.exp_avg_sq), pick(self.gf))
        self.train_w, self.test_w = self.train_w.index_select(0, keep), self.test_w.index_select(0, keep)
        self.train_idx = [self.train_idx[mb.index] for mb in self.members]
        for i, mb in enumerate(self.members):
            mb.index = i
        return pick(grads)

    def fit(self) -> list[Run]:
        """Train every model to its end; returns the runs in the order given."""
        reuse_freed_memory()
        runs = [mb.run for mb in self.members]
        self._t0 = time.perf_counter()
        for mb in self.members:
            mb.run.update_meta(status="running")
            mb.call("on_train_start", mb)
        last = max(mb.cfg.n_steps for mb in self.members)
        bar = tqdm(total=last, initial=self.step0, desc=f"batch of {len(self.members)}", unit="step",
                   dynamic_ncols=True, mininterval=0.5, disable=not self.progress)
        pending: list[tuple[int, Tensor, float]] = []
        step = self.step0
        while self.members:
            grads, metrics = self._forward_backward(step)
            pending.append((step, metrics, time.perf_counter() - self._t0))
            if any(self._is_eval(mb, step) for mb in self.members):  # host sync only here
                finished = self._process(pending)
                pending = []
                if finished:
                    grads = self._drop(finished, grads)
                bar.set_postfix(models=len(self.members), refresh=False)
            if not self.members:
                break
            self._grokfast(grads)
            self._adamw(grads, step)
            step += 1
            bar.update(1)
        bar.close()
        return runs


def _or(a: Tensor | None, b: Tensor) -> Tensor:
    return b if a is None else a
