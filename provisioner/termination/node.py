"""Node termination: a Node we registered, being deleted, whose claim is gone.

Normally a deleted Node's claim is deleted too and claim termination takes care of the Node. But a
claim can vanish without our termination (an admin stripped its finalizers), leaving its Node
Terminating forever behind our finalizer. Such a Node is handled on its own, as Karpenter's node
termination does: drained, its instance deleted if it is ours and was made for that claim (one
call per reconcile, looked at again until gone), then released.

A Node whose claim still exists is left to the claim: the claim reconciler deletes the claim when
its Node is deleted, and claim termination then drains and releases the Node.
"""

from __future__ import annotations

import functools
import logging

from provisioner.claims.dialects import dialect_for_kind, parse_time
from provisioner.claims.model import TERMINATION_FINALIZER
from provisioner.events import EventTarget
from provisioner.kube import NotFoundError
from provisioner.lifecycle import registration, termination
from provisioner.metrics import Metrics
from provisioner.reconcile.apply import Applier
from provisioner.reconcile.context import Context
from provisioner.reconcile.shared import shared_cloud
from provisioner.termination import instance
from provisioner.termination.drainer import Drainer
from provisioner.workqueue import DONE, Outcome

logger = logging.getLogger(__name__)


class NodeTermination:
    def __init__(self, ctx: Context, applier: Applier, drainer: Drainer) -> None:
        self.ctx = ctx
        self.applier = applier
        self.drainer = drainer

    def applies_to(self, node: registration.Node) -> bool:
        meta = node.get("metadata") or {}
        return (
            registration.deleting(node)
            and TERMINATION_FINALIZER in (meta.get("finalizers") or ())
            and self.ctx.ownership.node_marked(node)
        )

    async def reconcile(self, name: str) -> Outcome:
        with Metrics.controller("node.termination"):
            return await self._reconcile(name)

    async def _reconcile(self, name: str) -> Outcome:
        ctx = self.ctx
        node = ctx.store.node(name)
        if node is None or not self.applies_to(node):
            return DONE
        owners = [
            o
            for o in node["metadata"].get("ownerReferences") or ()
            if dialect_for_kind(o.get("apiVersion", ""), o.get("kind", ""))
        ]
        if owners and await self._claim_exists(owners):
            return DONE  # the claim's own termination releases the Node
        target = EventTarget.of_node(node)
        deleted_at = parse_time(node["metadata"].get("deletionTimestamp"))
        deadline = termination.drain_deadline(deleted_at, None, ctx.settings)
        round_ = await self.drainer.drain(node, deadline)
        await ctx.publish_for(target, round_.events)
        if not round_.done:
            return Outcome(requeue_after=round_.requeue_after)
        waiting = await self._delete_instance(node, {str(o.get("uid")) for o in owners}, target)
        if waiting is not None:
            return waiting
        await self.applier.release_node(name)
        logger.info("released node %s: its claim is gone", name, extra={"node": name})
        return DONE

    async def _claim_exists(self, owners: list[dict[str, str]]) -> bool:
        """Whether any owning claim still exists — asked of the API server, not only the store,
        because acting on a stale picture would delete a live claim's instance."""
        ctx = self.ctx
        for owner in owners:
            if ctx.store.claim_by_uid(str(owner.get("uid"))) is not None:
                return True
            dialect = dialect_for_kind(owner.get("apiVersion", ""), owner.get("kind", ""))
            if dialect is None:
                continue
            try:
                body = await ctx.kube.get(dialect.resource, str(owner.get("name")))
            except NotFoundError:
                continue
            if (body.get("metadata") or {}).get("uid") == owner.get("uid"):
                return True
        return False

    async def _delete_instance(
        self, node: registration.Node, owner_uids: set[str], target: EventTarget
    ) -> Outcome | None:
        ctx = self.ctx
        name = ctx.store.instance_of_node(node)
        shared = shared_cloud(ctx, name) if name else None
        if name and shared is not None:
            # Its claim is gone: so is its share of the instance (only this Node's machine).
            node_name = str(node["metadata"]["name"])
            gone = await ctx.cloud_call(
                "remove_nodes", functools.partial(shared.remove_nodes, name, [node_name])
            )
            return None if gone else Outcome(requeue_after=ctx.settings.delete_poll_interval)
        found = await instance.read(ctx, name) if name else None
        if found is None or not found.managed or found.claim_uid not in owner_uids:
            return None  # gone, or not this claim's instance: only the Node is ours to release
        poll = ctx.settings.delete_poll_interval
        return await instance.delete_step(ctx, found, poll, functools.partial(ctx.publish_for, target))
