"""Fork a run at any step and continue it under a changed config or with interventions (issue 15).

``fork(run, step, set=[...], interventions=[...])`` makes a new run directory whose history up
to ``step`` is the parent's and which continues from there:

1. The exact training state at ``step`` (weights, optimizer moments, Grokfast buffers, hook
   states) is reached from the parent's nearest full state at or before ``step`` — the states
   kept at :func:`interp.config.snapshot_steps` (``Run.snapshot_steps``), or its resume state —
   by replaying the parent's config deterministically up to ``step`` in the fork's directory.
   Parents without such a state (runs written before snapshots existed) start from the weights
   of the checkpoint at ``step`` with a fresh optimizer and Grokfast filter; run.json's
   ``fork.note`` says so.
2. ``set`` (``key=value``) and then ``interventions`` (:mod:`interp.interventions`) change the
   config and the state at ``step``.
3. Training continues from ``step`` (step numbers stay the parent's) to the fork's ``n_steps``.

A fork with no change continues bit-identically to the parent (tested). run.json's ``fork``
records ``parent`` (path), ``parent_name``, ``step``, ``base_step`` (the state replayed from),
``exact``, ``set``, ``interventions``, ``changes`` and ``notes``. Task and architecture fields
(other than ``dtype``) cannot change in a fork.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from interp.config import ARCH_FIELDS, TrainConfig, checkpoint_steps, format_value
from interp.errors import ConfigError, StoreError
from interp.hooks import Hook
from interp.interventions import INTERVENTIONS, ForkContext, apply, parse
from interp.locking import write_lock
from interp.loop import TrainState
from interp.optim import build_optimizer
from interp.store import Run
from interp.train import Trainer, create_run

#: fields a fork cannot change: they define the task and the shapes of the weights
FIXED_FIELDS = frozenset({"op", "p", "frac_train", "data_seed", *ARCH_FIELDS}) - {"dtype"}


class _StopAt(Hook):
    """Ends the replay at ``step`` (a final checkpoint and resume state are then saved)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step, metrics):
        if step >= self.step:
            trainer.should_stop = True


def _base_state(parent: Run, step: int) -> tuple[TrainState | None, int, str | None]:
    """The parent's nearest exact state at or before ``step``: (state, its step, note). None
    with base 0 when the fork starts from initialisation (a function of the seeds)."""
    snaps = [s for s in parent.snapshot_steps if s <= step]
    resume = parent.state_step
    best = max(snaps, default=-1)
    if resume is not None and best < resume <= step:
        return TrainState.load(parent), resume, None
    if best >= 0:
        return TrainState.load(parent, snapshot=best), best, None
    if step == 0:
        return None, 0, None
    if step not in parent.steps:
        raise StoreError(f"{parent.path} has no saved training state before step {step} and no checkpoint "
                         f"at {step} (checkpoints: {parent.steps[:3]}...{parent.steps[-3:]})")
    cfg = parent.train_config
    state = TrainState(step=step, wall_time=0.0, model=parent.state_dict_at(step), opt={},
                       param_groups=build_optimizer(cfg, list(cfg.build_model().parameters()))
                       .state_dict()["param_groups"])
    return state, step, (f"{parent.name} kept no training state at or before step {step}: "
                         "the optimizer and Grokfast state start afresh")


def _save(state: TrainState, run: Run, cfg: TrainConfig) -> None:
    """Save ``state`` as ``run``'s resume state with the RNG state it was saved with."""
    with torch.random.fork_rng():
        if state.rng is not None:
            torch.set_rng_state(state.rng)
        state.save(run, cfg)


def _last_step(parent: Run) -> int:
    m = parent.metrics
    return max([*parent.steps, *(m["step"].tolist() if len(m) else [])], default=0)


def _fork_path(parent: Run, step: int, name: str | None, out: str | os.PathLike | None) -> Path:
    if out is not None:
        return Path(out)
    base = parent.path.parent / (name or f"{parent.path.name}_fork{step}")
    path, i = base, 1
    while (path / "run.json").exists() and name is None:
        i += 1
        path = base.with_name(f"{base.name}_{i}")
    return path


