"""The fake ARM server driven by the real Azure SDK (azure-mgmt-containerservice, azure-mgmt-compute,
azure-identity) over verified TLS: what the controller will see from Azure, and every injected fault."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity.aio import ClientSecretCredential
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.containerservice.aio import ContainerServiceClient
from azure.mgmt.containerservice.models import AgentPool

from fakes.arm import FakeArm, FakeArmConfig, FakeArmThread, PoolInfo
from fakes.arm.__main__ import load_observer
from tests.integration.conftest import (
    CLIENT_ID,
    CLUSTER,
    FAST,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    TENANT,
    make_aks_client,
    wait_for,
)

A100 = "Standard_NC24ads_A100_v4"  # 24 vCPUs, 1 GPU, family standardNCADSA100v4Family
A100_FAMILY = "standardNCADSA100v4Family"
T4 = "Standard_NC4as_T4_v3"  # 4 vCPUs, 1 GPU
POOLS = "/agentPools/"


def gpu_pool(vm_size: str = A100, **extra: Any) -> AgentPool:
    return AgentPool(
        vm_size=vm_size,
        count=1,
        mode="User",
        os_type="Linux",
        os_sku="Ubuntu",
        os_disk_size_gb=300,
        node_labels={"kaito.sh/workspace": "ws-demo", "karpenter.sh/provisioner-name": "default"},
        node_taints=["sku=gpu:NoSchedule"],
        tags={"managed-by": "gpu-provisioner", "claim": "ws0a1b2c3d4"},
        **extra,
    )


async def create(aks: ContainerServiceClient, name: str, pool: AgentPool | None = None) -> AgentPool:
    poller = await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, name, pool or gpu_pool())
    return await poller.result()


async def delete(aks: ContainerServiceClient, name: str) -> None:
    poller = await aks.agent_pools.begin_delete(RESOURCE_GROUP, CLUSTER, name)
    await poller.result()


async def usage_of(compute: ComputeManagementClient, name: str, location: str = "eastus") -> tuple[int, int]:
    async for usage in compute.usage.list(location):
        if usage.name.value == name:
            return usage.current_value, usage.limit
    raise AssertionError(f"no usage entry {name}")


# -- agent pool lifecycle ------------------------------------------------------------------------


async def test_create_get_list_delete(arm: FakeArm, aks: ContainerServiceClient) -> None:
    poller = await aks.agent_pools.begin_create_or_update(
        RESOURCE_GROUP, CLUSTER, "ws0a1b2c3d4", gpu_pool(availability_zones=["2"])
    )
    during = await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "ws0a1b2c3d4")
    assert during.provisioning_state == "Creating"
    created = await poller.result()

    assert created.provisioning_state == "Succeeded"
    assert created.name == "ws0a1b2c3d4"
    assert created.id.endswith(f"/managedClusters/{CLUSTER}/agentPools/ws0a1b2c3d4")
    # What the request carried comes back as sent ...
    assert created.vm_size == A100
    assert created.count == 1
    assert created.mode == "User"
    assert created.os_sku == "Ubuntu"
    assert created.os_disk_size_gb == 300
    assert created.availability_zones == ["2"]
    assert created.node_labels == {
        "kaito.sh/workspace": "ws-demo",
        "karpenter.sh/provisioner-name": "default",
    }
    assert created.node_taints == ["sku=gpu:NoSchedule"]
    assert created.tags == {"managed-by": "gpu-provisioner", "claim": "ws0a1b2c3d4"}
    # ... and the read-only fields are AKS'.
    assert created.scale_set_priority == "Regular"
    assert created.power_state.code == "Running"
    assert created.current_orchestrator_version == created.orchestrator_version
    assert created.node_image_version.startswith("AKSUbuntu-")
    assert created.e_tag

    got = await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "ws0a1b2c3d4")
    assert got.as_dict() == created.as_dict()

    await delete(aks, "ws0a1b2c3d4")
    with pytest.raises(ResourceNotFoundError) as err:
        await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "ws0a1b2c3d4")
    assert err.value.error is not None and err.value.error.code == "NotFound"
    # Deleting what is gone is a quiet 204.
    await delete(aks, "ws0a1b2c3d4")
    assert arm.requests("DELETE", POOLS)[-1].status == 204
    assert [r.status for r in arm.requests("PUT", POOLS)] == [201]


async def test_list_pages_through_next_link(arm: FakeArm, aks: ContainerServiceClient) -> None:
    names = ["wsa", "wsb", "wsc", "wsd", "wse"]
    await asyncio.gather(*(create(aks, n, gpu_pool(T4)) for n in names))
    before = arm.log.last_seq

    listed = [p.name async for p in aks.agent_pools.list(RESOURCE_GROUP, CLUSTER)]

    assert listed == names
    pages = arm.requests("GET", r"/agentPools$", since=before)
    assert len(pages) == 3  # page_size 2
    assert "$skiptoken=" in pages[1].query


async def test_update_changes_count_and_tags(arm: FakeArm, aks: ContainerServiceClient) -> None:
    pool = await create(aks, "wsupd", gpu_pool(T4))
    pool.count = 2
    pool.tags = {"managed-by": "gpu-provisioner", "extra": "1"}

    poller = await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, "wsupd", pool)
    assert (await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsupd")).provisioning_state == "Updating"
    updated = await poller.result()

    assert updated.provisioning_state == "Succeeded"
    assert updated.count == 2
    assert updated.tags == {"managed-by": "gpu-provisioner", "extra": "1"}
    assert [r.status for r in arm.requests("PUT", POOLS)] == [201, 200]


async def test_vm_size_cannot_change(aks: ContainerServiceClient) -> None:
    await create(aks, "wsimm", gpu_pool(T4))
    with pytest.raises(HttpResponseError) as err:
        await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, "wsimm", gpu_pool(A100))
    assert err.value.status_code == 400
    assert err.value.error.code == "PropertyChangeNotAllowed"


async def test_spot_pool_gets_aks_label_and_taint(aks: ContainerServiceClient) -> None:
    created = await create(aks, "wsspot", gpu_pool(T4, scale_set_priority="Spot"))
    assert created.scale_set_eviction_policy == "Delete"
    assert created.node_labels["kubernetes.azure.com/scalesetpriority"] == "spot"
    assert "kubernetes.azure.com/scalesetpriority=spot:NoSchedule" in created.node_taints
    # A read-modify-write sends AKS' own label back; that is accepted.
    created.tags = {"x": "y"}
    poller = await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, "wsspot", created)
    assert (await poller.result()).tags == {"x": "y"}


async def test_managed_cluster_get(aks: ContainerServiceClient) -> None:
    await create(aks, "wsmc", gpu_pool(T4))
    cluster = await aks.managed_clusters.get(RESOURCE_GROUP, CLUSTER)
    assert cluster.node_resource_group == f"MC_{RESOURCE_GROUP}_{CLUSTER}_eastus"
    assert cluster.location == "eastus"
    assert [p.name for p in cluster.agent_pool_profiles] == ["wsmc"]
    with pytest.raises(ResourceNotFoundError) as err:
        await aks.managed_clusters.get(RESOURCE_GROUP, "no-such-cluster")
    assert err.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError):
        await aks.agent_pools.get(RESOURCE_GROUP, "no-such-cluster", "wsmc")


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Ws1", "1abc", "abcdefghijklm", "ws-1", "ws_1"])
async def test_invalid_pool_names_are_refused(arm: FakeArm, aks: ContainerServiceClient, name: str) -> None:
    with pytest.raises(HttpResponseError) as err:
        await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, name, gpu_pool(T4))
    assert err.value.status_code == 400
    assert err.value.error.code == "InvalidParameter"
    assert err.value.error.target == "agentPoolProfile.name"
    assert arm.store.pools == {}


async def test_longest_valid_pool_name(aks: ContainerServiceClient) -> None:
    assert (await create(aks, "abcdefghijkl", gpu_pool(T4))).provisioning_state == "Succeeded"


@pytest.mark.parametrize(
    ("labels", "taints"),
    [
        ({"kubernetes.azure.com/mode": "user"}, ["sku=gpu:NoSchedule"]),
        ({"kubernetes.io/role": "gpu"}, ["sku=gpu:NoSchedule"]),
        ({"ok": "yes"}, ["sku=gpu:Sometimes"]),
        ({"bad key": "x"}, []),
    ],
)
async def test_reserved_labels_and_bad_taints_are_refused(
    aks: ContainerServiceClient, labels: dict[str, str], taints: list[str]
) -> None:
    pool = AgentPool(vm_size=T4, count=1, node_labels=labels, node_taints=taints)
    with pytest.raises(HttpResponseError) as err:
        await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, "wslbl", pool)
    assert err.value.error.code == "InvalidParameter"
    assert err.value.error.target in ("agentPoolProfile.nodeLabels", "agentPoolProfile.nodeTaints")


async def test_well_known_labels_are_allowed(aks: ContainerServiceClient) -> None:
    pool = AgentPool(
        vm_size=T4, count=1, node_labels={"node.kubernetes.io/exclude-from-external-load-balancers": "1"}
    )
    assert (await create(aks, "wsok", pool)).node_labels


@pytest.mark.parametrize(
    ("vm_size", "zones", "code"),
    [
        ("Standard_NC24ads_A100_v4", ["1"], "SkuNotAvailable"),  # restricted in eastus zone 1
        ("Standard_Nope_v9", None, "SkuNotAvailable"),  # not a size Azure has
        ("Standard_NC24ads_A100_v4", ["4"], "AvailabilityZoneNotSupported"),
    ],
)
async def test_unavailable_sizes_and_zones(
    aks: ContainerServiceClient, vm_size: str, zones: list[str] | None, code: str
) -> None:
    with pytest.raises(HttpResponseError) as err:
        await create(aks, "wssku", gpu_pool(vm_size, availability_zones=zones))
    assert err.value.status_code == 400
    assert err.value.error.code == code
    if code == "SkuNotAvailable":
        assert vm_size in err.value.error.message


@pytest.fixture
def small_cluster_config() -> FakeArmConfig:
    return FakeArmConfig(latency=FAST, max_pools_per_cluster=2)


async def test_pool_count_limit(tmp_path: Path, small_cluster_config: FakeArmConfig) -> None:
    async with FakeArm(small_cluster_config, state_dir=tmp_path / "arm") as arm2:
        aks2 = make_aks_client(arm2, _StaticToken(arm2.issue_token()))
        async with aks2:
            await create(aks2, "wsone", gpu_pool(T4))
            await create(aks2, "wstwo", gpu_pool(T4))
            with pytest.raises(HttpResponseError) as err:
                await create(aks2, "wsthree", gpu_pool(T4))
    assert err.value.error.code == "InvalidParameter"
    assert "cannot exceed 2" in err.value.error.message


class _StaticToken:
    """An async credential handing out one fixed token (for a second server in the same test)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None


