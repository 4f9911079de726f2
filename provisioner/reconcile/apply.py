"""Carry out what the lifecycle steps of one reconcile decided, in one fixed order:

1. the claim's metadata (labels it lacks, our annotations) — one patch;
2. Node patches (one per Node, merged, guarded by the resourceVersion they were computed from);
3. Node releases (our finalizer off Nodes the claim no longer needs);
4. cloud deletes of failed instances;
5. the claim's status — one write, only if it changed;
6. events;
7. deleting the claim.

A failure stops the sequence; the reconcile is retried and recomputes everything from the world,
so a partial apply is never remembered, only redone.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from provisioner.claims.conditions import roll_up_ready, set_condition
from provisioner.claims.dialects import dialect_of
from provisioner.claims.model import TERMINATION_FINALIZER, Claim, ClaimStatus, Condition, ConditionType
from provisioner.cloud.errors import CloudError, NotFound
from provisioner.kube import NODES, NotFoundError
from provisioner.lifecycle.result import (
    ClaimMetadata,
    DeleteClaim,
    DeleteInstance,
    PatchNode,
    ReleaseNode,
    StepResult,
)
from provisioner.reconcile.context import Context
from provisioner.workqueue import Outcome

logger = logging.getLogger(__name__)

_DEPENDENTS = (ConditionType.LAUNCHED, ConditionType.REGISTERED, ConditionType.INITIALIZED)


def merge(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) applied to a copy of ``target``."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def with_steps(claim: Claim, steps: Iterable[StepResult], now: datetime.datetime) -> Claim:
    """The claim as it will be once the steps' conditions and status deltas are written."""
    status = claim.status
    conditions = status.conditions
    for step in steps:
        for c in step.conditions:
            conditions = set_condition(conditions, c, now)
        conditions = tuple(c for c in conditions if c.type not in step.cleared)
        status = step.status.apply(status)
    if not claim.deleting:
        pending = dialect_of(claim).pending_status
        for ctype in _DEPENDENTS:
            if not any(c.type == ctype for c in conditions):
                awaiting = Condition(
                    ctype, pending, "AwaitingReconciliation", "object is awaiting reconciliation"
                )
                conditions = set_condition(conditions, awaiting, now)
    conditions = roll_up_ready(conditions, now)
    return claim.with_status(replace(status, conditions=conditions))


def release_patch(node: Mapping[str, Any]) -> dict[str, Any] | None:
    """The patch that takes our finalizer off a Node (guarded by its resourceVersion), or None."""
    meta = node.get("metadata") or {}
    finalizers = list(meta.get("finalizers") or [])
    if TERMINATION_FINALIZER not in finalizers:
        return None
    finalizers.remove(TERMINATION_FINALIZER)
    return {"metadata": {"finalizers": finalizers, "resourceVersion": meta.get("resourceVersion")}}


