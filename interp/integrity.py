"""Checksums carried inside the files a reader trusts, and byte-for-byte reproducible files.

- JSON files (run.json, manifest.json, state/state.json, probes/index.json) carry a top-level
  ``"checksum"``: the SHA-256 of the object without it, as sorted compact JSON. :func:`seal_json`
  adds it, :func:`unseal_json` checks and removes it. A file without one (written before this
  check existed, or by hand on purpose) is read as it is; a single flipped bit in the key name
  itself is recognised and refused.
- Parquet files (metrics.parquet, probes/scalars.parquet) carry ``grokscope.sha256`` in their
  schema metadata: a hash of the column names, dtypes and values (:func:`frame_digest`).
- safetensors files are written with their header in one canonical form (:func:`canonical_safetensors`:
  sorted metadata, compact JSON), because the library writes metadata in a random order; so
  identical tensors and metadata give identical bytes and hashes. Files that have no entry in a
  manifest (probe arrays) also carry ``sha256`` in their metadata (:func:`seal_safetensors`): the
  hash of the canonical header without it plus the tensor bytes.

Every check raises :class:`~interp.errors.StoreError` naming the file; what a caller does with it
(refuse, skip with a warning, fall back) is documented in docs/training.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path
from typing import Any

import pandas as pd

from interp.errors import StoreError

CHECKSUM_KEY = "checksum"
PARQUET_KEY = b"grokscope.sha256"
SAFETENSORS_KEY = "sha256"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _one_bit_from(a: str, b: str) -> bool:
    if len(a) != len(b):
        return False
    return sum(bin(ord(x) ^ ord(y)).count("1") for x, y in zip(a, b, strict=True)) == 1


# ------------------------------------------------------------------ JSON
def json_digest(obj: dict) -> str:
    return _sha(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


def seal_json(obj: Any) -> Any:
    """``obj`` (a dict) with its checksum; anything else unchanged."""
    if not isinstance(obj, dict):
        return obj
    body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    return {**body, CHECKSUM_KEY: json_digest(body)}


def unseal_json(obj: Any, path: Path) -> Any:
    """``obj`` without its checksum, after checking it; StoreError naming ``path`` on a mismatch."""
    if not isinstance(obj, dict):
        return obj
    if CHECKSUM_KEY not in obj:
        if any(_one_bit_from(k, CHECKSUM_KEY) for k in obj):
            raise StoreError(f"damaged {path}: its checksum key is garbled")
        return obj
    body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    if obj[CHECKSUM_KEY] != json_digest(body):
        raise StoreError(f"damaged {path}: content does not match its checksum (a changed byte or a hand edit)")
    return body


# ------------------------------------------------------------------ parquet
def frame_digest(df: pd.DataFrame) -> str:
    """SHA-256 of ``df``'s column names, dtypes and values (row order included, index excluded)."""
    h = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    for _, col in df.items():
        if col.dtype == object:  # strings, lists (read back as arrays), None: hashed as JSON
            h.update(json.dumps([_plain(v) for v in col], default=str).encode())
        elif len(col):
            h.update(pd.util.hash_pandas_object(col, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _plain(v: Any) -> Any:
    v = v.tolist() if hasattr(v, "tolist") else v
    return None if isinstance(v, float) and v != v else v


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as parquet, with :func:`frame_digest` in the schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[PARQUET_KEY] = frame_digest(df).encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf)
    return buf.getvalue()


def read_parquet_verified(data: bytes, path: Path) -> pd.DataFrame:
    """The frame in ``data``, checked against its digest (files without one are read as they are)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
        df = table.to_pandas()
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise StoreError(f"damaged {path}: {e}".splitlines()[0]) from None
    meta = table.schema.metadata or {}
    if PARQUET_KEY in meta:
        if meta[PARQUET_KEY].decode(errors="replace") != frame_digest(df):
            raise StoreError(f"damaged {path}: content does not match its checksum")
    elif any(_one_bit_from(k.decode("latin-1"), PARQUET_KEY.decode()) for k in meta):
        raise StoreError(f"damaged {path}: its checksum key is garbled")
    return df


# ------------------------------------------------------------------ safetensors
def _split(data: bytes, path: Path | None) -> tuple[dict, bytes]:
    try:
        (n,) = struct.unpack("<Q", data[:8])
        if n > len(data) - 8:
            raise ValueError("header longer than the file")
        header = json.loads(data[8:8 + n])
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise StoreError(f"damaged {path}: unreadable safetensors header ({e})") from None
    return header, data[8 + n:]


def _join(header: dict, body: bytes) -> bytes:
    meta = header.get("__metadata__")
    ordered = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    ordered.update((k, v) for k, v in header.items() if k != "__metadata__")
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the library aligns the data to 8 bytes with spaces
    return struct.pack("<Q", len(text)) + text + body


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its header in the canonical form: same tensors, same
    metadata, bytes that depend on nothing else."""
    return _join(*_split(data, None))


def _safetensors_digest(header: dict, body: bytes) -> str:
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != SAFETENSORS_KEY}
    return _sha(_join({**header, "__metadata__": meta}, body))


def seal_safetensors(data: bytes) -> bytes:
    """Canonical ``data`` with its own digest in the metadata (key ``sha256``)."""
    header, body = _split(data, None)
    digest = _safetensors_digest(header, body)
    header["__metadata__"] = {**(header.get("__metadata__") or {}), SAFETENSORS_KEY: digest}
    return _join(header, body)


def verify_safetensors(data: bytes, path: Path) -> None:
    """StoreError naming ``path`` unless ``data``'s own digest matches (files without one pass)."""
    header, body = _split(data, path)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise StoreError(f"damaged {path}: metadata is not an object")
    if SAFETENSORS_KEY in meta:
        if meta[SAFETENSORS_KEY] != _safetensors_digest(header, body):
            raise StoreError(f"damaged {path}: content does not match its checksum")
    elif any(_one_bit_from(k, SAFETENSORS_KEY) for k in meta):
        raise StoreError(f"damaged {path}: its checksum key is garbled")
