"""The fake ARM server's AKS semantics for operations on one agent pool, driven by the real Azure SDK
over verified TLS: Retry-After on long-running operations, one operation per pool at a time, count
updates, deleteMachines and the machines API, and the per-cluster agent pool limit."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.containerservice.aio import ContainerServiceClient
from azure.mgmt.containerservice.models import AgentPool, AgentPoolDeleteMachinesParameter
from yarl import URL

from fakes.arm import FakeArm, FakeArmConfig, PoolInfo
from fakes.arm.config import ConfigError
from fakes.arm.hooks import node_internal_ip
from fakes.simulator import specs_from_pool
from provisioner.cloud import InstanceRequest, InstanceState
from provisioner.cloud.azure import AzureCloud
from tests.integration.conftest import CLUSTER, FAST, RESOURCE_GROUP, SUBSCRIPTION, wait_for

T4 = "Standard_NC4as_T4_v3"  # 4 vCPUs, 1 GPU
API = "api-version=2026-08-01"
CLUSTER_PATH = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    f"/providers/Microsoft.ContainerService/managedClusters/{CLUSTER}"
)


def pool(count: int = 1, **extra: Any) -> AgentPool:
    return AgentPool(vm_size=T4, count=count, mode="User", os_type="Linux", **extra)


async def create(aks: ContainerServiceClient, name: str, spec: AgentPool | None = None) -> AgentPool:
    poller = await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, name, spec or pool())
    return await poller.result()


async def put(aks: ContainerServiceClient, name: str, spec: AgentPool) -> Any:
    """Start a create or update; the SDK's poller (not awaited)."""
    return await aks.agent_pools.begin_create_or_update(RESOURCE_GROUP, CLUSTER, name, spec)


async def delete_machines(aks: ContainerServiceClient, name: str, *machines: str) -> Any:
    return await aks.agent_pools.begin_delete_machines(
        RESOURCE_GROUP, CLUSTER, name, AgentPoolDeleteMachinesParameter(machine_names=list(machines))
    )


async def machine_names(aks: ContainerServiceClient, name: str) -> list[str]:
    return [m.name async for m in aks.machines.list(RESOURCE_GROUP, CLUSTER, name)]


def info(arm: FakeArm, name: str) -> PoolInfo:
    found = arm.pool(name)
    assert found is not None, f"no pool {name}"
    return found


def state(arm: FakeArm, name: str) -> str | None:
    found = arm.pool(name)
    return None if found is None else found.provisioning_state


def running_operation(arm: FakeArm, name: str) -> str:
    (found,) = [p for p in arm.store.pools.values() if p.name == name]
    assert found.operation is not None, f"no operation runs on {name}"
    return found.operation.id


class Recorder:
    """A pool observer (as the node simulator is one) that keeps what it heard."""

    def __init__(self) -> None:
        self.events: list[tuple[str, PoolInfo]] = []

    async def on_pool_running(self, pool: PoolInfo) -> None:
        self.events.append(("running", pool))

    async def on_pool_deleted(self, pool: PoolInfo) -> None:
        self.events.append(("deleted", pool))

    def last(self, name: str) -> PoolInfo:
        return [i for _, i in self.events if i.name == name][-1]


@pytest.fixture
def recorder(arm: FakeArm) -> Recorder:
    observer = Recorder()
    arm.add_observer(observer)
    return observer


class Raw:
    """Plain HTTPS calls to the fake with a bearer token it issued: status, headers and body."""

    def __init__(self, arm: FakeArm, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {arm.issue_token()}"}

    async def __call__(
        self, method: str, url: str, body: Any = None
    ) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        target = URL(url)
        path = target.path_qs if target.is_absolute() else url
        async with self.http.request(method, path, json=body, headers=self.headers) as resp:
            raw = await resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None


@pytest.fixture
def raw(arm: FakeArm, http: aiohttp.ClientSession) -> Raw:
    return Raw(arm, http)


def pool_url(name: str, tail: str = "") -> str:
    return f"{CLUSTER_PATH}/agentPools/{name}{tail}?{API}"


# -- Retry-After on long-running operations ------------------------------------------------------


def test_retry_after_is_on_by_default_and_null_turns_it_off(tmp_path: Path) -> None:
    assert FakeArmConfig().lro_retry_after == 1
    assert FakeArmConfig.from_dict({}).lro_retry_after == 1
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"lro_retry_after": None}))
    assert FakeArmConfig.from_file(config).lro_retry_after is None
    assert FakeArmConfig.from_dict({"lro_retry_after": 3}).lro_retry_after == 3
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ConfigError, match="lro_retry_after"):
            FakeArmConfig.from_dict({"lro_retry_after": bad})


