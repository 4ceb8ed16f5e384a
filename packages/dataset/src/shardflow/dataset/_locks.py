"""Per-shard lock files shared by every process of a node: the kernel releases them when a holder dies."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shardflow.dataset.errors import ShardWaitTimeout

__all__ = ["LOCK_FOLDER", "file_lock", "lock_path"]

LOCK_FOLDER = ".shardflow-locks"
"""Sub-folder of a stream's local folder that holds its lock files (never shard data)."""


def lock_path(root: Path, name: str) -> Path:
    """The lock file guarding ``name`` (a path relative to ``root``, possibly with sub-folders)."""
    return root / LOCK_FOLDER / (name.replace("/", "%") + ".lock")


@contextmanager
def file_lock(path: Path, timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block.

    The lock dies with its holder (``kill -9`` included), so a crashed process never blocks the next one.
    The holder's pid is written into the file, for the error message of whoever times out waiting.

    Args:
        path: The lock file.
        timeout: Seconds to wait for the lock.
        what: What the lock guards, for the error message (e.g. ``"shard.00003.mds of s3://b/ds"``).

    Raises:
        ShardWaitTimeout: Another process held the lock for ``timeout`` seconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                raise ShardWaitTimeout(
                    f"waited {timeout:g} s for the lock {path} on {what}, held by pid {holder}: that process "
                    "is still downloading it or is stuck; raise download_timeout or stop that process"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
