"""Turn a claim into a cloud-neutral InstanceRequest, or say precisely why it cannot be launched."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from provisioner.claims.dialects import dialect_of
from provisioner.claims.model import (
    CAPACITY_TYPE_LABEL,
    IMAGE_FAMILY_ANNOTATION,
    INSTANCE_TYPE_LABEL,
    SKU_NAME_LABEL,
    ZONE_LABEL,
    Claim,
)
from provisioner.cloud.types import CapacityType, InstanceRequest, Taint
from provisioner.nodepools.model import NodeClass
from provisioner.quantity import GIB, ceil_units, parse_quantity
from provisioner.settings import Settings
from provisioner.validation import label_key_problem, label_value_problem, taint_problem

#: Below this an OS disk request is ignored (the cloud's default size is used), with a warning.
MIN_OS_DISK_GIB = 30
#: Largest OS disk AKS accepts for a node pool.
MAX_OS_DISK_GIB = 2048
#: A storage request that is a bare number this small was meant in GiB ("400"), not bytes.
_BARE_NUMBER_GIB_LIMIT = Decimal(1 << 20)

#: Label keys that describe the machine rather than the workload; the kubelet/cloud sets them.
_KUBELET_SET_PREFIXES = (
    "kubernetes.io/",
    "node.kubernetes.io/",
    "topology.kubernetes.io/",
    "beta.kubernetes.io/",
)


class InvalidClaim(ValueError):
    """The claim can never be launched as written; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class PreparedRequest:
    request: InstanceRequest
    warnings: tuple[str, ...] = ()


def instance_type_candidates(claim: Claim) -> tuple[str, ...]:
    """Values of the first ``In`` requirement on the instance type, else on the Azure SKU name."""
    for key in (INSTANCE_TYPE_LABEL, SKU_NAME_LABEL):
        for req in claim.requirements:
            if req.key == key and req.operator == "In" and req.values:
                return tuple(dict.fromkeys(req.values))
    return ()


def _os_disk_gib(claim: Claim) -> tuple[int | None, str | None]:
    """OS disk size from ``storage`` (else ``ephemeral-storage``); returns (GiB or None, warning)."""
    for key in ("storage", "ephemeral-storage"):
        raw = claim.requests.get(key)
        if raw is None:
            continue
        try:
            value = parse_quantity(raw)
        except ValueError as e:
            raise InvalidClaim("InvalidStorageRequest", f"resources.requests.{key}: {e}") from e
        if value <= 0:
            raise InvalidClaim("InvalidStorageRequest", f"resources.requests.{key}={raw} must be positive")
        bare_gib = str(raw).strip().isdigit() and value < _BARE_NUMBER_GIB_LIMIT
        if value > (MAX_OS_DISK_GIB if bare_gib else MAX_OS_DISK_GIB * GIB):
            raise InvalidClaim(
                "InvalidStorageRequest",
                f"resources.requests.{key}={raw} is larger than the largest OS disk ({MAX_OS_DISK_GIB} GiB)",
            )
        gib = int(value) if bare_gib else ceil_units(value, GIB)
        if gib < MIN_OS_DISK_GIB:
            return None, (
                f"resources.requests.{key}={raw} is below {MIN_OS_DISK_GIB} GiB; using the cloud's default OS disk size"
            )
        return gib, None
    return None, None


def _zones(claim: Claim) -> tuple[str, ...]:
    req = claim.requirement(ZONE_LABEL)
    return req.values if req is not None and req.operator == "In" else ()


def capacity_type(claim: Claim) -> CapacityType:
    req = claim.requirement(CAPACITY_TYPE_LABEL)
    if req is not None and req.operator == "In" and set(req.values) == {CapacityType.SPOT.value}:
        return CapacityType.SPOT
    return CapacityType.ON_DEMAND


#: The provisioner/nodepool a claim belongs to when it does not say (Karpenter's and Kaito's default).
DEFAULT_NODEPOOL = "default"


