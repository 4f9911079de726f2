"""The interface every cloud implements, and what a provider factory is given."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from provisioner.cloud.types import (
    CapacityType,
    Degradation,
    Instance,
    InstanceRequest,
    InstanceType,
    ResolvedImage,
)


def _always_open(target: str) -> None:
    """The write gate of a replica without leader election: every write may go out."""


@dataclass(frozen=True)
class ProviderContext:
    """Everything a provider factory gets.

    ``env`` holds settings by their environment names (``ARM_SUBSCRIPTION_ID``, ``LOCATION``,
    ``AZURE_CLUSTER_NAME``, ...); ``kubeconfig`` lets offline providers register simulated Nodes.

    ``write_gate`` must be called with ``"cloud"`` immediately before every request that changes
    anything in the cloud (as late as possible: after credentials and rate limits); it raises
    ``provisioner.fencing.WriteRefused`` when this replica may have lost its leadership, and the
    write must then not be sent. ``identity`` names this replica (e.g. for a User-Agent).
    """

    env: Mapping[str, str] = field(default_factory=dict)
    cluster_name: str = ""
    kubeconfig: str | None = None
    write_gate: Callable[[str], None] = _always_open
    identity: str = ""


@runtime_checkable
class CloudProvider(Protocol):
    """A cloud that creates one instance (on AKS: one agent pool of one node) per claim.

    Every method raises only ``provisioner.cloud.errors.CloudError`` subclasses for cloud failures,
    and makes one attempt: the controller's work queue retries with backoff, so a provider must not
    sleep on throttling inside ``create``, ``get`` or ``delete`` (``list`` and ``check`` serve
    background loops and may retry).

    Optional extras a provider may have (``SupportsAdoption``, ``SupportsQuota`` below, and):

    * ``async check() -> tuple[bool, str]`` — whether the cloud accepts our credentials now
      (``/readyz`` reports it; a reason other than ``"ok"`` with True is shown as a detail, the
      probe still succeeds);
    * ``warnings(request) -> tuple[str, ...]`` — what of a request will not reach the node as
      asked (e.g. labels the cloud refuses); each becomes a Warning event on the claim.
    * ``degradations() -> tuple[Degradation, ...]`` — every way the provider can run degraded
      (each one listed always, ``active`` while it does): the controller exports them as the
      ``gpu_provisioner_cloud_degraded`` gauge, posts one Warning event per process when one turns
      active (on the first claim launched while it is); ``check`` names the active ones.
    """

    def instance_name(self, claim_name: str) -> str:
        """The name of the instance for a claim (pure and stable: used to find it after a restart)."""
        ...

    def instance_of_node(self, node: Mapping[str, Any]) -> str | None:
        """The name of the instance a Kubernetes Node runs on, or None if it is none of this cloud's."""
        ...

    async def create(self, request: InstanceRequest) -> Instance:
        """Start creating ``request.name`` and return at once (state ``creating``).

        Idempotent: if an instance of that name already exists for the same claim (same claim
        UID), it is adopted and returned as it is; one that is not tagged for any claim raises
        ``InstanceConflict`` carrying it. Instance types are tried in order; only capacity errors
        move on to the next candidate.
        """
        ...

    async def get(self, name: str) -> Instance:
        """The instance called ``name``; raises ``NotFound`` if there is none."""
        ...

    async def list(self) -> builtins.list[Instance]:
        """Every instance we own (created by this controller), in any state."""
        ...

    async def delete(self, name: str, *, version: str | None = None) -> None:
        """Start deleting ``name``. Idempotent: missing or already deleting counts as success.

        With ``version`` (an ``Instance.version`` read earlier) the delete happens only if the
        instance has not changed since; otherwise it raises ``Transient`` (code ``PreconditionFailed``).
        """
        ...

    async def instance_types(self) -> builtins.list[InstanceType]:
        """Instance types of the configured region, with their availability."""
        ...

    async def close(self) -> None:
        """Release clients and background tasks."""
        ...


@runtime_checkable
class SupportsAdoption(Protocol):
    """A cloud whose instances a predecessor may have made without our tags."""

    async def adopt(self, instance: Instance, claim_name: str, claim_uid: str) -> Instance:
        """Tag ``instance`` as ours for the claim, only if it is unchanged since it was read
        (``instance.version``); returns the updated snapshot."""
        ...


@runtime_checkable
class SupportsQuota(Protocol):
    """A cloud that can tell, from a shared cached reading, whether quota has room now."""

    async def quota_allows(self, instance_types: Sequence[str], capacity_type: CapacityType) -> bool:
        """Whether one more instance of any of ``instance_types`` fits the quota now."""
        ...


@runtime_checkable
class SupportsDegradation(Protocol):
    """A cloud that keeps working, with less, when an optional permission or API is unavailable."""

    def degradations(self) -> tuple[Degradation, ...]:
        """Every way the provider can run degraded, each with whether it does now (no I/O)."""
        ...


@runtime_checkable
class SupportsNodeImages(Protocol):
    """A cloud that can say what a node class's image family resolves to (no cloud write)."""

    async def resolve_image(self, family: str | None) -> ResolvedImage:
        """The image new nodes of ``family`` get (None: the cloud's default family); raises
        ``InvalidSpec`` for a family the cloud does not offer."""
        ...


@runtime_checkable
class SupportsSharedInstances(Protocol):
    """A cloud whose instances can hold the nodes of several claims (on AKS: shared agent pools).

    ``create`` then assigns the claim a shared instance and returns it (``shared=True``) without a
    cloud write; the controller records the assignment on the claim, asks the instance for as many
    nodes as its claims need, binds each node that joins to exactly one waiting claim (on the Node
    and the claim), and hands back the nodes of deleted claims. Every call returns at once: the
    provider batches and serializes the cloud's operations itself.
    """

    def shares_instance(self, name: str) -> bool:
        """Whether ``name`` is a shared instance (pure: decided by the name alone)."""
        ...

    async def want_nodes(self, name: str, count: int) -> Instance:
        """The shared instance should hold at least ``count`` nodes (never fewer: nodes are only
        removed one by one with ``remove_nodes``). Returns the latest snapshot known; raises the
        ``CloudError`` of the last failed attempt to grow it, once per failure."""
        ...

    async def remove_nodes(self, name: str, node_names: Sequence[str]) -> bool:
        """Remove exactly these nodes' machines; True once all of them are gone."""
        ...

    def leaving(self, name: str) -> frozenset[str]:
        """Nodes handed to ``remove_nodes`` whose removal is not known to be over."""
        ...
