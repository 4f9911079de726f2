"""Node simulator: plays AKS and the kubelet against a real kube-apiserver.

When an agent pool's VM "boots" (an in-memory ``FakeCloud`` instance turns running, or a fake ARM
pool reaches ``Succeeded``), the simulator registers the Node exactly as an AKS node would: name
``aks-<pool>-<id>-vmss000000``, ``spec.providerID`` of the scale set VM, the AKS labels, the pool's
node labels and taints, capacity from the VM size. It then plays the kubelet's timeline:

1. ``join_delay`` after boot the Node appears, ``Ready=False`` (``KubeletNotReady``) with the
   ``node.kubernetes.io/not-ready:NoSchedule`` taint the node lifecycle controller adds;
2. ``ready_delay`` later ``Ready=True`` (``KubeletReady``) and the taint is gone;
3. ``gpu_delay`` after Ready the NVIDIA device plugin advertises ``nvidia.com/gpu`` (GPU sizes).

While a Node is registered, the simulator also does the kubelet's part for pods bound to it (one
pod watch, running only while simulated nodes exist): a pod that gets a deletionTimestamp (deleted,
or evicted during a drain) is removed for good, and a new pod is marked ``Running`` once the node
has been Ready. When the pool is deleted the Node is deleted (with the controller's finalizer on
it, that only marks it; the controller removes its finalizer), and once the Node object is gone the
pods still bound to it are removed, as the pod garbage collector does.

Misbehaviour is scripted per pool name glob with :class:`Behaviour`: never join, go NotReady some
time after Ready, never advertise GPUs, or use other delays.

Settings from the environment (``NodeSimulator.from_env``; keyword arguments win):

``FAKE_NODE_PROFILE`` (``fast``: sub-second delays for tests; ``realistic``: AKS-like minutes),
``FAKE_NODE_JOIN_DELAY_SECONDS``, ``FAKE_NODE_READY_DELAY_SECONDS``, ``FAKE_NODE_GPU_DELAY_SECONDS``,
``FAKE_NODE_BEHAVIOURS`` (``GLOB=ACTION[,ACTION...];...`` with actions ``never-join``, ``no-gpu``,
``not-ready-after:SECONDS``, ``join-delay:SECONDS``, ``ready-delay:SECONDS``, ``gpu-delay:SECONDS``),
``FAKE_NODE_KUBERNETES_VERSION``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import os
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from fakes import skus
from fakes.arm.hooks import node_internal_ip
from fakes.kubewatch import list_and_watch, watch_events
from provisioner.cloud import GPU_RESOURCE, CapacityType, Instance
from provisioner.kube import (
    MERGE_PATCH,
    NODES,
    PODS,
    STRATEGIC_PATCH,
    ApiError,
    Body,
    ConflictError,
    KubeClient,
    NotFoundError,
)

if TYPE_CHECKING:
    from fakes.arm.hooks import PoolInfo
    from fakes.cloud import FakeCloud

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Marks Nodes the simulator registered (so a restarted simulator can tell them apart).
ANNOTATION_SIMULATED = "fakes.gpu-provisioner.sh/simulated"
NOT_READY_TAINT_KEY = "node.kubernetes.io/not-ready"
SPOT_LABEL = "kubernetes.azure.com/scalesetpriority"
DEFAULT_KUBERNETES_VERSION = "1.31.2"
DEFAULT_MAX_PODS = 110
DEFAULT_OS_DISK_GIB = 128
DEFAULT_LOCATION = "eastus"
DEFAULT_SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
DEFAULT_IMAGE_VERSION = "AKSUbuntu-2204gen2containerd-202501.12.0"
#: The AKS default pod CIDR (Azure CNI overlay / kubenet).
POD_CIDR_PREFIX = "10.244"
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_FALSE = ("false", "0", "no", "off")


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Seconds between the steps of a node's life."""

    #: VM running (pool Succeeded) until the Node object exists.
    join: float = 0.1
    #: Node registered until Ready.
    ready: float = 0.2
    #: Ready until the device plugin advertises ``nvidia.com/gpu``.
    gpu: float = 0.2

    def __post_init__(self) -> None:
        if min(self.join, self.ready, self.gpu) < 0:
            raise ValueError("node simulator delays must not be negative")


#: ``fast`` for tests; ``realistic`` roughly what an AKS GPU node takes after its VM is running.
PROFILES: dict[str, Timing] = {
    "fast": Timing(join=0.1, ready=0.2, gpu=0.2),
    "realistic": Timing(join=45.0, ready=20.0, gpu=30.0),
}