def fork(run: Run | str | os.PathLike, step: int, *, set: Sequence[str] = (),
         interventions: Sequence[str] = (), name: str | None = None, out: str | os.PathLike | None = None,
         train: bool = True, progress: bool = False) -> Run:
    """Fork ``run`` at ``step`` (see the module docstring) into ``out`` (default: a sibling of
    the parent named ``<parent>_fork<step>`` or ``name``); train it unless ``train`` is False."""
    parent = run if isinstance(run, Run) else Run.open(run)
    pcfg = parent.train_config
    if not 0 <= step <= _last_step(parent):
        raise ConfigError(f"--at {step}: {parent.path} ran steps 0..{_last_step(parent)}")
    new_cfg = pcfg.with_overrides(set)  # checked before any directory is made
    fixed = sorted(k for k in FIXED_FIELDS if getattr(new_cfg, k) != getattr(pcfg, k))
    if fixed:
        raise ConfigError(f"--set {fixed[0]}: a fork keeps the parent's task and architecture")
    state, base, note = _base_state(parent, step)
    path = _fork_path(parent, step, name, out)
    path.mkdir(parents=True, exist_ok=True)
    with write_lock(path):  # one writer per run (issue 16)
        _create_fork(parent, pcfg, new_cfg, step, state, base, note, path, name, set, interventions, progress)
        return _train_fork(path, progress) if train else Run.open(path)


def _create_fork(parent: Run, pcfg: TrainConfig, new_cfg: TrainConfig, step: int, state: TrainState | None,
                 base: int, note: str | None, path: Path, name: str | None, set: Sequence[str],
                 interventions: Sequence[str], progress: bool) -> None:
    """The fork's directory with its lineage and its state at ``step`` (interventions applied)."""
    child = create_run(pcfg, path, name=name or path.name)
    old = parent.metrics
    if len(old):
        child.write_metrics(old[old["step"] < base].reset_index(drop=True))
    if state is not None:
        _save(state, child, pcfg)
    if base < step:  # deterministic replay of the parent's config up to ``step``
        Trainer(pcfg, Run.open(path), hooks=[_StopAt(step)], progress=progress).fit()
        state = TrainState.load(Run.open(path))
    elif state is None:  # step 0 of a parent without a kept state: the initialisation
        state = Trainer(pcfg, Run.open(path), progress=False).train_state(0)
    ctx = ForkContext(cfg=new_cfg, state=state, notes=[note] if note else [])
    ctx.changes.update({k: getattr(new_cfg, k) for k in new_cfg.to_dict() if getattr(new_cfg, k) != getattr(pcfg, k)})
    ctx.notes += [f"{k} = {v!r}" for k, v in ctx.changes.items()]
    for spec in interventions:
        apply(ctx, spec)
    _rebuild_optimizer_groups(ctx, pcfg)
    if ctx.cfg.n_steps < step:
        raise ConfigError(f"n_steps: {ctx.cfg.n_steps} is before the fork step {step}")
    child = Run.open(path)
    _save(ctx.state, child, ctx.cfg)
    child.update_meta(config=ctx.cfg.to_dict(), status="created", final_step=None,
                      checkpoint_schedule=sorted({*checkpoint_steps(ctx.cfg), step}),
                      fork=_lineage(parent, step, base, note is None, set, interventions, ctx))


def resume_fork(path: str | os.PathLike, *, progress: bool = False) -> Run:
    """Train a created (or interrupted) fork from its saved state; the fork step is checkpointed
    (so the weights right after an intervention are on disk)."""
    with write_lock(Path(path)):
        return _train_fork(path, progress)


def _train_fork(path: str | os.PathLike, progress: bool) -> Run:
    run = Run.open(path)
    trainer = Trainer(run.train_config, run, progress=progress)
    trainer.ckpt_steps.add(int(run.meta["fork"]["step"]))
    return trainer.fit()


def _rebuild_optimizer_groups(ctx: ForkContext, pcfg: TrainConfig) -> None:
    """A changed config gets the param groups (weight decay, betas, ...) its optimizer is built
    with; optimizer state only survives between Adam and AdamW (same moments)."""
    if ctx.cfg == pcfg.replace(n_steps=ctx.cfg.n_steps):
        return
    family = {"adamw": "adam", "adam": "adam", "sgd": "sgd"}
    if family[ctx.cfg.optimizer] != family[pcfg.optimizer] and ctx.state.opt:
        ctx.state.opt = {}
        ctx.notes.append(f"optimizer {pcfg.optimizer} -> {ctx.cfg.optimizer}: its state starts afresh")
    params = list(ctx.cfg.build_model().parameters())
    ctx.state.param_groups = build_optimizer(ctx.cfg, params).state_dict()["param_groups"]


