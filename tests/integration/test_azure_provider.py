"""The AKS provider through the real Azure SDK (and azure-identity) against the fake ARM server.

Assertions are on what the fake received and stored (request log, pools, quota), not on the
provider's own objects, except where the returned value is the behaviour under test.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fakes import kaito
from fakes.arm import FakeArm, FakeArmConfig
from provisioner.cloud import (
    CapacityType,
    Deferred,
    InstanceConflict,
    InstanceRequest,
    InstanceState,
    InsufficientCapacity,
    InvalidSpec,
    NotFound,
    ProviderContext,
    ProviderLoadError,
    Taint,
    Throttled,
    Transient,
    load_provider,
)
from provisioner.cloud.azure import AzureCloud, ConfigError
from provisioner.cloud.azure.labels import TAG_CLUSTER
from provisioner.cloud.types import MANAGED_BY_VALUE, TAG_CLAIM_NAME, TAG_CLAIM_UID, TAG_MANAGED_BY
from tests.integration.conftest import (
    CLIENT_ID,
    CLUSTER,
    FAST,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    wait_for,
)

A100 = "Standard_NC24ads_A100_v4"  # eastus: zone 1 restricted for the subscription
H100 = "Standard_NC40ads_H100_v5"
A100_FAMILY = "standardNCADSA100v4Family"
POOLS = r"/agentPools/"


def pool_path(name: str) -> str:
    return rf"/agentPools/{name}$"


@pytest.fixture
def arm_config() -> FakeArmConfig:
    return FakeArmConfig(latency=FAST, page_size=2)


@pytest.fixture
def cloud(providers: Callable[..., AzureCloud]) -> AzureCloud:
    return providers()


def machine_request(**kw: Any) -> InstanceRequest:
    """What the lifecycle makes of kaito.kaito_machine()."""
    m = kaito.kaito_machine(instance_type=kw.pop("instance_type", A100))
    spec = m["spec"]
    fields: dict[str, Any] = {
        "claim_name": m["metadata"]["name"],
        "claim_uid": f"uid-{m['metadata']['name']}",
        "name": m["metadata"]["name"],
        "instance_types": (spec["requirements"][0]["values"][0],),
        "labels": m["metadata"]["labels"],
        "taints": tuple(Taint(t["key"], t["value"], t["effect"]) for t in spec["taints"]),
        "os_disk_size_gib": 120,
    }
    fields.update(kw)
    return InstanceRequest(**fields)


def nodeclaim_request(**kw: Any) -> InstanceRequest:
    """What the lifecycle makes of kaito.kaito_nodeclaim() (v0.7+, image family annotation)."""
    nc = kaito.kaito_nodeclaim(instance_type=kw.pop("instance_type", A100), image_family="azurelinux")
    fields: dict[str, Any] = {
        "claim_name": nc["metadata"]["name"],
        "claim_uid": f"uid-{nc['metadata']['name']}",
        "name": nc["metadata"]["name"],
        "instance_types": (A100,),
        "labels": nc["metadata"]["labels"],
        "taints": tuple(Taint(t["key"], t["value"], t["effect"]) for t in nc["spec"]["taints"]),
        "os_disk_size_gib": 120,
        "image_family": "azurelinux",
    }
    fields.update(kw)
    return InstanceRequest(**fields)


def ownership(req: InstanceRequest) -> dict[str, str]:
    return {
        TAG_CLUSTER: CLUSTER,
        TAG_MANAGED_BY: MANAGED_BY_VALUE,
        TAG_CLAIM_NAME: req.claim_name,
        TAG_CLAIM_UID: req.claim_uid,
    }


async def running(cloud: AzureCloud, name: str) -> None:
    async def is_running() -> bool:
        return (await cloud.get(name)).state == InstanceState.RUNNING

    await wait_for(is_running, 5)


# --- mapping, as the fake received it -------------------------------------------------------


async def test_kaito_machine_maps_to_the_expected_pool(cloud: AzureCloud, arm: FakeArm) -> None:
    req = machine_request()
    inst = await cloud.create(req)
    assert inst.state == InstanceState.CREATING
    assert inst.name == req.name  # Kaito's "ws" + 9 hex is a valid pool name

    stored = arm.pool(req.name)
    assert stored is not None
    p = stored.properties
    assert (p["count"], p["vmSize"], p["type"], p["osType"], p["mode"]) == (
        1,
        A100,
        "VirtualMachineScaleSets",
        "Linux",
        "User",
    )
    assert p["nodeLabels"] == {
        "karpenter.sh/provisioner-name": "default",
        "kaito.sh/machine-type": "gpu",
        "kaito.sh/workspace": kaito.DEFAULT_WORKSPACE,
        "kaito.sh/workspacenamespace": kaito.DEFAULT_WORKSPACE_NAMESPACE,
    }
    assert p["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert p["osDiskSizeGB"] == 120
    assert p["osSKU"] == "Ubuntu"  # not asked: AKS default
    assert p["tags"] == ownership(req)
    assert "availabilityZones" not in p and p["scaleSetPriority"] == "Regular"
    assert len(arm.requests("PUT", pool_path(req.name))) == 1

    await running(cloud, req.name)
    got = await cloud.get(req.name)
    assert got.instance_type == A100 and got.zone == "0"
    assert got.capacity == {"cpu": "24", "memory": "230686720Ki", "nvidia.com/gpu": "1", "pods": "110"}
    assert got.image_id == stored.node_image_version
    assert got.claim_uid == req.claim_uid
    assert got.labels["kubernetes.azure.com/agentpool"] == req.name


async def test_kaito_nodeclaim_maps_to_the_expected_pool(cloud: AzureCloud, arm: FakeArm) -> None:
    base = nodeclaim_request()
    req = nodeclaim_request(
        name=base.name,
        claim_name=base.claim_name,
        claim_uid=base.claim_uid,
        labels={
            **base.labels,
            "kubernetes.azure.com/scalesetpriority": "spot",
            "kubernetes.io/role": "agent",
        },
        zones=("eastus-2",),
        tags={"team": "ml"},
    )
    warnings = cloud.warnings(req)
    assert [w for w in warnings if "kubernetes.azure.com/scalesetpriority" in w]
    assert not [w for w in warnings if "kubernetes.io/role" in w]

    await cloud.create(req)
    stored = arm.pool(req.name)
    assert stored is not None
    p = stored.properties
    assert p["nodeLabels"] == {
        "karpenter.sh/nodepool": "kaito",
        "kaito.sh/machine-type": "gpu",
        "kaito.sh/workspace": kaito.DEFAULT_WORKSPACE,
        "kaito.sh/workspacenamespace": kaito.DEFAULT_WORKSPACE_NAMESPACE,
    }
    assert p["osSKU"] == "AzureLinux"
    assert p["availabilityZones"] == ["2"]
    assert p["tags"] == {"team": "ml", **ownership(req)}
    got = await cloud.get(req.name)
    assert got.zone == "eastus-2"


async def test_spot_and_long_names(cloud: AzureCloud, arm: FakeArm) -> None:
    req = machine_request(
        claim_name="workspace-falcon-7b-0", name="workspace-falcon-7b-0", capacity_type=CapacityType.SPOT
    )
    pool = cloud.instance_name(req.name)
    assert pool != req.name
    inst = await cloud.create(req)
    assert inst.name == pool
    stored = arm.pool(pool)
    assert stored is not None
    assert (stored.properties["scaleSetPriority"], stored.properties["scaleSetEvictionPolicy"]) == (
        "Spot",
        "Delete",
    )
    assert stored.properties["spotMaxPrice"] == -1
    assert stored.tags[TAG_CLAIM_NAME] == "workspace-falcon-7b-0"
    assert (await cloud.get(pool)).capacity_type == CapacityType.SPOT


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("QuotaExceeded", 400, InsufficientCapacity),
        ("SkuNotAvailable", 400, InsufficientCapacity),
        ("VMSizeNotSupported", 400, InsufficientCapacity),
        ("AllocationFailed", 409, InsufficientCapacity),
        ("ZonalAllocationFailed", 409, InsufficientCapacity),
        ("OverconstrainedAllocationRequest", 409, InsufficientCapacity),
        ("InvalidParameter", 400, InvalidSpec),
        ("InternalServerError", 500, Transient),
    ],
)
async def test_arm_error_codes_map_to_the_taxonomy(
    cloud: AzureCloud, arm: FakeArm, code: str, status: int, expected: type[Exception]
) -> None:
    arm.add_fault({"action": "reject", "operation": "create", "code": code, "status": status})
    req = machine_request()
    with pytest.raises(expected) as info:
        await cloud.create(req)
    err = info.value
    assert getattr(err, "code", None) == code
    assert arm.pool(req.name) is None
    if code == "QuotaExceeded":
        assert "exceeding approved" in getattr(err, "message", "")
        assert getattr(err, "family", None) == A100_FAMILY


async def test_a_late_failure_is_read_back_with_get(cloud: AzureCloud, arm: FakeArm) -> None:
    arm.add_fault({"action": "fail", "operation": "create", "code": "ZonalAllocationFailed"})
    req = machine_request()
    assert (await cloud.create(req)).state == InstanceState.CREATING

    async def failed() -> bool:
        return (await cloud.get(req.name)).state == InstanceState.FAILED

    await wait_for(failed, 5)
    failure = (await cloud.get(req.name)).failure
    stored = arm.pool(req.name)
    assert stored is not None and stored.provisioning_state == "Failed"
    assert stored.properties["status"]["provisioningError"]["code"] == "ZonalAllocationFailed"
    assert isinstance(failure, InsufficientCapacity) and failure.code == "ZonalAllocationFailed"


async def test_connection_errors_are_transient(cloud: AzureCloud, arm: FakeArm) -> None:
    arm.add_fault({"action": "drop", "method": "GET", "path": POOLS})
    with pytest.raises(Transient):
        await cloud.get("ws123")


async def test_get_and_delete_of_a_missing_pool(cloud: AzureCloud, arm: FakeArm) -> None:
    with pytest.raises(NotFound):
        await cloud.get("nosuchpool")
    await cloud.delete("nosuchpool")  # unversioned: read first, nothing to delete
    assert not arm.requests("DELETE")
    await cloud.delete("nosuchpool", version="an-etag")  # versioned: one DELETE, gone is success
    assert len(arm.requests("DELETE")) == 1


async def test_a_versioned_delete_spares_a_pool_that_changed_since_it_was_read(
    cloud: AzureCloud, arm: FakeArm
) -> None:
    req = machine_request()
    await cloud.create(req)
    await running(cloud, req.name)
    read = await cloud.get(req.name)
    assert read.version
    # The pool is deleted and made again for a new claim of the same name between read and delete.
    await cloud.delete(req.name, version=read.version)
    await wait_for(lambda: arm.pool(req.name) is None, 5)
    again = machine_request(name=req.name, claim_name=req.name, claim_uid="newer-claim")
    await cloud.create(again)
    with pytest.raises(Transient) as stale:
        await cloud.delete(req.name, version=read.version)
    assert stale.value.code == "PreconditionFailed"
    assert arm.pool(req.name) is not None


async def test_a_missing_cluster_is_not_a_missing_pool(providers: Callable[..., AzureCloud]) -> None:
    cloud = providers(AZURE_CLUSTER_NAME="no-such-cluster", AZURE_READ_ATTEMPTS="1")
    with pytest.raises(Transient, match="no-such-cluster"):
        await cloud.get("ws123")
    ok, reason = await cloud.check()
    assert not ok and "no-such-cluster" in reason


# --- throttling -----------------------------------------------------------------------------


async def test_a_throttled_read_comes_back_at_once_and_the_retry_costs_one_put(
    cloud: AzureCloud, arm: FakeArm
) -> None:
    """Calls made for a reconcile never sleep on Retry-After: the work queue retries the claim.
    The read a first create makes is the pool listing (it replaces a GET per create)."""
    listing = r"/agentPools$"
    arm.add_fault({"action": "throttle", "method": "GET", "path": listing, "count": 1, "retry_after": 30})
    req = machine_request()
    started = time.monotonic()
    with pytest.raises(Throttled) as throttled:
        await cloud.create(req)
    assert time.monotonic() - started < 5, "no sleep inside the call"
    assert throttled.value.retry_after == 1.0  # 30 s capped by AZURE_RETRY_AFTER_MAX_SECONDS here
    assert len(arm.requests("GET", listing)) == 1  # one attempt, no retry inside the call
    inst = await cloud.create(req)
    assert inst.state == InstanceState.CREATING
    assert arm.requests("GET", pool_path(req.name)) == []  # the listing said it cannot exist
    await running(cloud, req.name)
    assert len(arm.requests("PUT")) == 1


async def test_a_throttled_put_is_not_retried_inside_the_call(cloud: AzureCloud, arm: FakeArm) -> None:
    arm.add_fault({"action": "throttle", "method": "PUT", "path": POOLS, "count": 1, "retry_after": 0.2})
    req = machine_request()
    with pytest.raises(Throttled):
        await cloud.create(req)
    assert [r.status for r in arm.requests("PUT", pool_path(req.name))] == [429]
    await cloud.create(req)
    assert [r.status for r in arm.requests("PUT", pool_path(req.name))] == [429, 201]


async def test_the_gc_listing_retries_throttled_reads(cloud: AzureCloud, arm: FakeArm) -> None:
    """Background reads (GC, readiness) still retry, honouring Retry-After."""
    listing = r"/agentPools$"
    arm.add_fault({"action": "throttle", "method": "GET", "path": listing, "count": 2, "retry_after": 0.2})
    started = time.monotonic()
    assert await cloud.list() == []
    assert time.monotonic() - started >= 0.4
    assert len(arm.requests("GET", listing, status=429)) == 2


async def test_retry_after_is_capped(providers: Callable[..., AzureCloud], arm: FakeArm) -> None:
    cloud = providers(AZURE_RETRY_AFTER_MAX_SECONDS="0.2")
    arm.add_fault({"action": "throttle", "method": "GET", "path": POOLS, "count": 1, "retry_after": 600})
    with pytest.raises(Throttled) as throttled:
        await asyncio.wait_for(cloud.get("ws123"), timeout=10)
    assert throttled.value.retry_after == 0.2


async def test_persistent_throttling_of_a_write_surfaces_as_throttled(
    cloud: AzureCloud, arm: FakeArm
) -> None:
    arm.add_fault({"action": "throttle", "method": "PUT", "path": POOLS, "retry_after": 5})
    req = machine_request()
    with pytest.raises(Throttled) as info:
        await cloud.create(req)
    assert info.value.retry_after == 1.0  # 5 s capped by AZURE_RETRY_AFTER_MAX_SECONDS
    assert len(arm.requests("PUT")) == 1  # one attempt: the work queue retries the claim
    assert arm.pool(req.name) is None


async def test_client_side_rate_limit(providers: Callable[..., AzureCloud], arm: FakeArm) -> None:
    cloud = providers(AZURE_ARM_RATE_LIMIT="20", AZURE_ARM_RATE_BURST="1")
    await cloud.check()  # token and first call
    since = arm.log.last_seq
    await asyncio.gather(*(cloud.get(f"p{i}") for i in range(6)), return_exceptions=True)
    calls = arm.requests("GET", POOLS, since=since)
    assert len(calls) == 6
    assert calls[-1].timestamp - calls[0].timestamp >= 0.2  # 20/s: 5 gaps of 50 ms


async def test_creates_past_the_write_budget_are_held_back_without_a_request(
    providers: Callable[..., AzureCloud], arm: FakeArm
) -> None:
    """Writes have a bucket of their own; a create that would wait longer than the longest wait
    is not sent at all, and says when a token is due (reads are not held back by it)."""
    cloud = providers(
        AZURE_ARM_WRITE_RATE_LIMIT="0.5", AZURE_ARM_WRITE_RATE_BURST="2", AZURE_ARM_MAX_WAIT_SECONDS="0.2"
    )
    arm.set_quota(A100_FAMILY, 24 * 4)
    requests = [machine_request() for _ in range(3)]
    await cloud.create(requests[0])
    await cloud.create(requests[1])
    with pytest.raises(Deferred) as info:
        await cloud.create(requests[2])
    assert info.value.code == "ClientRateLimited" and 1.5 < (info.value.retry_after or 0) <= 2.0
    assert len(arm.requests("PUT", POOLS)) == 2
    await cloud.get(requests[0].name)  # reads go on


# --- restart safety -------------------------------------------------------------------------


async def test_a_new_provider_adopts_the_pool_and_deletes_it_while_creating(
    providers: Callable[..., AzureCloud], arm: FakeArm
) -> None:
    arm.set_latency(create=1.0)
    req = machine_request()
    first = providers()
    assert (await first.create(req)).state == InstanceState.CREATING
    await first.close()  # the controller restarts mid-create

    second = providers()
    adopted = await second.create(req)
    assert adopted.state == InstanceState.CREATING
    assert adopted.claim_uid == req.claim_uid
    assert len(arm.requests("PUT", pool_path(req.name))) == 1

    # AKS refuses writes while the create runs (409); delete says so and is retried until accepted.
    async def delete_accepted() -> bool:
        try:
            await second.delete(req.name)
        except Transient as e:
            assert e.code == "OperationNotAllowed"
            return False
        return True

    await wait_for(delete_accepted, 5, 0.1)
    await second.delete(req.name)  # idempotent while Deleting
    await wait_for(lambda: arm.pool(req.name) is None, 5)
    assert arm.pools() == []
    await second.delete(req.name)  # and once gone
    assert len(arm.requests("DELETE", pool_path(req.name), status=202)) == 1


async def test_a_pool_of_another_claim_or_owner_is_never_taken(
    cloud: AzureCloud, arm: FakeArm, aks: Any
) -> None:
    req = machine_request()
    await cloud.create(req)
    await running(cloud, req.name)
    other = machine_request(name=req.name, claim_name=req.name, claim_uid="another-uid")
    with pytest.raises(Transient, match="earlier claim"):
        await cloud.create(other)

    # A pool created outside gpu-provisioner (e.g. the user's) with a claim's name.
    poller = await aks.agent_pools.begin_create_or_update(
        RESOURCE_GROUP, CLUSTER, "userpool", {"properties": {"vmSize": "Standard_D4s_v3", "count": 1}}
    )
    await poller.result()
    with pytest.raises(InstanceConflict, match="not managed by gpu-provisioner") as conflict:
        await cloud.create(machine_request(name="userpool", claim_name="userpool"))
    assert conflict.value.instance.name == "userpool" and not conflict.value.instance.managed
    await cloud.delete("userpool")
    assert not arm.requests("DELETE", pool_path("userpool"))
    assert [i.name for i in await cloud.list()] == [req.name]


# --- instance types and fallback ------------------------------------------------------------


async def test_restricted_size_falls_back_to_the_next_candidate(cloud: AzureCloud, arm: FakeArm) -> None:
    req = machine_request(instance_types=("Standard_NC999_v9", A100, H100), zones=("eastus-1",))
    inst = await cloud.create(req)
    assert inst.instance_type == H100
    puts = arm.requests("PUT", pool_path(req.name))
    assert len(puts) == 1  # the unknown and the zone-restricted size cost no write
    stored = arm.pool(req.name)
    assert stored is not None and stored.vm_size == H100 and stored.availability_zones == ("1",)


async def test_capacity_errors_fall_back_and_are_remembered(cloud: AzureCloud, arm: FakeArm) -> None:
    arm.add_fault(
        {
            "action": "reject",
            "operation": "create",
            "vm_size": A100,
            "code": "AllocationFailed",
            "status": 409,
            "count": 1,
        }
    )
    req = machine_request(instance_types=(A100, H100))
    inst = await cloud.create(req)
    assert inst.instance_type == H100
    assert [r.status for r in arm.requests("PUT", pool_path(req.name))] == [409, 201]

    # Another claim for the same size is answered from memory, without a call.
    lone = machine_request()
    since = arm.log.last_seq
    with pytest.raises(InsufficientCapacity) as info:
        await cloud.create(lone)
    assert info.value.code == "AllocationFailed"
    assert not arm.requests("PUT", since=since)
    types = {t.name: t for t in await cloud.instance_types()}
    assert not types[A100].available and types[H100].available


async def test_no_usable_candidate_is_insufficient_capacity(cloud: AzureCloud, arm: FakeArm) -> None:
    req = machine_request(instance_types=(A100, "Standard_NC999_v9"), zones=("eastus-1",))
    with pytest.raises(InsufficientCapacity) as info:
        await cloud.create(req)
    assert kaito.INSTANCE_TYPES_UNAVAILABLE in info.value.message
    assert A100 in info.value.message and "Standard_NC999_v9" in info.value.message
    assert not arm.requests("PUT")


async def test_the_clusters_pool_limit_is_retried_capacity_and_costs_one_put(
    cloud: AzureCloud, arm: FakeArm, http: Any
) -> None:
    """At the cluster's agent pool limit another VM size cannot help (one PUT, no fallback), and the
    claim is not unlaunchable: once a pool is deleted, the same request creates its pool."""
    first = machine_request()
    await cloud.create(first)
    await wait_for(lambda: (p := arm.pool(first.name)) is not None and p.provisioning_state == "Succeeded")
    await http.post("/_fake/settings", json={"max_pools_per_cluster": len(arm.pools())})

    late = machine_request(instance_types=(A100, H100))
    with pytest.raises(InsufficientCapacity) as info:
        await cloud.create(late)
    assert info.value.code == "AgentPoolLimitReached"
    assert [r.status for r in arm.requests("PUT", pool_path(late.name))] == [400]

    await cloud.delete(first.name)
    await wait_for(lambda: arm.pool(first.name) is None)
    assert (await cloud.create(late)).state == InstanceState.CREATING
    assert [r.status for r in arm.requests("PUT", pool_path(late.name))] == [400, 201]


# --- quota pre-flight -----------------------------------------------------------------------


async def test_quota_preflight_refuses_without_a_put_then_lets_through(
    providers: Callable[..., AzureCloud], arm: FakeArm
) -> None:
    cloud = providers(AZURE_QUOTA_RECHECK_SECONDS="0")
    arm.set_quota(A100_FAMILY, 12)
    req = machine_request()
    with pytest.raises(InsufficientCapacity) as info:
        await cloud.create(req)
    err = info.value
    assert (err.family, err.vcpus_needed, err.vcpus_free) == (A100_FAMILY, 24, 12)
    assert A100_FAMILY in err.message and "24 vCPUs" in err.message and "12 of 12 free" in err.message
    assert not arm.requests("PUT")

    arm.set_quota(A100_FAMILY, 48)
    assert (await cloud.create(req)).state == InstanceState.CREATING
    assert len(arm.requests("PUT")) == 1


async def test_own_creates_count_against_cached_quota(cloud: AzureCloud, arm: FakeArm) -> None:
    arm.set_quota(A100_FAMILY, 48)
    await cloud.create(machine_request())
    await cloud.create(machine_request())
    with pytest.raises(InsufficientCapacity, match="0 of 48 free"):
        await cloud.create(machine_request())
    assert len(arm.requests("PUT")) == 2
    assert len(arm.requests("GET", "/usages")) == 1  # one cached listing served all three


async def test_a_lowered_limit_costs_no_rejected_put(
    make_env: Callable[..., dict[str, str]], arm: FakeArm
) -> None:
    """The cached usage said "fits, with no room to spare": it is read again before the PUT."""
    now = [1000.0]
    cloud = AzureCloud(ProviderContext(env=make_env()), clock=lambda: now[0])
    try:
        arm.set_quota(A100_FAMILY, 48)
        await cloud.create(machine_request())  # 24 of 48: plenty of room, no re-read needed
        arm.set_quota(A100_FAMILY, 24)  # the limit drops while the cache still says 48
        now[0] += 5
        late = machine_request()
        with pytest.raises(InsufficientCapacity) as info:
            await cloud.create(late)
        assert info.value.vcpus_free == 0
        assert not arm.requests("PUT", pool_path(late.name)), "no PUT for ARM to reject"
        assert len(arm.requests("GET", "/usages")) == 2
    finally:
        await cloud.close()


def test_nodes_belong_to_the_pool_their_label_and_provider_id_name(cloud: AzureCloud) -> None:
    prefix = (
        f"azure:///subscriptions/{SUBSCRIPTION}/resourceGroups/mc_{RESOURCE_GROUP}_{CLUSTER}_eastus".lower()
        + "/providers/Microsoft.Compute/virtualMachineScaleSets"
    )

    def node(pool: str | None, provider_id: str | None) -> dict[str, Any]:
        labels = {"kubernetes.azure.com/agentpool": pool} if pool else {}
        return {"metadata": {"labels": labels}, "spec": {"providerID": provider_id} if provider_id else {}}

    assert cloud.instance_of_node(node("ws1", f"{prefix}/aks-ws1-12345678-vmss/virtualMachines/0")) == "ws1"
    # Not before the cloud node manager has set its providerID: the label alone is anyone's to set.
    assert cloud.instance_of_node(node("ws1", None)) is None
    assert cloud.instance_of_node(node(None, f"{prefix}/aks-ws1-12345678-vmss/virtualMachines/0")) is None
    # A Node labelled for our pool but running elsewhere is not the pool's.
    assert cloud.instance_of_node(node("ws1", f"{prefix}/aks-other-12345678-vmss/virtualMachines/0")) is None
    other_rg = f"azure:///subscriptions/{SUBSCRIPTION}/resourceGroups/mc_x/providers/Microsoft.Compute/virtualMachineScaleSets"
    assert cloud.instance_of_node(node("ws1", f"{other_rg}/aks-ws1-1-vmss/virtualMachines/0")) is None
    assert cloud.instance_of_node(node("ws1", "kind://docker/ws1")) is None


# --- list -----------------------------------------------------------------------------------


async def test_list_is_one_paged_call_cached(providers: Callable[..., AzureCloud], arm: FakeArm) -> None:
    cloud = providers(AZURE_LIST_CACHE_SECONDS="60")
    names = []
    for _ in range(3):
        req = machine_request(instance_types=("Standard_D4s_v3",))
        names.append((await cloud.create(req)).name)
    since = arm.log.last_seq
    first = await cloud.list()
    second = await cloud.list()
    assert sorted(i.name for i in first) == sorted(names) == sorted(i.name for i in second)
    lists = arm.requests("GET", r"/agentPools$", since=since)
    assert len(lists) == 2  # page size 2: one listing, two pages; the second list() is cached


# --- configuration, credentials and secrets -------------------------------------------------


def test_misconfiguration_is_one_readable_error(make_env: Callable[..., dict[str, str]]) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^ARM_SUBSCRIPTION_ID: is required but not set \(the AKS cluster's subscription ID\)$",
    ):
        AzureCloud(ProviderContext(env={k: v for k, v in make_env().items() if k != "ARM_SUBSCRIPTION_ID"}))
    with pytest.raises(ProviderLoadError, match="ARM_ENDPOINT: must be an https:// URL"):
        load_provider("azure", ProviderContext(env=make_env(ARM_ENDPOINT="http://127.0.0.1:1")))


def test_every_bad_setting_is_reported_at_once(make_env: Callable[..., dict[str, str]]) -> None:
    gone = ("ARM_SUBSCRIPTION_ID", "ARM_RESOURCE_GROUP", "AZURE_CLUSTER_NAME", "LOCATION")
    env = {
        k: v for k, v in make_env(AZURE_MAX_PODS="5", AZURE_OS_DISK_TYPE="Floppy").items() if k not in gone
    }
    with pytest.raises(ConfigError) as e:
        AzureCloud(ProviderContext(env=env))
    lines = str(e.value).splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [*gone, "AZURE_OS_DISK_TYPE", "AZURE_MAX_PODS"]
    assert "must be at least 10" in lines[-1]


async def test_credential_failure_is_reported_by_check_not_raised(
    providers: Callable[..., AzureCloud], arm: FakeArm, tmp_path: Path
) -> None:
    cloud = providers(AZURE_FEDERATED_TOKEN_FILE=str(tmp_path / "missing-token"))
    ok, reason = await cloud.check()
    assert not ok
    assert "workload-identity" in reason
    with pytest.raises(Transient):
        await cloud.get("ws123")
    assert not arm.requests("GET", POOLS)


async def test_secrets_never_reach_the_logs(
    providers: Callable[..., AzureCloud], arm: FakeArm, federated_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Sup3r-S3cret-Value~42"
    arm.issuer.clients.update({"sp-client": secret, CLIENT_ID: "unused"})
    caplog.set_level(logging.DEBUG)
    wi = providers()
    sp = providers(AZURE_CREDENTIAL="client-secret", AZURE_CLIENT_ID="sp-client", AZURE_CLIENT_SECRET=secret)
    for cloud in (wi, sp):
        assert (await cloud.check())[0]
        req = machine_request(instance_types=("Standard_D4s_v3",))
        await cloud.create(req)
        await cloud.get(req.name)
        await cloud.list()
    wrong = providers(
        AZURE_CREDENTIAL="client-secret", AZURE_CLIENT_ID="sp-client", AZURE_CLIENT_SECRET="nope-" + secret
    )
    ok, reason = await wrong.check()
    assert not ok and secret not in reason

    tokens = [(await c._credential.get_token(c.settings.credential_scope)).token for c in (wi, sp)]
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert any("agentPools" in r.getMessage() for r in caplog.records)  # azure-core did log requests
    text = "\n".join(r.getMessage() for r in caplog.records)
    for value in (*tokens, secret, federated_token):
        assert value not in text
