"""The probe cache heals: its index is checked against the data files it describes.

``probes/index.json`` lists, per probe, the steps whose results are cached (and, since issue 16,
whether the probe has ``scalars`` and ``arrays`` outputs). A (probe, step) the index lists is
dropped from it, so that it is recomputed, when its data is not there:

- ``scalars.parquet`` missing or damaged: every listed step of every probe with scalar outputs;
- ``scalars.parquet`` readable but without rows for a listed (probe, step);
- ``<probe>.safetensors`` missing (for a probe with array outputs) or damaged: all its steps;
- the arrays file readable but without a listed step.

:func:`verified_index` returns the healed index and one message per problem; the runner warns
with them and recomputes, and ``grokscope probe`` prints them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load

from interp.atomic import read_parquet
from interp.errors import StoreError
from interp.integrity import verify_safetensors

STEPS_KEY = "steps"


def _scalar_steps(root: Path) -> tuple[dict[str, set[int]] | None, str | None]:
    """{probe: steps with scalar rows}, or (None, problem) when the file is missing or damaged."""
    path = root / "scalars.parquet"
    if not path.exists():
        return None, f"{path} is missing"
    try:
        df = read_parquet(path)
    except StoreError as e:
        return None, str(e)
    out: dict[str, set[int]] = {}
    for probe, step in zip(df["probe"], df["step"], strict=True):
        out.setdefault(str(probe), set()).add(int(step))
    return out, None


def _array_steps(path: Path) -> tuple[set[int] | None, str | None]:
    if not path.exists():
        return None, f"{path} is missing"
    try:
        data = path.read_bytes()
        verify_safetensors(data, path)
        return {int(s) for s in np.asarray(st_load(data)[STEPS_KEY]).tolist()}, None
    except (StoreError, SafetensorError, ValueError, KeyError) as e:
        return None, f"damaged {path}: {e}" if not isinstance(e, StoreError) else str(e)


def verified_index(root: Path, index: dict[str, dict]) -> tuple[dict[str, dict], list[str], set[str]]:
    """(index without the entries whose data is missing or damaged, messages, names of damaged
    files that must not be merged with: "scalars" and/or probe names)."""
    if not any(e.get("steps") for e in index.values()):
        return index, [], set()
    healed = {p: {**e, "steps": dict(e.get("steps", {}))} for p, e in index.items()}
    messages, damaged = [], set()
    scalars, problem = _scalar_steps(root)
    for probe, entry in healed.items():
        listed = set(entry["steps"])
        if not listed:
            continue
        drop: set[str] = set()
        if entry.get("scalars", True):
            if scalars is None:
                drop |= listed
            elif entry.get("scalars") is True or probe in scalars:
                drop |= {s for s in listed if int(s) not in scalars.get(probe, set())}
        has_file = (root / f"{probe}.safetensors").exists()
        if entry.get("arrays") is True or (entry.get("arrays") is None and has_file):
            steps, why = _array_steps(root / f"{probe}.safetensors")
            if steps is None:
                drop |= listed
                damaged.add(probe)
                messages.append(f"probe cache: {why}; {len(listed)} {probe} results will be recomputed")
            else:
                drop |= {s for s in listed if int(s) not in steps}
        for s in drop:
            entry["steps"].pop(s, None)
    if scalars is None:
        damaged.add("scalars")
        n = sum(len(index[p].get("steps", {})) - len(healed[p]["steps"]) for p in index)
        messages.insert(0, f"probe cache: {problem}; {n} (probe, step) results will be recomputed")
    return healed, messages, damaged
