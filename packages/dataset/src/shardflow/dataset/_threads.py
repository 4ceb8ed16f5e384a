"""Loader workers as threads of the trainer's process: each runs its own iterator, the trainer takes their
items in turn.

Each worker thread fills a bounded queue of its own; the trainer takes the next item of each live worker in
turn and leaves a worker out once it has no more: the order torch's DataLoader gives its worker processes'
items. A worker's exception is raised in the trainer, with the worker's frames in its traceback. Closing
(the trainer's loop ended, broke off, or failed) stops every worker at its next item, closes its iterator
(so an iteration lets go of its shards) and joins the threads: none outlives the loop.

The trainer's first item is worker 0's, so the other workers start reading when worker 0 has queued its
first item. A worker's samples may be read, a batch at a time, by a pool shared by all workers
(:class:`GroupReaders`): each batch is cut into one run of samples a thread, runs taken first come, first
served, so worker 0's first batch is read by all the threads at once (about half the wait with two), and
from then on they read every worker's batches at the rate of one thread a worker.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

__all__ = ["ThreadWorkers", "GroupReaders"]

logger = logging.getLogger(__name__)

_POLL = 0.05
"""Seconds a worker waits on a full queue before it looks whether it should stop."""


class _Done:
    """A worker's last item: its iterator is exhausted."""


@dataclass(frozen=True)
class _Failed:
    """A worker's last item: its iterator raised ``error``."""

    error: BaseException


class ThreadWorkers:
    """Threads that each drain one iterator, read in turn by the calling thread.

    Args:
        sources: One iterator per worker, iterated in its own thread (a generator is closed there at the
            end).
        depth: Items a worker may have ready ahead of the trainer.
        timeout: Seconds the trainer waits for a worker's next item (0: no limit).
        init: Called in each worker thread with its index before it starts (a ``worker_init_fn``).
        name: The threads' name prefix.
    """

    def __init__(
        self,
        sources: Sequence[Iterator[Any]],
        depth: int = 2,
        timeout: float = 0,
        init: Callable[[int], None] | None = None,
        name: str = "shardflow-loader",
    ) -> None:
        self._queues: list[queue.Queue[Any]] = [queue.Queue(max(1, depth)) for _ in sources]
        self._stop = threading.Event()
        self._first = threading.Event()  # worker 0 queued its first item (or ended): the others start
        self._timeout = timeout
        self._init = init
        self._threads = [
            threading.Thread(target=self._run, args=(k, source), name=f"{name}-{k}", daemon=True)
            for k, source in enumerate(sources)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, worker: int, source: Iterator[Any]) -> None:
        try:
            if self._init is not None:
                self._init(worker)
            while worker and not self._first.wait(_POLL):
                if self._stop.is_set():
                    return
            for item in source:
                if not self._put(worker, item):
                    return
                if not worker:
                    self._first.set()
            self._put(worker, _Done())
        except BaseException as exc:  # handed to the trainer, which raises it
            self._put(worker, _Failed(exc))
        finally:
            if not worker:
                self._first.set()
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _put(self, worker: int, item: Any) -> bool:
        """Queue ``item``; False when the workers were told to stop first."""
        while not self._stop.is_set():
            try:
                self._queues[worker].put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, worker: int) -> Any:
        try:
            return self._queues[worker].get(timeout=self._timeout or None)
        except queue.Empty:
            raise RuntimeError(
                f"loader thread {worker} gave no item within timeout={self._timeout:g} s: raise the "
                "DataLoader's timeout, or look for what blocks the read (a download?)"
            ) from None

    def __iter__(self) -> Iterator[Any]:
        """The workers' items in turn, each worker's in order, a worker left out once exhausted."""
        live = list(range(len(self._queues)))
        while live:
            for worker in list(live):
                item = self._get(worker)
                if isinstance(item, _Done):
                    live.remove(worker)
                elif isinstance(item, _Failed):
                    error = item.error
                    if hasattr(error, "add_note"):  # Python 3.11+
                        error.add_note(f"(raised in loader thread {worker})")
                    raise error
                else:
                    yield item

    def close(self) -> None:
        """Stop the workers at their next item and wait for them to end."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        for pending in self._queues:  # items read ahead of the trainer: drop them now
            while not pending.empty():
                pending.get_nowait()


class GroupReaders:
    """A pool of ``count`` threads reading groups of samples for any loader thread (see ``ItemGroups``): a
    group is cut into ``count`` runs of consecutive samples, one a thread, groups taken in the order they
    came (so a thread wakes its caller once a run, not once a sample)."""

    def __init__(self, count: int, name: str = "shardflow-loader-read") -> None:
        self._count = max(1, count)
        self._executor = ThreadPoolExecutor(self._count, thread_name_prefix=name)

    def read(self, item: Callable[[int], Any], ids: list[int]) -> list[Any]:
        """``[item(i) for i in ids]``, read in the pool; returns (or raises the first failing run's error)
        only once none of them still runs, so the caller may let go of their shards."""
        step = max(1, -(-len(ids) // self._count))
        runs = [ids[begin : begin + step] for begin in range(0, len(ids), step)]
        futures = [self._executor.submit(_read_run, item, run) for run in runs]
        try:
            return [sample for future in futures for sample in future.result()]
        finally:
            for future in futures:
                future.cancel()
            wait(futures)

    def close(self) -> None:
        """Stop the pool's threads once the reads under way end."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _read_run(item: Callable[[int], Any], ids: list[int]) -> list[Any]:
    return [item(i) for i in ids]
