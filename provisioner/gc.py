"""Garbage collection: instances nobody claims, and claims whose instance vanished.

One ``cloud.list()`` per interval (never a call per claim). An instance we own (by tag) whose claim
does not exist — or exists under another UID, i.e. was recreated — is deleted once it has been seen
orphaned for the grace period, so a claim created a moment ago is never raced. A launched claim
whose instance is missing from the list is confirmed with one ``get`` before it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from provisioner.claims.model import Claim, ConditionType
from provisioner.claims.selection import is_managed
from provisioner.cloud.errors import CloudError, NotFound
from provisioner.cloud.types import Instance, InstanceState
from provisioner.controller import Controller
from provisioner.kube import ApiError
from provisioner.lifecycle import launch

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


class GarbageCollector:
    def __init__(self, controller: Controller, interval: float, grace: float) -> None:
        self.controller = controller
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
            self.controller.observe_states()
            try:
                await self.collect()
            except Exception:
                logger.exception("garbage collection failed; trying again next interval")

    async def collect(self) -> GcPlan:
        c = self.controller
        try:
            instances = await c.metrics.timed_cloud_call(c.cloud_name, "list", c.cloud.list)
        except CloudError as e:
            logger.warning("garbage collection skipped: listing instances failed: %s", e)
            return GcPlan((), ())
        try:
            # An authoritative list, not the watch cache: an empty or unsynced cache must never make
            # every pool look orphaned.
            claims = await c.list_claims()
        except ApiError as e:
            logger.warning("garbage collection skipped: listing claims failed: %s", e)
            return GcPlan((), ())
        owners: dict[str, list[Claim]] = {}
        managed: dict[str, list[Claim]] = {}
        for claim in claims:
            name = c.instance_name_of(claim)
            owners.setdefault(name, []).append(claim)
            if is_managed(claim, c.settings):
                managed.setdefault(name, []).append(claim)
        decided = plan(instances, owners, self.orphan_since, time.monotonic(), self.grace, managed=managed)
        for name in decided.delete_instances:
            logger.info(
                "deleting orphaned instance %s (no claim for %.0fs)", name, self.grace, extra={"pool": name}
            )
            try:
                await c.metrics.timed_cloud_call(
                    c.cloud_name, "delete", functools.partial(c.cloud.delete, name)
                )
                c.metrics.gc_deletions.labels("instance").inc()
            except CloudError as e:
                logger.warning("could not delete orphaned instance %s: %s", name, e)
        for claim in decided.vanished_claims:
            name = c.instance_name_of(claim)
            try:
                await c.metrics.timed_cloud_call(c.cloud_name, "get", functools.partial(c.cloud.get, name))
                continue  # still there (the list was stale)
            except NotFound as gone:
                step = launch.vanished(claim, gone)
            except CloudError as e:
                logger.warning("could not confirm instance %s of %s: %s", name, claim.name, e)
                continue
            for event in step.events:
                await c.events.publish(claim, event)
            await c.delete_claim(claim)
            c.metrics.gc_deletions.labels("claim").inc()
        return decided