@dataclass(frozen=True)
class Behaviour:
    """How the nodes of pools whose name matches ``pattern`` (a glob) behave.

    ``never_join``: the VM runs but no Node ever registers. ``not_ready_after``: seconds after
    Ready, the Node turns ``Ready=False`` (fresh lastTransitionTime) and stays so. ``no_gpu``: the
    device plugin never advertises ``nvidia.com/gpu``. The ``*_delay`` fields override the
    simulator's timing for these pools. The first behaviour that matches a pool wins.
    """

    pattern: str = "*"
    never_join: bool = False
    not_ready_after: float | None = None
    no_gpu: bool = False
    join_delay: float | None = None
    ready_delay: float | None = None
    gpu_delay: float | None = None

    @classmethod
    def never_joins(cls, pattern: str) -> Behaviour:
        return cls(pattern, never_join=True)

    @classmethod
    def not_ready_later(cls, pattern: str, after: float) -> Behaviour:
        return cls(pattern, not_ready_after=after)

    @classmethod
    def without_gpu(cls, pattern: str) -> Behaviour:
        return cls(pattern, no_gpu=True)

    def timing(self, base: Timing) -> Timing:
        return Timing(
            join=base.join if self.join_delay is None else self.join_delay,
            ready=base.ready if self.ready_delay is None else self.ready_delay,
            gpu=base.gpu if self.gpu_delay is None else self.gpu_delay,
        )


_NORMAL = Behaviour()


def parse_behaviours(text: str) -> list[Behaviour]:
    """``GLOB=ACTION[,ACTION...];GLOB=...`` (see the module docstring) as behaviours."""
    result: list[Behaviour] = []
    for rule in filter(None, (part.strip() for part in text.split(";"))):
        pattern, sep, actions = rule.partition("=")
        if not sep or not pattern.strip():
            raise ValueError(f"FAKE_NODE_BEHAVIOURS: expected GLOB=ACTION[,ACTION...], got {rule!r}")
        kwargs: dict[str, Any] = {}
        for action in filter(None, (a.strip() for a in actions.split(","))):
            name, _, arg = action.partition(":")
            if name == "never-join":
                kwargs["never_join"] = True
            elif name == "no-gpu":
                kwargs["no_gpu"] = True
            elif name in ("not-ready-after", "join-delay", "ready-delay", "gpu-delay"):
                kwargs[name.replace("-", "_")] = _seconds(arg, f"FAKE_NODE_BEHAVIOURS {action!r}")
            else:
                raise ValueError(
                    f"FAKE_NODE_BEHAVIOURS: unknown action {name!r} (never-join, no-gpu, "
                    "not-ready-after:S, join-delay:S, ready-delay:S, gpu-delay:S)"
                )
        result.append(Behaviour(pattern.strip(), **kwargs))
    return result


def _seconds(text: str | None, setting: str) -> float:
    try:
        value = float(text or "")
    except ValueError:
        raise ValueError(f"{setting}: {text!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{setting}: must not be negative")
    return value


def timing_from_env(env: Mapping[str, str]) -> Timing:
    profile = env.get("FAKE_NODE_PROFILE", "").strip() or "fast"
    if profile not in PROFILES:
        raise ValueError(f"FAKE_NODE_PROFILE: {profile!r} is not one of {sorted(PROFILES)}")
    base = PROFILES[profile]
    overrides = {}
    for key, setting in (
        ("join", "FAKE_NODE_JOIN_DELAY_SECONDS"),
        ("ready", "FAKE_NODE_READY_DELAY_SECONDS"),
        ("gpu", "FAKE_NODE_GPU_DELAY_SECONDS"),
    ):
        if env.get(setting, "").strip():
            overrides[key] = _seconds(env[setting], setting)
    return replace(base, **overrides)


# --- what a node looks like ---------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSpec:
    """Everything needed to register one simulated Node (built from a pool or an instance)."""

    pool: str
    name: str
    provider_id: str
    instance_type: str
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, str], ...] = ()
    #: Capacity without GPUs (those come later, from the device plugin).
    capacity: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0
    max_pods: int = DEFAULT_MAX_PODS
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    os_sku: str = "Ubuntu"

    @property
    def internal_ip(self) -> str:
        """A stable address in the AKS node subnet 10.224.0.0/16 (the fake ARM's machines API
        reports the same address for the VM)."""
        return node_internal_ip(self.name)


