"""FakeCloud behaviour as the lifecycle and the node simulator see it, and the SKU catalog."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import pytest

from fakes import skus
from fakes.cloud import CallRecord, FailureRule, FakeCloud, vmss_node_name
from provisioner.cloud import (
    GPU_RESOURCE,
    CapacityType,
    CloudProvider,
    Instance,
    InstanceConflict,
    InstanceRequest,
    InstanceState,
    InsufficientCapacity,
    InvalidSpec,
    NotFound,
    ProviderContext,
    Throttled,
    Transient,
)

A100 = "Standard_NC24ads_A100_v4"
A100_X2 = "Standard_NC48ads_A100_v4"
T4 = "Standard_NC4as_T4_v3"
D4 = "Standard_D4s_v3"
WAIT = 5.0

PROVIDER_ID = re.compile(
    r"^azure:///subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"virtualMachineScaleSets/aks-(?P<pool>[a-z0-9]+)-(?P<digits>\d{8})-vmss/virtualMachines/0$"
)


def req(
    name: str = "ws0a1b2c3d4",
    *instance_types: str,
    uid: str | None = None,
    zones: tuple[str, ...] = (),
    capacity_type: CapacityType = CapacityType.ON_DEMAND,
    **kwargs: object,
) -> InstanceRequest:
    return InstanceRequest(
        claim_name=name,
        claim_uid=uid or f"uid-{name}",
        name=name,
        instance_types=instance_types or (A100,),
        zones=zones,
        capacity_type=capacity_type,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def cloud() -> AsyncIterator[FakeCloud]:
    async with FakeCloud(location="eastus", cluster_name="kaito") as c:
        yield c


async def wait_state(cloud: FakeCloud, name: str, state: InstanceState | None) -> Instance | None:
    async with asyncio.timeout(WAIT):
        return await cloud.wait_for_state(name, state)


class Recorder:
    """An observer as the node simulator will be: remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, InstanceState]] = []

    async def on_instance_running(self, instance: Instance) -> None:
        self.events.append(("running", instance.name, instance.state))

    async def on_instance_deleted(self, instance: Instance) -> None:
        self.events.append(("deleted", instance.name, instance.state))


# --- lifecycle -------------------------------------------------------------------------------


async def test_fake_cloud_satisfies_the_protocol(cloud: FakeCloud) -> None:
    assert isinstance(cloud, CloudProvider)


async def test_create_returns_creating_then_runs(cloud: FakeCloud) -> None:
    request = req("ws0a1b2c3d4", labels={"kaito.sh/workspace": "falcon"})
    created = await cloud.create(request)
    assert created.state == InstanceState.CREATING

    running = await wait_state(cloud, "ws0a1b2c3d4", InstanceState.RUNNING)
    assert running is not None
    fetched = await cloud.get("ws0a1b2c3d4")
    assert fetched.state == InstanceState.RUNNING
    assert fetched.provider_id == created.provider_id

    m = PROVIDER_ID.match(fetched.provider_id)
    assert m, fetched.provider_id
    assert m["pool"] == "ws0a1b2c3d4"
    assert m["rg"] == "mc_rg_kaito_eastus"
    assert fetched.instance_type == A100
    # NC A100 v4 is restricted in eastus zone 1 for the fake subscription.
    assert fetched.zone in ("eastus-2", "eastus-3")
    assert fetched.labels["topology.kubernetes.io/zone"] == fetched.zone
    assert fetched.labels["node.kubernetes.io/instance-type"] == A100
    assert fetched.labels["kubernetes.azure.com/agentpool"] == "ws0a1b2c3d4"
    assert fetched.labels["kubernetes.azure.com/accelerator"] == "nvidia"
    assert fetched.labels["karpenter.sh/capacity-type"] == "on-demand"
    assert fetched.labels["kaito.sh/workspace"] == "falcon"
    assert fetched.capacity[GPU_RESOURCE] == "1"
    assert fetched.capacity["cpu"] == "24"
    assert fetched.capacity["memory"] == f"{220 * 1024 * 1024}Ki"
    assert fetched.image_id is not None and "/galleries/AKSUbuntu/" in fetched.image_id
    assert fetched.managed
    assert fetched.claim_uid == "uid-ws0a1b2c3d4"
    assert fetched.labels["kubernetes.io/hostname"] == vmss_node_name(fetched.provider_id)


