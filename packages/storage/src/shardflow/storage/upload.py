"""The uploader that shardflow.format's writers use for a remote ``out``: parallel, any registered scheme."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardflow.storage.errors import UnsupportedURLError
from shardflow.storage.registry import backend_factory, known_schemes, url_scheme
from shardflow.storage.store import Store, from_url

__all__ = ["Uploader", "make_uploader"]

logger = logging.getLogger(__name__)


class Uploader:
    """Uploads a dataset's files to a remote root as they are handed over, in parallel.

    Each file is uploaded by a pool of threads sharing one client. Every name is treated alike: the
    order of publication is the caller's, through :meth:`wait` (shardflow.format's writers wait before
    handing over ``index.json``, so a reader never finds an index that names a file not yet uploaded).
    Once an upload has failed, the next :meth:`upload` raises that failure instead of uploading, so a
    writer stops early and publishes nothing more. Local files are left in place; the writer decides
    whether to keep them (``keep_local``).

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
        """Queue ``local_path`` for upload as ``relative_name`` under the root; thread-safe.

        Raises:
            ValueError: ``relative_name`` leaves the root.
            StorageError: An earlier upload failed (this file is then not uploaded).
        """
        path = Path(local_path)
        self.store.url(relative_name)  # reject names that escape the root now, not in a thread
        with self._lock:
            failed = bool(self._failures) or any(f.done() and f.exception() for _, f in self._pending)
        if failed:
            self.wait()  # raises the first failure
        future = self._pool.submit(self._send, path, relative_name)
        with self._lock:
            self._pending.append((relative_name, future))

    def wait(self) -> None:
        """Block until every upload queued so far is done; raise this uploader's first failure, if any."""
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
            raise first

    def finish(self) -> None:
        """Wait for every upload; raise the first failure, if any. The uploader cannot be used afterwards."""
        try:
            self.wait()
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


def _progress_bar(enabled: bool, root: str) -> Any:
    """A tqdm bar of bytes uploaded, or ``None`` (tqdm is optional)."""
    # mirrors shardflow.format's writer progress bar (_write_shard._progress_bar); the packages may not import
    # each other
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
    """The uploader for ``remote``: the factory registered as ``any`` under ``shardflow.format.uploaders``.

    It serves every scheme this package's registry knows (built in, ``shardflow.storage.backends`` entry
    points, and :func:`~shardflow.storage.register_backend` calls made in this process).

    Args:
        remote: The remote dataset root, e.g. ``s3://bucket/datasets/c4/train``.
        progress_bar: Show a tqdm bar of bytes uploaded.
        max_workers: Uploads running at once (default 8).
        retry: Re-attempts of a failed upload (``upload_retry``; default 2).
        **options: More :func:`~shardflow.storage.get_client` options (timeouts, endpoint, ...).

    Raises:
        UnsupportedURLError: No storage backend serves the scheme of ``remote`` (a ``ValueError``); the
            message lists the known schemes.
    """
    scheme = url_scheme(remote)
    try:
        backend_factory(scheme)
    except UnsupportedURLError:
        raise UnsupportedURLError(
            f"{remote!r} cannot be a writer's out: no storage backend serves {scheme}:// URLs; known "
            f"schemes: {', '.join(known_schemes())}. Register one with "
            "shardflow.storage.register_backend(scheme, factory) in this process, or through the "
            "'shardflow.storage.backends' entry-point group",
            remote,
        ) from None
    if retry is not None:
        options["upload_retry"] = retry
    return Uploader(from_url(remote, **options), max_workers=max_workers or 8, progress_bar=progress_bar)


if TYPE_CHECKING:
    INDEX_NAME = "index.json"
    """Deprecated: the uploader no longer treats any name specially (writers order index.json themselves)."""
else:

    def __getattr__(name: str) -> Any:
        if name == "INDEX_NAME":
            warnings.warn(
                "shardflow.storage.upload.INDEX_NAME is deprecated: the uploader treats every name alike; "
                "shardflow.format's writers call Uploader.wait() before uploading their index",
                DeprecationWarning,
                stacklevel=2,
            )
            return "index.json"
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
