"""The uploader that shardflow.format's writers use for a remote ``out``: parallel, index last."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from shardflow.storage.store import Store, from_url

__all__ = ["Uploader", "make_uploader", "INDEX_NAME"]

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
"""Files of this name are published only after every file handed over before them is uploaded."""


class Uploader:
    """Uploads a dataset's files to a remote root as they are finished, in parallel; ``index.json`` last.

    Each file is uploaded by a pool of threads sharing one client. A file named ``index.json`` waits for
    every file handed over before it: it is uploaded only when all of them succeeded, so a reader never
    finds an index that names a shard not yet (or never) uploaded. Once an upload has failed, no index is
    uploaded any more, and the next :meth:`upload` raises, so a writer stops early. Local files are left
    in place; the writer decides whether to keep them (``keep_local``).

    Args:
        store: The remote root.
        max_workers: Uploads running at once.
        progress_bar: Show a tqdm bar of bytes uploaded (when tqdm is installed).
    """

    def __init__(self, store: Store, *, max_workers: int = 8, progress_bar: bool = False) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be 1 or more, got {max_workers}")
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="shardflow-upload")
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Future[None]]] = []
        self._failures: list[tuple[str, BaseException]] = []
        self._bar = _progress_bar(progress_bar, store.root)

    def __repr__(self) -> str:
        return f"Uploader({self.store.root!r})"

    def upload(self, local_path: str | os.PathLike[str], relative_name: str) -> None:
        """Upload ``local_path`` as ``relative_name`` under the root.

        Other files are queued and uploaded in the background; ``index.json`` is uploaded at once, after
        waiting for every earlier file.

        Raises:
            StorageError: An earlier upload failed (then no index is uploaded), or the index upload did.
        """
        path = Path(local_path)
        self.store.url(relative_name)  # reject names that escape the root now, not in a thread
        with self._lock:
            failed = bool(self._failures) or any(f.done() and f.exception() for _, f in self._pending)
        if failed or PurePosixPath(relative_name).name == INDEX_NAME:
            self._wait()
            self._send(path, relative_name)
            return
        future = self._pool.submit(self._send, path, relative_name)
        with self._lock:
            self._pending.append((relative_name, future))

    def finish(self) -> None:
        """Wait for every upload; raise the first failure, if any. The uploader cannot be used afterwards."""
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
            if self._bar is not None:
                self._bar.close()

    def list_objects(self, prefix: str = "") -> list[str]:
        """Names, relative to the root, of the remote objects whose name starts with ``prefix``."""
        return self.store.list(prefix)

    def download(self, relative_name: str, local_path: str | os.PathLike[str]) -> Path:
        """Download the remote ``relative_name`` to ``local_path`` (atomically) and return that path."""
        return self.store.download(relative_name, local_path)

    def _send(self, path: Path, name: str) -> None:
        self.store.upload(path, name)
        if self._bar is not None:
            self._bar.update(path.stat().st_size)

    def _wait(self) -> None:
        """Wait for the uploads queued so far; raise the first failure of this uploader, if any."""
        with self._lock:
            pending, self._pending = self._pending, []
        new = [(name, future.exception()) for name, future in pending]
        new_failures = [(name, error) for name, error in new if error is not None]
        for name, error in new_failures:
            logger.error("upload of %s to %s failed: %s", name, self.store.root, error)
        with self._lock:
            self._failures.extend(new_failures)
            first = self._failures[0][1] if self._failures else None
        if first is not None:
            logger.error("%s is not uploaded to %s: an upload failed", INDEX_NAME, self.store.root)
            raise first


def _progress_bar(enabled: bool, root: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        logger.warning("progress_bar=True needs tqdm (pip install tqdm); uploading to %s without one", root)
        return None
    return tqdm(desc=f"uploading to {root}", unit="B", unit_scale=True)


def make_uploader(
    remote: str,
    *,
    progress_bar: bool = False,
    max_workers: int | None = None,
    retry: int | None = None,
    **options: Any,
) -> Uploader:
    """The uploader for ``remote``: the factory registered under ``shardflow.format.uploaders``.

    Args:
        remote: The remote dataset root, e.g. ``s3://bucket/datasets/c4/train``.
        progress_bar: Show a tqdm bar of bytes uploaded.
        max_workers: Uploads running at once (default 8).
        retry: Re-attempts of a failed upload (``upload_retry``; default 2).
        **options: More :func:`~shardflow.storage.get_client` options (timeouts, endpoint, ...).
    """
    if retry is not None:
        options["upload_retry"] = retry
    return Uploader(from_url(remote, **options), max_workers=max_workers or 8, progress_bar=progress_bar)
