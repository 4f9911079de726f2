"""The node simulator against a real kube-apiserver: AKS-shaped Nodes, the kubelet's timeline and
its pod duties, scripted misbehaviour, driven by the in-memory FakeCloud and by the fake ARM server.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from fakes.cloud import FakeCloud, vmss_node_name
from fakes.kaito import random_claim_name
from fakes.kubewatch import list_and_watch
from fakes.simulator import ANNOTATION_SIMULATED, Behaviour, NodeSimulator
from provisioner.cloud import (
    GPU_RESOURCE,
    Instance,
    InstanceRequest,
    InstanceState,
    ProviderContext,
    Taint,
)
from provisioner.kube import MERGE_PATCH, NODES, PODS, Body, KubeClient, NotFoundError
from provisioner.quantity import parse_quantity
from tests.conftest import Cluster

pytestmark = pytest.mark.e2e

TIMEOUT = 20.0
GPU_SKU = "Standard_NC12s_v3"  # 12 vCPUs, 224 GiB, 2x V100
CPU_SKU = "Standard_D4s_v3"
TERMINATION_FINALIZER = "karpenter.sh/termination"
NAMESPACE = "default"


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    client = KubeClient.from_config(str(cluster.kubeconfig))
    yield client
    await client.close()


@pytest.fixture
async def sim(kube: KubeClient) -> AsyncIterator[NodeSimulator]:
    simulator = NodeSimulator(kube, join_delay=0.1, ready_delay=0.2, gpu_delay=0.2)
    yield simulator
    await simulator.close(delete_nodes=True)


@pytest.fixture
async def cloud(sim: NodeSimulator) -> AsyncIterator[FakeCloud]:
    fake = FakeCloud(location="eastus", create_latency=0.05, delete_latency=0.05)
    sim.attach(fake)
    yield fake
    await fake.close()


def request_for(name: str, instance_type: str = GPU_SKU, **kwargs: Any) -> InstanceRequest:
    defaults: dict[str, Any] = {
        "labels": {"kaito.sh/workspace": "workspace-falcon-7b", "kaito.sh/machine-type": "gpu"},
        "taints": (Taint("sku", "gpu", "NoSchedule"),),
        "os_disk_size_gib": 120,
    }
    defaults.update(kwargs)
    return InstanceRequest(
        claim_name=name, claim_uid=str(uuid.uuid4()), name=name, instance_types=(instance_type,), **defaults
    )


async def launch(cloud: FakeCloud, name: str, instance_type: str = GPU_SKU, **kwargs: Any) -> Instance:
    await cloud.create(request_for(name, instance_type, **kwargs))
    async with asyncio.timeout(TIMEOUT):
        instance = await cloud.wait_for_state(name, InstanceState.RUNNING)
    assert instance is not None
    return instance


async def get_node(kube: KubeClient, name: str) -> Body | None:
    try:
        return await kube.get(NODES, name)
    except NotFoundError:
        return None


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = TIMEOUT) -> Any:
    """Poll ``check`` (every 50 ms) until it returns something truthy; fail after ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {within}s waiting for {what}") from None


def ready(node: Body | None) -> str | None:
    """The status of the node's Ready condition."""
    for c in (node or {}).get("status", {}).get("conditions") or []:
        if c["type"] == "Ready":
            return str(c["status"])
    return None


def ready_condition(node: Body) -> Body:
    return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")


def taint_keys(node: Body) -> set[str]:
    return {t["key"] for t in node["spec"].get("taints") or []}


class NodeHistory:
    """Every version of one Node the API server reports, from before it exists."""

    def __init__(self, kube: KubeClient, name: str) -> None:
        self.name = name
        self.versions: list[Body] = []
        self.deleted = False
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._follow(kube))

    async def _follow(self, kube: KubeClient) -> None:
        async for kind, node in list_and_watch(kube, NODES, field_selector=f"metadata.name={self.name}"):
            if kind == "DELETED":
                self.deleted = True
            else:
                self.versions.append(node)
            self._changed.set()

    async def wait(
        self,
        predicate: Callable[[Body], bool],
        what: str,
        *,
        after: Body | None = None,
        within: float = TIMEOUT,
    ) -> Body:
        """The first version matching ``predicate`` (among those later than ``after``)."""
        try:
            async with asyncio.timeout(within):
                while True:
                    start = (
                        0 if after is None else next(i for i, n in enumerate(self.versions) if n is after) + 1
                    )
                    for node in self.versions[start:]:
                        if predicate(node):
                            return node
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"node {self.name}: timed out after {within}s waiting for {what}") from None

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@asynccontextmanager
async def history(kube: KubeClient, name: str) -> AsyncIterator[NodeHistory]:
    h = NodeHistory(kube, name)
    await asyncio.sleep(0)  # let the watch's first list start before the node can exist
    try:
        yield h
    finally:
        await h.close()


