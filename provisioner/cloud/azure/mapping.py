"""Pure mapping between cloud-neutral requests/instances and AKS agent pools.

No I/O here: every rule (pool name, labels AKS accepts, taints, zones, disk, OS SKU, tags, the pool
body, reading a pool back) is a plain function, unit-tested on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.mgmt.containerservice.models import AgentPool

from provisioner.cloud import naming
from provisioner.cloud.azure.errors import arm_error_from_detail, classify
from provisioner.cloud.azure.settings import AzureSettings
from provisioner.cloud.azure.skus import SkuFacts, guess_is_gpu, sdk_text
from provisioner.cloud.errors import CloudError, InvalidSpec, Transient
from provisioner.cloud.types import (
    GPU_RESOURCE,
    CapacityType,
    Instance,
    InstanceRequest,
    InstanceState,
    Taint,
)

# --- names -----------------------------------------------------------------------------------

# AKS Linux agent pool names: lowercase alphanumeric, starting with a letter, at most 12 characters.
POOL_NAME = naming.POOL_NAME
instance_name = naming.pool_name


# --- labels ----------------------------------------------------------------------------------

LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_REGION = "topology.kubernetes.io/region"
LABEL_CAPACITY_TYPE = "karpenter.sh/capacity-type"
LABEL_AGENTPOOL = "kubernetes.azure.com/agentpool"
LABEL_MACHINE_TYPE = "kaito.sh/machine-type"

#: Prefixes AKS reserves for itself (its "Reserved prefixes" list); pools carrying them are refused.
AKS_RESERVED_PREFIXES = ("kubernetes.azure.com/",)

#: Labels the node gets from AKS/kubelet anyway (AKS' "Reserved system labels", well-known labels).
#: They are dropped quietly: the node will carry them with the real value.
SET_BY_AKS = frozenset(
    {
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "kubernetes.io/hostname",
        LABEL_INSTANCE_TYPE,
        LABEL_ZONE,
        LABEL_REGION,
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "kubernetes.io/role",
        "node-role.kubernetes.io/agent",
        "agentpool",
        "storageprofile",
        "storagetier",
        "accelerator",
    }
)

#: Sub-namespaces of kubernetes.io the kubelet may set on itself (NodeRestriction rules).
_KUBELET_ALLOWED_SUFFIXES = ("kubelet.kubernetes.io", "node.kubernetes.io")

_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class DroppedLabel:
    key: str
    value: str
    reason: str
    #: False when the node gets the label from AKS anyway (nothing for a user to act on).
    warn: bool = True

    def __str__(self) -> str:
        return f"node label {self.key}={self.value} not sent to AKS: {self.reason}"


def _label_domain(key: str) -> str:
    return key.split("/", 1)[0].lower() if "/" in key else ""


def _in_domain(domain: str, parent: str) -> bool:
    return domain == parent or domain.endswith("." + parent)


def label_problem(key: str, value: str) -> tuple[str, bool] | None:
    """Why AKS would refuse (or override) this node label, or None if it is fine.

    Returns (reason, warn); ``warn`` is False for labels AKS sets itself.
    """
    if key in SET_BY_AKS:
        return "AKS sets it on the node itself", False
    if any(_in_domain(_label_domain(key), p.rstrip("/")) for p in AKS_RESERVED_PREFIXES):
        return "the kubernetes.azure.com prefix is reserved by AKS", True
    prefix, sep, name = key.rpartition("/")
    if (
        sep and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))
    ) or not _LABEL_NAME.match(name):
        return "not a valid Kubernetes label key", True
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return "not a valid Kubernetes label value", True
    domain = _label_domain(key)
    restricted = _in_domain(domain, "kubernetes.io") or _in_domain(domain, "k8s.io")
    if restricted and not any(_in_domain(domain, allowed) for allowed in _KUBELET_ALLOWED_SUFFIXES):
        return "kubernetes.io and k8s.io labels cannot be set through AKS node labels", True
    return None


def filter_node_labels(labels: Mapping[str, str]) -> tuple[dict[str, str], list[DroppedLabel]]:
    """Split labels into those AKS accepts and those dropped (with the reason)."""
    kept: dict[str, str] = {}
    dropped: list[DroppedLabel] = []
    for key, value in labels.items():
        problem = label_problem(key, value)
        if problem is None:
            kept[key] = value
        else:
            dropped.append(DroppedLabel(key, value, problem[0], problem[1]))
    return kept, dropped


def node_labels(request: InstanceRequest, is_gpu: bool) -> tuple[dict[str, str], list[DroppedLabel]]:
    """The request's labels plus ``kaito.sh/machine-type`` (gpu/cpu, as the Go provisioner sets it;
    the request's own value wins), filtered for AKS."""
    merged = {LABEL_MACHINE_TYPE: "gpu" if is_gpu else "cpu", **request.labels}
    return filter_node_labels(merged)


