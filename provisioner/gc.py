"""Garbage collection: instances nobody claims, and claims whose instance vanished.

One ``cloud.list()`` per interval (never a call per claim). An instance we own (by tag) whose claim
does not exist — or exists under another UID, i.e. was recreated — is deleted once it has been seen
orphaned for the grace period, so a claim created a moment ago is never raced; the delete carries
the version of the listing, so an instance replaced since is left alone. A launched claim whose
instance is missing from the list is confirmed with one ``get`` before it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from provisioner.claims.model import Claim, ConditionType
from provisioner.cloud.errors import CloudError, NotFound
from provisioner.cloud.provider import CloudProvider
from provisioner.cloud.types import Instance, InstanceState
from provisioner.kube import ApiError
from provisioner.lifecycle import launch
from provisioner.lifecycle.result import Event
from provisioner.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcPlan:
    delete_instances: tuple[str, ...]
    #: Claims whose instance is missing from the list (confirm before deleting them).
    vanished_claims: tuple[Claim, ...]


#: Claims by the instance name they map to (a Machine and a NodeClaim may share one).
ClaimsByInstance = Mapping[str, Sequence[Claim]]


def plan(
    instances: Iterable[Instance],
    claims_by_instance: ClaimsByInstance,
    orphan_since: dict[str, float],
    now: float,
    grace: float,
    *,
    managed: ClaimsByInstance | None = None,
) -> GcPlan:
    """Decide what to collect; updates ``orphan_since`` (instance name -> first time seen orphaned).

    ``claims_by_instance`` holds every claim that exists (an instance whose claim exists is never
    an orphan, selected by us or not); ``managed`` the ones we manage, whose vanished instances make
    them candidates for deletion (default: all of them).
    """
    listed: dict[str, Instance] = {}
    orphans: set[str] = set()
    for inst in instances:
        if not inst.managed:
            continue
        listed[inst.name] = inst
        # Several claims can map to one name (a Machine and a NodeClaim called alike): the instance
        # is an orphan only when none of them is the one it was created for.
        claims = claims_by_instance.get(inst.name, ())
        if any(not inst.claim_uid or inst.claim_uid == claim.uid for claim in claims):
            continue
        orphans.add(inst.name)
    for name in list(orphan_since):
        if name not in orphans:
            del orphan_since[name]
    delete: list[str] = []
    for name in sorted(orphans):
        first = orphan_since.setdefault(name, now)
        if now - first >= grace and listed[name].state != InstanceState.DELETING:
            delete.append(name)
    candidates = claims_by_instance if managed is None else managed
    vanished = tuple(
        claim
        for name in sorted(candidates)
        for claim in candidates[name]
        if name not in listed and not claim.deleting and claim.status.is_true(ConditionType.LAUNCHED)
    )
    return GcPlan(tuple(delete), vanished)


class Claims(Protocol):
    """What garbage collection needs to know about claims (the controller provides it)."""

    async def list_claims(self) -> list[Claim]:
        """Every claim, from the API server (never a watch cache)."""
        ...

    def instance_of(self, claim: Claim) -> str: ...

    def is_ours(self, claim: Claim) -> bool: ...

    async def delete_claim(self, claim: Claim, why: Event) -> None: ...

    def observe_states(self) -> None: ...


class GarbageCollector:
    def __init__(
        self,
        claims: Claims,
        cloud: CloudProvider,
        metrics: Metrics,
        cloud_name: str,
        interval: float,
        grace: float,
    ) -> None:
        self.claims = claims
        self.cloud = cloud
        self.metrics = metrics
        self.cloud_name = cloud_name
        self.interval = interval
        self.grace = grace
        self.orphan_since: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="gc")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.claims.observe_states()
            try:
                with Metrics.controller("garbagecollection"):
                    await self.collect()
            except Exception:
                logger.exception("garbage collection failed; trying again next interval")

    async def collect(self) -> GcPlan:
        try:
            instances = await self.metrics.timed_cloud_call(self.cloud_name, "list", self.cloud.list)
        except CloudError as e:
            logger.warning("garbage collection skipped: listing instances failed: %s", e)
            return GcPlan((), ())
        try:
            # An authoritative list, not the watch cache: an empty or unsynced cache must never make
            # every pool look orphaned.
            claims = await self.claims.list_claims()
        except ApiError as e:
            logger.warning("garbage collection skipped: listing claims failed: %s", e)
            return GcPlan((), ())
        owners: dict[str, list[Claim]] = {}
        managed: dict[str, list[Claim]] = {}
        for claim in claims:
            name = self.claims.instance_of(claim)
            owners.setdefault(name, []).append(claim)
            if self.claims.is_ours(claim):
                managed.setdefault(name, []).append(claim)
        decided = plan(instances, owners, self.orphan_since, time.monotonic(), self.grace, managed=managed)
        versions = {i.name: i.version for i in instances}
        for name in decided.delete_instances:
            logger.info(
                "deleting orphaned instance %s (no claim for %.0fs)", name, self.grace, extra={"pool": name}
            )
            try:
                await self.metrics.timed_cloud_call(
                    self.cloud_name,
                    "delete",
                    functools.partial(self.cloud.delete, name, version=versions.get(name)),
                )
                self.metrics.gc_deletions.labels("instance").inc()
            except CloudError as e:
                logger.warning("could not delete orphaned instance %s: %s", name, e)
        for claim in decided.vanished_claims:
            name = self.claims.instance_of(claim)
            try:
                await self.metrics.timed_cloud_call(
                    self.cloud_name, "get", functools.partial(self.cloud.get, name)
                )
                continue  # still there (the list was stale)
            except NotFound as gone:
                step = launch.vanished(claim, gone)
            except CloudError as e:
                logger.warning("could not confirm instance %s of %s: %s", name, claim.name, e)
                continue
            await self.claims.delete_claim(claim, step.events[0])
            self.metrics.gc_deletions.labels("claim").inc()
        return decided
