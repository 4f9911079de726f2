"""Cloud-neutral request and result types.

Clouds never see a Karpenter object: the lifecycle turns a claim into an ``InstanceRequest`` and
reads back ``Instance`` snapshots. Zones are in the Kubernetes label form
(``topology.kubernetes.io/zone``, e.g. ``eastus-1``; ``"0"`` for a non-zonal node on AKS).
Resource quantities are Kubernetes quantity strings (``"24"``, ``"230686720Ki"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from provisioner.cloud.errors import CloudError

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]

#: Tags every provider puts on what it creates so that ``list`` can tell ours from others'.
#: Azure tag names may not contain ``/``, hence ``_`` where Kubernetes would use ``/``.
TAG_MANAGED_BY = "gpu-provisioner.sh_managed-by"
MANAGED_BY_VALUE = "gpu-provisioner"
TAG_CLAIM_NAME = "gpu-provisioner.sh_claim-name"
TAG_CLAIM_UID = "gpu-provisioner.sh_claim-uid"
#: On an instance that holds the nodes of several claims (its claims are on its nodes instead).
TAG_SHARED = "gpu-provisioner.sh_shared"

#: Extended resource name of NVIDIA GPUs on a node.
GPU_RESOURCE = "nvidia.com/gpu"


class CapacityType(StrEnum):
    """Values of the ``karpenter.sh/capacity-type`` label."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"


class InstanceState(StrEnum):
    CREATING = "creating"
    RUNNING = "running"
    FAILED = "failed"
    DELETING = "deleting"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: TaintEffect = "NoSchedule"

    def __str__(self) -> str:
        """``key=value:Effect``, the form AKS node taints use."""
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True)
class InstanceRequest:
    """One node wanted by one claim.

    ``name`` is the instance (AKS agent pool) name; ``instance_types`` are candidates in order of
    preference, a provider falls back to the next one only on capacity errors. ``tags`` are extra
    tags; providers add ``ownership_tags()`` themselves.
    """

    claim_name: str
    claim_uid: str
    name: str
    instance_types: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    os_disk_size_gib: int | None = None
    image_family: str | None = None
    #: From the claim's node class (None: the provider's own setting).
    os_disk_type: str | None = None
    max_pods: int | None = None
    #: Whether the cloud installs the GPU driver: "Install" or "None" (None: the provider's setting).
    gpu_driver: str | None = None
    zones: tuple[str, ...] = ()
    capacity_type: CapacityType = CapacityType.ON_DEMAND
    tags: Mapping[str, str] = field(default_factory=dict)

    def ownership_tags(self) -> dict[str, str]:
        return {
            TAG_MANAGED_BY: MANAGED_BY_VALUE,
            TAG_CLAIM_NAME: self.claim_name,
            TAG_CLAIM_UID: self.claim_uid,
        }

    def all_tags(self) -> dict[str, str]:
        """Extra tags with the ownership tags on top (they cannot be overridden)."""
        return {**self.tags, **self.ownership_tags()}


@dataclass(frozen=True)
class Instance:
    """A snapshot of one instance as the cloud reports it."""

    name: str
    provider_id: str
    instance_type: str
    zone: str
    capacity_type: CapacityType
    state: InstanceState
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: Mapping[str, str] = field(default_factory=dict)
    image_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    failure: CloudError | None = None
    #: Labels the cloud puts on the instance's node (on AKS: the pool's nodeLabels).
    node_labels: Mapping[str, str] = field(default_factory=dict)
    #: An opaque version of this snapshot (an ETag) for conditional writes; None if the cloud has none.
    version: str | None = None
    #: An operation on the running instance is under way (on AKS: an update or upgrade of the pool);
    #: the cloud refuses a delete until it ends.
    busy: bool = False
    #: It holds the nodes of several claims (``SupportsSharedInstances``): deleting one claim
    #: removes its node, never the instance.
    shared: bool = False

    @property
    def managed(self) -> bool:
        """Whether we created it (it carries our ownership tag)."""
        return self.tags.get(TAG_MANAGED_BY) == MANAGED_BY_VALUE

    @property
    def claim_uid(self) -> str | None:
        return self.tags.get(TAG_CLAIM_UID)

    @property
    def claim_name(self) -> str | None:
        return self.tags.get(TAG_CLAIM_NAME)


@dataclass(frozen=True)
class InstanceType:
    """What the cloud knows about one instance type in the configured region."""

    name: str
    family: str
    vcpus: int
    memory_gib: float
    gpus: int = 0
    gpu_model: str | None = None
    zones: tuple[str, ...] = ()
    available: bool = True
    #: Why the type cannot be used here (e.g. ``NotAvailableForSubscription``) when not available.
    unavailable_reason: str | None = None


@dataclass(frozen=True)
class ResolvedImage:
    """What a cloud makes of a node class's image family: its own ``name`` for it (on AKS the
    osSKU) and, when it can tell, the ``version`` new nodes get now."""

    family: str
    name: str
    version: str = ""


@dataclass(frozen=True)
class Degradation:
    """Something a provider can work without, and whether it currently does (e.g. an optional
    permission the cloud denies). ``reason`` is one word (a metric label and an event reason);
    ``message`` says what is missing, what grants it and what is lost meanwhile; ``detail`` says
    it in one short clause (for ``/readyz``)."""

    reason: str
    active: bool
    message: str
    detail: str = ""