# -- concurrency: one operation per pool ---------------------------------------------------------


async def test_writes_during_an_operation_get_409(
    arm: FakeArm, aks: ContainerServiceClient, http: Any
) -> None:
    arm.add_fault({"action": "stuck", "name": "wsbusy"})
    poller = await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, "wsbusy", gpu_pool(T4))

    with pytest.raises(ResourceExistsError) as put_err:
        await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, "wsbusy", gpu_pool(T4))
    with pytest.raises(ResourceExistsError) as del_err:
        await aks.agent_pools.begin_delete(RESOURCE_GROUP, CLUSTER, "wsbusy")
    for err in (put_err.value, del_err.value):
        assert err.status_code == 409
        assert err.error.code == "OperationNotAllowed"
        assert "(wsbusy - Creating) is in progress" in err.error.message
    assert (await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsbusy")).provisioning_state == "Creating"

    # The admin endpoint ends the stuck operation; the SDK poller then completes.
    pools = await (await http.get("/_fake/pools")).json()
    op_id = pools["pools"][0]["operation"]["id"]
    resp = await http.post(f"/_fake/operations/{op_id}", json={"status": "Succeeded"})
    assert resp.status == 200
    assert (await poller.result()).provisioning_state == "Succeeded"


# -- failures of the long-running operation ------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    ["AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest", "QuotaExceeded"],
)
async def test_failed_lro_surfaces_arm_code(arm: FakeArm, aks: ContainerServiceClient, code: str) -> None:
    arm.add_fault({"action": "fail", "vm_size": "Standard_NC24ads_*", "code": code, "count": 1})
    poller = await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, "wsfail", gpu_pool(A100))
    started = time.monotonic()
    with pytest.raises(HttpResponseError) as err:
        await poller.result()

    assert time.monotonic() - started >= FAST.create * 0.8  # fails late, after the create latency
    assert err.value.status_code == 200  # the last poll's status: read the code from the body
    assert err.value.error is not None and err.value.error.code == code
    pool = await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsfail")
    assert pool.provisioning_state == "Failed"
    # A failed pool holds no VMs; deleting it works, and the next create succeeds (count: 1).
    await delete(aks, "wsfail")
    assert (await create(aks, "wsfail", gpu_pool(A100))).provisioning_state == "Succeeded"