def node_name_for(pool: str, cloud: FakeCloud) -> str:
    """What the node of ``pool`` will be called, before it exists (FakeCloud's provider ID scheme)."""
    instance = cloud.peek(pool)
    assert instance is not None
    return vmss_node_name(instance.provider_id)


async def make_pod(kube: KubeClient, node: str, *, containers: int = 1) -> Body:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"pod-{uuid.uuid4().hex[:10]}", "namespace": NAMESPACE},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": f"c{i}", "image": "mcr.microsoft.com/aks/falcon:7b"} for i in range(containers)
            ],
            "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        },
    }
    return await kube.create(PODS, pod, NAMESPACE)


async def get_pod(kube: KubeClient, name: str) -> Body | None:
    try:
        return await kube.get(PODS, name, NAMESPACE)
    except NotFoundError:
        return None


async def pod_gone(kube: KubeClient, name: str) -> bool:
    return await get_pod(kube, name) is None


async def force_delete_pod(kube: KubeClient, name: str) -> None:
    try:
        await kube.delete(PODS, name, NAMESPACE, grace_period_seconds=0)
    except NotFoundError:
        pass


async def remove_finalizers(kube: KubeClient, node: str) -> None:
    try:
        await kube.patch(NODES, node, {"metadata": {"finalizers": None}}, content_type=MERGE_PATCH)
    except NotFoundError:
        pass


# --- the Node an AKS VM registers -----------------------------------------------------------------


async def test_gpu_node_registers_like_aks_then_turns_ready_then_gets_gpus(
    kube: KubeClient, cloud: FakeCloud
) -> None:
    pool = random_claim_name()
    await cloud.create(request_for(pool))
    name = node_name_for(pool, cloud)
    assert re.fullmatch(rf"aks-{pool}-\d{{8}}-vmss000000", name)

    async with history(kube, name) as h:
        final = await h.wait(lambda n: GPU_RESOURCE in n["status"].get("allocatable", {}), "nvidia.com/gpu")

    instance = cloud.peek(pool)
    assert instance is not None and instance.state == InstanceState.RUNNING

    # 1. It registered NotReady, tainted not-ready by the node lifecycle, without GPUs.
    first = h.versions[0]
    assert ready(first) == "False"
    assert ready_condition(first)["reason"] == "KubeletNotReady"
    assert "node.kubernetes.io/not-ready" in taint_keys(first)
    assert GPU_RESOURCE not in first["status"]["capacity"]
    # 2. Then Ready, still without GPUs; the not-ready taint went away.
    became_ready = next(n for n in h.versions if ready(n) == "True")
    assert GPU_RESOURCE not in became_ready["status"]["capacity"]
    assert ready_condition(became_ready)["reason"] == "KubeletReady"
    assert "node.kubernetes.io/not-ready" not in taint_keys(await kube.get(NODES, name))
    # 3. The device plugin advertised both V100s afterwards, and the node stayed Ready.
    assert ready(final) == "True"
    assert final["status"]["capacity"][GPU_RESOURCE] == "2"
    assert final["status"]["allocatable"][GPU_RESOURCE] == "2"

    node = await kube.get(NODES, name)
    meta, spec, status = node["metadata"], node["spec"], node["status"]
    node_rg = cloud.node_resource_group
    vmss = name.removesuffix("000000")
    assert spec["providerID"] == instance.provider_id
    assert spec["providerID"] == (
        f"azure:///subscriptions/{cloud.subscription_id}/resourceGroups/{node_rg.lower()}"
        f"/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/0"
    )
    labels = meta["labels"]
    zone = labels["topology.kubernetes.io/zone"]
    assert re.fullmatch(r"eastus-[123]", zone)
    assert zone == instance.zone
    expected = {
        "kubernetes.azure.com/agentpool": pool,
        "agentpool": pool,
        "kubernetes.azure.com/cluster": node_rg,
        "kubernetes.azure.com/mode": "user",
        "node.kubernetes.io/instance-type": GPU_SKU,
        "beta.kubernetes.io/instance-type": GPU_SKU,
        "topology.kubernetes.io/region": "eastus",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        # the pool's node labels
        "kaito.sh/workspace": "workspace-falcon-7b",
        "kaito.sh/machine-type": "gpu",
    }
    assert {k: labels.get(k) for k in expected} == expected
    assert labels["kubernetes.azure.com/node-image-version"].startswith("AKSUbuntu-")
    assert meta["annotations"][ANNOTATION_SIMULATED] == "true"
    assert [(t["key"], t.get("value"), t["effect"]) for t in spec["taints"]] == [("sku", "gpu", "NoSchedule")]

    capacity, allocatable = status["capacity"], status["allocatable"]
    assert capacity["cpu"] == "12"
    assert parse_quantity(capacity["memory"]) == 224 * 2**30
    assert capacity["pods"] == "110"
    assert parse_quantity(capacity["ephemeral-storage"]) == 120 * 2**30
    assert allocatable["cpu"] == "11780m"  # AKS kube-reserved: 220m on 12 cores
    assert allocatable["pods"] == "110"
    assert parse_quantity(allocatable["memory"]) < parse_quantity(capacity["memory"])
    assert parse_quantity(allocatable["ephemeral-storage"]) < parse_quantity(capacity["ephemeral-storage"])
    info = status["nodeInfo"]
    assert info["kubeletVersion"].startswith("v1.")
    assert info["osImage"].startswith("Ubuntu")
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert (info["architecture"], info["operatingSystem"]) == ("amd64", "linux")
    addresses = {a["type"]: a["address"] for a in status["addresses"]}
    assert addresses["Hostname"] == name
    assert re.fullmatch(r"10\.224\.\d{1,3}\.\d{1,3}", addresses["InternalIP"])
    assert {c["type"] for c in status["conditions"]} >= {
        "Ready",
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
    }


