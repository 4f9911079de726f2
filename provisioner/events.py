"""Kubernetes Events on claims (and on Nodes we terminate on their own), deduplicated.

A reconcile that sees the same failure again (a capacity shortage retried with backoff, a PDB
blocking a drain) must not flood the cluster: an event with the same object, reason and message is
posted once per ``dedup_window``. Every event is also logged.
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.claims.dialects import dialect_of
from provisioner.claims.model import Claim
from provisioner.kube import EVENTS, ApiError
from provisioner.kubeapi import KubeApi
from provisioner.lifecycle.result import Event, EventType
from provisioner.redact import redact

logger = logging.getLogger(__name__)

#: Cluster-scoped objects have their events in this namespace (as kubectl describe expects).
EVENT_NAMESPACE = "default"
COMPONENT = "gpu-provisioner"
#: The API server refuses longer Event messages.
MAX_EVENT_MESSAGE = 1024


@dataclass(frozen=True)
class EventTarget:
    """The object an event is about."""

    api_version: str
    kind: str
    name: str
    uid: str
    resource_version: str = ""

    @classmethod
    def of_claim(cls, claim: Claim) -> EventTarget:
        d = dialect_of(claim)
        return cls(d.api_version, d.kind, claim.name, claim.uid, claim.resource_version)

    @classmethod
    def of_node(cls, node: Mapping[str, Any]) -> EventTarget:
        meta = node.get("metadata") or {}
        return cls(
            "v1",
            "Node",
            str(meta.get("name", "")),
            str(meta.get("uid", "")),
            str(meta.get("resourceVersion", "")),
        )


class EventRecorder:
    def __init__(self, kube: KubeApi, *, dedup_window: float = 1800.0, host: str = "") -> None:
        self._kube = kube
        self._window = dedup_window
        self._host = host
        self._sent: dict[tuple[str, str, str], float] = {}

    def _fresh(self, key: tuple[str, str, str]) -> bool:
        now = time.monotonic()
        last = self._sent.get(key)
        if last is not None and now - last < self._window:
            return False
        self._sent[key] = now
        if len(self._sent) > 10_000:  # bound memory: forget the oldest half
            for k, _ in sorted(self._sent.items(), key=lambda kv: kv[1])[:5_000]:
                del self._sent[k]
        return True

    def forget(self, uid: str) -> None:
        """Drop dedup state of an object that is gone."""
        for key in [k for k in self._sent if k[0] == uid]:
            del self._sent[key]

    async def publish(self, claim: Claim, event: Event) -> None:
        await self.publish_for(EventTarget.of_claim(claim), event)

    async def publish_for(self, target: EventTarget, event: Event) -> None:
        level = logging.WARNING if event.type == EventType.WARNING else logging.INFO
        field = "claim" if target.kind in ("Machine", "NodeClaim") else target.kind.lower()
        fields = {field: target.name}
        logger.log(
            level,
            "%s: %s",
            event.reason,
            event.message,
            extra={**fields, "kind": target.kind, "reason": event.reason},
        )
        if not self._fresh((target.uid, event.reason, event.message)):
            return
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{target.name}.{uuid.uuid4().hex[:16]}", "namespace": EVENT_NAMESPACE},
            "involvedObject": {
                "apiVersion": target.api_version,
                "kind": target.kind,
                "name": target.name,
                "uid": target.uid,
                "resourceVersion": target.resource_version,
            },
            "reason": event.reason,
            "message": redact(event.message)[:MAX_EVENT_MESSAGE],
            "type": event.type.value,
            "source": {"component": COMPONENT, "host": self._host},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._host or COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._kube.create(EVENTS, body, namespace=EVENT_NAMESPACE)
        except ApiError as e:  # events are best effort; never fail a reconcile on them
            logger.warning("could not post event %s for %s: %s", event.reason, target.name, e)
