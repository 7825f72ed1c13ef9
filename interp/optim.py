"""Optimizer choice and gradient transforms of :class:`interp.train.Trainer` (issue 15).

* ``optimizer``: ``"adamw"`` (default: ``torch.optim.AdamW``, the 2023 progress-measures setup),
  ``"adam"`` (``torch.optim.Adam`` without weight decay; its state has AdamW's keys, so a fork can
  switch between them and keep the moments), ``"sgd"`` (``torch.optim.SGD``, momentum ``beta1``,
  weight decay ``weight_decay``).
* ``orthograd``: ⊥Grad of Prieto et al. 2025, "Grokking at the Edge of Numerical Stability"
  (arXiv:2501.04697), eq. 12: each parameter tensor's gradient loses its component along the
  weights, g⊥ = g − (w·g / w·w) w, and is rescaled to the norm of g (as the authors' code does),
  before the optimizer step.
* ``frozen``: comma-separated parameter-name prefixes (``embed``, ``blocks.0.attn``, ``unembed``,
  ...) whose gradients are dropped before the update; the optimizer skips parameters without a
  gradient, so frozen weights get neither the step nor weight decay, and their optimizer state
  is kept as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from interp.config import TrainConfig

OPTIMIZERS = ("adamw", "adam", "sgd")
_EPS = 1e-30


def build_optimizer(cfg: TrainConfig, params: Sequence[Tensor]) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` over ``params`` (AdamW with the fused CPU kernel by default)."""
    kind = cfg.optimizer
    if kind == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=0.0, fused=True)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.beta1, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
                             fused=True)


def is_plain(cfg: TrainConfig) -> bool:
    """True when ``cfg`` uses none of this module's options (what the batched trainer implements)."""
    return cfg.optimizer == "adamw" and not cfg.orthograd and not cfg.frozen


def frozen_names(cfg: TrainConfig, names: Sequence[str]) -> set[str]:
    """The parameter names ``cfg.frozen`` selects."""
    prefixes = [p.strip() for p in cfg.frozen.split(",") if p.strip()]
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)}


@torch.no_grad()
def orthogonalize_(params: Sequence[Tensor]) -> None:
    """⊥Grad in place: g ← (g − (w·g / w·w) w) · ‖g‖ / ‖g − (w·g / w·w) w‖ for each tensor."""
    for p in params:
        g = p.grad
        if g is None:
            continue
        w = p.detach()
        proj = (w * g).sum() / ((w * w).sum() + _EPS)
        g_orth = g - proj * w
        g.copy_(g_orth * (g.norm() / (g_orth.norm() + _EPS)))


def apply_gradient_options(cfg: TrainConfig, named_params: Sequence[tuple[str, Tensor]]) -> None:
    """Before the optimizer step: drop the gradients of ``cfg.frozen`` parameters, then ⊥Grad
    (``cfg.orthograd``) on the others. Does nothing under the default config."""
    frozen = frozen_names(cfg, [n for n, _ in named_params])
    for n, p in named_params:
        if n in frozen:
            p.grad = None
    if cfg.orthograd:
        orthogonalize_([p for _, p in named_params])