def parse_taint(text: str) -> dict[str, str]:
    """An AKS taint string ``key=value:Effect`` (or ``key:Effect``) as a Kubernetes taint."""
    rest, sep, effect = text.strip().rpartition(":")
    if not sep or effect not in _EFFECTS or not rest:
        raise ValueError(f"invalid taint {text!r}: expected key=value:Effect with Effect in {_EFFECTS}")
    key, _, value = rest.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def node_name_of(provider_id: str) -> str:
    """The node name a VMSS instance registers with (``aks-<pool>-<id>-vmss`` + 6 base-36 digits)."""
    from fakes.cloud import vmss_node_name  # the same scheme FakeCloud reports

    return vmss_node_name(provider_id)


def _capacity(sku: skus.SkuInfo | None, os_disk_gib: int, max_pods: int) -> dict[str, str]:
    vcpus, memory_gib = (sku.vcpus, sku.memory_gib) if sku else (2, 8.0)
    return {
        "cpu": str(vcpus),
        "memory": f"{int(memory_gib * 1024 * 1024)}Ki",
        "ephemeral-storage": f"{os_disk_gib * 1024 * 1024}Ki",
        "pods": str(max_pods),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    }


def allocatable(capacity: Mapping[str, str], max_pods: int) -> dict[str, str]:
    """Capacity minus what AKS reserves (kube-reserved CPU/memory, eviction thresholds)."""
    result = dict(capacity)
    if "cpu" in capacity:
        cores = int(capacity["cpu"])
        # AKS kube-reserved CPU: 60m for the first core, 40m the second, 20m each up to 4, then 10m.
        reserved = 60 + 40 * (cores >= 2) + 20 * min(max(cores - 2, 0), 2) + 10 * max(cores - 4, 0)
        result["cpu"] = f"{cores * 1000 - reserved}m"
    if "memory" in capacity and capacity["memory"].endswith("Ki"):
        total_ki = int(capacity["memory"][:-2])
        # AKS (1.29+): kube-reserved 20 MiB per pod + 50 MiB, at most 25 %; eviction at 100 MiB.
        reserved_ki = min((20 * max_pods + 50) * 1024, total_ki // 4) + 100 * 1024
        result["memory"] = f"{max(total_ki - reserved_ki, 0)}Ki"
    if "ephemeral-storage" in capacity and capacity["ephemeral-storage"].endswith("Ki"):
        # nodefs.available<10% eviction threshold, in bytes as the kubelet reports it.
        total_ki = int(capacity["ephemeral-storage"][:-2])
        result["ephemeral-storage"] = str(total_ki * 1024 * 9 // 10)
    return result


def spec_from_instance(
    instance: Instance,
    taints: Iterable[str | Mapping[str, str]] = (),
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
) -> NodeSpec:
    """The Node a ``FakeCloud`` instance registers (its labels and capacity are AKS-shaped already)."""
    name = node_name_of(instance.provider_id)
    labels = dict(instance.labels)
    labels["kubernetes.io/hostname"] = name
    sku = skus.get_sku(instance.instance_type)
    capacity = {k: v for k, v in instance.capacity.items() if k != GPU_RESOURCE}
    max_pods = int(capacity.get("pods", DEFAULT_MAX_PODS))
    if not capacity:
        capacity = _capacity(sku, DEFAULT_OS_DISK_GIB, max_pods)
    capacity.setdefault("hugepages-1Gi", "0")
    capacity.setdefault("hugepages-2Mi", "0")
    node_taints = [parse_taint(t) if isinstance(t, str) else dict(t) for t in taints]
    if instance.capacity_type == CapacityType.SPOT:
        node_taints.append({"key": SPOT_LABEL, "value": "spot", "effect": "NoSchedule"})
    return NodeSpec(
        pool=instance.name,
        name=name,
        provider_id=instance.provider_id,
        instance_type=instance.instance_type,
        labels=labels,
        taints=_dedupe(node_taints),
        capacity=capacity,
        gpus=int(instance.capacity.get(GPU_RESOURCE) or (sku.gpus if sku else 0)),
        max_pods=max_pods,
        kubernetes_version=kubernetes_version,
        os_sku=labels.get("kubernetes.azure.com/os-sku", "Ubuntu"),
    )


def specs_from_pool(pool: PoolInfo) -> list[NodeSpec]:
    """The Nodes of a fake ARM agent pool, one per scale set instance (``pool.instances()``)."""
    sku = skus.get_sku(pool.vm_size)
    max_pods = int(pool.properties.get("maxPods") or DEFAULT_MAX_PODS)
    capacity = _capacity(sku, pool.os_disk_size_gb or DEFAULT_OS_DISK_GIB, max_pods)
    os_name = "windows" if pool.os_type.lower() == "windows" else "linux"
    image = pool.node_image_version or DEFAULT_IMAGE_VERSION
    taints = [parse_taint(t) for t in pool.node_taints]
    spot = pool.scale_set_priority.lower() == "spot"
    if spot:
        taints.append({"key": SPOT_LABEL, "value": "spot", "effect": "NoSchedule"})
    specs = []
    for index in pool.instances():
        name = pool.node_name(index)
        zone = pool.zone_of(index) or "0"
        labels = dict(pool.node_labels)
        labels.update(
            {
                "agentpool": pool.name,
                "kubernetes.azure.com/agentpool": pool.name,
                "kubernetes.azure.com/cluster": pool.node_resource_group,
                "kubernetes.azure.com/mode": pool.mode.lower(),
                "kubernetes.azure.com/role": "agent",
                "kubernetes.azure.com/os-sku": pool.os_sku,
                "kubernetes.azure.com/node-image-version": image,
                "kubernetes.io/os": os_name,
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "beta.kubernetes.io/os": os_name,
                "beta.kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": pool.vm_size,
                "beta.kubernetes.io/instance-type": pool.vm_size,
                "topology.kubernetes.io/region": pool.location,
                "topology.kubernetes.io/zone": zone,
                "failure-domain.beta.kubernetes.io/region": pool.location,
                "failure-domain.beta.kubernetes.io/zone": zone,
            }
        )
        if spot:
            labels[SPOT_LABEL] = "spot"
        if sku is not None and sku.is_gpu:
            labels["kubernetes.azure.com/accelerator"] = "nvidia"
        specs.append(
            NodeSpec(
                pool=pool.name,
                name=name,
                provider_id=pool.provider_id(index),
                instance_type=pool.vm_size,
                labels=labels,
                taints=_dedupe(taints),
                capacity=capacity,
                gpus=sku.gpus if sku else 0,
                max_pods=max_pods,
                kubernetes_version=pool.orchestrator_version or DEFAULT_KUBERNETES_VERSION,
                os_sku=pool.os_sku,
            )
        )
    return specs


def _dedupe(taints: Iterable[Mapping[str, str]]) -> tuple[dict[str, str], ...]:
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for t in taints:
        seen.setdefault((t["key"], t["effect"]), dict(t))
    return tuple(seen.values())


def _os_facts(os_sku: str) -> tuple[str, str, str]:
    """(osImage, kernelVersion, containerRuntimeVersion) of an AKS node image."""
    if os_sku.startswith("AzureLinux3"):
        return "Microsoft Azure Linux 3.0", "6.6.64.2-9.azl3", "containerd://2.0.0"
    if os_sku.startswith(("AzureLinux", "CBLMariner")):
        return "CBL-Mariner/Linux", "5.15.173.1-2.cm2", "containerd://1.6.26"
    if os_sku == "Ubuntu2404":
        return "Ubuntu 24.04.1 LTS", "6.8.0-1020-azure", "containerd://1.7.25-1"
    return "Ubuntu 22.04.5 LTS", "5.15.0-1079-azure", "containerd://1.7.25-1"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, status: str, reason: str, message: str, now: str) -> Body:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def _ready_condition(ready: bool, now: str, message: str | None = None) -> Body:
    if ready:
        return _condition("Ready", "True", "KubeletReady", message or "kubelet is posting ready status", now)
    return _condition(
        "Ready",
        "False",
        "KubeletNotReady",
        message or "container runtime status check may not have completed yet",
        now,
    )


def build_node(spec: NodeSpec) -> Body:
    """The Node object a freshly booted AKS node registers (NotReady, no GPUs yet)."""
    now = _now()
    os_image, kernel, runtime = _os_facts(spec.os_sku)
    machine = hashlib.md5(spec.provider_id.encode(), usedforsecurity=False).hexdigest()
    taints = [*spec.taints, {"key": NOT_READY_TAINT_KEY, "effect": "NoSchedule", "timeAdded": now}]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": dict(spec.labels),
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                ANNOTATION_SIMULATED: "true",
            },
        },
        "spec": {"providerID": spec.provider_id, "taints": taints},
        "status": {
            "capacity": dict(spec.capacity),
            "allocatable": allocatable(spec.capacity, spec.max_pods),
            "conditions": [
                _condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                    now,
                ),
                _condition(
                    "DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", now
                ),
                _condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                    now,
                ),
                _ready_condition(False, now),
            ],
            "addresses": [
                {"type": "InternalIP", "address": spec.internal_ip},
                {"type": "Hostname", "address": spec.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": machine,
                "systemUUID": str(uuid.UUID(machine)),
                "bootID": str(uuid.uuid4()),
                "kernelVersion": kernel,
                "osImage": os_image,
                "containerRuntimeVersion": runtime,
                "kubeletVersion": f"v{spec.kubernetes_version.removeprefix('v')}",
                "kubeProxyVersion": f"v{spec.kubernetes_version.removeprefix('v')}",
                "operatingSystem": spec.labels.get("kubernetes.io/os", "linux"),
                "architecture": spec.labels.get("kubernetes.io/arch", "amd64"),
            },
        },
    }