class Applier:
    def __init__(self, ctx: Context, wake: Callable[[Claim], None]) -> None:
        """``wake`` starts a claim's reconcile: when we store the answer to our own write, its watch
        event is an echo of what the store already has and wakes nothing."""
        self.ctx = ctx
        self.wake = wake

    async def apply(self, claim: Claim, steps: Sequence[StepResult], now: datetime.datetime) -> Outcome:
        ctx = self.ctx
        actions = [a for s in steps for a in s.actions]
        claim = await self._metadata(claim, [a for a in actions if isinstance(a, ClaimMetadata)])
        for patch in _merged_node_patches(a for a in actions if isinstance(a, PatchNode)):
            await ctx.patch_node(patch.name, patch.patch, patch.resource_version)
        for release in (a for a in actions if isinstance(a, ReleaseNode)):
            await self.release_node(release.name)
        for delete in (a for a in actions if isinstance(a, DeleteInstance)):
            try:
                await ctx.cloud_call(
                    "delete", functools.partial(ctx.cloud.delete, delete.name, version=delete.version)
                )
            except NotFound:
                pass
            except CloudError as e:
                logger.warning(
                    "could not delete failed instance %s: %s", delete.name, e, extra={"pool": delete.name}
                )
        updated = with_steps(claim, steps, now)
        await self.write_status(claim, updated.status)
        for step in steps:
            await ctx.publish(claim, step.events)
        deleting = [s for s in steps if any(isinstance(a, DeleteClaim) for a in s.actions)]
        if deleting:
            await self.delete_claim(claim, deleting[0].events[0].reason if deleting[0].events else "")
            return Outcome()
        return _outcome(steps)

    async def _metadata(self, claim: Claim, updates: Sequence[ClaimMetadata]) -> Claim:
        labels: dict[str, str] = {}
        annotations: dict[str, str] = {}
        for u in updates:
            labels.update({k: v for k, v in u.labels.items() if k not in claim.labels})
            annotations.update({k: v for k, v in u.annotations.items() if claim.annotations.get(k) != v})
        meta: dict[str, Any] = {}
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        if not meta:
            return claim
        return await self.patch_claim(claim, {"metadata": meta})

    async def patch_claim(
        self, claim: Claim, patch: Mapping[str, Any], *, subresource: str | None = None
    ) -> Claim:
        dialect = dialect_of(claim)
        body = await self.ctx.kube.patch(dialect.resource, claim.name, patch, subresource=subresource)
        stored = self.ctx.store.put_claim(dialect, body)
        return stored if stored is not None else dialect.parse(body)

    async def write_status(self, claim: Claim, status: ClaimStatus) -> Claim:
        dialect = dialect_of(claim)
        new_body = dialect.status_body(status, claim.generation)
        if new_body == dialect.status_body(claim.status, claim.generation):
            return claim
        updated = await self.patch_claim(claim, {"status": new_body}, subresource="status")
        self._count_transitions(claim, updated)
        return updated

    def _count_transitions(self, before: Claim, after: Claim) -> None:
        ctx = self.ctx
        dialect = dialect_of(before)
        for ctype, phase in (
            (ConditionType.REGISTERED, "registered"),
            (ConditionType.INITIALIZED, "initialized"),
        ):
            if after.status.is_true(ctype) and not before.status.is_true(ctype):
                ctx.metrics.claim_phase(after, phase)
                if ctype == ConditionType.REGISTERED:
                    ctx.metrics.node_created(after)
        ready = ConditionType.READY
        if after.status.is_true(ready) and not before.status.is_true(ready) and before.creation_timestamp:
            elapsed = (ctx.clock() - before.creation_timestamp).total_seconds()
            ctx.metrics.time_to_ready.labels(dialect.name).observe(max(0.0, elapsed))

    async def release_node(self, name: str) -> None:
        node = self.ctx.store.node(name)
        patch = release_patch(node) if node is not None else None
        if patch is not None:
            with contextlib.suppress(NotFoundError):
                await self.ctx.patch_node(name, patch)

    async def delete_claim(self, claim: Claim, why: str) -> None:
        """Delete the claim; ``why`` is the reason of the Event saying so (a metric label)."""
        dialect = dialect_of(claim)
        with contextlib.suppress(NotFoundError):
            body = await self.ctx.kube.delete(dialect.resource, claim.name, preconditions_uid=claim.uid)
            self.ctx.metrics.claim_disrupted(claim, why)
            if body.get("kind") == dialect.kind:
                # Still there (finalizers): remember it is deleting, so that no later decision made
                # before the watch reports it deletes (and counts) it again; its termination starts.
                stored = self.ctx.store.put_claim(dialect, body)
                if stored is not None:
                    self.wake(stored)

    async def delete_node(self, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self.ctx.kube.delete(NODES, name)


def _merged_node_patches(patches: Iterable[PatchNode]) -> list[PatchNode]:
    by_node: dict[str, PatchNode] = {}
    for p in patches:
        current = by_node.get(p.name)
        if current is None:
            by_node[p.name] = p
        else:
            by_node[p.name] = PatchNode(
                p.name, merge(current.patch, p.patch), current.resource_version or p.resource_version
            )
    return list(by_node.values())


def _outcome(steps: Sequence[StepResult]) -> Outcome:
    delays = [s.requeue_after for s in steps if s.requeue_after is not None]
    if any(s.backoff for s in steps):
        return Outcome(failed=True, retry_after=max(delays) if delays else None)
    return Outcome(requeue_after=min(delays) if delays else None)
