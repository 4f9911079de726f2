"""The Microsoft.Compute endpoints: Resource SKUs and compute usages (vCPU quota).

SKU facts come from ``fakes.skus``; the listing is shaped like the real one (one entry per size and
location, non-VM resource types mixed in) so that clients filter by ``resourceType`` as they must.
Usages report each family's limit and what the fake's own pools consume.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from fakes import skus
from fakes.arm.errors import ArmError
from fakes.arm.pools import PoolStore
from fakes.arm.routing import Params, Router, arm_json

_FILTER_RE = re.compile(r"^\s*location\s+eq\s+'(?P<location>[^']*)'\s*$", re.IGNORECASE)
_DISK_SKUS = (("Premium_LRS", "Premium"), ("StandardSSD_LRS", "Standard"), ("Standard_LRS", "Standard"))


class ComputeRoutes:
    def __init__(self, store: PoolStore) -> None:
        self.store = store

    def add_to(self, router: Router) -> None:
        router.add("GET", "/subscriptions/{sub}/providers/Microsoft.Compute/skus", self.list_skus)
        router.add(
            "GET", "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/usages", self.usages
        )

    def _locations(self) -> list[str]:
        known = dict.fromkeys(skus.LOCATIONS)
        for cluster in self.store.clusters.values():
            known.setdefault(cluster.config.location, None)
        return list(known)

    async def list_skus(self, request: web.Request, params: Params) -> web.StreamResponse:
        filter_text = request.query.get("$filter")
        if filter_text:
            match = _FILTER_RE.match(filter_text)
            if match is None:
                raise ArmError(
                    400,
                    "InvalidFilterInQueryString",
                    f"The filter '{filter_text}' is not supported; only \"location eq '<location>'\" is.",
                )
            locations = [match.group("location").lower().replace(" ", "")]
        else:
            locations = list(skus.LOCATIONS)
        value: list[dict[str, Any]] = []
        for location in locations:
            for sku in skus.skus_in(location):
                value.append(sku.to_resource_sku(location))
            value.extend(_disk_skus(location))
        return arm_json({"value": value})

    async def usages(self, request: web.Request, params: Params) -> web.StreamResponse:
        location = params["location"].lower().replace(" ", "")
        if location not in self._locations():
            raise ArmError(
                404,
                "LocationNotAvailableForResourceType",
                f"The provided location '{params['location']}' is not available for resource type "
                f"'Microsoft.Compute/locations/usages'. List of available regions for the resource type is "
                f"'{','.join(self._locations())}'.",
            )
        sub = params["sub"]
        used = self.store.usage(sub, location)
        quota = self.store.quota
        vms, scale_sets = self.store.vm_counts(sub, location)
        entries = [
            _usage("availabilitySets", "Availability Sets", 0, 2500),
            _usage("virtualMachines", "Virtual Machines", vms, 25000),
            _usage("virtualMachineScaleSets", "Virtual Machine Scale Sets", scale_sets, 2500),
        ]
        # The regional totals (cores, lowPriorityCores) come first, then every family.
        for family in quota.families(location):
            current = used.get(family, 0) + quota.baseline(location, family)
            entries.append(
                _usage(family, skus.family_display_name(family), current, quota.limit(location, family))
            )
        return arm_json({"value": entries})


def _usage(name: str, display: str, current: int, limit: int) -> dict[str, Any]:
    return {
        "limit": limit,
        "unit": "Count",
        "currentValue": current,
        "name": {"value": name, "localizedValue": display},
    }


def _disk_skus(location: str) -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "disks",
            "name": name,
            "tier": tier,
            "size": name.split("_")[-1],
            "family": name.split("_")[0],
            "locations": [location],
            "locationInfo": [{"location": location, "zones": ["1", "2", "3"], "zoneDetails": []}],
            "capabilities": [
                {"name": "MaxSizeGiB", "value": "32767"},
                {"name": "MinSizeGiB", "value": "0"},
            ],
            "restrictions": [],
        }
        for name, tier in _DISK_SKUS
    ]
