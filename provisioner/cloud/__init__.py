"""Cloud providers: the protocol, its types and errors, and the registry that finds them."""

from provisioner.cloud.errors import (
    CloudError,
    InsufficientCapacity,
    InvalidSpec,
    NotFound,
    Throttled,
    Transient,
)
from provisioner.cloud.provider import CloudProvider, ProviderContext
from provisioner.cloud.registry import (
    ENTRY_POINT_GROUP,
    ProviderFactory,
    ProviderLoadError,
    ProviderNotFoundError,
    available_providers,
    load_factory,
    load_provider,
)
from provisioner.cloud.types import (
    GPU_RESOURCE,
    MANAGED_BY_VALUE,
    TAG_CLAIM_NAME,
    TAG_CLAIM_UID,
    TAG_MANAGED_BY,
    CapacityType,
    Instance,
    InstanceRequest,
    InstanceState,
    InstanceType,
    Taint,
    TaintEffect,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "GPU_RESOURCE",
    "MANAGED_BY_VALUE",
    "TAG_CLAIM_NAME",
    "TAG_CLAIM_UID",
    "TAG_MANAGED_BY",
    "CapacityType",
    "CloudError",
    "CloudProvider",
    "Instance",
    "InstanceRequest",
    "InstanceState",
    "InstanceType",
    "InsufficientCapacity",
    "InvalidSpec",
    "NotFound",
    "ProviderContext",
    "ProviderFactory",
    "ProviderLoadError",
    "ProviderNotFoundError",
    "Taint",
    "TaintEffect",
    "Throttled",
    "Transient",
    "available_providers",
    "load_factory",
    "load_provider",
]
