"""Pure mapping between cloud-neutral requests/instances and AKS agent pools.

No I/O here: every rule (pool name, labels AKS accepts, taints, zones, disk, OS SKU, tags, the pool
body, reading a pool back) is a plain function, unit-tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from azure.mgmt.containerservice.models import AgentPool

from provisioner.cloud import naming
from provisioner.cloud.azure.errors import arm_error_from_detail, classify
from provisioner.cloud.azure.labels import (
    LABEL_AGENTPOOL,
    LABEL_CAPACITY_TYPE,
    LABEL_INSTANCE_TYPE,
    LABEL_REGION,
    LABEL_ZONE,
    node_labels,
    pool_tags,
)
from provisioner.cloud.azure.settings import AzureSettings
from provisioner.cloud.azure.skus import SkuFacts, guess_is_gpu, sdk_text
from provisioner.cloud.errors import CloudError, InvalidSpec, Transient
from provisioner.cloud.types import (
    GPU_RESOURCE,
    TAG_SHARED,
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


#: The osSKU AKS gives a Linux pool that names none.
DEFAULT_OS_SKU = "Ubuntu"


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
    disk_type = request.os_disk_type or settings.os_disk_type
    if disk_type:
        props["osDiskType"] = disk_type
    sku_name = os_sku(request.image_family)
    if sku_name:
        props["osSKU"] = sku_name
    if zones:
        props["availabilityZones"] = list(zones)
    if settings.vnet_subnet_id:
        props["vnetSubnetID"] = settings.vnet_subnet_id
    max_pods = request.max_pods if request.max_pods is not None else settings.max_pods
    if max_pods is not None:
        props["maxPods"] = max_pods
    if request.capacity_type == CapacityType.SPOT:
        props["scaleSetPriority"] = "Spot"
        props["scaleSetEvictionPolicy"] = "Delete"
        props["spotMaxPrice"] = -1
    install_driver = (
        settings.gpu_driver_install if request.gpu_driver is None else request.gpu_driver == "Install"
    )
    if is_gpu and not install_driver:
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
#: A running pool with an operation under way: AKS answers a DELETE with 409 until it ends.
_BUSY_STATES = frozenset({"updating", "upgrading", "scaling", "starting", "stopping"})


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
        busy=sdk_text(props.provisioning_state if props else None).lower() in _BUSY_STATES,
        shared=bool(props and (props.tags or {}).get(TAG_SHARED) == "true"),
    )