async def test_cpu_size_has_no_gpu(cloud: FakeCloud) -> None:
    instance = await cloud.create(req("cpu1", D4))
    assert GPU_RESOURCE not in instance.capacity
    assert "kubernetes.azure.com/accelerator" not in instance.labels
    assert instance.capacity["cpu"] == "4"


async def test_azurelinux_image_and_os_disk(cloud: FakeCloud) -> None:
    instance = await cloud.create(req("ws1", T4, image_family="azurelinux", os_disk_size_gib=400))
    assert instance.image_id is not None and "/galleries/AKSAzureLinux/" in instance.image_id
    assert instance.labels["kubernetes.azure.com/os-sku"] == "AzureLinux"
    assert instance.capacity["ephemeral-storage"] == f"{400 * 1024 * 1024}Ki"


async def test_create_returns_at_once_while_latency_runs() -> None:
    async with FakeCloud(create_latency=60) as cloud:
        started = time.monotonic()
        instance = await cloud.create(req("ws1"))
        assert time.monotonic() - started < 1.0
        assert instance.state == InstanceState.CREATING
        assert (await cloud.get("ws1")).state == InstanceState.CREATING


async def test_latency_delays_running() -> None:
    async with FakeCloud(create_latency=0.3) as cloud:
        started = time.monotonic()
        await cloud.create(req("ws1"))
        await wait_state(cloud, "ws1", InstanceState.RUNNING)
        assert time.monotonic() - started >= 0.3


async def test_creates_overlap_instead_of_queueing() -> None:
    # Ten creates of 0.5 s each finish in well under the 5 s they would take one after another.
    async with FakeCloud(create_latency=0.5, quotas={skus.FAMILY_NCAS_V3_T4: 1000}) as cloud:
        names = [f"ws{i}" for i in range(10)]
        async with asyncio.timeout(2.5):
            await asyncio.gather(*(cloud.create(req(n, T4)) for n in names))
            await cloud.wait_for(
                lambda: all(getattr(cloud.peek(n), "state", None) == InstanceState.RUNNING for n in names)
            )


async def test_create_is_idempotent_for_the_same_claim(cloud: FakeCloud) -> None:
    first = await cloud.create(req("ws1"))
    again = await cloud.create(req("ws1"))
    assert again.provider_id == first.provider_id
    await wait_state(cloud, "ws1", InstanceState.RUNNING)
    adopted = await cloud.create(req("ws1"))
    assert adopted.state == InstanceState.RUNNING
    assert [i.name for i in await cloud.list()] == ["ws1"]
    assert cloud.count_calls("create", "ws1") == 3
    # Adopting consumed no extra quota.
    assert cloud.quota(skus.FAMILY_NCADS_A100_V4)[0] == 24


async def test_create_over_a_name_owned_by_someone_else(cloud: FakeCloud) -> None:
    cloud.add_foreign_instance("nodepool1", D4)
    with pytest.raises(InstanceConflict) as foreign:
        await cloud.create(req("nodepool1", D4))
    assert foreign.value.code == "PoolNameConflict"
    assert foreign.value.instance.name == "nodepool1" and not foreign.value.instance.managed

    await cloud.create(req("ws1", uid="old-claim"))
    with pytest.raises(Transient):
        await cloud.create(req("ws1", uid="new-claim"))


async def test_recreate_while_previous_pool_is_deleting() -> None:
    async with FakeCloud(delete_latency=60) as cloud:
        await cloud.create(req("ws1", uid="old"))
        await cloud.delete("ws1")
        with pytest.raises(Transient) as err:
            await cloud.create(req("ws1", uid="new"))
        assert err.value.code == "OperationNotAllowed"


