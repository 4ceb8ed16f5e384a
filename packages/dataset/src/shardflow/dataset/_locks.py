"""Lock files shared by every process of a node (``flock``): the kernel releases them when a holder dies."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shardflow.dataset.errors import ShardWaitTimeout

__all__ = ["LOCK_FOLDER", "lock_path", "file_lock", "acquire", "try_lock", "release"]

LOCK_FOLDER = ".shardflow-locks"
"""Sub-folder of a stream's local folder that holds its lock files (never shard data)."""


def lock_path(root: Path, name: str, kind: str = "") -> Path:
    """The lock file guarding ``name`` (a path relative to ``root``, possibly with sub-folders).

    ``kind`` tells several locks of one name apart (``"use"``: held shared while a shard is open).
    """
    stem = name.replace("/", "%")
    return root / LOCK_FOLDER / (f"{stem}.{kind}.lock" if kind else f"{stem}.lock")


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


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


def try_lock(path: Path, shared: bool = False) -> int | None:
    """An fd holding ``path``'s lock (exclusive unless ``shared``), taken without waiting; None if busy."""
    fd = _open(path)
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
        fd = _open(path)
        if _locked(fd, path, shared):
            break
        if time.monotonic() >= deadline:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ShardWaitTimeout(
                f"waited {timeout:g} s for the lock {path} on {what}, held by pid {holder}: that process "
                "is still working on it or is stuck; raise download_timeout or stop that process"
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