async def test_failed_lro_with_custom_message(arm: FakeArm, aks: ContainerServiceClient) -> None:
    arm.add_fault(
        {"action": "fail", "name": "ws*", "code": "VMExtensionProvisioningError", "message": "boom"}
    )
    with pytest.raises(HttpResponseError) as err:
        await create(aks, "wsext", gpu_pool(T4))
    assert (err.value.error.code, err.value.error.message) == ("VMExtensionProvisioningError", "boom")


@pytest.mark.parametrize("code", ["QuotaExceeded", "SkuNotAvailable", "AllocationFailed"])
async def test_create_rejected_at_once_by_fault(arm: FakeArm, aks: ContainerServiceClient, code: str) -> None:
    arm.add_fault({"action": "reject", "name": "wsrej*", "code": code})
    with pytest.raises(HttpResponseError) as err:
        await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, "wsrej1", gpu_pool(A100))
    assert err.value.status_code == 400
    assert err.value.error.code == code
    if code == "QuotaExceeded":
        assert "exceeding approved standardNCADSA100v4Family Cores quota" in err.value.error.message
        assert "Additional Required: 24" in err.value.error.message
    assert arm.store.pools == {}
    # Other names are not affected.
    assert (await create(aks, "wsother", gpu_pool(T4))).provisioning_state == "Succeeded"


