"""Grokfast gradient filters (Lee et al. 2024, "Grokfast: Accelerated Grokking by Amplifying
Slow Gradients", arXiv:2405.20233), shared by :mod:`interp.train` and :mod:`interp.batched`.

* EMA: h ← α·h + (1 − α)·g, then g ← g + λ·h (h starts at the first g).
* MA:  keep the last w gradients; once the window is full, g ← g + λ·mean(window).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


class Grokfast:
    """The filter over named gradients, modified in place by :meth:`apply`.

    ``stacked``: the gradients carry a leading model axis (:mod:`interp.batched`); the MA ring
    buffer is then [N, window, *shape] instead of [window, *shape], and :meth:`member_tensors`
    slices one model's state out in the layout of an unstacked filter.
    """

    def __init__(self, kind: str, alpha: float, lamb: float, window: int, *, stacked: bool = False):
        self.kind, self.alpha, self.lamb, self.window = kind, alpha, lamb, window
        self.axis = 1 if stacked else 0  # the window axis of the MA buffers
        self.ema: dict[str, Tensor] = {}
        self.hist: dict[str, Tensor] = {}  # ring buffers
        self.count = 0

    @property
    def buffers(self) -> dict[str, Tensor]:
        return self.ema if self.kind == "ema" else self.hist

    @torch.no_grad()
    def apply(self, grads: Mapping[str, Tensor]) -> None:
        if self.kind == "ema":
            for name, g in grads.items():
                h = self.ema.get(name)
                if h is None:
                    self.ema[name] = h = g.detach().clone()
                else:
                    h.mul_(self.alpha).add_(g, alpha=1 - self.alpha)
                g.add_(h, alpha=self.lamb)
        elif self.kind == "ma":
            slot = self.count % self.window
            for name, g in grads.items():
                buf = self.hist.get(name)
                if buf is None:
                    shape = (*g.shape[:self.axis], self.window, *g.shape[self.axis:])
                    self.hist[name] = buf = g.new_zeros(shape)
                buf.select(self.axis, slot).copy_(g)
                if self.count + 1 >= self.window:
                    g.add_(buf.mean(self.axis), alpha=self.lamb)
            self.count += 1

    def state_tensors(self) -> dict[str, Tensor]:
        """The buffers, keyed ``grokfast.<parameter name>`` as in the resume state."""
        return {f"grokfast.{k}": v for k, v in self.buffers.items()}

    def member_tensors(self, index: int) -> dict[str, Tensor]:
        """One model's buffers of a stacked filter, keyed as :meth:`state_tensors`."""
        return {f"grokfast.{k}": v[index] for k, v in self.buffers.items()}

    def load(self, tensors: Mapping[str, Tensor], count: int) -> None:
        """Restore from resume-state tensors (other keys are ignored) and the step count."""
        dst = self.buffers
        for k, v in tensors.items():
            if k.startswith("grokfast."):
                dst[k.removeprefix("grokfast.")] = v.clone()
        self.count = count

    def select(self, keep: Tensor) -> None:
        """Keep only the models ``keep`` of a stacked filter."""
        for d in (self.ema, self.hist):
            for k, v in d.items():
                d[k] = v.index_select(0, keep)
