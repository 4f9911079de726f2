"""Which pods a drain evicts, and in what order.

Mirror pods (owned by the kubelet) and DaemonSet pods are left alone, finished pods need no
eviction, and critical pods go last so that logging/networking agents outlive the workloads they
serve. Pods already being deleted are waited for, not evicted again.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Pod = Mapping[str, Any]

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
CRITICAL_PRIORITY_CLASSES = frozenset({"system-cluster-critical", "system-node-critical"})


@dataclass(frozen=True)
class DrainPlan:
    #: Evict now (non-critical pods first; critical ones only when nothing else is left).
    evict: tuple[Pod, ...]
    #: Pods still terminating; the drain is not done while there are any.
    terminating: tuple[Pod, ...]

    @property
    def done(self) -> bool:
        return not self.evict and not self.terminating


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
    when = (pod.get("metadata") or {}).get("deletionTimestamp")
    if now is None or not isinstance(when, str):
        return False
    try:
        since = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return False
    return (now - since).total_seconds() > STUCK_TERMINATING_SECONDS


def plan(pods: Iterable[Pod], now: datetime.datetime | None = None, *, node_ready: bool = True) -> DrainPlan:
    """What to evict now and what to wait for.

    Pods already being deleted are waited for — unless they have been stuck for a minute, or the
    node is not Ready (no kubelet will ever finish them).
    """
    relevant = [p for p in pods if not _ignored(p)]
    terminating = tuple(
        p
        for p in relevant
        if (p.get("metadata") or {}).get("deletionTimestamp") and node_ready and not _stuck(p, now)
    )
    live = [p for p in relevant if not (p.get("metadata") or {}).get("deletionTimestamp")]
    normal = tuple(p for p in live if not _critical(p))
    critical = tuple(p for p in live if _critical(p))
    if normal or any(not _critical(p) for p in terminating):
        return DrainPlan(evict=normal, terminating=terminating)
    return DrainPlan(evict=critical, terminating=terminating)


def pod_key(pod: Pod) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
