"""A catalog of real Azure VM sizes for the offline cloud.

Facts (vCPUs, memory, GPUs, quota family names) follow Azure's size documentation and what the
Resource SKUs and compute usages APIs report. Regional availability is simplified: four regions,
three zones each, with a few restrictions so that "not offered here" and
"NotAvailableForSubscription in a zone" paths can be exercised offline.

Zones are kept in Azure's own form (``"1"``, ``"2"``, ``"3"``), as the Resource SKUs API reports
them; the Kubernetes zone label form (``eastus-1``) is built by the callers that need it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

RestrictionType = Literal["Location", "Zone"]

#: Reason code Azure reports for a size the subscription cannot deploy.
NOT_AVAILABLE_FOR_SUBSCRIPTION = "NotAvailableForSubscription"

#: Name of the regional vCPU total in the compute usages API ("Total Regional vCPUs").
REGIONAL_VCPUS = "cores"
#: Name of the regional Spot/low-priority vCPU total in the compute usages API.
SPOT_VCPUS = "lowPriorityCores"

LOCATIONS: tuple[str, ...] = ("eastus", "westus2", "westeurope", "southcentralus")
_ALL_ZONES: tuple[str, ...] = ("1", "2", "3")


@dataclass(frozen=True)
class LocationOffer:
    """A region where a size is listed, with the availability zones it is listed in."""

    location: str
    zones: tuple[str, ...] = _ALL_ZONES


@dataclass(frozen=True)
class SkuRestriction:
    """A restriction as the Resource SKUs API reports it.

    ``type="Location"`` makes the size unusable in the whole region; ``type="Zone"`` only in
    ``zones`` of that region.
    """

    type: RestrictionType
    location: str
    zones: tuple[str, ...] = ()
    reason_code: str = NOT_AVAILABLE_FOR_SUBSCRIPTION


@dataclass(frozen=True)
class SkuInfo:
    """One VM size."""

    name: str
    family: str
    vcpus: int
    memory_gib: float
    gpus: int = 0
    gpu_model: str | None = None
    gpu_memory_gib: int | None = None
    max_data_disks: int | None = None
    hyperv_generations: tuple[str, ...] = ("V1", "V2")
    offers: tuple[LocationOffer, ...] = ()
    restrictions: tuple[SkuRestriction, ...] = ()
    tier: str = field(default="Standard")

    @property
    def size(self) -> str:
        """The name without the tier prefix, as in the Resource SKUs API (``NC24ads_A100_v4``)."""
        prefix = f"{self.tier}_"
        return self.name[len(prefix) :] if self.name.startswith(prefix) else self.name

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0

    @property
    def locations(self) -> tuple[str, ...]:
        return tuple(offer.location for offer in self.offers)

    def zones_in(self, location: str) -> tuple[str, ...]:
        """Zones the size is listed in for ``location`` (restricted ones included)."""
        for offer in self.offers:
            if offer.location == location:
                return offer.zones
        return ()

    def is_listed_in(self, location: str) -> bool:
        return any(offer.location == location for offer in self.offers)

    def restriction_in(self, location: str, zone: str | None = None) -> SkuRestriction | None:
        """The restriction that stops this size in ``location`` (and ``zone``), if any."""
        for restriction in self.restrictions:
            if restriction.location != location:
                continue
            if restriction.type == "Location":
                return restriction
            if zone is not None and zone in restriction.zones:
                return restriction
        return None

    def available_zones(self, location: str) -> tuple[str, ...]:
        """Zones where the size can actually be deployed; empty if it cannot be used there."""
        if not self.is_listed_in(location) or self.restriction_in(location) is not None:
            return ()
        return tuple(z for z in self.zones_in(location) if self.restriction_in(location, z) is None)

    def is_available_in(self, location: str) -> bool:
        """Whether the size can be deployed somewhere in ``location``.

        A size listed without zones (a non-zonal region) counts as available when no
        location-wide restriction applies.
        """
        if not self.is_listed_in(location) or self.restriction_in(location) is not None:
            return False
        return not self.zones_in(location) or bool(self.available_zones(location))

    def capabilities(self) -> tuple[tuple[str, str], ...]:
        """Capabilities as name/value string pairs, as the Resource SKUs API lists them."""
        caps: list[tuple[str, str]] = [
            ("OSVhdSizeMB", "1047552"),
            ("vCPUs", str(self.vcpus)),
            ("MemoryPreservingMaintenanceSupported", "False" if self.is_gpu else "True"),
            ("HyperVGenerations", ",".join(self.hyperv_generations)),
            ("MemoryGB", _format_number(self.memory_gib)),
        ]
        if self.max_data_disks is not None:
            caps.append(("MaxDataDiskCount", str(self.max_data_disks)))
        caps += [
            ("CpuArchitectureType", "x64"),
            ("LowPriorityCapable", "True"),
            ("PremiumIO", "True"),
            ("VMDeploymentTypes", "IaaS"),
            ("vCPUsAvailable", str(self.vcpus)),
        ]
        if self.is_gpu:
            caps.append(("GPUs", str(self.gpus)))
        caps += [
            ("vCPUsPerCore", "1" if self.is_gpu else "2"),
            ("EphemeralOSDiskSupported", "True"),
            ("AcceleratedNetworkingEnabled", "True"),
            ("RdmaEnabled", "True" if self.name.startswith("Standard_ND") else "False"),
        ]
        return tuple(caps)

    def to_resource_sku(self, location: str) -> dict[str, object]:
        """This size as one entry of the Resource SKUs API listing, filtered to ``location``.

        Returns an empty dict when the size is not listed in ``location``.
        """
        if not self.is_listed_in(location):
            return {}
        restrictions: list[dict[str, object]] = []
        for r in self.restrictions:
            if r.location != location:
                continue
            info: dict[str, object] = {"locations": [r.location]}
            if r.type == "Zone":
                info["zones"] = list(r.zones)
            restrictions.append(
                {
                    "type": r.type,
                    "values": [r.location],
                    "restrictionInfo": info,
                    "reasonCode": r.reason_code,
                }
            )
        return {
            "resourceType": "virtualMachines",
            "name": self.name,
            "tier": self.tier,
            "size": self.size,
            "family": self.family,
            "locations": [location],
            "locationInfo": [
                {"location": location, "zones": list(self.zones_in(location)), "zoneDetails": []}
            ],
            "capabilities": [{"name": n, "value": v} for n, v in self.capabilities()],
            "restrictions": restrictions,
        }


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _everywhere(zones: tuple[str, ...] = _ALL_ZONES) -> tuple[LocationOffer, ...]:
    return tuple(LocationOffer(loc, zones) for loc in LOCATIONS)


def _in(*locations: str) -> tuple[LocationOffer, ...]:
    return tuple(LocationOffer(loc) for loc in locations)


# --- quota family names, as the compute usages API reports them (name.value) ------------------

FAMILY_NCSV3 = "standardNCSv3Family"  # V100 (retired by Azure on 2025-09-30; still seen in the wild)
FAMILY_NCADS_A100_V4 = "standardNCADSA100v4Family"
FAMILY_NDAS_V4_A100 = "standardNDASv4_A100Family"
FAMILY_NDAMS_V4_A100 = "standardNDAMSv4_A100Family"
FAMILY_NDS_H100_V5 = "standardNDSH100v5Family"
FAMILY_NCAS_V3_T4 = "standardNCASv3_T4Family"
FAMILY_NVADS_A10_V5 = "standardNVADSA10v5Family"
FAMILY_NCADS_H100_V5 = "standardNCadsH100v5Family"
FAMILY_DSV3 = "standardDSv3Family"
FAMILY_DSV5 = "standardDSv5Family"
FAMILY_ESV5 = "standardESv5Family"

_V100 = "NVIDIA V100"
_A100_80_PCIE = "NVIDIA A100 80GB PCIe"
_A100_40_SXM = "NVIDIA A100 40GB SXM"
_A100_80_SXM = "NVIDIA A100 80GB SXM"
_H100_SXM = "NVIDIA H100 80GB"
_H100_NVL = "NVIDIA H100 NVL"
_T4 = "NVIDIA T4"
_A10 = "NVIDIA A10"

# Restrictions that make the catalog exercise every availability path:
# NC A100 v4 is listed in eastus zone 1 but the subscription may not use it there;
# NCv3 is listed in westeurope but not for this subscription; ND H100 v5 likewise in westeurope.
_A100_V4_ZONE_RESTRICTION = (SkuRestriction("Zone", "eastus", ("1",)),)
_NCV3_LOCATION_RESTRICTION = (SkuRestriction("Location", "westeurope"),)
_ND_H100_LOCATION_RESTRICTION = (SkuRestriction("Location", "westeurope"),)

_A100_V4_OFFERS = _in("eastus", "southcentralus", "westeurope")
_H100_NC_OFFERS = _in("eastus", "southcentralus")

_CATALOG: tuple[SkuInfo, ...] = (
    # NCv3: Intel Xeon E5-2690 v4, NVIDIA V100 16 GB.
    SkuInfo("Standard_NC6s_v3", FAMILY_NCSV3, 6, 112, 1, _V100, 16, 12, offers=_everywhere(),
            restrictions=_NCV3_LOCATION_RESTRICTION),
    SkuInfo("Standard_NC12s_v3", FAMILY_NCSV3, 12, 224, 2, _V100, 16, 24, offers=_everywhere(),
            restrictions=_NCV3_LOCATION_RESTRICTION),
    SkuInfo("Standard_NC24s_v3", FAMILY_NCSV3, 24, 448, 4, _V100, 16, 32, offers=_everywhere(),
            restrictions=_NCV3_LOCATION_RESTRICTION),
    # NC A100 v4: AMD EPYC 7V13, NVIDIA A100 80 GB PCIe; Gen2 images only.
    SkuInfo("Standard_NC24ads_A100_v4", FAMILY_NCADS_A100_V4, 24, 220, 1, _A100_80_PCIE, 80, 12,
            ("V2",), _A100_V4_OFFERS, _A100_V4_ZONE_RESTRICTION),
    SkuInfo("Standard_NC48ads_A100_v4", FAMILY_NCADS_A100_V4, 48, 440, 2, _A100_80_PCIE, 80, 24,
            ("V2",), _A100_V4_OFFERS, _A100_V4_ZONE_RESTRICTION),
    SkuInfo("Standard_NC96ads_A100_v4", FAMILY_NCADS_A100_V4, 96, 880, 4, _A100_80_PCIE, 80, 32,
            ("V2",), _A100_V4_OFFERS, _A100_V4_ZONE_RESTRICTION),
    # ND A100 v4: 8x NVIDIA A100 40 GB SXM with NVLink, InfiniBand.
    SkuInfo("Standard_ND96asr_v4", FAMILY_NDAS_V4_A100, 96, 900, 8, _A100_40_SXM, 40, None, ("V2",),
            _everywhere()),
    # NDm A100 v4: 8x NVIDIA A100 80 GB SXM.
    SkuInfo("Standard_ND96amsr_A100_v4", FAMILY_NDAMS_V4_A100, 96, 1900, 8, _A100_80_SXM, 80, None,
            ("V2",), _in("eastus", "southcentralus", "westeurope")),
    # ND H100 v5: 8x NVIDIA H100 80 GB SXM.
    SkuInfo("Standard_ND96isr_H100_v5", FAMILY_NDS_H100_V5, 96, 1900, 8, _H100_SXM, 80, None, ("V2",),
            _in("eastus", "southcentralus", "westeurope"), _ND_H100_LOCATION_RESTRICTION),
    # NCasT4_v3: AMD EPYC 7V12, NVIDIA T4 16 GB.
    SkuInfo("Standard_NC4as_T4_v3", FAMILY_NCAS_V3_T4, 4, 28, 1, _T4, 16, 8, offers=_everywhere()),
    SkuInfo("Standard_NC8as_T4_v3", FAMILY_NCAS_V3_T4, 8, 56, 1, _T4, 16, 16, offers=_everywhere()),
    SkuInfo("Standard_NC16as_T4_v3", FAMILY_NCAS_V3_T4, 16, 110, 1, _T4, 16, 32, offers=_everywhere()),
    SkuInfo("Standard_NC64as_T4_v3", FAMILY_NCAS_V3_T4, 64, 440, 4, _T4, 16, 32, offers=_everywhere()),
    # NVadsA10_v5: AMD EPYC 74F3V, one full NVIDIA A10 24 GB at this size.
    SkuInfo("Standard_NV36ads_A10_v5", FAMILY_NVADS_A10_V5, 36, 440, 1, _A10, 24, None, offers=_everywhere()),
    # NC H100 v5: AMD EPYC 9V84, NVIDIA H100 NVL 94 GB.
    SkuInfo("Standard_NC40ads_H100_v5", FAMILY_NCADS_H100_V5, 40, 320, 1, _H100_NVL, 94, 12, ("V2",),
            _H100_NC_OFFERS),
    SkuInfo("Standard_NC80adis_H100_v5", FAMILY_NCADS_H100_V5, 80, 640, 2, _H100_NVL, 94, 24, ("V2",),
            _H100_NC_OFFERS),
    # General purpose CPU sizes (system pools, CPU-only workspaces).
    SkuInfo("Standard_D2s_v3", FAMILY_DSV3, 2, 8, max_data_disks=4, offers=_everywhere()),
    SkuInfo("Standard_D4s_v3", FAMILY_DSV3, 4, 16, max_data_disks=8, offers=_everywhere()),
    SkuInfo("Standard_D8s_v3", FAMILY_DSV3, 8, 32, max_data_disks=16, offers=_everywhere()),
    SkuInfo("Standard_D4s_v5", FAMILY_DSV5, 4, 16, max_data_disks=8, offers=_everywhere()),
    SkuInfo("Standard_D16s_v5", FAMILY_DSV5, 16, 64, max_data_disks=32, offers=_everywhere()),
    SkuInfo("Standard_E8s_v5", FAMILY_ESV5, 8, 64, max_data_disks=16, offers=_everywhere()),
)  # fmt: skip

_BY_NAME: dict[str, SkuInfo] = {sku.name.lower(): sku for sku in _CATALOG}

# Default vCPU limits of a fresh fake subscription, per region. GPU families get the small
# limits real subscriptions start with (enough for one or two nodes), CPU families large ones.
_DEFAULT_QUOTAS: tuple[tuple[str, int], ...] = (
    (FAMILY_NCSV3, 24),
    (FAMILY_NCADS_A100_V4, 48),
    (FAMILY_NDAS_V4_A100, 96),
    (FAMILY_NDAMS_V4_A100, 96),
    (FAMILY_NDS_H100_V5, 96),
    (FAMILY_NCAS_V3_T4, 64),
    (FAMILY_NVADS_A10_V5, 72),
    (FAMILY_NCADS_H100_V5, 80),
    (FAMILY_DSV3, 350),
    (FAMILY_DSV5, 350),
    (FAMILY_ESV5, 350),
    (REGIONAL_VCPUS, 2000),
    (SPOT_VCPUS, 200),
)

#: Limit applied to a family missing from the quota table.
DEFAULT_UNLISTED_FAMILY_QUOTA = 0


def get_sku(name: str) -> SkuInfo | None:
    """The size called ``name`` (case-insensitive, as ARM treats vmSize), or None."""
    return _BY_NAME.get(name.lower())


def all_skus() -> tuple[SkuInfo, ...]:
    return _CATALOG


def skus_in(location: str) -> tuple[SkuInfo, ...]:
    """Sizes listed in ``location``, restricted ones included (check ``is_available_in``)."""
    return tuple(sku for sku in _CATALOG if sku.is_listed_in(location))


def families() -> tuple[str, ...]:
    """Every quota family in the catalog, in catalog order."""
    seen: dict[str, None] = {}
    for sku in _CATALOG:
        seen.setdefault(sku.family, None)
    return tuple(seen)


def default_quotas() -> dict[str, int]:
    """A fresh copy of the default vCPU limits: family name (and ``cores``/``lowPriorityCores``) -> vCPUs."""
    return dict(_DEFAULT_QUOTAS)


def family_display_name(family: str) -> str:
    """The usages API ``localizedValue`` style name, e.g. ``Standard NCADSA100v4 Family vCPUs``."""
    if family == REGIONAL_VCPUS:
        return "Total Regional vCPUs"
    if family == SPOT_VCPUS:
        return "Total Regional Low-priority vCPUs"
    core = family.removeprefix("standard").removesuffix("Family")
    return f"Standard {core} Family vCPUs"


def skus_of_family(family: str, skus: Iterable[SkuInfo] = _CATALOG) -> tuple[SkuInfo, ...]:
    return tuple(sku for sku in skus if sku.family == family)
