"""SKU facts from Resource SKUs entries, remembered capacity failures, quota shortfalls, rate limit."""

from __future__ import annotations

import asyncio
import time

from azure.mgmt.compute.models import ResourceSku, Usage

from fakes import skus as catalog
from provisioner.cloud.azure.cache import TtlValue
from provisioner.cloud.azure.quota import QuotaChecker, UsageLimit, index_usages, shortfall
from provisioner.cloud.azure.ratelimit import TokenBucket
from provisioner.cloud.azure.skus import (
    UnavailableOfferings,
    index_skus,
    parse_resource_sku,
    to_instance_type,
)
from provisioner.cloud.errors import InsufficientCapacity


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sku(name: str, location: str) -> ResourceSku:
    info = catalog.get_sku(name)
    assert info is not None
    return ResourceSku(info.to_resource_sku(location))


def test_facts_of_a_gpu_size_with_a_zone_restriction() -> None:
    facts = parse_resource_sku(sku("Standard_NC24ads_A100_v4", "eastus"), "eastus")
    assert facts is not None
    assert (facts.family, facts.vcpus, facts.memory_gib, facts.gpus) == (
        "standardNCADSA100v4Family",
        24,
        220,
        1,
    )
    assert facts.zones == ("1", "2", "3")
    assert facts.restricted_zones == {"1"}
    assert facts.available_zones == ("2", "3")
    assert facts.available and facts.is_gpu
    assert not facts.usable_in_zone("1") and facts.usable_in_zone("2")


def test_location_restriction_makes_a_size_unavailable() -> None:
    facts = parse_resource_sku(sku("Standard_NC6s_v3", "westeurope"), "westeurope")
    assert facts is not None
    assert not facts.available and facts.restriction_reason == "NotAvailableForSubscription"
    assert not facts.usable_in_zone(None)


def test_index_skips_other_resource_types_and_is_case_insensitive() -> None:
    disk = ResourceSku({"resourceType": "disks", "name": "Premium_LRS", "locations": ["eastus"]})
    index = index_skus([disk, sku("Standard_D4s_v3", "eastus")], "eastus")
    assert list(index) == ["standard_d4s_v3"]
    assert index["standard_d4s_v3"].gpus == 0


def test_unavailable_offerings_expire() -> None:
    clock = FakeClock()
    u = UnavailableOfferings(60, clock)
    u.mark("Standard_NC24ads_A100_v4", ["2"])
    u.mark("Standard_D4s_v3")
    assert u.is_unavailable("standard_nc24ads_a100_v4", "2")
    assert not u.is_unavailable("Standard_NC24ads_A100_v4", "3")
    assert u.usable_zones("Standard_NC24ads_A100_v4", ["1", "2", "3"]) == ("1", "3")
    assert u.is_unavailable("Standard_D4s_v3")
    facts = parse_resource_sku(sku("Standard_NC24ads_A100_v4", "eastus"), "eastus")
    assert facts is not None
    it = to_instance_type(facts, "eastus", u)
    assert it.zones == ("eastus-3",) and it.available
    clock.now += 61
    assert not u.is_unavailable("Standard_D4s_v3") and len(u) == 0


def _usages() -> dict[str, UsageLimit]:
    return index_usages(
        [
            Usage(
                {
                    "name": {"value": "cores", "localizedValue": "Total Regional vCPUs"},
                    "currentValue": 10,
                    "limit": 100,
                    "unit": "Count",
                }
            ),
            Usage(
                {
                    "name": {
                        "value": "standardNCADSA100v4Family",
                        "localizedValue": "Standard NCADSA100v4 Family vCPUs",
                    },
                    "currentValue": 24,
                    "limit": 48,
                    "unit": "Count",
                }
            ),
            Usage(
                {
                    "name": {"value": "lowPriorityCores", "localizedValue": "Low"},
                    "currentValue": 0,
                    "limit": 8,
                    "unit": "Count",
                }
            ),
        ]
    )


def test_shortfall_names_family_needed_and_free() -> None:
    u = _usages()
    assert shortfall(u, "standardNCADSA100v4Family", 24, spot=False, location="eastus", vm_size="X") is None
    short = shortfall(u, "standardNCADSA100v4Family", 48, spot=False, location="eastus", vm_size="X")
    assert short is not None
    assert (short.family, short.vcpus_needed, short.vcpus_free, short.code) == (
        "standardNCADSA100v4Family",
        48,
        24,
        "QuotaExceeded",
    )
    assert "48 vCPUs" in short.message and "24 of 48 free" in short.message
    spot = shortfall(u, "standardNCADSA100v4Family", 24, spot=True, location="eastus", vm_size="X")
    assert spot is not None and spot.family == "lowPriorityCores"
    assert shortfall(u, "unknownFamily", 24, spot=False, location="eastus", vm_size="X") is None