def _lineage(parent: Run, step: int, base: int, exact: bool, set: Sequence[str],
             interventions: Sequence[str], ctx: ForkContext) -> dict[str, Any]:
    return {"parent": str(parent.path.resolve()), "parent_name": parent.name, "step": step, "base_step": base,
            "exact": exact, "set": list(set), "interventions": list(interventions),
            "changes": {k: v for k, v in ctx.changes.items()}, "notes": ctx.notes,
            "note": None if exact else ctx.notes[0]}


def parent_of(run: Run) -> tuple[str, int] | None:
    """(parent path, fork step) of a fork, or None."""
    f = run.meta.get("fork")
    return (f["parent"], int(f["step"])) if f else None


#: grid axes of a grid of forks besides config fields: the fork step, and interventions
FORK_STEP, INTERVENE = "fork_step", "intervene"
NO_INTERVENTION = "none"


def split_interventions(text: str) -> list[str]:
    """A comma list of intervention points, each ``none`` or specs joined by ``+``
    (``"none,stablemax+orthograd,ablate:14,35"`` -> ``["none", "stablemax+orthograd",
    "ablate:14,35"]``): a comma starts a new point only before a registered name."""
    names = "|".join(sorted({NO_INTERVENTION, *INTERVENTIONS}, key=len, reverse=True))
    points = [t.strip() for t in re.split(rf",(?=\s*(?:{names})(?::|\+|,|$))", text)]
    for point in points:
        for spec in point.split("+"):
            if spec.strip() != NO_INTERVENTION:
                parse(spec)
    return points


def point_args(params: dict[str, Any], set: Sequence[str] = (), interventions: Sequence[str] = (),
               ) -> tuple[int, list[str], list[str]]:
    """(step, set, interventions) of :func:`fork` for one point of a grid of forks: ``params``
    holds :data:`FORK_STEP`, optionally :data:`INTERVENE` (``none`` or specs joined by ``+``) and
    config fields (applied as ``key=value`` after ``set``). Shared by :func:`fork_grid` and
    fork sweeps (:mod:`interp.sweep`)."""
    extra = [f"{k}={format_value(v)}" for k, v in params.items() if k not in (FORK_STEP, INTERVENE)]
    point = str(params.get(INTERVENE, NO_INTERVENTION))
    more = [] if point == NO_INTERVENTION else [t.strip() for t in point.split("+")]
    return int(params[FORK_STEP]), [*set, *extra], [*interventions, *more]


def check_grid(parent: Run, steps: Sequence[int], keys: Sequence[str]) -> None:
    """ConfigError before any fork is made: a step outside the parent's run, or a key a fork
    cannot change."""
    last = _last_step(parent)
    for step in steps:
        if not 0 <= step <= last:
            raise ConfigError(f"--at {step}: {parent.path} ran steps 0..{last}")
    fixed = sorted(set(keys) & FIXED_FIELDS)
    if fixed:
        raise ConfigError(f"--grid {fixed[0]}: a fork keeps the parent's task and architecture")


def fork_grid(run: Run | str | os.PathLike, steps: Sequence[int], grid: dict[str, Sequence[Any]] | None = None, *,
              set: Sequence[str] = (), interventions: Sequence[str] = (),
              train: bool = True, progress: bool = False) -> list[Run]:
    """One fork of ``run`` per step in ``steps`` and per point of ``grid`` (``{key: [values]}``,
    config fields or :data:`INTERVENE`; their product, see :func:`point_args`), trained one after
    another, named ``<parent>_fork<step>[_<key><value>...]`` beside the parent. A grid of forks
    in a sweep directory, with its summary and plots: :func:`interp.sweep_fork.run_fork`."""
    parent = run if isinstance(run, Run) else Run.open(run)
    keys = list(grid or {})
    if FORK_STEP in keys:
        raise ConfigError(f"--grid {FORK_STEP}: give the fork steps as the steps (--at)")
    check_grid(parent, steps, keys)
    out = []
    for step in steps:
        for point in itertools.product(*[list(grid[k]) for k in keys]) if keys else [()]:
            params = {FORK_STEP: step, **dict(zip(keys, point, strict=True))}
            at, extra, more = point_args(params, set, interventions)
            name = f"{parent.path.name}_fork{step}" + "".join(
                f"_{k}{_slug(v)}" for k, v in zip(keys, point, strict=True))
            out.append(fork(parent, at, set=extra, interventions=more, name=name, train=train, progress=progress))
    return out


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "-", format_value(value))
