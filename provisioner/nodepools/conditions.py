"""metav1.Condition lists for NodePool and node class status, with a Ready root over the others.

``lastTransitionTime`` moves only when a condition's status changes, so recomputing the same
state yields the same body (and no API write).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisioner.claims.dialects import format_time
from provisioner.redact import redact

READY = "Ready"


@dataclass(frozen=True)
class Cond:
    type: str
    status: bool
    reason: str
    message: str = ""


def with_ready(conditions: Sequence[Cond]) -> list[Cond]:
    """``conditions`` and a Ready that is True only when all of them are, naming the ones that are not."""
    failing = [c for c in conditions if not c.status]
    if not failing:
        ready = Cond(READY, True, READY)
    else:
        ready = Cond(READY, False, failing[0].reason, "; ".join(c.message or c.reason for c in failing))
    return [*conditions, ready]


def body(
    conditions: Sequence[Cond], old: Sequence[Mapping[str, Any]], generation: int, now: datetime.datetime
) -> list[dict[str, Any]]:
    before = {str(c.get("type")): c for c in old if isinstance(c, Mapping)}
    out = []
    for c in conditions:
        status = "True" if c.status else "False"
        prev = before.get(c.type)
        since = (
            str(prev["lastTransitionTime"])
            if prev and prev.get("status") == status and prev.get("lastTransitionTime")
            else format_time(now)
        )
        out.append(
            {
                "type": c.type,
                "status": status,
                "reason": c.reason,
                "message": redact(c.message)[:1024],
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return sorted(out, key=lambda c: c["type"])