# --- taints, zones, disk, OS -----------------------------------------------------------------


def taint_strings(taints: tuple[Taint, ...]) -> list[str]:
    """AKS nodeTaints entries, ``key=value:Effect`` (``key:Effect`` when the value is empty)."""
    return [str(t) for t in taints]


def aks_zones(zones: tuple[str, ...], location: str) -> tuple[str, ...]:
    """Kubernetes zone labels (``eastus-1``) to AKS availabilityZones (``"1"``).

    A bare zone number is accepted too; ``"0"`` (AKS' label for a non-zonal node) means "no zone".
    Anything else, e.g. another region's zone, is an ``InvalidSpec``.
    """
    out: list[str] = []
    for zone in zones:
        z = zone.strip().lower()
        if z == "0" or z == f"{location}-0":
            continue
        if z.isdigit():
            number = z
        elif z.startswith(f"{location}-") and z[len(location) + 1 :].isdigit():
            number = z[len(location) + 1 :]
        else:
            raise InvalidSpec(
                f"zone {zone!r} is not a zone of region {location} (expected {location}-<n>)", "InvalidZone"
            )
        if number not in out:
            out.append(number)
    return tuple(out)


def zone_label(location: str, aks_zone: str | None) -> str:
    """The topology.kubernetes.io/zone value of a node in ``aks_zone`` ("0" when non-zonal)."""
    return f"{location}-{aks_zone}" if aks_zone else "0"


#: AKS accepts osDiskSizeGB from 30 to 2048 (0 = default).
OS_DISK_MIN_GIB = 30
OS_DISK_MAX_GIB = 2048


def os_disk_size(size_gib: int | None) -> tuple[int | None, str | None]:
    """(osDiskSizeGB to send or None for the AKS default, a warning if the request was ignored)."""
    if size_gib is None or size_gib == 0:
        return None, None
    if size_gib < 0 or size_gib > OS_DISK_MAX_GIB:
        raise InvalidSpec(
            f"OS disk size {size_gib} GiB is outside what AKS accepts ({OS_DISK_MIN_GIB}-{OS_DISK_MAX_GIB} GiB)",
            "InvalidOSDiskSize",
        )
    if size_gib < OS_DISK_MIN_GIB:
        return None, (
            f"requested OS disk of {size_gib} GiB is below the AKS minimum of {OS_DISK_MIN_GIB} GiB; "
            "using the AKS default size"
        )
    return size_gib, None


#: Image families (the ``kaito.sh/node-image-family`` annotation) to AKS osSKU values.
OS_SKUS = {
    "ubuntu": "Ubuntu",
    "azurelinux": "AzureLinux",
    "ubuntu2204": "Ubuntu2204",
    "ubuntu2404": "Ubuntu2404",
    "azurelinux3": "AzureLinux3",
}


def os_sku(image_family: str | None) -> str | None:
    if not image_family:
        return None
    sku = OS_SKUS.get(image_family.strip().lower().replace("-", "").replace("_", ""))
    if sku is None:
        raise InvalidSpec(
            f"image family {image_family!r} is not supported on AKS (use one of: {', '.join(OS_SKUS)})",
            "InvalidOSSKU",
        )
    return sku


# --- tags ------------------------------------------------------------------------------------

TAG_CLUSTER = "gpu-provisioner.sh_cluster"
_TAG_FORBIDDEN = re.compile(r"[<>%&\\?/]")


