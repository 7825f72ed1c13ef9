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

Grokfast filters (Lee et al. 2024, arXiv:2405.20233; :class:`interp.grokfast.Grokfast` on the
stacked gradients), minibatch seeding, the resume-state format and the per-run loop
(:mod:`interp.loop`) are :mod:`interp.train`'s own. The result is an ordinary run directory
per model, written through :class:`interp.store.Run` by the same hooks :class:`interp.train.Trainer`
runs, plus any user hooks (metrics every step, checkpoints on the same schedule, resumable state
in the same format, so a batched run resumes with :func:`interp.train.resume` and vice versa). Weights match
separate training to floating-point rounding (the losses are summed over the grid in a
different order; tested to 1e-5 in float64).

The ``wall_time`` of a batched run is the wall time of the batch it trained in.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from tqdm.auto import tqdm

from interp.config import TrainConfig, lr_at
from interp.errors import ConfigError
from interp.grokfast import Grokfast
from interp.hooks import TrainHook
from interp.loop import RunLoop, TrainState, minibatch
from interp.losses import log_probs
from interp.model import Transformer
from interp.optim import is_plain
from interp.store import Run

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


class _Member(RunLoop):
    """One model of the batch: the ``trainer`` its hooks see (``cfg``, ``run``, ``task``,
    ``model``, ``should_stop``, ``save_state``)."""

    def __init__(self, owner: BatchedTrainer, index: int, cfg: TrainConfig, run: Run, state: TrainState | None,
                 hooks: Sequence[TrainHook], param_groups: list[dict]):
        self.owner, self.index, self.task, self.param_groups = owner, index, run.task, param_groups
        self.init_loop(cfg, run, state, hooks, progress=False)

    @property
    def model(self) -> Transformer:
        """A Transformer holding this model's current weights (a copy, refreshed on each access)."""
        view = self.owner.view_model
        with torch.no_grad():
            for n, p in view.named_parameters():
                p.copy_(self.owner.params[n][self.index])
        return view

    def train_state(self, step: int) -> TrainState:
        """This model's slice of the stacked state, in the layout :class:`interp.train.Trainer` saves."""
        o, i = self.owner, self.index
        opt = {} if step == 0 else {  # interp.train saves optimiser state only once it has taken a step
            j: {"step": torch.tensor(float(step), dtype=torch.float32), "exp_avg": o.exp_avg[n][i],
                "exp_avg_sq": o.exp_avg_sq[n][i]} for j, n in enumerate(o.names)}
        groups = [{**g, "lr": lr_at(self.cfg, step - 1) if step > 0 else self.cfg.lr} for g in self.param_groups]
        return TrainState(step=step, wall_time=self.elapsed(), model={n: t[i] for n, t in o.params.items()},
                          opt=opt, param_groups=groups, grokfast=o.grokfast.member_tensors(i),
                          grokfast_count=o.grokfast.count)


