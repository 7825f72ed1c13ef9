"""Atomic, checksummed file I/O for run directories (used by :mod:`interp.store` and the probe cache).

Every write goes to a temporary file in the same directory, is fsynced and then ``os.replace``d
over the target, and the directory is fsynced: a reader sees the old file or the new one, never a
mix, and a crash leaves at most a ``.NAME.XXXX.tmp`` file that the next writer removes. JSON and
Parquet files carry their own checksum (:mod:`interp.integrity`), verified on read.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from interp.errors import StoreError
from interp.integrity import parquet_bytes, read_parquet_verified, seal_json, unseal_json


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: mode of files we write: what ``open`` would give (mkstemp's own 0600 would hide runs from
#: the other users of a shared machine)
FILE_MODE = 0o666 & ~_umask()


def _temp_beside(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    if hasattr(os, "fchmod"):  # POSIX
        os.fchmod(fd, FILE_MODE)
    return fd, tmp


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: fault injection for tests (issue 16): the process dies (os._exit) in the middle of its Nth
#: atomic write, after the temporary file is written and before it replaces the target
CRASH_ENV = "GROKSCOPE_CRASH_AT_WRITE"
_writes = 0


def _maybe_crash() -> None:
    global _writes
    if os.environ.get(CRASH_ENV):
        _writes += 1
        if _writes == int(os.environ[CRASH_ENV]):
            os._exit(137)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a mix."""
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _maybe_crash()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON with its checksum (:func:`interp.integrity.seal_json`)."""
    atomic_write_bytes(path, (json.dumps(seal_json(obj), indent=1, sort_keys=True) + "\n").encode())


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    """Write ``df`` as parquet with its checksum in the schema metadata."""
    atomic_write_bytes(path, parquet_bytes(df))


def read_json(path: Path) -> Any:
    """The JSON in ``path``, its checksum verified and removed; StoreError naming the file."""
    try:
        obj = json.loads(path.read_bytes().decode())
    except FileNotFoundError:
        raise StoreError(f"missing {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"corrupt {path}: {e}") from None
    return unseal_json(obj, path)


def read_parquet(path: Path) -> pd.DataFrame:
    """The frame in ``path``, its checksum verified; StoreError naming the file."""
    return read_parquet_verified(path.read_bytes(), path)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
