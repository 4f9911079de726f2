"""Small time-based caches shared by the SKU, quota and listing code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

_T = TypeVar("_T")

Clock = Callable[[], float]


class TtlValue(Generic[_T]):
    """One value loaded on demand and reused for ``ttl`` seconds.

    Concurrent callers share a single load (one ARM call however many claims ask at once). A failed
    load is not cached, and neither is one that was under way when ``invalidate`` was called: what
    it read may predate the change that made the caller invalidate.
    """

    def __init__(
        self, loader: Callable[[], Awaitable[_T]], ttl: float, clock: Clock = time.monotonic
    ) -> None:
        self._loader = loader
        self._ttl = ttl
        self._clock = clock
        self._value: _T | None = None
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()
        self._generation = 0

    @property
    def age(self) -> float | None:
        """Seconds since the value was loaded, None if there is none."""
        return None if self._loaded_at is None else self._clock() - self._loaded_at

    def fresh(self) -> bool:
        age = self.age
        return age is not None and age < self._ttl

    def invalidate(self) -> None:
        self._loaded_at = None
        self._value = None
        self._generation += 1

    async def get(self, *, max_age: float | None = None) -> _T:
        """The value, loading it if older than ``ttl`` (or ``max_age`` when given)."""
        limit = self._ttl if max_age is None else min(max_age, self._ttl)
        age = self.age
        if age is not None and age < limit and self._value is not None:
            return self._value
        async with self._lock:
            age = self.age
            if age is not None and age < limit and self._value is not None:
                return self._value
            generation = self._generation
            value = await self._loader()
            if generation == self._generation:
                self._value = value
                self._loaded_at = self._clock()
            return value


class ExpiringSet:
    """Keys remembered for ``ttl`` seconds each (e.g. a size/zone that had no capacity)."""

    def __init__(self, ttl: float, clock: Clock = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._until: dict[Hashable, float] = {}

    def add(self, key: Hashable) -> None:
        if self._ttl > 0:
            self._until[key] = self._clock() + self._ttl

    def __contains__(self, key: Hashable) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if until <= self._clock():
            del self._until[key]
            return False
        return True

    def discard(self, key: Hashable) -> None:
        self._until.pop(key, None)

    def __len__(self) -> int:
        now = self._clock()
        return sum(1 for until in self._until.values() if until > now)
