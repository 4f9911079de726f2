"""Which pods a drain evicts, and in what order.

Mirror pods (owned by the kubelet) and DaemonSet pods are left alone, finished pods need no
eviction, and critical pods go last so that logging/networking agents outlive the workloads they
serve. Pods already being deleted are waited for, not evicted again.

With a drain deadline (a NodeClaim's ``terminationGracePeriod``, else ``DRAIN_TIMEOUT_SECONDS``)
every pod still gets its own ``terminationGracePeriodSeconds`` before the node goes: a pod the
Eviction API keeps refusing (a PodDisruptionBudget) is deleted directly once the deadline is less
than its grace period away, with the time that is left as its grace period.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.claims.dialects import parse_time

Pod = Mapping[str, Any]

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
CRITICAL_PRIORITY_CLASSES = frozenset({"system-cluster-critical", "system-node-critical"})


@dataclass(frozen=True)
class DrainPlan:
    #: Evict now (non-critical pods first; critical ones only when nothing else is left).
    evict: tuple[Pod, ...]
    #: Pods still terminating; the drain is not done while there are any.
    terminating: tuple[Pod, ...]
    #: Delete now, bypassing the Eviction API, with this grace period (the deadline is near).
    delete: tuple[tuple[Pod, int], ...] = ()

    @property
    def done(self) -> bool:
        return not self.evict and not self.terminating and not self.delete


def _ignored(pod: Pod) -> bool:
    meta = pod.get("metadata") or {}
    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        return True
    if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or ()):
        return True
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed")


def _critical(pod: Pod) -> bool:
    return (pod.get("spec") or {}).get("priorityClassName") in CRITICAL_PRIORITY_CLASSES


#: A pod still terminating this long after its deletion is not waited for (its kubelet is gone).
STUCK_TERMINATING_SECONDS = 60.0


def _stuck(pod: Pod, now: datetime.datetime | None) -> bool:
    since = parse_time((pod.get("metadata") or {}).get("deletionTimestamp"))
    if now is None or since is None:
        return False
    return (now - since).total_seconds() > STUCK_TERMINATING_SECONDS


#: A pod's grace period when its spec does not say (the API server's default).
DEFAULT_POD_GRACE_SECONDS = 30


def pod_grace(pod: Pod) -> int:
    value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return value if isinstance(value, int) and value >= 0 else DEFAULT_POD_GRACE_SECONDS


def _expiring(
    pods: Iterable[Pod], now: datetime.datetime, deadline: datetime.datetime
) -> tuple[tuple[Pod, int], ...]:
    """Pods that must be deleted now to get their grace period before ``deadline``: live ones whose
    grace period reaches past it, and terminating ones whose deletion is due after it."""
    left = max(1, int((deadline - now).total_seconds()))
    out = []
    for p in pods:
        deleted_at = parse_time((p.get("metadata") or {}).get("deletionTimestamp"))
        if deleted_at is None:
            if now >= deadline - datetime.timedelta(seconds=pod_grace(p)):
                out.append((p, left))
        elif deleted_at > deadline:
            out.append((p, left))
    return tuple(out)


def plan(
    pods: Iterable[Pod],
    now: datetime.datetime | None = None,
    *,
    node_ready: bool = True,
    deadline: datetime.datetime | None = None,
) -> DrainPlan:
    """What to evict (or delete) now and what to wait for.

    Pods already being deleted are waited for — unless they have been stuck for a minute, or the
    node is not Ready (no kubelet will ever finish them).
    """
    relevant = [p for p in pods if not _ignored(p)]
    early = _expiring(relevant, now, deadline) if now is not None and deadline is not None else ()
    deleting_early = {id(p) for p, _ in early}
    terminating = tuple(
        p
        for p in relevant
        if (p.get("metadata") or {}).get("deletionTimestamp")
        and node_ready
        and not _stuck(p, now)
        and id(p) not in deleting_early
    )
    live = [
        p
        for p in relevant
        if not (p.get("metadata") or {}).get("deletionTimestamp") and id(p) not in deleting_early
    ]
    normal = tuple(p for p in live if not _critical(p))
    critical = tuple(p for p in live if _critical(p))
    if normal or any(not _critical(p) for p in terminating):
        return DrainPlan(evict=normal, terminating=terminating, delete=early)
    return DrainPlan(evict=critical, terminating=terminating, delete=early)


def pod_key(pod: Pod) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
