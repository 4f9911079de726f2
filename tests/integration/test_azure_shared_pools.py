"""Shared agent pools (AZURE_POOL_STRATEGY=shared) through the real Azure SDK against the fake ARM:
claims of one shape share a pool, arrivals are batched into one scale PUT, deleted claims' nodes
are removed with one deleteMachines each batch, and a new provider asks for nothing already there."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest

from fakes.arm import FakeArm, FakeArmConfig
from provisioner.claims.model import Claim
from provisioner.cloud import InstanceRequest, InstanceState, InsufficientCapacity
from provisioner.cloud.azure import AzureCloud
from provisioner.cloud.types import TAG_CLAIM_UID, TAG_SHARED
from provisioner.gc import GarbageCollector
from provisioner.lifecycle.result import Event
from provisioner.metrics import Metrics
from tests.integration.conftest import FAST, wait_for
from tests.integration.test_azure_provider import H100, machine_request

POOLS = r"/agentPools/[^/]+$"


@pytest.fixture
def arm_config() -> FakeArmConfig:
    return FakeArmConfig(latency=FAST, page_size=2, lro_retry_after=None)


A100_FAMILY = "standardNCADSA100v4Family"


@pytest.fixture(autouse=True)
def room_for_ten(arm: FakeArm) -> None:
    arm.set_quota(A100_FAMILY, 24 * 10)


@pytest.fixture
def shared(providers: Callable[..., AzureCloud]) -> AzureCloud:
    return providers(AZURE_POOL_STRATEGY="shared", AZURE_SHARED_BATCH_SECONDS="0.2")


def claims(n: int, **kw: object) -> list[InstanceRequest]:
    base = machine_request(**kw)
    return [replace(base, claim_name=f"c{i}", claim_uid=f"uid-{i}", name=f"c{i}") for i in range(n)]


async def grown_to(cloud: AzureCloud, arm: FakeArm, name: str, count: int) -> None:
    async def done() -> bool:
        pool = arm.pool(name)
        return pool is not None and pool.provisioning_state == "Succeeded" and len(pool.instances()) == count

    await wait_for(done, 10)


async def test_claims_of_one_shape_share_a_pool_grown_by_one_put_per_batch(
    shared: AzureCloud, arm: FakeArm
) -> None:
    requests = claims(5)
    instances = [await shared.create(r) for r in requests]
    names = {i.name for i in instances}
    assert len(names) == 1 and all(i.shared and i.state == InstanceState.CREATING for i in instances)
    (name,) = names
    assert shared.shares_instance(name) and not shared.shares_instance(requests[0].name)
    assert not arm.requests("PUT"), "assigning a pool writes nothing"

    for n in range(1, 6):  # the claims ask one after another, each for the count it knows of
        await shared.want_nodes(name, n)
    await grown_to(shared, arm, name, 5)
    puts = arm.requests("PUT", POOLS)
    assert [r.status for r in puts] == [201], "one create for the whole batch"
    pool = arm.pool(name)
    assert pool is not None and pool.count == 5
    assert pool.tags[TAG_SHARED] == "true" and TAG_CLAIM_UID not in pool.tags
    assert "kaito.sh/workspace" not in pool.node_labels, "claim labels go on the Node, not the pool"

    # Three more arrive while nothing runs: one scale PUT to 8.
    for n in range(6, 9):
        await shared.want_nodes(name, n)
    await grown_to(shared, arm, name, 8)
    assert [r.status for r in arm.requests("PUT", POOLS)] == [201, 200]

    # Asking for what is there sends nothing.
    since = arm.log.last_seq
    assert (await shared.want_nodes(name, 8)).state == InstanceState.RUNNING
    assert not arm.requests("PUT", since=since)


async def test_another_shape_gets_another_pool(shared: AzureCloud) -> None:
    a100 = await shared.create(claims(1)[0])
    h100 = await shared.create(claims(1, instance_type=H100)[0])
    spot = await shared.create(replace(claims(1)[0], claim_uid="uid-spot", taints=()))
    assert len({a100.name, h100.name, spot.name}) == 3


async def test_a_full_pool_sends_claims_to_the_next_one(providers: Callable[..., AzureCloud]) -> None:
    cloud = providers(AZURE_POOL_STRATEGY="shared", AZURE_SHARED_POOL_MAX_NODES="2")
    names = [(await cloud.create(r)).name for r in claims(5)]
    assert names[0] == names[1] != names[2] == names[3] != names[4]
    assert names[2].endswith("01") and names[4].endswith("02")
    again = await cloud.create(claims(1)[0])
    assert again.name == names[0], "a claim keeps the pool it was given"


async def test_deleted_claims_lose_exactly_their_machines_in_one_call(
    shared: AzureCloud, arm: FakeArm
) -> None:
    name = (await shared.create(claims(1)[0])).name
    await shared.want_nodes(name, 4)
    await grown_to(shared, arm, name, 4)
    pool = arm.pool(name)
    assert pool is not None
    machines = pool.machine_names()
    leaving = [machines[1], machines[3]]

    assert not await shared.remove_nodes(name, leaving[:1])
    assert not await shared.remove_nodes(name, leaving[1:])
    assert shared.leaving(name) == frozenset(leaving)

    async def removed() -> bool:
        return await shared.remove_nodes(name, leaving)

    await wait_for(removed, 10)
    deletes = arm.requests("POST", r"/deleteMachines$")
    assert len(deletes) == 1, "both removals went out in one deleteMachines"
    after = arm.pool(name)
    assert after is not None and after.machine_names() == [machines[0], machines[2]] and after.count == 2
    # Removing what is already gone is done at once, with one listing and no write.
    since = arm.log.last_seq
    await wait_for(lambda: shared.remove_nodes(name, leaving[:1]), 5)
    assert not arm.requests("POST", r"/deleteMachines$", since=since)


async def test_a_new_provider_asks_for_what_exists_and_sends_nothing(
    providers: Callable[..., AzureCloud], shared: AzureCloud, arm: FakeArm
) -> None:
    name = (await shared.create(claims(1)[0])).name
    await shared.want_nodes(name, 3)
    await grown_to(shared, arm, name, 3)
    await shared.close()

    successor = providers(AZURE_POOL_STRATEGY="shared", AZURE_SHARED_BATCH_SECONDS="0")
    since = arm.log.last_seq
    assert (await successor.create(claims(3)[2])).name == name
    await successor.want_nodes(name, 3)

    async def read_back() -> bool:
        return (await successor.want_nodes(name, 3)).state == InstanceState.RUNNING

    await wait_for(read_back, 5)
    assert not arm.requests("PUT", since=since) and not arm.requests("POST", r"/deleteMachines$", since=since)


async def test_a_refused_scale_is_told_to_the_claims_then_tried_again(
    shared: AzureCloud, arm: FakeArm
) -> None:
    arm.set_quota(A100_FAMILY, 24)
    name = (await shared.create(claims(1)[0])).name
    await shared.want_nodes(name, 1)
    await grown_to(shared, arm, name, 1)
    await shared.want_nodes(name, 2)

    async def refused() -> bool:
        try:
            await shared.want_nodes(name, 2)
        except InsufficientCapacity as e:
            return e.code == "QuotaExceeded"
        return False

    await wait_for(refused, 10)
    assert arm.pool(name) is not None and len(arm.requests("PUT", POOLS)) == 2

    arm.set_quota(A100_FAMILY, 48)  # room again: the claims' next ask (after the hold) grows it


async def test_only_shared_pools_are_shared(providers: Callable[..., AzureCloud]) -> None:
    dedicated = providers()
    request = claims(1)[0]
    instance = await dedicated.create(request)
    assert instance.name == request.name and not instance.shared
    assert not dedicated.shares_instance(instance.name)


class _NoClaims:
    """Garbage collection's view of the claims: none exist."""

    async def list_claims(self) -> list[Claim]:
        return []

    def instance_of(self, claim: Claim) -> str:
        return claim.name

    def is_ours(self, claim: Claim) -> bool:
        return True

    async def delete_claim(self, claim: Claim, why: Event) -> None:
        raise AssertionError("no claim to delete")

    def observe_states(self) -> None:
        return None


async def test_an_emptied_shared_pool_is_collected_after_the_grace_period(
    shared: AzureCloud, arm: FakeArm
) -> None:
    name = (await shared.create(claims(1)[0])).name
    await shared.want_nodes(name, 1)
    await grown_to(shared, arm, name, 1)
    pool = arm.pool(name)
    assert pool is not None
    await wait_for(lambda: shared.remove_nodes(name, pool.machine_names()), 10)

    gc = GarbageCollector(_NoClaims(), shared, Metrics(), "azure", interval=1, grace=0.3)
    first = await gc.collect()
    assert first.delete_instances == (), "not before the grace period"
    await asyncio.sleep(0.4)
    assert (await gc.collect()).delete_instances == (name,)
    await wait_for(lambda: arm.pool(name) is None, 10)
