"""What defines a run: :class:`TrainConfig`, ``key=value`` parsing, the presets, the
checkpoint schedule and the learning-rate schedule.

The architecture fields of :class:`~interp.model.ModelConfig` (every field but the task-derived
``d_vocab``, ``d_vocab_out`` and ``n_ctx``) are inherited, with their types and defaults, from a
dataclass generated from ``ModelConfig`` itself: a new model option is one edit, in model.py, and
appears in TrainConfig, run.json and ``--set`` without another. Imports tasks and model only.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, make_dataclass
from typing import Any

import numpy as np
import torch

from interp.errors import ConfigError
from interp.limits import check_limits
from interp.model import ModelConfig, Transformer
from interp.seqtasks import SequenceTask
from interp.tasks import Task

#: ModelConfig fields that a TrainConfig derives from its task, not from its own fields
TASK_DERIVED_FIELDS = frozenset({"d_vocab", "d_vocab_out", "n_ctx"})
#: ModelConfig fields that TrainConfig carries, in ModelConfig's order
ARCH_FIELDS = tuple(f.name for f in fields(ModelConfig) if f.name not in TASK_DERIVED_FIELDS)

_MODEL_TYPES = typing.get_type_hints(ModelConfig)
_ArchFields = make_dataclass(
    "_ArchFields",
    [(f.name, _MODEL_TYPES[f.name], dataclasses.field(default=f.default, default_factory=f.default_factory))
     for f in fields(ModelConfig) if f.name in ARCH_FIELDS],
    frozen=True, kw_only=True,
)
_ArchFields.__doc__ = "The architecture fields of ModelConfig, generated from it (see the module docstring)."


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_ArchFields):
    """Everything that defines a run. Defaults are the 2023 progress-measures paper's
    (Nanda et al., arXiv:2301.05217): p = 113, a+b, 30% of pairs, one layer, d_model 128,
    4 heads of 32, d_mlp 512, ReLU, no LayerNorm, full-batch AdamW(lr 1e-3, wd 1.0,
    betas (0.9, 0.98)), 10-step linear warm-up, float64 loss, 40,000 steps. The model fields
    (``d_model``, ``n_heads``, ``d_head``, ``d_mlp``, ``n_layers``, ``act_fn``, ``layernorm``, ...)
    are :data:`ARCH_FIELDS`, inherited from :class:`~interp.model.ModelConfig`."""

    # task
    op: str = "add"
    p: int = 113
    frac_train: float = 0.3
    data_seed: int = 0
    seed: int = 0  # model init and minibatch order
    split: str = "grokscope"  # issue 12: train/test split scheme, interp.tasks.SPLITS
    # sequence tasks (issue 13, interp.seqtasks): None keeps the grid task ``op`` mod p
    seq_task: str | None = None
    seq_len: int = 16  # positions before ``=`` (sparse_sum, sparse_parity) / after BOS (bigram_backcopy)
    seq_k: int = 2  # operands (sum), secret bits (sparse_parity)
    n_triggers: int = 3  # bigram_backcopy
    bos: bool = False  # prepend a BOS token (always on for bigram_backcopy)
    n_train: int = 2000  # sequence tasks: train inputs (the data-amount knob)
    n_test: int = 1000
    # optimisation
    n_steps: int = 40_000
    lr: float = 1e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 10
    warmup_from_zero: bool = False  # issue 12: lr·min(1, t/warmup_steps), lr 0 at step 0 (Nanda et al. 2023)
    batch_size: int | None = None  # None: full batch
    loss_dtype: str = "float64"
    output_eq: bool = False  # issue 12: output classes include '=' (d_vocab_out = p + 1, Nanda et al. 2023)
    # issue 15: optimizer, loss and gradient options (interp.optim, interp.losses)
    optimizer: str = "adamw"  # "adamw" | "adam" (no weight decay) | "sgd"
    orthograd: bool = False  # ⊥Grad (Prieto et al. 2025): gradient made orthogonal to the weights
    loss: str = "cross_entropy"  # "cross_entropy" | "stablemax" (Prieto et al. 2025)
    frozen: str = ""  # comma-separated parameter-name prefixes that are not updated
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
    grok_threshold: float = 0.99  # interp.metrics.GROK_THRESHOLD
    fast_path: bool = True
    state_snapshots: int = 24  # issue 15: full training states kept at ~this many log-spaced checkpoints

    def __post_init__(self) -> None:
        check_limits(self)  # issue 16: integer seeds torch takes, memory estimate, before any allocation
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
            "optimizer": self.optimizer in ("adamw", "adam", "sgd"),
            "loss": self.loss in ("cross_entropy", "stablemax"), "state_snapshots": self.state_snapshots >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"{name}: invalid value {getattr(self, name)!r}")

    def task(self) -> Task | SequenceTask:
        if self.seq_task is not None:
            return SequenceTask(self.seq_task, self.p, self.seq_len, self.seq_k, self.n_triggers, self.bos,
                                self.n_train, self.n_test, self.data_seed)
        return Task(self.op, self.p, self.frac_train, self.data_seed, self.split)

    def model_config(self) -> ModelConfig:
        """The ModelConfig: the task's vocabulary and context, and every field in ARCH_FIELDS."""
        task = self.task() if self.seq_task is not None else None  # grid: (p + 1, p, 3) without building it
        grid = (self.p + 1, self.p + int(self.output_eq), 3)  # output_eq: '=' is an output class (issue 12)
        vocab = (task.d_vocab, task.d_vocab_out, task.n_ctx) if task is not None else grid
        return ModelConfig(d_vocab=vocab[0], d_vocab_out=vocab[1], n_ctx=vocab[2],
                           **{name: getattr(self, name) for name in ARCH_FIELDS})

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



