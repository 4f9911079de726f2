"""What a lifecycle step decides: condition changes, status fields, events, and what to do next."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from provisioner.claims.model import Condition


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class StepResult:
    conditions: tuple[Condition, ...] = ()
    #: Status fields to set (``node_name``, ``provider_id``, ``image_id``, ``capacity``, ``allocatable``).
    status: Mapping[str, object] = field(default_factory=dict)
    #: Labels to add to the claim's metadata (instance type, zone, capacity type).
    claim_labels: Mapping[str, str] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    #: Reconcile again after this many seconds (None: only when something changes).
    requeue_after: float | None = None
    delete_instance: bool = False
    delete_claim: bool = False
    #: Whether later steps may run in this reconcile (e.g. registration needs a launched instance).
    done: bool = True
