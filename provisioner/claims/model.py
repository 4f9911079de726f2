"""The one internal Claim model, independent of the API dialect it was read from."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from provisioner.cloud.types import Taint

#: Label keys Karpenter and Kaito use on claims and nodes.
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
SKU_NAME_LABEL = "karpenter.azure.com/sku-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
PROVISIONER_LABEL = "karpenter.sh/provisioner-name"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
REGISTERED_LABEL = "karpenter.sh/registered"
INITIALIZED_LABEL = "karpenter.sh/initialized"
UNREGISTERED_TAINT_KEY = "karpenter.sh/unregistered"
IMAGE_FAMILY_ANNOTATION = "kaito.sh/node-image-family"
#: Finalizer Karpenter puts on claims and on their Nodes.
TERMINATION_FINALIZER = "karpenter.sh/termination"

#: Our own bookkeeping on claims (never in status: the CRD schema would prune it).
ANNOTATION_PREFIX = "gpu-provisioner.sh"
INSTANCE_NAME_ANNOTATION = f"{ANNOTATION_PREFIX}/instance-name"
#: Set to the controller's name when it takes a claim over (with its finalizer): the claim stays that
#: controller's even if it stops matching the selector, so its instance and finalizer are cleaned up;
#: a claim marked by another installation is never taken. Nodes we register carry it too.
MANAGED_BY_ANNOTATION = f"{ANNOTATION_PREFIX}/managed-by"
#: Karpenter's longest condition message; longer ones are cut (the start is what Kaito reads).
MAX_CONDITION_MESSAGE = 300


class ConditionType(StrEnum):
    """Dialect-neutral condition names; each dialect maps them to its own type strings."""

    LAUNCHED = "Launched"
    REGISTERED = "Registered"
    INITIALIZED = "Initialized"
    READY = "Ready"
    INSTANCE_TERMINATING = "InstanceTerminating"
    #: NodeClaims of a NodePool: the NodePool's template or node class changed since it was made.
    DRIFTED = "Drifted"


DEPENDENTS = (ConditionType.LAUNCHED, ConditionType.REGISTERED, ConditionType.INITIALIZED)


class Status(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: Status
    reason: str = ""
    message: str = ""
    last_transition_time: datetime.datetime | None = None

    def same_state(self, other: Condition) -> bool:
        return (self.status, self.reason, self.message) == (other.status, other.reason, other.message)


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()
    min_values: int | None = None


@dataclass(frozen=True)
class ClaimStatus:
    node_name: str = ""
    provider_id: str = ""
    image_id: str = ""
    capacity: Mapping[str, str] = field(default_factory=dict)
    allocatable: Mapping[str, str] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()
    #: Conditions of types we do not model (written by other controllers), kept as read.
    foreign_conditions: tuple[Mapping[str, Any], ...] = ()

    def condition(self, ctype: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == ctype), None)

    def is_true(self, ctype: ConditionType) -> bool:
        c = self.condition(ctype)
        return c is not None and c.status == Status.TRUE


@dataclass(frozen=True)
class NodeClassRef:
    group: str
    kind: str
    name: str


@dataclass(frozen=True, order=True)
class ClaimKey:
    """What identifies a claim whatever API version it was read through."""

    group: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


@dataclass(frozen=True)
class Claim:
    """A request for one node, read from a Machine (v1alpha5) or a NodeClaim (v1)."""

    dialect: str  # Dialect.name: "machine" | "nodeclaim"
    name: str
    uid: str
    generation: int = 0
    resource_version: str = ""
    creation_timestamp: datetime.datetime | None = None
    deletion_timestamp: datetime.datetime | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    finalizers: tuple[str, ...] = ()
    requirements: tuple[Requirement, ...] = ()
    taints: tuple[Taint, ...] = ()
    startup_taints: tuple[Taint, ...] = ()
    requests: Mapping[str, str] = field(default_factory=dict)
    node_class_ref: NodeClassRef | None = None
    #: NodeClaim ``spec.terminationGracePeriod`` in seconds: how long a drain may wait on PDBs.
    termination_grace_period: float | None = None
    status: ClaimStatus = field(default_factory=ClaimStatus)
    #: The raw object as read (for ownerReferences and round-tripping unknown fields).
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def deleting(self) -> bool:
        return self.deletion_timestamp is not None

    def requirement(self, key: str) -> Requirement | None:
        return next((r for r in self.requirements if r.key == key), None)

    def with_status(self, status: ClaimStatus) -> Claim:
        return replace(self, status=status)