async def test_cpu_node_has_no_gpu_resource_and_a_non_zonal_region_gives_zone_0(
    kube: KubeClient, sim: NodeSimulator
) -> None:
    fake = FakeCloud(location="westus2", create_latency=0.05)
    sim.attach(fake)
    try:
        pool = random_claim_name()
        instance = await launch(fake, pool, CPU_SKU, taints=())
        name = vmss_node_name(instance.provider_id)
        node = await eventually(lambda: _ready_node(kube, name), f"node {name} Ready")
        assert GPU_RESOURCE not in node["status"]["capacity"]
        assert node["status"]["capacity"]["cpu"] == "4"
        assert "sku" not in taint_keys(node)
        assert node["metadata"]["labels"]["topology.kubernetes.io/region"] == "westus2"
        assert node["metadata"]["labels"]["topology.kubernetes.io/zone"] == instance.zone
    finally:
        await fake.close()


async def _ready_node(kube: KubeClient, name: str) -> Body | None:
    node = await get_node(kube, name)
    return node if ready(node) == "True" else None


# --- deletion -------------------------------------------------------------------------------------


async def test_deleting_the_pool_deletes_the_node(kube: KubeClient, cloud: FakeCloud) -> None:
    pool = random_claim_name()
    instance = await launch(cloud, pool)
    name = vmss_node_name(instance.provider_id)
    await eventually(lambda: _ready_node(kube, name), f"node {name} Ready")

    await cloud.delete(pool)
    await eventually(lambda: _gone(kube, name), f"node {name} deleted")


async def _gone(kube: KubeClient, name: str) -> bool:
    return await get_node(kube, name) is None


