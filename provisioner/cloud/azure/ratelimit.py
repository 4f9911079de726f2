"""Client-side token buckets bounding ARM requests per second, as an azure-core policy.

ARM meters reads, writes and deletes in separate buckets per subscription; so does this policy
(``AZURE_ARM_RATE_*``, ``AZURE_ARM_WRITE_RATE_*``, ``AZURE_ARM_DELETE_RATE_*``). A request waits for
its token only briefly (``max_wait``): when the bucket is further behind than that, the request is
not sent and ``Deferred`` (code ``ClientRateLimited``, with the wait as Retry-After) comes back at
once, so that a reconcile never holds a worker while a backlog of other requests drains; its claim
is looked at again when a token is due.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy

from provisioner.cloud.azure.cache import Clock
from provisioner.cloud.errors import Deferred

#: The code of a request this process held back itself (ARM never saw it).
CLIENT_RATE_LIMITED = "ClientRateLimited"


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    ``acquire`` reserves the next token and sleeps until it is due; waiters are served in arrival
    order (a reservation is taken before the sleep), so a burst of claims cannot starve each other.
    """

    def __init__(
        self, rate: float, burst: int, clock: Clock = time.monotonic, *, max_wait: float = float("inf")
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_wait = max_wait
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self.waited_seconds = 0.0
        self.refused = 0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        """Take a token, waiting up to ``max_wait`` for it; raises ``Deferred`` (nothing taken)
        when it is due later than that."""
        self._refill()
        wait = max(0.0, (1 - self._tokens) / self.rate)
        if wait > self.max_wait:
            self.refused += 1
            raise Deferred(
                f"the client-side ARM rate limit ({self.rate:g}/s) has a backlog of {wait:.1f}s",
                CLIENT_RATE_LIMITED,
                retry_after=wait,
            )
        self._tokens -= 1  # reserved: later callers queue behind it
        if wait > 0:
            self.waited_seconds += wait
            await asyncio.sleep(wait)


_READS = frozenset({"GET", "HEAD"})

#: Writes (PUT, POST, PATCH, DELETE) on their way at once. The write gate runs after this policy,
#: as late as azure-core allows, but a connection may still be opened after it: a replica paused
#: while a burst is being sent could send at most this many writes after it resumes, when another
#: replica may lead (the rest wait here, before the gate, and are refused by it).
MAX_WRITES_IN_FLIGHT = 4


class RateLimitPolicy(AsyncHTTPPolicy[Any, Any]):
    """Takes a token of the request's kind before every HTTP attempt (placed after the retry
    policy: retries pay too). ``writes`` is for PUT, POST and PATCH, ``deletes`` for DELETE; at most
    ``MAX_WRITES_IN_FLIGHT`` writes are under way at once."""

    def __init__(
        self,
        reads: TokenBucket,
        writes: TokenBucket | None = None,
        deletes: TokenBucket | None = None,
        *,
        in_flight: asyncio.Semaphore | None = None,
    ) -> None:
        super().__init__()
        self._reads = reads
        self._writes = writes or reads
        self._deletes = deletes or self._writes
        self._in_flight = in_flight or asyncio.Semaphore(MAX_WRITES_IN_FLIGHT)

    def copy(self) -> RateLimitPolicy:
        """A policy over the same buckets and write slots (for another client's pipeline)."""
        return RateLimitPolicy(self._reads, self._writes, self._deletes, in_flight=self._in_flight)

    def bucket(self, method: str) -> TokenBucket:
        method = method.upper()
        if method in _READS:
            return self._reads
        return self._deletes if method == "DELETE" else self._writes

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        method = request.http_request.method.upper()
        await self.bucket(method).acquire()
        if method in _READS:
            return await self.next.send(request)
        async with self._in_flight:
            return await self.next.send(request)