async def test_delete_goes_through_deleting_and_is_idempotent() -> None:
    async with FakeCloud(delete_latency=0.2) as cloud:
        await cloud.delete("never-existed")
        await cloud.create(req("ws1"))
        await wait_state(cloud, "ws1", InstanceState.RUNNING)
        await cloud.delete("ws1")
        assert (await cloud.get("ws1")).state == InstanceState.DELETING
        await cloud.delete("ws1")
        await wait_state(cloud, "ws1", None)
        with pytest.raises(NotFound):
            await cloud.get("ws1")
        await cloud.delete("ws1")
        assert cloud.count_calls("delete") == 4
        assert await cloud.list() == []


async def test_delete_while_creating_leaks_nothing() -> None:
    recorder = Recorder()
    async with FakeCloud(create_latency=60, observers=[recorder]) as cloud:
        await cloud.create(req("ws1"))
        await cloud.delete("ws1")
        await wait_state(cloud, "ws1", None)
        assert await cloud.list() == []
        assert cloud.quota(skus.FAMILY_NCADS_A100_V4)[0] == 0
    assert recorder.events == []


async def test_list_returns_only_our_instances(cloud: FakeCloud) -> None:
    cloud.add_foreign_instance("nodepool1", D4)
    await cloud.create(req("ws1"))
    assert [i.name for i in await cloud.list()] == ["ws1"]
    assert {i.name for i in cloud.snapshot()} == {"nodepool1", "ws1"}


# --- bad requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (req("ws1", "Standard_NC999_bogus"), "unknown VM size Standard_NC999_bogus"),
        (req("Bad_Name"), "Agent pool name"),
        (req("waytoolongpoolname"), "at most 12 characters"),
        (req("ws1", os_disk_size_gib=5), "OS disk size 5 GiB"),
        (req("ws1", image_family="windows"), "Unsupported node image family"),
        (req("ws1", "Standard_Foo", "Standard_Bar"), "Standard_Bar"),
    ],
)
async def test_invalid_requests_are_invalid_spec(
    cloud: FakeCloud, request_: InstanceRequest, fragment: str
) -> None:
    with pytest.raises(InvalidSpec) as err:
        await cloud.create(request_)
    assert fragment in err.value.message
    assert err.value.code == "InvalidParameter"
    assert cloud.snapshot() == []


async def test_empty_candidate_list_is_invalid(cloud: FakeCloud) -> None:
    request = InstanceRequest(claim_name="ws1", claim_uid="u", name="ws1", instance_types=())
    with pytest.raises(InvalidSpec):
        await cloud.create(request)


# --- quota and capacity ----------------------------------------------------------------------


async def test_quota_exhausted_names_family_needed_and_free(cloud: FakeCloud) -> None:
    # Default fake quota for NC A100 v4 is 48 vCPUs: two NC24ads fit, the third does not.
    await cloud.create(req("ws1"))
    await cloud.create(req("ws2"))
    with pytest.raises(InsufficientCapacity) as err:
        await cloud.create(req("ws3"))
    e = err.value
    assert e.code == "QuotaExceeded"
    assert e.family == "standardNCADSA100v4Family"
    assert (e.vcpus_needed, e.vcpus_free) == (24, 0)
    assert "standardNCADSA100v4Family" in e.message
    assert "Current Limit: 48, Current Usage: 48, Additional Required: 24" in e.message
    assert "needs 24 vCPUs" in e.message and "0 free" in e.message
    assert cloud.peek("ws3") is None

    # Capacity comes back once a node is gone.
    await cloud.delete("ws1")
    await wait_state(cloud, "ws1", None)
    assert (await cloud.create(req("ws3"))).state == InstanceState.CREATING


async def test_quota_partially_free() -> None:
    async with FakeCloud(quotas={skus.FAMILY_NCADS_A100_V4: 60}) as cloud:
        await cloud.create(req("ws1", A100))
        with pytest.raises(InsufficientCapacity) as err:
            await cloud.create(req("ws2", A100_X2))
        assert (err.value.vcpus_needed, err.value.vcpus_free) == (48, 36)
        cloud.set_quota(skus.FAMILY_NCADS_A100_V4, 72)
        await cloud.create(req("ws2", A100_X2))
        assert cloud.quota(skus.FAMILY_NCADS_A100_V4) == (72, 72)