async def test_node_with_termination_finalizer_is_only_marked_and_its_pods_go_with_it(
    kube: KubeClient, cloud: FakeCloud
) -> None:
    pool = random_claim_name()
    instance = await launch(cloud, pool)
    name = vmss_node_name(instance.provider_id)
    await eventually(lambda: _ready_node(kube, name), f"node {name} Ready")
    await kube.patch(NODES, name, {"metadata": {"finalizers": [TERMINATION_FINALIZER]}})
    pod = await make_pod(kube, name)
    pod_name = pod["metadata"]["name"]
    try:
        await cloud.delete(pool)

        async def marked() -> Body | None:
            node = await get_node(kube, name)
            return node if node and node["metadata"].get("deletionTimestamp") else None

        node = await eventually(marked, f"node {name} marked for deletion")
        assert node["metadata"]["finalizers"] == [TERMINATION_FINALIZER]
        # The VM is gone, but the Node object stays until the controller lets it go, and so does
        # its pod (the pod GC only collects pods of Nodes that no longer exist).
        assert await get_pod(kube, pod_name) is not None

        await remove_finalizers(kube, name)  # what the controller does after draining
        await eventually(lambda: _gone(kube, name), f"node {name} deleted")
        await eventually(lambda: pod_gone(kube, pod_name), f"pod {pod_name} of the deleted node collected")
    finally:
        await remove_finalizers(kube, name)
        await force_delete_pod(kube, pod_name)


# --- the kubelet's part for pods ------------------------------------------------------------------


async def test_pods_on_a_simulated_node_run_and_deleted_or_evicted_pods_are_removed(
    kube: KubeClient, cloud: FakeCloud
) -> None:
    pool = random_claim_name()
    instance = await launch(cloud, pool)
    name = vmss_node_name(instance.provider_id)
    await eventually(lambda: _ready_node(kube, name), f"node {name} Ready")

    evicted = (await make_pod(kube, name, containers=2))["metadata"]["name"]
    deleted = (await make_pod(kube, name))["metadata"]["name"]
    foreign = (await make_pod(kube, f"aks-other-{pool}-vmss000000"))["metadata"]["name"]
    try:

        async def running() -> Body | None:
            pod = await get_pod(kube, evicted)
            return pod if pod and pod["status"].get("phase") == "Running" else None

        pod = await eventually(running, f"pod {evicted} Running")
        status = pod["status"]
        assert status["hostIP"] == next(
            a["address"]
            for a in (await kube.get(NODES, name))["status"]["addresses"]
            if a["type"] == "InternalIP"
        )
        assert re.fullmatch(r"10\.244\.\d{1,3}\.\d{1,3}", status["podIP"])
        assert [c["name"] for c in status["containerStatuses"]] == ["c0", "c1"]
        assert all(c["ready"] and "running" in c["state"] for c in status["containerStatuses"])
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"

        # Pods on nodes the simulator does not run are left alone (no kubelet there).
        await kube.delete(PODS, foreign, NAMESPACE)
        # A graceful delete only marks a bound pod; the (simulated) kubelet finishes it.
        await kube.delete(PODS, deleted, NAMESPACE)
        await kube.evict(evicted, NAMESPACE)
        await eventually(lambda: pod_gone(kube, deleted), f"deleted pod {deleted} removed")
        await eventually(lambda: pod_gone(kube, evicted), f"evicted pod {evicted} removed")

        left = await get_pod(kube, foreign)
        assert left is not None and left["metadata"].get("deletionTimestamp")
        assert left["status"].get("phase", "Pending") == "Pending"
    finally:
        for pod_name in (evicted, deleted, foreign):
            await force_delete_pod(kube, pod_name)


async def test_pod_watch_runs_only_while_simulated_nodes_exist(
    kube: KubeClient, cloud: FakeCloud, sim: NodeSimulator
) -> None:
    assert not sim.watching_pods
    pool = random_claim_name()
    instance = await launch(cloud, pool)
    name = vmss_node_name(instance.provider_id)
    await eventually(lambda: _ready_node(kube, name), f"node {name} Ready")
    assert sim.watching_pods
    await cloud.delete(pool)
    await eventually(lambda: _gone(kube, name), f"node {name} deleted")
    assert not sim.watching_pods
    assert sim.node_names() == []


# --- scripted misbehaviour ------------------------------------------------------------------------


