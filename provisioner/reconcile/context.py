"""What every reconciler shares: the clients, the store, the rules of ownership, events, metrics."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from provisioner.claims.model import Claim
from provisioner.cloud.provider import CloudProvider
from provisioner.events import EventRecorder, EventTarget
from provisioner.kube import NODES
from provisioner.kubeapi import KubeApi
from provisioner.lifecycle.result import Event
from provisioner.metrics import Metrics
from provisioner.ownership import Ownership
from provisioner.settings import Settings
from provisioner.store import Store

T = TypeVar("T")


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class Context:
    kube: KubeApi
    cloud: CloudProvider
    settings: Settings
    store: Store
    ownership: Ownership
    events: EventRecorder
    metrics: Metrics
    clock: Callable[[], datetime.datetime] = utcnow
    cloud_name: str = ""

    async def cloud_call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        return await self.metrics.timed_cloud_call(self.cloud_name or self.settings.cloud, operation, call)

    async def publish(self, claim: Claim, events: tuple[Event, ...] | list[Event]) -> None:
        for e in events:
            await self.events.publish(claim, e)

    async def publish_for(self, target: EventTarget, events: tuple[Event, ...] | list[Event]) -> None:
        for e in events:
            await self.events.publish_for(target, e)

    async def patch_node(
        self, name: str, patch: Mapping[str, Any], resource_version: str | None = None
    ) -> Any:
        body: dict[str, Any] = dict(patch)
        if resource_version:
            body["metadata"] = {**(body.get("metadata") or {}), "resourceVersion": resource_version}
        updated = await self.kube.patch(NODES, name, body)
        self.store.put_node(updated)
        return updated