# --- the simulator ------------------------------------------------------------------------------


@dataclass
class _SimNode:
    spec: NodeSpec
    behaviour: Behaviour
    task: asyncio.Task[None] | None = None
    registered: bool = False
    #: A create was sent (it may have landed even if the task was cancelled while waiting).
    create_sent: bool = False
    #: Has been Ready (the kubelet starts pods from then on).
    ready: bool = False


class NodeSimulator:
    """Registers and runs simulated AKS Nodes; an ``InstanceObserver`` and a fake ARM ``PoolObserver``.

    ``kube`` is used for every API call; with ``own_client=True`` (``from_kubeconfig``) ``close()``
    closes it too.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        join_delay: float | None = None,
        ready_delay: float | None = None,
        gpu_delay: float | None = None,
        timing: Timing | None = None,
        behaviours: Iterable[Behaviour] = (),
        kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
        own_client: bool = False,
    ) -> None:
        base = timing or PROFILES["fast"]
        self.timing = Timing(
            join=base.join if join_delay is None else join_delay,
            ready=base.ready if ready_delay is None else ready_delay,
            gpu=base.gpu if gpu_delay is None else gpu_delay,
        )
        self.kubernetes_version = kubernetes_version
        self._kube = kube
        self._own_client = own_client
        self._behaviours: list[Behaviour] = list(behaviours)
        self._taints_of: Callable[[str], Iterable[Any]] | None = None
        self._nodes: dict[str, _SimNode] = {}
        self._reapers: dict[str, asyncio.Task[None]] = {}
        self._pod_watch: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def from_env(cls, kube: KubeClient, env: Mapping[str, str] | None = None, **kwargs: Any) -> NodeSimulator:
        """Settings from ``FAKE_NODE_*`` (see the module docstring); keyword arguments win."""
        env = os.environ if env is None else env
        kwargs.setdefault("timing", timing_from_env(env))
        kwargs.setdefault("behaviours", parse_behaviours(env.get("FAKE_NODE_BEHAVIOURS", "")))
        if env.get("FAKE_NODE_KUBERNETES_VERSION"):
            kwargs.setdefault("kubernetes_version", env["FAKE_NODE_KUBERNETES_VERSION"])
        return cls(kube, **kwargs)

    @classmethod
    def from_kubeconfig(
        cls, kubeconfig: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> NodeSimulator:
        """A simulator with its own API client (closed by ``close()``), settings as ``from_env``.

        ``kubeconfig=None``: ``$KUBECONFIG`` or the in-cluster service account.
        """
        path = os.fspath(kubeconfig) if kubeconfig is not None else None
        return cls.from_env(KubeClient.from_config(path), env, own_client=True, **kwargs)

    # --- configuration -------------------------------------------------------------------

    def add_behaviour(self, behaviour: Behaviour) -> None:
        """Applies to pools that boot from now on (earlier rules win on overlapping globs)."""
        self._behaviours.append(behaviour)

    def clear_behaviours(self) -> None:
        self._behaviours.clear()

    def behaviour_for(self, pool: str) -> Behaviour:
        for behaviour in self._behaviours:
            if fnmatch.fnmatchcase(pool, behaviour.pattern):
                return behaviour
        return _NORMAL

    def attach(self, cloud: FakeCloud) -> None:
        """Follow ``cloud``'s instances (and the taints they were requested with)."""
        self._taints_of = cloud.taints_of
        cloud.add_observer(self)

    # --- inspection ----------------------------------------------------------------------

    def node_names(self, pool: str | None = None) -> list[str]:
        """Nodes the simulator currently runs (registered or about to), optionally of one pool."""
        return [name for name, sim in self._nodes.items() if pool is None or sim.spec.pool == pool]

    @property
    def watching_pods(self) -> bool:
        return self._pod_watch is not None and not self._pod_watch.done()

    # --- FakeCloud InstanceObserver ------------------------------------------------------

    async def on_instance_running(self, instance: Instance) -> None:
        taints = self._taints_of(instance.name) if self._taints_of is not None else ()
        spec = spec_from_instance(
            instance, [str(t) for t in taints], kubernetes_version=self.kubernetes_version
        )
        self.start([spec])

    async def on_instance_deleted(self, instance: Instance) -> None:
        await self.stop_pool(instance.name)

    # --- fake ARM PoolObserver -----------------------------------------------------------

    async def on_pool_running(self, pool: PoolInfo) -> None:
        specs = specs_from_pool(pool)
        wanted = {spec.name for spec in specs}
        for name in self.node_names(pool.name):
            if name not in wanted:  # scaled in
                await self._remove(name)
        self.start(specs)

    async def on_pool_deleted(self, pool: PoolInfo) -> None:
        await self.stop_pool(pool.name)

    # --- generic API ---------------------------------------------------------------------

    def start(self, specs: Iterable[NodeSpec]) -> None:
        """Boot these nodes (in the background); nodes already running are left alone."""
        if self._closed:
            raise RuntimeError("NodeSimulator is closed")
        for spec in specs:
            if spec.name in self._nodes:
                continue
            sim = _SimNode(spec, self.behaviour_for(spec.pool))
            self._nodes[spec.name] = sim
            sim.task = asyncio.get_running_loop().create_task(self._run(sim), name=f"node-sim-{spec.name}")

    async def stop_pool(self, pool: str) -> None:
        """The pool's VMs are gone: delete their Nodes."""
        for name in self.node_names(pool):
            await self._remove(name)

    async def close(self, *, delete_nodes: bool = False) -> None:
        """Cancel every task; delete the simulated Nodes only if ``delete_nodes``."""
        self._closed = True
        names = list(self._nodes)
        tasks = [sim.task for sim in self._nodes.values() if sim.task is not None]
        tasks += list(self._reapers.values())
        if self._pod_watch is not None:
            tasks.append(self._pod_watch)
        self._nodes.clear()
        self._reapers.clear()
        self._pod_watch = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if delete_nodes:
            for name in names:
                with contextlib.suppress(NotFoundError):
                    await self._kube.delete(NODES, name)
        if self._own_client:
            await self._kube.close()

    async def __aenter__(self) -> NodeSimulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- one node's life -----------------------------------------------------------------

    async def _run(self, sim: _SimNode) -> None:
        spec, behaviour = sim.spec, sim.behaviour
        timing = behaviour.timing(self.timing)
        try:
            if behaviour.never_join:
                log.info("simulated node %s never joins (pool %s)", spec.name, spec.pool)
                return
            await asyncio.sleep(timing.join)
            sim.create_sent = True
            if not await self._register(spec):
                sim.registered = True  # adopted an existing Node: leave its state alone
                sim.ready = True
                self._ensure_pod_watch()
                return
            sim.registered = True
            self._ensure_pod_watch()
            log.info("simulated node %s registered (pool %s)", spec.name, spec.pool)

            await asyncio.sleep(timing.ready)
            await self._set_ready(spec.name, True)
            sim.ready = True
            log.info("simulated node %s is Ready", spec.name)
            await self._start_pending_pods(spec.name)

            steps: list[tuple[float, str]] = []
            if spec.gpus and not behaviour.no_gpu:
                steps.append((timing.gpu, "gpu"))
            if behaviour.not_ready_after is not None:
                steps.append((behaviour.not_ready_after, "not-ready"))
            elapsed = 0.0
            for at, step in sorted(steps):
                await asyncio.sleep(max(at - elapsed, 0.0))
                elapsed = max(at, elapsed)
                if step == "gpu":
                    await self._advertise_gpus(spec)
                    log.info("simulated node %s advertises %d %s", spec.name, spec.gpus, GPU_RESOURCE)
                else:
                    await self._set_ready(
                        spec.name, False, "PLEG is not healthy: pleg was last seen active 3m0s ago"
                    )
                    log.info("simulated node %s went NotReady", spec.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("simulated node %s failed", spec.name)

    async def _register(self, spec: NodeSpec) -> bool:
        """Create the Node; False if an existing Node of that name was adopted instead."""
        body = build_node(spec)
        while True:
            try:
                created = await _retry(lambda: self._kube.create(NODES, body))
            except ConflictError:
                existing = await self._get_node(spec.name)
                if existing is None:
                    continue
                if (existing.get("metadata") or {}).get("deletionTimestamp"):
                    # An old Node of the same name is still being torn down: wait, then register.
                    await self._wait_gone(spec.name)
                    continue
                log.info("node %s already exists; adopting it as it is", spec.name)
                return False
            # The API server keeps a Node's status on create (kubelets register that way); should
            # one drop it, write it through the status subresource.
            if not (created.get("status") or {}).get("capacity"):
                await _retry(
                    lambda: self._kube.patch(
                        NODES,
                        spec.name,
                        {"status": body["status"]},
                        subresource="status",
                        content_type=MERGE_PATCH,
                    )
                )
            return True

    async def _set_ready(self, name: str, ready: bool, message: str | None = None) -> None:
        condition = _ready_condition(ready, _now(), message)
        await _retry(
            lambda: self._kube.patch(
                NODES,
                name,
                {"status": {"conditions": [condition]}},
                subresource="status",
                content_type=STRATEGIC_PATCH,
            )
        )
        # The node lifecycle controller's taint follows the Ready condition.
        if ready:
            await self._update_taints(
                name, lambda taints: [t for t in taints if t.get("key") != NOT_READY_TAINT_KEY]
            )
        else:

            def add(taints: list[Body]) -> list[Body]:
                if any(
                    t.get("key") == NOT_READY_TAINT_KEY and t.get("effect") == "NoSchedule" for t in taints
                ):
                    return taints
                return [*taints, {"key": NOT_READY_TAINT_KEY, "effect": "NoSchedule", "timeAdded": _now()}]

            await self._update_taints(name, add)

    async def _advertise_gpus(self, spec: NodeSpec) -> None:
        gpus = str(spec.gpus)
        patch = {"status": {"capacity": {GPU_RESOURCE: gpus}, "allocatable": {GPU_RESOURCE: gpus}}}
        await _retry(
            lambda: self._kube.patch(
                NODES, spec.name, patch, subresource="status", content_type=STRATEGIC_PATCH
            )
        )

    async def _update_taints(self, name: str, change: Callable[[list[Body]], list[Body]]) -> None:
        """Read-modify-write ``spec.taints`` with optimistic concurrency (others edit taints too)."""
        for _ in range(20):
            node = await self._get_node(name)
            if node is None:
                return
            taints = list((node.get("spec") or {}).get("taints") or [])
            new = change(taints)
            if new == taints:
                return
            patch = {
                "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                "spec": {"taints": new or None},
            }
            try:
                await _retry(lambda: self._kube.patch(NODES, name, patch, content_type=MERGE_PATCH))  # noqa: B023
                return
            except ConflictError:
                continue
        log.warning("gave up updating the taints of node %s after repeated conflicts", name)

    async def _get_node(self, name: str) -> Body | None:
        try:
            return await _retry(lambda: self._kube.get(NODES, name))
        except NotFoundError:
            return None

    async def _remove(self, name: str) -> None:
        """The VM is gone: stop its kubelet, delete the Node, later collect its pods."""
        sim = self._nodes.pop(name, None)
        if sim is None:
            return
        if sim.task is not None:
            sim.task.cancel()
            await asyncio.gather(sim.task, return_exceptions=True)
        if not any(s.registered for s in self._nodes.values()):
            await self._stop_pod_watch()
        if not sim.create_sent:
            return
        try:
            await _retry(lambda: self._kube.delete(NODES, name))
            log.info("simulated node %s deleted", name)
        except NotFoundError:
            pass
        if name not in self._reapers and not self._closed:
            task = asyncio.get_running_loop().create_task(self._reap(name), name=f"node-sim-reap-{name}")
            self._reapers[name] = task
            task.add_done_callback(
                lambda t: self._reapers.pop(name, None) if self._reapers.get(name) is t else None
            )

    async def _reap(self, name: str) -> None:
        """Once the Node object is gone, remove the pods still bound to it (the pod GC's job)."""
        try:
            await self._wait_gone(name)
            if name in self._nodes:  # the pool came back with a new VM of the same name
                return
            for pod in await self._kube.list(PODS, field_selector=f"spec.nodeName={name}"):
                meta = pod["metadata"]
                with contextlib.suppress(NotFoundError, ConflictError):
                    await self._kube.delete(
                        PODS,
                        meta["name"],
                        meta["namespace"],
                        grace_period_seconds=0,
                        preconditions_uid=meta["uid"],
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("collecting the pods of deleted node %s failed", name)

    async def _wait_gone(self, name: str) -> None:
        while True:
            node = await self._get_node(name)
            if node is None:
                return
            rv = node["metadata"]["resourceVersion"]
            try:
                async for kind, _ in watch_events(
                    self._kube,
                    NODES,
                    resource_version=rv,
                    field_selector=f"metadata.name={name}",
                    timeout_seconds=60,
                ):
                    if kind == "DELETED":
                        return
            except Exception as e:  # expired or interrupted: look again
                log.debug("watch of node %s ended: %s", name, e)
                await asyncio.sleep(0.2)

    # --- kubelet duties for pods ---------------------------------------------------------

    def _ensure_pod_watch(self) -> None:
        if self._closed or self.watching_pods:
            return
        self._pod_watch = asyncio.get_running_loop().create_task(self._watch_pods(), name="node-sim-pods")

    async def _stop_pod_watch(self) -> None:
        task, self._pod_watch = self._pod_watch, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _watch_pods(self) -> None:
        while True:
            try:
                # Only bound pods; the simulator's nodes are picked out here.
                async for kind, pod in list_and_watch(self._kube, PODS, field_selector="spec.nodeName!="):
                    if kind != "DELETED":
                        await self._on_pod(pod)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pod watch of the node simulator failed; restarting")
                await asyncio.sleep(1.0)

    async def _on_pod(self, pod: Body) -> None:
        sim = self._nodes.get((pod.get("spec") or {}).get("nodeName", ""))
        if sim is None or not sim.registered:
            return
        meta = pod.get("metadata") or {}
        try:
            if meta.get("deletionTimestamp"):
                if meta.get("deletionGracePeriodSeconds") != 0:
                    # Containers stopped: the kubelet removes the pod for good.
                    await self._kube.delete(
                        PODS,
                        meta["name"],
                        meta["namespace"],
                        grace_period_seconds=0,
                        preconditions_uid=meta["uid"],
                    )
            elif sim.ready and (pod.get("status") or {}).get("phase", "Pending") == "Pending":
                await self._mark_running(pod, sim.spec)
        except (NotFoundError, ConflictError):
            pass  # already gone, or replaced by a new pod of the same name
        except ApiError as e:
            log.warning(
                "simulated kubelet of %s: pod %s/%s: %s",
                sim.spec.name,
                meta.get("namespace"),
                meta.get("name"),
                e,
            )

    async def _start_pending_pods(self, node: str) -> None:
        for pod in await self._kube.list(PODS, field_selector=f"spec.nodeName={node}"):
            await self._on_pod(pod)

    async def _mark_running(self, pod: Body, spec: NodeSpec) -> None:
        meta, pod_spec = pod["metadata"], pod.get("spec") or {}
        now = _now()
        host_ip = spec.internal_ip
        if pod_spec.get("hostNetwork"):
            pod_ip = host_ip
        else:
            h = zlib.crc32(meta["uid"].encode())
            pod_ip = f"{POD_CIDR_PREFIX}.{h % 256}.{2 + (h >> 8) % 250}"
        statuses = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "containerID": f"containerd://{hashlib.sha256((meta['uid'] + c['name']).encode()).hexdigest()}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod_spec.get("containers") or []
        ]
        conditions = [
            {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
            for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        ]
        patch = {
            "status": {
                "phase": "Running",
                "hostIP": host_ip,
                "hostIPs": [{"ip": host_ip}],
                "podIP": pod_ip,
                "podIPs": [{"ip": pod_ip}],
                "startTime": now,
                "conditions": conditions,
                "containerStatuses": statuses,
            }
        }
        await self._kube.patch(
            PODS, meta["name"], patch, meta["namespace"], subresource="status", content_type=STRATEGIC_PATCH
        )


async def _retry(call: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    """Retry server errors and dropped connections (the API server may be busy); not 4xx."""
    delay = 0.1
    for attempt in range(attempts):
        try:
            return await call()
        except ApiError as e:
            if (e.status < 500 and e.status != 429) or attempt == attempts - 1:
                raise
        except (TimeoutError, OSError, aiohttp.ClientError):
            if attempt == attempts - 1:
                raise
        await asyncio.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def create_observer(kubeconfig: str | os.PathLike[str] | None = None, **kwargs: Any) -> NodeSimulator:
    """Factory for ``python -m fakes.arm --kubeconfig PATH`` (settings from ``FAKE_NODE_*``)."""
    return NodeSimulator.from_kubeconfig(kubeconfig, **kwargs)


def simulate_nodes_enabled(env: Mapping[str, str]) -> bool:
    """``FAKE_CLOUD_SIMULATE_NODES`` (default on) — whether FakeCloud registers Nodes itself."""
    return env.get("FAKE_CLOUD_SIMULATE_NODES", "true").strip().lower() not in _FALSE
