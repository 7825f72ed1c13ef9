"""One writer per run: an advisory ``fcntl.flock`` lock on a file in the directory written.

Training (``train``, ``resume``, and anything else that writes a run's checkpoints, state and
metrics) holds ``RUN/.lock``; probing holds ``RUN/probes/.lock``. A second writer does not wait
by default: it gets a :class:`~interp.errors.StoreError` naming the process that holds the lock
(the command line turns it into one line and exit code 2). Readers (the dashboard, ``diff``,
``runs``) never take a lock: every file is replaced atomically, so they see whole files.

``flock`` locks belong to an open file description, so two threads of one process that each
take the lock exclude each other too; the kernel releases a lock when its holder dies, so a
crashed writer never leaves a run locked. On platforms without ``fcntl`` (Windows) the lock is
a no-op.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from interp.errors import StoreError
from interp.generations import clean_temp_files

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


def holder_pid(lock_path: Path) -> int | None:
    """The PID the current holder wrote into ``lock_path``, if readable."""
    try:
        return int(lock_path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def write_lock(directory: str | os.PathLike, what: str = "training", wait: float = 0.0,
               subdirs: tuple[str, ...] = ("weights", "state", "state/snapshots")) -> Iterator[None]:
    """Hold the writer's lock of ``directory`` (created if missing) for the ``with`` block, after
    deleting the temporary files an interrupted writer left in it and its ``subdirs``.

    With ``wait`` > 0, retry for that many seconds before giving up; then (or at once) raise
    :class:`StoreError` naming the holder's PID."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path = directory / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    pid = holder_pid(lock_path)
                    who = f"process {pid}" if pid is not None else "another process"
                    raise StoreError(f"{directory}: {what} is already writing here ({who} holds {lock_path}); "
                                     "wait for it to finish or stop it") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        clean_temp_files(directory, *(directory / d for d in subdirs))  # only a lock holder may
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
