"""vCPU quota pre-flight: refuse a create the subscription's quota cannot hold, before any PUT."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from azure.mgmt.compute.models import Usage

from provisioner.cloud.azure.cache import Clock, TtlValue
from provisioner.cloud.errors import InsufficientCapacity

#: Compute usages names of the regional totals.
REGIONAL_VCPUS = "cores"
SPOT_VCPUS = "lowPriorityCores"


@dataclass(frozen=True)
class UsageLimit:
    name: str
    current: int
    limit: int
    display_name: str = ""

    @property
    def free(self) -> int:
        return max(self.limit - self.current, 0)


def index_usages(usages: Iterable[Usage]) -> dict[str, UsageLimit]:
    """Usages by their ``name.value`` (e.g. ``standardNCADSA100v4Family``, ``cores``), lower-cased."""
    out: dict[str, UsageLimit] = {}
    for u in usages:
        name = u.name.value if u.name else None
        if not name:
            continue
        display = (u.name.localized_value if u.name else None) or name
        out[name.lower()] = UsageLimit(name, int(u.current_value or 0), int(u.limit or 0), display)
    return out


def shortfall(
    usages: Mapping[str, UsageLimit], family: str, vcpus: int, *, spot: bool, location: str, vm_size: str
) -> InsufficientCapacity | None:
    """The quota that ``vcpus`` more vCPUs of ``family`` would exceed, as an error; None if they fit.

    On-demand VMs count against their family and the regional total; Spot VMs against the regional
    low-priority total only. A quota the usages API does not list is not checked.
    """
    names = [SPOT_VCPUS] if spot else [family, REGIONAL_VCPUS]
    for name in names:
        usage = usages.get(name.lower()) if name else None
        if usage is None or usage.free >= vcpus:
            continue
        return InsufficientCapacity(
            f"vCPU quota too low: {vm_size} needs {vcpus} vCPUs of {usage.name} ({usage.display_name}) "
            f"in {location}, "
            + (
                f"{usage.free} of {usage.limit} free ({usage.current} used)"
                if usage.limit
                else "where the limit is 0 vCPUs (request a quota increase)"
            ),
            "QuotaExceeded",
            instance_type=vm_size,
            family=usage.name,
            vcpus_needed=vcpus,
            vcpus_free=usage.free,
        )
    return None


#: A pending create is counted until its pool is seen settled, or at most this long.
PENDING_MAX_SECONDS = 600.0
#: A "fits" answer from a listing older than this is re-read first when the create would leave
#: less than one more such VM of room.
NARROW_FIT_MAX_AGE = 2.0


@dataclass(frozen=True)
class _Pending:
    pool: str
    quotas: tuple[str, ...]
    vcpus: int
    at: float


class QuotaChecker:
    """Cached compute usages of one region, plus the creates we sent that it may not show yet.

    The listing is reused for ``ttl`` seconds. An answer of "short" is re-read when the cache is
    older than ``recheck`` seconds, so a raised limit is noticed on the next attempt rather than
    after the whole ``ttl``; an answer of "fits, narrowly" (no room for one more such VM after this
    one) is re-read when older than a couple of seconds, so a lowered limit costs no rejected PUT.

    Every create that passes is reserved at once, with no await between the check and the
    reservation: concurrent launches see each other's vCPUs, not the same stale free count. A
    reservation counts until its pool is seen running, failed or gone (``settle``), or for
    ``PENDING_MAX_SECONDS``; a create the cloud refused is released.
    """

    def __init__(
        self,
        loader: Callable[[], Awaitable[dict[str, UsageLimit]]],
        *,
        ttl: float,
        recheck: float,
        location: str,
        clock: Clock = time.monotonic,
    ) -> None:
        self._cache: TtlValue[dict[str, UsageLimit]] = TtlValue(loader, ttl, clock)
        self._recheck = recheck
        self._location = location
        self._clock = clock
        self._pending: dict[str, _Pending] = {}

    def _with_pending(self, usages: Mapping[str, UsageLimit]) -> dict[str, UsageLimit]:
        now = self._clock()
        for pool, p in list(self._pending.items()):
            if now - p.at > PENDING_MAX_SECONDS:
                del self._pending[pool]
        out = dict(usages)
        for p in self._pending.values():
            for name in p.quotas:
                u = out.get(name)
                if u is not None:
                    out[name] = replace(u, current=u.current + p.vcpus)
        return out

    async def _short(
        self, family: str, vcpus: int, *, spot: bool, vm_size: str, max_age: float | None = None
    ) -> tuple[InsufficientCapacity | None, bool]:
        """(the shortfall if any, whether it fits only narrowly) by a listing at most ``max_age`` old."""
        usages = self._with_pending(await self._cache.get(max_age=max_age))
        short = shortfall(usages, family, vcpus, spot=spot, location=self._location, vm_size=vm_size)
        narrow = (
            short is None
            and shortfall(usages, family, 2 * vcpus, spot=spot, location=self._location, vm_size=vm_size)
            is not None
        )
        return short, narrow

    async def check(
        self, family: str, vcpus: int, *, spot: bool, vm_size: str, pool: str | None = None
    ) -> None:
        """Raise ``InsufficientCapacity`` naming the quota, vCPUs needed and free when short; else
        reserve the vCPUs for ``pool`` (when given) until it settles."""
        short, narrow = await self._short(family, vcpus, spot=spot, vm_size=vm_size)
        age = self._cache.age or 0
        if (short is not None and age >= self._recheck) or (narrow and age >= NARROW_FIT_MAX_AGE):
            short, _ = await self._short(family, vcpus, spot=spot, vm_size=vm_size, max_age=0)
        if short is not None:
            raise short
        if pool is not None:
            names = [SPOT_VCPUS] if spot else [family, REGIONAL_VCPUS]
            self._pending[pool] = _Pending(pool, tuple(n.lower() for n in names if n), vcpus, self._clock())

    async def allows(self, family: str, vcpus: int, *, spot: bool, vm_size: str) -> bool:
        """Whether one more such VM fits, by a listing at most ``recheck`` seconds old (no reservation)."""
        short, _ = await self._short(family, vcpus, spot=spot, vm_size=vm_size, max_age=self._recheck)
        return short is None

    def release(self, pool: str) -> None:
        """The create for ``pool`` was refused, or its pool settled: stop counting it ourselves."""
        self._pending.pop(pool, None)

    async def read(self) -> dict[str, UsageLimit]:
        """The usages listing (cached), as read: without our pending creates."""
        return await self._cache.get()

    def invalidate(self) -> None:
        self._cache.invalidate()
