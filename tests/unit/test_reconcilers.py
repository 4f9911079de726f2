"""The claim reconciler, claim termination and Node termination against an in-memory API server and a
scripted cloud: ownership, write economy and the races a live cluster produces."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from provisioner.claims.model import TERMINATION_FINALIZER
from provisioner.cloud.errors import CloudError, Deferred, InsufficientCapacity, Transient
from provisioner.cloud.types import TAG_CLAIM_UID, TAG_MANAGED_BY, InstanceState
from provisioner.kube import NODES, PODS, Resource
from tests.unit.world import RESOURCES, World

VOLUME_ATTACHMENTS = Resource("storage.k8s.io", "v1", "volumeattachments")
A100 = "Standard_NC24ads_A100_v4"
KAITO_TEXT = "all requested instance types were unavailable during launch"

CONDITION_NAMES = {
    "machine": ("MachineLaunched", "MachineRegistered", "MachineInitialized"),
    "nodeclaim": ("Launched", "Registered", "Initialized"),
}


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    await w.close()


async def make_ready(w: World, kind: str, name: str, **claim: Any) -> dict[str, Any]:
    """Create a claim and take it to Ready (the instance runs, its node joins Ready)."""
    w.add_claim(kind, name, instance_type=claim.pop("instance_type", A100), **claim)
    await w.settle()
    w.cloud.set_state(name, InstanceState.RUNNING)
    node = w.join_node(name)
    await w.settle()
    assert w.conditions(kind, name)["Ready"]["status"] == "True", w.conditions(kind, name)
    return w.node(node["metadata"]["name"]) or {}


def go_provisioned(w: World, kind: str, name: str) -> str:
    """A claim, its Node and its agent pool exactly as the Go gpu-provisioner leaves them: the claim
    and Node with karpenter.sh/termination, the Node owned by the claim, the pool untagged."""
    body = w.add_claim(kind, name, instance_type=A100)
    meta = body["metadata"]
    node_name = f"aks-{name}-12345678-vmss000000"
    launched, registered, initialized = CONDITION_NAMES[kind]
    conditions = [
        {
            "type": t,
            "status": "True",
            "reason": t,
            "message": "",
            "lastTransitionTime": "2026-04-01T10:00:00Z",
        }
        for t in (launched, registered, initialized, "Ready")
    ]
    if kind == "nodeclaim":
        for c in conditions:
            c["observedGeneration"] = 1
    w.kube.put(
        RESOURCES[kind],
        {
            **body,
            "metadata": {**meta, "finalizers": [TERMINATION_FINALIZER]},
            "status": {"nodeName": node_name, "conditions": conditions},
        },
    )
    pool_labels = {k: v for k, v in meta["labels"].items()}
    w.cloud.add(name, A100, tags={}, node_labels=pool_labels)
    node = w.join_node(
        name, labels={**pool_labels, "karpenter.sh/registered": "true", "karpenter.sh/initialized": "true"}
    )
    node["metadata"]["finalizers"] = [TERMINATION_FINALIZER]
    node["metadata"]["ownerReferences"] = [
        {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "name": name,
            "uid": meta["uid"],
            "blockOwnerDeletion": True,
        }
    ]
    w.kube.put(NODES, node)
    return node_name


# ------------------------------------------------------------------------------- ownership


@pytest.mark.parametrize("kind", ["machine", "nodeclaim"])
async def test_a_predecessor_pool_is_adopted_then_deleted_with_its_claim(world: World, kind: str) -> None:
    node = go_provisioned(world, kind, "wsgo0000001")
    await world.settle()
    assert "Adopted" in world.event_reasons("wsgo0000001")
    pool = world.cloud.instances["wsgo0000001"]
    assert pool.tags.get(TAG_MANAGED_BY) == "gpu-provisioner"
    assert pool.tags.get(TAG_CLAIM_UID) == world.claim(kind, "wsgo0000001")["metadata"]["uid"]  # type: ignore[index]

    world.kube.remove(RESOURCES[kind], "wsgo0000001")
    await world.settle()
    assert world.cloud.instances["wsgo0000001"].state == InstanceState.DELETING
    assert world.claim(kind, "wsgo0000001") is not None, "the claim waits until the pool is gone"
    world.cloud.finish_delete("wsgo0000001")
    world.fire_timers()
    await world.settle()
    assert world.claim(kind, "wsgo0000001") is None
    assert world.node(node) is None


async def test_an_unrecognised_pool_is_never_deleted_silently(world: World) -> None:
    go_provisioned(world, "machine", "wsgo0000002")
    world.cloud.add("wsgo0000002", A100, tags={}, node_labels={"team": "a"})
    await world.settle()
    world.kube.remove(RESOURCES["machine"], "wsgo0000002")
    await world.settle()
    assert world.cloud.count("delete", "wsgo0000002") == 0
    warnings = [e for e in world.events("wsgo0000002") if e["type"] == "Warning"]
    assert any("wsgo0000002" in e["message"] and "not deleted" in e["message"] for e in warnings), warnings


async def test_a_claim_marked_by_another_installation_is_never_ours(world: World) -> None:
    body = world.add_claim("nodeclaim", "wsother0001")
    body["metadata"].setdefault("annotations", {})["gpu-provisioner.sh/managed-by"] = "other-installation"
    world.kube.put(RESOURCES["nodeclaim"], body)
    await world.settle()
    assert world.cloud.calls == []
    assert TERMINATION_FINALIZER not in (world.claim("nodeclaim", "wsother0001") or {})["metadata"].get(
        "finalizers", []
    )


async def test_a_nodeclaim_for_another_provisioners_node_class_is_never_ours(world: World) -> None:
    body = world.add_claim("nodeclaim", "wsnap000001")
    body["spec"]["nodeClassRef"] = {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"}
    world.kube.put(RESOURCES["nodeclaim"], body)
    await world.settle()
    assert world.cloud.calls == []
    assert "finalizers" not in (world.claim("nodeclaim", "wsnap000001") or {})["metadata"]


# ------------------------------------------------------------------------------- termination


async def test_a_node_whose_claim_was_removed_by_hand_is_released(world: World) -> None:
    node = await make_ready(world, "nodeclaim", "wsgone00001")
    body = world.claim("nodeclaim", "wsgone00001")
    assert body is not None
    await world.kube.patch(RESOURCES["nodeclaim"], "wsgone00001", {"metadata": {"finalizers": None}})
    world.kube.remove(RESOURCES["nodeclaim"], "wsgone00001")
    world.kube.remove(NODES, node["metadata"]["name"])  # the garbage collector follows the ownerReference
    await world.settle()
    assert world.cloud.instances["wsgone00001"].state == InstanceState.DELETING
    world.cloud.finish_delete("wsgone00001")
    world.fire_timers()
    await world.settle()
    assert world.node(node["metadata"]["name"]) is None


async def test_instance_terminating_only_once_the_cloud_accepted_the_delete(world: World) -> None:
    await make_ready(world, "nodeclaim", "wsrefuse001")
    world.cloud.errors["delete"] = [
        CloudError("the client does not have authorization", "AuthorizationFailed")
    ]
    world.kube.remove(RESOURCES["nodeclaim"], "wsrefuse001")
    await world.settle()
    assert world.conditions("nodeclaim", "wsrefuse001").get("InstanceTerminating", {}).get("status") != "True"
    failed = [e for e in world.events("wsrefuse001") if e["reason"] == "FailedTerminatingInstance"]
    assert failed and failed[0]["type"] == "Warning" and "AuthorizationFailed" in failed[0]["message"]
    world.fire_timers()
    await world.settle()
    assert world.conditions("nodeclaim", "wsrefuse001")["InstanceTerminating"]["status"] == "True"


async def test_no_delete_is_sent_while_an_update_of_the_instance_runs(world: World) -> None:
    """A pool being updated (our adoption's tag PUT, an upgrade) refuses a DELETE with 409: wait."""
    await make_ready(world, "nodeclaim", "wsbusy00001")
    inst = world.cloud.instances["wsbusy00001"]
    world.cloud.instances["wsbusy00001"] = replace(inst, busy=True)
    world.kube.remove(RESOURCES["nodeclaim"], "wsbusy00001")
    await world.settle()
    world.fire_timers()
    await world.settle()
    assert world.cloud.count("delete", "wsbusy00001") == 0
    assert world.conditions("nodeclaim", "wsbusy00001").get("InstanceTerminating", {}).get("status") != "True"
    world.cloud.instances["wsbusy00001"] = replace(world.cloud.instances["wsbusy00001"], busy=False)
    world.fire_timers()
    await world.settle()
    assert world.cloud.count("delete", "wsbusy00001") == 1


async def test_every_node_a_claim_owns_is_released(world: World) -> None:
    node = await make_ready(world, "nodeclaim", "wssurge0001")
    # AKS surge upgrade: a second VM of the pool joins while the first still runs; both are the claim's.
    surge = world.join_node("wssurge0001", name="aks-wssurge0001-12345678-vmss000001")
    surge["metadata"]["ownerReferences"] = node["metadata"]["ownerReferences"]
    surge["metadata"]["finalizers"] = [TERMINATION_FINALIZER]
    world.kube.put(NODES, surge)
    await world.settle()
    world.kube.remove(RESOURCES["nodeclaim"], "wssurge0001")
    await world.settle()
    world.cloud.finish_delete("wssurge0001")
    world.fire_timers()
    await world.settle()
    assert world.claim("nodeclaim", "wssurge0001") is None
    assert world.node(node["metadata"]["name"]) is None
    assert world.node(surge["metadata"]["name"]) is None


async def test_the_instance_outlives_its_volume_attachments(world: World) -> None:
    node = await make_ready(world, "nodeclaim", "wsvolume001")
    attachment = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "VolumeAttachment",
        "metadata": {"name": "csi-0123"},
        "spec": {
            "attacher": "disk.csi.azure.com",
            "nodeName": node["metadata"]["name"],
            "source": {"persistentVolumeName": "pvc-models"},
        },
    }
    world.kube.put(VOLUME_ATTACHMENTS, attachment)
    world.kube.remove(RESOURCES["nodeclaim"], "wsvolume001")
    await world.settle()
    assert world.cloud.count("delete", "wsvolume001") == 0, "the disk is still attached"
    world.kube.remove(VOLUME_ATTACHMENTS, "csi-0123")
    world.fire_timers()
    await world.settle()
    assert world.cloud.count("delete", "wsvolume001") == 1


