"""Draining a Node before its instance goes: cordon, evict, wait, let volumes detach.

One call does one round and says whether the Node is drained; the caller requeues until it is.

* Cordon: ``spec.unschedulable`` and the ``karpenter.sh/disrupted:NoSchedule`` taint, written with
  the Node's resourceVersion (a taint someone adds meanwhile fails our write instead of being
  lost), and the time the drain started (an annotation: it survives a restart).
* Pods: ``termination.drain_plan.plan`` decides; evictions go through the Eviction API (PDBs apply).
* The drain lasts at least ``MIN_DRAIN_SECONDS`` after it started: a pod bound to the Node just
  before the cordon shows up in the list a moment later, and is evicted too.
* Then VolumeAttachments of the Node must be gone (the disk detached) before the VM is deleted —
  except those of pods a drain never evicts (mirror pods), and not after the drain deadline.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provisioner.claims.dialects import format_time, parse_time
from provisioner.claims.model import ANNOTATION_PREFIX
from provisioner.kube import PERSISTENT_VOLUMES, PODS, VOLUME_ATTACHMENTS, NotFoundError, TooManyRequestsError
from provisioner.lifecycle import termination
from provisioner.lifecycle.initialization import node_ready
from provisioner.lifecycle.result import Event
from provisioner.reconcile.context import Context
from provisioner.termination import drain as drain_plan

logger = logging.getLogger(__name__)

Node = Mapping[str, Any]

#: Taint put on a node being terminated so nothing new schedules there (Karpenter v1's key).
DISRUPTED_TAINT = {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}
DRAIN_STARTED_ANNOTATION = f"{ANNOTATION_PREFIX}/drain-started"


@dataclass
class DrainRound:
    done: bool
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


class Drainer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def drain(self, node: Node, deadline: datetime.datetime | None) -> DrainRound:
        ctx = self.ctx
        name = str((node.get("metadata") or {}).get("name", ""))
        now = ctx.clock()
        try:
            node = await self._cordon(node, now)
        except NotFoundError:
            return DrainRound(done=True)
        expired = deadline is not None and now >= deadline
        pods = await ctx.kube.list(PODS, field_selector=f"spec.nodeName={name}")
        ready, _ = node_ready(node)
        plan = drain_plan.plan(pods, now, node_ready=ready.value == "True", deadline=deadline)
        events: list[Event] = []
        if not plan.done:
            if expired:
                left = len(plan.evict) + len(plan.terminating) + len(plan.delete)
                events.append(termination.drain_timed_out(name, left))
                return DrainRound(done=True, events=events)
            await self._evict(name, plan, events)
            return DrainRound(done=False, events=events, requeue_after=ctx.settings.drain_retry_interval)
        started = parse_time(
            ((node.get("metadata") or {}).get("annotations") or {}).get(DRAIN_STARTED_ANNOTATION)
        )
        elapsed = (now - started).total_seconds() if started else 0.0
        if elapsed < ctx.settings.min_drain_time and not expired:
            return DrainRound(done=False, requeue_after=max(0.1, ctx.settings.min_drain_time - elapsed))
        if not expired:
            attached = await self._attachments(name, pods)
            if attached:
                events.append(termination.waiting_for_volumes(name, attached))
                return DrainRound(done=False, events=events, requeue_after=ctx.settings.drain_retry_interval)
        return DrainRound(done=True, events=events)

    async def _cordon(self, node: Node, now: datetime.datetime) -> Node:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        taints = list(spec.get("taints") or [])
        tainted = any(t.get("key") == DISRUPTED_TAINT["key"] for t in taints)
        started = DRAIN_STARTED_ANNOTATION in (meta.get("annotations") or {})
        if spec.get("unschedulable") and tainted and started:
            return node
        patch: dict[str, Any] = {"spec": {"unschedulable": True}}
        if not tainted:
            patch["spec"]["taints"] = [*taints, DISRUPTED_TAINT]
        if not started:
            patch["metadata"] = {"annotations": {DRAIN_STARTED_ANNOTATION: format_time(now)}}
        updated: Node = await self.ctx.patch_node(
            str(meta.get("name")), patch, str(meta.get("resourceVersion") or "")
        )
        return updated

    async def _evict(self, name: str, plan: drain_plan.DrainPlan, events: list[Event]) -> None:
        ctx = self.ctx
        for pod, grace in plan.delete:
            meta = pod["metadata"]
            with contextlib.suppress(NotFoundError):
                await ctx.kube.delete(PODS, meta["name"], meta["namespace"], grace_period_seconds=grace)
                events.append(termination.deleted_before_deadline(name, drain_plan.pod_key(pod), grace))
        blocked: list[str] = []
        for pod in plan.evict:
            meta = pod["metadata"]
            try:
                await ctx.kube.evict(meta["name"], meta["namespace"])
                ctx.metrics.evictions.labels("200").inc()
                events.append(termination.evicted(name, drain_plan.pod_key(pod)))
            except TooManyRequestsError as e:
                ctx.metrics.evictions.labels("429").inc()
                blocked.append(f"{drain_plan.pod_key(pod)} ({e.message})")
            except NotFoundError:
                pass
        if blocked:
            events.append(termination.eviction_blocked(name, blocked))

    async def _attachments(self, name: str, pods: list[dict[str, Any]]) -> list[str]:
        """Names of the Node's VolumeAttachments the VM must outlive."""
        attachments = [
            va
            for va in await self.ctx.kube.list(VOLUME_ATTACHMENTS)
            if (va.get("spec") or {}).get("nodeName") == name
            and ((va.get("spec") or {}).get("source") or {}).get("persistentVolumeName")
        ]
        if not attachments:
            return []
        undrainable = {
            (p["metadata"].get("namespace"), v["persistentVolumeClaim"]["claimName"])
            for p in pods
            if drain_plan.MIRROR_ANNOTATION in (p["metadata"].get("annotations") or {})
            for v in (p.get("spec") or {}).get("volumes") or ()
            if isinstance(v.get("persistentVolumeClaim"), Mapping)
        }
        out = []
        for va in attachments:
            if undrainable and await self._claimed_by(
                va["spec"]["source"]["persistentVolumeName"], undrainable
            ):
                continue
            out.append(str(va["metadata"]["name"]))
        return out

    async def _claimed_by(self, pv_name: str, claims: set[tuple[Any, Any]]) -> bool:
        try:
            pv = await self.ctx.kube.get(PERSISTENT_VOLUMES, pv_name)
        except NotFoundError:
            return False
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        return (ref.get("namespace"), ref.get("name")) in claims
