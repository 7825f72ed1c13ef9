"""Training loop with hooks, Grokfast filters, a dense-then-log checkpoint schedule,
and exact resume.

Loop convention: iteration ``t`` evaluates the weights W_t (after t updates), logs
metrics row ``t``, saves checkpoint ``t`` if scheduled (W_t plus the optimizer and
Grokfast state after t updates, and the hook states before step ``t``'s events), then
applies update t+1. Resuming from the state saved at ``t`` re-runs iteration ``t`` and is
bit-identical to never stopping.

Process-wide settings (``interp.perf.configure_process``: thread count, malloc reuse) are the
caller's: :func:`train` and :func:`resume` change none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from interp.config import TrainConfig, checkpoint_steps, lr_at
from interp.errors import ConfigError, StoreError
from interp.grokfast import Grokfast
from interp.hooks import TrainHook
from interp.loop import RunLoop, TrainState, minibatch
from interp.losses import accuracy, cross_entropy, masked_cross_entropy
from interp.optim import apply_gradient_options, build_optimizer
from interp.store import DEFAULT_ROOT, Run


@torch.no_grad()
def _global_norm(tensors: Sequence[torch.Tensor]) -> float:
    """sqrt(Σ ‖t‖²) over all tensors."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors)))).item()


class Trainer(RunLoop):
    """Owns the model, optimizer and data of one run; :meth:`fit` runs the loop. ``hooks`` run
    after the built-in ones (:func:`interp.hooks.builtin_hooks`)."""

    def __init__(self, cfg: TrainConfig, run: Run, hooks: Sequence[TrainHook] = (), progress: bool = True):
        self.task = run.task  # checked against the split stored in run.json
        self.model = cfg.build_model()
        self.named_params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named_params]
        self.optimizer = build_optimizer(cfg, self.params)
        self.grokfast = Grokfast(cfg.grokfast, cfg.grokfast_alpha, cfg.grokfast_lamb, cfg.grokfast_window)
        state = TrainState.load(run) if run.has_state else None
        if state is not None:
            self._restore(state)
        self.init_loop(cfg, run, state, hooks, progress)
        self.per_position = self.task.per_position  # next-token loss at every position (issue 13)
        x, y = self.task.inputs, (self.task.targets if self.per_position else self.task.labels)
        self.train_x, self.train_y = x[self.task.train_idx], y[self.task.train_idx]
        self.test_x, self.test_y = x[self.task.test_idx], y[self.task.test_idx]

    # ---- state
    def train_state(self, step: int) -> TrainState:
        opt = self.optimizer.state_dict()
        return TrainState(step=step, wall_time=self.elapsed(), model=self.model.state_dict(), opt=opt["state"],
                          param_groups=opt["param_groups"], grokfast=self.grokfast.state_tensors(),
                          grokfast_count=self.grokfast.count)

    def _restore(self, state: TrainState) -> None:
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict({"state": state.opt, "param_groups": state.param_groups})
        self.grokfast.load(state.grokfast, state.grokfast_count)
        if state.rng is not None:  # as saved; the loop itself draws nothing from the global RNG
            torch.set_rng_state(state.rng)

    # ---- one step
    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = minibatch(self.cfg, len(self.train_y), step)
        return (self.train_x, self.train_y) if idx is None else (self.train_x[idx], self.train_y[idx])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_position:
            return self.model.forward_all(x) if self.cfg.fast_path else self.model(x)
        return self.model.forward_last(x) if self.cfg.fast_path else self.model(x)[:, -1]

    def loss_fn(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.per_position:
            return masked_cross_entropy(logits, y, self.cfg)
        return cross_entropy(logits, y, self.cfg)

    def accuracy(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        if self.per_position:
            return accuracy(logits, y)
        return (logits.argmax(-1) == y).float().mean().item()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        if len(y) == 0:
            return math.nan, math.nan
        logits = self.logits(x)
        return self.loss_fn(logits, y).item(), self.accuracy(logits, y)

    def _forward_backward(self, step: int) -> dict[str, float]:
        """Loss and gradients of the weights W_step, and the step's metrics row."""
        x, y = self._batch(step)
        self.model.train()
        logits = self.logits(x)
        loss = self.loss_fn(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm, weight_norm = _global_norm([p.grad for p in self.params]), _global_norm(self.params)
        metrics = {"train_loss": loss.item(), "train_acc": self.accuracy(logits, y),
                   "test_loss": math.nan, "test_acc": math.nan, "lr": lr_at(self.cfg, step),
                   "weight_norm": weight_norm, "grad_norm": grad_norm, "wall_time": self.elapsed()}
        if self.needs_eval(step):
            metrics["test_loss"], metrics["test_acc"] = self.evaluate(self.test_x, self.test_y)
        return metrics

    def _update(self, step: int) -> None:
        """Update ``step`` → ``step + 1``: Grokfast filter, gradient options, then the optimizer at the
        warm-up learning rate."""
        self.grokfast.apply({n: p.grad for n, p in self.named_params})
        apply_gradient_options(self.cfg, self.named_params)  # frozen groups, ⊥Grad (interp.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.cfg, step)
        self.optimizer.step()

    def fit(self) -> Run:
        self.start()
        step = self.start_step
        for step in range(self.start_step, self.cfg.n_steps + 1):
            if self.end_step(step, self._forward_backward(step)):
                break
            self._update(step)
        self.finish(step)
        return self.run


# ====================================================================== entry points
def new_run_dir(root: str | Path, name: str | None, cfg: TrainConfig) -> Path:
    root = Path(root)
    base = name or f"{cfg.op}_p{cfg.p}_frac{cfg.frac_train:g}_wd{cfg.weight_decay:g}_seed{cfg.seed}"
    if cfg.seq_task is not None and name is None:  # issue 13
        base = f"{cfg.seq_task}_p{cfg.p}_n{cfg.seq_len}_N{cfg.n_train}_wd{cfg.weight_decay:g}_seed{cfg.seed}"
    path, i = root / base, 1
    while (path / "run.json").exists() and name is None:
        i += 1
        path = root / f"{base}_{i}"
    return path


def train(config: TrainConfig, out: str | Path | None = None, *, root: str | Path = DEFAULT_ROOT,
          name: str | None = None, hooks: Sequence[TrainHook] = (), progress: bool = True) -> Run:
    """Train a new run into ``out`` (or a fresh directory under ``root``) and return it."""
    path = Path(out) if out is not None else new_run_dir(root, name, config)
    run = create_run(config, path, name=name)
    return Trainer(config, run, hooks=hooks, progress=progress).fit()


def create_run(config: TrainConfig, path: str | Path, name: str | None = None) -> Run:
    """A new, empty run directory: run.json with the config, the split, the parameter count and
    the checkpoint schedule. Every trainer (this one, ``interp.batched``) starts runs here."""
    path, task = Path(path), config.task()
    return Run.create(path, {
        "name": name or path.name, "config": config.to_dict(), "status": "created",
        "split": task.split_meta(),
        "model": {"params": config.build_model().param_count()},
        "checkpoint_schedule": checkpoint_steps(config),
    })


def resume(path: str | Path, *, n_steps: int | None = None, hooks: Sequence[TrainHook] = (),
           progress: bool = True) -> Run:
    """Continue a run from its last saved state, optionally to another ``n_steps`` (not below
    the saved step). A run that stopped before its step-0 state was saved starts over."""
    run = Run.open(path)
    cfg = run.train_config
    saved = run.state_step
    if saved is None and any(run.steps):  # step 0 alone is a function of the seeds: redone below
        raise StoreError(f"{path} has checkpoints but no saved training state to resume from")
    if n_steps is not None and n_steps != cfg.n_steps:
        if n_steps < (saved or 0):
            raise ConfigError(f"n_steps: {n_steps} is before step {saved}, where {path} was saved; "
                              "a run cannot end before its saved state")
        cfg = cfg.replace(n_steps=n_steps)
        run.update_meta(config=cfg.to_dict(), checkpoint_schedule=checkpoint_steps(cfg))
    elif run.status == "complete":
        return run
    return Trainer(cfg, run, hooks=hooks, progress=progress).fit()