# ------------------------------------------------------------------------------- limits and waiters


async def test_max_gpus_holds_across_launches_in_flight() -> None:
    w = World(max_gpus=1)
    try:
        w.add_claim("nodeclaim", "wsgpu000001", instance_type=A100)
        w.add_claim("nodeclaim", "wsgpu000002", instance_type=A100)
        await w.settle()
        assert w.cloud.count("create") == 1
        waiting = [
            n
            for n in ("wsgpu000001", "wsgpu000002")
            if w.conditions("nodeclaim", n)["Launched"]["reason"] == "GPULimitReached"
        ]
        assert len(waiting) == 1
    finally:
        await w.close()


async def test_concurrent_launches_never_pass_max_gpus_together() -> None:
    w = World(max_gpus=1)
    try:
        w.cloud.instance_types_gate = asyncio.Event()
        w.add_claim("nodeclaim", "wsgpu000003", instance_type=A100)
        w.add_claim("nodeclaim", "wsgpu000004", instance_type=A100)
        settling = asyncio.ensure_future(w.settle())
        for _ in range(50):
            await asyncio.sleep(0)
        w.cloud.instance_types_gate.set()
        await settling
        assert w.cloud.count("create") == 1
    finally:
        await w.close()


async def test_a_freed_node_slot_wakes_the_waiting_claim_at_once() -> None:
    w = World(max_nodes=1)
    try:
        await make_ready(w, "nodeclaim", "wsslot00001")
        w.add_claim("nodeclaim", "wsslot00002", instance_type=A100)
        await w.settle()
        assert w.conditions("nodeclaim", "wsslot00002")["Launched"]["reason"] == "NodeLimitReached"
        w.kube.remove(RESOURCES["nodeclaim"], "wsslot00001")
        await w.settle()
        w.cloud.finish_delete("wsslot00001")
        w.fire_timers()  # only the deleting claim is due; the waiter must not need a timer
        await w.settle()
        assert w.claim("nodeclaim", "wsslot00001") is None
        assert w.cloud.count("create", "wsslot00002") == 1
    finally:
        await w.close()


