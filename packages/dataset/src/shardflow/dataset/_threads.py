"""Loader workers as threads of the trainer's process: each runs its own iterator, the trainer takes their
items in turn.

Each worker thread fills a bounded queue of its own; the trainer takes the next item of each live worker in
turn and leaves a worker out once it has no more: the order torch's DataLoader gives its worker processes'
items. A worker's exception is raised in the trainer, with the worker's frames in its traceback. Closing
(the trainer's loop ended, broke off, or failed) stops every worker at its next item, closes its iterator
(so an iteration lets go of its shards) and joins the threads: none outlives the loop.

The trainer's first item is worker 0's, so the other workers start reading when worker 0 has queued its
first item: until then worker 0 has the cores (and the GIL) to itself, which brings the first batch about
a third sooner; from then on all run at once, so the epoch's rate is the same.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ThreadWorkers"]

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