async def test_every_lro_answer_and_running_poll_carries_retry_after(arm: FakeArm, raw: Raw) -> None:
    arm.add_fault({"action": "stuck", "name": "wsra"})
    status, headers, _ = await raw("PUT", pool_url("wsra"), {"properties": {"vmSize": T4, "count": 2}})
    assert status == 201
    assert headers["Retry-After"] == "1"
    status_url, result_url = headers["Azure-AsyncOperation"], headers["Location"]

    status, headers, body = await raw("GET", status_url)
    assert (status, headers["Retry-After"]) == (200, "1")
    assert body is not None and body["status"] == "InProgress"
    status, headers, _ = await raw("GET", result_url)
    assert (status, headers["Retry-After"]) == (202, "1")

    arm.store.finish(running_operation(arm, "wsra"))
    status, headers, body = await raw("GET", status_url)
    assert body is not None and (status, body["status"]) == (200, "Succeeded")
    assert "Retry-After" not in headers  # nothing left to wait for

    for method, tail, body_sent in (
        ("POST", "/deleteMachines", {"machineNames": [info(arm, "wsra").node_name(1)]}),
        ("DELETE", "", None),
    ):
        await wait_for(lambda: state(arm, "wsra") == "Succeeded")
        status, headers, _ = await raw(method, pool_url("wsra", tail), body_sent)
        assert status == 202, (method, tail)
        assert headers["Retry-After"] == "1"
        assert "/operations/" in headers["Azure-AsyncOperation"]
        assert "/operationresults/" in headers["Location"]


