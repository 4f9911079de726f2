"""The AKS provider, through the real Azure SDK, on answers the fake ARM corrupts (every kind of
``fakes.arm.corruption``): each call ends in a usable result or in the error taxonomy, a malformed
answer is ``Transient("MalformedResponse")``, never a decision (not found, invalid spec) and never
another exception; retried once the answers are sound again, the call does what it was asked to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fakes.arm import FakeArm, FakeArmConfig
from fakes.arm.corruption import KINDS
from provisioner.cloud import CapacityType, InstanceRequest, InstanceState, InvalidSpec, Throttled, Transient
from provisioner.cloud.azure import AzureCloud
from provisioner.cloud.errors import CloudError
from tests.integration.conftest import FAST, wait_for

A100 = "Standard_NC24ads_A100_v4"
MALFORMED = "MalformedResponse"
#: Kinds whose answer cannot be read (everything but the ones a careful client reads as they are).
UNREADABLE = frozenset(KINDS) - {"huge", "reset", "bad_retry_after"}
NO_CACHES = {
    "AZURE_LIST_CACHE_SECONDS": "0",
    "AZURE_SKU_CACHE_SECONDS": "0",
    "AZURE_USAGE_CACHE_SECONDS": "0",
    "AZURE_READ_ATTEMPTS": "2",
    "AZURE_ARM_RATE_LIMIT": "1000",
    "AZURE_ARM_RATE_BURST": "1000",
}


@pytest.fixture
def arm_config() -> FakeArmConfig:
    return FakeArmConfig(
        latency=FAST, page_size=2, quota={"*": {"standardNCADSA100v4Family": 960, "cores": 960}}
    )


@pytest.fixture
def cloud(providers: Callable[..., AzureCloud]) -> AzureCloud:
    return providers(**NO_CACHES)


def request(name: str) -> InstanceRequest:
    return InstanceRequest(
        claim_name=name,
        claim_uid=f"uid-{name}",
        name=name,
        instance_types=(A100,),
        labels={"kaito.sh/workspace": name},
    )


async def outcome(call: Awaitable[Any]) -> Any:
    """The call's result or the CloudError it raised; anything else fails the test."""
    try:
        return await asyncio.wait_for(call, 30)
    except CloudError as e:
        return e


def check_failure(kind: str, result: Any) -> None:
    """A corrupted answer may only be retried later: never a decision about the claim or pool."""
    if kind in UNREADABLE:
        assert isinstance(result, Transient) and result.code == MALFORMED, (kind, result)
        assert "Traceback" not in result.message
    elif isinstance(result, CloudError):
        assert isinstance(result, Transient | Throttled), (kind, result)
        if isinstance(result, Throttled):
            assert result.retry_after is None, "a Retry-After that is no number of seconds is ignored"


async def settle(cloud: AzureCloud, *names: str, running: bool = True) -> None:
    for name in names:
        await cloud.create(request(name))

    async def all_running() -> bool:
        states = [(await cloud.get(n)).state for n in names]
        return all(state == InstanceState.RUNNING for state in states)

    if running:
        await wait_for(all_running, 10)


def corrupt(arm: FakeArm, kind: str, method: str, path: str, **extra: Any) -> None:
    arm.add_fault({"action": "corrupt", "kinds": [kind], "method": method, "path": path, **extra})


@pytest.mark.parametrize("kind", KINDS)
async def test_reading_a_pool(cloud: AzureCloud, arm: FakeArm, kind: str) -> None:
    await settle(cloud, "wsa")  # Running: a pool still Creating could change between the reads
    sound = await cloud.get("wsa")
    corrupt(arm, kind, "GET", r"/agentPools/wsa$")
    result = await outcome(cloud.get("wsa"))
    check_failure(kind, result)
    if not isinstance(result, CloudError):
        assert result == sound
    arm.clear_faults()
    assert await cloud.get("wsa") == sound


LATER_PAGES = ("empty_200", "nested_not_object", "wrong_field_types")


