"""A deterministic world for reconciler tests: the in-memory API server, a scripted cloud, a clock.

The controller under test is the real one (store, queue, reconcilers, apply); only the API server
and the cloud are replaced by in-memory doubles, and watch events reach the controller only when a
test calls :meth:`World.deliver` (or :meth:`World.settle`), so races can be staged exactly.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import CollectorRegistry

from fakes.kaito import kaito_machine, kaito_nodeclaim
from provisioner.claims.dialects import DIALECTS, MACHINES, NODECLAIMS
from provisioner.claims.model import ClaimKey
from provisioner.cloud.errors import CloudError, InvalidSpec, NotFound, Transient
from provisioner.cloud.naming import pool_name
from provisioner.cloud.types import (
    MANAGED_BY_VALUE,
    TAG_CLAIM_NAME,
    TAG_CLAIM_UID,
    TAG_MANAGED_BY,
    CapacityType,
    Instance,
    InstanceRequest,
    InstanceState,
    InstanceType,
)
from provisioner.controller import Controller
from provisioner.events import EventRecorder
from provisioner.kube import EVENTS, NODES, PODS, Resource
from provisioner.metrics import Metrics
from provisioner.settings import Settings
from tests.unit.memkube import MemKube

T0 = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
POOL_LABEL = "kubernetes.azure.com/agentpool"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
GPUS = {"Standard_NC24ads_A100_v4": 1, "Standard_NC12s_v3": 2, "Standard_D4s_v3": 0}
VCPUS = {"Standard_NC24ads_A100_v4": 24, "Standard_NC12s_v3": 12, "Standard_D4s_v3": 4}
RESOURCES = {"machine": MACHINES, "nodeclaim": NODECLAIMS}


def provider_id(pool: str) -> str:
    return (
        f"azure:///subscriptions/{SUBSCRIPTION}/resourceGroups/mc_rg_aks_eastus/providers/Microsoft.Compute/"
        f"virtualMachineScaleSets/aks-{pool}-12345678-vmss/virtualMachines/0"
    )


@dataclass
class ScriptedCloud:
    """A cloud whose every answer the test decides. Instances change state only when told to."""

    instances: dict[str, Instance] = field(default_factory=dict)
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    #: operation -> errors raised by the next calls of it, in order.
    errors: dict[str, list[CloudError]] = field(default_factory=dict)
    #: When set, instance_types() waits on it (to stage concurrent launches).
    instance_types_gate: asyncio.Event | None = None
    #: New instances start in this state.
    initial_state: InstanceState = InstanceState.CREATING
    versions: dict[str, int] = field(default_factory=dict)
    #: What ``quota_allows`` answers (the quota the cloud would report now).
    quota_free: bool = False

    def instance_name(self, claim_name: str) -> str:
        return pool_name(claim_name)

    def instance_of_node(self, node: Mapping[str, Any]) -> str | None:
        return ((node.get("metadata") or {}).get("labels") or {}).get(POOL_LABEL)

    def count(self, operation: str, name: str | None = None) -> int:
        return sum(1 for op, n in self.calls if op == operation and (name is None or n == name))

    def _raise(self, operation: str) -> None:
        queued = self.errors.get(operation)
        if queued:
            raise queued.pop(0)

    def set_state(self, name: str, state: InstanceState, failure: CloudError | None = None) -> None:
        self._store(replace(self.instances[name], state=state, failure=failure))

    def _store(self, inst: Instance) -> Instance:
        self.versions[inst.name] = self.versions.get(inst.name, 0) + 1
        inst = replace(inst, version=str(self.versions[inst.name]))
        self.instances[inst.name] = inst
        return inst

    def add(
        self,
        name: str,
        instance_type: str = "Standard_NC24ads_A100_v4",
        *,
        tags: Mapping[str, str] | None = None,
        node_labels: Mapping[str, str] | None = None,
        state: InstanceState = InstanceState.RUNNING,
    ) -> Instance:
        """An instance that exists already (created by someone, or by us before a restart)."""
        return self._store(
            Instance(
                name=name,
                provider_id="",
                instance_type=instance_type,
                zone="eastus-1",
                capacity_type=CapacityType.ON_DEMAND,
                state=state,
                labels={"node.kubernetes.io/instance-type": instance_type},
                capacity={"cpu": str(VCPUS[instance_type]), "nvidia.com/gpu": str(GPUS[instance_type])},
                tags=dict(tags or {}),
                node_labels=dict(node_labels or {}),
                image_id="AKSUbuntu-2204gen2containerd-202605.01.0",
            )
        )

    async def create(self, request: InstanceRequest) -> Instance:
        self.calls.append(("create", request.name))
        self._raise("create")
        existing = self.instances.get(request.name)
        if existing is not None:
            if existing.claim_uid != request.claim_uid:
                raise Transient(f"instance {request.name} belongs to another claim", "PoolNameInUse")
            return existing
        size = request.instance_types[0]
        if size not in GPUS:
            raise InvalidSpec(f"unknown VM size {size}", "UnknownVMSize")
        tags = {
            TAG_MANAGED_BY: MANAGED_BY_VALUE,
            TAG_CLAIM_NAME: request.claim_name,
            TAG_CLAIM_UID: request.claim_uid,
        }
        return self.add(request.name, size, tags=tags, node_labels=request.labels, state=self.initial_state)

    async def get(self, name: str) -> Instance:
        self.calls.append(("get", name))
        self._raise("get")
        inst = self.instances.get(name)
        if inst is None:
            raise NotFound(f"instance {name} not found", "NotFound")
        return inst

    async def list(self) -> builtins.list[Instance]:
        self.calls.append(("list", None))
        self._raise("list")
        return builtins.list(self.instances.values())

    async def delete(self, name: str, *, version: str | None = None) -> None:
        self.calls.append(("delete", name))
        self._raise("delete")
        inst = self.instances.get(name)
        if inst is None:
            return
        if version is not None and inst.version != version:
            raise Transient(f"instance {name} changed since it was read", "PreconditionFailed")
        self._store(replace(inst, state=InstanceState.DELETING))

    def finish_delete(self, name: str) -> None:
        self.instances.pop(name, None)

    async def adopt(self, instance: Instance, claim_name: str, claim_uid: str) -> Instance:
        self.calls.append(("adopt", instance.name))
        self._raise("adopt")
        current = self.instances[instance.name]
        if current.version != instance.version:
            raise Transient(f"instance {instance.name} changed since it was read", "PreconditionFailed")
        tags = {
            **current.tags,
            TAG_MANAGED_BY: MANAGED_BY_VALUE,
            TAG_CLAIM_NAME: claim_name,
            TAG_CLAIM_UID: claim_uid,
        }
        return self._store(replace(current, tags=tags))

    async def instance_types(self) -> builtins.list[InstanceType]:
        self.calls.append(("instance_types", None))
        if self.instance_types_gate is not None:
            await self.instance_types_gate.wait()
        return [InstanceType(name, "family", VCPUS[name], 100.0, gpus=GPUS[name]) for name in GPUS]

    async def quota_allows(self, instance_types: builtins.list[str], capacity_type: CapacityType) -> bool:
        self.calls.append(("quota", None))
        return self.quota_free

    async def close(self) -> None:
        return None


class World:
    def __init__(self, **settings: Any) -> None:
        self.now = T0
        self.kube = MemKube(clock=self.clock)
        self.cloud = ScriptedCloud()
        defaults: dict[str, Any] = {"cloud": "scripted", "leader_elect": False, "min_drain_time": 0.0}
        self.settings = Settings(**{**defaults, **settings})
        self.metrics = Metrics(CollectorRegistry())
        self._started = False
        self.controller = Controller(
            self.kube,  # type: ignore[arg-type]
            self.cloud,
            self.settings,
            metrics=self.metrics,
            events=EventRecorder(self.kube),  # type: ignore[arg-type]
            clock=self.clock,
        )

    def clock(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)

    # -- objects ----------------------------------------------------------------------------------

    def add_claim(self, kind: str, name: str, **kwargs: Any) -> dict[str, Any]:
        body = (kaito_machine if kind == "machine" else kaito_nodeclaim)(name, **kwargs)
        return self.kube.put(RESOURCES[kind], body)

    def claim(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.kube.peek(RESOURCES[kind], name)

    def conditions(self, kind: str, name: str) -> dict[str, dict[str, Any]]:
        body = self.claim(kind, name) or {}
        return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or ()}

    def join_node(
        self,
        pool: str,
        *,
        ready: bool = True,
        name: str | None = None,
        instance_type: str = "Standard_NC24ads_A100_v4",
        labels: Mapping[str, str] | None = None,
        taints: builtins.list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A Node as AKS registers it for a pool (the kubelet's labels, capacity, Ready condition)."""
        name = name or f"aks-{pool}-12345678-vmss000000"
        gpus = str(GPUS[instance_type])
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    POOL_LABEL: pool,
                    "agentpool": pool,
                    "node.kubernetes.io/instance-type": instance_type,
                    "topology.kubernetes.io/zone": "eastus-1",
                    **(labels or {}),
                },
            },
            "spec": {"providerID": provider_id(pool), "taints": taints or []},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "lastTransitionTime": self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                ],
                "capacity": {"cpu": "24", "memory": "220Gi", "nvidia.com/gpu": gpus, "pods": "110"},
                "allocatable": {"cpu": "23", "memory": "200Gi", "nvidia.com/gpu": gpus, "pods": "110"},
            },
        }
        return self.kube.put(NODES, node)

    def node(self, name: str) -> dict[str, Any] | None:
        return self.kube.peek(NODES, name)

    def add_pod(self, node: str, name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-rs", "uid": "rs"}
                ],
            },
            "spec": {"nodeName": node, **spec},
            "status": {"phase": "Running"},
        }
        return self.kube.put(PODS, pod)

    def events(self, name: str) -> builtins.list[dict[str, Any]]:
        return [e for e in self.kube.all(EVENTS) if e["involvedObject"]["name"] == name]

    def event_reasons(self, name: str) -> builtins.list[str]:
        return [e["reason"] for e in self.events(name)]

    # -- driving the controller -------------------------------------------------------------------

    def deliver(self) -> int:
        """Hand every watch event since the last call to the controller (as kopf would)."""
        events = self.kube.take_events()
        for ev in events:
            self._route(ev.resource, ev.type, ev.object)
        return len(events)

    def _route(self, res: Resource, kind: str, obj: dict[str, Any]) -> None:
        c = self.controller
        if res == NODES:
            c.on_node_event(kind, copy.deepcopy(obj))
        elif res in (MACHINES, NODECLAIMS):
            c.on_claim_event(
                DIALECTS["machine" if res == MACHINES else "nodeclaim"], kind, copy.deepcopy(obj)
            )

    async def settle(self, rounds: int = 200) -> None:
        """Run the controller's queue until it is idle and no watch event is left undelivered.

        Scheduled requeues (timers) do not fire here: a test that wants them calls
        :meth:`fire_timers` (after :meth:`advance`, usually).
        """
        q = self.controller.queue
        if not self._started:
            q.start()
            self._started = True
        for _ in range(rounds):
            self.deliver()
            await asyncio.sleep(0)
            await asyncio.wait_for(q.wait_idle(), 10)
            if not self.kube.events:
                return
        raise AssertionError("the world did not settle")

    def key(self, kind: str, name: str) -> ClaimKey:
        return DIALECTS[kind].key(name)

    def due_in(self, kind: str, name: str) -> float | None:
        return self.controller.queue.due_in(self.key(kind, name))

    def fire_timers(self) -> None:
        """Run every scheduled key now (as if its time had come)."""
        q = self.controller.queue
        for key in q.scheduled():
            q.run_now(key)

    async def resync(self) -> None:
        await self.controller.resync()

    async def close(self) -> None:
        await self.controller.stop()