class BatchedTrainer:
    """Trains N models that share :func:`batch_key` and start step, in one vmapped computation.

    ``runs`` are run directories created by :func:`interp.train.create_run` (or interrupted runs with a
    saved state, all at the same step); :meth:`fit` trains each to its own ``n_steps`` (or
    early stop) and marks it complete. Finished models leave the batch. ``hooks``: one sequence
    of user hooks per run (run after the built-in ones), or None.
    """

    def __init__(self, configs: Sequence[TrainConfig], runs: Sequence[Run], *,
                 device: str | torch.device | None = None, progress: bool = True,
                 hooks: Sequence[Sequence[TrainHook]] | None = None):
        if not configs or len(configs) != len(runs) or (hooks is not None and len(hooks) != len(runs)):
            raise ConfigError("batched: need one run (and one hook list, if any) per config, and at least one")
        if not all(is_plain(c) for c in configs):  # issue 15's options are interp.train's only
            raise ConfigError("batched: optimizer, orthograd and frozen other than the defaults need interp.train")
        keys = {batch_key(c) for c in configs}
        if len(keys) > 1:
            diff = sorted({k for key in keys for k, _ in key} - set(PER_MODEL_FIELDS))
            raise ConfigError(f"batched: configs differ in fields that must match ({', '.join(diff[:5])} ...)")
        self.cfgs, self.device, self.progress = list(configs), torch.device(device or default_device()), progress
        c0 = self.cfgs[0]
        self.dtype, self.loss_dtype = getattr(torch, c0.dtype), getattr(torch, c0.loss_dtype)
        self.beta1, self.beta2 = c0.beta1, c0.beta2

        # ---- data: the whole grid once, per-model masks
        tasks = [r.task for r in runs]  # each checked against the split in its run.json
        if any(t.kind != "grid" for t in tasks):  # issue 13
            raise ConfigError("batched: sequence tasks (seq_task) train with interp.train.Trainer only, not batched")
        self.x, self.y = tasks[0].inputs.to(self.device), tasks[0].labels.to(self.device)
        self.train_idx = [t.train_idx for t in tasks]
        self.train_w = torch.stack([t.train_mask for t in tasks]).to(self.device, self.loss_dtype)
        self.test_w = torch.stack([t.test_mask for t in tasks]).to(self.device, self.loss_dtype)
        self.minibatch = c0.batch_size is not None and any(c0.batch_size < len(i) for i in self.train_idx)

        states = [TrainState.load(r) if r.has_state else None for r in runs]
        steps = {s.step if s else 0 for s in states}
        if len(steps) > 1:
            raise ConfigError(f"batched: runs continue from different steps {sorted(steps)}; batch them separately")
        self.step0 = steps.pop()
        models = self._stack_models(states)
        self.members = [
            _Member(self, i, cfg, run, state, hooks[i] if hooks is not None else (), _param_groups(cfg, models[i]))
            for i, (cfg, run, state) in enumerate(zip(self.cfgs, runs, states))]
        self._t0 = time.perf_counter()

    def _stack_models(self, states: list[TrainState | None]) -> list[Transformer]:
        """Initial or saved weights, AdamW moments and Grokfast buffers, stacked on a model axis."""
        models = [c.build_model() for c in self.cfgs]
        for m, s in zip(models, states):
            if s is not None:
                m.load_state_dict(s.model)
        self.names = [n for n, _ in models[0].named_parameters()]
        sds = [m.state_dict() for m in models]

        def stack(get) -> dict[str, Tensor]:
            return {n: torch.stack([get(i, j, n) for i in range(len(models))]).to(self.device)
                    for j, n in enumerate(self.names)}

        def moment(key: str):
            return lambda i, j, n: _or(states[i] and states[i].opt.get(j, {}).get(key), torch.zeros_like(sds[i][n]))

        self.params = stack(lambda i, j, n: sds[i][n])
        self.exp_avg, self.exp_avg_sq = stack(moment("exp_avg")), stack(moment("exp_avg_sq"))
        c0, s0 = self.cfgs[0], states[0]
        self.grokfast = Grokfast(c0.grokfast, c0.grokfast_alpha, c0.grokfast_lamb, c0.grokfast_window, stacked=True)
        if c0.grokfast != "none" and s0 is not None and s0.grokfast:
            self.grokfast.load({f"grokfast.{n}": t for n, t in stack(
                lambda i, j, n: states[i].grokfast[f"grokfast.{n}"]).items()}, s0.grokfast_count)
        else:
            self.grokfast.count = s0.grokfast_count if s0 is not None else 0
        self.base = _LastLogits(copy.deepcopy(models[0]).to(self.device))
        self.view_model = copy.deepcopy(models[0]).to(self.device)  # what hooks see as a member's model
        return models

    # ------------------------------------------------------------------ one step
    def _weights(self, step: int) -> Tensor:
        """[N, p²] per-cell weights of the training loss: the train mask, or minibatch counts
        drawn by :func:`interp.loop.minibatch`, as :class:`interp.train.Trainer` draws them."""
        if not self.minibatch:
            return self.train_w
        rows = []
        for mb in self.members:
            idx = self.train_idx[mb.index]
            pos = minibatch(mb.cfg, len(idx), step)
            if pos is None:
                rows.append(self.train_w[mb.index])
            else:
                rows.append(torch.bincount(idx[pos], minlength=self.x.shape[0]).to(self.device, self.loss_dtype))
        return torch.stack(rows)

    def _loss(self, params: dict[str, Tensor], w: Tensor, w_test: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One model: mean cross-entropy over its weighted training cells; test metrics as aux."""
        logits = functional_call(self.base, {f"model.{n}": t for n, t in params.items()}, (self.x,))
        logp = log_probs(logits, self.cfgs[0])  # the loss settings are shared by the batch (batch_key)
        nll = -logp.gather(-1, self.y[:, None]).squeeze(-1)  # [p²]
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
    def _process(self, pending: list[tuple[int, Tensor, float]]) -> list[_Member]:
        """Log the buffered steps of every model; checkpoint and finish models. The last
        pending step is the current one (the weights in ``params`` are its weights)."""
        values = torch.stack([m for _, m, _ in pending]).cpu().tolist()  # [T][N][6]
        finished = []
        for (step, _, wall), rows in zip(pending, values):
            for mb in self.members:
                r, ev = rows[mb.index], mb.needs_eval(step)
                metrics = {"train_loss": r[0], "train_acc": r[1], "test_loss": r[2] if ev else math.nan,
                           "test_acc": r[3] if ev else math.nan, "lr": lr_at(mb.cfg, step), "weight_norm": r[4],
                           "grad_norm": r[5], "wall_time": mb.wall_offset + wall}
                if mb.end_step(step, metrics):
                    mb.finish(step)
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
        self.params, self.exp_avg, self.exp_avg_sq = pick(self.params), pick(self.exp_avg), pick(self.exp_avg_sq)
        self.grokfast.select(keep)
        self.train_w, self.test_w = self.train_w.index_select(0, keep), self.test_w.index_select(0, keep)
        self.train_idx = [self.train_idx[mb.index] for mb in self.members]
        for i, mb in enumerate(self.members):
            mb.index = i
        return pick(grads)

    def fit(self) -> list[Run]:
        """Train every model to its end; returns the runs in the order given."""
        runs = [mb.run for mb in self.members]
        self._t0 = time.perf_counter()
        for mb in self.members:
            mb.start(self._t0)
        last = max(mb.cfg.n_steps for mb in self.members)
        bar = tqdm(total=last, initial=self.step0, desc=f"batch of {len(self.members)}", unit="step",
                   dynamic_ncols=True, mininterval=0.5, disable=not self.progress)
        pending: list[tuple[int, Tensor, float]] = []
        step = self.step0
        while self.members:
            grads, metrics = self._forward_backward(step)
            pending.append((step, metrics, time.perf_counter() - self._t0))
            if any(mb.needs_eval(step) for mb in self.members):  # host sync only here
                finished = self._process(pending)
                pending = []
                if finished:
                    grads = self._drop(finished, grads)
                bar.set_postfix(models=len(self.members), refresh=False)
            if not self.members:
                break
            self.grokfast.apply(grads)
            self._adamw(grads, step)
            step += 1
            bar.update(1)
        bar.close()
        return runs


def _param_groups(cfg: TrainConfig, model: Transformer) -> list[dict]:
    """The param groups torch.optim.AdamW (as interp.train builds it) records for ``model``."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay, fused=True)
    return opt.state_dict()["param_groups"]


def _or(a: Tensor | None, b: Tensor) -> Tensor:
    return b if a is None else a
