"""What every trainer shares (:class:`interp.train.Trainer`, :class:`interp.batched.BatchedTrainer`):
the resumable-state format, minibatch seeding, and one run's side of the loop (schedule,
evaluation cadence, hooks, stop flag, completion).

Resume state (``Run.save_state``): tensors ``model.<name>``, ``opt.<param index>.<key>`` (the
``torch.optim.AdamW`` state), ``grokfast.<name>`` and ``rng.torch``; state.json info ``step``,
``wall_time``, ``param_groups``, ``grokfast_count``, ``config`` and ``hooks`` (each hook's
``state_dict()`` by key, see :mod:`interp.hooks`; absent in states written before hooks had state,
which then resume with fresh hooks).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.config import TrainConfig, checkpoint_steps, snapshot_steps
from interp.hooks import HookList, builtin_hooks
from interp.store import Run


@dataclass
class TrainState:
    """One run's resumable training state after ``step`` updates."""

    step: int
    wall_time: float
    model: dict[str, Tensor]
    opt: dict[int, dict[str, Tensor]]  # AdamW state by parameter index
    param_groups: list[dict]
    grokfast: dict[str, Tensor] = field(default_factory=dict)  # keys "grokfast.<name>"
    grokfast_count: int = 0
    hooks: dict[str, dict] = field(default_factory=dict)
    rng: Tensor | None = None  # the global torch RNG state when saved (loaded; a save records the current one)

    def save(self, run: Run, cfg: TrainConfig) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.items()}
        for idx, st in self.opt.items():
            tensors.update({f"opt.{idx}.{k}": v for k, v in st.items()})
        tensors.update(self.grokfast)
        tensors["rng.torch"] = torch.get_rng_state()
        info = {"step": self.step, "wall_time": self.wall_time, "param_groups": self.param_groups,
                "grokfast_count": self.grokfast_count, "config": cfg.to_dict(), "hooks": self.hooks}
        run.save_state(tensors, info)
        if self.step in snapshot_steps(cfg):  # kept for forks (interp.fork)
            run.save_snapshot(tensors, info)

    @classmethod
    def load(cls, run: Run, snapshot: int | None = None) -> TrainState:
        """The resume state, or the full state kept at step ``snapshot``."""
        tensors, info = run.load_state() if snapshot is None else run.load_snapshot(snapshot)
        opt: dict[int, dict[str, Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, idx, name = k.split(".", 2)
                opt.setdefault(int(idx), {})[name] = v
        return cls(step=int(info["step"]), wall_time=float(info["wall_time"]),
                   model={k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, opt=opt,
                   param_groups=info["param_groups"], grokfast_count=int(info.get("grokfast_count", 0)),
                   grokfast={k: v for k, v in tensors.items() if k.startswith("grokfast.")},
                   hooks=info.get("hooks", {}), rng=tensors.get("rng.torch"))


def minibatch(cfg: TrainConfig, n_train: int, step: int) -> Tensor | None:
    """Positions in the training set of step ``step``'s minibatch (drawn with replacement from a
    generator seeded by ``(seed, step)``, so a resumed run draws the same batches), or None for
    a full batch."""
    if cfg.batch_size is None or cfg.batch_size >= n_train:
        return None
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    return torch.randint(n_train, (cfg.batch_size,), generator=gen)


class RunLoop:
    """One run's side of training. Subclasses provide ``model`` (the current weights, as a
    module with ``state_dict()``) and :meth:`train_state`; hooks see the subclass as ``trainer``."""

    cfg: TrainConfig
    run: Run

    def init_loop(self, cfg: TrainConfig, run: Run, state: TrainState | None, hooks: Sequence[Any],
                  progress: bool) -> None:
        self.cfg, self.run, self.should_stop = cfg, run, False
        self.start_step = state.step if state else 0
        self.wall_offset, self._t0 = (state.wall_time if state else 0.0), time.perf_counter()
        self.ckpt_steps = set(checkpoint_steps(cfg))
        self.hooks = HookList([*builtin_hooks(cfg, run, self.start_step, progress), *hooks])
        self.hooks.load_state_dict(state.hooks if state else {})
        self._hook_states: dict[str, dict] | None = None

    def elapsed(self) -> float:
        return self.wall_offset + time.perf_counter() - self._t0

    def start(self, t0: float | None = None) -> None:
        self._t0 = time.perf_counter() if t0 is None else t0
        self.run.update_meta(status="running")
        self.hooks.call("on_train_start", self)

    def needs_eval(self, step: int) -> bool:
        return step in self.ckpt_steps or step % self.cfg.eval_every == 0 or step == self.cfg.n_steps

    def end_step(self, step: int, metrics: dict[str, float]) -> bool:
        """Deliver step ``step``'s metrics, checkpoint if due; True when this run is done. The
        hook states saved with a checkpoint are those from before this step's events."""
        due = step in self.ckpt_steps or step == self.cfg.n_steps
        before = self.hooks.state_dict() if due else None
        self.hooks.call("on_step_end", self, step, metrics)
        done = step == self.cfg.n_steps or self.should_stop
        if due or done:
            self._hook_states = before if before is not None else self.hooks.state_dict()
            self.hooks.call("on_checkpoint", self, step, self.model)
        return done

    def finish(self, step: int) -> None:
        self.run.update_meta(status="complete", final_step=step, stopped_early=bool(self.should_stop))
        self.hooks.call("on_train_end", self)

    def save_state(self, step: int) -> None:
        """Save the resume state at ``step`` (the built-in Checkpointer calls this)."""
        state = self.train_state(step)
        state.hooks = self._hook_states if self._hook_states is not None else self.hooks.state_dict()
        state.save(self.run, self.cfg)

    def train_state(self, step: int) -> TrainState:
        raise NotImplementedError
