"""One watch per instance and state dir: an flock on ``<state_dir>/<instance>.lock``.

The kernel drops an flock when its holder dies, ``kill -9`` included, so a
crashed watcher never leaves a stale lock behind; the pid written into the
file is only there for the message the second watcher prints.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError
from .settings import Settings


class WatchLocked(UserError):
    """Another watch already runs for this instance and state dir."""


def lock_path(settings: Settings) -> Path:
    return settings.state_dir / f"{settings.instance}.lock"


@contextmanager
def hold_watch_lock(settings: Settings) -> Iterator[None]:
    """Hold the watch lock for the ``with`` block, or raise ``WatchLocked`` at once."""
    path = lock_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UserError(f"cannot create the watch lock {path}: {exc.strerror}; check --state-dir") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            who = f" (pid {holder})" if holder else ""
            raise WatchLocked(
                f'another "reconcile watch" is already running for instance "{settings.instance}" '
                f"with state dir {settings.state_dir}{who}; stop it first, or use another --instance"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def watch_running(settings: Settings) -> bool:
    """True while some process (this one included) holds the watch lock."""
    try:
        fd = os.open(lock_path(settings), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we may have taken
    return False


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None