def node_labels(claim: Claim) -> dict[str, str]:
    """Labels the node must carry: the claim's provisioner/nodepool label (``default`` if it has
    none), single-valued ``In`` requirements the kubelet does not set, then the claim's own labels
    (which win)."""
    labels: dict[str, str] = {dialect_of(claim).nodepool_label: DEFAULT_NODEPOOL}
    for req in claim.requirements:
        if req.operator == "In" and len(req.values) == 1 and not req.key.startswith(_KUBELET_SET_PREFIXES):
            labels[req.key] = req.values[0]
    labels.pop(SKU_NAME_LABEL, None)  # describes the machine; the cloud sets its own
    labels.update(claim.labels)
    return labels


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _checked_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        problem = label_key_problem(key)
        if problem is None:
            problem = label_value_problem(value)
            where = f"label {_short(key)}={_short(value)}"
        else:
            where = f"label key {_short(key)}"
        if problem is not None:
            raise InvalidClaim("InvalidLabel", f"{where} is not a valid Kubernetes label: {problem}")
    return labels


def _checked_taints(claim: Claim) -> tuple[Taint, ...]:
    for field, taints in (("taints", claim.taints), ("startupTaints", claim.startup_taints)):
        for t in taints:
            problem = taint_problem(t)
            if problem is not None:
                raise InvalidClaim(
                    "InvalidTaint",
                    f"spec.{field}: taint {_short(t.key)}={_short(t.value)}:{t.effect} is not valid: {problem}",
                )
    taints = tuple(dict.fromkeys((*claim.taints, *claim.startup_taints)))
    seen: dict[tuple[str, str], Taint] = {}
    for t in taints:
        other = seen.setdefault((t.key, t.effect), t)
        if other is not t:
            raise InvalidClaim(
                "InvalidTaint",
                f"taints {_short(t.key)}={_short(other.value)}:{t.effect} and ={_short(t.value)}:{t.effect} "
                "have the same key and effect; a node's taints must be unique by key and effect",
            )
    return taints


def prepare(
    claim: Claim, instance_name: str, settings: Settings, node_class: NodeClass | None = None
) -> PreparedRequest:
    """The request to send to the cloud; raises :class:`InvalidClaim` for specs that can never work.

    ``node_class`` (the claim's ``KaitoNodeClass``, if it exists) gives the image family, OS disk,
    max pods and GPU driver; the claim's own image-family annotation and storage request win.
    """
    candidates = instance_type_candidates(claim)
    if not candidates:
        raise InvalidClaim(
            "NoInstanceType",
            f"no instance type requested: add a requirement '{INSTANCE_TYPE_LABEL} In [<size>]'",
        )
    if settings.instance_type_allowlist:
        allowed = tuple(c for c in candidates if c in settings.instance_type_allowlist)
        if not allowed:
            raise InvalidClaim(
                "InstanceTypeNotAllowed",
                f"instance types {', '.join(candidates)} are not in the allowlist "
                f"({', '.join(settings.instance_type_allowlist)})",
            )
        candidates = allowed
    disk, warning = _os_disk_gib(claim)
    family = claim.annotations.get(IMAGE_FAMILY_ANNOTATION)
    if node_class is not None:
        family = family or node_class.image_family
        disk = disk if disk is not None else node_class.os_disk_size_gb
    request = InstanceRequest(
        claim_name=claim.name,
        claim_uid=claim.uid,
        name=instance_name,
        instance_types=candidates,
        labels=_checked_labels(node_labels(claim)),
        taints=_checked_taints(claim),
        os_disk_size_gib=disk,
        image_family=family.lower() if family else None,
        zones=_zones(claim),
        capacity_type=capacity_type(claim),
        os_disk_type=node_class.os_disk_type if node_class else None,
        max_pods=node_class.max_pods if node_class else None,
        gpu_driver=node_class.gpu_driver if node_class else None,
    )
    return PreparedRequest(request, (warning,) if warning else ())
