"""Background shard fetching for one process: bounded threads, one future per shard, waits on events."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from shardflow.dataset.errors import ShardWaitTimeout

__all__ = ["ShardFetcher"]


class ShardFetcher:
    """Runs each shard's fetch job once at a time in a small thread pool; readers wait for it.

    A job that failed is run again on the next request. The pool is created lazily in the process that
    uses it (DataLoader workers each get their own after fork or unpickling).

    Args:
        max_workers: Fetches running at once.
    """

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._pid = -1
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[int, Future[None]] = {}
        self._lock = threading.Lock()

    def _reset_after_fork(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._pool = None
            self._futures = {}
            self._lock = threading.Lock()

    def request(self, key: int, job: Callable[[], None]) -> Future[None]:
        """Start ``job`` for shard ``key`` unless it is running or done; return its future."""
        self._reset_after_fork()
        with self._lock:
            future = self._futures.get(key)
            if future is not None and not (future.done() and (future.cancelled() or future.exception())):
                return future
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="shardflow-fetch")
            future = self._pool.submit(job)
            self._futures[key] = future
            return future

    def wait(self, key: int, job: Callable[[], None], timeout: float, what: str) -> None:
        """Request shard ``key`` and block until its job has finished; re-raise its error.

        Raises:
            ShardWaitTimeout: The job did not finish within ``timeout`` seconds (``what`` names the shard).
        """
        future = self.request(key, job)
        try:
            future.result(timeout)
        except CancelledError:
            self.wait(key, job, timeout, what)
        except FutureTimeout:
            if future.done():  # the job's own timeout (a TimeoutError too): it names what it waited for
                raise
            raise ShardWaitTimeout(
                f"waited {timeout:g} s for {what}: its download has not finished; check the connection to "
                "the store, or raise download_timeout"
            ) from None

    def forget(self, key: int) -> None:
        """Forget shard ``key`` (it was released), so that a later request runs its job again."""
        with self._lock:
            self._futures.pop(key, None)

    def cancel(self, key: int) -> None:
        """Forget shard ``key`` and cancel its fetch if it has not started (nobody needs it any more)."""
        with self._lock:
            future = self._futures.pop(key, None)
        if future is not None:
            future.cancel()

    def cancel_pending(self) -> None:
        """Cancel the fetches that have not started (an iteration ended early)."""
        with self._lock:
            for future in self._futures.values():
                future.cancel()

    def __getstate__(self) -> dict[str, int]:
        return {"max_workers": self.max_workers}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["max_workers"])  # type: ignore[misc]
