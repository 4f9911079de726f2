"""What a lifecycle step decides: condition changes, a status delta, events, typed actions, and
when to look again. Steps never act; ``provisioner.reconcile.apply`` carries their decisions out
in one fixed order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from provisioner.claims.model import ClaimStatus, Condition, ConditionType


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class StatusDelta:
    """Status fields a step sets (None: leave as it is)."""

    node_name: str | None = None
    provider_id: str | None = None
    image_id: str | None = None
    capacity: Mapping[str, str] | None = None
    allocatable: Mapping[str, str] | None = None

    def apply(self, status: ClaimStatus) -> ClaimStatus:
        changes: dict[str, Any] = {
            name: getattr(self, name)
            for name in ("node_name", "provider_id", "image_id", "capacity", "allocatable")
            if getattr(self, name) is not None
        }
        return replace(status, **changes) if changes else status


# -- actions, in the order ``apply`` carries them out ---------------------------------------------


@dataclass(frozen=True)
class ClaimMetadata:
    """Add labels the claim does not carry yet (what a user set is never overwritten), and set
    annotations (our bookkeeping)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PatchNode:
    """A merge patch of a Node; ``resource_version`` guards patches that replace lists."""

    name: str
    patch: Mapping[str, Any]
    resource_version: str | None = None


@dataclass(frozen=True)
class ReleaseNode:
    """Remove our finalizer from a Node (it is gone from the claim's point of view)."""

    name: str


@dataclass(frozen=True)
class DeleteInstance:
    """Delete a failed instance so the next attempt starts clean."""

    name: str
    version: str | None = None


@dataclass(frozen=True)
class DeleteClaim:
    """Delete the claim (after everything else is written); its owner makes a new one."""


Action = ClaimMetadata | PatchNode | ReleaseNode | DeleteInstance | DeleteClaim


@dataclass(frozen=True)
class StepResult:
    conditions: tuple[Condition, ...] = ()
    #: Conditions to remove (Karpenter clears a condition that no longer applies, e.g. Drifted).
    cleared: tuple[ConditionType, ...] = ()
    status: StatusDelta = field(default_factory=StatusDelta)
    events: tuple[Event, ...] = ()
    actions: tuple[Action, ...] = ()
    #: Reconcile again after this many seconds (None: only when something changes).
    requeue_after: float | None = None
    #: Retry with the work queue's per-claim failure backoff (``requeue_after`` is then its floor):
    #: the cloud failed in a way that says nothing about the claim.
    backoff: bool = False
    #: Whether later steps may run in this reconcile (e.g. registration needs a launched instance).
    done: bool = True

    @property
    def deletes_claim(self) -> bool:
        return any(isinstance(a, DeleteClaim) for a in self.actions)