async def test_repair_pauses_when_many_of_our_nodes_fail_whatever_other_nodes_do() -> None:
    w = World(not_ready_repair_after=60)
    try:
        nodes = [await make_ready(w, "nodeclaim", f"wsrepair{i:03d}") for i in range(2)]
        # Eight healthy nodes of another Karpenter (AKS node auto-provisioning) next to ours.
        for i in range(8):
            other = w.join_node(
                f"nap{i}", name=f"aks-nap{i}-vmss", labels={"karpenter.sh/registered": "true"}
            )
            other["metadata"]["finalizers"] = [TERMINATION_FINALIZER]
            w.kube.put(NODES, other)
        for node in nodes:
            node["status"]["conditions"][0].update(status="False", lastTransitionTime="2026-05-01T12:00:00Z")
            w.kube.put(NODES, node)
        await w.settle()
        w.advance(120)
        w.fire_timers()
        await w.settle()
        for i in range(2):
            assert w.claim("nodeclaim", f"wsrepair{i:03d}") is not None
            assert "RepairPaused" in w.event_reasons(f"wsrepair{i:03d}")
    finally:
        await w.close()


async def test_a_claim_waiting_on_quota_launches_when_the_quota_recheck_finds_room(world: World) -> None:
    world.cloud.errors["create"] = [
        InsufficientCapacity(
            "vCPU quota too low",
            "QuotaExceeded",
            instance_type=A100,
            family="NCADS",
            vcpus_needed=24,
            vcpus_free=0,
        )
    ]
    world.add_claim("nodeclaim", "wsquota0001", instance_type=A100)
    await world.settle()
    assert world.conditions("nodeclaim", "wsquota0001")["Launched"]["status"] == "False"
    world.cloud.quota_free = True
    await world.controller.recheck_capacity()
    await world.settle()
    assert world.cloud.count("create", "wsquota0001") == 2


