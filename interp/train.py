"""Training loop with hooks, Grokfast filters, a dense-then-log checkpoint schedule,
and exact resume.

Loop convention: iteration ``t`` evaluates the weights W_t (after t updates), logs
metrics row ``t``, saves checkpoint ``t`` if scheduled (W_t plus the optimizer and
Grokfast state after t updates), then applies update t+1. Resuming from the state
saved at ``t`` re-runs iteration ``t`` and is bit-identical to never stopping.
"""

from __future__ import annotations

import dataclasses
import math
import time
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interp.errors import ConfigError, StoreError
from interp.model import ModelConfig, Transformer
from interp.perf import reuse_freed_memory
from interp.store import DEFAULT_ROOT, METRIC_COLUMNS, Run
from interp.tasks import Task


# ====================================================================== config
@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. Defaults are the 2023 progress-measures paper's
    (Nanda et al., arXiv:2301.05217): p = 113, a+b, 30% of pairs, one layer, d_model 128,
    4 heads of 32, d_mlp 512, ReLU, no LayerNorm, full-batch AdamW(lr 1e-3, wd 1.0,
    betas (0.9, 0.98)), 10-step linear warm-up, float64 loss, 40,000 steps."""

    # task
    op: str = "add"
    p: int = 113
    frac_train: float = 0.3
    data_seed: int = 0
    # model
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    n_layers: int = 1
    act_fn: str = "relu"
    layernorm: bool = False
    attn_only: bool = False
    attn_bias: bool = False
    mlp_bias: bool = True
    unembed_bias: bool = False
    dtype: str = "float32"
    seed: int = 0  # model init and minibatch order
    # optimisation
    n_steps: int = 40_000
    lr: float = 1e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 10
    batch_size: int | None = None  # None: full batch
    loss_dtype: str = "float64"
    # Grokfast (Lee et al. 2024, arXiv:2405.20233)
    grokfast: str = "none"  # "none" | "ema" | "ma"
    grokfast_alpha: float = 0.98
    grokfast_lamb: float = 2.0
    grokfast_window: int = 100
    # checkpoints and evaluation
    ckpt_dense_until: int = 100
    ckpt_dense_every: int = 10
    ckpt_log_count: int = 100
    ckpt_every: int | None = None  # None: n_steps // 200
    eval_every: int = 100
    stop_after_grok: int | None = None  # stop once test acc >= grok_threshold for this many steps
    grok_threshold: float = 0.99
    fast_path: bool = True

    def __post_init__(self) -> None:
        self.task()
        self.model_config()
        checks = {
            "n_steps": self.n_steps >= 0, "lr": math.isfinite(self.lr) and self.lr > 0,
            "weight_decay": math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "beta1": 0 <= self.beta1 < 1, "beta2": 0 <= self.beta2 < 1, "warmup_steps": self.warmup_steps >= 0,
            "batch_size": self.batch_size is None or self.batch_size >= 1,
            "loss_dtype": self.loss_dtype in ("float32", "float64"),
            "grokfast": self.grokfast in ("none", "ema", "ma"),
            "grokfast_alpha": 0 <= self.grokfast_alpha < 1, "grokfast_lamb": math.isfinite(self.grokfast_lamb),
            "grokfast_window": self.grokfast_window >= 1, "ckpt_dense_until": self.ckpt_dense_until >= 0,
            "ckpt_dense_every": self.ckpt_dense_every >= 1, "ckpt_log_count": self.ckpt_log_count >= 0,
            "ckpt_every": self.ckpt_every is None or self.ckpt_every >= 1, "eval_every": self.eval_every >= 1,
            "stop_after_grok": self.stop_after_grok is None or self.stop_after_grok >= 0,
            "grok_threshold": 0 < self.grok_threshold <= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"{name}: invalid value {getattr(self, name)!r}")

    def task(self) -> Task:
        return Task(self.op, self.p, self.frac_train, self.data_seed)

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            d_vocab=self.p + 1, d_vocab_out=self.p, n_ctx=3, d_model=self.d_model, n_heads=self.n_heads,
            d_head=self.d_head, d_mlp=self.d_mlp, n_layers=self.n_layers, act_fn=self.act_fn,
            layernorm=self.layernorm, attn_only=self.attn_only, attn_bias=self.attn_bias,
            mlp_bias=self.mlp_bias, unembed_bias=self.unembed_bias, dtype=self.dtype,
        )

    def build_model(self) -> Transformer:
        """The model initialised from ``seed``, without touching the global RNG."""
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            return Transformer(self.model_config())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown config key (known: {', '.join(sorted(known))})")
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def with_overrides(self, pairs: Iterable[str]) -> TrainConfig:
        """Apply ``key=value`` strings, parsing each value by the field's type."""
        changes = {}
        for pair in pairs:
            if "=" not in pair:
                raise ConfigError(f"--set {pair!r}: expected key=value")
            key, value = pair.split("=", 1)
            changes[key.strip()] = parse_field(key.strip(), value.strip())
        return self.replace(**changes)

    @property
    def checkpoint_every(self) -> int:
        return self.ckpt_every or max(1, self.n_steps // 200)


_FIELD_TYPES = typing.get_type_hints(TrainConfig)


def parse_field(key: str, value: str) -> Any:
    """Parse ``value`` for TrainConfig field ``key``; raise ConfigError naming the field."""
    if key not in _FIELD_TYPES:
        raise ConfigError(f"{key}: unknown config key (known: {', '.join(sorted(_FIELD_TYPES))})")
    tp = _FIELD_TYPES[key]
    optional = isinstance(tp, types.UnionType) and type(None) in tp.__args__
    if optional:
        if value.lower() in ("none", "null", ""):
            return None
        tp = next(a for a in tp.__args__ if a is not type(None))
    try:
        if tp is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(float(value)) if float(value).is_integer() else int(value)
        return tp(value)
    except ValueError:
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}") from None


