"""Small time-based caches shared by the SKU, quota and listing code, and what the listings say of
pool names."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
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


class PoolNames:
    """Which agent pool names may exist, from this process's own listings and writes.

    A name that is neither in the latest listing nor written by us since that listing began cannot
    exist — unless someone else created it meanwhile, which the create-only PUT that follows
    catches (412). So a create needs no GET of its own to find out whether an earlier attempt, or an
    earlier process, already made the pool.
    """

    def __init__(self) -> None:
        self._listed: frozenset[str] | None = None
        self._written: dict[str, int] = {}  # name -> sequence number of our latest write
        self._seq = 0

    def listing_started(self) -> int:
        self._seq += 1
        return self._seq

    def listed(self, started: int, names: Iterable[str]) -> None:
        """A listing that began at ``started`` (``listing_started``) returned ``names``."""
        self._listed = frozenset(names)
        self._written = {n: seq for n, seq in self._written.items() if seq >= started}

    def written(self, name: str) -> None:
        """We are about to write ``name`` (it may exist from now on, whatever the answer)."""
        self._seq += 1
        self._written[name] = self._seq

    @property
    def listed_once(self) -> bool:
        return self._listed is not None

    def surely_absent(self, name: str) -> bool:
        return self._listed is not None and name not in self._listed and name not in self._written