async def test_a_launch_that_never_finishes_is_given_up() -> None:
    w = World(launch_timeout=600)
    try:
        w.add_claim("nodeclaim", "wsstuck0001", instance_type=A100)
        await w.settle()
        w.advance(601)
        w.fire_timers()
        await w.settle()
        assert "LaunchTimeout" in w.event_reasons("wsstuck0001")
        assert (w.claim("nodeclaim", "wsstuck0001") or {}).get("metadata", {}).get("deletionTimestamp")
    finally:
        await w.close()


# ------------------------------------------------------------------------------- the queue


async def test_a_failing_claim_backs_off_exponentially_and_says_so(world: World) -> None:
    await make_ready(world, "nodeclaim", "wsretry0001")
    world.cloud.errors["get"] = [
        Transient("ARM is having a bad day", "InternalServerError") for _ in range(4)
    ]
    world.kube.remove(RESOURCES["nodeclaim"], "wsretry0001")
    delays = []
    await world.settle()
    for _ in range(4):
        delay = world.due_in("nodeclaim", "wsretry0001")
        assert delay is not None
        delays.append(delay)
        world.fire_timers()
        await world.settle()
    assert all(b > a * 1.5 for a, b in itertools.pairwise(delays)), delays
    assert delays[0] <= 1.0
    warnings = [e for e in world.events("wsretry0001") if e["type"] == "Warning"]
    assert any("InternalServerError" in e["message"] for e in warnings), warnings


# ------------------------------------------------------------------------------- registration


async def test_node_writes_never_drop_a_taint_added_concurrently(world: World) -> None:
    world.add_claim("nodeclaim", "wstaint0001", instance_type=A100)
    await world.settle()
    world.cloud.set_state("wstaint0001", InstanceState.RUNNING)
    node = world.join_node("wstaint0001")
    world.deliver()  # the controller sees the Node as joined ...
    node["spec"]["taints"] = [{"key": "example.com/maintenance", "effect": "NoSchedule"}]
    world.kube.put(NODES, node)  # ... and someone taints it before the controller writes
    late = world.kube.take_events()  # the watch is late with that change
    await world.settle()
    assert {t["key"] for t in (world.node(node["metadata"]["name"]) or {})["spec"]["taints"]} == {
        "example.com/maintenance"
    }, "a write computed from the old Node must fail, not replace the taints"
    for ev in late:
        world._route(ev.resource, ev.type, ev.object)
    world.fire_timers()
    await world.settle()
    taints = {t["key"] for t in (world.node(node["metadata"]["name"]) or {})["spec"]["taints"]}
    assert {"example.com/maintenance", "sku"} <= taints, taints