PRESETS: dict[str, TrainConfig] = {
    # Nanda et al. 2023: groks (test acc >= 99%) between ~5k and ~25k steps.
    "nanda": TrainConfig(),
    # Same model with the Grokfast EMA filter (alpha 0.98, lambda 2) and lr 3e-3: groks in ~2k steps
    # (at lr 1e-3 the filter alone still needs well over 3k); stops 300 steps after grokking.
    "demo": TrainConfig(grokfast="ema", lr=3e-3, n_steps=5_000, ckpt_every=20, eval_every=20, stop_after_grok=300),
    # Small and fast, for tests: groks in seconds on a CPU.
    "tiny": TrainConfig(
        p=47, frac_train=0.4, d_model=64, n_heads=4, d_head=16, d_mlp=128, lr=3e-3, weight_decay=3.0,
        n_steps=1_500, ckpt_dense_until=50, ckpt_dense_every=10, ckpt_log_count=30, ckpt_every=25, eval_every=10,
    ),
}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ====================================================================== schedule
def checkpoint_steps(cfg: TrainConfig) -> list[int]:
    """Sorted checkpoint steps: every ``ckpt_dense_every`` steps up to ``ckpt_dense_until``
    (the fast early dynamics), ``ckpt_log_count`` log-spaced steps from there to
    ``n_steps``, every ``checkpoint_every`` steps, and step 0 and the final step.
    The defaults give about 300 checkpoints for the 40k-step ``nanda`` preset."""
    n = cfg.n_steps
    steps = set(range(0, min(cfg.ckpt_dense_until, n) + 1, cfg.ckpt_dense_every))
    lo = max(cfg.ckpt_dense_until, 1)
    if cfg.ckpt_log_count and n > lo:
        steps.update(np.unique(np.geomspace(lo, n, cfg.ckpt_log_count).round().astype(int)).tolist())
    steps.update(range(0, n + 1, cfg.checkpoint_every))
    steps.update({0, n})
    return sorted(s for s in steps if 0 <= s <= n)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up: lr_t = lr · min(1, (t + 1) / warmup_steps), then constant."""
    return cfg.lr * (min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0)


# ====================================================================== Grokfast
class Grokfast:
    """Grokfast gradient filters (Lee et al. 2024, "Grokfast: Accelerated Grokking by
    Amplifying Slow Gradients", arXiv:2405.20233), applied to ``p.grad`` in place.

    * EMA: h ← α·h + (1 − α)·g, then g ← g + λ·h (h starts at the first g).
    * MA:  keep the last w gradients; once the window is full, g ← g + λ·mean(window).
    """

    def __init__(self, kind: str, params: Sequence[tuple[str, torch.nn.Parameter]], alpha: float,
                 lamb: float, window: int):
        self.kind, self.alpha, self.lamb, self.window = kind, alpha, lamb, window
        self.params = list(params)
        self.ema: dict[str, torch.Tensor] = {}
        self.hist: dict[str, torch.Tensor] = {}  # [window, *shape] ring buffer
        self.count = 0

    @torch.no_grad()
    def apply(self) -> None:
        if self.kind == "ema":
            for name, p in self.params:
                h = self.ema.get(name)
                if h is None:
                    self.ema[name] = h = p.grad.detach().clone()
                else:
                    h.mul_(self.alpha).add_(p.grad, alpha=1 - self.alpha)
                p.grad.add_(h, alpha=self.lamb)
        elif self.kind == "ma":
            slot = self.count % self.window
            for name, p in self.params:
                buf = self.hist.get(name)
                if buf is None:
                    self.hist[name] = buf = p.grad.new_zeros((self.window, *p.shape))
                buf[slot] = p.grad
                if self.count + 1 >= self.window:
                    p.grad.add_(buf.mean(0), alpha=self.lamb)
            self.count += 1

    def state_tensors(self) -> dict[str, torch.Tensor]:
        src = self.ema if self.kind == "ema" else self.hist
        return {f"grokfast.{k}": v for k, v in src.items()}

    def load(self, tensors: dict[str, torch.Tensor], count: int) -> None:
        dst = self.ema if self.kind == "ema" else self.hist
        for k, v in tensors.items():
            if k.startswith("grokfast."):
                dst[k.removeprefix("grokfast.")] = v.clone()
        self.count = count


# ====================================================================== hooks
class TrainHook(Protocol):
    """Training callback. Every method is optional at run time (the trainer calls the ones a
    hook has); subclass :class:`Hook` for no-op defaults. A hook may set
    ``trainer.should_stop = True`` to end training after the current step (a final
    checkpoint is then saved)."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, step: int, model: Transformer) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


class Hook(TrainHook):
    """Convenience base class: the protocol's methods, as no-ops."""


class MetricsLogger(Hook):
    """Collects one row per step and writes ``metrics.parquet`` at every checkpoint."""

    def __init__(self, run: Run, start_step: int):
        old = run.metrics
        old = old[old["step"] < start_step] if len(old) else old
        # columnar: building the frame from lists stays cheap at 40k rows x 300 flushes
        self.columns: dict[str, list] = {c: old[c].tolist() if len(old) else [] for c in METRIC_COLUMNS}
        self.run = run

    def on_step_end(self, step, metrics):
        self.columns["step"].append(step)
        for c in METRIC_COLUMNS[1:]:
            self.columns[c].append(metrics.get(c, math.nan))

    def flush(self) -> None:
        self.run.write_metrics(pd.DataFrame(self.columns, columns=METRIC_COLUMNS))

    def on_checkpoint(self, step, model):
        self.flush()

    def on_train_end(self, trainer):
        self.flush()


class Checkpointer(Hook):
    """Saves weights (with step and losses in the metadata) and the resumable state."""

    def __init__(self, run: Run):
        self.run, self.trainer = run, None
        self.last: dict[str, float] = {}

    def on_train_start(self, trainer):
        self.trainer = trainer

    def on_step_end(self, step, metrics):
        self.last = metrics

    def on_checkpoint(self, step, model):
        md = {k: self.last[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc") if k in self.last}
        self.run.save_checkpoint(step, model.state_dict(), md)
        self.trainer.save_state(step)


class ProgressBar(Hook):
    """tqdm bar with step, train/test loss and accuracy, and ETA."""

    def __init__(self, total: int, initial: int, every: int = 50):
        self.total, self.initial, self.every = total, initial, every
        self.bar = None
        self.test: dict[str, float] = {}

    def on_train_start(self, trainer):
        self.bar = tqdm(total=self.total, initial=self.initial, desc=trainer.run.name, unit="step",
                        dynamic_ncols=True, mininterval=0.5)

    def on_step_end(self, step, metrics):
        if not math.isnan(metrics.get("test_loss", math.nan)):
            self.test = {"test_loss": metrics["test_loss"], "test_acc": metrics["test_acc"]}
        if step % self.every == 0 or step == self.total:
            self.bar.set_postfix(train_loss=f"{metrics['train_loss']:.3g}", train_acc=f"{metrics['train_acc']:.3f}",
                                 test_loss=f"{self.test.get('test_loss', math.nan):.3g}",
                                 test_acc=f"{self.test.get('test_acc', math.nan):.3f}", refresh=False)
        self.bar.n = step
        self.bar.update(0)

    def on_train_end(self, trainer):
        self.bar.close()


class EarlyStop(Hook):
    """Stop once test accuracy has stayed >= ``threshold`` for ``patience`` steps."""

    def __init__(self, patience: int, threshold: float = 0.99):
        self.patience, self.threshold = patience, threshold
        self.since: int | None = None
        self.trainer = None

    def on_train_start(self, trainer):
        self.trainer = trainer

    def on_step_end(self, step, metrics):
        acc = metrics.get("test_acc", math.nan)
        if math.isnan(acc):
            return
        if acc >= self.threshold:
            self.since = step if self.since is None else self.since
            if step - self.since >= self.patience:
                self.trainer.should_stop = True
        else:
            self.since = None


# ====================================================================== trainer
@torch.no_grad()
def _global_norm(tensors: Sequence[torch.Tensor]) -> float:
    """sqrt(Σ ‖t‖²) over all tensors."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors)))).item()


class Trainer:
    """Owns the model, optimizer and data of one run; :meth:`fit` runs the loop."""

    def __init__(self, cfg: TrainConfig, run: Run, hooks: Sequence[Any] = (), progress: bool = True):
        self.cfg, self.run = cfg, run
        self.task = run.task  # checked against the split stored in run.json
        self.model = cfg.build_model()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                           weight_decay=cfg.weight_decay, fused=True)
        self.grokfast = Grokfast(cfg.grokfast, list(self.model.named_parameters()), cfg.grokfast_alpha,
                                 cfg.grokfast_lamb, cfg.grokfast_window)
        self.start_step, self.wall_offset, self.should_stop = 0, 0.0, False
        if run.has_state:
            self._load_state()
        x, y = self.task.inputs, self.task.labels
        self.train_x, self.train_y = x[self.task.train_idx], y[self.task.train_idx]
        self.test_x, self.test_y = x[self.task.test_idx], y[self.task.test_idx]
        self.ckpt_steps = set(checkpoint_steps(cfg))
        self.hooks: list[Any] = [MetricsLogger(run, self.start_step), Checkpointer(run)]
        if progress:
            self.hooks.append(ProgressBar(cfg.n_steps, self.start_step))
        if cfg.stop_after_grok is not None:
            self.hooks.append(EarlyStop(cfg.stop_after_grok, cfg.grok_threshold))
        self.hooks.extend(hooks)

    # ---- state
    def save_state(self, step: int) -> None:
        opt = self.optimizer.state_dict()
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for idx, st in opt["state"].items():
            tensors.update({f"opt.{idx}.{k}": v for k, v in st.items()})
        tensors.update(self.grokfast.state_tensors())
        tensors["rng.torch"] = torch.get_rng_state()
        info = {"step": step, "wall_time": self.wall_offset + time.perf_counter() - self._t0,
                "param_groups": opt["param_groups"], "grokfast_count": self.grokfast.count,
                "config": self.cfg.to_dict()}
        self.run.save_state(tensors, info)

    def _load_state(self) -> None:
        tensors, info = self.run.load_state()
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        self.optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
        self.grokfast.load(tensors, info.get("grokfast_count", 0))
        torch.set_rng_state(tensors["rng.torch"])
        self.start_step, self.wall_offset = int(info["step"]), float(info["wall_time"])

    # ---- one step
    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.batch_size is None or self.cfg.batch_size >= len(self.train_y):
            return self.train_x, self.train_y
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)  # stateless: resumable
        idx = torch.randint(len(self.train_y), (self.cfg.batch_size,), generator=gen)
        return self.train_x[idx], self.train_y[idx]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_last(x) if self.cfg.fast_path else self.model(x)[:, -1]

    def loss_fn(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.to(getattr(torch, self.cfg.loss_dtype)), y)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        if len(y) == 0:
            return math.nan, math.nan
        logits = self.logits(x)
        return self.loss_fn(logits, y).item(), (logits.argmax(-1) == y).float().mean().item()

    def _call(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            fn = getattr(hook, method, None)
            if fn is not None:
                fn(*args)

    def fit(self) -> Run:
        cfg = self.cfg
        reuse_freed_memory()
        self._t0 = time.perf_counter()
        self.run.update_meta(status="running")
        self._call("on_train_start", self)
        step = self.start_step
        for step in range(self.start_step, cfg.n_steps + 1):
            x, y = self._batch(step)
            self.model.train()
            logits = self.logits(x)
            loss = self.loss_fn(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm, weight_norm = _global_norm([p.grad for p in self.params]), _global_norm(self.params)
            metrics = {"train_loss": loss.item(), "train_acc": (logits.argmax(-1) == y).float().mean().item(),
                       "test_loss": math.nan, "test_acc": math.nan, "lr": lr_at(cfg, step),
                       "weight_norm": weight_norm, "grad_norm": grad_norm,
                       "wall_time": self.wall_offset + time.perf_counter() - self._t0}
            is_ckpt = step in self.ckpt_steps
            if is_ckpt or step % cfg.eval_every == 0 or step == cfg.n_steps:
                metrics["test_loss"], metrics["test_acc"] = self.evaluate(self.test_x, self.test_y)
            self._call("on_step_end", step, metrics)
            if is_ckpt or step == cfg.n_steps or self.should_stop:
                self._call("on_checkpoint", step, self.model)
            if step == cfg.n_steps or self.should_stop:
                break
            self.grokfast.apply()
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(cfg, step)
            self.optimizer.step()
        self.run.update_meta(status="complete", final_step=step, stopped_early=bool(self.should_stop))
        self._call("on_train_end", self)
        return self.run


# ====================================================================== entry points
def new_run_dir(root: str | Path, name: str | None, cfg: TrainConfig) -> Path:
    root = Path(root)
    base = name or f"{cfg.op}_p{cfg.p}_frac{cfg.frac_train:g}_wd{cfg.weight_decay:g}_seed{cfg.seed}"
    path, i = root / base, 1
    while (path / "run.json").exists() and name is None:
        i += 1
        path = root / f"{base}_{i}"
    return path


def train(config: TrainConfig, out: str | Path | None = None, *, root: str | Path = DEFAULT_ROOT,
          name: str | None = None, hooks: Sequence[Any] = (), progress: bool = True) -> Run:
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
        "split": {"data_seed": config.data_seed, "frac_train": config.frac_train,
                  "train_idx": task.train_idx.tolist()},
        "model": {"params": config.build_model().param_count()},
        "checkpoint_schedule": checkpoint_steps(config),
    })


def resume(path: str | Path, *, n_steps: int | None = None, hooks: Sequence[Any] = (),
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
