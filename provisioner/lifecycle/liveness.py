"""Liveness: claims that will not become useful are deleted so their owner makes a new one.

* Registration timeout: launched, but no node joined within ``registration_timeout`` of launch.
* NotReady repair: the node's Ready condition has not been True for ``not_ready_repair_after``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from provisioner.claims.dialects import parse_time
from provisioner.claims.model import Claim, ConditionType, Status
from provisioner.lifecycle.initialization import node_ready
from provisioner.lifecycle.result import Event, EventType, StepResult
from provisioner.settings import Settings

Node = Mapping[str, Any]


def registration_timeout(claim: Claim, now: datetime.datetime, settings: Settings) -> StepResult | None:
    """Delete the claim if its node has not joined in time; else when to look again (or None)."""
    launched = claim.status.condition(ConditionType.LAUNCHED)
    if launched is None or launched.status != Status.TRUE or launched.last_transition_time is None:
        return None
    deadline = launched.last_transition_time + datetime.timedelta(seconds=settings.registration_timeout)
    if now < deadline:
        return StepResult(requeue_after=(deadline - now).total_seconds() + 1, done=False)
    return StepResult(
        events=(
            Event(
                EventType.WARNING,
                "RegistrationTimeout",
                f"node did not join within {settings.registration_timeout:.0f}s of launch; deleting claim",
            ),
        ),
        delete_claim=True,
        done=False,
    )


def not_ready_repair(node: Node, now: datetime.datetime, settings: Settings) -> StepResult | None:
    """Delete the claim if its (registered) node has been NotReady for the repair window."""
    if settings.not_ready_repair_after <= 0:
        return None
    status, since_text = node_ready(node)
    if status == Status.TRUE:
        return None
    since = parse_time(since_text) or parse_time((node.get("metadata") or {}).get("creationTimestamp"))
    if since is None:
        return None
    deadline = since + datetime.timedelta(seconds=settings.not_ready_repair_after)
    if now < deadline:
        return StepResult(requeue_after=(deadline - now).total_seconds() + 1)
    name = (node.get("metadata") or {}).get("name", "")
    return StepResult(
        events=(
            Event(
                EventType.WARNING,
                "NodeRepair",
                f"node {name} has been {'NotReady' if status == Status.FALSE else 'unreachable'} for more than "
                f"{settings.not_ready_repair_after:.0f}s; deleting claim",
            ),
        ),
        delete_claim=True,
        done=False,
    )
