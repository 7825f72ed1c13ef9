"""Training callbacks: the :class:`TrainHook` protocol, the no-op :class:`Hook` base, and the
built-in hooks every trainer runs (metrics log, checkpoints, progress bar, early stop).

Modelled on PyTorch Lightning's ``Callback``: every event method receives the trainer first,
and a hook's ``state_dict()`` is saved with the resumable training state and handed back to
``load_state_dict()`` on resume, so a resumed run continues each hook where it was.

Resume semantics. The state saved at checkpoint ``t`` holds each hook's ``state_dict()`` as it
was *before* step ``t``'s events; a resumed trainer re-runs step ``t`` (see :mod:`interp.train`),
so every hook sees ``on_step_end(t)`` and ``on_checkpoint(t)`` again from exactly that state,
and ends up where it would have been without the interruption.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import pandas as pd
from tqdm.auto import tqdm

from interp.metrics import GROK_THRESHOLD, METRIC_COLUMNS
from interp.store import Run


@runtime_checkable
class TrainHook(Protocol):
    """A training callback. ``trainer`` is a :class:`interp.train.Trainer` (or, under
    :class:`interp.batched.BatchedTrainer`, a per-model stand-in with the same ``cfg``,
    ``run``, ``task``, ``model``, ``should_stop`` and ``save_state``). A hook may set
    ``trainer.should_stop = True`` to end training after the current step; a final checkpoint
    is then saved. ``state_dict`` returns a fresh JSON-serialisable dict (``{}``: nothing to
    save); the trainer calls ``load_state_dict`` with it before ``on_train_start`` on resume."""

    def on_train_start(self, trainer: Any) -> None: ...
    def on_step_end(self, trainer: Any, step: int, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, trainer: Any, step: int, model: Any) -> None: ...
    def on_train_end(self, trainer: Any) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Hook:
    """Base class implementing :class:`TrainHook` with no-op methods and no state.

    ``state_key`` names the hook's entry in the saved state (default: the class name;
    several hooks of one class get ``#2``, ``#3``, ... appended in list order)."""

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def on_train_start(self, trainer: Any) -> None:
        pass

    def on_step_end(self, trainer: Any, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_checkpoint(self, trainer: Any, step: int, model: Any) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class HookList:
    """Ordered hooks: event dispatch, and their states keyed by ``state_key``. Methods a
    duck-typed hook lacks are skipped."""

    def __init__(self, hooks: Iterable[Any] = ()):
        self.hooks = list(hooks)

    def call(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            fn = getattr(hook, method, None)
            if fn is not None:
                fn(*args)

    def _keyed(self) -> list[tuple[str, Any]]:
        seen: dict[str, int] = {}
        out = []
        for hook in self.hooks:
            key = getattr(hook, "state_key", type(hook).__name__)
            seen[key] = seen.get(key, 0) + 1
            out.append((key if seen[key] == 1 else f"{key}#{seen[key]}", hook))
        return out

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Every hook's non-empty state, by key."""
        states = {}
        for key, hook in self._keyed():
            state = hook.state_dict() if hasattr(hook, "state_dict") else {}
            if state:
                states[key] = state
        return states

    def load_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        """Hand each hook its saved state (hooks without one keep their initial state)."""
        for key, hook in self._keyed():
            if key in states and hasattr(hook, "load_state_dict"):
                hook.load_state_dict(states[key])


class MetricsLogger(Hook):
    """Collects one row per step and writes ``metrics.parquet`` at every checkpoint. Rows
    come from the run's metrics (those before ``start_step``), so it keeps no state."""

    def __init__(self, run: Run, start_step: int):
        old = run.metrics
        old = old[old["step"] < start_step] if len(old) else old
        # columnar: building the frame from lists stays cheap at 40k rows x 300 flushes
        self.columns: dict[str, list] = {c: old[c].tolist() if len(old) else [] for c in METRIC_COLUMNS}
        self.run = run

    def on_step_end(self, trainer, step, metrics):
        self.columns["step"].append(step)
        for c in METRIC_COLUMNS[1:]:
            self.columns[c].append(metrics.get(c, math.nan))

    def flush(self) -> None:
        self.run.write_metrics(pd.DataFrame(self.columns, columns=METRIC_COLUMNS))

    def on_checkpoint(self, trainer, step, model):
        self.flush()

    def on_train_end(self, trainer):
        self.flush()


class Checkpointer(Hook):
    """Saves the weights (step and losses in the metadata), then the resumable state."""

    def __init__(self, run: Run):
        self.run = run
        self.last: dict[str, float] = {}

    def on_step_end(self, trainer, step, metrics):
        self.last = metrics

    def on_checkpoint(self, trainer, step, model):
        md = {k: self.last[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc") if k in self.last}
        self.run.save_checkpoint(step, model.state_dict(), md)
        trainer.save_state(step)


class ProgressBar(Hook):
    """tqdm bar with step, train/test loss and accuracy, and ETA."""

    def __init__(self, total: int, initial: int, every: int = 50):
        self.total, self.initial, self.every = total, initial, every
        self.bar = None
        self.test: dict[str, float] = {}

    def on_train_start(self, trainer):
        self.bar = tqdm(total=self.total, initial=self.initial, desc=trainer.run.name, unit="step",
                        dynamic_ncols=True, mininterval=0.5)

    def on_step_end(self, trainer, step, metrics):
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
    """Stop once test accuracy has stayed >= ``threshold`` for ``patience`` steps. Its state
    is the step from which accuracy has stayed at or above the threshold (``since``)."""

    def __init__(self, patience: int, threshold: float = GROK_THRESHOLD):
        self.patience, self.threshold = patience, threshold
        self.since: int | None = None

    def on_step_end(self, trainer, step, metrics):
        acc = metrics.get("test_acc", math.nan)
        if math.isnan(acc):
            return
        if acc >= self.threshold:
            self.since = step if self.since is None else self.since
            if step - self.since >= self.patience:
                trainer.should_stop = True
        else:
            self.since = None

    def state_dict(self) -> dict[str, Any]:
        return {"since": self.since}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.since = state.get("since")


def builtin_hooks(cfg: Any, run: Run, start_step: int, progress: bool) -> list[Hook]:
    """The hooks every trainer runs, in order, before the user's: metrics, checkpoints, then
    the progress bar (if ``progress``) and early stop (if ``cfg.stop_after_grok`` is set)."""
    hooks: list[Hook] = [MetricsLogger(run, start_step), Checkpointer(run)]
    if progress:
        hooks.append(ProgressBar(cfg.n_steps, start_step))
    if cfg.stop_after_grok is not None:
        hooks.append(EarlyStop(cfg.stop_after_grok, cfg.grok_threshold))
    return hooks