async def test_never_joining_pool_has_a_running_vm_but_no_node(
    kube: KubeClient, cloud: FakeCloud, sim: NodeSimulator
) -> None:
    broken, healthy = random_claim_name(), random_claim_name()
    sim.add_behaviour(Behaviour.never_joins(broken))
    broken_instance = await launch(cloud, broken)
    healthy_instance = await launch(cloud, healthy)

    # Same timing, created later: once the healthy node is Ready the broken one would exist.
    await eventually(
        lambda: _ready_node(kube, vmss_node_name(healthy_instance.provider_id)), "healthy node Ready"
    )
    assert await get_node(kube, vmss_node_name(broken_instance.provider_id)) is None
    assert cloud.peek(broken) is not None and cloud.peek(broken).state == InstanceState.RUNNING  # type: ignore[union-attr]

    await cloud.delete(broken)  # nothing to delete: must not fail
    async with asyncio.timeout(TIMEOUT):
        await cloud.wait_for_state(broken, None)
    assert sim.node_names(broken) == []


async def test_node_goes_not_ready_after_a_delay(
    kube: KubeClient, cloud: FakeCloud, sim: NodeSimulator
) -> None:
    pool = random_claim_name()
    sim.add_behaviour(Behaviour.not_ready_later(pool, 0.3))
    await cloud.create(request_for(pool))
    name = node_name_for(pool, cloud)

    async with history(kube, name) as h:
        was_ready = await h.wait(lambda n: ready(n) == "True", "Ready")
        broke = await h.wait(lambda n: ready(n) == "False", "NotReady after Ready", after=was_ready)
        # The node lifecycle controller's reaction: the not-ready taint is back, next to the others.
        tainted = await h.wait(
            lambda n: "node.kubernetes.io/not-ready" in taint_keys(n), "not-ready taint", after=was_ready
        )

    condition = ready_condition(broke)
    assert condition["reason"] == "KubeletNotReady"
    assert condition["lastTransitionTime"] >= ready_condition(was_ready)["lastTransitionTime"]
    assert ready(tainted) == "False"
    assert "sku" in taint_keys(tainted)


async def test_gpu_never_registered(kube: KubeClient, cloud: FakeCloud, sim: NodeSimulator) -> None:
    no_gpu, healthy = random_claim_name(), random_claim_name()
    sim.add_behaviour(Behaviour.without_gpu(no_gpu))
    no_gpu_instance = await launch(cloud, no_gpu)
    healthy_instance = await launch(cloud, healthy)

    async def has_gpus() -> bool:
        node = await get_node(kube, vmss_node_name(healthy_instance.provider_id))
        return bool(node and GPU_RESOURCE in node["status"].get("allocatable", {}))

    await eventually(has_gpus, "GPUs on the healthy node")
    node = await kube.get(NODES, vmss_node_name(no_gpu_instance.provider_id))
    assert ready(node) == "True"
    assert GPU_RESOURCE not in node["status"]["capacity"]
    assert GPU_RESOURCE not in node["status"]["allocatable"]


# --- wiring ---------------------------------------------------------------------------------------


async def test_fake_cloud_from_a_provider_context_with_kubeconfig_simulates_nodes(
    kube: KubeClient, cluster: Cluster
) -> None:
    env = {"FAKE_NODE_JOIN_DELAY_SECONDS": "0", "FAKE_NODE_READY_DELAY_SECONDS": "0.1"}
    fake = FakeCloud(ProviderContext(env=env, kubeconfig=str(cluster.kubeconfig)))
    assert fake.simulator is not None
    assert fake.simulator.timing.join == 0 and fake.simulator.timing.ready == 0.1
    disabled = FakeCloud(
        ProviderContext(env={"FAKE_CLOUD_SIMULATE_NODES": "false"}, kubeconfig=str(cluster.kubeconfig))
    )
    assert disabled.simulator is None
    await disabled.close()
    name = None
    try:
        pool = random_claim_name()
        instance = await launch(fake, pool)
        name = vmss_node_name(instance.provider_id)
        await eventually(lambda: _ready_node(kube, name), f"node {name} Ready")
        await fake.delete(pool)
        await eventually(lambda: _gone(kube, name), f"node {name} deleted")
    finally:
        await fake.close()
        if name is not None:
            try:
                await kube.delete(NODES, name)
            except NotFoundError:
                pass


# --- through the fake ARM server and the real Azure SDK -------------------------------------------


