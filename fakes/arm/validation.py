"""What AKS checks on an agent pool PUT before it accepts the operation (synchronous 400s)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fakes import skus
from fakes.arm.errors import SKU_NOT_AVAILABLE, ArmError, ErrorContext, default_message, invalid_parameter

POOL_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
WINDOWS_POOL_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")
_NAMING_HELP = "Please see https://aka.ms/aks-naming-rules for more details."

_ENUMS: dict[str, frozenset[str]] = {
    "mode": frozenset({"System", "User", "Gateway"}),
    "osType": frozenset({"Linux", "Windows"}),
    "osSKU": frozenset(
        {
            "Ubuntu",
            "Ubuntu2204",
            "Ubuntu2404",
            "AzureLinux",
            "AzureLinux3",
            "CBLMariner",
            "Windows2019",
            "Windows2022",
            "WindowsAnnual",
        }
    ),
    "scaleSetPriority": frozenset({"Regular", "Spot"}),
    "scaleSetEvictionPolicy": frozenset({"Delete", "Deallocate"}),
    "osDiskType": frozenset({"Managed", "Ephemeral"}),
    "kubeletDiskType": frozenset({"OS", "Temporary"}),
    "type": frozenset({"VirtualMachineScaleSets", "AvailabilitySet", "VirtualMachines"}),
}

#: Properties AKS will not change on an existing pool.
IMMUTABLE = (
    "vmSize",
    "osType",
    "osDiskSizeGB",
    "osDiskType",
    "availabilityZones",
    "scaleSetPriority",
    "maxPods",
    "type",
    "vnetSubnetID",
    "kubeletDiskType",
)

_TAINT_RE = re.compile(
    r"^(?P<key>(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
    r"(?:=(?P<value>[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)?"
    r":(?P<effect>NoSchedule|PreferNoSchedule|NoExecute)$"
)
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")

SPOT_LABEL = "kubernetes.azure.com/scalesetpriority"
SPOT_TAINT = f"{SPOT_LABEL}=spot:NoSchedule"

# Label keys in the kubernetes.io / k8s.io namespaces that a kubelet may set on itself
# (NodeRestriction); AKS passes node labels to the kubelet, so anything else there is refused.
_KUBELET_ALLOWED_LABELS = frozenset(
    {
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
    }
)
_KUBELET_ALLOWED_DOMAINS = ("kubelet.kubernetes.io", "node.kubernetes.io")


def check_pool_name(name: str, os_type: str = "Linux") -> None:
    pattern = WINDOWS_POOL_NAME_RE if os_type == "Windows" else POOL_NAME_RE
    if not pattern.match(name):
        raise invalid_parameter(
            "agentPoolProfile.name",
            f"The value of parameter agentPoolProfile.name is invalid. {_NAMING_HELP}",
        )


def check_properties(props: Mapping[str, Any]) -> None:
    """Types, enums, count range, labels and taints."""
    for key, allowed in _ENUMS.items():
        value = props.get(key)
        if value is not None and value not in allowed:
            raise invalid_parameter(
                f"agentPoolProfile.{key}",
                f"The value '{value}' of parameter agentPoolProfile.{key} is invalid. "
                f"Allowed values are: {', '.join(sorted(allowed))}.",
            )
    count = props.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1000:
        raise invalid_parameter(
            "agentPoolProfile.count",
            f"The value of parameter agentPoolProfile.count is invalid: {count!r}. "
            "It must be between 0 and 1000 (inclusive).",
        )
    if props.get("mode") == "System" and count < 1:
        raise invalid_parameter(
            "agentPoolProfile.count", "A system agent pool must have at least one node (count >= 1)."
        )
    disk = props.get("osDiskSizeGB")
    if disk is not None and (not isinstance(disk, int) or isinstance(disk, bool) or not 0 <= disk <= 2048):
        raise invalid_parameter(
            "agentPoolProfile.osDiskSizeGB",
            f"The value of parameter agentPoolProfile.osDiskSizeGB is invalid: {disk!r}. "
            "It must be between 30 and 2048 GB, or 0 for the default.",
        )
    if isinstance(disk, int) and 0 < disk < 30:
        raise invalid_parameter(
            "agentPoolProfile.osDiskSizeGB",
            f"The value of parameter agentPoolProfile.osDiskSizeGB is invalid: {disk}. The minimum is 30 GB.",
        )
    _check_labels(props.get("nodeLabels"), props.get("scaleSetPriority") == "Spot")
    _check_taints(props.get("nodeTaints"), "nodeTaints")
    _check_taints(props.get("nodeInitializationTaints"), "nodeInitializationTaints")
    tags = props.get("tags")
    if tags is not None and (
        not isinstance(tags, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    ):
        raise invalid_parameter(
            "agentPoolProfile.tags", "Tags must be a map of string keys to string values."
        )
    zones = props.get("availabilityZones")
    if zones is not None and (not isinstance(zones, list) or not all(isinstance(z, str) for z in zones)):
        raise invalid_parameter(
            "agentPoolProfile.availabilityZones", "availabilityZones must be a list of strings."
        )


def _check_labels(labels: Any, spot: bool) -> None:
    if labels is None:
        return
    target = "agentPoolProfile.nodeLabels"
    if not isinstance(labels, dict):
        raise invalid_parameter(target, "nodeLabels must be a map of string keys to string values.")
    for key, value in labels.items():
        if not isinstance(value, str) or not _valid_label_key(key) or not _LABEL_VALUE_RE.match(value):
            raise invalid_parameter(
                target, f"The node label '{key}={value}' is not a valid Kubernetes label."
            )
        if spot and key == SPOT_LABEL and value == "spot":
            continue  # AKS adds this one to Spot pools itself; it comes back on read-modify-write.
        reason = reserved_label_reason(key)
        if reason:
            raise invalid_parameter(target, f"The node label key '{key}' is not allowed: {reason}.")


def _valid_label_key(key: Any) -> bool:
    if not isinstance(key, str) or not key:
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _LABEL_PREFIX_RE.match(prefix)):
        return False
    return bool(_LABEL_NAME_RE.match(name))


def reserved_label_reason(key: str) -> str | None:
    """Why AKS refuses a node label key, or None if it may be set."""
    prefix = key.rpartition("/")[0]
    if not prefix:
        return None
    if prefix == "kubernetes.azure.com" or prefix.endswith(".kubernetes.azure.com"):
        return "the prefix 'kubernetes.azure.com' is reserved for AKS"
    in_k8s_namespace = any(prefix == d or prefix.endswith("." + d) for d in ("kubernetes.io", "k8s.io"))
    if not in_k8s_namespace or key in _KUBELET_ALLOWED_LABELS:
        return None
    if any(prefix == d or prefix.endswith("." + d) for d in _KUBELET_ALLOWED_DOMAINS):
        return None
    return "labels in the 'kubernetes.io' and 'k8s.io' namespaces are reserved for Kubernetes"


def _check_taints(taints: Any, field: str) -> None:
    if taints is None:
        return
    target = f"agentPoolProfile.{field}"
    if not isinstance(taints, list):
        raise invalid_parameter(target, f"{field} must be a list of strings.")
    for taint in taints:
        if not isinstance(taint, str) or not _TAINT_RE.match(taint):
            raise invalid_parameter(
                target,
                f"The taint '{taint}' is invalid. A taint must have the form key=value:effect (or key:effect) "
                "with effect one of NoSchedule, PreferNoSchedule, NoExecute.",
            )


def check_sku(ctx: ErrorContext, sku: skus.SkuInfo | None, zones: list[str]) -> skus.SkuInfo:
    """The catalog entry of the requested size if it can be deployed in the location (and zones)."""
    if sku is None or not sku.is_available_in(ctx.location):
        raise ArmError(400, SKU_NOT_AVAILABLE, default_message(SKU_NOT_AVAILABLE, ctx))
    listed = sku.zones_in(ctx.location)
    for zone in zones:
        if zone not in listed:
            raise ArmError(
                400,
                "AvailabilityZoneNotSupported",
                f"The zone(s) '{zone}' for resource '{ctx.pool}' is not supported. The supported zones for "
                f"location '{ctx.location}' are '{','.join(listed)}'",
                target="agentPoolProfile.availabilityZones",
            )
        if sku.restriction_in(ctx.location, zone) is not None:
            raise ArmError(400, SKU_NOT_AVAILABLE, default_message(SKU_NOT_AVAILABLE, ctx))
    return sku


def check_immutable(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    for key in IMMUTABLE:
        if key not in new:
            continue
        before, after = old.get(key), new.get(key)
        if key == "vmSize" and isinstance(before, str) and isinstance(after, str):
            changed = before.lower() != after.lower()
        elif key == "availabilityZones":
            changed = sorted(before or []) != sorted(after or [])
        else:
            changed = before != after
        if changed:
            raise ArmError(
                400,
                "PropertyChangeNotAllowed",
                f"Changing property '{key}' is not allowed.",
                target=key,
            )
