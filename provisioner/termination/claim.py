"""Claim termination (the claim's ``karpenter.sh/termination`` finalizer).

Every Node the claim owns is drained and deleted (a surge upgrade can leave two), then the
instance is deleted — with one cloud call per reconcile, the claim looked at again until the cloud
says it is gone — then the Nodes and the claim are released. ``InstanceTerminating`` is reported
only once the cloud accepted the delete; a refusal is a Warning event with the cloud's code.
An instance that is not ours is never deleted, and never silently: a Warning event names it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace

from provisioner.claims.conditions import set_condition
from provisioner.claims.model import TERMINATION_FINALIZER, Claim
from provisioner.cloud.types import InstanceState
from provisioner.lifecycle import registration, termination
from provisioner.metrics import Metrics
from provisioner.ownership import InstanceOwnership
from provisioner.reconcile.apply import Applier
from provisioner.reconcile.context import Context
from provisioner.reconcile.shared import shared_cloud
from provisioner.termination import instance
from provisioner.termination.drainer import Drainer
from provisioner.workqueue import DONE, Outcome

logger = logging.getLogger(__name__)


class ClaimTermination:
    def __init__(
        self, ctx: Context, applier: Applier, drainer: Drainer, on_terminated: Callable[[Claim], None]
    ) -> None:
        self.ctx = ctx
        self.applier = applier
        self.drainer = drainer
        self.on_terminated = on_terminated

    async def reconcile(self, claim: Claim) -> Outcome:
        with Metrics.controller(f"{claim.dialect}.termination"):
            return await self._reconcile(claim)

    async def _reconcile(self, claim: Claim) -> Outcome:
        if TERMINATION_FINALIZER not in claim.finalizers:
            return DONE
        ctx = self.ctx
        nodes = ctx.store.nodes_owned_by(claim.uid)
        deadline = termination.claim_deadline(claim, ctx.settings)
        for node in nodes:
            round_ = await self.drainer.drain(node, deadline)
            await ctx.publish(claim, round_.events)
            if not round_.done:
                return Outcome(requeue_after=round_.requeue_after)
        for node in nodes:
            if not registration.deleting(node):
                await self.applier.delete_node(str(node["metadata"]["name"]))
        waiting = await self._delete_instance(claim, [str(n["metadata"]["name"]) for n in nodes])
        if waiting is not None:
            return waiting
        for node in nodes:
            await self.applier.release_node(str(node["metadata"]["name"]))
            ctx.metrics.node_terminated(claim)
        remaining = [f for f in claim.finalizers if f != TERMINATION_FINALIZER]
        await self.applier.patch_claim(
            claim, {"metadata": {"finalizers": remaining, "resourceVersion": claim.resource_version}}
        )
        ctx.metrics.claim_terminated(claim)
        self.on_terminated(claim)
        return DONE

    async def _delete_instance(self, claim: Claim, node_names: list[str]) -> Outcome | None:
        """None once the instance is gone (or not ours to delete); else when to look again. On a
        shared instance only the claim's own Nodes' machines go."""
        ctx = self.ctx
        name = ctx.store.instance_of(claim)
        shared = shared_cloud(ctx, name)
        if shared is not None:
            if not node_names or await ctx.cloud_call(
                "remove_nodes", functools.partial(shared.remove_nodes, name, node_names)
            ):
                return None
            await self._terminating(claim)
            return Outcome(requeue_after=self._poll(claim))
        found = await instance.read(ctx, name)
        if found is None:
            return None
        verdict = ctx.ownership.instance(found, claim, name)
        if verdict == InstanceOwnership.OTHER_CLAIM:
            return None  # the name now belongs to a newer claim's instance
        if verdict == InstanceOwnership.FOREIGN:
            await ctx.publish(claim, (termination.not_deleted(name, termination.FOREIGN_INSTANCE),))
            return None
        step = await instance.delete_step(
            ctx, found, self._poll(claim), functools.partial(ctx.publish, claim)
        )
        if step is not None and not step.failed and found.state != InstanceState.CREATING and not found.busy:
            await self._terminating(claim)
        return step

    async def _terminating(self, claim: Claim) -> None:
        """The cloud accepted the delete: the claim says so (once)."""
        condition = termination.instance_terminating(claim)
        if condition is not None:
            conditions = set_condition(claim.status.conditions, condition, self.ctx.clock())
            await self.applier.write_status(claim, replace(claim.status, conditions=conditions))

    def _poll(self, claim: Claim) -> float:
        """Check a deleting instance soon at first (fast deletes), then every DELETE_POLL_SECONDS."""
        interval = self.ctx.settings.delete_poll_interval
        if claim.deletion_timestamp is None:
            return interval
        age = (self.ctx.clock() - claim.deletion_timestamp).total_seconds()
        return min(interval, max(1.0, age / 5))
