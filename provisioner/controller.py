"""Wiring: the store, the work queue and the reconcilers, fed by watch events.

Watch events (delivered by kopf, see ``operator.py``) update the store and put the affected keys
on the work queue: a claim key for the claim itself and for the claims whose Node changed, a Node
key for a deleting Node whose claim may be gone. A relist every ``RESYNC_SECONDS`` corrects what
a watch missed. The queue runs each key on one worker at a time and backs off per key on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.claims.dialects import DIALECTS, Dialect, key_of
from provisioner.claims.model import INSTANCE_NAME_ANNOTATION, Claim, ClaimKey, ConditionType, Status
from provisioner.cloud.errors import CloudError, Throttled
from provisioner.cloud.provider import CloudProvider, SupportsQuota, SupportsSharedInstances
from provisioner.events import EventRecorder
from provisioner.fencing import WriteRefused
from provisioner.kube import NODES, ApiError, ConflictError, NotFoundError, Resource
from provisioner.kubeapi import KubeApi
from provisioner.lifecycle import limits
from provisioner.lifecycle.request import capacity_type, instance_type_candidates
from provisioner.lifecycle.result import Event, EventType
from provisioner.logs import fields as log_fields
from provisioner.metrics import Metrics
from provisioner.nodepools.model import KAITO_NODE_CLASSES, NODEPOOLS, NodePool
from provisioner.ownership import Ownership, owner_uids
from provisioner.reconcile import shared
from provisioner.reconcile.apply import Applier
from provisioner.reconcile.claim import ClaimReconciler
from provisioner.reconcile.context import Context, utcnow
from provisioner.reconcile.launcher import Launcher
from provisioner.reconcile.nodeclass import NodeClassReconciler
from provisioner.reconcile.nodepool import NodePoolReconciler, nodepool_of
from provisioner.settings import Settings
from provisioner.store import Store
from provisioner.termination.claim import ClaimTermination
from provisioner.termination.drainer import Drainer
from provisioner.termination.node import NodeTermination
from provisioner.workqueue import DONE, Outcome, WorkQueue

logger = logging.getLogger(__name__)

Body = Mapping[str, Any]


@dataclass(frozen=True, order=True)
class NodeKey:
    name: str

    def __str__(self) -> str:
        return f"node/{self.name}"


@dataclass(frozen=True, order=True)
class NodePoolKey:
    name: str

    def __str__(self) -> str:
        return f"nodepool/{self.name}"


@dataclass(frozen=True, order=True)
class NodeClassKey:
    name: str

    def __str__(self) -> str:
        return f"kaitonodeclass/{self.name}"


Key = ClaimKey | NodeKey | NodePoolKey | NodeClassKey

#: Launched reasons of claims waiting on quota (re-checked against the cloud's quota reading).
_QUOTA_REASON = "InsufficientCapacity:QuotaExceeded"
#: Launched=False reasons that mean "not launching until something changes" (not merely pending).
_FAILED_LAUNCH = (
    "InsufficientCapacity",
    "InvalidSpec",
    "NoInstanceType",
    "InstanceTypeNotAllowed",
    "InvalidStorage",
    "LaunchTimeout",
)


def claim_state(claim: Claim) -> str:
    """One word for where a claim is in its lifecycle (for the claims gauge)."""
    st = claim.status
    if claim.deleting:
        return "deleting"
    if st.is_true(ConditionType.READY):
        return "ready"
    launched = st.condition(ConditionType.LAUNCHED)
    if launched is None or launched.status != Status.TRUE:
        failed = launched is not None and launched.reason.startswith(_FAILED_LAUNCH)
        return "launch_failed" if failed else "launching"
    if not st.is_true(ConditionType.REGISTERED):
        return "registering"
    return "initializing"


class Controller:
    def __init__(
        self,
        kube: KubeApi,
        cloud: CloudProvider,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        events: EventRecorder | None = None,
        cloud_name: str = "",
        clock: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.cloud = cloud
        self.ownership = Ownership(settings)
        self.store = Store(self._instance_of_claim, cloud.instance_of_node)
        self.ctx = ctx = Context(
            kube=kube,
            cloud=cloud,
            settings=settings,
            store=self.store,
            ownership=self.ownership,
            events=events or EventRecorder(kube),
            metrics=metrics or Metrics(),
            clock=clock,
            cloud_name=cloud_name or settings.cloud,
        )
        self.metrics = ctx.metrics
        self.events = ctx.events
        self.applier = Applier(ctx, lambda claim: self.queue.add(key_of(claim)))
        self.launcher = Launcher(ctx)
        drainer = Drainer(ctx)
        self.claim_termination = ClaimTermination(ctx, self.applier, drainer, self._terminated)
        self.node_termination = NodeTermination(ctx, self.applier, drainer)
        self.claims = ClaimReconciler(ctx, self.applier, self.launcher, self.claim_termination)
        self.nodepools = NodePoolReconciler(ctx, self.applier)
        self.node_classes = NodeClassReconciler(ctx, self._node_class_changed)
        self.queue: WorkQueue[Key] = WorkQueue(
            self.reconcile,
            workers=settings.workers,
            retry_max=settings.retry_max,
            retry_rate=settings.retry_rate,
        )
        self._loops: list[asyncio.Task[None]] = []
        self._traced: set[Key] = set()
        #: Free Nodes of shared instances beyond their waiting claims, and since when.
        self._spare_since: dict[str, float] = {}

    def _instance_of_claim(self, claim: Claim) -> str:
        return claim.annotations.get(INSTANCE_NAME_ANNOTATION) or self.cloud.instance_name(claim.name)

    # ------------------------------------------------------------------ lifecycle of the controller

    def start(self) -> None:
        self.queue.start()
        self._loops.append(
            asyncio.create_task(self._every(self.settings.resync_interval, self.resync), name="resync")
        )
        if isinstance(self.cloud, SupportsQuota):
            interval = self.settings.capacity_recheck_interval
            self._loops.append(
                asyncio.create_task(self._every(interval, self.recheck_capacity), name="quota")
            )

        if isinstance(self.cloud, SupportsSharedInstances):
            self._loops.append(
                asyncio.create_task(
                    self._every(self.settings.gc_interval, self.collect_spare_nodes), name="spare-nodes"
                )
            )

    async def collect_spare_nodes(self) -> None:
        """Remove the machines of shared instances' free Nodes that no waiting claim will take."""
        cloud = self.cloud
        assert isinstance(cloud, SupportsSharedInstances)
        now = time.monotonic()
        instances = {self.store.instance_of(c) for c in self.managed_claims()}
        for instance in sorted(i for i in instances if cloud.shares_instance(i)):
            spare = shared.surplus_nodes(
                self.ctx, instance, self._spare_since, now, self.settings.gc_orphan_grace
            )
            leaving = cloud.leaving(instance)
            spare = [n for n in spare if n not in leaving]
            if spare:
                logger.info(
                    "removing %d spare nodes of shared instance %s: %s",
                    len(spare),
                    instance,
                    ", ".join(spare),
                )
                await self.ctx.cloud_call(
                    "remove_nodes", functools.partial(cloud.remove_nodes, instance, spare)
                )
        self._spare_since = {
            n: t
            for n, t in self._spare_since.items()
            if (node := self.store.node(n)) is not None and shared.is_free(node)
        }

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
        await self.queue.stop()

    async def _every(self, interval: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except (ApiError, CloudError) as e:
                logger.warning("%s failed: %s; trying again in %.0fs", job.__name__, e, interval)
            except Exception:
                logger.exception("%s failed; trying again in %.0fs", job.__name__, interval)

    # ------------------------------------------------------------------ watch feeds

    def on_claim_event(self, dialect: Dialect, event_type: str | None, body: Body) -> None:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        key = dialect.key(name)
        if event_type == "DELETED":
            self._forget_claim(key, deleted=True)
            return
        claim = self.store.put_claim(dialect, body)
        if claim is not None:
            self.queue.add(key)
            self._route_to_nodepool(claim)
        # else: an echo of our own write, or older than what we have: nothing new to act on

    def on_nodepool_event(self, event_type: str | None, body: Body) -> None:
        name = (body.get("metadata") or {}).get("name")
        if not name or not self.settings.nodepools:
            return
        if event_type == "DELETED":
            self.store.remove_nodepool(name)
            return
        nodepool = self.store.put_nodepool(body)
        if nodepool is not None:
            self._nodepool_changed(nodepool)

    def _nodepool_changed(self, nodepool: NodePool) -> None:
        if not self.ownership.serves_node_class(nodepool.node_class_ref):
            return
        self.queue.add(NodePoolKey(nodepool.name))
        for claim in self.nodepools.claims_of(nodepool):  # their drift may have changed
            self.queue.add(key_of(claim))

    def on_node_class_event(self, event_type: str | None, body: Body) -> None:
        name = (body.get("metadata") or {}).get("name")
        if not name or not self.settings.nodepools:
            return
        if event_type == "DELETED":
            self.store.remove_node_class(name)
        elif self.store.put_node_class(body) is None:
            return
        else:
            self.queue.add(NodeClassKey(name))
        self._node_class_changed(name)

    def _node_class_changed(self, name: str) -> None:
        for nodepool in self.store.nodepools():
            ref = nodepool.node_class_ref
            if ref is not None and ref.name == name:
                self._nodepool_changed(nodepool)

    def _route_to_nodepool(self, claim: Claim) -> None:
        nodepool = nodepool_of(self.ctx, claim)
        if nodepool is not None:
            self.queue.add(NodePoolKey(nodepool.name))

    def on_node_event(self, event_type: str | None, body: Body) -> None:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        if event_type == "DELETED":
            old = self.store.remove_node(name)
            if old is not None:
                self._route_node(old)
            return
        if self.store.put_node(body):
            self._route_node(body)

    def _route_node(self, node: Body) -> None:
        keys: list[Key] = []
        for uid in owner_uids(node):
            claim = self.store.claim_by_uid(uid)
            if claim is not None:
                keys.append(key_of(claim))
        instance = self.store.instance_of_node(node)
        if instance:
            if shared.shared_cloud(self.ctx, instance) is not None:
                # A free Node concerns the one waiting claim that is to take it; a taken one, its owner.
                taker = shared.taker(self.ctx, instance, node) if shared.is_free(node) else None
                claims = [taker] if taker is not None else []
            else:
                claims = self.store.claims_of_instance(instance)
            keys += [key_of(c) for c in claims]
        if self.node_termination.applies_to(node):
            keys.append(NodeKey(str(node["metadata"]["name"])))
        for key in dict.fromkeys(keys):
            self.queue.add(key)

    def _forget_claim(self, key: ClaimKey, *, deleted: bool = False) -> None:
        claim = self.store.remove_claim(key, deleted=deleted)
        if claim is not None:
            self._gone(claim)

    def _gone(self, claim: Claim) -> None:
        """A claim no longer exists (deleted, or missing from a relist)."""
        self.queue.forget(key_of(claim))
        self.launcher.forget(claim.uid)
        self.events.forget(claim.uid)
        self._route_to_nodepool(claim)  # a replica may be missing now
        # Its Nodes may now be ours to terminate on their own; a slot may have freed.
        for node in self.store.nodes_owned_by(claim.uid):
            self._route_node(node)
        self.wake_slot_waiters()

    def _terminated(self, claim: Claim) -> None:
        self.launcher.forget(claim.uid)
        self.wake_slot_waiters()

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, key: Key) -> Outcome:
        """One reconcile of ``key``; everything it logs carries the claim (or node) and its pool."""
        if isinstance(key, NodeKey):
            context = {"node": key.name}
        elif isinstance(key, NodePoolKey | NodeClassKey):
            context = {str(key).split("/", 1)[0]: key.name}
        else:
            claim = self.store.claim(key)
            context = {"claim": key.name, "kind": key.kind}
            if claim is not None:
                context["pool"] = self.store.instance_of(claim)
        with log_fields(**context):
            return await self._reconcile(key)

    async def _reconcile(self, key: Key) -> Outcome:
        kind = key.kind.lower() if isinstance(key, ClaimKey) else str(key).split("/", 1)[0]
        result = "error"
        try:
            if isinstance(key, NodeKey):
                outcome = await self.node_termination.reconcile(key.name)
            elif isinstance(key, NodePoolKey):
                outcome = await self.nodepools.reconcile(key.name)
            elif isinstance(key, NodeClassKey):
                outcome = await self.node_classes.reconcile(key.name)
            else:
                claim = self.store.claim(key)
                if claim is None or not self.ownership.claim_is_ours(claim):
                    result = "skipped"
                    return DONE
                outcome = await self.claims.reconcile(claim)
                # Our own writes to the claim come back from the watch as echoes and wake nothing:
                # its NodePool looks again now (a replacement may have become Ready).
                after = self.store.claim(key)
                if after is not None:
                    self._route_to_nodepool(after)
            result = "failed" if outcome.failed else "done" if outcome.requeue_after is None else "requeue"
            self._traced.discard(key)
            return outcome
        except ConflictError:
            result = "conflict"
            return Outcome(failed=True)  # someone wrote first; the watch brings the new version
        except NotFoundError:
            result = "gone"
            return DONE
        except WriteRefused as e:
            # Fenced: nothing was sent, and an event about it would be refused too.
            result = "refused"
            logger.info("reconciling %s stopped: %s", key, e.message)
            return Outcome(failed=True)
        except (ApiError, CloudError) as e:
            await self._report(key, f"{type(e).__name__}: {e}", traceback=False)
            return Outcome(failed=True, retry_after=e.retry_after if isinstance(e, Throttled) else None)
        except Exception as e:
            await self._report(key, f"{type(e).__name__}: {e}", traceback=key not in self._traced)
            self._traced.add(key)
            return Outcome(failed=True)
        finally:
            self.metrics.reconciles.labels(kind, result).inc()
            if result in ("failed", "error", "conflict"):
                self.metrics.queue_retries.inc()
            self.metrics.queue_depth.set(len(self.queue))

    async def _report(self, key: Key, message: str, *, traceback: bool) -> None:
        """One log line per failure (a traceback only the first time in a row), one event."""
        retry = self.queue.backoff.failures(key)
        logger.warning(
            "reconciling %s failed (%d in a row): %s; retrying with backoff",
            key,
            retry + 1,
            message,
            exc_info=traceback,
        )
        if isinstance(key, ClaimKey):
            claim = self.store.claim(key)
            if claim is not None:
                await self.events.publish(claim, Event(EventType.WARNING, "ReconcileError", message))

    # ------------------------------------------------------------------ waiters and resync

    def managed_claims(self) -> list[Claim]:
        return [c for c in self.store.claims() if self.ownership.claim_is_ours(c)]

    def wake_slot_waiters(self) -> None:
        """A node slot may have freed: claims waiting under MAX_NODES / MAX_GPUS look again now."""
        for claim in self.managed_claims():
            if not claim.deleting and limits.waiting_for_slot(claim):
                self.queue.add(key_of(claim))

    async def recheck_capacity(self) -> None:
        """Claims waiting on quota launch as soon as the cloud's quota reading has room (one shared,
        cached read), not only when their capacity backoff ends."""
        cloud = self.cloud
        if not isinstance(cloud, SupportsQuota):
            return
        answers: dict[tuple[tuple[str, ...], str], bool] = {}
        for claim in self.managed_claims():
            launched = claim.status.condition(ConditionType.LAUNCHED)
            if claim.deleting or launched is None or not launched.reason.startswith(_QUOTA_REASON):
                continue
            types, ctype = instance_type_candidates(claim), capacity_type(claim)
            if (types, ctype.value) not in answers:
                with Metrics.controller(f"{claim.dialect}.lifecycle"):
                    answers[(types, ctype.value)] = await self.ctx.cloud_call(
                        "quota", functools.partial(cloud.quota_allows, types, ctype)
                    )
            if answers[(types, ctype.value)]:
                self.queue.add(key_of(claim))

    async def resync(self) -> None:
        """List claims and Nodes again: store what changed, forget what is gone, and reconcile
        what either touched, as the missed watch events would have."""
        kube = self.ctx.kube
        for dialect in DIALECTS.values():
            try:
                bodies, version = await kube.list_with_version(dialect.resource)
            except NotFoundError:
                continue  # the CRD is not installed
            changed, gone = self.store.prune_claims(dialect, bodies, version)
            for claim in gone:
                self._gone(claim)
            for claim in changed:
                self.queue.add(key_of(claim))
        nodes, version = await kube.list_with_version(NODES)
        changed_nodes, gone_nodes = self.store.prune_nodes(nodes, version)
        for node in (*changed_nodes, *gone_nodes):
            self._route_node(node)
        if self.settings.nodepools:
            await self._resync_nodepools()

    async def _relist(self, resource: Resource) -> tuple[list[dict[str, Any]], str] | None:
        try:
            return await self.ctx.kube.list_with_version(resource)
        except NotFoundError:
            return None  # the CRD is not installed

    async def _resync_nodepools(self) -> None:
        listed = await self._relist(KAITO_NODE_CLASSES)
        if listed is not None:
            changed_classes, gone_classes = self.store.prune_node_classes(*listed)
            for node_class in changed_classes:
                self.queue.add(NodeClassKey(node_class.name))
            for node_class in (*changed_classes, *gone_classes):
                self._node_class_changed(node_class.name)
        listed = await self._relist(NODEPOOLS)
        if listed is not None:
            changed_pools, _ = self.store.prune_nodepools(*listed)
            for nodepool in changed_pools:
                self._nodepool_changed(nodepool)

    async def list_claims(self) -> list[Claim]:
        """Every claim of every dialect, read from the API server (managed or not)."""
        claims: list[Claim] = []
        for dialect in DIALECTS.values():
            try:
                bodies = await self.ctx.kube.list(dialect.resource)
            except NotFoundError:
                continue
            claims += [dialect.parse(b) for b in bodies]
        return claims

    def observe_states(self) -> None:
        """Set the per-state claim gauge from the store (called periodically)."""
        states = ("launching", "launch_failed", "registering", "initializing", "ready", "deleting")
        counts = {(d, s): 0 for d in DIALECTS for s in states}
        for claim in self.managed_claims():
            counts[(claim.dialect, claim_state(claim))] += 1
        for (kind, state), n in counts.items():
            self.metrics.claim_states.labels(kind, state).set(n)

    # ------------------------------------------------------------------ for garbage collection

    def instance_of(self, claim: Claim) -> str:
        return self._instance_of_claim(claim)

    def is_ours(self, claim: Claim) -> bool:
        return self.ownership.claim_is_ours(claim)

    async def delete_claim(self, claim: Claim, why: Event) -> None:
        await self.events.publish(claim, why)
        await self.applier.delete_claim(claim, why.reason)
