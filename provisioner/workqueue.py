"""A keyed work queue with delayed requeue and failure backoff, like client-go's rate-limited queue.

* A key waits in the queue at most once, however often it is added.
* A key is never processed by two workers at once; an add while it is processed marks it dirty
  and it runs again afterwards.
* ``add_after`` schedules a key; an earlier schedule wins over a later one.
* A handler reports an :class:`Outcome`. A failed one (or one that raised) is retried after the
  key's exponential backoff — half a second doubling to ``retry_max``, never sooner than the
  ``retry_after`` the failure carried — and after a token of a queue-wide bucket, so that many
  failing keys cannot hammer the cloud or the API server together. While a key backs off, adds
  (watch events) only make sure it runs when the backoff ends. Success resets the key's backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

#: First delay after a failure.
RETRY_BASE = 0.5


@dataclass(frozen=True)
class Outcome:
    #: Run again after this many seconds (None: only when the key is added again).
    requeue_after: float | None = None
    #: The reconcile did not get through; retry with the key's backoff.
    failed: bool = False
    #: The least the retry of a failure must wait (e.g. the cloud's Retry-After).
    retry_after: float | None = None


DONE = Outcome()


class Backoff(Generic[K]):
    """Per-key exponential backoff over consecutive failures."""

    def __init__(self, base: float = RETRY_BASE, cap: float = 300.0) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[K, int] = {}

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def next(self, key: K, floor: float | None = None) -> float:
        """Record one more failure of ``key``; the delay before its retry."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay = float(min(self.cap, self.base * 2 ** min(n, 32)))
        return max(delay, min(floor, self.cap)) if floor else delay

    def reset(self, key: K) -> None:
        self._failures.pop(key, None)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``reserve`` says how long to wait."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def reserve(self) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class WorkQueue(Generic[K]):
    def __init__(
        self,
        handler: Callable[[K], Awaitable[Outcome]],
        *,
        workers: int = 4,
        retry_max: float = 300.0,
        retry_rate: float = 10.0,
    ) -> None:
        self._handler = handler
        self._workers = workers
        self.backoff: Backoff[K] = Backoff(cap=retry_max)
        self._bucket = TokenBucket(retry_rate, retry_rate * 10)
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        #: Keys backing off after a failure, and until when (loop time).
        self._holds: dict[K, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, key: K) -> None:
        hold = self._holds.get(key)
        if hold is not None:
            wait = hold - asyncio.get_running_loop().time()
            if wait > 0:
                self._schedule_at(key, hold)
                return
            del self._holds[key]
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()
        if key in self._active:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._idle.clear()
            self._ready.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        self._schedule_at(key, asyncio.get_running_loop().time() + delay)

    def _schedule_at(self, key: K, due: float) -> None:
        current = self._timers.get(key)
        if current is not None and current[0] <= due:
            return
        if current is not None:
            current[1].cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = (due, loop.call_at(due, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self._holds.pop(key, None)
        self.add(key)

    def run_now(self, key: K) -> None:
        """Run ``key`` now, whatever its schedule or backoff says."""
        self._holds.pop(key, None)
        self.add(key)

    def forget(self, key: K) -> None:
        """Drop any scheduled run and the backoff of ``key`` (e.g. the object is gone)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()
        self._holds.pop(key, None)
        self.backoff.reset(key)

    def due_in(self, key: K) -> float | None:
        """Seconds until ``key`` runs by its schedule, None if it has none."""
        timer = self._timers.get(key)
        return None if timer is None else max(0.0, timer[0] - asyncio.get_running_loop().time())

    def scheduled(self) -> list[K]:
        return list(self._timers)

    def __len__(self) -> int:
        return len(self._queued) + len(self._active)

    async def wait_idle(self) -> None:
        """Until no key is queued or being processed (scheduled keys do not count)."""
        await self._idle.wait()

    def start(self) -> None:
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"workqueue-{i}"))

    async def stop(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                outcome = await self._handler(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconcile of %s failed", key)
                outcome = Outcome(failed=True)
            finally:
                self._active.discard(key)
            self._schedule(key, outcome)
            if not self._queued and not self._active:
                self._idle.set()

    def _schedule(self, key: K, outcome: Outcome) -> None:
        dirty = key in self._dirty
        self._dirty.discard(key)
        if outcome.failed:
            delay = max(self.backoff.next(key, outcome.retry_after), self._bucket.reserve())
            due = asyncio.get_running_loop().time() + delay
            self._holds[key] = due
            self._schedule_at(key, due)
            return
        self.backoff.reset(key)
        self._holds.pop(key, None)
        if dirty:
            self.add(key)  # changed while we worked: look at the new version now
        elif outcome.requeue_after is not None:
            self.add_after(key, outcome.requeue_after)