async def test_regional_vcpu_quota_applies_too() -> None:
    async with FakeCloud(quotas={skus.REGIONAL_VCPUS: 30}) as cloud:
        await cloud.create(req("ws1", A100))
        with pytest.raises(InsufficientCapacity) as err:
            await cloud.create(req("ws2", "Standard_D8s_v3"))
        assert err.value.family == skus.REGIONAL_VCPUS


async def test_spot_counts_against_spot_quota_only() -> None:
    async with FakeCloud(quotas={skus.SPOT_VCPUS: 24}) as cloud:
        spot = await cloud.create(req("ws1", capacity_type=CapacityType.SPOT))
        assert spot.labels["kubernetes.azure.com/scalesetpriority"] == "spot"
        assert spot.capacity_type == CapacityType.SPOT
        assert cloud.quota(skus.FAMILY_NCADS_A100_V4)[0] == 0
        with pytest.raises(InsufficientCapacity) as err:
            await cloud.create(req("ws2", capacity_type=CapacityType.SPOT))
        assert err.value.family == skus.SPOT_VCPUS
        await cloud.create(req("ws3"))  # on-demand quota untouched


async def test_size_capacity_exhausted() -> None:
    async with FakeCloud(capacity={A100: 1}) as cloud:
        await cloud.create(req("ws1"))
        with pytest.raises(InsufficientCapacity) as err:
            await cloud.create(req("ws2"))
        assert err.value.code == "AllocationFailed"
        assert err.value.instance_type == A100
        cloud.set_capacity(A100, None)
        await cloud.create(req("ws2"))


async def test_falls_back_to_next_candidate_on_capacity() -> None:
    async with FakeCloud(capacity={A100: 0}) as cloud:
        instance = await cloud.create(req("ws1", A100, T4))
        assert instance.instance_type == T4


async def test_all_candidates_short_reports_each_and_the_first_cause() -> None:
    async with FakeCloud(capacity={A100: 0, T4: 0}) as cloud:
        with pytest.raises(InsufficientCapacity) as err:
            await cloud.create(req("ws1", A100, T4))
        assert err.value.instance_type == A100
        assert f"{A100}:" in err.value.message and f"{T4}:" in err.value.message


async def test_size_not_offered_in_location() -> None:
    async with FakeCloud(location="westus2") as cloud:
        with pytest.raises(InsufficientCapacity) as err:
            await cloud.create(req("ws1", A100))
        assert err.value.code == "SkuNotAvailable"
        assert "westus2" in err.value.message


async def test_restricted_location_and_zone(cloud: FakeCloud) -> None:
    with pytest.raises(InsufficientCapacity) as zone_err:
        await cloud.create(req("ws1", A100, zones=("eastus-1",)))
    assert zone_err.value.code == "SkuNotAvailable"
    assert "NotAvailableForSubscription" in zone_err.value.message
    placed = await cloud.create(req("ws2", A100, zones=("eastus-1", "eastus-3")))
    assert placed.zone == "eastus-3"

    async with FakeCloud(location="westeurope") as eu:
        with pytest.raises(InsufficientCapacity):
            await eu.create(req("ws1", "Standard_ND96isr_H100_v5"))


async def test_zones_are_spread(cloud: FakeCloud) -> None:
    zones = [(await cloud.create(req(f"cpu{i}", D4))).zone for i in range(3)]
    assert sorted(zones) == ["eastus-1", "eastus-2", "eastus-3"]


async def test_instance_types_report_availability() -> None:
    async with FakeCloud(location="westeurope") as cloud:
        types = {t.name: t for t in await cloud.instance_types()}
    h100 = types["Standard_ND96isr_H100_v5"]
    assert not h100.available and h100.unavailable_reason == "NotAvailableForSubscription"
    a100 = types[A100]
    assert a100.available and a100.gpus == 1 and a100.vcpus == 24
    assert a100.zones == ("westeurope-1", "westeurope-2", "westeurope-3")
    assert "Standard_NC40ads_H100_v5" not in types  # not listed in westeurope at all


