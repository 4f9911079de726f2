"""Liveness: claims that will not become useful are deleted so their owner makes a new one.

* Registration timeout: launched, but no node joined within ``registration_timeout`` of launch.
* NotReady repair: the node's Ready condition has not been True for ``not_ready_repair_after`` —
  unless repair is paused because many of our nodes are unhealthy at once (see ``limits``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from provisioner.claims.dialects import parse_time
from provisioner.claims.model import Claim, ConditionType, Status
from provisioner.lifecycle.initialization import node_ready
from provisioner.lifecycle.limits import RepairBrake
from provisioner.lifecycle.result import DeleteClaim, Event, EventType, StepResult
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
        actions=(DeleteClaim(),),
        done=False,
    )


def not_ready_repair(
    node: Node, now: datetime.datetime, settings: Settings, brake: Callable[[], RepairBrake] | None = None
) -> StepResult | None:
    """Delete the claim if its (registered) node has been NotReady for the repair window, unless
    the repair brake (asked only then) is on: then say so and look again in a minute."""
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
    state = brake() if brake is not None else None
    if state is not None and state.paused:
        message = (
            f"{state.unhealthy} of {state.total} managed nodes are not Ready; repair paused so that an outage "
            "does not delete every node"
        )
        return StepResult(events=(Event(EventType.WARNING, "RepairPaused", message),), requeue_after=60.0)
    return StepResult(
        events=(
            Event(
                EventType.WARNING,
                "NodeRepair",
                f"node {name} has been {'NotReady' if status == Status.FALSE else 'unreachable'} for more than "
                f"{settings.not_ready_repair_after:.0f}s; deleting claim",
            ),
        ),
        actions=(DeleteClaim(),),
        done=False,
    )
