"""Setting conditions and rolling them up into Ready, the way Karpenter core does.

Pure functions over tuples of :class:`Condition`: ``lastTransitionTime`` moves only when the
status, reason or message of a condition actually changes, so re-running a reconcile with the
same observations produces an identical status (and therefore no API write).
"""

from __future__ import annotations

import datetime

from provisioner.claims.model import DEPENDENTS, Condition, ConditionType, Status

#: Reasons used on NodeClaim v1 (metav1.Condition requires a CamelCase reason).
AWAITING_RECONCILIATION = "AwaitingReconciliation"
UNHEALTHY_DEPENDENTS = "UnhealthyDependents"


def set_condition(
    conditions: tuple[Condition, ...], new: Condition, now: datetime.datetime
) -> tuple[Condition, ...]:
    """Replace (or add) the condition of ``new.type``; keep its transition time if nothing changed."""
    out: list[Condition] = []
    found = False
    for c in conditions:
        if c.type != new.type:
            out.append(c)
            continue
        found = True
        if c.same_state(new):
            out.append(c)
        else:
            out.append(
                Condition(new.type, new.status, new.reason, new.message, now)
                if c.status != new.status or c.last_transition_time is None
                else Condition(new.type, new.status, new.reason, new.message, c.last_transition_time)
            )
    if not found:
        out.append(Condition(new.type, new.status, new.reason, new.message, now))
    return tuple(sorted(out, key=lambda c: c.type.value))


def roll_up_ready(conditions: tuple[Condition, ...], now: datetime.datetime) -> tuple[Condition, ...]:
    """Ready is True when every dependent is True; else False (any False) or Unknown, naming them."""
    by_type = {c.type: c for c in conditions}
    unhealthy = [by_type.get(t) or Condition(t, Status.UNKNOWN) for t in DEPENDENTS]
    unhealthy = [c for c in unhealthy if c.status != Status.TRUE]
    if not unhealthy:
        ready = Condition(ConditionType.READY, Status.TRUE, ConditionType.READY.value)
    else:
        status = Status.FALSE if any(c.status == Status.FALSE for c in unhealthy) else Status.UNKNOWN
        message = ", ".join(f"{c.type.value}={c.status.value}" for c in unhealthy)
        ready = Condition(ConditionType.READY, status, UNHEALTHY_DEPENDENTS, message)
    return set_condition(conditions, ready, now)
