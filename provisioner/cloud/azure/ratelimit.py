"""A client-side token bucket bounding ARM requests per second, as an azure-core policy."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy

from provisioner.cloud.azure.cache import Clock


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. ``acquire`` waits for a token.

    Waiters are served in arrival order (one lock), so a burst of claims cannot starve each other.
    """

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = asyncio.Lock()
        self.waited_seconds = 0.0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.rate
                self.waited_seconds += wait
                await asyncio.sleep(wait)
                self._refill()
            self._tokens -= 1


class RateLimitPolicy(AsyncHTTPPolicy[Any, Any]):
    """Takes a token before every HTTP attempt (placed after the retry policy: retries pay too)."""

    def __init__(self, bucket: TokenBucket) -> None:
        super().__init__()
        self._bucket = bucket

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        await self._bucket.acquire()
        return await self.next.send(request)
