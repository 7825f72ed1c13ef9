"""Two generations of the files training rewrites, so that one damaged file does not end a run.

``state/``: ``state.json`` names the newest state file, ``state.prev.json`` the one of the
previous checkpoint (a copy of the former ``state.json``, made just before it is switched).
Loading takes the newest generation that verifies (and that the metrics can continue, see
:func:`load_state`); falling back to the previous one costs a replay of the steps between the
two checkpoints, which is deterministic, so it re-saves identical checkpoints.

``metrics.parquet``: before each rewrite the current file becomes ``metrics.prev.parquet`` (a hard
link: no copy). A damaged current file is read from the previous generation with a warning.

Temporary files a crash left behind (``.NAME.XXXX.tmp``) are removed by the next writer
(:func:`clean_temp_files`, called under the run's lock).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from interp.errors import CorruptCheckpointError, StoreError

STATE, PREV_STATE = "state.json", "state.prev.json"
METRICS, PREV_METRICS = "metrics.parquet", "metrics.prev.parquet"


def keep_previous(path: Path, prev: Path) -> None:
    """Make ``prev`` the current content of ``path`` (hard link, else copy), atomically."""
    if not path.exists():
        return
    tmp = prev.with_name(f".{prev.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        tmp.write_bytes(path.read_bytes())
    os.replace(tmp, prev)


def clean_temp_files(*dirs: Path) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes in ``dirs``; returns them."""
    removed = []
    for d in dirs:
        for tmp in d.glob(".*.tmp") if d.is_dir() else ():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def read_with_fallback(path: Path, prev: Path, read: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
    """``read(path)``; if it is damaged and ``prev`` verifies, ``read(prev)`` with a warning."""
    try:
        return read(path)
    except StoreError as e:
        if not prev.exists():
            raise
        try:
            df = read(prev)
        except StoreError:
            raise e from None
        warnings.warn(f"{e}; using the previous generation {prev.name} ({len(df)} rows)", stacklevel=3)
        return df


def load_state(state_dir: Path, load_one: Callable[[Path], tuple[dict, dict[str, Any]]],
               metrics_end: int | None) -> tuple[dict, dict[str, Any]]:
    """The newest state generation that verifies and whose step the metrics reach (rows up to
    ``step - 1`` exist, ``metrics_end`` being the last logged step, None for no metrics);
    warns when it is not the newest."""
    errors = []
    for name in (STATE, PREV_STATE):
        if not (state_dir / name).exists():
            continue
        try:
            tensors, info = load_one(state_dir / name)
        except (StoreError, CorruptCheckpointError) as e:
            errors.append(str(e))
            continue
        step = int(info["step"])
        if step > 0 and (metrics_end if metrics_end is not None else -1) < step - 1:
            errors.append(f"{state_dir / name}: the metrics end at step {metrics_end}, before this state's step {step}")
            continue
        if errors:
            warnings.warn(f"{errors[0]}; falling back to the previous training state at step {step} "
                          "(the steps after it are replayed)", stacklevel=3)
        return tensors, info
    if not errors:
        raise StoreError(f"missing {state_dir / STATE}")
    raise StoreError(f"no usable training state in {state_dir}: {'; '.join(errors)}")
