"""The AKS provider with an identity that may only touch the cluster's agent pools (Contributor on
the AKS cluster, as Kaito's install guide grants), through the real Azure SDK against the fake ARM.

The fake answers the subscription-scope reads (Resource SKUs, compute usages) with 403
AuthorizationFailed, word for word as ARM does. Provisioning still works: the VM size is taken on
trust and AKS validates it on the PUT; the provider reports itself degraded, and recovers when the
role is granted, without a restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp
import pytest

from fakes.arm import FakeArm, FakeArmConfig
from fakes.arm.authorization import CLUSTER_SCOPE_ONLY, SKUS_READ, USAGES_READ
from provisioner.cloud import CapacityType, InstanceState, InsufficientCapacity, InvalidSpec, ProviderContext
from provisioner.cloud.azure import AzureCloud
from tests.integration.conftest import CLIENT_ID, FAST, SUBSCRIPTION, wait_for
from tests.integration.test_azure_provider import A100, A100_FAMILY, machine_request, pool_path, running

SKUS = "/providers/Microsoft.Compute/skus$"
USAGES = "/usages$"
#: Kept in the fake's catalog, not in the provider's table of GPU sizes.
UNLISTED = "Standard_D4s_v3"


@pytest.fixture
def arm_config() -> FakeArmConfig:
    return FakeArmConfig(latency=FAST, denied_actions=list(CLUSTER_SCOPE_ONLY))


def active(cloud: AzureCloud) -> dict[str, str]:
    return {d.reason: d.message for d in cloud.degradations() if d.active}


# --- the fake answers as ARM does ------------------------------------------------------------


async def test_the_fake_denies_subscription_reads_with_arms_exact_answer(
    arm: FakeArm, http: aiohttp.ClientSession
) -> None:
    token = arm.issue_token(client_id=CLIENT_ID)
    headers = {"Authorization": f"Bearer {token}"}
    sub = f"/subscriptions/{SUBSCRIPTION}"
    async with http.get(
        f"{sub}/providers/Microsoft.Compute/skus?api-version=2021-07-01&$filter=location eq 'eastus'",
        headers=headers,
    ) as r:
        assert r.status == 403
        assert r.headers["x-ms-failure-cause"] == "gateway"
        body = json.loads(await r.text())
    message = body["error"]["message"]
    assert body["error"]["code"] == "AuthorizationFailed"
    assert message.startswith(f"The client '{CLIENT_ID}' with object id '")
    assert message.endswith(
        f"' does not have authorization to perform action '{SKUS_READ}' over scope '{sub}' or the scope "
        "is invalid. If access was recently granted, please refresh your credentials."
    )
    async with http.get(
        f"{sub}/providers/Microsoft.Compute/locations/eastus/usages?api-version=2024-07-01", headers=headers
    ) as r:
        assert r.status == 403
        assert f"'{USAGES_READ}'" in (await r.json())["error"]["message"]

    async with http.post("/_fake/settings", json={"denied_actions": []}) as r:
        assert r.status == 200 and (await r.json())["denied_actions"] == []
    async with http.get(
        f"{sub}/providers/Microsoft.Compute/skus?api-version=2021-07-01", headers=headers
    ) as r:
        assert r.status == 200
    arm.reset()
    assert arm.authorizer.denied == list(CLUSTER_SCOPE_ONLY)


# --- the provider degrades --------------------------------------------------------------------


async def test_a_create_is_one_put_when_sku_and_usage_reads_are_denied(
    providers: Callable[..., AzureCloud], arm: FakeArm
) -> None:
    cloud = providers()
    arm.set_quota(A100_FAMILY, 240)
    assert active(cloud) == {}
    ok, detail = await cloud.check()
    assert (ok, detail) == (True, "ok")  # nothing denied is known before it is asked

    req = machine_request()
    inst = await cloud.create(req)
    assert inst.state == InstanceState.CREATING
    assert len(arm.requests("PUT", pool_path(req.name))) == 1
    stored = arm.pool(req.name)
    assert stored is not None and stored.properties["vmSize"] == A100

    denied = active(cloud)
    assert set(denied) == {"SkuReadDenied", "UsageReadDenied"}
    assert SKUS_READ in denied["SkuReadDenied"] and USAGES_READ in denied["UsageReadDenied"]
    for message in denied.values():
        assert f"/subscriptions/{SUBSCRIPTION}" in message
        assert "Reader on the subscription" in message and "custom role" in message

    ok, detail = await cloud.check()
    assert ok, detail
    assert detail.startswith("degraded: ")
    assert SKUS_READ in detail and USAGES_READ in detail

    # The size's facts come from the table of GPU sizes: the claim still gets its GPU capacity.
    await running(cloud, req.name)
    got = await cloud.get(req.name)
    assert got.capacity == {"cpu": "24", "memory": "230686720Ki", "nvidia.com/gpu": "1", "pods": "110"}
    assert {t.name: t.gpus for t in await cloud.instance_types()}[A100] == 1

    # More creates ask nothing again: a denial is not retried per claim.
    for _ in range(3):
        await cloud.create(machine_request())
    assert len(arm.requests("GET", SKUS)) == 1
    assert len(arm.requests("GET", USAGES, status=403)) >= 1
    assert len(arm.requests("PUT")) == 4


async def test_a_size_outside_the_table_is_taken_on_trust_and_aks_judges_it(
    providers: Callable[..., AzureCloud], arm: FakeArm
) -> None:
    cloud = providers()
    listed = machine_request(instance_type=UNLISTED, instance_types=(UNLISTED,))
    await cloud.create(listed)
    await running(cloud, listed.name)
    got = await cloud.get(listed.name)
    assert got.instance_type == UNLISTED
    assert got.capacity == {}, "no facts: capacity is left to the Node"

    typo = machine_request(instance_types=("Standard_NC24ads_A100_v9",))
    with pytest.raises(InsufficientCapacity) as info:
        await cloud.create(typo)
    assert info.value.code == "SkuNotAvailable"  # AKS's answer to the PUT, not ours
    assert len(arm.requests("PUT", pool_path(typo.name))) == 1


async def test_quota_is_left_to_aks_while_usages_are_denied(
    providers: Callable[..., AzureCloud], arm: FakeArm
) -> None:
    cloud = providers()
    arm.set_quota(A100_FAMILY, 12)
    req = machine_request()
    with pytest.raises(InsufficientCapacity) as info:
        await cloud.create(req)
    assert info.value.code == "QuotaExceeded"
    assert len(arm.requests("PUT", pool_path(req.name))) == 1, "refused by AKS, not by a pre-flight"
    # No reading of the quota: waiters are not woken by it (their capacity backoff decides).
    assert await cloud.quota_allows((A100,), CapacityType.ON_DEMAND) is False


async def test_granting_the_role_later_restores_the_pre_flight_without_a_restart(
    providers: Callable[..., AzureCloud], arm: FakeArm
) -> None:
    cloud = providers(AZURE_SKU_CACHE_SECONDS="0.2", AZURE_USAGE_CACHE_SECONDS="0.2")
    await cloud.create(machine_request())
    assert set(active(cloud)) == {"SkuReadDenied", "UsageReadDenied"}

    arm.deny()  # the role is granted

    async def recovered() -> bool:
        ok, detail = await cloud.check()
        return ok and detail == "ok"

    await wait_for(recovered, 5)
    assert active(cloud) == {}
    assert {d.reason for d in cloud.degradations()} == {"SkuReadDenied", "UsageReadDenied"}

    # The pre-flight is back: an unknown size and a short quota cost no PUT.
    puts = len(arm.requests("PUT"))
    with pytest.raises(InvalidSpec, match="unknown VM size"):
        await cloud.create(machine_request(instance_types=("Standard_NC24ads_A100_v9",)))
    arm.set_quota(A100_FAMILY, 12)
    with pytest.raises(InsufficientCapacity, match="vCPU quota too low"):
        await cloud.create(machine_request())
    assert len(arm.requests("PUT")) == puts

    arm.deny(SKUS_READ)  # and taken away again: noticed at the next listing (after the cache TTL)

    async def degraded_again() -> bool:
        await cloud.instance_types()
        return set(active(cloud)) == {"SkuReadDenied"}

    await wait_for(degraded_again, 5)


async def test_a_denial_is_asked_again_every_five_minutes_with_the_default_cache(
    make_env: Callable[..., dict[str, str]], arm: FakeArm
) -> None:
    now = [1000.0]
    cloud = AzureCloud(ProviderContext(env=make_env()), clock=lambda: now[0])
    arm.set_quota(A100_FAMILY, 240)
    try:
        await cloud.create(machine_request())
        assert len(arm.requests("GET", SKUS)) == 1
        arm.deny()
        now[0] += 299
        await cloud.check()
        await cloud.create(machine_request())
        assert len(arm.requests("GET", SKUS)) == 1, "not before the recheck interval"
        assert "SkuReadDenied" in active(cloud)
        now[0] += 2
        assert await cloud.check() == (True, "ok")
        assert len(arm.requests("GET", SKUS)) == 2
        assert len(arm.requests("GET", USAGES, status=200)) == 1
    finally:
        await cloud.close()