async def test_claim_labels_are_applied_once_at_registration(world: World) -> None:
    node = await make_ready(world, "nodeclaim", "wslabel0001")
    name = node["metadata"]["name"]
    assert node["metadata"]["labels"]["kaito.sh/workspace"] == "workspace-falcon-7b"
    await world.kube.patch(NODES, name, {"metadata": {"labels": {"kaito.sh/workspace": None}}})
    await world.settle()
    assert "kaito.sh/workspace" not in (world.node(name) or {})["metadata"]["labels"]


async def test_startup_taints_are_put_on_the_node_at_registration(world: World) -> None:
    body = world.add_claim("nodeclaim", "wsstart0001", instance_type=A100)
    body["spec"]["startupTaints"] = [{"key": "example.com/driver-not-ready", "effect": "NoSchedule"}]
    world.kube.put(RESOURCES["nodeclaim"], body)
    await world.settle()
    world.cloud.set_state("wsstart0001", InstanceState.RUNNING)
    node = world.join_node("wsstart0001")
    await world.settle()
    taints = {t["key"] for t in (world.node(node["metadata"]["name"]) or {})["spec"]["taints"]}
    assert "example.com/driver-not-ready" in taints
    assert world.conditions("nodeclaim", "wsstart0001")["Initialized"]["reason"] == "StartupTaintsExist"


async def test_cloud_labels_never_overwrite_labels_the_user_set(world: World) -> None:
    body = world.add_claim("nodeclaim", "wszone00001", instance_type=A100)
    body["metadata"]["labels"]["topology.kubernetes.io/zone"] = "eastus-2"
    world.kube.put(RESOURCES["nodeclaim"], body)
    await world.settle()
    world.cloud.set_state("wszone00001", InstanceState.RUNNING)
    world.fire_timers()
    await world.settle()
    labels = (world.claim("nodeclaim", "wszone00001") or {})["metadata"]["labels"]
    assert labels["topology.kubernetes.io/zone"] == "eastus-2"
    assert labels["node.kubernetes.io/instance-type"] == A100


# ------------------------------------------------------------------------------- the store


async def test_a_late_watch_event_never_replaces_newer_state(world: World) -> None:
    world.add_claim("nodeclaim", "wsstale0001", instance_type=A100)
    first = world.kube.take_events()
    for ev in first:
        world._route(ev.resource, ev.type, ev.object)
    await world.settle()
    writes = len(world.kube.writes)
    for ev in first:  # the same (old) version again, e.g. from a watch that restarted from a cache
        world._route(ev.resource, ev.type, ev.object)
    await world.settle()
    assert len(world.kube.writes) == writes, [w for w in world.kube.writes[writes:]]


async def test_a_resync_forgets_claims_deleted_behind_the_watchs_back() -> None:
    w = World(max_nodes=1)
    try:
        w.add_claim("nodeclaim", "wsghost0001", instance_type=A100)
        await w.settle()
        await w.kube.patch(RESOURCES["nodeclaim"], "wsghost0001", {"metadata": {"finalizers": None}})
        w.kube.remove(RESOURCES["nodeclaim"], "wsghost0001")
        w.kube.events.clear()  # the watch missed it
        w.add_claim("nodeclaim", "wsghost0002", instance_type=A100)
        await w.settle()
        assert w.conditions("nodeclaim", "wsghost0002")["Launched"]["reason"] == "NodeLimitReached"
        await w.resync()
        await w.settle()
        assert w.cloud.count("create", "wsghost0002") == 1
    finally:
        await w.close()


async def test_a_resync_brings_a_node_whose_watch_event_was_missed(world: World) -> None:
    world.add_claim("nodeclaim", "wsmissed001", instance_type=A100)
    await world.settle()
    world.cloud.set_state("wsmissed001", InstanceState.RUNNING)
    world.join_node("wsmissed001")
    world.kube.events.clear()  # the watch missed the Node
    world.fire_timers()
    await world.settle()
    assert world.conditions("nodeclaim", "wsmissed001")["Registered"]["status"] != "True"
    await world.resync()
    await world.settle()
    assert world.conditions("nodeclaim", "wsmissed001")["Ready"]["status"] == "True"


