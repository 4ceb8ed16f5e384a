"""One attempt of a transfer under a wall-clock timeout that fires even when a socket read never returns."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["Attempt", "AbandonedError", "AttemptTimedOut", "run_attempt"]

T = TypeVar("T")

_IDLE_SECONDS = 30.0


class AbandonedError(Exception):
    """Raised inside the worker of an attempt whose caller gave up on it; it only unwinds that worker."""


class AttemptTimedOut(Exception):
    """Raised to the caller when an attempt ran past its timeout (turned into a StorageTimeoutError).

    Attributes:
        failures: The transient failures retried inside the attempt, the last one at the end.
    """

    def __init__(self, failures: list[BaseException] | None = None) -> None:
        super().__init__()
        self.failures = failures or []


class Attempt:
    """The state an attempt's worker and its caller share: abandoned by the caller, or committed.

    Attributes:
        deadline: ``time.monotonic()`` by which the attempt must end, or ``None`` without a timeout.
        failures: Transient failures retried inside the attempt so far, the last one at the end.
    """

    def __init__(self, timeout: float | None = None) -> None:
        self._lock = threading.Lock()
        self._abandoned = threading.Event()
        self._committed = False
        self._cleanups: list[Callable[[], None]] = []
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.failures: list[BaseException] = []

    def check(self) -> None:
        """Raise :class:`AbandonedError` if the caller gave up; called between chunks of a transfer."""
        if self._abandoned.is_set():
            raise AbandonedError

    def time_left(self) -> float | None:
        """Seconds until the deadline (``None`` without one)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or raise :class:`AbandonedError` as soon as the caller gives up."""
        if self._abandoned.wait(seconds):
            raise AbandonedError

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        """Run the block that publishes the result (a rename) only if the caller still waits for it.

        Once the block has run, the caller waits for this attempt to finish instead of timing out, so a
        result is never published after its caller reported a timeout.
        """
        with self._lock:
            self.check()
            yield
            self._committed = True

    def on_abandon(self, cleanup: Callable[[], None]) -> None:
        """Have the caller run ``cleanup`` (e.g. remove a temporary file) if it gives up on the attempt."""
        with self._lock:
            if self._abandoned.is_set():
                cleanup()
            else:
                self._cleanups.append(cleanup)

    def abandon(self) -> bool:
        """Give up on the attempt and run its cleanups; return False when it already committed."""
        with self._lock:
            if self._committed:
                return False
            self._abandoned.set()
            for cleanup in self._cleanups:
                cleanup()
            return True


def run_attempt(work: Callable[[Attempt], T], timeout: float | None) -> T:
    """Run ``work`` and return its result, or raise :class:`AttemptTimedOut` after ``timeout`` seconds.

    With a timeout, ``work`` runs in a daemon thread and the caller waits on an event, so the timeout
    fires whatever the SDK is blocked in. The abandoned worker stops at its next :meth:`Attempt.check`
    (or when its socket times out) and cleans up after itself.

    Args:
        work: The attempt; it receives the :class:`Attempt` to check and commit through.
        timeout: Seconds, or ``None`` to run in the calling thread without a limit.
    """
    attempt = Attempt(timeout)
    if timeout is None:
        return work(attempt)
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def worker() -> None:
        try:
            outcome["value"] = work(attempt)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc
        finally:
            done.set()

    _workers.submit(worker)
    try:
        finished = done.wait(timeout)
    except BaseException:
        attempt.abandon()
        raise
    if not finished:
        if attempt.abandon():
            raise AttemptTimedOut(list(attempt.failures))
        done.wait()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class _Workers:
    """Daemon threads that run attempts: an idle one is reused, else one more starts; idle ones retire.

    Daemon threads, because an abandoned attempt may sit in a socket read that never returns, and that
    must not keep the interpreter from exiting. Reuse spares a thread start per small transfer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0
        self._pid = os.getpid()

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's threads are not here
                self._tasks, self._idle, self._pid = queue.SimpleQueue(), 0, os.getpid()
            start = self._idle == 0
            if not start:
                self._idle -= 1
            self._tasks.put(task)
        if start:
            threading.Thread(
                target=self._run, args=(self._tasks,), name="shardflow-storage-transfer", daemon=True
            ).start()

    def _run(self, tasks: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            try:
                task = tasks.get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0 and tasks is self._tasks:
                        self._idle -= 1
                        return
                continue
            task()
            with self._lock:
                if tasks is not self._tasks:
                    return
                self._idle += 1


_workers = _Workers()