async def test_the_sdk_poller_waits_the_retry_after_between_polls(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    arm.add_fault({"action": "latency", "operation": "create", "name": "wsslow", "delay": 1.6})
    before = arm.log.last_seq
    # The client's own polling_interval is 0.05 s: only the header makes it wait a second.
    created = await create(aks, "wsslow")
    assert created.provisioning_state == "Succeeded"

    # The poller reads the status once at once, then once a second until the operation ended.
    polls = [p.timestamp for p in arm.requests("GET", r"/operations/", since=before)]
    assert len(polls) == 3
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert all(gap >= 0.95 for gap in gaps), gaps


async def test_without_retry_after_the_sdk_polls_at_its_own_interval(
    arm: FakeArm, aks: ContainerServiceClient, http: aiohttp.ClientSession, raw: Raw
) -> None:
    resp = await http.post("/_fake/settings", json={"lro_retry_after": None})
    assert (await resp.json())["lro_retry_after"] is None
    arm.add_fault({"action": "latency", "operation": "create", "name": "wsquick", "delay": 0.5})
    before = arm.log.last_seq
    await create(aks, "wsquick")
    polls = arm.requests("GET", r"/operations/", since=before)
    assert len(polls) >= 4  # every 0.05 s for half a second
    status, headers, _ = await raw("DELETE", pool_url("wsquick"))
    assert status == 202 and "Retry-After" not in headers

    bad = await http.post("/_fake/settings", json={"lro_retry_after": -2})
    assert bad.status == 400
    assert (await http.post("/_fake/reset")).status == 200
    assert (await (await http.get("/_fake/settings")).json())["lro_retry_after"] == 1


async def test_the_controller_never_waits_the_retry_after(
    arm: FakeArm, providers: Callable[..., AzureCloud]
) -> None:
    """The AKS provider starts operations with polling off and reads the pool back with GET: the
    header costs it no time and no operation-status call."""
    cloud = providers()
    request = InstanceRequest(
        claim_name="wsctl",
        claim_uid="uid-wsctl",
        name="wsctl",
        instance_types=(T4,),
        labels={"kaito.sh/workspace": "wsctl"},
    )
    started = time.monotonic()
    created = await cloud.create(request)
    assert created.state == InstanceState.CREATING
    assert time.monotonic() - started < 0.9  # under the 1 s Retry-After of the PUT's answer

    async def is_running() -> bool:
        return (await cloud.get("wsctl")).state == InstanceState.RUNNING

    await wait_for(is_running)
    started = time.monotonic()
    await cloud.delete("wsctl")
    assert time.monotonic() - started < 0.9
    await wait_for(lambda: arm.pool("wsctl") is None)
    assert arm.requests("PUT", r"/agentPools/wsctl$")[0].status == 201
    assert arm.requests("DELETE", r"/agentPools/wsctl$")[0].status == 202
    assert not arm.requests("GET", r"/operation(s|results)/")


# -- one operation per pool ------------------------------------------------------------------------


async def test_scaling_pool_refuses_every_other_write(arm: FakeArm, aks: ContainerServiceClient) -> None:
    await create(aks, "wsbusy", pool(2))
    arm.add_fault({"action": "stuck", "operation": "update", "name": "wsbusy", "count": 1})
    scaling = await put(aks, "wsbusy", pool(3))
    assert state(arm, "wsbusy") == "Scaling"
    first = info(arm, "wsbusy").node_name(0)

    attempts = {
        "PUT": put(aks, "wsbusy", pool(3)),
        "DELETE": aks.agent_pools.begin_delete(RESOURCE_GROUP, CLUSTER, "wsbusy"),
        "deleteMachines": delete_machines(aks, "wsbusy", first),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ResourceExistsError) as err:
            await attempt
        assert err.value.status_code == 409, what
        assert err.value.error is not None and err.value.error.code == "OperationNotAllowed", what
        assert err.value.error.message.startswith(
            "Operation is not allowed: Another agentpool operation (wsbusy - Scaling) is in progress, "
            "please wait for it to finish before starting a new operation."
        ), what
    # Nothing of the refused writes took effect.
    assert (info(arm, "wsbusy").count, state(arm, "wsbusy")) == (3, "Scaling")

    arm.store.finish(running_operation(arm, "wsbusy"))
    assert (await scaling.result()).count == 3
    # Once it is done, the next write is accepted.
    assert (await (await put(aks, "wsbusy", pool(1))).result()).count == 1


async def test_a_deleting_pool_refuses_writes_until_gone(arm: FakeArm, aks: ContainerServiceClient) -> None:
    await create(aks, "wsgone", pool(2))
    arm.add_fault({"action": "stuck", "operation": "delete", "name": "wsgone"})
    deleting = await aks.agent_pools.begin_delete(RESOURCE_GROUP, CLUSTER, "wsgone")
    for attempt in (
        put(aks, "wsgone", pool(2)),
        delete_machines(aks, "wsgone", info(arm, "wsgone").node_name(0)),
    ):
        with pytest.raises(ResourceExistsError) as err:
            await attempt
        assert "(wsgone - Deleting) is in progress" in err.value.error.message
    arm.store.finish(running_operation(arm, "wsgone"))
    await deleting.result()
    assert arm.pool("wsgone") is None
    # A create of the same name is a new pool now.
    assert (await create(aks, "wsgone")).provisioning_state == "Succeeded"


async def test_an_identical_put_during_the_create_gets_409(arm: FakeArm, aks: ContainerServiceClient) -> None:
    """AKS does not treat a re-sent create as idempotent while it runs (the controller reads the
    pool and adopts it instead, see test_azure_provider)."""
    arm.add_fault({"action": "stuck", "name": "wsagain"})
    creating = await put(aks, "wsagain", pool())
    with pytest.raises(ResourceExistsError) as err:
        await put(aks, "wsagain", pool())
    assert "(wsagain - Creating) is in progress" in err.value.error.message
    assert [r.status for r in arm.requests("PUT", r"/agentPools/wsagain$")] == [201, 409]
    arm.store.finish(running_operation(arm, "wsagain"))
    assert (await creating.result()).provisioning_state == "Succeeded"


@pytest.mark.parametrize("arm_config", [FakeArmConfig(latency=FAST, serialize_pool_operations=False)])
async def test_without_serialization_a_later_operation_cancels_the_running_one(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    arm.add_fault({"action": "stuck", "name": "wsrace", "count": 1})
    first = await put(aks, "wsrace", pool(1))
    second = await put(aks, "wsrace", pool(2))
    with pytest.raises(HttpResponseError) as err:
        await first.result()
    assert err.value.error is not None and err.value.error.code == "Canceled"
    assert "canceled by a later operation" in err.value.error.message
    assert (await second.result()).count == 2

    arm.add_fault({"action": "stuck", "operation": "update", "name": "wsrace", "count": 1})
    await put(aks, "wsrace", pool(3))
    await (await aks.agent_pools.begin_delete(RESOURCE_GROUP, CLUSTER, "wsrace")).result()
    assert arm.pool("wsrace") is None


async def test_serialization_can_be_switched_at_run_time(
    arm: FakeArm, aks: ContainerServiceClient, http: aiohttp.ClientSession
) -> None:
    settings = await (await http.get("/_fake/settings")).json()
    assert settings["serialize_pool_operations"] is True
    resp = await http.post("/_fake/settings", json={"serialize_pool_operations": False})
    assert (await resp.json())["serialize_pool_operations"] is False
    arm.add_fault({"action": "stuck", "name": "wsflip", "count": 1})
    await put(aks, "wsflip", pool())
    assert (await (await put(aks, "wsflip", pool())).result()).provisioning_state == "Succeeded"
    assert (await http.post("/_fake/settings", json={"serialize_pool_operations": "no"})).status == 400
    assert FakeArmConfig.from_dict({"serialize_pool_operations": False}).serialize_pool_operations is False
    await http.post("/_fake/reset")
    assert arm.config.serialize_pool_operations is True


# -- count updates -----------------------------------------------------------------------------------


async def test_a_count_change_scales_with_new_instance_ids_and_removes_the_highest(
    arm: FakeArm, aks: ContainerServiceClient, recorder: Recorder
) -> None:
    arm.set_latency(update=0.5)
    await create(aks, "wsscale", pool(1))
    await wait_for(lambda: len(recorder.events) == 1)
    base = info(arm, "wsscale")
    assert recorder.last("wsscale").instances() == (0,)

    scaling = await put(aks, "wsscale", pool(3))
    started = time.monotonic()
    during = await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsscale")
    assert (during.provisioning_state, during.count) == ("Scaling", 3)
    await wait_for(lambda: state(arm, "wsscale") == "Succeeded")
    assert time.monotonic() - started >= 0.45  # the update latency
    assert (await scaling.result()).count == 3
    await wait_for(lambda: len(recorder.events) == 2)
    assert recorder.last("wsscale").instances() == (0, 1, 2)
    assert await machine_names(aks, "wsscale") == [base.node_name(i) for i in (0, 1, 2)]

    # A blind scale-in removes the highest instance ids ...
    await (await put(aks, "wsscale", pool(1))).result()
    await wait_for(lambda: len(recorder.events) == 3)
    assert recorder.last("wsscale").instances() == (0,)
    # ... and a scale-out never gives an id out twice.
    await (await put(aks, "wsscale", pool(2))).result()
    await wait_for(lambda: len(recorder.events) == 4)
    assert recorder.last("wsscale").instances() == (0, 3)
    assert await machine_names(aks, "wsscale") == [base.node_name(0), f"{base.vmss_name}000003"]


async def test_count_and_other_changes_together_are_updating(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    await create(aks, "wsupd", pool(1))
    updating = await put(aks, "wsupd", pool(2, tags={"team": "ml"}))
    assert state(arm, "wsupd") == "Updating"
    assert (await updating.result()).count == 2
    tags_only = await put(aks, "wsupd", pool(2, tags={"team": "ai"}))
    assert state(arm, "wsupd") == "Updating"
    await tags_only.result()
    assert info(arm, "wsupd").instances() == (0, 1)  # no VM made or removed


async def test_scale_out_beyond_quota_is_refused(arm: FakeArm, aks: ContainerServiceClient) -> None:
    arm.set_quota("standardNCASv3_T4Family", 8)
    await create(aks, "wsq", pool(2))
    with pytest.raises(HttpResponseError) as err:
        await put(aks, "wsq", pool(3))
    assert err.value.error.code == "QuotaExceeded"
    assert "Current Limit: 8, Current Usage: 8, Additional Required: 4" in err.value.error.message
    assert (info(arm, "wsq").count, state(arm, "wsq")) == (2, "Succeeded")


# -- deleteMachines and the machines API -------------------------------------------------------------


async def test_delete_machines_removes_exactly_the_named_machines(
    arm: FakeArm, aks: ContainerServiceClient, recorder: Recorder
) -> None:
    await create(aks, "wsdm", pool(4, availability_zones=["2", "3"]))
    await wait_for(lambda: len(recorder.events) == 1)
    names = await machine_names(aks, "wsdm")
    assert names == [info(arm, "wsdm").node_name(i) for i in range(4)]

    poller = await delete_machines(aks, "wsdm", names[1], names[2].upper(), names[1])
    during = await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsdm")
    assert (during.provisioning_state, during.count) == ("Scaling", 2)
    assert await poller.result() is None
    assert [r.status for r in arm.requests("POST", r"/deleteMachines$")] == [202]

    after = await aks.agent_pools.get(RESOURCE_GROUP, CLUSTER, "wsdm")
    assert (after.provisioning_state, after.count) == ("Succeeded", 2)
    await wait_for(lambda: len(recorder.events) == 2)
    assert recorder.last("wsdm").instances() == (0, 3)
    assert await machine_names(aks, "wsdm") == [names[0], names[3]]
    # The simulator would now run exactly the Nodes of the machines left.
    assert [s.name for s in specs_from_pool(recorder.last("wsdm"))] == [names[0], names[3]]
    assert [s.labels["topology.kubernetes.io/zone"] for s in specs_from_pool(recorder.last("wsdm"))] == [
        "eastus-2",
        "eastus-3",
    ]

    # Scaling out again adds a new instance, not one of the deleted.
    await (await put(aks, "wsdm", pool(3, availability_zones=["2", "3"]))).result()
    assert await machine_names(aks, "wsdm") == [names[0], names[3], f"{info(arm, 'wsdm').vmss_name}000004"]


async def test_delete_machines_with_unknown_names_is_refused(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    await create(aks, "wsbad", pool(2))
    known = info(arm, "wsbad").node_name(0)
    wrong = [f"aks-wsbad-{info(arm, 'wsbad').vmss_id}-vmss000009", "aks-other-12345678-vmss000000"]
    with pytest.raises(HttpResponseError) as err:
        await delete_machines(aks, "wsbad", known, *wrong)
    assert err.value.status_code == 400
    assert err.value.error.code == "InvalidParameter"
    assert err.value.error.target == "machineNames"
    assert all(f"'{w}'" in err.value.error.message for w in wrong)
    assert known not in err.value.error.message
    for body in ({"machineNames": []}, {"machineNames": "x"}, {}):
        with pytest.raises(HttpResponseError) as err:
            await aks.agent_pools.begin_delete_machines(RESOURCE_GROUP, CLUSTER, "wsbad", body)
        assert (err.value.status_code, err.value.error.code) == (400, "InvalidParameter")
    with pytest.raises(ResourceNotFoundError) as missing:
        await delete_machines(aks, "wsnone", known)
    assert missing.value.error.code == "NotFound"
    # Nothing changed.
    assert (info(arm, "wsbad").count, state(arm, "wsbad"), info(arm, "wsbad").instances()) == (
        2,
        "Succeeded",
        (0, 1),
    )
    assert not arm.requests("POST", r"/deleteMachines$", status=202)


async def test_a_system_pool_keeps_one_machine(arm: FakeArm, aks: ContainerServiceClient) -> None:
    await create(aks, "sys", AgentPool(vm_size="Standard_D4s_v3", count=1, mode="System"))
    with pytest.raises(HttpResponseError) as err:
        await delete_machines(aks, "sys", info(arm, "sys").node_name(0))
    assert (err.value.status_code, err.value.error.code) == (400, "InvalidParameter")
    assert info(arm, "sys").instances() == (0,)


async def test_a_user_pool_may_lose_every_machine(arm: FakeArm, aks: ContainerServiceClient) -> None:
    await create(aks, "wszero", pool(1))
    await (await delete_machines(aks, "wszero", info(arm, "wszero").node_name(0))).result()
    assert (info(arm, "wszero").count, info(arm, "wszero").instances()) == (0, ())
    assert await machine_names(aks, "wszero") == []


async def test_delete_machines_faults(arm: FakeArm, aks: ContainerServiceClient) -> None:
    await create(aks, "wsflt", pool(2))
    target = info(arm, "wsflt").node_name(1)
    arm.add_fault(
        {"action": "reject", "operation": "deleteMachines", "code": "InternalServerError", "count": 1}
    )
    with pytest.raises(HttpResponseError) as err:
        await delete_machines(aks, "wsflt", target)
    assert err.value.error.code == "InternalServerError"
    arm.add_fault({"action": "fail", "operation": "deleteMachines", "code": "VMExtensionError", "count": 1})
    with pytest.raises(HttpResponseError) as err:
        await (await delete_machines(aks, "wsflt", target)).result()
    assert err.value.error.code == "VMExtensionError"
    assert state(arm, "wsflt") == "Failed"
    assert info(arm, "wsflt").instances() == (0, 1)  # the VMs are still there


async def test_machines_map_to_the_nodes_provider_ids(arm: FakeArm, aks: ContainerServiceClient) -> None:
    await create(aks, "wsmap", pool(3, availability_zones=["1", "2", "3"]))
    pool_info = info(arm, "wsmap")
    listed = [m async for m in aks.machines.list(RESOURCE_GROUP, CLUSTER, "wsmap")]
    assert len(arm.requests("GET", r"/machines$")) == 2  # page_size 2: three machines, two pages
    assert [m.name for m in listed] == [pool_info.node_name(i) for i in range(3)]
    for index, machine in enumerate(listed):
        assert machine.id == f"{pool_info.id}/machines/{machine.name}"
        assert machine.type == "Microsoft.ContainerService/managedClusters/agentPools/machines"
        assert machine.zones == [str(index + 1)]
        # A controller matches a Node's providerID to the machine's VM (case-insensitively: AKS
        # lowercases the node resource group in provider ids).
        assert f"azure://{machine.properties.resource_id}".lower() == pool_info.provider_id(index).lower()
        (address,) = machine.properties.network.ip_addresses
        assert (address.family, address.ip) == ("IPv4", node_internal_ip(machine.name))

    one = await aks.machines.get(RESOURCE_GROUP, CLUSTER, "wsmap", pool_info.node_name(2))
    assert one.as_dict() == listed[2].as_dict()
    with pytest.raises(ResourceNotFoundError) as err:
        await aks.machines.get(RESOURCE_GROUP, CLUSTER, "wsmap", pool_info.node_name(7))
    assert err.value.error.code == "NotFound"
    with pytest.raises(ResourceNotFoundError):
        _ = [m async for m in aks.machines.list(RESOURCE_GROUP, CLUSTER, "wsnone")]


async def test_a_creating_pool_has_no_machines_yet(arm: FakeArm, aks: ContainerServiceClient) -> None:
    arm.add_fault({"action": "stuck", "name": "wsnew"})
    await put(aks, "wsnew", pool(2))
    assert await machine_names(aks, "wsnew") == []
    arm.store.finish(running_operation(arm, "wsnew"))
    assert len(await machine_names(aks, "wsnew")) == 2


@pytest.mark.parametrize(
    "arm_config",
    [
        FakeArmConfig(
            latency=FAST,
            denied_actions=[
                "Microsoft.ContainerService/managedClusters/agentPools/deleteMachines/action",
                "Microsoft.ContainerService/managedClusters/agentPools/machines/read",
            ],
        )
    ],
)
async def test_delete_machines_and_machines_read_need_their_own_rbac_actions(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    await create(aks, "wsrbac", pool(1))
    for call in (
        delete_machines(aks, "wsrbac", info(arm, "wsrbac").node_name(0)),
        machine_names(aks, "wsrbac"),
    ):
        with pytest.raises(HttpResponseError) as err:
            await call
        assert (err.value.status_code, err.value.error.code) == (403, "AuthorizationFailed")


# -- the agent pool limit ------------------------------------------------------------------------------


async def test_the_pool_limit_is_aks_and_can_be_changed_at_run_time(
    arm: FakeArm, aks: ContainerServiceClient, http: aiohttp.ClientSession
) -> None:
    assert FakeArmConfig().max_pools_per_cluster == 100
    cluster = await aks.managed_clusters.get(RESOURCE_GROUP, CLUSTER)
    assert cluster.max_agent_pools == 100

    resp = await http.post("/_fake/settings", json={"max_pools_per_cluster": 2})
    assert (await resp.json())["max_pools_per_cluster"] == 2
    assert (await aks.managed_clusters.get(RESOURCE_GROUP, CLUSTER)).max_agent_pools == 2
    await asyncio.gather(create(aks, "wsone"), create(aks, "wstwo"))
    with pytest.raises(HttpResponseError) as err:
        await put(aks, "wsthree", pool())
    assert err.value.status_code == 400
    assert err.value.error.code == "InvalidParameter"
    assert f"managed cluster '{CLUSTER}' cannot exceed 2" in err.value.error.message
    assert arm.pool("wsthree") is None
    # Pools that exist can still be changed at the limit.
    assert (await (await put(aks, "wsone", pool(2))).result()).count == 2

    await http.post("/_fake/settings", json={"max_pools_per_cluster": 3})
    assert (await create(aks, "wsthree")).provisioning_state == "Succeeded"
    for bad in (0, "many", True):
        assert (await http.post("/_fake/settings", json={"max_pools_per_cluster": bad})).status == 400
    await http.post("/_fake/reset")
    assert (await (await http.get("/_fake/settings")).json())["max_pools_per_cluster"] == 100
