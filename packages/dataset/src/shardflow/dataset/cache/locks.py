"""Lock files shared by every process of a node (``flock``): the kernel releases them when a holder dies."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from shardflow.dataset.errors import ShardWaitTimeout

__all__ = ["LockState", "file_lock", "acquire", "try_lock", "release", "probe", "pid_alive"]


class LockState(NamedTuple):
    """What :func:`probe` found: whether someone holds the lock, and the pid written in its file."""

    held: bool
    pid: int | None


def _open(path: Path, create: bool) -> int:
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    return os.open(path, os.O_RDWR | os.O_NOFOLLOW)  # a lock file that is a symlink is not ours: ELOOP


def _locked(fd: int, path: Path, shared: bool) -> bool:
    """Take the lock on ``fd`` without waiting; True when taken on the file ``path`` still names.

    ``shardflow cache clean`` unlinks unheld lock files: a lock taken on an unlinked file guards nothing.
    """
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            return True
    except FileNotFoundError:
        pass
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _pid_in(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def try_lock(path: Path, shared: bool = False, create: bool = True) -> int | None:
    """An fd holding ``path``'s lock (exclusive unless ``shared``), taken without waiting; None if busy.

    Without ``create`` the lock file must exist and be no symlink (else OSError), as when ``cache clean``
    takes a lock before removing what it guards.
    """
    fd = _open(path, create)
    if _locked(fd, path, shared):
        return fd
    os.close(fd)
    return None


def acquire(path: Path, timeout: float, what: str, shared: bool = False) -> int:
    """An fd holding ``path``'s lock, waiting up to ``timeout`` seconds; close it (:func:`release`) to unlock.

    An exclusive holder writes its pid into the file, for the error of whoever times out waiting.

    Raises:
        ShardWaitTimeout: Another process held the lock for ``timeout`` seconds (the error names the lock,
            ``what`` it guards and the holder's pid when known).
    """
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        fd = _open(path, create=True)
        if _locked(fd, path, shared):
            break
        if time.monotonic() >= deadline:
            holder = _pid_in(fd)
            os.close(fd)
            raise ShardWaitTimeout(
                f"waited {timeout:g} s for the lock {path} on {what}, held by pid "
                f"{'unknown' if holder is None else holder}: that process is still working on it or is "
                "stuck; raise download_timeout or stop that process"
            )
        os.close(fd)
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    if not shared:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
    return fd


def release(fd: int) -> None:
    """Drop a lock taken by :func:`acquire` or :func:`try_lock`."""
    os.close(fd)


@contextmanager
def file_lock(path: Path, timeout: float, what: str) -> Iterator[None]:
    """Hold ``path``'s exclusive lock for the ``with`` block (see :func:`acquire`).

    The lock dies with its holder (``kill -9`` included), so a crashed process never blocks the next one.
    """
    fd = acquire(path, timeout, what)
    try:
        yield
    finally:
        release(fd)


def probe(path: Path) -> LockState:
    """Whether someone holds ``path``'s lock now (an exclusive lock, tried and dropped at once, tells),
    and the pid its last exclusive holder wrote; not held, no pid, when the file is gone. Creates
    nothing, and follows no symlink (OSError)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return LockState(False, None)
    try:
        pid = _pid_in(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return LockState(True, pid)
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return LockState(False, pid)
    finally:
        os.close(fd)


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists on this machine (someone else's counts)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