@pytest.mark.parametrize(
    ("kind", "after"),
    [*((kind, 0) for kind in KINDS), *((kind, 1) for kind in LATER_PAGES)],
    ids=[*KINDS, *(f"{kind} on later pages" for kind in LATER_PAGES)],
)
async def test_listing_pools_is_all_or_nothing(
    cloud: AzureCloud, arm: FakeArm, kind: str, after: int
) -> None:
    await settle(cloud, "wsa", "wsb", "wsc", running=False)  # two pages
    corrupt(arm, kind, "GET", r"/agentPools$", after=after)
    result = await outcome(cloud.list())
    check_failure(kind, result)
    if not isinstance(result, CloudError):
        assert sorted(i.name for i in result) == ["wsa", "wsb", "wsc"]
    arm.clear_faults()
    assert sorted(i.name for i in await cloud.list()) == ["wsa", "wsb", "wsc"]


@pytest.mark.parametrize("kind", KINDS)
async def test_reading_sizes_and_quota(cloud: AzureCloud, arm: FakeArm, kind: str) -> None:
    corrupt(arm, kind, "GET", r"/skus$")
    corrupt(arm, kind, "GET", r"/usages$")
    skus = await outcome(cloud.instance_types())
    check_failure(kind, skus)
    if not isinstance(skus, CloudError):
        assert A100 in {t.name for t in skus}
    arm.clear_faults()
    corrupt(arm, kind, "GET", r"/usages$")
    check_failure(kind, await outcome(cloud.quota_allows([A100], CapacityType.ON_DEMAND)))
    arm.clear_faults()
    assert await cloud.quota_allows([A100], CapacityType.ON_DEMAND)


@pytest.mark.parametrize("kind", KINDS)
async def test_creating_a_pool_leaves_exactly_one(cloud: AzureCloud, arm: FakeArm, kind: str) -> None:
    corrupt(arm, kind, "PUT", r"/agentPools/")
    result = await outcome(cloud.create(request("wsa")))
    check_failure(kind, result)
    arm.clear_faults()
    again = await cloud.create(request("wsa"))  # what the work queue does next
    assert again.name == "wsa" and again.claim_uid == "uid-wsa"
    assert [p.name for p in arm.pools()] == ["wsa"]
    assert arm.pools()[0].properties["vmSize"] == A100


@pytest.mark.parametrize("kind", KINDS)
async def test_deleting_a_pool(cloud: AzureCloud, arm: FakeArm, kind: str) -> None:
    await settle(cloud, "wsa")
    corrupt(arm, kind, "DELETE", r"/agentPools/wsa$")
    result = await outcome(cloud.delete("wsa"))
    if kind.startswith("error_"):
        assert isinstance(result, Transient) and result.code == MALFORMED, result
    else:  # a DELETE is accepted by its status: the body of a 202 says nothing
        assert result is None or isinstance(result, Transient | Throttled), result
    arm.clear_faults()
    await cloud.delete("wsa")
    await wait_for(lambda: arm.pool("wsa") is None, 10)


@pytest.mark.parametrize("kind", KINDS)
async def test_adopting_a_pool(cloud: AzureCloud, arm: FakeArm, kind: str) -> None:
    await settle(cloud, "wsa")
    sound = await cloud.get("wsa")
    corrupt(arm, kind, "GET", r"/agentPools/wsa$")
    check_failure(kind, await outcome(cloud.adopt(sound, "wsa", "uid-other")))
    arm.clear_faults()
    assert arm.pool("wsa") is not None


async def test_an_unrecognised_bad_request_is_retried_not_terminal(cloud: AzureCloud, arm: FakeArm) -> None:
    arm.add_fault(
        {
            "action": "error",
            "method": "PUT",
            "path": "/agentPools/",
            "status": 400,
            "code": "BadRequest",
            "count": 1,
        }
    )
    result = await outcome(cloud.create(request("wsa")))
    assert isinstance(result, Transient) and result.code == "BadRequest"
    assert "BadRequest" in str(result)
    assert (await cloud.create(request("wsa"))).name == "wsa"
    arm.add_fault(
        {
            "action": "error",
            "method": "PUT",
            "path": "/agentPools/",
            "status": 400,
            "code": "InvalidParameter",
        }
    )
    assert isinstance(await outcome(cloud.create(request("wsb"))), InvalidSpec)
