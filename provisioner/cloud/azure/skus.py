"""VM size facts from the Resource SKUs API, and the sizes that recently had no capacity."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from azure.mgmt.compute.models import ResourceSku

from provisioner.cloud.azure.cache import Clock, ExpiringSet
from provisioner.cloud.errors import InsufficientCapacity
from provisioner.cloud.types import InstanceType

#: Restriction reason Azure reports when the subscription may not use a size.
NOT_AVAILABLE_FOR_SUBSCRIPTION = "NotAvailableForSubscription"


@dataclass(frozen=True)
class SkuFacts:
    """What we use about one VM size in the configured region. Zones are AKS form ("1", "2")."""

    name: str
    family: str
    vcpus: int
    memory_gib: float
    gpus: int = 0
    zones: tuple[str, ...] = ()
    location_restricted: bool = False
    restricted_zones: frozenset[str] = field(default_factory=frozenset)
    restriction_reason: str | None = None

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0

    @property
    def available_zones(self) -> tuple[str, ...]:
        if self.location_restricted:
            return ()
        return tuple(z for z in self.zones if z not in self.restricted_zones)

    @property
    def available(self) -> bool:
        """Usable somewhere in the region (a size listed without zones counts, if not restricted)."""
        if self.location_restricted:
            return False
        return not self.zones or bool(self.available_zones)

    def usable_in_zone(self, zone: str | None) -> bool:
        """Whether the size may be deployed in ``zone`` (None: anywhere in the region)."""
        if zone is None:
            return self.available
        if self.location_restricted or zone in self.restricted_zones:
            return False
        return not self.zones or zone in self.zones


def sdk_text(value: object) -> str:
    """An SDK value as plain text (SDK enums are str subclasses whose str() is ``Enum.NAME``)."""
    if value is None:
        return ""
    return str(value.value) if isinstance(value, Enum) else str(value)


def _capability(sku: ResourceSku, name: str) -> str | None:
    for cap in sku.capabilities or []:
        if cap.name == name:
            return cap.value
    return None


def _number(value: str | None, default: float = 0.0) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


def parse_resource_sku(sku: ResourceSku, location: str) -> SkuFacts | None:
    """Facts of one Resource SKUs entry; None for non-VM entries or entries for another region."""
    if (sku.resource_type or "").lower() != "virtualmachines" or not sku.name:
        return None
    loc = location.lower()
    if sku.locations and loc not in (x.lower() for x in sku.locations):
        return None
    zones: tuple[str, ...] = ()
    for info in sku.location_info or []:
        if (info.location or "").lower() == loc:
            zones = tuple(sorted(info.zones or ()))
    location_restricted = False
    restricted_zones: set[str] = set()
    reason = None
    for r in sku.restrictions or []:
        values = [v.lower() for v in (r.values_property or [])]
        rinfo = r.restriction_info
        if values and loc not in values and not (rinfo and loc in [x.lower() for x in rinfo.locations or []]):
            continue
        kind = sdk_text(r.type).lower()
        if kind == "location":
            location_restricted = True
            reason = sdk_text(r.reason_code) or NOT_AVAILABLE_FOR_SUBSCRIPTION
        elif kind == "zone":
            restricted_zones.update((rinfo.zones or []) if rinfo else [])
            reason = reason or sdk_text(r.reason_code) or NOT_AVAILABLE_FOR_SUBSCRIPTION
    return SkuFacts(
        name=sku.name,
        family=sku.family or "",
        vcpus=int(_number(_capability(sku, "vCPUs"))),
        memory_gib=_number(_capability(sku, "MemoryGB")),
        gpus=int(_number(_capability(sku, "GPUs"))),
        zones=zones,
        location_restricted=location_restricted,
        restricted_zones=frozenset(restricted_zones),
        restriction_reason=reason,
    )


def index_skus(skus: Iterable[ResourceSku], location: str) -> dict[str, SkuFacts]:
    """Facts by lower-cased size name (ARM treats vmSize case-insensitively)."""
    out: dict[str, SkuFacts] = {}
    for sku in skus:
        facts = parse_resource_sku(sku, location)
        if facts is not None:
            out[facts.name.lower()] = facts
    return out


def guess_is_gpu(vm_size: str) -> bool:
    """For a size the SKU API does not list: Azure's N-series are the GPU sizes."""
    base = vm_size.split("_", 1)[1] if "_" in vm_size else vm_size
    return base.upper().startswith("N")


class UnavailableOfferings:
    """Sizes (per zone, or region-wide) that recently failed for capacity; skipped without a call."""

    def __init__(self, ttl: float, clock: Clock = time.monotonic) -> None:
        self._set = ExpiringSet(ttl, clock)

    def mark(self, vm_size: str, zones: Iterable[str] = ()) -> None:
        zs = tuple(zones)
        for zone in zs or ("",):
            self._set.add((vm_size.lower(), zone))

    def is_unavailable(self, vm_size: str, zone: str | None = None) -> bool:
        """Whether ``vm_size`` is remembered as unavailable in ``zone`` (None/"": non-zonal request)."""
        return (vm_size.lower(), zone or "") in self._set

    def usable_zones(self, vm_size: str, zones: Iterable[str]) -> tuple[str, ...]:
        return tuple(z for z in zones if not self.is_unavailable(vm_size, z))

    def __len__(self) -> int:
        return len(self._set)


def to_instance_type(facts: SkuFacts, location: str, unavailable: UnavailableOfferings) -> InstanceType:
    zones = tuple(z for z in facts.available_zones if not unavailable.is_unavailable(facts.name, z))
    regional_failure = unavailable.is_unavailable(facts.name)
    available = facts.available and not regional_failure and (bool(zones) or not facts.zones)
    reason = None
    if not facts.available:
        reason = facts.restriction_reason or NOT_AVAILABLE_FOR_SUBSCRIPTION
    elif not available:
        reason = "recent capacity errors"
    return InstanceType(
        name=facts.name,
        family=facts.family,
        vcpus=facts.vcpus,
        memory_gib=facts.memory_gib,
        gpus=facts.gpus,
        zones=tuple(f"{location}-{z}" for z in zones),
        available=available,
        unavailable_reason=reason,
    )


def zones_for(
    facts: SkuFacts, requested: tuple[str, ...], location: str, unavailable: UnavailableOfferings
) -> tuple[tuple[str, ...], InsufficientCapacity | None]:
    """The AKS zones to pin (empty: let AKS choose), or why this size cannot be used."""
    if requested:
        listed = [z for z in requested if facts.usable_in_zone(z)]
        usable = unavailable.usable_zones(facts.name, listed)
        if usable:
            return usable, None
        recently = bool(listed)
        return (), InsufficientCapacity(
            f"VM size {facts.name} is {'recently out of capacity' if recently else 'not available'} in zones "
            f"{', '.join(f'{location}-{z}' for z in requested)}",
            "ZonalAllocationFailed" if recently else "SkuNotAvailable",
            instance_type=facts.name,
        )
    if not facts.available:
        return (), InsufficientCapacity(
            f"VM size {facts.name} is not available to this subscription in {location} "
            f"({facts.restriction_reason or 'restricted'})",
            "SkuNotAvailable",
            instance_type=facts.name,
        )
    if unavailable.is_unavailable(facts.name):
        return (), InsufficientCapacity(
            f"VM size {facts.name} recently had no capacity in {location}",
            "AllocationFailed",
            instance_type=facts.name,
        )
    return (), None