def pool_tags(request: InstanceRequest, settings: AzureSettings) -> tuple[dict[str, str], list[str]]:
    """Tags for the pool: configured extra tags, request tags, then cluster and ownership tags."""
    merged = {
        **settings.extra_tags,
        **request.tags,
        TAG_CLUSTER: settings.cluster_name,
        **request.ownership_tags(),
    }
    tags: dict[str, str] = {}
    warnings: list[str] = []
    for key, value in merged.items():
        if not key or len(key) > 512 or _TAG_FORBIDDEN.search(key) or len(value) > 256:
            warnings.append(
                f"tag {key!r} not sent to Azure: names may not contain <>%&\\?/ (max 512, values 256)"
            )
            continue
        tags[key] = value
    return tags, warnings


# --- the pool body ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSpec:
    """The PUT body for one candidate size, and what was left out of it and why."""

    name: str
    vm_size: str
    zones: tuple[str, ...]
    body: dict[str, Any]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def request_warnings(request: InstanceRequest, settings: AzureSettings) -> tuple[str, ...]:
    """Everything of ``request`` that will not reach the node as asked (for an event)."""
    _, dropped = node_labels(request, is_gpu=False)
    try:
        _, disk_warning = os_disk_size(request.os_disk_size_gib)
    except InvalidSpec:
        disk_warning = None  # not a warning: create() refuses it with a clear InvalidSpec
    _, tag_warnings = pool_tags(request, settings)
    out = [str(d) for d in dropped if d.warn]
    if disk_warning:
        out.append(disk_warning)
    return tuple(out + tag_warnings)


def validate_request(request: InstanceRequest, settings: AzureSettings) -> None:
    """Raise ``InvalidSpec`` for what no candidate could ever fix (before any cloud call)."""
    if not request.instance_types:
        raise InvalidSpec("no instance type requested", "NoInstanceType")
    aks_zones(request.zones, settings.location)
    os_disk_size(request.os_disk_size_gib)
    os_sku(request.image_family)


def build_pool(
    request: InstanceRequest,
    settings: AzureSettings,
    vm_size: str,
    sku: SkuFacts | None,
    zones: tuple[str, ...],
) -> PoolSpec:
    """The agent pool for ``request`` with size ``vm_size`` in AKS ``zones`` (empty: no zone pinning)."""
    is_gpu = sku.is_gpu if sku is not None else guess_is_gpu(vm_size)
    labels, dropped = node_labels(request, is_gpu)
    disk, disk_warning = os_disk_size(request.os_disk_size_gib)
    tags, tag_warnings = pool_tags(request, settings)
    props: dict[str, Any] = {
        "count": 1,
        "vmSize": vm_size,
        "type": "VirtualMachineScaleSets",
        "osType": "Linux",
        "mode": "User",
        "nodeLabels": labels,
        "nodeTaints": taint_strings(request.taints),
        "tags": tags,
    }
    if disk is not None:
        props["osDiskSizeGB"] = disk
    if settings.os_disk_type:
        props["osDiskType"] = settings.os_disk_type
    sku_name = os_sku(request.image_family)
    if sku_name:
        props["osSKU"] = sku_name
    if zones:
        props["availabilityZones"] = list(zones)
    if settings.vnet_subnet_id:
        props["vnetSubnetID"] = settings.vnet_subnet_id
    if settings.max_pods is not None:
        props["maxPods"] = settings.max_pods
    if request.capacity_type == CapacityType.SPOT:
        props["scaleSetPriority"] = "Spot"
        props["scaleSetEvictionPolicy"] = "Delete"
        props["spotMaxPrice"] = -1
    if is_gpu and not settings.gpu_driver_install:
        props["gpuProfile"] = {"driver": "None"}
    warnings = [str(d) for d in dropped if d.warn]
    if disk_warning:
        warnings.append(disk_warning)
    warnings += tag_warnings
    return PoolSpec(
        name=instance_name(request.name),
        vm_size=vm_size,
        zones=zones,
        body={"properties": props},
        warnings=tuple(warnings),
    )


# --- reading a pool back ---------------------------------------------------------------------


