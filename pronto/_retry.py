"""Retries with exponential backoff that defer to the server's retry hint."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pronto._errors import InferenceError

__all__ = ["RetryEvent", "RetryPolicy", "call_with_retries", "call_with_retries_async"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryEvent:
    """Handed to ``RetryPolicy.on_retry`` before each retry."""

    attempt: int  #: the attempt that failed, from 1
    error: InferenceError
    delay: float  #: seconds until the next attempt


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed call is tried again.

    The delay before retry *n* is ``initial_backoff * multiplier**(n-1)``, capped at
    ``max_backoff``, with ±``jitter`` randomisation; a server hint (``retry_after`` on the
    error) replaces it. A call never outlives its deadline: when the next delay would pass
    it, the last error is raised at once. Inference is idempotent, so a retry is safe.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2
    #: CANCELLED from the server: a stopping worker resets the calls its gRPC core had
    #: received but not started (a call cancelled on this side raises, unretried)
    retryable: frozenset[str] = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"})
    on_retry: Callable[[RetryEvent], None] | None = None

    def delay(self, attempt: int, error: InferenceError) -> float | None:
        """Seconds to wait before retrying after failed ``attempt``; None = do not retry."""
        if attempt >= self.max_attempts or error.code not in self.retryable:
            return None
        if error.http_status == 413 or "larger than max" in error.message:
            return None  # RESOURCE_EXHAUSTED for a request too large: it would fail again
        if error.retry_after is not None:
            return None if error.retry_after < 0 else error.retry_after
        backoff = min(self.initial_backoff * self.multiplier ** (attempt - 1), self.max_backoff)
        return backoff * (1 + self.jitter * (2 * random.random() - 1))


NO_RETRY = RetryPolicy(max_attempts=1)


def _next_delay(
    policy: RetryPolicy, attempt: int, error: InferenceError, deadline: float | None
) -> float | None:
    error.attempts = attempt
    delay = policy.delay(attempt, error)
    if delay is None or (deadline is not None and time.monotonic() + delay >= deadline):
        return None
    if policy.on_retry is not None:
        policy.on_retry(RetryEvent(attempt, error, delay))
    return delay


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise InferenceError("DEADLINE_EXCEEDED", "deadline passed before the call was sent")
    return left


def call_with_retries(
    call: Callable[[float | None], T], policy: RetryPolicy, timeout: float | None
) -> T:
    """``call(attempt_timeout)`` until it succeeds, the policy gives up or time runs out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    attempt = 1
    while True:
        try:
            return call(_remaining(deadline))
        except InferenceError as error:
            delay = _next_delay(policy, attempt, error, deadline)
            if delay is None:
                raise
        time.sleep(delay)
        attempt += 1


async def call_with_retries_async(
    call: Callable[[float | None], Awaitable[T]], policy: RetryPolicy, timeout: float | None
) -> T:
    """The asyncio form of :func:`call_with_retries`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    attempt = 1
    while True:
        try:
            return await call(_remaining(deadline))
        except InferenceError as error:
            delay = _next_delay(policy, attempt, error, deadline)
            if delay is None:
                raise
        await asyncio.sleep(delay)
        attempt += 1