async def test_stuck_pool_stays_creating(arm: FakeArm, aks: ContainerServiceClient) -> None:
    arm.add_fault({"action": "stuck", "vm_size": A100})
    await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, "wsstuck", gpu_pool(A100))
    # Two ordinary creates started afterwards finish one after the other, the stuck one does not.
    for name in ("wsnext1", "wsnext2"):
        assert (await create(aks, name, gpu_pool(T4))).provisioning_state == "Succeeded"
    assert (await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsstuck")).provisioning_state == "Creating"


async def test_operation_latency_fault(arm: FakeArm, aks: ContainerServiceClient) -> None:
    """Timed on the pool's state, not on the SDK's poller: that waits the Retry-After (1 s) between
    polls, coarser than the latencies compared here."""
    arm.add_fault({"action": "latency", "operation": "create", "name": "wsslow", "delay": 0.8})

    async def duration(name: str) -> float:
        poller = await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, name, gpu_pool(T4))
        started = time.monotonic()
        await wait_for(lambda: _state(arm, name) == "Succeeded")
        took = time.monotonic() - started
        assert (await poller.result()).provisioning_state == "Succeeded"
        return took

    assert await duration("wsslow") >= 0.75
    assert await duration("wsfast") < 0.75


def _state(arm: FakeArm, name: str) -> str | None:
    info = arm.pool(name)
    return None if info is None else info.provisioning_state


# -- quota -----------------------------------------------------------------------------------------


async def test_real_quota_check_and_usages(
    arm: FakeArm, aks: ContainerServiceClient, compute: ComputeManagementClient
) -> None:
    arm.set_quota(A100_FAMILY, 24)
    assert await usage_of(compute, A100_FAMILY) == (0, 24)
    cores_before, _ = await usage_of(compute, "cores")

    await create(aks, "wsq1", gpu_pool(A100))
    assert await usage_of(compute, A100_FAMILY) == (24, 24)
    assert (await usage_of(compute, "cores"))[0] == cores_before + 24

    with pytest.raises(HttpResponseError) as err:
        await create(aks, "wsq2", gpu_pool(A100))
    assert err.value.status_code == 400
    assert err.value.error.code == "QuotaExceeded"
    message = err.value.error.message
    assert "exceeding approved standardNCADSA100v4Family Cores quota" in message
    assert "Location: eastus, Current Limit: 24, Current Usage: 24, Additional Required: 24" in message
    assert "(Minimum) New Limit Required: 48" in message

    await delete(aks, "wsq1")
    assert await usage_of(compute, A100_FAMILY) == (0, 24)
    assert (await create(aks, "wsq2", gpu_pool(A100))).provisioning_state == "Succeeded"


async def test_spot_pools_use_low_priority_quota(
    arm: FakeArm, aks: ContainerServiceClient, compute: ComputeManagementClient
) -> None:
    arm.set_quota("lowPriorityCores", 4)
    await create(aks, "wsspot1", gpu_pool(T4, scale_set_priority="Spot"))
    assert (await usage_of(compute, "lowPriorityCores"))[0] == 4
    assert (await usage_of(compute, "standardNCASv3_T4Family"))[0] == 0
    with pytest.raises(HttpResponseError) as err:
        await create(aks, "wsspot2", gpu_pool(T4, scale_set_priority="Spot"))
    assert err.value.error.code == "QuotaExceeded"
    assert "exceeding approved lowPriorityCores Cores quota" in err.value.error.message


