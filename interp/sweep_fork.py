"""Fork sweeps (issue 15): one parent forked at a grid of steps × config values or interventions,
run and summarised by the sweep machinery (:mod:`interp.sweep`, :mod:`interp.sweep_backends`).

    grokscope sweep --fork checkpoints/nanda --at 1000,2000,4000 --grid weight_decay=0,1

    from interp.sweep_fork import run_fork
    df = run_fork("checkpoints/nanda", [1000, 2000, 4000], ["weight_decay=0,1"])

Each member is :func:`interp.fork.fork` of the parent with the arguments
:func:`interp.fork.point_args` makes of its grid point (the same as ``grokscope fork --at ...
--grid ...``); the fork step is the grid's first axis (:data:`interp.fork.FORK_STEP`), so the
summary table and the plots read it like any swept parameter. ``sweep.json`` records ``fork``
(parent, parent_name, set, interventions); each member's run.json records its lineage.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from interp.errors import ConfigError
from interp.fork import FORK_STEP, check_grid, split_interventions
from interp.store import Run
from interp.sweep import parse_grid, run

__all__ = ["default_fork_out", "run_fork"]


def run_fork(parent: Run | str | os.PathLike, steps: Sequence[int], grid: Mapping[str, Any] | Iterable[str] = (), *,
             set: Sequence[str] = (), interventions: Sequence[str] = (), out: str | os.PathLike | None = None,
             **kwargs: Any) -> pd.DataFrame:
    """A fork sweep: fork ``parent`` (:func:`interp.fork.fork`) at every step of ``steps`` and
    every point of ``grid`` (config fields and ``intervene``, see :func:`interp.sweep.parse_grid`), with
    ``set`` and ``interventions`` applied to every member, and summarise it like any sweep
    (the fork step is the grid's first axis, ``fork_step``). ``out``: default
    ``<parent>_forks_<axes>`` beside the parent. Other arguments as :func:`interp.sweep.run`."""
    parent = parent if isinstance(parent, Run) else Run.open(parent)
    g = parse_grid(grid, fork=True) if grid else {}
    if FORK_STEP in g:
        raise ConfigError(f"--grid {FORK_STEP}: give the fork steps as the steps (--at)")
    g = {**parse_grid({FORK_STEP: [str(s) for s in steps]}, fork=True), **g}
    check_grid(parent, g[FORK_STEP], [*g, *(s.partition("=")[0].strip() for s in set)])
    for spec in interventions:
        split_interventions(spec)  # an unknown name fails before any directory is made
    spec = {"parent": str(parent.path.resolve()), "parent_name": parent.name, "set": list(set),
            "interventions": list(interventions)}
    out = Path(out) if out is not None else default_fork_out(parent.path, g)
    return run(parent.train_config.with_overrides(set), g, out=out, fork=spec, **kwargs)


def default_fork_out(parent: str | os.PathLike, axes: Iterable[str]) -> Path:
    """``<parent>_forks_<axes>`` beside the parent: a fork sweep's default directory."""
    return Path(parent).parent / f"{Path(parent).name}_forks_{'_'.join(axes)}"
