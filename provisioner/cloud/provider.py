"""The interface every cloud implements, and what a provider factory is given."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from provisioner.cloud.types import Instance, InstanceRequest, InstanceType


@dataclass(frozen=True)
class ProviderContext:
    """Everything a provider factory gets.

    ``env`` holds settings by their environment names (``ARM_SUBSCRIPTION_ID``, ``LOCATION``,
    ``AZURE_CLUSTER_NAME``, ...); ``kubeconfig`` lets offline providers register simulated Nodes.
    """

    env: Mapping[str, str] = field(default_factory=dict)
    cluster_name: str = ""
    kubeconfig: str | None = None


@runtime_checkable
class CloudProvider(Protocol):
    """A cloud that creates one instance (on AKS: one agent pool of one node) per claim.

    Every method raises only ``provisioner.cloud.errors.CloudError`` subclasses for cloud failures.

    Two optional methods are used when a provider has them:

    * ``async check() -> tuple[bool, str]`` — whether the cloud accepts our credentials now
      (``/readyz`` reports it);
    * ``warnings(request) -> tuple[str, ...]`` — what of a request will not reach the node as
      asked (e.g. labels the cloud refuses); each becomes a Warning event on the claim.
    """

    def instance_name(self, claim_name: str) -> str:
        """The name of the instance for a claim (pure and stable: used to find it after a restart)."""
        ...

    async def create(self, request: InstanceRequest) -> Instance:
        """Start creating ``request.name`` and return at once (state ``creating``).

        Idempotent: if an instance of that name already exists for the same claim (same claim
        UID), it is adopted and returned as it is. Instance types are tried in order; only
        capacity errors move on to the next candidate.
        """
        ...

    async def get(self, name: str) -> Instance:
        """The instance called ``name``; raises ``NotFound`` if there is none."""
        ...

    async def list(self) -> builtins.list[Instance]:
        """Every instance we own (created by this controller), in any state."""
        ...

    async def delete(self, name: str) -> None:
        """Start deleting ``name``. Idempotent: missing or already deleting counts as success."""
        ...

    async def instance_types(self) -> builtins.list[InstanceType]:
        """Instance types of the configured region, with their availability."""
        ...

    async def close(self) -> None:
        """Release clients and background tasks."""
        ...