# --- scripted failures -----------------------------------------------------------------------


async def test_scripted_error_by_pattern_and_count(cloud: FakeCloud) -> None:
    cloud.add_failure(
        FailureRule.fail(Throttled("slow down", code="TooManyRequests", retry_after=7), "ws1*", times=1)
    )
    with pytest.raises(Throttled) as err:
        await cloud.create(req("ws1abc"))
    assert err.value.retry_after == 7 and err.value.code == "TooManyRequests"
    assert cloud.peek("ws1abc") is None
    await cloud.create(req("ws2abc"))  # pattern does not match
    await cloud.create(req("ws1abc"))  # the rule fired its one time
    assert cloud.count_calls("create", "ws1abc") == 2


async def test_scripted_errors_are_fresh_exceptions(cloud: FakeCloud) -> None:
    rule_error = Transient("boom", code="InternalServerError")
    cloud.add_failure(FailureRule.fail(rule_error, operation="get"))
    raised = []
    for _ in range(2):
        with pytest.raises(Transient) as err:
            await cloud.get("anything")
        raised.append(err.value)
    assert raised[0] is not rule_error and raised[0] is not raised[1]
    assert raised[1].code == "InternalServerError"


async def test_scripted_delete_failure() -> None:
    async with FakeCloud(
        failures=[FailureRule.fail(Transient("busy"), operation="delete", times=1)]
    ) as cloud:
        await cloud.create(req("ws1"))
        with pytest.raises(Transient):
            await cloud.delete("ws1")
        assert cloud.peek("ws1") is not None
        await cloud.delete("ws1")
        await wait_state(cloud, "ws1", None)


async def test_late_failure_ends_in_failed_state() -> None:
    recorder = Recorder()
    async with FakeCloud(failures=[FailureRule.fail_late("ws9*")], observers=[recorder]) as cloud:
        created = await cloud.create(req("ws9a"))
        assert created.state == InstanceState.CREATING
        failed = await wait_state(cloud, "ws9a", InstanceState.FAILED)
        assert failed is not None
        assert isinstance(failed.failure, InsufficientCapacity)
        assert failed.failure.code == "AllocationFailed"
        # Deleting a failed instance works, and the simulator never heard of it.
        await cloud.delete("ws9a")
        await wait_state(cloud, "ws9a", None)
    assert recorder.events == []


async def test_late_failure_with_given_error() -> None:
    error = InvalidSpec("image not found", code="InvalidImage")
    async with FakeCloud(failures=[FailureRule.fail_late(error=error)]) as cloud:
        await cloud.create(req("ws1"))
        failed = await wait_state(cloud, "ws1", InstanceState.FAILED)
        assert failed is not None and isinstance(failed.failure, InvalidSpec)
        assert failed.failure.code == "InvalidImage"


async def test_hang_stays_creating() -> None:
    async with FakeCloud(failures=[FailureRule.hang("stuck*")], create_latency=0.05) as cloud:
        await cloud.create(req("stuck1"))
        await cloud.create(req("ok1"))
        await wait_state(cloud, "ok1", InstanceState.RUNNING)
        assert (await cloud.get("stuck1")).state == InstanceState.CREATING
        # The other one already went through the same latency, so the hang is real.
        await cloud.delete("stuck1")
        await wait_state(cloud, "stuck1", None)


def _failing_names(seed: int) -> list[str]:
    async def run() -> list[str]:
        rule = FailureRule.fail(Transient("flaky"), probability=0.5)
        failed = []
        async with FakeCloud(seed=seed, failures=[rule], quotas={skus.FAMILY_DSV3: 10_000}) as cloud:
            for i in range(24):
                try:
                    await cloud.create(req(f"cpu{i}", D4))
                except Transient:
                    failed.append(f"cpu{i}")
        return failed

    return asyncio.run(run())