async def test_quota_admin_endpoint_and_baseline(
    arm: FakeArm, aks: ContainerServiceClient, http: Any
) -> None:
    resp = await http.post(
        "/_fake/quota",
        json={"location": "eastus", "limits": {A100_FAMILY: 48}, "baseline": {A100_FAMILY: 30}},
    )
    assert resp.status == 200
    report = {q["family"]: q for q in (await resp.json())["quotas"]}
    assert report[A100_FAMILY] == {"family": A100_FAMILY, "limit": 48, "used": 30}
    with pytest.raises(HttpResponseError) as err:
        await create(aks, "wsbase", gpu_pool(A100))
    assert "Current Limit: 48, Current Usage: 30, Additional Required: 24" in err.value.error.message


# -- Resource SKUs ---------------------------------------------------------------------------------


async def test_resource_skus_listing(compute: ComputeManagementClient) -> None:
    listed = [s async for s in compute.resource_skus.list(filter="location eq 'eastus'")]
    vms = {s.name: s for s in listed if s.resource_type == "virtualMachines"}
    assert any(s.resource_type != "virtualMachines" for s in listed)  # clients must filter

    a100 = vms[A100]
    caps = {c.name: c.value for c in a100.capabilities}
    assert (caps["GPUs"], caps["vCPUs"], caps["MemoryGB"]) == ("1", "24", "220")
    assert a100.family == A100_FAMILY
    assert a100.locations == ["eastus"]
    assert a100.location_info[0].zones == ["1", "2", "3"]
    (restriction,) = a100.restrictions
    assert restriction.type == "Zone"
    assert restriction.reason_code == "NotAvailableForSubscription"
    assert restriction.restriction_info.zones == ["1"]
    assert {c.name: c.value for c in vms["Standard_ND96asr_v4"].capabilities}["GPUs"] == "8"
    assert "GPUs" not in {c.name for c in vms["Standard_D4s_v3"].capabilities}

    everywhere = [s async for s in compute.resource_skus.list()]
    assert {s.locations[0] for s in everywhere} >= {"eastus", "westeurope"}
    ncv3_we = [s for s in everywhere if s.name == "Standard_NC6s_v3" and s.locations == ["westeurope"]]
    assert ncv3_we[0].restrictions[0].type == "Location"


async def test_usages_for_unknown_location(compute: ComputeManagementClient) -> None:
    with pytest.raises(HttpResponseError) as err:
        _ = [u async for u in compute.usage.list("marsnorth")]
    assert err.value.status_code == 404
    assert err.value.error.code == "LocationNotAvailableForResourceType"


# -- HTTP-level faults ------------------------------------------------------------------------------


