"""Kubernetes Events on claims, deduplicated.

A reconcile that sees the same failure again (a capacity shortage retried with backoff, a PDB
blocking a drain) must not flood the cluster: an event with the same object, reason and message is
posted once per ``dedup_window``. Every event is also logged.
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from typing import Any

from provisioner.claims.dialects import dialect_of
from provisioner.claims.model import Claim
from provisioner.kube import EVENTS, ApiError, KubeClient
from provisioner.lifecycle.result import Event, EventType

logger = logging.getLogger(__name__)

#: Cluster-scoped objects have their events in this namespace (as kubectl describe expects).
EVENT_NAMESPACE = "default"
COMPONENT = "gpu-provisioner"


class EventRecorder:
    def __init__(self, kube: KubeClient, *, dedup_window: float = 1800.0, host: str = "") -> None:
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

    async def publish(self, claim: Claim, event: Event, *, log_fields: dict[str, Any] | None = None) -> None:
        level = logging.WARNING if event.type == EventType.WARNING else logging.INFO
        dialect = dialect_of(claim)
        logger.log(
            level,
            "%s: %s",
            event.reason,
            event.message,
            extra={"claim": claim.name, "kind": dialect.kind, "reason": event.reason, **(log_fields or {})},
        )
        if not self._fresh((claim.uid, event.reason, event.message)):
            return
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{claim.name}.{uuid.uuid4().hex[:16]}", "namespace": EVENT_NAMESPACE},
            "involvedObject": {
                "apiVersion": dialect.api_version,
                "kind": dialect.kind,
                "name": claim.name,
                "uid": claim.uid,
                "resourceVersion": claim.resource_version,
            },
            "reason": event.reason,
            "message": event.message[:1024],
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
            logger.warning("could not post event %s for %s: %s", event.reason, claim.name, e)