@asynccontextmanager
async def fake_arm_with_simulator(cluster: Cluster) -> AsyncIterator[tuple[Any, NodeSimulator]]:
    """A fake ARM server whose observer is built the way ``python -m fakes.arm --kubeconfig`` does."""
    from fakes.arm import FakeArm, FakeArmConfig, Latency
    from fakes.arm.hooks import DEFAULT_OBSERVER_FACTORY

    module, _, factory = DEFAULT_OBSERVER_FACTORY.partition(":")
    observer = getattr(importlib.import_module(module), factory)(kubeconfig=str(cluster.kubeconfig))
    assert isinstance(observer, NodeSimulator)
    try:
        async with FakeArm(FakeArmConfig(latency=Latency(0.1, 0.1, 0.1)), observers=[observer]) as arm:
            yield arm, observer
    finally:
        await observer.close(delete_nodes=True)


@asynccontextmanager
async def agent_pools_client(arm: Any) -> AsyncIterator[Any]:
    from azure.identity.aio import ClientSecretCredential
    from azure.mgmt.containerservice.aio import ContainerServiceClient

    credential = ClientSecretCredential(
        "fake-tenant",
        "fake-client",
        "fake-secret",
        authority=arm.authority_host,
        connection_verify=str(arm.ca_path),
        disable_instance_discovery=True,
    )
    cluster = arm.config.clusters[0]
    async with (
        credential,
        ContainerServiceClient(
            credential, cluster.subscription_id, polling_interval=0.05, **arm.client_kwargs()
        ) as client,
    ):
        yield client.agent_pools


async def test_fake_arm_pool_put_registers_the_node_and_delete_removes_it(
    kube: KubeClient, cluster: Cluster
) -> None:
    from azure.mgmt.containerservice.models import AgentPool

    pool_name = random_claim_name()
    async with fake_arm_with_simulator(cluster) as (arm, sim), agent_pools_client(arm) as pools:
        aks = arm.config.clusters[0]
        poller = await pools.begin_create_or_update(
            aks.resource_group,
            aks.name,
            pool_name,
            AgentPool(
                count=1,
                vm_size="Standard_NC24ads_A100_v4",
                mode="User",
                os_type="Linux",
                os_disk_size_gb=200,
                max_pods=50,
                node_labels={"kaito.sh/workspace": "workspace-phi-3"},
                node_taints=["sku=gpu:NoSchedule"],
                availability_zones=["2"],
            ),
        )
        assert (await poller.result()).provisioning_state == "Succeeded"
        info = arm.pool(pool_name)
        name = info.node_name(0)
        assert re.fullmatch(rf"aks-{pool_name}-\d{{8}}-vmss000000", name)

        async def gpus() -> Body | None:
            node = await get_node(kube, name)
            return node if node and GPU_RESOURCE in node["status"].get("allocatable", {}) else None

        node = await eventually(gpus, f"node {name} with GPUs")
        assert ready(node) == "True"
        assert node["spec"]["providerID"] == info.provider_id(0)
        assert f"/resourceGroups/{aks.effective_node_resource_group.lower()}/" in node["spec"]["providerID"]
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.azure.com/agentpool"] == pool_name
        assert labels["agentpool"] == pool_name
        assert labels["kubernetes.azure.com/cluster"] == aks.effective_node_resource_group
        assert labels["node.kubernetes.io/instance-type"] == "Standard_NC24ads_A100_v4"
        assert labels["topology.kubernetes.io/zone"] == "eastus-2"
        assert labels["topology.kubernetes.io/region"] == "eastus"
        assert labels["kaito.sh/workspace"] == "workspace-phi-3"
        assert labels["kubernetes.azure.com/node-image-version"] == info.node_image_version
        assert [(t["key"], t.get("value"), t["effect"]) for t in node["spec"]["taints"]] == [
            ("sku", "gpu", "NoSchedule")
        ]
        status = node["status"]
        assert status["capacity"]["cpu"] == "24"
        assert status["capacity"]["pods"] == "50"
        assert parse_quantity(status["capacity"]["ephemeral-storage"]) == 200 * 2**30
        assert status["capacity"][GPU_RESOURCE] == "1"
        assert status["nodeInfo"]["kubeletVersion"] == f"v{info.orchestrator_version}"

        poller = await pools.begin_delete(aks.resource_group, aks.name, pool_name)
        await poller.result()
        await eventually(lambda: _gone(kube, name), f"node {name} deleted with its pool")
        assert sim.node_names(pool_name) == []


