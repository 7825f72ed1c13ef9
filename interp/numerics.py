"""Keeping subnormal (denormal) floats out of training.

Once a model is confident, the softmax probability of a wrong class falls below float32's
smallest normal number, ``torch.finfo(torch.float32).tiny`` = 2**-126 ≈ 1.18e-38: a logit
margin of about 87 is enough. The loss gradient with respect to the logits, (softmax − onehot)/B,
then holds subnormal entries (up to ~13% of them in a grokked ``demo`` checkpoint), and every
matmul of the backward pass reads them. Many x86 cores handle subnormal operands in microcode,
many times slower than normal ones, so late training steps slow down by whole factors.

grokscope does not produce them, rather than flushing them in hardware:

- :func:`normal_grad` is the identity forward; backward, it sets gradient entries whose magnitude
  is below ``tiny`` of the working dtype (float32 for float32 weights, whatever the loss dtype) to
  zero. It sits where the loss gradient is formed, so nothing downstream sees a subnormal.
  The entries it zeroes are at least 2**-126 / max|activation| below every other entry of the
  gradient sums they enter, so they do not change any float32 result that is not itself
  subnormal.
- :func:`flush_subnormal_` does the same in place to state that decays geometrically (Adam's
  moment estimates, Grokfast's EMA of the gradient) for parameters whose gradient stays zero.

Why not ``torch.set_flush_denormal(True)``: flush-to-zero is a per-thread CPU mode; a library
call cannot set it on intra-op worker threads that already exist, it changes every later
computation of the caller's process, and it is not available on every CPU. Zeroing where the
values are formed gives the same numbers on every machine and thread count, and a resumed run
needs no stored process setting.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def tiny(dtype: torch.dtype) -> float:
    """The smallest positive normal number of ``dtype`` (2**-126 for float32)."""
    return torch.finfo(dtype).tiny


class _NormalGrad(torch.autograd.Function):
    """Identity forward; backward zeroes gradient entries with |g| < ``floor`` (same dtype out)."""

    generate_vmap_rule = True  # the batched trainer takes per-model gradients with vmap(grad(...))

    @staticmethod
    def forward(x: Tensor, floor: float) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.floor = inputs[1]

    @staticmethod
    def backward(ctx, g: Tensor):
        return g.masked_fill(g.abs() < ctx.floor, 0.0), None


def normal_grad(x: Tensor, floor_dtype: torch.dtype = torch.float32) -> Tensor:
    """``x`` unchanged; its gradient has no entry with magnitude below ``tiny(floor_dtype)``.

    Put it on the loss's input in the loss dtype, with ``floor_dtype`` the weights' dtype: the
    float64 gradient is cleaned before it is cast down, so the cast cannot make subnormals."""
    return _NormalGrad.apply(x, tiny(floor_dtype))


@torch.no_grad()
def flush_subnormal_(tensors: Iterable[Tensor]) -> None:
    """Set entries with 0 < |t| < tiny(t.dtype) to zero, in place, for floating tensors."""
    for t in tensors:
        if t.is_floating_point():
            t.masked_fill_(t.abs() < tiny(t.dtype), 0.0)


@torch.no_grad()
def subnormal_share(tensors: Iterable[Tensor]) -> float:
    """Fraction of the entries of ``tensors`` that are subnormal (0 < |t| < tiny), over all of them."""
    sub, total = 0, 0
    for t in tensors:
        if t.is_floating_point() and t.numel():
            a = t.abs()
            sub += int(((a > 0) & (a < tiny(t.dtype))).sum())
            total += t.numel()
    return sub / total if total else 0.0
