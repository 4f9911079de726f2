"""Per-location vCPU limits of the fake subscription, as the compute usages API reports them.

Limits come from the SKU catalog's defaults (``fakes.skus.default_quotas``), overridden by the
config (``quota``) and at run time (``/_fake/quota``). Usage is not stored: the pool store computes
it from the pools that exist, plus a configurable baseline for "other" workloads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fakes import skus

ALL_LOCATIONS = "*"


@dataclass(frozen=True)
class Shortfall:
    """A quota that one more demand would exceed."""

    family: str
    limit: int
    usage: int
    required: int


class QuotaBook:
    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, int]] | None = None,
        baseline: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        self._initial_overrides = {loc: dict(f) for loc, f in (overrides or {}).items()}
        self._initial_baseline = {loc: dict(f) for loc, f in (baseline or {}).items()}
        self.reset()

    def reset(self) -> None:
        self._overrides = {loc: dict(f) for loc, f in self._initial_overrides.items()}
        self._baseline = {loc: dict(f) for loc, f in self._initial_baseline.items()}

    def limit(self, location: str, family: str) -> int:
        for scope in (location, ALL_LOCATIONS):
            if family in self._overrides.get(scope, {}):
                return self._overrides[scope][family]
        return skus.default_quotas().get(family, skus.DEFAULT_UNLISTED_FAMILY_QUOTA)

    def set_limit(self, location: str, family: str, limit: int) -> None:
        if limit < 0:
            raise ValueError("a quota limit cannot be negative")
        self._overrides.setdefault(location, {})[family] = limit

    def baseline(self, location: str, family: str) -> int:
        return self._baseline.get(location, {}).get(family, 0) + self._baseline.get(ALL_LOCATIONS, {}).get(
            family, 0
        )

    def set_baseline(self, location: str, family: str, used: int) -> None:
        if used < 0:
            raise ValueError("a baseline usage cannot be negative")
        self._baseline.setdefault(location, {})[family] = used

    def families(self, location: str) -> list[str]:
        """Quota names reported for ``location``: the regional totals, then every family."""
        names: dict[str, None] = {skus.REGIONAL_VCPUS: None, skus.SPOT_VCPUS: None}
        for family in skus.families():
            names.setdefault(family, None)
        for scope in (location, ALL_LOCATIONS):
            for family in self._overrides.get(scope, {}):
                names.setdefault(family, None)
        return list(names)

    def shortfall(
        self, location: str, usage: Mapping[str, int], demand: Mapping[str, int]
    ) -> Shortfall | None:
        """The first quota ``demand`` would exceed on top of ``usage`` (families before the totals)."""
        ordered = sorted(demand, key=lambda f: f in (skus.REGIONAL_VCPUS, skus.SPOT_VCPUS))
        for family in ordered:
            need = demand[family]
            if need <= 0:
                continue
            limit = self.limit(location, family)
            used = usage.get(family, 0) + self.baseline(location, family)
            if used + need > limit:
                return Shortfall(family=family, limit=limit, usage=used, required=need)
        return None


def demand_of(sku: skus.SkuInfo, count: int, spot: bool) -> dict[str, int]:
    """vCPUs a scale set of ``count`` x ``sku`` takes, by quota name (Spot only counts as low priority)."""
    vcpus = sku.vcpus * max(count, 0)
    if spot:
        return {skus.SPOT_VCPUS: vcpus}
    return {sku.family: vcpus, skus.REGIONAL_VCPUS: vcpus}