async def test_fake_arm_pool_scaling_adds_and_removes_nodes(kube: KubeClient, cluster: Cluster) -> None:
    from azure.mgmt.containerservice.models import AgentPool

    pool_name = random_claim_name()
    async with fake_arm_with_simulator(cluster) as (arm, _sim), agent_pools_client(arm) as pools:
        aks = arm.config.clusters[0]

        async def put(count: int) -> None:
            pool = AgentPool(count=count, vm_size=CPU_SKU, mode="User", os_type="Linux")
            await (await pools.begin_create_or_update(aks.resource_group, aks.name, pool_name, pool)).result()

        await put(2)
        info = arm.pool(pool_name)
        first, second = info.node_name(0), info.node_name(1)
        await eventually(lambda: _ready_node(kube, first), f"node {first} Ready")
        node = await eventually(lambda: _ready_node(kube, second), f"node {second} Ready")
        assert node["spec"]["providerID"].endswith("/virtualMachines/1")

        await put(1)
        await eventually(lambda: _gone(kube, second), f"scaled-in node {second} deleted")
        assert await get_node(kube, first) is not None

        await (await pools.begin_delete(aks.resource_group, aks.name, pool_name)).result()
        await eventually(lambda: _gone(kube, first), f"node {first} deleted with its pool")


async def test_fake_arm_delete_machines_removes_exactly_their_nodes(
    kube: KubeClient, cluster: Cluster
) -> None:
    from azure.mgmt.containerservice.models import AgentPool, AgentPoolDeleteMachinesParameter

    pool_name = random_claim_name()
    async with fake_arm_with_simulator(cluster) as (arm, sim), agent_pools_client(arm) as pools:
        aks = arm.config.clusters[0]

        async def put(count: int) -> None:
            pool = AgentPool(count=count, vm_size=CPU_SKU, mode="User", os_type="Linux")
            await (await pools.begin_create_or_update(aks.resource_group, aks.name, pool_name, pool)).result()

        await put(3)
        info = arm.pool(pool_name)
        names = [info.node_name(i) for i in range(3)]
        for name in names:
            await eventually(lambda name=name: _ready_node(kube, name), f"node {name} Ready")

        gone = AgentPoolDeleteMachinesParameter(machine_names=[names[1]])
        await (await pools.begin_delete_machines(aks.resource_group, aks.name, pool_name, gone)).result()
        await eventually(lambda: _gone(kube, names[1]), f"node {names[1]} deleted with its machine")
        for name in (names[0], names[2]):
            assert ready(await get_node(kube, name)) == "True", f"{name} was not to be touched"
        assert sorted(sim.node_names(pool_name)) == [names[0], names[2]]

        # Back to three: the new VM is instance 3, not the deleted 1.
        await put(3)
        new = f"{info.vmss_name}000003"
        node = await eventually(lambda: _ready_node(kube, new), f"node {new} Ready")
        assert node["spec"]["providerID"] == arm.pool(pool_name).provider_id(3)
        assert await get_node(kube, names[1]) is None

        await (await pools.begin_delete(aks.resource_group, aks.name, pool_name)).result()
        for name in (names[0], names[2], new):
            await eventually(lambda name=name: _gone(kube, name), f"node {name} deleted with its pool")


# --- settings -------------------------------------------------------------------------------------


def test_behaviours_and_delays_from_the_environment() -> None:
    from fakes.simulator import PROFILES, parse_behaviours, timing_from_env

    assert parse_behaviours("wsbad*=never-join; ws1*=not-ready-after:30,no-gpu,ready-delay:2") == [
        Behaviour("wsbad*", never_join=True),
        Behaviour("ws1*", not_ready_after=30.0, no_gpu=True, ready_delay=2.0),
    ]
    with pytest.raises(ValueError, match="unknown action 'explode'"):
        parse_behaviours("ws*=explode")
    with pytest.raises(ValueError, match="not a number"):
        parse_behaviours("ws*=not-ready-after:soon")
    assert timing_from_env({}) == PROFILES["fast"]
    realistic = timing_from_env({"FAKE_NODE_PROFILE": "realistic", "FAKE_NODE_GPU_DELAY_SECONDS": "5"})
    assert realistic.join == PROFILES["realistic"].join and realistic.gpu == 5.0
    with pytest.raises(ValueError, match="FAKE_NODE_PROFILE"):
        timing_from_env({"FAKE_NODE_PROFILE": "slow"})