_CREATING_STATES = frozenset({"creating"})
_DELETING_STATES = frozenset({"deleting"})
_FAILED_STATES = frozenset({"failed", "canceled", "cancelled"})


def instance_state(provisioning_state: str | None) -> InstanceState:
    """The pool's provisioningState as an instance state.

    Pools are created with count 1, so any state after Creating (Succeeded, or an Updating/Upgrading
    of an existing pool) means the node exists.
    """
    state = sdk_text(provisioning_state).lower()
    if state in _CREATING_STATES or not state:
        return InstanceState.CREATING
    if state in _DELETING_STATES:
        return InstanceState.DELETING
    if state in _FAILED_STATES:
        return InstanceState.FAILED
    return InstanceState.RUNNING


def pool_failure(pool: AgentPool) -> CloudError | None:
    """Why a Failed pool failed, classified from ``status.provisioningError``; None if not Failed."""
    props = pool.properties
    if props is None or instance_state(props.provisioning_state) != InstanceState.FAILED:
        return None
    detail = props.status.provisioning_error if props.status else None
    if detail is not None:
        return classify(arm_error_from_detail(detail))
    state = sdk_text(props.provisioning_state)
    return Transient(f"agent pool {pool.name} is in state {state} (AKS gave no provisioningError)", state)


def provider_id_prefix(settings: AzureSettings, pool_name: str) -> str:
    """The part of the node's providerID that is known before the node exists.

    AKS names the scale set ``aks-<pool>-<digits>-vmss``; the digits are not in the agent pool API,
    so a node of the pool has a providerID starting with this (AKS lowercases the resource group).
    """
    return (
        f"azure:///subscriptions/{settings.subscription_id}/resourceGroups/"
        f"{settings.effective_node_resource_group.lower()}/providers/Microsoft.Compute/"
        f"virtualMachineScaleSets/aks-{pool_name}-"
    )


def sku_capacity(sku: SkuFacts, max_pods: int | None) -> dict[str, str]:
    """Node capacity as Kubernetes quantities (the VM's, before system reservations)."""
    capacity = {"cpu": str(sku.vcpus), "memory": f"{round(sku.memory_gib * 1024 * 1024)}Ki"}
    if sku.gpus:
        capacity[GPU_RESOURCE] = str(sku.gpus)
    if max_pods:
        capacity["pods"] = str(max_pods)
    return capacity


def instance_from_pool(
    pool: AgentPool,
    location: str,
    sku: SkuFacts | None,
    failure: CloudError | None = None,
) -> Instance:
    """An ``Instance`` snapshot of an agent pool.

    ``provider_id`` stays empty: AKS node providerIDs name the VMSS (``aks-<pool>-<digits>-vmss``)
    whose numeric part the agent pool API does not expose; the lifecycle finds the node by its
    ``kubernetes.azure.com/agentpool`` label and takes the providerID from it.
    """
    props = pool.properties
    name = pool.name or ""
    vm_size = (props.vm_size if props else None) or ""
    zones = list(props.availability_zones or []) if props else []
    zone = zone_label(location, zones[0]) if len(zones) == 1 else ("0" if not zones else "")
    spot = props is not None and sdk_text(props.scale_set_priority).lower() == "spot"
    capacity_type = CapacityType.SPOT if spot else CapacityType.ON_DEMAND
    labels = {
        LABEL_INSTANCE_TYPE: vm_size,
        LABEL_CAPACITY_TYPE: capacity_type.value,
        LABEL_AGENTPOOL: name,
        LABEL_REGION: location,
    }
    if zone:
        labels[LABEL_ZONE] = zone
    max_pods = props.max_pods if props else None
    return Instance(
        name=name,
        provider_id="",
        instance_type=vm_size,
        zone=zone,
        capacity_type=capacity_type,
        state=instance_state(props.provisioning_state if props else None),
        labels=labels,
        capacity=sku_capacity(sku, max_pods) if sku is not None else {},
        image_id=(props.node_image_version if props else None) or None,
        tags=dict(props.tags or {}) if props else {},
        failure=failure,
        node_labels=dict(props.node_labels or {}) if props else {},
        version=(props.e_tag if props else None) or None,
    )