async def test_status_writes_keep_conditions_written_by_others(world: World) -> None:
    body = world.add_claim("nodeclaim", "wsdrift0001", instance_type=A100)
    body["status"] = {
        "conditions": [
            {
                "type": "Drifted",
                "status": "True",
                "reason": "NodePoolDrifted",
                "message": "",
                "lastTransitionTime": "2026-05-01T11:00:00Z",
                "observedGeneration": 1,
            }
        ]
    }
    world.kube.put(RESOURCES["nodeclaim"], body)
    await world.settle()
    assert world.conditions("nodeclaim", "wsdrift0001")["Drifted"]["status"] == "True"
    assert world.conditions("nodeclaim", "wsdrift0001")["Launched"]["reason"] == "Launching"


async def test_condition_messages_are_cut_to_karpenters_length(world: World) -> None:
    long = "; ".join(
        f"zone eastus-{i}: ZonalAllocationFailed for Standard_NC24ads_A100_v4" for i in range(20)
    )
    world.cloud.errors["create"] = [InsufficientCapacity(f"{KAITO_TEXT}: {long}", "ZonalAllocationFailed")]
    world.add_claim("nodeclaim", "wslong00001", instance_type=A100)
    await world.settle()
    message = world.conditions("nodeclaim", "wslong00001")["Launched"]["message"]
    assert message.startswith(KAITO_TEXT)
    assert len(message) <= 300


async def test_a_drain_lasts_at_least_the_minimum_drain_time() -> None:
    w = World(min_drain_time=5.0)
    try:
        node = await make_ready(w, "nodeclaim", "wsmindr0001")
        w.kube.remove(RESOURCES["nodeclaim"], "wsmindr0001")
        await w.settle()
        assert (w.node(node["metadata"]["name"]) or {})["spec"]["unschedulable"] is True
        # A pod bound to the node just before the cordon shows up a moment later: it is evicted too.
        w.add_pod(node["metadata"]["name"], "late-pod")
        w.advance(2)
        w.fire_timers()
        await w.settle()
        assert w.cloud.count("delete", "wsmindr0001") == 0
        assert "Evicted" in w.event_reasons("wsmindr0001")
        w.advance(4)
        w.fire_timers()
        await w.settle()
        assert w.cloud.count("delete", "wsmindr0001") == 1
    finally:
        await w.close()


async def test_a_pod_gets_its_grace_period_before_the_drain_deadline() -> None:
    w = World()
    try:
        body = w.add_claim("nodeclaim", "wsgrace0001", instance_type=A100)
        body["spec"]["terminationGracePeriod"] = "120s"
        w.kube.put(RESOURCES["nodeclaim"], body)
        await w.settle()
        w.cloud.set_state("wsgrace0001", InstanceState.RUNNING)
        node = w.join_node("wsgrace0001")
        await w.settle()
        w.add_pod(node["metadata"]["name"], "model-server", terminationGracePeriodSeconds=60)
        w.kube.protected_pods.add(("default", "model-server"))  # a PodDisruptionBudget refuses it
        w.kube.remove(RESOURCES["nodeclaim"], "wsgrace0001")
        await w.settle()
        assert "FailedDraining" in w.event_reasons("wsgrace0001")
        assert w.kube.peek(PODS, "model-server", "default") is not None
        w.advance(61)  # the deadline is now less than the pod's 60 s away
        w.fire_timers()
        await w.settle()
        assert "DeletingPodBeforeDeadline" in w.event_reasons("wsgrace0001")
        assert w.kube.peek(PODS, "model-server", "default") is None
    finally:
        await w.close()


def test_one_claim_read_through_two_api_versions_is_one_key() -> None:
    from dataclasses import replace as _replace

    from provisioner.claims.dialects import NODECLAIM
    from provisioner.kube import Resource as _Resource
    from provisioner.store import Store

    v1beta1 = _replace(NODECLAIM, resource=_Resource("karpenter.sh", "v1beta1", "nodeclaims"))
    store = Store(lambda c: c.name, lambda n: None)
    body = {"metadata": {"name": "ws1", "uid": "u1", "resourceVersion": "5"}, "spec": {}}
    assert store.put_claim(NODECLAIM, body) is not None
    assert store.put_claim(v1beta1, body) is None  # the same object, the same version: nothing new
    assert (
        store.put_claim(v1beta1, {**body, "metadata": {**body["metadata"], "resourceVersion": "6"}})
        is not None
    )
    assert [c.name for c in store.claims()] == ["ws1"]


