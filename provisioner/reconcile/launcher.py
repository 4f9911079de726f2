"""The cloud side of launch: limits, the create call, adoption of a predecessor's instance.

What the outcome means for the claim is ``lifecycle.launch``'s decision; this module makes the
calls and keeps the little state a launch needs between reconciles (attempt counts, which claims
have a create in flight, since when a create has been running).
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field, replace

from provisioner.claims.dialects import dialect_of
from provisioner.claims.model import INSTANCE_NAME_ANNOTATION, Claim
from provisioner.cloud.errors import CloudError, Deferred, InstanceConflict
from provisioner.cloud.provider import SupportsAdoption
from provisioner.cloud.types import Instance, InstanceRequest, InstanceState
from provisioner.lifecycle import launch, limits
from provisioner.lifecycle.request import InvalidClaim, instance_type_candidates, prepare
from provisioner.lifecycle.result import Action, ClaimMetadata, Event, EventType, StepResult
from provisioner.nodepools.model import NodeClass
from provisioner.ownership import InstanceOwnership
from provisioner.reconcile.context import Context
from provisioner.reconcile.degraded import DegradationReporter
from provisioner.reconcile.shared import Node, demand, shared_cloud

logger = logging.getLogger(__name__)


@dataclass
class _Memory:
    #: Failed launch attempts in a row, per claim UID (the capacity backoff grows with them).
    attempts: dict[str, int] = field(default_factory=dict)
    #: Claims that passed the node/GPU limits and whose status may not show a create yet.
    in_flight: set[str] = field(default_factory=set)
    #: When this process first saw a claim's create in flight (for the launch time limit).
    creating_since: dict[str, datetime.datetime] = field(default_factory=dict)
    #: Claims assigned to a shared instance (by UID), until the claims' own records say so.
    shared: dict[str, str] = field(default_factory=dict)
    #: What the cloud last said of a claim's instance while it was being created.
    instances: dict[str, Instance] = field(default_factory=dict)


class Launcher:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.memory = _Memory()
        self.degraded = DegradationReporter(ctx)

    def forget(self, uid: str) -> None:
        self.memory.attempts.pop(uid, None)
        self.memory.in_flight.discard(uid)
        self.memory.creating_since.pop(uid, None)
        self.memory.shared.pop(uid, None)
        self.memory.instances.pop(uid, None)

    def node_class_of(self, claim: Claim) -> NodeClass | None:
        """The claim's node class, if it names one of ours that exists."""
        ref = claim.node_class_ref
        if ref is None or not self.ctx.ownership.serves_node_class(ref):
            return None
        return self.ctx.store.node_class(ref.name)

    def holds_instance(self, claim: Claim) -> bool:
        return claim.uid in self.memory.in_flight or limits.holds_instance(claim)

    def _check_name_is_free(self, claim: Claim, instance_name: str) -> None:
        """Two live claims of ours that map to one instance name (a Machine and a NodeClaim of one
        name): the one created first has it, the other is told at once instead of waiting forever."""
        ctx = self.ctx

        def age(c: Claim) -> tuple[datetime.datetime, str, str]:
            return (c.creation_timestamp or ctx.clock(), c.dialect, c.uid)

        rivals = [
            c
            for c in ctx.store.claims_of_instance(instance_name)
            if c.uid != claim.uid
            and not c.deleting
            and ctx.ownership.claim_is_ours(c)
            and age(c) < age(claim)
        ]
        if rivals:
            rival = rivals[0]
            raise InvalidClaim(
                "InstanceNameInUse",
                f"{dialect_of(rival).kind} {rival.name} already uses instance {instance_name}; "
                "rename this claim (a Machine and a NodeClaim of the same name cannot both be provisioned)",
            )

    async def launch(
        self, claim: Claim, instance_name: str, *, node_joined: bool, node: Node | None = None
    ) -> StepResult:
        """``node``: on a shared instance, the Node the claim is to take (None: none free yet)."""
        ctx, memory = self.ctx, self.memory
        try:
            if shared_cloud(ctx, instance_name) is None:  # a shared instance is meant for many
                self._check_name_is_free(claim, instance_name)
            prepared = prepare(claim, instance_name, ctx.settings, self.node_class_of(claim))
        except InvalidClaim as e:
            ctx.metrics.launch_failures.labels(claim.dialect, "InvalidClaim", e.reason).inc()
            return launch.invalid(claim, e)
        warnings = [Event(EventType.WARNING, "InvalidStorageRequest", w) for w in prepared.warnings]
        cloud_warnings = getattr(ctx.cloud, "warnings", None)
        if callable(cloud_warnings):
            warnings += [
                Event(EventType.WARNING, "LaunchWarning", w) for w in cloud_warnings(prepared.request)
            ]
        await ctx.publish(claim, warnings)
        if not self.holds_instance(claim):
            waiting = await self._reserve(claim)
            if waiting is not None:
                return waiting
        attempt = memory.attempts.get(claim.uid, 0) + 1
        try:
            instance = await self._launch_instance(claim, prepared.request, instance_name, node)
        except InstanceConflict as e:
            return await self._conflict(claim, instance_name, e)
        except Deferred as e:
            return launch.deferred(e)
        except CloudError as e:
            memory.attempts[claim.uid] = attempt
            ctx.metrics.launch_failures.labels(claim.dialect, type(e).__name__, e.code or "").inc()
            memory.in_flight.discard(claim.uid)
            return launch.cloud_error(claim, e, attempt, ctx.settings)
        return self._observed(claim, instance, instance_name, attempt, node_joined=node_joined)

    async def _launch_instance(
        self, claim: Claim, request: InstanceRequest, instance_name: str, node: Node | None
    ) -> Instance:
        """The cloud create; on a shared instance, the assignment (a create, once) and then the
        instance asked for the nodes its claims need. A claim on a shared instance is as far as its
        own Node: creating until one is free for it, running once it is."""
        cloud = shared_cloud(self.ctx, instance_name)
        seen = self.memory.instances.get(claim.uid)
        if cloud is None and node is not None and seen is not None and seen.name == instance_name:
            # Its Node joined: the instance runs (AKS ends the create only after the node is up),
            # and the create's answer already said what it is. No read needed.
            return replace(seen, state=InstanceState.RUNNING)
        if cloud is None:
            created = await self._create(claim, request)
            if created.state == InstanceState.CREATING:
                self.memory.instances[claim.uid] = created
            cloud = shared_cloud(self.ctx, created.name)
            if cloud is None:
                return created
            instance_name = created.name
        shared, name, assigned = cloud, instance_name, self.memory.shared
        assigned[claim.uid] = name
        count = demand(self.ctx, shared, name, claim, [uid for uid, i in assigned.items() if i == name])
        instance = await self.ctx.cloud_call("want_nodes", lambda: shared.want_nodes(name, count))
        if node is None:
            return replace(instance, state=InstanceState.CREATING, provider_id="")
        provider_id = str((node.get("spec") or {}).get("providerID") or "")
        return replace(instance, state=InstanceState.RUNNING, provider_id=provider_id)

    async def _create(self, claim: Claim, request: InstanceRequest) -> Instance:
        """The cloud create; a degraded mode it ran into is announced on this claim."""
        try:
            instance: Instance = await self.ctx.cloud_call("create", lambda: self.ctx.cloud.create(request))
            return instance
        finally:
            await self.degraded.announce(claim)

    def _observed(
        self, claim: Claim, instance: Instance, instance_name: str, attempt: int, *, node_joined: bool
    ) -> StepResult:
        ctx, memory = self.ctx, self.memory
        now = ctx.clock()
        if instance.state == InstanceState.CREATING:
            memory.creating_since.setdefault(claim.uid, now)
        step = launch.instance_observed(
            claim,
            instance,
            attempt,
            ctx.settings,
            now,
            node_joined=node_joined,
            creating_since=memory.creating_since.get(claim.uid),
        )
        if (
            instance.name != instance_name
            and claim.annotations.get(INSTANCE_NAME_ANNOTATION) != instance.name
        ):
            step = _with_action(step, ClaimMetadata(annotations={INSTANCE_NAME_ANNOTATION: instance.name}))
        if instance.state == InstanceState.FAILED:
            memory.attempts[claim.uid] = attempt
            memory.in_flight.discard(claim.uid)
            memory.creating_since.pop(claim.uid, None)
            memory.instances.pop(claim.uid, None)
            failure = instance.failure
            ctx.metrics.launch_failures.labels(
                claim.dialect,
                type(failure).__name__ if failure else "Failed",
                (failure.code if failure else "") or "",
            ).inc()
        elif step.done:
            memory.attempts.pop(claim.uid, None)
            memory.creating_since.pop(claim.uid, None)
            memory.instances.pop(claim.uid, None)
            ctx.metrics.claim_phase(claim, "launched")
        return step

    async def _conflict(self, claim: Claim, instance_name: str, err: InstanceConflict) -> StepResult:
        """The name is taken by an instance not tagged for any claim: adopt it if a predecessor made
        it for this claim, else say why the claim cannot launch."""
        ctx = self.ctx
        found = err.instance
        if ctx.ownership.instance(
            found, claim, instance_name
        ) != InstanceOwnership.ADOPTABLE or not isinstance(ctx.cloud, SupportsAdoption):
            return launch.invalid(claim, err)
        adopted = await self.adopt(claim, found)
        return self._observed(
            claim, adopted, instance_name, self.memory.attempts.get(claim.uid, 0) + 1, node_joined=False
        )

    async def adopt(self, claim: Claim, instance: Instance) -> Instance:
        """Tag a predecessor's instance as ours (only if unchanged since read) and say so."""
        ctx = self.ctx
        assert isinstance(ctx.cloud, SupportsAdoption)
        cloud = ctx.cloud
        adopted: Instance = await ctx.cloud_call(
            "adopt", lambda: cloud.adopt(instance, claim.name, claim.uid)
        )
        await ctx.publish(
            claim,
            (
                Event(
                    EventType.NORMAL,
                    "Adopted",
                    f"took over instance {instance.name}, made for this claim by an earlier provisioner",
                ),
            ),
        )
        return adopted

    async def _reserve(self, claim: Claim) -> StepResult | None:
        """Check MAX_NODES / MAX_GPUS and, if one more node fits, count this claim as holding one —
        with no await between the check and the reservation, so concurrent launches cannot both
        pass on the same count."""
        ctx = self.ctx
        s = ctx.settings
        if not s.max_nodes and not s.max_gpus:
            return None
        gpus_by_type: dict[str, int] = {}
        if s.max_gpus:
            types = await ctx.cloud_call("instance_types", ctx.cloud.instance_types)
            gpus_by_type = {t.name.lower(): t.gpus for t in types}
        holders = [
            c
            for c in ctx.store.claims()
            if c.uid != claim.uid and ctx.ownership.claim_is_ours(c) and self.holds_instance(c)
        ]
        candidates = instance_type_candidates(claim)
        wanted = gpus_by_type.get(candidates[0].lower(), 0) if candidates else 0
        waiting = limits.check(holders, wanted, gpus_by_type, s)
        if waiting is None:
            self.memory.in_flight.add(claim.uid)
        return waiting


def _with_action(step: StepResult, action: Action) -> StepResult:
    return replace(step, actions=(*step.actions, action))