async def test_throttled_request_is_retried_after_retry_after(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    arm.add_fault({"action": "throttle", "method": "PUT", "path": POOLS, "count": 1, "retry_after": 1})
    started = time.monotonic()
    created = await create(aks, "wsthr", gpu_pool(T4))

    assert created.provisioning_state == "Succeeded"
    puts = arm.requests("PUT", POOLS)
    assert [r.status for r in puts] == [429, 201]
    assert puts[1].timestamp - puts[0].timestamp >= 0.95
    assert time.monotonic() - started >= 1.0


async def test_throttle_seen_when_retries_run_out(arm: FakeArm, credential: Any) -> None:
    arm.add_fault(
        {"action": "throttle", "method": "GET", "path": r"/agentPools$", "count": 3, "retry_after": 1}
    )
    async with make_aks_client(arm, credential, retry_total=0) as client:
        with pytest.raises(HttpResponseError) as err:
            _ = [p async for p in client.agent_pools.list(RESOURCE_GROUP, CLUSTER)]
    assert err.value.status_code == 429
    assert err.value.error.code == "SubscriptionRequestsThrottled"
    assert err.value.response.headers["Retry-After"] == "1"


@pytest.mark.parametrize(("status", "code"), [(500, "InternalServerError"), (503, "ServiceUnavailable")])
async def test_server_errors(arm: FakeArm, credential: Any, status: int, code: str) -> None:
    arm.add_fault({"action": "error", "method": "GET", "path": POOLS, "status": status, "count": 1})
    async with make_aks_client(arm, credential, retry_total=0) as client:
        with pytest.raises(HttpResponseError) as err:
            await client.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsany")
        assert err.value.status_code == status
        assert err.value.error.code == code
        # The rule was for one call only.
        with pytest.raises(ResourceNotFoundError):
            await client.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsany")


async def test_server_error_is_retried_by_the_sdk(arm: FakeArm, aks: ContainerServiceClient) -> None:
    arm.add_fault({"action": "error", "method": "PUT", "path": POOLS, "status": 503, "count": 1})
    await create(aks, "ws503", gpu_pool(T4))
    assert [r.status for r in arm.requests("PUT", POOLS)] == [503, 201]


async def test_dropped_connection(arm: FakeArm, credential: Any) -> None:
    # aiohttp itself resends an idempotent request once when the connection dies, so it takes two
    # drops for the SDK (with its own retries off) to see the failure.
    arm.add_fault({"action": "drop", "method": "GET", "path": POOLS, "count": 2})
    async with make_aks_client(arm, credential, retry_total=0) as client:
        with pytest.raises((ServiceResponseError, ServiceRequestError)):
            await client.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsdrop")
    records = arm.requests("GET", POOLS)
    assert len(records) == 2
    assert all(r.dropped and r.fault is not None for r in records)


async def test_dropped_connection_is_retried_by_the_sdk(arm: FakeArm, aks: ContainerServiceClient) -> None:
    arm.add_fault({"action": "drop", "method": "PUT", "path": POOLS, "count": 2})
    assert (await create(aks, "wsdrop", gpu_pool(T4))).provisioning_state == "Succeeded"
    assert [r.status for r in arm.requests("PUT", POOLS)] == [0, 0, 201]


async def test_response_delay(arm: FakeArm, aks: ContainerServiceClient) -> None:
    arm.add_fault(
        {"action": "delay", "method": "GET", "path": "/managedClusters/[^/]+$", "delay": 0.5, "count": 1}
    )
    started = time.monotonic()
    await aks.managed_clusters.get(RESOURCE_GROUP, CLUSTER)
    assert time.monotonic() - started >= 0.5
    assert arm.requests("GET", "/managedClusters/[^/]+$")[-1].duration >= 0.5


async def test_fault_after_lets_first_calls_through(arm: FakeArm, aks: ContainerServiceClient) -> None:
    arm.add_fault({"action": "error", "method": "GET", "path": POOLS, "status": 500, "after": 2, "count": 1})
    for _ in range(2):
        with pytest.raises(ResourceNotFoundError):
            await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsnone")
    with pytest.raises(ResourceNotFoundError):  # third call: 500, retried by the SDK, then 404
        await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsnone")
    assert [r.status for r in arm.requests("GET", POOLS)] == [404, 404, 500, 404]


# -- auth ------------------------------------------------------------------------------------------


async def test_arm_requires_a_token_from_this_server(arm: FakeArm, http: aiohttp.ClientSession) -> None:
    url = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ContainerService/managedClusters/{CLUSTER}?api-version=2026-08-01"
    resp = await http.get(url)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "AuthenticationFailed"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")

    forged = arm.issue_token()[:-4] + "AAAA"
    resp = await http.get(url, headers={"Authorization": f"Bearer {forged}"})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "InvalidAuthenticationToken"

    resp = await http.get(url, headers={"Authorization": f"Bearer {arm.issue_token()}"})
    assert resp.status == 200

    resp = await http.get(url.split("?")[0], headers={"Authorization": f"Bearer {arm.issue_token()}"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "MissingApiVersionParameter"


async def test_workload_identity_token_request(
    arm: FakeArm, aks: ContainerServiceClient, credential: Any
) -> None:
    await aks.managed_clusters.get(RESOURCE_GROUP, CLUSTER)
    (token_call,) = arm.requests("POST", "/oauth2/v2.0/token")
    assert token_call.path == f"/{TENANT}/oauth2/v2.0/token"
    assert token_call.status == 200
    claims = arm.issuer.verify((await credential.get_token("https://management.azure.com/.default")).token)
    assert (claims.tenant_id, claims.client_id, claims.audience) == (
        TENANT,
        CLIENT_ID,
        "https://management.azure.com/",
    )


@pytest.fixture
def secret_config() -> FakeArmConfig:
    return FakeArmConfig(latency=FAST, clients={"app-1": "s3cret"})


async def test_client_secret_credential(tmp_path: Path, secret_config: FakeArmConfig) -> None:
    async with FakeArm(secret_config, state_dir=tmp_path / "arm") as arm2:
        common = {"authority": arm2.authority_host, "connection_verify": str(arm2.ca_path)}
        good = ClientSecretCredential(TENANT, "app-1", "s3cret", **common)
        bad = ClientSecretCredential(TENANT, "app-1", "wrong", **common)
        async with good, bad:
            async with make_aks_client(arm2, good) as client:
                cluster = await client.managed_clusters.get(RESOURCE_GROUP, CLUSTER)
                assert cluster.name == CLUSTER
            with pytest.raises(ClientAuthenticationError) as err:
                await bad.get_token("https://management.azure.com/.default")
            assert "AADSTS7000215" in str(err.value)


async def test_sync_msal_credential_uses_openid_discovery(
    tmp_path: Path, secret_config: FakeArmConfig
) -> None:
    from azure.identity import ClientSecretCredential as SyncClientSecretCredential

    async with FakeArm(secret_config, state_dir=tmp_path / "arm") as arm2:
        cred = SyncClientSecretCredential(
            TENANT,
            "app-1",
            "s3cret",
            authority=arm2.authority_host,
            connection_verify=str(arm2.ca_path),
            disable_instance_discovery=True,
        )
        # MSAL is synchronous: run it off the loop the server runs on.
        token = await asyncio.to_thread(cred.get_token, "https://management.azure.com/.default")
        assert arm2.issuer.verify(token.token).client_id == "app-1"
        assert arm2.requests("GET", r"/v2\.0/\.well-known/openid-configuration")


# -- request log, admin API, observers -------------------------------------------------------------


async def test_request_log_counts_calls_per_pool(
    arm: FakeArm, aks: ContainerServiceClient, http: Any
) -> None:
    await asyncio.gather(create(aks, "wsl1", gpu_pool(T4)), create(aks, "wsl2", gpu_pool(T4)))
    await delete(aks, "wsl1")

    assert len(arm.requests("PUT", r"/agentPools/wsl1$")) == 1
    assert len(arm.requests("PUT", POOLS)) == 2
    assert len(arm.requests("DELETE", POOLS)) == 1
    assert all(r.status in (200, 201, 202) for r in arm.requests(path=POOLS))

    resp = await http.get("/_fake/requests", params={"method": "PUT", "path": "/agentPools/wsl2$"})
    body = await resp.json()
    assert [(r["method"], r["status"]) for r in body["requests"]] == [("PUT", 201)]
    assert body["requests"][0]["query"] == "api-version=2026-08-01"
    # Admin calls themselves are not logged.
    assert not arm.requests(path="^/_fake/")


async def test_admin_faults_settings_and_reset(arm: FakeArm, aks: ContainerServiceClient, http: Any) -> None:
    resp = await http.post(
        "/_fake/faults",
        json={"faults": [{"type": "http", "action": "throttle", "path": "/nowhere"}, {"action": "stuck"}]},
    )
    assert resp.status == 201
    added = (await resp.json())["faults"]
    assert [f["type"] for f in added] == ["http", "pool"]
    assert (await http.post("/_fake/faults", json={"action": "explode"})).status == 400
    assert (await http.delete(f"/_fake/faults/{added[1]['id']}")).status == 200
    assert len((await (await http.get("/_fake/faults")).json())["faults"]) == 1

    resp = await http.post("/_fake/settings", json={"latency": {"create": 0.05}, "page_size": 1})
    assert (await resp.json())["latency"]["create"] == 0.05
    await create(aks, "wsadm", gpu_pool(T4))
    await create(aks, "wsadm2", gpu_pool(T4))
    assert len([p async for p in aks.agent_pools.list(RESOURCE_GROUP, CLUSTER)]) == 2
    assert len(arm.requests("GET", r"/agentPools$")) == 2  # one pool per page now

    assert (await http.post("/_fake/reset")).status == 200
    assert arm.store.pools == {} and len(arm.faults) == 0 and len(arm.log) == 0
    assert (await (await http.get("/_fake/settings")).json())["page_size"] == 2


class RecordingObserver:
    def __init__(self) -> None:
        self.events: list[tuple[str, PoolInfo]] = []

    async def on_pool_running(self, pool: PoolInfo) -> None:
        self.events.append(("running", pool))

    async def on_pool_deleted(self, pool: PoolInfo) -> None:
        self.events.append(("deleted", pool))


async def test_observer_hooks(arm: FakeArm, aks: ContainerServiceClient) -> None:
    observer = RecordingObserver()
    arm.add_observer(observer)

    await create(aks, "wsobs", gpu_pool(A100, availability_zones=["2", "3"]))
    await wait_for(lambda: len(observer.events) == 1)
    kind, info = observer.events[0]
    assert kind == "running"
    assert (info.name, info.vm_size, info.count, info.provisioning_state) == ("wsobs", A100, 1, "Succeeded")
    assert info.node_labels["kaito.sh/workspace"] == "ws-demo"
    assert info.node_taints == ("sku=gpu:NoSchedule",)
    assert info.node_resource_group == f"MC_{RESOURCE_GROUP}_{CLUSTER}_eastus"
    assert info.node_name(0) == f"aks-wsobs-{info.vmss_id}-vmss000000"
    assert info.provider_id(0) == (
        f"azure:///subscriptions/{SUBSCRIPTION}/resourceGroups/mc_{RESOURCE_GROUP}_{CLUSTER}_eastus"
        f"/providers/Microsoft.Compute/virtualMachineScaleSets/aks-wsobs-{info.vmss_id}-vmss/virtualMachines/0"
    )
    assert info.zone_of(0) == "eastus-2"

    await delete(aks, "wsobs")
    await wait_for(lambda: len(observer.events) == 2)
    assert observer.events[1][0] == "deleted" and observer.events[1][1].name == "wsobs"

    # A reset drops every pool; observers hear about it like a delete.
    await create(aks, "wsreset", gpu_pool(T4))
    arm.reset()
    await wait_for(lambda: len(observer.events) == 4)
    assert [(k, i.name) for k, i in observer.events[2:]] == [("running", "wsreset"), ("deleted", "wsreset")]


async def test_failing_observer_does_not_break_the_server(arm: FakeArm, aks: ContainerServiceClient) -> None:
    class Broken:
        calls = 0

        async def on_pool_running(self, pool: PoolInfo) -> None:
            Broken.calls += 1
            raise RuntimeError("simulator crashed")

        async def on_pool_deleted(self, pool: PoolInfo) -> None:
            raise RuntimeError("simulator crashed")

    arm.add_observer(Broken())
    await create(aks, "wsbrk", gpu_pool(T4))
    await wait_for(lambda: Broken.calls == 1)
    await delete(aks, "wsbrk")
    assert (await create(aks, "wsbrk2", gpu_pool(T4))).provisioning_state == "Succeeded"


def recording_observer_factory(kubeconfig: str | None) -> RecordingObserver:
    observer = RecordingObserver()
    observer.kubeconfig = kubeconfig  # type: ignore[attr-defined]
    return observer


def test_cli_observer_loading() -> None:
    observer = load_observer(f"{__name__}:recording_observer_factory", Path("/tmp/kubeconfig"))
    assert isinstance(observer, RecordingObserver)
    assert observer.kubeconfig == "/tmp/kubeconfig"  # type: ignore[attr-defined]
    with pytest.raises(SystemExit, match="cannot load observer factory"):
        load_observer("no_such_module_xyz:factory", None)
    with pytest.raises(SystemExit, match="MODULE:FACTORY"):
        load_observer("just_a_module", None)


# -- ways to run it ----------------------------------------------------------------------------------


def test_threaded_server_for_sync_callers(tmp_path: Path) -> None:
    with FakeArmThread(FakeArmConfig(latency=FAST), state_dir=tmp_path / "arm") as server:
        ctx = server.arm.client_ssl_context()
        with urllib.request.urlopen(f"{server.endpoint}/_fake/health", context=ctx, timeout=10) as resp:
            assert json.load(resp)["ok"] is True
        fault = server.call(lambda a: a.add_fault({"action": "stuck"}))
        assert fault.id in [f.id for f in server.call(lambda a: list(a.faults))]
    assert (tmp_path / "arm" / "ca.pem").exists()


def test_cli_prints_endpoint_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"latency": {"create": 0.1}, "faults": [{"action": "stuck", "name": "never"}]})
    )
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fakes.arm",
            "--port",
            "0",
            "--state-dir",
            str(state),
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while "READY" not in lines and time.monotonic() < deadline:
            line = proc.stdout.readline().strip()
            if not line:
                if proc.poll() is not None:
                    break
                continue
            key, _, value = line.partition("=")
            lines[key] = value
        assert "READY" in lines, proc.stderr.read() if proc.stderr else ""
        assert lines["ARM_ENDPOINT"].startswith("https://127.0.0.1:")
        assert lines["ARM_CA_BUNDLE"] == str(state / "ca.pem")
        assert (state / "endpoint.env").read_text().startswith(f"ARM_ENDPOINT={lines['ARM_ENDPOINT']}\n")
        import ssl

        ctx = ssl.create_default_context(cafile=lines["ARM_CA_BUNDLE"])
        with urllib.request.urlopen(f"{lines['ARM_ENDPOINT']}/_fake/faults", context=ctx, timeout=10) as resp:
            assert json.load(resp)["faults"][0]["name"] == "never"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
