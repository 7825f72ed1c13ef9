"""The training loss, in one place for every trainer.

``log_probs(logits, cfg)`` is what both trainers differentiate: log softmax of the readout
logits in ``cfg.loss_dtype`` (float64 by default, as in Nanda et al. 2023), whose gradient
carries no subnormal float (:func:`interp.numerics.normal_grad`). The loss is the mean negative
log-probability of the label, ``cross_entropy = −(1/B) Σ_i log p(y_i | x_i)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from interp.config import TrainConfig
from interp.numerics import normal_grad


def log_probs(logits: Tensor, cfg: TrainConfig) -> Tensor:
    """[..., o] logits (the weights' dtype) -> [..., o] log-probabilities in ``cfg.loss_dtype``:
    log softmax, or log StableMax when ``cfg.loss == "stablemax"``."""
    z = normal_grad(logits.to(getattr(torch, cfg.loss_dtype)), logits.dtype)
    if cfg.loss == "stablemax":
        return log_stablemax(z)
    return z.log_softmax(-1)


def log_stablemax(z: Tensor) -> Tensor:
    """log StableMax (Prieto et al. 2025, arXiv:2501.04697, eq. 6): s(x) = x + 1 for x ≥ 0 and
    1 / (1 − x) for x < 0, normalised: log s(z_i) − log Σ_j s(z_j). Issue 15."""
    s = torch.where(z >= 0, z + 1, 1 / (1 - torch.where(z >= 0, torch.zeros_like(z), z)))
    return s.log() - s.sum(-1, keepdim=True).log()


def cross_entropy(logits: Tensor, labels: Tensor, cfg: TrainConfig) -> Tensor:
    """Mean cross-entropy of [B, o] logits against [B] labels (equal to ``F.cross_entropy``)."""
    return F.nll_loss(log_probs(logits, cfg), labels)


#: target of a position that carries no loss (``interp.seqtasks.IGNORE``)
IGNORE_INDEX = -100


def masked_cross_entropy(logits: Tensor, targets: Tensor, cfg: TrainConfig) -> Tensor:
    """Per-position loss of every-position tasks (issue 13): the mean over the positions that carry
    loss (targets ≠ :data:`IGNORE_INDEX`) of −log p(y_{i,s} | x_{i,≤s}), from [B, S, o] logits and
    [B, S] targets, through :func:`log_probs` like :func:`cross_entropy`."""
    return F.nll_loss(log_probs(logits, cfg).flatten(0, -2), targets.flatten(), ignore_index=IGNORE_INDEX)


def accuracy(logits: Tensor, targets: Tensor) -> float:
    """Share of the positions carrying loss where argmax logits = target ([B, o] and [B], or
    [B, S, o] and [B, S] with :data:`IGNORE_INDEX` positions left out)."""
    keep = targets != IGNORE_INDEX
    hits = (logits.argmax(-1) == targets) & keep
    return (hits.sum() / keep.sum().clamp(min=1)).item()
