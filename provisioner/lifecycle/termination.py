"""Termination decisions: the drain deadline, what the claim reports while its instance goes, and
the events a drain and an instance delete produce. The I/O is ``provisioner.termination``'s."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from provisioner.claims.dialects import dialect_of
from provisioner.claims.model import Claim, Condition, ConditionType, Status
from provisioner.cloud.errors import CloudError
from provisioner.lifecycle.result import Event, EventType
from provisioner.settings import Settings

#: Why an instance is not ours to delete (it is untagged and not recognisably made for the claim).
FOREIGN_INSTANCE = (
    "it is not tagged as gpu-provisioner's and its node labels do not show it was made for this claim"
)


def drain_deadline(
    deleted_at: datetime.datetime | None, grace: float | None, settings: Settings
) -> datetime.datetime | None:
    """When a drain stops waiting: deletion + the claim's terminationGracePeriod, else + the
    configured drain timeout; None when neither is set (wait as long as it takes)."""
    limit = grace if grace is not None else (settings.drain_timeout or None)
    if limit is None or deleted_at is None:
        return None
    return deleted_at + datetime.timedelta(seconds=limit)


def claim_deadline(claim: Claim, settings: Settings) -> datetime.datetime | None:
    return drain_deadline(claim.deletion_timestamp, claim.termination_grace_period, settings)


def instance_terminating(claim: Claim) -> Condition | None:
    """InstanceTerminating=True, for dialects that report it and claims not showing it yet. Only
    written once the cloud accepted the delete (or reports the instance deleting)."""
    if not dialect_of(claim).has_instance_terminating or claim.status.is_true(
        ConditionType.INSTANCE_TERMINATING
    ):
        return None
    return Condition(
        ConditionType.INSTANCE_TERMINATING, Status.TRUE, "InstanceTerminating", "instance is terminating"
    )


def delete_refused(instance: str, err: CloudError) -> Event:
    return Event(
        EventType.WARNING,
        "FailedTerminatingInstance",
        f"deleting instance {instance} failed ({err.code or type(err).__name__}): {err.message}; retrying",
    )


def delete_started(instance: str) -> Event:
    return Event(EventType.NORMAL, "TerminatingInstance", f"deleting instance {instance}")


def not_deleted(instance: str, why: str) -> Event:
    return Event(
        EventType.WARNING,
        "InstanceNotDeleted",
        f"instance {instance} was not deleted: {why}; delete it by hand if it is no longer needed",
    )


def foreign_instance(instance: str, why: str) -> Event:
    return Event(
        EventType.WARNING,
        "ForeignInstance",
        f"instance {instance} is not gpu-provisioner's ({why}); it will not be deleted with this claim",
    )


def evicted(node: str, pod: str) -> Event:
    return Event(EventType.NORMAL, "Evicted", f"evicted pod {pod} from node {node}")


def deleted_before_deadline(node: str, pod: str, grace: int) -> Event:
    return Event(
        EventType.WARNING,
        "DeletingPodBeforeDeadline",
        f"node {node}: deleting pod {pod} with {grace}s grace period so that it ends before the drain deadline",
    )


def eviction_blocked(node: str, blocked: Sequence[str]) -> Event:
    return Event(
        EventType.WARNING, "FailedDraining", f"node {node}: eviction blocked for {'; '.join(blocked)}"
    )


def drain_timed_out(node: str, left: int) -> Event:
    return Event(
        EventType.WARNING,
        "DrainTimeout",
        f"node {node}: drain time limit reached with {left} pod(s) left; terminating anyway",
    )


def waiting_for_volumes(node: str, attachments: Sequence[str]) -> Event:
    return Event(
        EventType.NORMAL,
        "WaitingOnVolumeDetachment",
        f"node {node}: waiting for {len(attachments)} volume(s) to detach ({', '.join(attachments[:5])})",
    )
