"""Agent pools and their long-running operations: the state machine behind the AKS endpoints.

States: a create starts ``Creating`` and ends ``Succeeded`` (or ``Failed``) after the create
latency; an update goes through ``Updating`` — ``Scaling`` when only ``count`` changes — and a
deleteMachines through ``Scaling``, both for the update latency; a delete goes through ``Deleting``
and then the pool is gone. As on AKS only one operation runs on a pool at a time: a PUT, DELETE or
deleteMachines during it is refused with 409 ``OperationNotAllowed`` (``serialize_pool_operations``
off: the new operation is accepted and the running one ends ``Canceled``).

Each pool keeps the scale set instance ids of its VMs, as VMSS numbers them: a create makes
``0 .. count-1``, a scale-out adds ids never used in the pool before, a scale-in removes the
highest ids (what a blind scale-down of a scale set does), deleteMachines removes exactly the
machines named. The machines exist once the operation that makes them has succeeded; the
observers hear of every such change (``on_pool_running``).

Every change happens synchronously inside one event-loop step, so no locking is needed.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fakes import skus
from fakes.arm import validation
from fakes.arm.config import ClusterConfig, FakeArmConfig
from fakes.arm.errors import (
    QUOTA_EXCEEDED,
    ArmError,
    ErrorContext,
    default_message,
    error_object,
    invalid_parameter,
    machine_not_found,
    machines_not_found,
    operation_not_allowed,
    pool_limit_exceeded,
    pool_not_found,
    resource_not_found,
)
from fakes.arm.faults import FaultSet, PoolFault
from fakes.arm.hooks import PoolInfo, node_internal_ip
from fakes.arm.quota import QuotaBook, demand_of

log = logging.getLogger(__name__)

OperationKind = Literal["create", "update", "delete", "deleteMachines"]
OperationStatus = Literal["InProgress", "Succeeded", "Failed", "Canceled"]
POOL_TYPE = "Microsoft.ContainerService/managedClusters/agentPools"
MACHINE_TYPE = "Microsoft.ContainerService/managedClusters/agentPools/machines"
CLUSTER_TYPE = "Microsoft.ContainerService/managedClusters"
#: States in which a pool's VMs exist and count against quota.
_CONSUMING = frozenset({"Creating", "Updating", "Scaling", "Succeeded", "Deleting"})
_READ_ONLY = ("provisioningState", "currentOrchestratorVersion", "nodeImageVersion", "eTag", "powerState")
_MAX_FINISHED_OPERATIONS = 10_000


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def node_image_version(os_sku: str) -> str:
    if os_sku.startswith(("AzureLinux", "CBLMariner")):
        return "AKSAzureLinux-V3gen2-202501.12.0"
    if os_sku.startswith("Windows"):
        return "AKSWindows-2022-containerd-20348.2966.250110"
    return "AKSUbuntu-2204gen2containerd-202501.12.0"


@dataclass
class Cluster:
    config: ClusterConfig
    created: dt.datetime = field(default_factory=_now)

    @property
    def key(self) -> tuple[str, str, str]:
        c = self.config
        return (c.subscription_id.lower(), c.resource_group.lower(), c.name.lower())

    @property
    def id(self) -> str:
        c = self.config
        return f"/subscriptions/{c.subscription_id}/resourceGroups/{c.resource_group}/providers/{CLUSTER_TYPE}/{c.name}"


@dataclass
class Operation:
    id: str
    kind: OperationKind
    pool_key: tuple[str, str, str, str]
    subscription_id: str
    location: str
    status: OperationStatus = "InProgress"
    started: dt.datetime = field(default_factory=_now)
    ended: dt.datetime | None = None
    error: dict[str, Any] | None = None
    #: Fault that decides how it ends (``fail``/``stuck``), if any.
    fault: PoolFault | None = None
    #: Instance ids a deleteMachines removes.
    machines: tuple[int, ...] = ()
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.id, "status": self.status, "startTime": _iso(self.started)}
        if self.ended is not None:
            body["endTime"] = _iso(self.ended)
        if self.error is not None:
            body["error"] = self.error
        return body


@dataclass
class Pool:
    cluster: Cluster
    name: str
    properties: dict[str, Any]
    etag: str = field(default_factory=lambda: str(uuid.uuid4()))
    operation: Operation | None = None
    #: Scale set instance ids of the VMs that exist (see the module docstring).
    instance_ids: list[int] = field(default_factory=list)
    #: The id the next new VM gets: VMSS never hands out an id twice.
    next_instance_id: int = 0

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (*self.cluster.key, self.name)

    @property
    def id(self) -> str:
        return f"{self.cluster.id}/agentPools/{self.name}"

    @property
    def state(self) -> str:
        return str(self.properties.get("provisioningState", ""))

    @property
    def vm_size(self) -> str:
        return str(self.properties.get("vmSize", ""))

    @property
    def count(self) -> int:
        return int(self.properties.get("count", 0))

    @property
    def spot(self) -> bool:
        return self.properties.get("scaleSetPriority") == "Spot"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": POOL_TYPE,
            "properties": copy.deepcopy(self.properties),
        }

    def info(self) -> PoolInfo:
        c = self.cluster.config
        p = self.properties
        return PoolInfo(
            subscription_id=c.subscription_id,
            resource_group=c.resource_group,
            cluster_name=c.name,
            node_resource_group=c.effective_node_resource_group,
            location=c.location,
            name=self.name,
            id=self.id,
            provisioning_state=self.state,
            vm_size=self.vm_size,
            count=self.count,
            mode=str(p.get("mode", "User")),
            os_type=str(p.get("osType", "Linux")),
            os_sku=str(p.get("osSKU", "Ubuntu")),
            os_disk_size_gb=int(p.get("osDiskSizeGB", 0)),
            scale_set_priority=str(p.get("scaleSetPriority", "Regular")),
            orchestrator_version=str(p.get("currentOrchestratorVersion", "")),
            node_image_version=str(p.get("nodeImageVersion", "")),
            availability_zones=tuple(p.get("availabilityZones") or ()),
            node_labels=dict(p.get("nodeLabels") or {}),
            node_taints=tuple(p.get("nodeTaints") or ()),
            tags=dict(p.get("tags") or {}),
            properties=copy.deepcopy(p),
            instance_ids=tuple(sorted(self.instance_ids)),
        )

    def machine_json(self, info: PoolInfo, index: int) -> dict[str, Any]:
        """Scale set instance ``index`` as the AKS machines API shows it (``info`` is ``self.info()``)."""
        name = info.node_name(index)
        body: dict[str, Any] = {
            "id": f"{self.id}/machines/{name}",
            "name": name,
            "type": MACHINE_TYPE,
            "properties": {
                "resourceId": info.vm_resource_id(index),
                "network": {"ipAddresses": [{"family": "IPv4", "ip": node_internal_ip(name)}]},
            },
        }
        zones = info.availability_zones
        if zones:
            body["zones"] = [zones[index % len(zones)]]
        return body

    def machine_ids(self) -> dict[str, int]:
        """Machine name -> instance id, for the VMs that exist."""
        info = self.info()
        return {info.node_name(i): i for i in sorted(self.instance_ids)}


@dataclass(frozen=True)
class WriteResult:
    """What a PUT or DELETE answered: HTTP status, the pool (None once gone) and the operation."""

    status: int
    pool: Pool | None
    operation: Operation | None


Notify = Callable[[str, PoolInfo], None]


class PoolStore:
    """Clusters, pools, operations and the quota they consume, for one server instance."""

    def __init__(self, config: FakeArmConfig, faults: FaultSet, quota: QuotaBook, notify: Notify) -> None:
        self.config = config
        self.faults = faults
        self.quota = quota
        self._notify = notify
        self.latency = config.latency
        self.clusters: dict[tuple[str, str, str], Cluster] = {}
        self.pools: dict[tuple[str, str, str, str], Pool] = {}
        self.operations: dict[str, Operation] = {}
        self.reset()

    # -- lifecycle -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every pool and operation; clusters go back to the configured ones.

        Observers hear ``deleted`` for each pool that existed, so simulated nodes go too.
        """
        for op in self.operations.values():
            if op.timer is not None:
                op.timer.cancel()
        for pool in list(self.pools.values()):
            self._notify("deleted", pool.info())
        self.pools.clear()
        self.operations.clear()
        self.clusters = {}
        self.latency = self.config.latency
        for cc in self.config.clusters:
            self.add_cluster(cc)

    def close(self) -> None:
        for op in self.operations.values():
            if op.timer is not None:
                op.timer.cancel()
                op.timer = None

    def add_cluster(self, cc: ClusterConfig) -> Cluster:
        cluster = Cluster(cc)
        self.clusters[cluster.key] = cluster
        return cluster

    # -- clusters --------------------------------------------------------------------------------

    def cluster(self, subscription_id: str, resource_group: str, name: str) -> Cluster:
        key = (subscription_id.lower(), resource_group.lower(), name.lower())
        found = self.clusters.get(key)
        if found is not None:
            return found
        if self.config.auto_create_clusters:
            return self.add_cluster(
                ClusterConfig(subscription_id=subscription_id, resource_group=resource_group, name=name)
            )
        raise resource_not_found(CLUSTER_TYPE, name, resource_group)

    def cluster_json(self, cluster: Cluster) -> dict[str, Any]:
        c = cluster.config
        pools = [p for p in self.pools.values() if p.cluster is cluster]
        profiles = []
        for pool in sorted(pools, key=lambda p: p.name):
            profile = copy.deepcopy(pool.properties)
            profile["name"] = pool.name
            profiles.append(profile)
        return {
            "id": cluster.id,
            "location": c.location,
            "name": c.name,
            "type": CLUSTER_TYPE,
            "sku": {"name": "Base", "tier": "Free"},
            "identity": {
                "type": "SystemAssigned",
                "principalId": str(uuid.uuid5(uuid.NAMESPACE_URL, cluster.id)),
            },
            "properties": {
                "provisioningState": "Succeeded",
                "powerState": {"code": "Running"},
                "kubernetesVersion": c.kubernetes_version,
                "currentKubernetesVersion": c.kubernetes_version,
                "dnsPrefix": c.name,
                "fqdn": f"{c.name}-dns-{cluster.key[0][:8]}.hcp.{c.location}.azmk8s.io",
                "agentPoolProfiles": profiles,
                "maxAgentPools": self.config.max_pools_per_cluster,
                "nodeResourceGroup": c.effective_node_resource_group,
                "enableRBAC": True,
                "networkProfile": {"networkPlugin": "azure", "networkPluginMode": "overlay"},
                "oidcIssuerProfile": {"enabled": True},
                "securityProfile": {"workloadIdentity": {"enabled": True}},
            },
        }

    # -- reads -----------------------------------------------------------------------------------

    def get(self, cluster: Cluster, name: str) -> Pool:
        pool = self.pools.get((*cluster.key, name))
        if pool is None:
            raise pool_not_found(name, cluster.config.name)
        return pool

    def list(self, cluster: Cluster) -> list[Pool]:
        return sorted((p for p in self.pools.values() if p.cluster is cluster), key=lambda p: p.name)

    def machines(self, cluster: Cluster, name: str) -> builtins.list[dict[str, Any]]:
        """The machines (scale set VMs) of pool ``name``, lowest instance id first."""
        pool = self.get(cluster, name)
        info = pool.info()
        return [pool.machine_json(info, i) for i in info.instances()]

    def machine(self, cluster: Cluster, name: str, machine: str) -> dict[str, Any]:
        pool = self.get(cluster, name)
        index = pool.machine_ids().get(machine.lower())
        if index is None:
            raise machine_not_found(machine, name)
        return pool.machine_json(pool.info(), index)

    def usage(self, subscription_id: str, location: str) -> dict[str, int]:
        """vCPUs in use per quota name by this subscription's pools in ``location``."""
        used: dict[str, int] = {}
        for pool in self.pools.values():
            c = pool.cluster.config
            if c.subscription_id.lower() != subscription_id.lower() or c.location != location:
                continue
            if pool.state not in _CONSUMING:
                continue
            sku = skus.get_sku(pool.vm_size)
            if sku is None:
                continue
            for family, vcpus in demand_of(sku, pool.count, pool.spot).items():
                used[family] = used.get(family, 0) + vcpus
        return used

    def vm_counts(self, subscription_id: str, location: str) -> tuple[int, int]:
        """(virtual machines, scale sets) of this subscription's pools in ``location``."""
        vms = sets = 0
        for pool in self.pools.values():
            c = pool.cluster.config
            if c.subscription_id.lower() == subscription_id.lower() and c.location == location:
                if pool.state in _CONSUMING:
                    vms += pool.count
                sets += 1
        return vms, sets

    # -- writes ----------------------------------------------------------------------------------

    def put(
        self,
        cluster: Cluster,
        name: str,
        body: Mapping[str, Any],
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> WriteResult:
        existing = self.pools.get((*cluster.key, name))
        _check_preconditions(existing, if_match, if_none_match)
        self._check_idle(existing)
        raw = body.get("properties")
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise invalid_parameter("properties", "The request body must contain an object 'properties'.")
        # null means "not given" in ARM bodies; read-only fields are the server's.
        requested = {k: v for k, v in raw.items() if k not in _READ_ONLY and v is not None}
        validation.check_pool_name(name, str(requested.get("osType") or "Linux"))
        if existing is None:
            props = self._defaults(cluster, requested)
        else:
            props = self._normalize(cluster, _merge(existing.properties, requested))
            validation.check_immutable(existing.properties, props)
        validation.check_properties(props)
        ctx = self._context(cluster, name, props)
        sku = validation.check_sku(
            ctx, skus.get_sku(props["vmSize"]), list(props.get("availabilityZones") or [])
        )
        if existing is None and len(self.list(cluster)) >= self.config.max_pools_per_cluster:
            raise pool_limit_exceeded(cluster.config.name, self.config.max_pools_per_cluster)
        kind: OperationKind = "create" if existing is None else "update"
        outcome, latency = self.faults.take_pool(kind, name, props["vmSize"])
        if outcome is not None and outcome.action == "reject":
            raise self._fault_error(outcome, ctx, props, sku, existing)
        self._check_quota(ctx, props, sku, existing)

        if existing is None:
            running = "Creating"
        elif _only_count_changed(existing.properties, props):
            running = "Scaling"
        else:
            running = "Updating"
        props["provisioningState"] = running
        if existing is None:
            pool = Pool(cluster=cluster, name=name, properties=props)
            self.pools[pool.key] = pool
            status = 201
        else:
            pool = existing
            pool.properties = props
            pool.etag = str(uuid.uuid4())
            status = 200
        pool.properties["eTag"] = pool.etag
        op = self._start(pool, kind, outcome, latency)
        return WriteResult(status, pool, op)

    def delete(self, cluster: Cluster, name: str, if_match: str | None = None) -> WriteResult:
        pool = self.pools.get((*cluster.key, name))
        if pool is None:
            if if_match not in (None, "*"):
                raise ArmError(412, "PreconditionFailed", f"Agent pool '{name}' does not exist (If-Match).")
            return WriteResult(204, None, None)
        _check_preconditions(pool, if_match, None)
        self._check_idle(pool)
        outcome, latency = self.faults.take_pool("delete", name, pool.vm_size)
        ctx = self._context(cluster, name, pool.properties)
        if outcome is not None and outcome.action == "reject":
            raise self._fault_error(outcome, ctx, pool.properties, skus.get_sku(pool.vm_size), pool)
        pool.properties["provisioningState"] = "Deleting"
        op = self._start(pool, "delete", outcome, latency)
        return WriteResult(202, pool, op)

    def delete_machines(self, cluster: Cluster, name: str, body: Mapping[str, Any]) -> WriteResult:
        """Start removing exactly the machines ``body["machineNames"]`` names from pool ``name``;
        its ``count`` goes down by as many at once, the VMs are gone when the operation ends."""
        pool = self.get(cluster, name)
        raw = body.get("machineNames")
        if not isinstance(raw, list) or not raw or not all(isinstance(n, str) and n for n in raw):
            raise invalid_parameter(
                "machineNames",
                "The request body must contain 'machineNames', a non-empty list of machine names.",
            )
        self._check_idle(pool)
        by_name = pool.machine_ids()
        wanted = list(dict.fromkeys(n.lower() for n in raw))  # in order, each once
        unknown = [n for n in raw if n.lower() not in by_name]
        if unknown:
            raise machines_not_found(name, list(dict.fromkeys(unknown)))
        props = copy.deepcopy(pool.properties)
        props["count"] = max(pool.count - len(wanted), 0)
        validation.check_properties(props)  # a System pool keeps at least one node
        outcome, latency = self.faults.take_pool("deleteMachines", name, pool.vm_size)
        if outcome is not None and outcome.action == "reject":
            ctx = self._context(cluster, name, pool.properties)
            raise self._fault_error(outcome, ctx, pool.properties, skus.get_sku(pool.vm_size), pool)
        props["provisioningState"] = "Scaling"
        pool.properties = props
        pool.etag = str(uuid.uuid4())
        pool.properties["eTag"] = pool.etag
        op = self._start(pool, "deleteMachines", outcome, latency, machines=tuple(by_name[n] for n in wanted))
        return WriteResult(202, pool, op)

    def finish(
        self, op_id: str, status: OperationStatus = "Succeeded", error: dict[str, Any] | None = None
    ) -> Operation:
        """End a running operation now (e.g. one a ``stuck`` fault holds), with the given outcome."""
        op = self.operations.get(op_id)
        if op is None or op.status != "InProgress":
            raise KeyError(op_id)
        if op.timer is not None:
            op.timer.cancel()
            op.timer = None
        if status == "Succeeded":
            op.fault = None
        else:
            op.fault = PoolFault(
                action="fail",
                operation=op.kind,
                code=str((error or {}).get("code") or "InternalOperationError"),
                message=(error or {}).get("message"),
            )
        self._complete(op.id)
        return op

    # -- internals -------------------------------------------------------------------------------

    def _defaults(self, cluster: Cluster, requested: Mapping[str, Any]) -> dict[str, Any]:
        props: dict[str, Any] = {
            "count": 1,
            "vmSize": "Standard_D2s_v3",
            "osDiskType": "Managed",
            "kubeletDiskType": "OS",
            "maxPods": 110,
            "type": "VirtualMachineScaleSets",
            "osType": "Linux",
            "mode": "User",
            "scaleSetPriority": "Regular",
            "enableAutoScaling": False,
            "enableNodePublicIP": False,
            "enableFIPS": False,
            "enableEncryptionAtHost": False,
            "enableUltraSSD": False,
            "upgradeSettings": {"maxSurge": "10%"},
            "orchestratorVersion": cluster.config.kubernetes_version,
        }
        props.update(copy.deepcopy(dict(requested)))
        return self._normalize(cluster, props)

    def _normalize(self, cluster: Cluster, props: dict[str, Any]) -> dict[str, Any]:
        if not props.get("osDiskSizeGB"):
            props["osDiskSizeGB"] = 128
        if not props.get("osSKU"):
            props["osSKU"] = "Windows2022" if props.get("osType") == "Windows" else "Ubuntu"
        if not props.get("orchestratorVersion"):
            props["orchestratorVersion"] = cluster.config.kubernetes_version
        if props.get("scaleSetPriority") == "Spot":
            props.setdefault("scaleSetEvictionPolicy", "Delete")
            props.setdefault("spotMaxPrice", -1)
            labels = dict(props.get("nodeLabels") or {})
            labels[validation.SPOT_LABEL] = "spot"
            props["nodeLabels"] = labels
            taints = list(props.get("nodeTaints") or [])
            if validation.SPOT_TAINT not in taints:
                taints.append(validation.SPOT_TAINT)
            props["nodeTaints"] = taints
        props["currentOrchestratorVersion"] = props["orchestratorVersion"]
        props["nodeImageVersion"] = node_image_version(str(props["osSKU"]))
        props["powerState"] = {"code": "Running"}
        return props

    def _context(self, cluster: Cluster, name: str, props: Mapping[str, Any]) -> ErrorContext:
        c = cluster.config
        return ErrorContext(
            subscription_id=c.subscription_id,
            resource_group=c.resource_group,
            cluster=c.name,
            node_resource_group=c.effective_node_resource_group,
            location=c.location,
            pool=name,
            vm_size=str(props.get("vmSize", "")),
            zones=tuple(props.get("availabilityZones") or ()),
        )

    def _demand(self, props: Mapping[str, Any], sku: skus.SkuInfo, existing: Pool | None) -> dict[str, int]:
        spot = props.get("scaleSetPriority") == "Spot"
        demand = demand_of(sku, int(props.get("count", 1)), spot)
        if existing is not None and existing.state in _CONSUMING:
            for family, vcpus in demand_of(sku, existing.count, existing.spot).items():
                demand[family] = demand.get(family, 0) - vcpus
        return demand

    def _check_quota(
        self, ctx: ErrorContext, props: Mapping[str, Any], sku: skus.SkuInfo, existing: Pool | None
    ) -> None:
        usage = self.usage(ctx.subscription_id, ctx.location)
        short = self.quota.shortfall(ctx.location, usage, self._demand(props, sku, existing))
        if short is not None:
            full = dataclasses.replace(
                ctx, family=short.family, limit=short.limit, usage=short.usage, required=short.required
            )
            raise ArmError(400, QUOTA_EXCEEDED, default_message(QUOTA_EXCEEDED, full))

    def _fault_context(
        self, ctx: ErrorContext, props: Mapping[str, Any], sku: skus.SkuInfo | None, existing: Pool | None
    ) -> ErrorContext:
        if sku is None:
            return ctx
        demand = self._demand(props, sku, existing)
        family = skus.SPOT_VCPUS if props.get("scaleSetPriority") == "Spot" else sku.family
        usage = self.usage(ctx.subscription_id, ctx.location).get(family, 0) + self.quota.baseline(
            ctx.location, family
        )
        return dataclasses.replace(
            ctx,
            family=family,
            limit=self.quota.limit(ctx.location, family),
            usage=usage,
            required=max(demand.get(family, 0), 0),
        )

    def _fault_error(
        self,
        fault: PoolFault,
        ctx: ErrorContext,
        props: Mapping[str, Any],
        sku: skus.SkuInfo | None,
        existing: Pool | None,
    ) -> ArmError:
        code = fault.code or "InternalOperationError"
        message = fault.message or default_message(code, self._fault_context(ctx, props, sku, existing))
        return ArmError(fault.status, code, message)

    def _check_idle(self, pool: Pool | None) -> None:
        """AKS' serialization: no second operation on a pool while one runs."""
        if pool is not None and pool.operation is not None and self.config.serialize_pool_operations:
            raise operation_not_allowed(pool.name, pool.state)

    def _start(
        self,
        pool: Pool,
        kind: OperationKind,
        fault: PoolFault | None,
        latency: float | None,
        machines: tuple[int, ...] = (),
    ) -> Operation:
        c = pool.cluster.config
        op = Operation(
            id=str(uuid.uuid4()),
            kind=kind,
            pool_key=pool.key,
            subscription_id=c.subscription_id,
            location=c.location,
            fault=fault,
            machines=machines,
        )
        self.operations[op.id] = op
        self._trim_operations()
        if pool.operation is not None:  # only without serialization: the new one takes over
            self._cancel(pool.operation, op)
        pool.operation = op
        if fault is not None and fault.action == "stuck":
            return op
        delay = latency if latency is not None else self.latency.for_operation(kind)
        op.timer = asyncio.get_running_loop().call_later(max(delay, 0.0), self._complete, op.id)
        return op

    @staticmethod
    def _cancel(op: Operation, by: Operation) -> None:
        if op.timer is not None:
            op.timer.cancel()
            op.timer = None
        op.status = "Canceled"
        op.ended = _now()
        op.error = error_object(
            "Canceled", f"The operation was overriden and canceled by a later operation {by.id}."
        )

    def _complete(self, op_id: str) -> None:
        op = self.operations.get(op_id)
        if op is None or op.status != "InProgress":
            return
        op.timer = None
        op.ended = _now()
        pool = self.pools.get(op.pool_key)
        if pool is None or pool.operation is not op:
            op.status = "Canceled"
            return
        pool.operation = None
        fault = op.fault
        if fault is not None and fault.action == "fail":
            code = fault.code or "InternalOperationError"
            ctx = self._context(pool.cluster, pool.name, pool.properties)
            sku = skus.get_sku(pool.vm_size)
            message = fault.message or default_message(
                code, self._fault_context(ctx, pool.properties, sku, None)
            )
            op.status = "Failed"
            op.error = error_object(code, message)
            pool.properties["provisioningState"] = "Failed"
            # AKS reports why on the pool itself, too (properties.status.provisioningError).
            pool.properties.setdefault("status", {})["provisioningError"] = error_object(code, message)
            pool.etag = str(uuid.uuid4())
            pool.properties["eTag"] = pool.etag
            return
        op.status = "Succeeded"
        if op.kind == "delete":
            del self.pools[pool.key]
            self._notify("deleted", pool.info())
            return
        if op.kind == "deleteMachines":
            pool.instance_ids = [i for i in pool.instance_ids if i not in op.machines]
        else:
            _settle_instances(pool)
        pool.properties["provisioningState"] = "Succeeded"
        pool.etag = str(uuid.uuid4())
        pool.properties["eTag"] = pool.etag
        self._notify("running", pool.info())

    def _trim_operations(self) -> None:
        if len(self.operations) <= _MAX_FINISHED_OPERATIONS:
            return
        for op_id in [i for i, o in self.operations.items() if o.status != "InProgress"][
            : len(self.operations) // 2
        ]:
            del self.operations[op_id]


def _settle_instances(pool: Pool) -> None:
    """Make the pool's VMs match its ``count``: new ones get new instance ids, a scale-in removes
    the highest ids."""
    ids = sorted(pool.instance_ids)[: max(pool.count, 0)]
    while len(ids) < pool.count:
        ids.append(pool.next_instance_id)
        pool.next_instance_id += 1
    pool.instance_ids = ids


def _only_count_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a PUT changes ``count`` and nothing else a client sets (AKS calls that Scaling)."""
    ignored = {*_READ_ONLY, "status", "count"}

    def settable(props: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in props.items() if k not in ignored}

    return old.get("count") != new.get("count") and settable(old) == settable(new)


def _merge(old: Mapping[str, Any], requested: Mapping[str, Any]) -> dict[str, Any]:
    """A PUT on an existing pool: sent properties replace, unsent ones keep their values."""
    merged = copy.deepcopy(dict(old))
    merged.update(copy.deepcopy(dict(requested)))
    if not merged.get("osDiskSizeGB"):
        merged["osDiskSizeGB"] = old.get("osDiskSizeGB", 128)
    return merged


def _check_preconditions(pool: Pool | None, if_match: str | None, if_none_match: str | None) -> None:
    if if_none_match is not None and if_none_match.strip() == "*" and pool is not None:
        raise ArmError(
            412, "PreconditionFailed", f"Agent pool '{pool.name}' already exists (If-None-Match: *)."
        )
    if if_match is None:
        return
    wanted = if_match.strip().strip('"')
    if pool is None:
        if wanted != "*":
            raise ArmError(412, "PreconditionFailed", "The agent pool does not exist (If-Match).")
        return
    if wanted not in ("*", pool.etag):
        raise ArmError(
            412,
            "PreconditionFailed",
            f"The etag '{wanted}' does not match the current etag '{pool.etag}' of agent pool '{pool.name}'.",
        )
