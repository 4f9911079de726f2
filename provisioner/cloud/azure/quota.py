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
            f"in {location}, {usage.free} of {usage.limit} free ({usage.current} used)",
            "QuotaExceeded",
            instance_type=vm_size,
            family=usage.name,
            vcpus_needed=vcpus,
            vcpus_free=usage.free,
        )
    return None


class QuotaChecker:
    """Cached compute usages of one region.

    The listing is reused for ``ttl`` seconds. An answer of "short" is re-read when the cache is
    older than ``recheck`` seconds, so a raised limit is noticed on the next attempt rather than
    after the whole ``ttl``; our own successful creates are added to the cached usage so concurrent
    claims do not all pass on the same stale numbers.
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

    async def check(self, family: str, vcpus: int, *, spot: bool, vm_size: str) -> None:
        """Raise ``InsufficientCapacity`` naming the quota, vCPUs needed and free when short."""
        usages = await self._cache.get()
        short = shortfall(usages, family, vcpus, spot=spot, location=self._location, vm_size=vm_size)
        if short is not None and (self._cache.age or 0) >= self._recheck:
            usages = await self._cache.get(max_age=0)
            short = shortfall(usages, family, vcpus, spot=spot, location=self._location, vm_size=vm_size)
        if short is not None:
            raise short

    def record_create(self, family: str, vcpus: int, *, spot: bool) -> None:
        """Account for a pool we just created until the next listing shows it."""
        usages = self._cache.peek()
        if usages is None:
            return
        updated = dict(usages)
        for name in [SPOT_VCPUS] if spot else [family, REGIONAL_VCPUS]:
            u = updated.get(name.lower())
            if u is not None:
                updated[name.lower()] = replace(u, current=u.current + vcpus)
        self._cache.update(updated)

    def invalidate(self) -> None:
        self._cache.invalidate()