def test_probabilistic_failures_are_deterministic_per_seed() -> None:
    first, again, other = _failing_names(7), _failing_names(7), _failing_names(8)
    assert first == again
    assert 0 < len(first) < 24
    assert first != other


def test_failure_rule_validation() -> None:
    with pytest.raises(ValueError):
        FailureRule(mode="error")
    with pytest.raises(ValueError):
        FailureRule(mode="hang", operation="delete")
    with pytest.raises(ValueError):
        FailureRule.fail(Transient("x"), probability=1.5)


# --- call log and observers ------------------------------------------------------------------


async def test_call_log(cloud: FakeCloud) -> None:
    await cloud.create(req("ws1"))
    await cloud.get("ws1")
    await cloud.list()
    await cloud.instance_types()
    await cloud.delete("ws1")
    assert cloud.calls == [
        CallRecord("create", "ws1"),
        CallRecord("get", "ws1"),
        CallRecord("list"),
        CallRecord("instance_types"),
        CallRecord("delete", "ws1"),
    ]
    assert cloud.count_calls("get") == 1
    assert cloud.count_calls("get", "other") == 0


async def test_observer_sees_running_then_deleted() -> None:
    recorder = Recorder()
    async with FakeCloud(observers=[recorder]) as cloud:
        await cloud.create(req("ws1"))
        async with asyncio.timeout(WAIT):
            await cloud.wait_for(lambda: len(recorder.events) == 1)
        await cloud.delete("ws1")
        await wait_state(cloud, "ws1", None)
        async with asyncio.timeout(WAIT):
            await cloud.wait_for(lambda: len(recorder.events) == 2)
    assert recorder.events == [
        ("running", "ws1", InstanceState.RUNNING),
        ("deleted", "ws1", InstanceState.DELETING),
    ]


