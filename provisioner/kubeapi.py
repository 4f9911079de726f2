"""The Kubernetes verbs reconcilers use, as a protocol: ``KubeClient`` has them, and reconciler
unit tests use an in-memory API server instead."""

from __future__ import annotations

import builtins
from typing import Any, Protocol

from provisioner.kube import MERGE_PATCH, Body, Resource


class KubeApi(Protocol):
    async def get(self, res: Resource, name: str, namespace: str | None = None) -> Body: ...

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Body]: ...

    async def list_with_version(self, res: Resource) -> tuple[builtins.list[Body], str]: ...

    async def create(self, res: Resource, body: Body, namespace: str | None = None) -> Body: ...

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> Body: ...

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        grace_period_seconds: int | None = None,
        preconditions_uid: str | None = None,
    ) -> Body: ...

    async def evict(self, name: str, namespace: str) -> None: ...