def format_value(v: Any) -> str:
    """Short, exact text of a field value that :func:`parse_field` reads back: 1.0 -> '1', 0.3 ->
    '0.3' (sweep member names, fork grids)."""
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return str(v)

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
    # The 2023 paper's code as run (issue 12): its split (random.shuffle of the (i, j, p) triples,
    # int(frac·p²) train), 114 output classes (the '=' token included) and a warm-up from lr 0
    # (LambdaLR(min(step/10, 1))). Everything else as "nanda". See docs/training.md.
    "nanda2023": TrainConfig(split="nanda2023", output_eq=True, warmup_from_zero=True),
    # ---- sequence tasks (issue 13)
    # Bigram-Backcopy (Guo et al. 2024, arXiv:2410.13835), one layer, one head. What to watch
    # (attention.seq_sinks, measured on a loaded 2-core CPU): the head goes active on the 3 trigger
    # tokens (attention on BOS 0.08 at init -> 0.000 by step ~190: it copies the token before the
    # trigger) and dormant on the others, dumping attention on BOS: sink_rate_non_trigger (Gu et al.'s
    # rate, ε = 0.3, query 0 left out) 0% until step ~170, 52% at 190, 99% at 219, 100% from ~240 on
    # (about 1.5 minutes in); first_attn_non_trigger 0.10 -> 0.90 by step 1000. BOS's value state
    # drains: ‖v W_O‖ 1.32 -> 0.21 while the other tokens' grows 1.40 -> 2.96 (value_ratio 0.95 -> 0.07).
    # No residual-state peak: BOS's final residual norm 3.02 -> 3.59 while the others' grows 2.61 -> 6.39
    # (resid_ratio falls). 2- and 3-layer and 2-head variants (800-2,000 steps) form the sink in their last
    # layer but shrink BOS's residual norm too (2 layers, layer 1's resid_pre at step 2,000: BOS 0.95
    # against 2.94); with LayerNorm and 2 layers, no sink in 800 steps at lr 3e-3, a partial one (non-trigger
    # attention on BOS 0.39) by 1,500 at lr 1e-3, BOS's residual still below the others' (21.5 vs 25.5).
    # 2,000 steps, 327 checkpoints, ~10 minutes.
    "sinks": TrainConfig(
        seq_task="bigram_backcopy", p=32, seq_len=32, n_triggers=3, bos=True, n_train=20_000, n_test=500,
        d_model=64, n_heads=1, d_head=64, d_mlp=256, lr=3e-3, weight_decay=0.0, batch_size=64, n_steps=2_000,
        ckpt_dense_until=100, ckpt_dense_every=10, ckpt_log_count=150, ckpt_every=10, eval_every=50,
    ),
    # sparse_sum: a + b mod 17 at 2 random positions among 12, read at `=`; n_train 850 (full batch). Groks:
    # train accuracy reaches 99% at step 180, test accuracy creeps 12% -> 49% over steps 250-5,500, then
    # jumps: 50% at 5,600, 90% at 6,660, 99% at 6,906 (38x the memorisation time). The readout query's
    # effective number of attended tokens (attention.sparsity readout_eff_tokens) falls from 13.0 (uniform
    # over the 13 keys) to 4.8 at step 180, 3.0 at ~840, 2.4 at 3,000 and 2.3 at ~5,200, during the
    # plateau, before test accuracy moves (a brief rise to 3.1 at 7,000 as it jumps, 2.6 at the end).
    # 8,000 steps, 355 checkpoints, ~5.5 minutes on a loaded 2-core CPU (with n_train 1,000 test accuracy
    # follows train within ~300 steps; with weight_decay 2.0 it groks at ~2,900).
    "sparse": TrainConfig(
        seq_task="sparse_sum", p=17, seq_len=12, n_train=850, n_test=1_000, d_model=64, n_heads=4, d_head=16,
        d_mlp=256, lr=1e-3, weight_decay=1.0, n_steps=8_000, ckpt_dense_until=100, ckpt_dense_every=10,
        ckpt_log_count=150, ckpt_every=40, eval_every=10,
    ),
    # Small bigram_backcopy for tests: 300 steps in ~15 s; sink_rate_non_trigger 0% at steps 0 and 50,
    # 100% from step 100 on.
    "tiny_seq": TrainConfig(
        seq_task="bigram_backcopy", p=16, seq_len=16, n_triggers=2, bos=True, n_train=4_000, n_test=200,
        d_model=32, n_heads=1, d_head=32, d_mlp=64, lr=1e-2, weight_decay=0.0, batch_size=64, n_steps=300,
        ckpt_dense_until=0, ckpt_log_count=0, ckpt_every=50, eval_every=50,
    ),
}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


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
    """Linear warm-up: lr_t = lr · min(1, (t + 1) / warmup_steps), then constant; with
    ``warmup_from_zero`` lr_t = lr · min(1, t / warmup_steps) (the 2023 paper's LambdaLR: update 0
    has learning rate 0)."""
    if not cfg.warmup_steps:
        return cfg.lr
    return cfg.lr * min(1.0, (step + (0 if cfg.warmup_from_zero else 1)) / cfg.warmup_steps)


def snapshot_steps(cfg: TrainConfig) -> list[int]:
    """Checkpoint steps at which the full training state is kept (issue 15, for forks): step 0
    and the checkpoints nearest to ``state_snapshots`` log-spaced steps in [1, n_steps]."""
    ckpts = checkpoint_steps(cfg)
    if cfg.state_snapshots <= 0:
        return []
    arr = np.asarray(ckpts)
    targets = np.geomspace(1, max(cfg.n_steps, 1), cfg.state_snapshots)
    picks = {int(arr[np.abs(arr - t).argmin()]) for t in targets}
    return sorted(picks | {0})