def test_a_late_answer_never_brings_a_deleted_claim_back() -> None:
    """The answer to our last finalizer removal may be read after the watch reported the delete:
    storing it would leave a claim that no longer exists (and its NodePool waiting for it)."""
    from provisioner.claims.dialects import NODECLAIM
    from provisioner.store import Store

    store = Store(lambda c: c.name, lambda n: None)
    owner = [{"kind": "NodePool", "name": "np", "uid": "np-uid"}]
    meta = {"name": "np-abcde", "uid": "u1", "resourceVersion": "5", "ownerReferences": owner}
    assert store.put_claim(NODECLAIM, {"metadata": meta, "spec": {}}) is not None
    store.remove_claim(NODECLAIM.key("np-abcde"), deleted=True)
    late = {**meta, "resourceVersion": "7", "deletionTimestamp": "2026-12-02T00:00:00Z", "finalizers": []}
    assert store.put_claim(NODECLAIM, {"metadata": late, "spec": {}}) is None
    assert store.claims() == [] and store.claims_owned_by("np-uid") == []
    # A claim forgotten for other reasons (a relist) may come back.
    assert store.put_claim(NODECLAIM, {"metadata": {**meta, "uid": "u2"}, "spec": {}}) is not None
    store.remove_claim(NODECLAIM.key("np-abcde"))
    assert store.put_claim(NODECLAIM, {"metadata": {**meta, "uid": "u2", "resourceVersion": "9"}, "spec": {}})


@pytest.mark.parametrize("kind", ["machine", "nodeclaim"])
@pytest.mark.parametrize(
    ("where", "item", "reason"),
    [
        ("requirements", {"key": "example.com/team", "operator": "In", "values": ["café"]}, "InvalidLabel"),
        ("requirements", {"key": "bad key", "operator": "In", "values": ["v"]}, "InvalidLabel"),
        ("taints", {"key": "sku", "value": "gpu", "effect": "Bogus"}, "InvalidTaint"),
        ("startupTaints", {"key": "k" * 300, "effect": "NoSchedule"}, "InvalidTaint"),
    ],
)
async def test_a_label_or_taint_kubernetes_refuses_stops_the_claim_before_any_cloud_call(
    world: World, kind: str, where: str, item: dict[str, Any], reason: str
) -> None:
    body = world.add_claim(kind, "wsbadinput1", instance_type=A100)
    body["spec"].setdefault(where, []).append(item)
    world.kube.put(RESOURCES[kind], body)
    await world.settle()
    launched = world.conditions(kind, "wsbadinput1")[CONDITION_NAMES[kind][0]]
    assert (launched["status"], launched["reason"]) == ("False", reason), launched
    assert "LaunchFailed" in world.event_reasons("wsbadinput1")
    assert world.cloud.count("create") == 0
    # It stays that way: the claim is not retried into the cloud.
    world.advance(600)
    world.fire_timers()
    await world.settle()
    assert world.cloud.count("create") == 0


@pytest.mark.parametrize("kind", ["machine", "nodeclaim"])
async def test_a_node_that_existed_before_the_claim_is_never_its_node(world: World, kind: str) -> None:
    """A Node someone made earlier with the pool's label and a providerID of the pool's scale set
    (a leftover of an earlier pool of that name) is not the claim's node: the one that joins is."""
    impostor = world.join_node("wsimpostor1", name="aks-wsimpostor1-11111111-vmss000000")
    world.advance(5)
    world.add_claim(kind, "wsimpostor1", instance_type=A100)
    await world.settle()
    world.advance(30)
    await world.settle()
    registered = CONDITION_NAMES[kind][1]
    assert world.conditions(kind, "wsimpostor1")[registered]["status"] != "True"
    untouched = world.node(impostor["metadata"]["name"]) or {}
    assert not untouched["metadata"].get("ownerReferences")
    assert not untouched["metadata"].get("finalizers")

    world.cloud.set_state("wsimpostor1", InstanceState.RUNNING)
    world.advance(60)
    real = world.join_node("wsimpostor1")
    await world.settle()
    conditions = world.conditions(kind, "wsimpostor1")
    assert conditions["Ready"]["status"] == "True", conditions
    body = world.claim(kind, "wsimpostor1") or {}
    assert body["status"]["nodeName"] == real["metadata"]["name"]
    assert not (world.node(impostor["metadata"]["name"]) or {})["metadata"].get("ownerReferences")


