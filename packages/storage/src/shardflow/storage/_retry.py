"""Retries of transient failures with exponential backoff and jitter; everything else fails at once.

Two levels: :func:`call_with_retry` runs whole attempts (``retries + 1`` at most, each under the wall-clock
timeout), and :func:`persist`, used by reads inside one attempt, retries a failed request for as long as
that attempt's timeout leaves time for the backoff delay.
"""

from __future__ import annotations

import http.client
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from shardflow.storage._attempt import AbandonedError, Attempt, AttemptTimedOut, run_attempt
from shardflow.storage.errors import StorageError, StorageTimeoutError, TransientStorageError

__all__ = ["RetryPolicy", "call_with_retry", "classify", "persist"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Failures any SDK can surface as builtins: refused or reset connections, socket timeouts, short reads.
_TRANSIENT_BUILTINS = (ConnectionError, TimeoutError, http.client.HTTPException)


@dataclass(frozen=True)
class RetryPolicy:
    """How one kind of operation is retried.

    Attributes:
        retries: Re-attempts after the first try (so ``retries + 1`` attempts at most).
        timeout: Wall-clock seconds one attempt may take, or ``None`` for no limit.
        backoff: Base delay in seconds: the n-th re-attempt waits between half and all of
            ``min(max_backoff, backoff * 2 ** (n - 1))``.
        max_backoff: Cap of one delay in seconds.
        retries_name: The argument that sets ``retries``, named in the final error.
        timeout_name: The argument that sets ``timeout``, named in the final error.
        persists: Whether an attempt retries failed requests while its timeout lasts (:func:`persist`).
    """

    retries: int
    timeout: float | None
    backoff: float
    max_backoff: float
    retries_name: str
    timeout_name: str
    persists: bool = False

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"{self.retries_name} must be 0 or more, got {self.retries}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"{self.timeout_name} must be positive or None, got {self.timeout}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"backoff delays must be 0 or more, got {self.backoff} and {self.max_backoff}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before re-attempt number ``retry`` (1-based), with jitter."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def classify(
    exc: BaseException, url: str, translate: Callable[[BaseException, str], StorageError | None]
) -> BaseException:
    """What ``exc`` means: a :class:`StorageError` when it is about the store, else ``exc`` itself.

    Args:
        exc: What one attempt raised.
        url: The URL the attempt was about.
        translate: The backend's translation of its SDK's exceptions.
    """
    if isinstance(exc, StorageError):
        return exc
    known = translate(exc, url)
    if known is not None:
        return known
    if isinstance(exc, _TRANSIENT_BUILTINS):
        return TransientStorageError(f"transfer of {url} failed: {type(exc).__name__}: {exc}", url)
    return exc


def persist(
    step: Callable[[], T],
    attempt: Attempt,
    *,
    url: str,
    action: str,
    policy: RetryPolicy,
    translate: Callable[[BaseException, str], StorageError | None],
) -> T:
    """Run ``step`` (one request) until it succeeds, retrying transient failures inside ``attempt``.

    The n-th retry waits ``policy.delay(n)`` (exponential backoff with jitter) and happens only if that
    wait ends before the attempt's deadline; otherwise the failure ends the attempt. Without a deadline
    (no timeout) there is no time to spend: the first failure ends the attempt.

    Raises:
        What ``step`` raised last, unchanged: a non-transient failure at once, a transient one when the
        attempt has no time left for another try.
    """
    retry = 0
    while True:
        try:
            return step()
        except AbandonedError:
            raise
        except Exception as exc:
            error = classify(exc, url, translate)
            if not isinstance(error, TransientStorageError):
                raise
            retry += 1
            delay = policy.delay(retry)
            left = attempt.time_left()
            if left is None or left <= delay:
                raise
            attempt.failures.append(error)
            logger.debug(
                "%s of %s failed (%s); trying again within the attempt in %.2f s", action, url, error, delay
            )
            attempt.sleep(delay)


def call_with_retry(
    work: Callable[[Attempt], T],
    *,
    url: str,
    action: str,
    policy: RetryPolicy,
    translate: Callable[[BaseException, str], StorageError | None],
) -> T:
    """Run ``work`` until it succeeds, retrying transient failures as ``policy`` says.

    Args:
        work: One attempt; see :func:`~shardflow.storage._attempt.run_attempt`.
        url: The URL it is about, named in errors.
        action: What it does, e.g. ``"download"``, for messages.
        policy: Retries, timeout and backoff.
        translate: The backend's translation of SDK exceptions.

    Raises:
        StorageError: The first non-transient failure, or the last transient one once retries ran out;
            other exceptions (local disk errors, bugs) pass through unchanged.
    """
    for attempt in range(policy.retries + 1):
        try:
            return run_attempt(work, policy.timeout)
        except AttemptTimedOut as timed_out:
            error: BaseException = _timed_out(action, url, policy, timed_out.failures)
            cause: BaseException = error
        except Exception as exc:
            error, cause = classify(exc, url, translate), exc
        if not isinstance(error, TransientStorageError):
            if error is cause:
                raise error
            raise error from cause
        if attempt == policy.retries:
            raise _exhausted(error, action, url, policy) from cause
        delay = policy.delay(attempt + 1)
        logger.info(
            "%s of %s failed (%s); retry %d of %d in %.2f s",
            action,
            url,
            error,
            attempt + 1,
            policy.retries,
            delay,
        )
        time.sleep(delay)
    raise AssertionError("unreachable")


def _timed_out(action: str, url: str, policy: RetryPolicy, failures: list[BaseException]) -> StorageError:
    """The error of an attempt that ran out of time: a timeout, or the store's failures that filled it."""
    if not failures:
        return StorageTimeoutError(f"{action} of {url} did not finish within {policy.timeout} s", url)
    return TransientStorageError(
        f"{action} of {url} kept failing for {policy.timeout} s ({len(failures)} failed tries, the last: "
        f"{failures[-1]})",
        url,
    )


def _exhausted(error: TransientStorageError, action: str, url: str, policy: RetryPolicy) -> StorageError:
    """The final error once every attempt failed, saying which knob to turn."""
    attempts = policy.retries + 1
    if isinstance(error, StorageTimeoutError):
        hint = (
            f"check that the store at {url} is reachable and responsive, or raise {policy.timeout_name} "
            f"(now {policy.timeout} s) if the object is large or the link is slow"
        )
    else:
        knobs = f"{policy.retries_name} (now {policy.retries})"
        if policy.timeout is not None and policy.persists:
            knobs += (
                f" or {policy.timeout_name} (now {policy.timeout} s, the time each attempt keeps retrying)"
            )
        hint = f"check the endpoint and the network, or raise {knobs} if the store is overloaded"
    return type(error)(
        f"{action} of {url} failed {attempts} time(s); last error: {error}. Next: {hint}.", url
    )