async def test_quota_checker_rereads_a_short_answer_and_counts_own_creates() -> None:
    clock = FakeClock()
    calls = 0
    limit = 48

    async def load() -> dict[str, UsageLimit]:
        nonlocal calls
        calls += 1
        return {"fam": UsageLimit("fam", 24, limit)}

    q = QuotaChecker(load, ttl=60, recheck=5, location="eastus", clock=clock)
    await q.check("fam", 24, spot=False, vm_size="X", pool="p1")  # reserved for p1 at once
    clock.now += 1
    try:
        await q.check("fam", 24, spot=False, vm_size="X")
        raise AssertionError("expected a shortfall")
    except Exception as e:
        assert getattr(e, "vcpus_free", None) == 0
    assert calls == 1  # fresh cache: the short answer is trusted
    limit = 96
    clock.now += 10
    await q.check("fam", 24, spot=False, vm_size="X")  # older than recheck: read again, now fits
    assert calls == 2


def _checker(clock: FakeClock, usages: dict[str, UsageLimit], calls: list[int]) -> QuotaChecker:
    async def load() -> dict[str, UsageLimit]:
        calls.append(1)
        return dict(usages)

    return QuotaChecker(load, ttl=60, recheck=5, location="eastus", clock=clock)


async def test_a_refused_create_releases_its_reservation_and_a_settled_pool_its_own() -> None:
    clock, calls = FakeClock(), []
    q = _checker(clock, {"fam": UsageLimit("fam", 0, 48)}, calls)
    await q.check("fam", 24, spot=False, vm_size="X", pool="p1")
    await q.check("fam", 24, spot=False, vm_size="X", pool="p2")
    assert not await q.allows("fam", 24, spot=False, vm_size="X")  # 48 of 48 reserved
    q.release("p1")  # the PUT for p1 was refused
    assert await q.allows("fam", 24, spot=False, vm_size="X")


async def test_a_narrow_fit_is_read_again_before_it_is_trusted() -> None:
    clock, calls = FakeClock(), []
    usages = {"fam": UsageLimit("fam", 0, 48)}
    q = _checker(clock, usages, calls)
    await q.check("fam", 24, spot=False, vm_size="X", pool="p1")  # 48 free: room for two
    assert len(calls) == 1
    usages["fam"] = UsageLimit("fam", 24, 24)  # the limit was lowered (and p1 is counted by ARM now)
    clock.now += 3
    # The cache says 24 free after p1: a fit with no room to spare, from a 3 s old reading.
    try:
        await q.check("fam", 24, spot=False, vm_size="X", pool="p2")
        raise AssertionError("expected a shortfall")
    except InsufficientCapacity as e:
        assert e.vcpus_free == 0
    assert len(calls) == 2


async def test_ttl_value_shares_one_load() -> None:
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return calls

    v = TtlValue(load, 60)
    assert await asyncio.gather(v.get(), v.get(), v.get()) == [1, 1, 1]
    v.invalidate()
    assert await v.get() == 2


async def test_ttl_value_drops_a_load_that_an_invalidate_overtook() -> None:
    """A listing read before our own write must not be kept as if it were read after it."""
    release = asyncio.Event()
    loads: list[int] = []

    async def load() -> int:
        loads.append(len(loads) + 1)
        n = len(loads)
        if n == 1:
            await release.wait()  # the first load is slow ...
        return n

    v = TtlValue(load, 60)
    slow = asyncio.ensure_future(v.get())
    await asyncio.sleep(0)
    v.invalidate()  # ... and we wrote (created a pool) while it was under way
    release.set()
    assert await slow == 1  # its caller asked before the write: it gets what was read
    assert await v.get() == 2  # everyone after the write gets a fresh read
    assert loads == [1, 2]


async def test_token_bucket_bounds_the_rate() -> None:
    bucket = TokenBucket(rate=100, burst=2)
    start = time.monotonic()
    for _ in range(7):
        await bucket.acquire()
    elapsed = time.monotonic() - start
    assert elapsed >= 0.045  # 2 free, then 5 at 10 ms each
    assert bucket.waited_seconds > 0


def test_a_zero_quota_says_so_instead_of_zero_of_zero_free() -> None:
    usages = {"standardncadsa100v4family": UsageLimit("standardNCADSA100v4Family", 0, 0, "A100 vCPUs")}
    err = shortfall(
        usages,
        "standardNCADSA100v4Family",
        24,
        spot=False,
        location="eastus",
        vm_size="Standard_NC24ads_A100_v4",
    )
    assert err is not None
    assert "0 of 0" not in str(err)
    assert "limit is 0 vCPUs (request a quota increase)" in str(err)