@pytest.mark.parametrize("kind", ["machine", "nodeclaim"])
async def test_secrets_in_cloud_errors_never_reach_conditions_or_events(world: World, kind: str) -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJncHUtcHJvdmlzaW9uZXIifQ.c2lnbmF0dXJlLXZhbHVl"
    leaky = (
        f"token request failed: Authorization: Bearer abcDEF123456789 client_secret=hunter2-value "
        f"client_assertion={jwt} " + "x" * 2000
    )
    world.cloud.errors["create"] = [InsufficientCapacity(leaky, "QuotaExceeded"), Transient(leaky, "Boom")]
    world.add_claim(kind, "wsleaky0001", instance_type=A100)
    await world.settle()
    world.fire_timers()
    await world.settle()
    assert world.cloud.count("create") >= 2
    body = world.claim(kind, "wsleaky0001") or {}
    written = [c.get("message", "") for c in body["status"]["conditions"]]
    written += [e["message"] for e in world.events("wsleaky0001")]
    assert any("***" in text for text in written), written
    for text in written:
        for secret in ("abcDEF123456789", "hunter2-value", jwt, jwt[:20]):
            assert secret not in text, text
        assert len(text) <= 1024


async def test_a_machine_and_a_nodeclaim_of_one_name_do_not_fight_over_one_instance(world: World) -> None:
    """Both map to the same instance name: the later one is told so at once, with no cloud call."""
    world.add_claim("machine", "wstwin00001", instance_type=A100)
    await world.settle()
    world.advance(2)
    world.add_claim("nodeclaim", "wstwin00001", instance_type=A100)
    await world.settle()
    launched = world.conditions("nodeclaim", "wstwin00001")["Launched"]
    assert (launched["status"], launched["reason"]) == ("False", "InstanceNameInUse"), launched
    assert "Machine wstwin00001" in launched["message"]
    assert world.cloud.count("create") == 1
    assert world.event_reasons("wstwin00001").count("LaunchFailed") == 1

    # The Machine is unaffected and becomes Ready on the instance.
    world.cloud.set_state("wstwin00001", InstanceState.RUNNING)
    world.join_node("wstwin00001")
    await world.settle()
    assert world.conditions("machine", "wstwin00001")["Ready"]["status"] == "True"
    machine_uid = (world.claim("machine", "wstwin00001") or {})["metadata"]["uid"]
    assert world.cloud.instances["wstwin00001"].tags[TAG_CLAIM_UID] == machine_uid
    assert world.conditions("nodeclaim", "wstwin00001")["Launched"]["reason"] == "InstanceNameInUse"


async def test_a_claim_launched_by_its_joining_node_waits_for_the_gpus_the_instance_type_has(
    world: World,
) -> None:
    """Launch, registration and initialization in one reconcile (the node joined while the cloud
    still said "creating", as a shared pool's node always does): the GPUs the launch just learned
    of must be on the node before the claim is Initialized."""
    world.cloud.initial_state = InstanceState.CREATING
    world.add_claim("nodeclaim", "wsgpu00001", instance_type=A100)
    await world.settle()
    node = world.join_node("wsgpu00001")
    for field in ("capacity", "allocatable"):
        del node["status"][field]["nvidia.com/gpu"]
    world.kube.put(NODES, node)
    await world.settle()
    conditions = world.conditions("nodeclaim", "wsgpu00001")
    assert conditions["Launched"]["status"] == "True" and conditions["Registered"]["status"] == "True"
    assert conditions["Initialized"]["reason"] == "ResourceNotRegistered", conditions["Initialized"]


async def test_a_create_the_provider_held_back_is_tried_when_due_and_tells_no_one(world: World) -> None:
    world.cloud.errors["create"] = [Deferred("rate limit backlog", "ClientRateLimited", retry_after=3.0)]
    world.add_claim("nodeclaim", "wsheld00001", instance_type=A100)
    await world.settle()
    assert world.cloud.count("create") == 1
    assert world.due_in("nodeclaim", "wsheld00001") == pytest.approx(3.0, abs=0.05)
    assert not [e for e in world.events("wsheld00001") if e["type"] == "Warning"]
    assert world.conditions("nodeclaim", "wsheld00001")["Launched"]["reason"] == "AwaitingReconciliation"
    world.advance(3.0)
    world.fire_timers()
    await world.settle()
    assert world.cloud.count("create") == 2
    assert world.conditions("nodeclaim", "wsheld00001")["Launched"]["reason"] == "Launching"
