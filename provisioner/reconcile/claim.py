"""The claim reconciler: take the claim over, then launch → registration → initialization →
liveness, each step a pure decision over (claim, Node, instance); the decisions are applied in one
place (``apply``). A deleting claim goes to its termination.

No reconcile waits on the cloud: a create is started (or read back) with one call and the claim is
looked at again later; Nodes come from the watch, so registration never polls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from provisioner.claims.model import MANAGED_BY_ANNOTATION, TERMINATION_FINALIZER, Claim, ConditionType
from provisioner.cloud.provider import SupportsAdoption
from provisioner.lifecycle import drift, initialization, limits, liveness, registration
from provisioner.lifecycle.result import DeleteClaim, Event, EventType, PatchNode, StepResult
from provisioner.lifecycle.termination import FOREIGN_INSTANCE, foreign_instance
from provisioner.metrics import Metrics
from provisioner.ownership import InstanceOwnership
from provisioner.reconcile import shared
from provisioner.reconcile.apply import Applier, merge, with_steps
from provisioner.reconcile.context import Context
from provisioner.reconcile.launcher import Launcher
from provisioner.reconcile.nodepool import nodepool_of
from provisioner.termination.claim import ClaimTermination
from provisioner.termination.instance import read as read_instance
from provisioner.workqueue import Outcome

logger = logging.getLogger(__name__)

Node = Mapping[str, Any]


class ClaimReconciler:
    def __init__(
        self, ctx: Context, applier: Applier, launcher: Launcher, termination: ClaimTermination
    ) -> None:
        self.ctx = ctx
        self.applier = applier
        self.launcher = launcher
        self.termination = termination

    async def reconcile(self, claim: Claim) -> Outcome:
        if claim.deleting:
            return await self.termination.reconcile(claim)
        with Metrics.controller(f"{claim.dialect}.lifecycle"):
            if TERMINATION_FINALIZER not in claim.finalizers or not self.ctx.ownership.marked(claim):
                claim = await self._take_over(claim)
            return await self._live(claim)

    async def _take_over(self, claim: Claim) -> Claim:
        """Mark the claim ours and put our finalizer on it — before any cloud write, so no instance
        exists without a finalizer to clean it up. A claim launched by a predecessor has its
        instance checked first: adopted if it was made for this claim, else reported (never deleted)."""
        ctx = self.ctx
        if claim.status.is_true(ConditionType.LAUNCHED):
            await self._check_predecessor_instance(claim)
        finalizers = list(dict.fromkeys([*claim.finalizers, TERMINATION_FINALIZER]))
        patch = {
            "metadata": {
                "finalizers": finalizers,
                "annotations": {MANAGED_BY_ANNOTATION: ctx.settings.controller_name},
                "resourceVersion": claim.resource_version,
            }
        }
        claim = await self.applier.patch_claim(claim, patch)
        ctx.metrics.claim_created(claim)
        return claim

    async def _check_predecessor_instance(self, claim: Claim) -> None:
        ctx = self.ctx
        name = ctx.store.instance_of(claim)
        if shared.shared_cloud(ctx, name) is not None:
            return  # a shared instance is no one claim's: its Node's ownerReference says whose it is
        instance = await read_instance(ctx, name)
        if instance is None:
            return  # garbage collection deletes a launched claim whose instance vanished
        verdict = ctx.ownership.instance(instance, claim, name)
        if verdict == InstanceOwnership.ADOPTABLE and isinstance(ctx.cloud, SupportsAdoption):
            await self.launcher.adopt(claim, instance)
        elif verdict in (InstanceOwnership.FOREIGN, InstanceOwnership.ADOPTABLE):
            await ctx.publish(claim, (foreign_instance(name, FOREIGN_INSTANCE),))

    async def _live(self, claim: Claim) -> Outcome:
        ctx = self.ctx
        now = ctx.clock()
        instance_name = ctx.store.instance_of(claim)
        instance_nodes = ctx.store.nodes_of_instance(instance_name)
        if shared.shared_cloud(ctx, instance_name) is not None:
            node = shared.node_of(ctx, instance_name, claim, instance_nodes)
        else:
            node = registration.find_node(instance_nodes, claim)
        steps: list[StepResult] = []

        if not claim.status.is_true(ConditionType.LAUNCHED):
            step = await self.launcher.launch(claim, instance_name, node_joined=node is not None, node=node)
            steps.append(step)
            if not step.done:
                return await self.applier.apply(claim, steps, now)

        if node is None:
            steps.append(registration.not_registered(claim))
            timeout = liveness.registration_timeout(with_steps(claim, steps, now), now, ctx.settings)
            if timeout is not None:
                steps.append(timeout)
            return await self.applier.apply(claim, steps, now)

        node_name = str((node.get("metadata") or {}).get("name", ""))
        if registration.deleting(node):
            # The Node was deleted by hand: its claim goes too (termination then cleans up the instance).
            event = Event(EventType.NORMAL, "NodeDeleted", f"node {node_name} was deleted; deleting claim")
            steps.append(StepResult(events=(event,), actions=(DeleteClaim(),)))
            return await self.applier.apply(claim, steps, now)

        owned = ctx.store.nodes_owned_by(claim.uid)
        steps.append(StepResult(actions=registration.replaced_nodes(owned, claim, node_name)))
        registered = registration.registered(claim, node, ctx.settings.controller_name)
        steps.append(registered)
        # Initialization happens once; a node that later goes NotReady is liveness' business.
        if not claim.status.is_true(ConditionType.INITIALIZED):
            # Judged with what this reconcile's launch learned (the capacity, GPUs included).
            steps.append(initialization.check(with_steps(claim, steps, now), _after(node, registered)))
        repair = liveness.not_ready_repair(node, now, ctx.settings, self._brake)
        if repair is not None:
            steps.append(repair)
        drifted = drift.check(claim, nodepool_of(ctx, claim), self.launcher.node_class_of(claim))
        if drifted is not None:
            steps.append(drifted)
        return await self.applier.apply(claim, steps, now)

    def _brake(self) -> limits.RepairBrake:
        """The repair brake over the nodes of claims we manage (computed only when a repair is due)."""
        ctx = self.ctx
        ours = [c for c in ctx.store.claims() if ctx.ownership.claim_is_ours(c) and not c.deleting]
        nodes = [n for c in ours for n in ctx.store.nodes_owned_by(c.uid) if not registration.deleting(n)]
        return limits.repair_brake(nodes)


def _after(node: Node, step: StepResult) -> Node:
    """The Node as it will be once the step's patches are applied (initialization must judge the
    Node with the startup taints registration is about to add)."""
    for action in step.actions:
        if isinstance(action, PatchNode):
            node = merge(node, action.patch)
    return node
