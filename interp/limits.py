"""Bounds a config must respect before anything is allocated (issue 16): integer seeds that torch
accepts, and an estimate of the memory training needs, refused with the estimate when the
machine cannot hold it. Called by ``TrainConfig.__post_init__`` before the task is built, so a
config from the command line, from Python or from a (possibly hostile) ``run.json`` is checked
the same way.

The estimate (bytes) adds the task's tensors (all p² pairs: inputs, labels, split indices),
the model's parameters with their gradient, AdamW's two moments and the Grokfast state (one copy
for ``ema``, ``grokfast_window`` copies for ``ma``), and the activations of one full training
batch with autograd plus one evaluation of the test set. It is an order-of-magnitude guard,
not an accounting: it errs high by about 2x for the presets.
"""

from __future__ import annotations

import os
from typing import Any

from interp.errors import ConfigError

SEED_MAX = 2**63 - 1  # torch.manual_seed takes a signed or unsigned 64-bit integer
#: environment override of the memory the estimate is compared with (bytes; tests use it)
MEMORY_ENV = "GROKSCOPE_MAX_MEMORY"


def available_memory() -> int:
    """Physical memory of this machine in bytes (or ``GROKSCOPE_MAX_MEMORY``)."""
    if os.environ.get(MEMORY_ENV):
        return int(float(os.environ[MEMORY_ENV]))
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf
        return 2**40


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def memory_estimate(cfg: Any) -> dict[str, float]:
    """Bytes by part ('task', 'weights and optimizer', 'activations') for a TrainConfig ``cfg``."""
    p, d, layers = int(cfg.p), int(cfg.d_model), int(cfg.n_layers)
    heads, d_head, d_mlp = int(cfg.n_heads), int(cfg.d_head), int(cfg.d_mlp)
    pairs = p * p
    params = (p + 1) * d + d * p + 3 * d + layers * (4 * d * heads * d_head + 2 * d * d_mlp + d_mlp + 4 * d)
    copies = 4 + {"none": 0, "ema": 1, "ma": int(cfg.grokfast_window)}.get(cfg.grokfast, 0)
    n_train = max(1, int(pairs * float(cfg.frac_train)))
    batch = min(n_train, int(cfg.batch_size)) if cfg.batch_size else n_train
    per_example = 4 * (3 * (8 * d + 2 * d_mlp + 3 * heads) * layers + 3 * p)  # float32 activations, logits
    return {"task": pairs * 5 * 8.0, "weights and optimizer": params * copies * 4.0,
            "activations": (2 * batch + (pairs - n_train)) * per_example + batch * p * 8.0}


def check_limits(cfg: Any) -> None:
    """ConfigError, before any allocation, for seeds torch cannot take and for a config whose
    memory estimate exceeds :func:`available_memory`."""
    for name in ("seed", "data_seed"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
            raise ConfigError(f"{name}: must be an integer from 0 to 2**63-1, got {value!r}")
    for name in ("p", "d_model", "n_layers", "n_heads", "d_head", "d_mlp", "grokfast_window", "n_steps"):
        value = getattr(cfg, name, 1)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
    try:
        parts = memory_estimate(cfg)
    except (TypeError, ValueError, OverflowError) as e:
        raise ConfigError(f"config: a size field has the wrong type ({e})") from None
    need, have = sum(parts.values()), available_memory()
    if need > have:
        detail = ", ".join(f"{k} {_gb(v)}" for k, v in parts.items())
        raise ConfigError(f"p={cfg.p}, d_model={cfg.d_model}, d_mlp={cfg.d_mlp}: training needs about "
                          f"{_gb(need)} of memory ({detail}); this machine has {_gb(have)}")
