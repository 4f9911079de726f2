"""A keyed work queue with delayed requeue, like client-go's rate-limited workqueue.

* A key waits in the queue at most once, however often it is added.
* A key is never processed by two workers at once; an add while it is processed marks it dirty
  and it runs again afterwards.
* ``add_after`` schedules a key; an earlier schedule wins over a later one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, handler: Callable[[K], Awaitable[float | None]], *, workers: int = 4) -> None:
        """``handler(key)`` returns seconds until the key should run again, or None."""
        self._handler = handler
        self._workers = workers
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: K) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()
        if key in self._active:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        due = time.monotonic() + delay
        current = self._timers.get(key)
        if current is not None and current[0] <= due:
            return
        if current is not None:
            current[1].cancel()
        handle = asyncio.get_running_loop().call_later(delay, self._fire, key)
        self._timers[key] = (due, handle)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: K) -> None:
        """Drop any scheduled run of ``key`` (e.g. the object is gone)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()

    def __len__(self) -> int:
        return len(self._queued) + len(self._active)

    @property
    def scheduled(self) -> int:
        return len(self._timers)

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
            again: float | None = None
            try:
                again = await self._handler(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconcile of %s failed; retrying in 5s", key)
                again = 5.0
            finally:
                self._active.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif again is not None:
                self.add_after(key, again)
