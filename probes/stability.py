"""Numerical-stability probes of Prieto et al. 2025, "Grokking at the Edge of Numerical
Stability" (arXiv:2501.04697), on the training split (issue 15).

For logits z_i [o] and labels y_i of the N training examples, at a floating-point precision d:

* softmax collapse (SC, §3): the fraction of examples whose correct-class probability rounds to
  exactly 1 in d, softmax(z_i)_{y_i} == 1, so that example's gradient is exactly zero;
* zero loss terms: the fraction whose loss term −log softmax(z_i)_{y_i} is exactly 0 in d;
* naive loss minimisation (NLM, §4): scaling the logits, z → (1 + ε) z, lowers the loss of a
  model that classifies its training set without changing its predictions. ``nlm_cosine`` is the
  cosine between the descent direction −∇_z L and z itself, over all N·o logits (1: the gradient
  only scales the logits); ``nlm_cosine_unembed`` is the same in weight space for the unembedding
  W_U (logits = r W_U, so W_U is the direction that scales them): cos(−∇_{W_U} L, W_U).

On sequence tasks (issue 13) the rows are every loss-carrying position of the first
:data:`SEQ_TRAIN_INPUTS` inputs of the run's fixed train set (all of them for smaller sets): one
row per (input, position) with its target, the same statistics over those rows, in one forward.

Precisions: ``float32`` (the weights') and ``float64`` (the default loss precision,
``TrainConfig.loss_dtype``), both reported.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probes.registry import ProbeContext, probe

PRECISIONS = ("float32", "float64")
SEQ_TRAIN_INPUTS = 512  # sequence tasks: train inputs measured (every loss-carrying position of each)


def collapse_fractions(logits: Tensor, labels: Tensor, dtype: torch.dtype) -> dict[str, float]:
    """Fractions of rows in softmax collapse and with an exactly zero loss term at ``dtype``."""
    z = logits.to(dtype)
    logp = z.log_softmax(-1).gather(-1, labels[:, None])[:, 0]
    prob = z.softmax(-1).gather(-1, labels[:, None])[:, 0]
    return {"collapse": (prob == 1).double().mean().item(), "zero_loss": (logp == 0).double().mean().item()}


def nlm_cosine(logits: Tensor, labels: Tensor) -> float:
    """cos(−∇_z L, z) for the mean cross-entropy L of [N, o] logits (float64)."""
    z = logits.double()
    onehot = torch.nn.functional.one_hot(labels, z.shape[-1]).double()
    descent = (onehot - z.softmax(-1)) / len(z)  # −∇_z L
    return torch.nn.functional.cosine_similarity(descent.flatten(), z.flatten(), dim=0).item()


def nlm_cosine_unembed(resid: Tensor, W_U: Tensor, labels: Tensor) -> float:
    """cos(−∇_{W_U} L, W_U) for logits = resid W_U (float64)."""
    r, W = resid.double(), W_U.double()
    z = r @ W
    onehot = torch.nn.functional.one_hot(labels, z.shape[-1]).double()
    descent = r.T @ (onehot - z.softmax(-1)) / len(z)
    return torch.nn.functional.cosine_similarity(descent.flatten(), W.flatten(), dim=0).item()


def stability_stats(z: Tensor, y: Tensor, resid: Tensor | None, W_U: Tensor | None) -> dict[str, float]:
    """The probe's outputs from logit rows z [M, o], labels y [M] and (when the logits are exactly
    resid W_U) the residual rows [M, d] and W_U."""
    out: dict[str, float] = {}
    for name in PRECISIONS:
        for k, v in collapse_fractions(z, y, getattr(torch, name)).items():
            out[f"{k}.{name}"] = v
    out["nlm_cosine"] = nlm_cosine(z, y)
    if resid is not None and W_U is not None:
        out["nlm_cosine_unembed"] = nlm_cosine_unembed(resid, W_U, y)
    return out


def _linear_unembed(model) -> Tensor | None:
    """W_U when the logits are exactly resid_post W_U (no final LayerNorm, no unembedding bias)."""
    W_U = getattr(getattr(model, "unembed", None), "W_U", None)
    linear = not getattr(model.cfg, "layernorm", False) and getattr(model.unembed, "b_U", None) is None
    return W_U.detach() if W_U is not None and linear else None


def _sequence_rows(ctx: ProbeContext) -> tuple[Tensor, Tensor, Tensor]:
    """Logits [M, o], targets [M] and last-layer resid_post [M, d] at every loss-carrying position of
    the first :data:`SEQ_TRAIN_INPUTS` train inputs, from one hooked forward."""
    task = ctx.task
    idx = task.train_idx[:SEQ_TRAIN_INPUTS]
    x, y = task.inputs[idx], task.targets[idx]
    keep = task.loss_mask[idx]
    resid_key = f"blocks.{ctx.model.cfg.n_layers - 1}.hook_resid_post"
    logits, cache = ctx.model.run_with_cache(x, names_filter=resid_key)
    return logits[keep], y[keep], cache[resid_key][keep]


@probe("stability.collapse", version=1, tasks=("grid", "sequence"))
def stability_probe(ctx: ProbeContext) -> dict:
    """Softmax collapse and zero-loss fractions (float32, float64) and NLM cosines on the train
    split (Prieto et al. 2025, arXiv:2501.04697); on sequence tasks at every loss-carrying position
    of the train inputs (module docstring)."""
    W_U = _linear_unembed(ctx.model)
    if getattr(ctx.task, "kind", "grid") != "grid":
        z, y, resid = _sequence_rows(ctx)
        return stability_stats(z, y, resid, W_U)
    idx = ctx.task.train_idx
    z, y = ctx.logits[idx], ctx.labels[idx]
    resid_key = f"blocks.{ctx.model.cfg.n_layers - 1}.hook_resid_post"
    resid = ctx.cache[resid_key][:, -1][idx] if resid_key in ctx.cache.keys() else None
    return stability_stats(z, y, resid, W_U)
