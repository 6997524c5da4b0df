"""One training process per run folder: an exclusive OS lock on ``RUN/.stackgan.lock``.

Two ``stackgan train --out SAME`` at once would interleave their checkpoints in one folder, and a
later fallback resume could silently switch runs. The lock is ``flock(2)`` on a file in the run
folder: the kernel releases it when the process ends in any way (also kill -9), so a stale lock
never blocks. The file holds the holder's PID, for the message the second process prints.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from .errors import RunInUseError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are not locked there
    fcntl = None

LOCK_NAME = ".stackgan.lock"


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run folder's lock for the ``with`` block; RunInUseError if another process has it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    if fcntl is None:
        yield path
        return
    # O_NOFOLLOW: a symlink planted at the lock's name is refused, never written through
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunInUseError(f"{run_dir} is in use by process {holder} (another `stackgan train` with this "
                                "--out); wait for it to finish, stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with the next process)