async def test_failing_observer_does_not_break_the_cloud(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def on_instance_running(self, instance: Instance) -> None:
            raise RuntimeError("simulator down")

        async def on_instance_deleted(self, instance: Instance) -> None:
            raise RuntimeError("simulator down")

    recorder = Recorder()
    async with FakeCloud(observers=[Broken(), recorder]) as cloud:
        await cloud.create(req("ws1"))
        async with asyncio.timeout(WAIT):
            await cloud.wait_for(lambda: len(recorder.events) == 1)
        assert (await cloud.get("ws1")).state == InstanceState.RUNNING
    assert "simulator down" in caplog.text


async def test_close_cancels_pending_work() -> None:
    cloud = FakeCloud(create_latency=60)
    await cloud.create(req("ws1"))
    await cloud.close()
    assert cloud.peek("ws1") is not None and cloud.peek("ws1").state == InstanceState.CREATING  # type: ignore[union-attr]
    with pytest.raises(RuntimeError):
        await cloud.create(req("ws2"))


# --- settings from the provider context ------------------------------------------------------


async def test_settings_from_context_env() -> None:
    context = ProviderContext(
        env={
            "LOCATION": "westeurope",
            "ARM_SUBSCRIPTION_ID": "11111111-2222-3333-4444-555555555555",
            "ARM_RESOURCE_GROUP": "kaito-rg",
            "FAKE_CLOUD_QUOTAS": "standardNCADSA100v4Family=24",
            "FAKE_CLOUD_CAPACITY": "Standard_NC4as_T4_v3=0",
        },
        cluster_name="kaito-cluster",
    )
    async with FakeCloud(context) as cloud:
        instance = await cloud.create(req("ws1"))
        m = PROVIDER_ID.match(instance.provider_id)
        assert m and m["sub"] == "11111111-2222-3333-4444-555555555555"
        assert m["rg"] == "mc_kaito-rg_kaito-cluster_westeurope"
        assert instance.zone.startswith("westeurope-")
        with pytest.raises(InsufficientCapacity):
            await cloud.create(req("ws2"))
        with pytest.raises(InsufficientCapacity) as err:
            await cloud.create(req("ws3", T4))
        assert err.value.code == "AllocationFailed"


@pytest.mark.parametrize(
    "env",
    [
        {"FAKE_CLOUD_QUOTAS": "standardNCADSA100v4Family"},
        {"FAKE_CLOUD_CAPACITY": "Standard_NC4as_T4_v3=lots"},
        {"FAKE_CLOUD_CREATE_LATENCY_SECONDS": "-1"},
        {"FAKE_CLOUD_SEED": "abc"},
    ],
)
def test_bad_settings_are_rejected(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        FakeCloud(ProviderContext(env=env))


def test_vmss_node_name() -> None:
    pid = (
        "azure:///subscriptions/s/resourceGroups/mc_rg_c_eastus/providers/Microsoft.Compute/"
        "virtualMachineScaleSets/aks-ws1-12345678-vmss/virtualMachines/37"
    )
    assert vmss_node_name(pid) == "aks-ws1-12345678-vmss000011"


# --- the SKU catalog -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "vcpus", "memory", "gpus"),
    [
        ("Standard_NC6s_v3", "standardNCSv3Family", 6, 112, 1),
        ("Standard_NC24s_v3", "standardNCSv3Family", 24, 448, 4),
        ("Standard_NC24ads_A100_v4", "standardNCADSA100v4Family", 24, 220, 1),
        ("Standard_NC96ads_A100_v4", "standardNCADSA100v4Family", 96, 880, 4),
        ("Standard_ND96asr_v4", "standardNDASv4_A100Family", 96, 900, 8),
        ("Standard_ND96isr_H100_v5", "standardNDSH100v5Family", 96, 1900, 8),
        ("Standard_NC4as_T4_v3", "standardNCASv3_T4Family", 4, 28, 1),
        ("Standard_NC64as_T4_v3", "standardNCASv3_T4Family", 64, 440, 4),
        ("Standard_NV36ads_A10_v5", "standardNVADSA10v5Family", 36, 440, 1),
        ("Standard_NC80adis_H100_v5", "standardNCadsH100v5Family", 80, 640, 2),
        ("Standard_D2s_v3", "standardDSv3Family", 2, 8, 0),
        ("Standard_E8s_v5", "standardESv5Family", 8, 64, 0),
    ],
)
def test_catalog_facts(name: str, family: str, vcpus: int, memory: int, gpus: int) -> None:
    sku = skus.get_sku(name)
    assert sku is not None
    assert (sku.family, sku.vcpus, sku.memory_gib, sku.gpus) == (family, vcpus, memory, gpus)
    assert skus.get_sku(name.lower()) is sku


def test_catalog_lookups() -> None:
    assert skus.get_sku("Standard_Nope") is None
    names = {s.name for s in skus.all_skus()}
    assert len(names) == len(skus.all_skus()) >= 22
    assert all(s.gpu_model for s in skus.all_skus() if s.is_gpu)
    in_westus2 = {s.name for s in skus.skus_in("westus2")}
    assert A100 not in in_westus2 and T4 in in_westus2
    quotas = skus.default_quotas()
    quotas[skus.FAMILY_NCADS_A100_V4] = 0
    assert skus.default_quotas()[skus.FAMILY_NCADS_A100_V4] == 48  # a fresh copy each time
    assert set(skus.families()) <= set(quotas)
    assert all(quotas[f] <= 96 for f in skus.families() if skus.skus_of_family(f)[0].is_gpu)


def test_resource_sku_shape() -> None:
    sku = skus.get_sku(A100)
    assert sku is not None
    entry = sku.to_resource_sku("eastus")
    assert entry["name"] == A100 and entry["size"] == "NC24ads_A100_v4"
    assert entry["family"] == "standardNCADSA100v4Family"
    caps = {c["name"]: c["value"] for c in entry["capabilities"]}  # type: ignore[attr-defined]
    assert (caps["vCPUs"], caps["MemoryGB"], caps["GPUs"]) == ("24", "220", "1")
    assert entry["restrictions"] == [
        {
            "type": "Zone",
            "values": ["eastus"],
            "restrictionInfo": {"locations": ["eastus"], "zones": ["1"]},
            "reasonCode": "NotAvailableForSubscription",
        }
    ]
    assert sku.to_resource_sku("westus2") == {}
