"""FakeCloud: an in-memory cloud provider with AKS-shaped results.

Serves fast unit tests and ``--cloud fake``. It keeps instances in memory, moves them through
``creating -> running`` and ``deleting -> gone`` on asyncio tasks after configurable latencies,
enforces per-size capacity and per-family vCPU quota from ``fakes.skus``, and can be scripted to
fail. Everything it is asked is recorded in ``calls``.

Built by the registry as ``FakeCloud(context)``; settings come from ``context.env``:

``LOCATION`` (eastus), ``ARM_SUBSCRIPTION_ID``, ``ARM_RESOURCE_GROUP``, ``AZURE_CLUSTER_NAME``,
``AZURE_NODE_RESOURCE_GROUP`` (``MC_<rg>_<cluster>_<location>``),
``FAKE_CLOUD_CREATE_LATENCY_SECONDS`` / ``FAKE_CLOUD_DELETE_LATENCY_SECONDS`` (0),
``FAKE_CLOUD_QUOTAS`` (``family=vcpus,...`` on top of ``fakes.skus.default_quotas()``),
``FAKE_CLOUD_CAPACITY`` (``Standard_X=count,...``; sizes not named are unlimited),
``FAKE_CLOUD_SEED``. Keyword arguments override the environment.

With ``context.kubeconfig`` set (``gpu-provisioner controller --cloud fake``) a
``fakes.simulator.NodeSimulator`` registers a Node for every running instance, unless
``FAKE_CLOUD_SIMULATE_NODES=false``; its own settings are the ``FAKE_NODE_*`` variables.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import fnmatch
import logging
import random
import re
import zlib
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from fakes import skus
from provisioner.cloud import (
    GPU_RESOURCE,
    CapacityType,
    CloudError,
    Instance,
    InstanceConflict,
    InstanceRequest,
    InstanceState,
    InstanceType,
    InsufficientCapacity,
    InvalidSpec,
    NotFound,
    ProviderContext,
    ResolvedImage,
    Taint,
    Transient,
)
from provisioner.cloud.naming import pool_name

if TYPE_CHECKING:
    from fakes.simulator import NodeSimulator

log = logging.getLogger(__name__)

Operation = Literal["create", "get", "list", "delete", "instance_types", "resolve_image"]
_WRITES: frozenset[str] = frozenset({"create", "delete"})
FailureMode = Literal["error", "late", "hang"]

DEFAULT_SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
DEFAULT_LOCATION = "eastus"
DEFAULT_OS_DISK_GIB = 128
DEFAULT_MAX_PODS = 110
DEFAULT_IMAGE_VERSION = "202501.12.0"
#: Image families the fake cloud offers (the first is the default).
IMAGE_FAMILIES = ("Ubuntu", "Ubuntu2204", "Ubuntu2404", "AzureLinux", "AzureLinux3")
# AKS pool names: lowercase alphanumeric, starting with a letter, at most 12 characters (Linux).
_POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
AGENTPOOL_LABEL = "kubernetes.azure.com/agentpool"
_MIN_OS_DISK_GIB, _MAX_OS_DISK_GIB = 30, 2048
# The shared image gallery subscription AKS node images are published from.
_AKS_IMAGE_SUBSCRIPTION = "109a5e88-712a-48ae-9078-9ca8b3c81345"
_IMAGES = {
    "ubuntu": ("Ubuntu", "AKS-Ubuntu", "AKSUbuntu", "2204gen2containerd"),
    "azurelinux": ("AzureLinux", "AKS-AzureLinux", "AKSAzureLinux", "V2gen2"),
    "cblmariner": ("AzureLinux", "AKS-AzureLinux", "AKSAzureLinux", "V2gen2"),
}


@dataclass(frozen=True)
class CallRecord:
    """One call made to the fake: which operation, on which instance name (None for listings)."""

    operation: Operation
    name: str | None = None


@dataclass(frozen=True)
class FailureRule:
    """A scripted failure.

    ``mode="error"``: the call (``operation``) raises a copy of ``error``.
    ``mode="late"``: create succeeds, then the instance ends in state ``failed`` with ``error``
    (default: an ``AllocationFailed`` capacity error) instead of turning running.
    ``mode="hang"``: create succeeds and the instance stays ``creating`` until deleted.
    The rule applies to names matching the glob ``pattern``, with ``probability`` (drawn from
    the cloud's seeded random generator), at most ``times`` times (None: always).
    """

    mode: FailureMode = "error"
    pattern: str = "*"
    error: CloudError | None = None
    operation: Operation = "create"
    probability: float = 1.0
    times: int | None = None

    def __post_init__(self) -> None:
        if self.mode == "error" and self.error is None:
            raise ValueError("a FailureRule with mode='error' needs an error")
        if self.mode in ("late", "hang") and self.operation != "create":
            raise ValueError(f"mode={self.mode!r} applies to create only")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0")

    @classmethod
    def fail(
        cls,
        error: CloudError,
        pattern: str = "*",
        *,
        operation: Operation = "create",
        probability: float = 1.0,
        times: int | None = None,
    ) -> FailureRule:
        return cls("error", pattern, error, operation, probability, times)

    @classmethod
    def fail_late(
        cls,
        pattern: str = "*",
        error: CloudError | None = None,
        *,
        probability: float = 1.0,
        times: int | None = None,
    ) -> FailureRule:
        return cls("late", pattern, error, "create", probability, times)

    @classmethod
    def hang(cls, pattern: str = "*", *, probability: float = 1.0, times: int | None = None) -> FailureRule:
        return cls("hang", pattern, None, "create", probability, times)


class InstanceObserver(Protocol):
    """Told when an instance becomes running and when it is gone (a node simulator uses this).

    ``on_instance_deleted`` is called only for instances that were announced running.
    Exceptions are logged and otherwise ignored.
    """

    async def on_instance_running(self, instance: Instance) -> None: ...

    async def on_instance_deleted(self, instance: Instance) -> None: ...


@dataclass
class _Record:
    instance: Instance
    family: str
    vcpus: int
    announced: bool = False
    taints: tuple[Taint, ...] = ()


@dataclass
class _RuleState:
    rule: FailureRule
    fired: int = 0

    def exhausted(self) -> bool:
        return self.rule.times is not None and self.fired >= self.rule.times


@dataclass(frozen=True)
class _Placement:
    sku: skus.SkuInfo
    zone: str  # Kubernetes label form


def _parse_counts(text: str, setting: str) -> dict[str, int]:
    result: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{setting}: expected NAME=COUNT, got {item!r}")
        try:
            result[key.strip()] = int(value)
        except ValueError:
            raise ValueError(f"{setting}: {value!r} is not an integer (in {item!r})") from None
    return result


def _parse_seconds(text: str | None, setting: str) -> float:
    if text is None or not text.strip():
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{setting}: {text!r} is not a number of seconds") from None
    if seconds < 0:
        raise ValueError(f"{setting}: must not be negative")
    return seconds


def vmss_node_name(provider_id: str) -> str:
    """The node name a VMSS instance registers with: ``<vmss name><instance id, 6 base-36 digits>``."""
    parts = provider_id.rstrip("/").split("/")
    vmss, index = parts[-3], int(parts[-1])
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    encoded = ""
    for _ in range(6):
        index, rest = divmod(index, 36)
        encoded = digits[rest] + encoded
    return vmss + encoded


class FakeCloud:
    """In-memory ``CloudProvider``. See the module docstring for settings."""

    def __init__(
        self,
        context: ProviderContext | None = None,
        *,
        location: str | None = None,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        cluster_name: str | None = None,
        node_resource_group: str | None = None,
        create_latency: float | None = None,
        delete_latency: float | None = None,
        api_latency: float = 0.0,
        quotas: Mapping[str, int] | None = None,
        capacity: Mapping[str, int] | None = None,
        failures: Iterable[FailureRule] = (),
        seed: int | None = None,
        observers: Iterable[InstanceObserver] = (),
        image_version: str = DEFAULT_IMAGE_VERSION,
    ) -> None:
        ctx = context or ProviderContext()
        env = ctx.env
        self.location = location or env.get("LOCATION") or DEFAULT_LOCATION
        self.subscription_id = subscription_id or env.get("ARM_SUBSCRIPTION_ID") or DEFAULT_SUBSCRIPTION_ID
        self.resource_group = resource_group or env.get("ARM_RESOURCE_GROUP") or "rg"
        self.cluster_name = cluster_name or ctx.cluster_name or env.get("AZURE_CLUSTER_NAME") or "cluster"
        self.node_resource_group = (
            node_resource_group
            or env.get("AZURE_NODE_RESOURCE_GROUP")
            or f"MC_{self.resource_group}_{self.cluster_name}_{self.location}"
        )
        self.kubeconfig = ctx.kubeconfig
        self._write_gate = ctx.write_gate
        self.create_latency = (
            create_latency
            if create_latency is not None
            else _parse_seconds(
                env.get("FAKE_CLOUD_CREATE_LATENCY_SECONDS"), "FAKE_CLOUD_CREATE_LATENCY_SECONDS"
            )
        )
        self.delete_latency = (
            delete_latency
            if delete_latency is not None
            else _parse_seconds(
                env.get("FAKE_CLOUD_DELETE_LATENCY_SECONDS"), "FAKE_CLOUD_DELETE_LATENCY_SECONDS"
            )
        )
        if self.create_latency < 0 or self.delete_latency < 0 or api_latency < 0:
            raise ValueError("latencies must not be negative")
        self.api_latency = api_latency
        self.image_version = image_version

        self._quotas = skus.default_quotas()
        self._quotas.update(_parse_counts(env.get("FAKE_CLOUD_QUOTAS", ""), "FAKE_CLOUD_QUOTAS"))
        self._quotas.update(quotas or {})
        self._capacity: dict[str, int] = {}
        for name, count in {
            **_parse_counts(env.get("FAKE_CLOUD_CAPACITY", ""), "FAKE_CLOUD_CAPACITY"),
            **(capacity or {}),
        }.items():
            self.set_capacity(name, count)

        if seed is None and env.get("FAKE_CLOUD_SEED"):
            try:
                seed = int(env["FAKE_CLOUD_SEED"])
            except ValueError:
                raise ValueError(f"FAKE_CLOUD_SEED: {env['FAKE_CLOUD_SEED']!r} is not an integer") from None
        self._random = random.Random(seed)
        self._rules: list[_RuleState] = [_RuleState(rule) for rule in failures]
        self._observers: list[InstanceObserver] = list(observers)

        self.calls: list[CallRecord] = []
        self._records: dict[str, _Record] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._changed: asyncio.Event | None = None
        self._closed = False

        self.simulator: NodeSimulator | None = None
        if ctx.kubeconfig:
            from fakes.simulator import NodeSimulator, simulate_nodes_enabled

            if simulate_nodes_enabled(env):
                self.simulator = NodeSimulator.from_kubeconfig(ctx.kubeconfig, env)
                self.simulator.attach(self)

    # --- configuration at run time -------------------------------------------------------

    def set_capacity(self, instance_type: str, count: int | None) -> None:
        """How many instances of ``instance_type`` can exist at once (None: unlimited)."""
        sku = skus.get_sku(instance_type)
        key = sku.name if sku else instance_type
        if count is None:
            self._capacity.pop(key, None)
        elif count < 0:
            raise ValueError("capacity must not be negative")
        else:
            self._capacity[key] = count

    def set_quota(self, family: str, vcpus: int) -> None:
        """The vCPU limit of a quota family (or ``cores`` / ``lowPriorityCores``)."""
        if vcpus < 0:
            raise ValueError("quota must not be negative")
        self._quotas[family] = vcpus

    def quota(self, family: str) -> tuple[int, int]:
        """(vCPUs used, vCPU limit) of a quota family."""
        return self._used_vcpus(family), self._quotas.get(family, skus.DEFAULT_UNLISTED_FAMILY_QUOTA)

    def add_failure(self, rule: FailureRule) -> None:
        self._rules.append(_RuleState(rule))

    def clear_failures(self) -> None:
        self._rules.clear()

    def add_observer(self, observer: InstanceObserver) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: InstanceObserver) -> None:
        self._observers.remove(observer)

    def add_foreign_instance(self, name: str, instance_type: str, *, zone: str | None = None) -> Instance:
        """An instance we did not create (e.g. the system pool): running, counted against quota,
        never returned by ``list``."""
        sku = skus.get_sku(instance_type)
        if sku is None:
            raise ValueError(f"unknown instance type {instance_type!r}")
        zones = sku.available_zones(self.location)
        label_zone = zone or (f"{self.location}-{zones[0]}" if zones else "0")
        request = InstanceRequest(claim_name="", claim_uid="", name=name, instance_types=(sku.name,))
        instance = replace(
            self._build_instance(request, _Placement(sku, label_zone)),
            state=InstanceState.RUNNING,
            tags={"aks-managed-poolName": name},
        )
        self._records[name] = _Record(instance, sku.family, sku.vcpus)
        self._notify_changed()
        return instance

    # --- inspection for tests and simulators ---------------------------------------------

    def count_calls(self, operation: Operation, name: str | None = None) -> int:
        return sum(1 for c in self.calls if c.operation == operation and (name is None or c.name == name))

    def snapshot(self) -> builtins.list[Instance]:
        """Every instance, ours and foreign, without recording a call."""
        return [rec.instance for rec in self._records.values()]

    def taints_of(self, name: str) -> tuple[Taint, ...]:
        """The taints ``name`` was requested with (its pool's node taints)."""
        rec = self._records.get(name)
        return rec.taints if rec else ()

    def peek(self, name: str) -> Instance | None:
        """The instance called ``name`` without recording a call."""
        rec = self._records.get(name)
        return rec.instance if rec else None

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checking after every state change.

        Bound it with ``asyncio.timeout()``.
        """
        while not predicate():
            await self._change_event().wait()

    async def wait_for_state(self, name: str, state: InstanceState | None) -> Instance | None:
        """Wait until ``name`` is in ``state`` (None: gone) and return it."""

        def reached() -> bool:
            instance = self.peek(name)
            return instance is None if state is None else instance is not None and instance.state == state

        await self.wait_for(reached)
        return self.peek(name)

    # --- CloudProvider -------------------------------------------------------------------

    def instance_name(self, claim_name: str) -> str:
        return pool_name(claim_name)

    def instance_of_node(self, node: Mapping[str, Any]) -> str | None:
        """The pool named by the Node's agent-pool label (the simulator's Nodes are AKS-shaped)."""
        labels = (node.get("metadata") or {}).get("labels") or {}
        pool = labels.get(AGENTPOOL_LABEL)
        return str(pool) if pool else None

    async def create(self, request: InstanceRequest) -> Instance:
        self._call("create", request.name)
        await self._api_delay()
        self._raise_scripted("create", request.name)

        existing = self._records.get(request.name)
        if existing is not None:
            return self._adopt(existing.instance, request)

        self._validate(request)
        placement = self._place(request)
        instance = self._build_instance(request, placement)
        self._records[request.name] = _Record(
            instance, placement.sku.family, placement.sku.vcpus, taints=tuple(request.taints)
        )
        self._notify_changed()

        rule = self._match_rule("create", request.name, ("late", "hang"))
        if rule is None or rule.mode != "hang":
            self._start_task(request.name, self._finish_create(request.name, rule))
        return instance

    async def get(self, name: str) -> Instance:
        self._call("get", name)
        await self._api_delay()
        self._raise_scripted("get", name)
        rec = self._records.get(name)
        if rec is None:
            raise NotFound(
                f"Could not find agent pool {name} in cluster {self.cluster_name}.", code="NotFound"
            )
        return rec.instance

    async def list(self) -> builtins.list[Instance]:
        self._call("list")
        await self._api_delay()
        self._raise_scripted("list", None)
        return [rec.instance for rec in self._records.values() if rec.instance.managed]

    async def delete(self, name: str, *, version: str | None = None) -> None:
        self._call("delete", name)
        await self._api_delay()
        self._raise_scripted("delete", name)
        rec = self._records.get(name)
        if rec is None or rec.instance.state == InstanceState.DELETING:
            return
        if version is not None and rec.instance.version not in (None, version):
            raise Transient(f"Agent pool {name} changed since it was read.", code="PreconditionFailed")
        rec.instance = replace(rec.instance, state=InstanceState.DELETING)
        self._notify_changed()
        # Deleting while the create is in flight stops the create: nothing may leak.
        self._start_task(name, self._finish_delete(name))

    async def resolve_image(self, family: str | None) -> ResolvedImage:
        """Image families as AKS names them; every node gets ``image_version`` (settable, to play
        a new node image being released)."""
        self._call("resolve_image")
        await self._api_delay()
        known = {f.lower(): f for f in IMAGE_FAMILIES}
        name = known.get((family or IMAGE_FAMILIES[0]).lower())
        if name is None:
            raise InvalidSpec(
                f"image family {family!r} is not offered (one of: {', '.join(IMAGE_FAMILIES)})",
                "InvalidOSSKU",
            )
        return ResolvedImage(family or name, name, self.image_version)

    async def instance_types(self) -> builtins.list[InstanceType]:
        self._call("instance_types")
        await self._api_delay()
        self._raise_scripted("instance_types", None)
        result = []
        for sku in skus.skus_in(self.location):
            restriction = sku.restriction_in(self.location)
            available = sku.is_available_in(self.location)
            reason = None
            if not available:
                reason = restriction.reason_code if restriction else skus.NOT_AVAILABLE_FOR_SUBSCRIPTION
            result.append(
                InstanceType(
                    name=sku.name,
                    family=sku.family,
                    vcpus=sku.vcpus,
                    memory_gib=sku.memory_gib,
                    gpus=sku.gpus,
                    gpu_model=sku.gpu_model,
                    zones=tuple(self._zone_label(z) for z in sku.available_zones(self.location)),
                    available=available,
                    unavailable_reason=reason,
                )
            )
        return result

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.simulator is not None:
            await self.simulator.close()

    async def __aenter__(self) -> FakeCloud:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- create helpers ------------------------------------------------------------------

    def _adopt(self, existing: Instance, request: InstanceRequest) -> Instance:
        if existing.managed and existing.claim_uid == request.claim_uid:
            return existing
        if existing.state == InstanceState.DELETING:
            raise Transient(
                f"Agent pool {request.name} is being deleted; retry after the deletion completes.",
                code="OperationNotAllowed",
            )
        if existing.managed:
            # A pool left behind by an earlier claim of the same name: GC will remove it.
            raise Transient(
                f"Agent pool {request.name} still belongs to claim {existing.claim_name} "
                f"(uid {existing.claim_uid}); waiting for it to be removed.",
                code="Conflict",
            )
        raise InstanceConflict(
            f"Agent pool {request.name} already exists and is not managed by gpu-provisioner.",
            code="PoolNameConflict",
            instance=existing,
        )

    def _validate(self, request: InstanceRequest) -> None:
        if not _POOL_NAME.match(request.name):
            raise InvalidSpec(
                f"Agent pool name {request.name!r} is invalid: it must start with a lowercase letter, "
                "contain only lowercase letters and numbers and be at most 12 characters.",
                code="InvalidParameter",
            )
        if not request.instance_types:
            raise InvalidSpec("No instance type was requested.", code="InvalidParameter")
        disk = request.os_disk_size_gib
        if disk is not None and not _MIN_OS_DISK_GIB <= disk <= _MAX_OS_DISK_GIB:
            raise InvalidSpec(
                f"OS disk size {disk} GiB is out of range [{_MIN_OS_DISK_GIB}, {_MAX_OS_DISK_GIB}].",
                code="InvalidParameter",
            )
        if request.image_family is not None and request.image_family.lower() not in _IMAGES:
            raise InvalidSpec(
                f"Unsupported node image family {request.image_family!r}; use Ubuntu or AzureLinux.",
                code="InvalidParameter",
            )

    def _place(self, request: InstanceRequest) -> _Placement:
        """The first candidate that fits; capacity errors fall through to the next candidate."""
        errors: list[CloudError] = []
        for candidate in request.instance_types:
            try:
                return self._place_one(candidate, request)
            except (InsufficientCapacity, InvalidSpec) as e:
                errors.append(e)
        capacity_errors = [e for e in errors if isinstance(e, InsufficientCapacity)]
        if not capacity_errors:
            raise errors[0] if len(errors) == 1 else InvalidSpec(_join(errors, request), code=errors[0].code)
        first = capacity_errors[0]
        if len(errors) == 1:
            raise first
        raise InsufficientCapacity(
            _join(errors, request),
            code=first.code,
            instance_type=first.instance_type,
            family=first.family,
            vcpus_needed=first.vcpus_needed,
            vcpus_free=first.vcpus_free,
        )

    def _place_one(self, candidate: str, request: InstanceRequest) -> _Placement:
        sku = skus.get_sku(candidate)
        if sku is None:
            raise InvalidSpec(
                f"The value of parameter agentPoolProfile.vmSize is invalid: unknown VM size {candidate}.",
                code="InvalidParameter",
            )
        if not sku.is_available_in(self.location):
            raise self._not_available(sku, None)

        zone = self._choose_zone(sku, request)

        limit = self._capacity.get(sku.name)
        if limit is not None:
            in_use = sum(
                1
                for rec in self._records.values()
                if rec.instance.instance_type == sku.name and rec.instance.state != InstanceState.FAILED
            )
            if in_use >= limit:
                raise InsufficientCapacity(
                    f"Allocation failed. We do not have sufficient capacity for the requested VM size "
                    f"{sku.name} in this region. Read more about improving likelihood of allocation "
                    "success at https://aka.ms/allocation-guidance",
                    code="AllocationFailed",
                    instance_type=sku.name,
                    family=sku.family,
                )

        if request.capacity_type == CapacityType.SPOT:
            self._check_quota(sku, skus.SPOT_VCPUS)
        else:
            self._check_quota(sku, sku.family)
            self._check_quota(sku, skus.REGIONAL_VCPUS)
        return _Placement(sku, zone)

    def _choose_zone(self, sku: skus.SkuInfo, request: InstanceRequest) -> str:
        listed = sku.zones_in(self.location)
        if not listed:  # a non-zonal region
            if request.zones and "0" not in request.zones:
                raise self._not_available(sku, request.zones)
            return "0"
        wanted = {self._zone_number(z) for z in request.zones}
        zones = [z for z in sku.available_zones(self.location) if not wanted or z in wanted]
        if not zones:
            raise self._not_available(sku, request.zones)

        # Spread like a zone-balanced scheduler: the zone with the fewest of this size wins.
        def load(zone: str) -> int:
            label = self._zone_label(zone)
            return sum(
                1
                for rec in self._records.values()
                if rec.instance.instance_type == sku.name and rec.instance.zone == label
            )

        return self._zone_label(min(zones, key=load))

    def _not_available(self, sku: skus.SkuInfo, zones: tuple[str, ...] | None) -> InsufficientCapacity:
        where = f"location '{self.location}'"
        if zones:
            where += f" zones {', '.join(sorted(zones))}"
        restriction = sku.restriction_in(self.location)
        reason = restriction.reason_code if restriction else skus.NOT_AVAILABLE_FOR_SUBSCRIPTION
        return InsufficientCapacity(
            f"The requested VM size {sku.name} is currently not available in {where} ({reason}). "
            "Please try another size or deploy to a different location or different zone.",
            code="SkuNotAvailable",
            instance_type=sku.name,
            family=sku.family,
        )

    def _check_quota(self, sku: skus.SkuInfo, quota_name: str) -> None:
        used, limit = self.quota(quota_name)
        needed = sku.vcpus
        if used + needed <= limit:
            return
        free = max(limit - used, 0)
        raise InsufficientCapacity(
            f"Operation could not be completed as it results in exceeding approved {quota_name} Cores "
            f"quota. Additional details - Deployment Model: Resource Manager, Location: {self.location}, "
            f"Current Limit: {limit}, Current Usage: {used}, Additional Required: {needed}, "
            f"(Minimum) New Limit Required: {used + needed}. "
            f"{sku.name} needs {needed} vCPUs of {quota_name}; {free} free.",
            code="QuotaExceeded",
            instance_type=sku.name,
            family=quota_name,
            vcpus_needed=needed,
            vcpus_free=free,
        )

    def _used_vcpus(self, quota_name: str) -> int:
        total = 0
        for rec in self._records.values():
            inst = rec.instance
            if inst.state == InstanceState.FAILED:
                continue
            spot = inst.capacity_type == CapacityType.SPOT
            if quota_name == skus.SPOT_VCPUS:
                counted = spot
            elif quota_name == skus.REGIONAL_VCPUS:
                counted = not spot
            else:
                counted = not spot and rec.family == quota_name
            if counted:
                total += rec.vcpus
        return total

    def _build_instance(self, request: InstanceRequest, placement: _Placement) -> Instance:
        sku, name = placement.sku, request.name
        digits = f"{zlib.crc32(f'{self.cluster_name}/{name}'.encode()) % 10**8:08d}"
        vmss = f"aks-{name}-{digits}-vmss"
        provider_id = (
            f"azure:///subscriptions/{self.subscription_id}/resourceGroups/{self.node_resource_group.lower()}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/0"
        )
        os_sku, image_rg, gallery, image = _IMAGES[(request.image_family or "ubuntu").lower()]
        image_id = (
            f"/subscriptions/{_AKS_IMAGE_SUBSCRIPTION}/resourceGroups/{image_rg}/providers/"
            f"Microsoft.Compute/galleries/{gallery}/images/{image}/versions/{self.image_version}"
        )
        labels = dict(request.labels)
        labels.update(
            {
                "agentpool": name,
                AGENTPOOL_LABEL: name,
                "kubernetes.azure.com/cluster": self.node_resource_group,
                "kubernetes.azure.com/mode": "user",
                "kubernetes.azure.com/role": "agent",
                "kubernetes.azure.com/os-sku": os_sku,
                "kubernetes.azure.com/node-image-version": f"{gallery}-{image}-{self.image_version}",
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": vmss_node_name(provider_id),
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": sku.name,
                "beta.kubernetes.io/instance-type": sku.name,
                "topology.kubernetes.io/region": self.location,
                "topology.kubernetes.io/zone": placement.zone,
                "failure-domain.beta.kubernetes.io/region": self.location,
                "failure-domain.beta.kubernetes.io/zone": placement.zone,
                "karpenter.sh/capacity-type": request.capacity_type.value,
            }
        )
        if request.capacity_type == CapacityType.SPOT:
            labels["kubernetes.azure.com/scalesetpriority"] = "spot"
        if sku.is_gpu:
            labels["kubernetes.azure.com/accelerator"] = "nvidia"
        disk_gib = request.os_disk_size_gib or DEFAULT_OS_DISK_GIB
        capacity = {
            "cpu": str(sku.vcpus),
            "memory": f"{int(sku.memory_gib * 1024 * 1024)}Ki",
            "ephemeral-storage": f"{disk_gib * 1024 * 1024}Ki",
            "pods": str(DEFAULT_MAX_PODS),
        }
        if sku.is_gpu:
            capacity[GPU_RESOURCE] = str(sku.gpus)
        return Instance(
            name=name,
            provider_id=provider_id,
            instance_type=sku.name,
            zone=placement.zone,
            capacity_type=request.capacity_type,
            state=InstanceState.CREATING,
            labels=labels,
            capacity=capacity,
            image_id=image_id,
            tags=request.all_tags(),
        )

    def _zone_label(self, zone: str) -> str:
        return f"{self.location}-{zone}"

    def _zone_number(self, zone: str) -> str:
        return zone.removeprefix(f"{self.location}-")

    # --- background operations -----------------------------------------------------------

    def _start_task(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run the next operation on ``name``, replacing (cancelling) the one in flight."""
        previous = self._tasks.pop(name, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.get_running_loop().create_task(coro, name=f"fakecloud-{name}")
        self._tasks[name] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(name) is done:
                del self._tasks[name]

        task.add_done_callback(forget)

    async def _finish_create(self, name: str, rule: FailureRule | None) -> None:
        await asyncio.sleep(self.create_latency)
        rec = self._records.get(name)
        if rec is None or rec.instance.state != InstanceState.CREATING:
            return
        if rule is not None and rule.mode == "late":
            error = copy.copy(rule.error) if rule.error is not None else self._late_allocation_error(rec)
            rec.instance = replace(rec.instance, state=InstanceState.FAILED, failure=error)
            self._notify_changed()
            return
        rec.instance = replace(rec.instance, state=InstanceState.RUNNING)
        rec.announced = True
        self._notify_changed()
        for observer in list(self._observers):
            try:
                await observer.on_instance_running(rec.instance)
            except Exception:
                log.exception("observer failed on running instance %s", name)

    async def _finish_delete(self, name: str) -> None:
        await asyncio.sleep(self.delete_latency)
        rec = self._records.pop(name, None)
        self._notify_changed()
        if rec is None or not rec.announced:
            return
        for observer in list(self._observers):
            try:
                await observer.on_instance_deleted(rec.instance)
            except Exception:
                log.exception("observer failed on deleted instance %s", name)

    def _late_allocation_error(self, rec: _Record) -> CloudError:
        return InsufficientCapacity(
            f"Allocation failed. We do not have sufficient capacity for the requested VM size "
            f"{rec.instance.instance_type} in this region.",
            code="AllocationFailed",
            instance_type=rec.instance.instance_type,
            family=rec.family,
        )

    # --- bookkeeping ---------------------------------------------------------------------

    def _call(self, operation: Operation, name: str | None = None) -> None:
        if self._closed:
            raise RuntimeError("FakeCloud is closed")
        if operation in _WRITES:
            self._write_gate("cloud")  # a deposed leader's write never reaches the (fake) cloud
        self.calls.append(CallRecord(operation, name))

    async def _api_delay(self) -> None:
        if self.api_latency:
            await asyncio.sleep(self.api_latency)

    def _match_rule(
        self, operation: Operation, name: str | None, modes: tuple[FailureMode, ...]
    ) -> FailureRule | None:
        for state in self._rules:
            rule = state.rule
            if rule.operation != operation or rule.mode not in modes or state.exhausted():
                continue
            if not fnmatch.fnmatchcase(name or "", rule.pattern):
                continue
            if rule.probability < 1.0 and self._random.random() >= rule.probability:
                continue
            state.fired += 1
            return rule
        return None

    def _raise_scripted(self, operation: Operation, name: str | None) -> None:
        rule = self._match_rule(operation, name, ("error",))
        if rule is not None and rule.error is not None:
            raise copy.copy(rule.error)

    def _change_event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify_changed(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


def _join(errors: Iterable[CloudError], request: InstanceRequest) -> str:
    return "; ".join(f"{t}: {e}" for t, e in zip(request.instance_types, errors, strict=False))


__all__ = [
    "CallRecord",
    "FailureRule",
    "FakeCloud",
    "InstanceObserver",
    "vmss_node_name",
]
