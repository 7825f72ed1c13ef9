"""Process-level CPU performance settings."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>


@functools.cache
def reuse_freed_memory() -> bool:
    """Keep freed tensor memory in the process for reuse instead of returning it to the OS.

    glibc's malloc serves large allocations (above a dynamic threshold of at most 32 MiB) with
    fresh ``mmap``s and trims the top of the heap on ``free``, so a loop that allocates the same
    large tensors again and again (each training step's [batch, d_mlp] activations, the probes'
    [p², d_mlp] grid) page-faults them in every time. With ``M_MMAP_THRESHOLD`` at 1 GiB (32 MiB
    where a glibc refuses more) and ``M_TRIM_THRESHOLD`` at 2 GiB, malloc reuses warm heap pages;
    the process holds on to what it freed. Idempotent. Returns whether both settings took (glibc
    on Linux only). Called by entry points, through :func:`configure_process`."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mmap_ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) or libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20))
        trim_ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
    except (OSError, AttributeError):  # no glibc (e.g. musl has no mallopt symbol)
        return False
    return mmap_ok and trim_ok


def configure_process(threads: int | None = None) -> None:
    """Process-wide settings for an entry point (CLI command, sweep worker, benchmark, demo):
    :func:`reuse_freed_memory`, and ``torch.set_num_threads(threads)`` when ``threads`` is
    given. Library code (the trainers, the probe runner) never calls this; entry points do."""
    reuse_freed_memory()
    if threads is not None:
        torch.set_num_threads(threads)
