"""The claim controller: reads the world, asks the lifecycle what to do, does it.

Watch events (delivered by kopf, see ``operator.py``) keep an in-memory copy of every claim and
Node and put the affected claim keys on a work queue. A reconcile never waits on the cloud: it
starts or reads an operation, writes the next status, and asks to be called again later. Each key
is reconciled by one worker at a time.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from provisioner.claims.conditions import roll_up_ready, set_condition
from provisioner.claims.dialects import DIALECTS, Dialect, dialect_of
from provisioner.claims.model import (
    INSTANCE_NAME_ANNOTATION,
    MANAGED_BY_ANNOTATION,
    REGISTERED_LABEL,
    TERMINATION_FINALIZER,
    Claim,
    Condition,
    ConditionType,
    Status,
)
from provisioner.claims.selection import is_managed
from provisioner.cloud.errors import CloudError, NotFound
from provisioner.cloud.provider import CloudProvider
from provisioner.cloud.types import Instance, InstanceState
from provisioner.events import EventRecorder
from provisioner.kube import (
    NODES,
    PODS,
    ApiError,
    ConflictError,
    KubeClient,
    NotFoundError,
    TooManyRequestsError,
)
from provisioner.lifecycle import initialization, launch, limits, liveness, registration
from provisioner.lifecycle.request import InvalidClaim, prepare
from provisioner.lifecycle.result import Event, EventType, StepResult
from provisioner.metrics import Metrics
from provisioner.settings import Settings
from provisioner.termination import drain
from provisioner.workqueue import WorkQueue

logger = logging.getLogger(__name__)

Body = dict[str, Any]
Node = Mapping[str, Any]
Key = tuple[str, str]  # (dialect name, claim name)

#: Taint put on a node being terminated so nothing new schedules there (Karpenter v1's key).
DISRUPTED_TAINT = {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}


def claim_state(claim: Claim) -> str:
    """One word for where a claim is in its lifecycle (for the claims gauge)."""
    st = claim.status
    if claim.deleting:
        return "deleting"
    if st.is_true(ConditionType.READY):
        return "ready"
    launched = st.condition(ConditionType.LAUNCHED)
    if launched is None or launched.status != Status.TRUE:
        return (
            "launch_failed"
            if launched is not None and launched.reason.startswith(_FAILED_LAUNCH)
            else "launching"
        )
    if not st.is_true(ConditionType.REGISTERED):
        return "registering"
    return "initializing"


#: Launched=False reasons that mean "not launching until something changes" (not merely pending).
_FAILED_LAUNCH = (
    "InsufficientCapacity",
    "InvalidSpec",
    "NoInstanceType",
    "InstanceTypeNotAllowed",
    "InvalidStorage",
)


def _resource_version(body: Mapping[str, Any] | None) -> str | None:
    return ((body or {}).get("metadata") or {}).get("resourceVersion")


def _older(body: Mapping[str, Any], than: Mapping[str, Any] | None) -> bool:
    """Whether ``body`` is an older version of the object than ``than`` (a patch answer that arrives
    after the watch already delivered a newer state). resourceVersions are opaque; etcd's are
    integers, and anything else is treated as not older."""
    try:
        return int(_resource_version(body) or "") < int(_resource_version(than) or "")
    except ValueError:
        return False


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Controller:
    def __init__(
        self,
        kube: KubeClient,
        cloud: CloudProvider,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        events: EventRecorder | None = None,
        cloud_name: str = "",
        clock: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self.kube = kube
        self.cloud = cloud
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.events = events or EventRecorder(kube)
        self.cloud_name = cloud_name or settings.cloud
        self.clock = clock
        self.claims: dict[Key, Body] = {}
        self.nodes: dict[str, Body] = {}
        self.instance_owner: dict[str, Key] = {}
        self.attempts: dict[str, int] = {}
        #: Claims whose create was sent by this process (they hold an instance before their status says so).
        self.launching: set[str] = set()
        self.queue: WorkQueue[Key] = WorkQueue(self.reconcile, workers=settings.workers)

    # ------------------------------------------------------------------ watch feeds

    def start(self) -> None:
        self.queue.start()

    async def stop(self) -> None:
        await self.queue.stop()

    def on_claim_event(self, dialect: Dialect, event_type: str | None, body: Body) -> None:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        key = (dialect.name, name)
        if event_type == "DELETED":
            self.claims.pop(key, None)
            self.queue.forget(key)
            uid = (body.get("metadata") or {}).get("uid", "")
            self.attempts.pop(uid, None)
            self.launching.discard(uid)
            self.events.forget(uid)
            for instance, owner in list(self.instance_owner.items()):
                if owner == key:
                    del self.instance_owner[instance]
            return
        if _resource_version(self.claims.get(key)) == _resource_version(body):
            return  # the echo of our own write: we already acted on this version
        self.claims[key] = body
        self.queue.add(key)

    def on_node_event(self, event_type: str | None, body: Body) -> None:
        meta = body.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        if event_type == "DELETED":
            self.nodes.pop(name, None)
        elif _resource_version(self.nodes.get(name)) == _resource_version(body):
            return  # the echo of our own write
        else:
            self.nodes[name] = body
        for key in self._claims_for_node(body):
            self.queue.add(key)

    def _claims_for_node(self, node: Body) -> list[Key]:
        keys: list[Key] = []
        meta = node.get("metadata") or {}
        for owner in meta.get("ownerReferences") or ():
            for d in DIALECTS.values():
                if owner.get("kind") == d.kind and owner.get("apiVersion") == d.api_version:
                    keys.append((d.name, owner.get("name", "")))
        labels = meta.get("labels") or {}
        for label in registration.POOL_LABELS:
            key = self.instance_owner.get(labels.get(label, ""))
            if key is not None:
                keys.append(key)
        return list(dict.fromkeys(keys))

    # ------------------------------------------------------------------ helpers

    def instance_name_of(self, claim: Claim) -> str:
        return claim.annotations.get(INSTANCE_NAME_ANNOTATION) or self.cloud.instance_name(claim.name)

    async def _cloud(self, operation: str, call: Callable[[], Any]) -> Any:
        return await self.metrics.timed_cloud_call(self.cloud_name, operation, call)

    async def _publish(self, claim: Claim, events: tuple[Event, ...]) -> None:
        for e in events:
            await self.events.publish(claim, e)

    def _store(self, claim: Claim, body: Body) -> Claim:
        key = (claim.dialect, claim.name)
        if not _older(body, self.claims.get(key)):
            self.claims[key] = body
        return dialect_of(claim).parse(body)

    async def _patch_claim(self, claim: Claim, patch: Body, *, subresource: str | None = None) -> Claim:
        body = await self.kube.patch(dialect_of(claim).resource, claim.name, patch, subresource=subresource)
        return self._store(claim, body)

    async def delete_claim(self, claim: Claim) -> None:
        with contextlib.suppress(NotFoundError):
            await self.kube.delete(dialect_of(claim).resource, claim.name, preconditions_uid=claim.uid)

    async def _set_finalizers(self, claim: Claim, finalizers: list[str]) -> Claim:
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": claim.resource_version}}
        return await self._patch_claim(claim, patch)

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, key: Key) -> float | None:
        body = self.claims.get(key)
        if body is None:
            return None
        dialect = DIALECTS[key[0]]
        claim = dialect.parse(body)
        if not is_managed(claim, self.settings):
            return None
        result = "error"
        try:
            if claim.deleting:
                again = await self._terminate(claim)
            else:
                again = await self._reconcile_live(claim)
            result = "done" if again is None else "requeue"
            return again
        except ConflictError:
            result = "conflict"
            return 0.5  # someone else wrote first; the watch brings the new version
        except NotFoundError:
            result = "gone"
            return None  # deleted while we worked
        except ApiError as e:
            logger.warning("API error reconciling %s %s: %s", dialect.kind, claim.name, e)
            return 5.0
        except CloudError as e:
            logger.warning("cloud error reconciling %s %s: %s", dialect.kind, claim.name, e)
            return 10.0
        finally:
            self.metrics.reconciles.labels(dialect.name, result).inc()

    async def _reconcile_live(self, claim: Claim) -> float | None:
        if (
            TERMINATION_FINALIZER not in claim.finalizers
            or claim.annotations.get(MANAGED_BY_ANNOTATION) != self.settings.controller_name
        ):
            # Before any cloud call: no instance may exist without a finalizer to clean it up.
            finalizers = list(dict.fromkeys([*claim.finalizers, TERMINATION_FINALIZER]))
            patch = {
                "metadata": {
                    "finalizers": finalizers,
                    "annotations": {MANAGED_BY_ANNOTATION: self.settings.controller_name},
                    "resourceVersion": claim.resource_version,
                }
            }
            claim = await self._patch_claim(claim, patch)
            self.metrics.claim(claim.dialect, "created", self._nodepool(claim))
        instance_name = self.instance_name_of(claim)
        self.instance_owner[instance_name] = (claim.dialect, claim.name)
        now = self.clock()
        steps: list[StepResult] = []

        if not claim.status.is_true(ConditionType.LAUNCHED):
            step = await self._launch(claim, instance_name)
            steps.append(step)
            if step.delete_claim:
                await self._apply(claim, steps, now)
                await self.delete_claim(claim)
                return None
            if not step.done:
                return await self._apply(claim, steps, now)
            if step.claim_labels:
                missing = {k: v for k, v in step.claim_labels.items() if claim.labels.get(k) != v}
                if missing:
                    claim = await self._patch_claim(claim, {"metadata": {"labels": missing}})

        node = registration.find_node(self.nodes.values(), claim, instance_name)
        if node is None:
            steps.append(registration.not_registered(claim))
            steps.append(self._pending_initialized(claim))
            timeout = liveness.registration_timeout(self._with_steps(claim, steps, now), now, self.settings)
            if timeout is not None:
                steps.append(timeout)
                if timeout.delete_claim:
                    await self._apply(claim, steps, now)
                    await self.delete_claim(claim)
                    return None
            return await self._apply(claim, steps, now)

        if (node.get("metadata") or {}).get("deletionTimestamp"):
            # Node deleted by hand: its claim goes too (termination then cleans up the instance).
            await self._publish(
                claim,
                (
                    Event(
                        EventType.NORMAL,
                        "NodeDeleted",
                        f"node {node['metadata']['name']} was deleted; deleting claim",
                    ),
                ),
            )
            await self.delete_claim(claim)
            return None

        node = await self._sync_node(claim, node)
        for stale in registration.replaced_nodes(self.nodes.values(), claim, node["metadata"]["name"]):
            await self._remove_node_finalizer(stale["metadata"]["name"])
        newly_registered = not claim.status.is_true(ConditionType.REGISTERED)
        steps.append(registration.registered(claim, node))
        if newly_registered:
            self.metrics.nodes_created.labels(self._nodepool(claim)).inc()
        # Initialization happens once; a node that later goes NotReady is liveness' business.
        if not claim.status.is_true(ConditionType.INITIALIZED):
            init = initialization.check(claim, node)
            steps.append(init)
            if init.done:
                label_patch = initialization.initialized_label_patch(node)
                if label_patch:
                    await self._patch_node(node, label_patch)
        repair = liveness.not_ready_repair(node, now, self.settings)
        if repair is not None and repair.delete_claim:
            paused, unhealthy, total = limits.repair_paused(self._managed_nodes())
            if paused:
                message = (
                    f"{unhealthy} of {total} managed nodes are not Ready; repair paused so that an outage "
                    "does not delete every node"
                )
                repair = StepResult(
                    events=(Event(EventType.WARNING, "RepairPaused", message),), requeue_after=60.0
                )
        if repair is not None:
            steps.append(repair)
            if repair.delete_claim:
                await self._apply(claim, steps, now)
                await self.delete_claim(claim)
                return None
        return await self._apply(claim, steps, now)

    def _pending_initialized(self, claim: Claim) -> StepResult:
        return StepResult(
            conditions=(
                Condition(
                    ConditionType.INITIALIZED,
                    dialect_of(claim).pending_status,
                    "NodeNotRegistered",
                    "waiting for the node to register",
                ),
            ),
            done=False,
        )

    async def _launch(self, claim: Claim, instance_name: str) -> StepResult:
        try:
            prepared = prepare(claim, instance_name, self.settings)
        except InvalidClaim as e:
            self.metrics.claim_launch_failures.labels(claim.dialect, "InvalidClaim", e.reason).inc()
            return launch.invalid(claim, e)
        warnings = [Event(EventType.WARNING, "InvalidStorageRequest", w) for w in prepared.warnings]
        cloud_warnings = getattr(self.cloud, "warnings", None)
        if callable(cloud_warnings):
            warnings += [
                Event(EventType.WARNING, "LaunchWarning", w) for w in cloud_warnings(prepared.request)
            ]
        await self._publish(claim, tuple(warnings))
        attempt = self.attempts.get(claim.uid, 0)
        if not limits.holds_instance(claim) and claim.uid not in self.launching:
            waiting = await self._over_limits(claim, prepared.request.instance_types[0])
            if waiting is not None:
                return waiting
        self.launching.add(claim.uid)
        try:
            instance: Instance = await self._cloud("create", lambda: self.cloud.create(prepared.request))
        except CloudError as e:
            self.attempts[claim.uid] = attempt + 1
            self.metrics.claim_launch_failures.labels(claim.dialect, type(e).__name__, e.code or "").inc()
            return launch.cloud_error(claim, e, attempt + 1, self.settings)
        if (
            instance.name != instance_name
            and claim.annotations.get(INSTANCE_NAME_ANNOTATION) != instance.name
        ):
            await self._patch_claim(
                claim, {"metadata": {"annotations": {INSTANCE_NAME_ANNOTATION: instance.name}}}
            )
        if instance.state == InstanceState.CREATING and registration.find_node(
            self.nodes.values(), claim, instance.name
        ):
            # The node joined before the cloud marked its operation done (AKS finishes a pool only
            # after its node is up): the instance evidently runs, so registration may go ahead.
            instance = replace(instance, state=InstanceState.RUNNING)
        step = launch.instance_observed(claim, instance, attempt + 1, self.settings, self.clock())
        if step.delete_instance:
            self.attempts[claim.uid] = attempt + 1
            failure = instance.failure
            self.metrics.claim_launch_failures.labels(
                claim.dialect,
                type(failure).__name__ if failure else "Failed",
                (failure.code if failure else "") or "",
            ).inc()
            try:
                await self._cloud("delete", lambda: self.cloud.delete(instance.name))
            except CloudError as e:
                logger.warning("could not delete failed instance %s: %s", instance.name, e)
        elif step.done:
            self.attempts.pop(claim.uid, None)
            self.metrics.claim(claim.dialect, "launched", self._nodepool(claim))
        return step

    async def _over_limits(self, claim: Claim, instance_type: str) -> StepResult | None:
        """Why launching one more node would break MAX_NODES / MAX_GPUS, or None."""
        if not self.settings.max_nodes and not self.settings.max_gpus:
            return None
        gpus_by_type: dict[str, int] = {}
        if self.settings.max_gpus:
            types = await self._cloud("instance_types", self.cloud.instance_types)
            gpus_by_type = {t.name.lower(): t.gpus for t in types}
        holders = [
            c
            for c in self.managed_claims()
            if c.uid != claim.uid and (limits.holds_instance(c) or c.uid in self.launching)
        ]
        return limits.check(holders, gpus_by_type.get(instance_type.lower(), 0), gpus_by_type, self.settings)

    async def _patch_node(self, node: Node, patch: Body) -> Node:
        name = node["metadata"]["name"]
        updated = await self.kube.patch(NODES, name, patch)
        if not _older(updated, self.nodes.get(name)):
            self.nodes[name] = updated
        return updated

    async def _sync_node(self, claim: Claim, node: Node) -> Node:
        patch = registration.desired_node_patch(node, claim, {})
        if patch is None:
            return node
        return await self._patch_node(node, patch)

    def _nodepool(self, claim: Claim) -> str:
        return claim.labels.get(dialect_of(claim).nodepool_label, "")

    # ------------------------------------------------------------------ status

    def _with_steps(self, claim: Claim, steps: list[StepResult], now: datetime.datetime) -> Claim:
        status = claim.status
        conditions = status.conditions
        for step in steps:
            for c in step.conditions:
                conditions = set_condition(conditions, c, now)
            if step.status:
                status = replace(status, **step.status)  # type: ignore[arg-type]
        if claim.deleting is False:
            for ctype in (ConditionType.LAUNCHED, ConditionType.REGISTERED, ConditionType.INITIALIZED):
                if not any(c.type == ctype for c in conditions):
                    conditions = set_condition(
                        conditions,
                        Condition(
                            ctype,
                            dialect_of(claim).pending_status,
                            "AwaitingReconciliation",
                            "object is awaiting reconciliation",
                        ),
                        now,
                    )
        conditions = roll_up_ready(conditions, now)
        return claim.with_status(replace(status, conditions=conditions))

    async def _apply(self, claim: Claim, steps: list[StepResult], now: datetime.datetime) -> float | None:
        """Write the status the steps decided (only if it changed), publish events, pick the requeue."""
        updated = self._with_steps(claim, steps, now)
        dialect = dialect_of(claim)
        new_body = dialect.status_body(updated.status, claim.generation)
        old_body = dialect.status_body(claim.status, claim.generation)
        if new_body != old_body:
            await self._patch_claim(claim, {"status": new_body}, subresource="status")
            self._count_transitions(claim, updated)
        for step in steps:
            await self._publish(claim, step.events)
        delays = [s.requeue_after for s in steps if s.requeue_after is not None]
        return min(delays) if delays else None

    def _count_transitions(self, before: Claim, after: Claim) -> None:
        pool = self._nodepool(before)
        for ctype, phase in (
            (ConditionType.REGISTERED, "registered"),
            (ConditionType.INITIALIZED, "initialized"),
        ):
            if after.status.is_true(ctype) and not before.status.is_true(ctype):
                self.metrics.claim(before.dialect, phase, pool)
        became_ready = after.status.is_true(ConditionType.READY) and not before.status.is_true(
            ConditionType.READY
        )
        if became_ready and before.creation_timestamp is not None:
            elapsed = (self.clock() - before.creation_timestamp).total_seconds()
            self.metrics.time_to_ready.labels(before.dialect).observe(max(0.0, elapsed))

    # ------------------------------------------------------------------ termination

    async def _terminate(self, claim: Claim) -> float | None:
        if TERMINATION_FINALIZER not in claim.finalizers:
            return None
        instance_name = self.instance_name_of(claim)
        # Only a Node this claim registered (it carries our ownerReference) is drained and deleted:
        # a pool name can match another pool's nodes (a claim named like a system pool, or a
        # Machine and a NodeClaim sharing a name).
        node = registration.find_owned_node(self.nodes.values(), claim)
        if node is not None:
            waiting = await self._drain(claim, node)
            if waiting is not None:
                return waiting
            if not (node.get("metadata") or {}).get("deletionTimestamp"):
                with contextlib.suppress(NotFoundError):
                    await self.kube.delete(NODES, node["metadata"]["name"])

        gone = await self._delete_instance(claim, instance_name)
        if not gone:
            return self._delete_poll(claim)
        if node is not None:
            await self._remove_node_finalizer(node["metadata"]["name"])
            self.metrics.nodes_terminated.labels(self._nodepool(claim)).inc()
        remaining = [f for f in claim.finalizers if f != TERMINATION_FINALIZER]
        await self._set_finalizers(claim, remaining)
        self.metrics.claim(claim.dialect, "terminated", self._nodepool(claim))
        self.attempts.pop(claim.uid, None)
        self.launching.discard(claim.uid)
        self.instance_owner.pop(instance_name, None)
        self.events.forget(claim.uid)
        return None

    def _delete_poll(self, claim: Claim) -> float:
        """Check a deleting instance soon at first (fast deletes), then every DELETE_POLL_SECONDS."""
        if claim.deletion_timestamp is None:
            return self.settings.delete_poll_interval
        age = (self.clock() - claim.deletion_timestamp).total_seconds()
        return min(self.settings.delete_poll_interval, max(1.0, age / 5))

    def _drain_expired(self, claim: Claim) -> bool:
        limit = claim.termination_grace_period
        if limit is None:
            limit = self.settings.drain_timeout or None
        if limit is None or claim.deletion_timestamp is None:
            return False
        return (self.clock() - claim.deletion_timestamp).total_seconds() >= limit

    async def _drain(self, claim: Claim, node: Node) -> float | None:
        """Cordon and evict; returns a requeue delay while pods remain, None once drained."""
        name = node["metadata"]["name"]
        spec = node.get("spec") or {}
        taints = list(spec.get("taints") or [])
        if not spec.get("unschedulable") or not any(t.get("key") == DISRUPTED_TAINT["key"] for t in taints):
            patch: Body = {"spec": {"unschedulable": True}}
            if not any(t.get("key") == DISRUPTED_TAINT["key"] for t in taints):
                patch["spec"]["taints"] = [*taints, DISRUPTED_TAINT]
            try:
                node = await self._patch_node(node, patch)
            except NotFoundError:
                return None
        pods = await self.kube.list(PODS, field_selector=f"spec.nodeName={name}")
        ready, _ = initialization.node_ready(node)
        plan = drain.plan(pods, self.clock(), node_ready=ready == Status.TRUE)
        if plan.done:
            return None
        if self._drain_expired(claim):
            await self._publish(
                claim,
                (
                    Event(
                        EventType.WARNING,
                        "DrainTimeout",
                        f"node {name}: drain time limit reached with {len(plan.evict) + len(plan.terminating)} "
                        "pod(s) left; terminating anyway",
                    ),
                ),
            )
            return None
        blocked: list[str] = []
        for pod in plan.evict:
            meta = pod["metadata"]
            try:
                await self.kube.evict(meta["name"], meta["namespace"])
                self.metrics.evictions.labels("200").inc()
                await self._publish(
                    claim, (Event(EventType.NORMAL, "Evicted", f"evicted pod {drain.pod_key(pod)}"),)
                )
            except TooManyRequestsError as e:
                self.metrics.evictions.labels("429").inc()
                blocked.append(f"{drain.pod_key(pod)} ({e.message})")
            except NotFoundError:
                pass
        if blocked:
            await self._publish(
                claim,
                (
                    Event(
                        EventType.WARNING,
                        "FailedDraining",
                        f"node {name}: eviction blocked for {'; '.join(blocked)}",
                    ),
                ),
            )
        return self.settings.drain_retry_interval

    async def _delete_instance(self, claim: Claim, instance_name: str) -> bool:
        """Start deleting the instance; True once the cloud reports it gone."""
        try:
            instance: Instance = await self._cloud("get", lambda: self.cloud.get(instance_name))
        except NotFound:
            return True
        except CloudError as e:
            logger.warning(
                "could not read instance %s while terminating %s: %s", instance_name, claim.name, e
            )
            return False
        if not instance.managed or (instance.claim_uid and instance.claim_uid != claim.uid):
            return True  # not ours (another pool, or a newer claim of the same name): nothing to delete
        if instance.state == InstanceState.CREATING:
            # The cloud refuses deletes during a create; one DELETE once it has settled.
            return False
        if instance.state != InstanceState.DELETING:
            try:
                await self._cloud("delete", lambda: self.cloud.delete(instance_name))
            except NotFound:
                return True
            except CloudError as e:
                logger.info("deleting instance %s: %s; retrying", instance_name, e)
        if claim.dialect == "nodeclaim" and not claim.status.is_true(ConditionType.INSTANCE_TERMINATING):
            conditions = set_condition(
                claim.status.conditions,
                Condition(
                    ConditionType.INSTANCE_TERMINATING,
                    Status.TRUE,
                    "InstanceTerminating",
                    "instance is terminating",
                ),
                self.clock(),
            )
            status = dialect_of(claim).status_body(
                replace(claim.status, conditions=conditions), claim.generation
            )
            await self._patch_claim(claim, {"status": status}, subresource="status")
        return False

    async def _remove_node_finalizer(self, name: str) -> None:
        try:
            node = await self.kube.get(NODES, name)
        except NotFoundError:
            return
        finalizers = list(node["metadata"].get("finalizers") or [])
        if TERMINATION_FINALIZER in finalizers:
            finalizers.remove(TERMINATION_FINALIZER)
            patch = {
                "metadata": {"finalizers": finalizers, "resourceVersion": node["metadata"]["resourceVersion"]}
            }
            with contextlib.suppress(NotFoundError):
                await self.kube.patch(NODES, name, patch)

    # ------------------------------------------------------------------ introspection for GC

    def managed_claims(self) -> list[Claim]:
        out = []
        for (dialect_name, _), body in list(self.claims.items()):
            claim = DIALECTS[dialect_name].parse(body)
            if is_managed(claim, self.settings):
                out.append(claim)
        return out

    def _managed_nodes(self) -> list[Node]:
        """Nodes we registered for a claim (they carry our finalizer and the registered label)."""
        return [
            n
            for n in self.nodes.values()
            if TERMINATION_FINALIZER in ((n.get("metadata") or {}).get("finalizers") or ())
            and ((n.get("metadata") or {}).get("labels") or {}).get(REGISTERED_LABEL) == "true"
        ]

    def observe_states(self) -> None:
        """Set the per-state claim gauge from the store (called periodically)."""
        counts: dict[tuple[str, str], int] = {
            (d, state): 0
            for d in DIALECTS
            for state in ("launching", "launch_failed", "registering", "initializing", "ready", "deleting")
        }
        for claim in self.managed_claims():
            counts[(claim.dialect, claim_state(claim))] += 1
        for (kind, state), n in counts.items():
            self.metrics.claim_states.labels(kind, state).set(n)

    async def list_claims(self) -> list[Claim]:
        """Every claim of every dialect, read from the API server (managed or not)."""
        claims: list[Claim] = []
        for dialect in DIALECTS.values():
            try:
                bodies = await self.kube.list(dialect.resource)
            except NotFoundError:
                continue  # the CRD is not installed: there are no claims of this kind
            claims += [dialect.parse(b) for b in bodies]
        return claims
