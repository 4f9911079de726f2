"""Launch: from a claim to a running cloud instance, without ever waiting on the cloud.

``cloud.create`` starts the operation (or adopts the one already running) and returns; these
functions turn what it returned, or the error it raised, into the claim's ``Launched`` condition,
events and the next reconcile time. Capacity shortages keep the claim and retry with exponential
backoff, written so that Kaito recognises them and stops creating replacement claims.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import replace

from provisioner.claims.dialects import dialect_of
from provisioner.claims.model import (
    CAPACITY_TYPE_LABEL,
    INSTANCE_TYPE_LABEL,
    ZONE_LABEL,
    Claim,
    Condition,
    ConditionType,
    Status,
)
from provisioner.cloud.errors import (
    ALL_INSTANCE_TYPES_UNAVAILABLE,
    CloudError,
    Deferred,
    InsufficientCapacity,
    InvalidSpec,
    NotFound,
    Throttled,
)
from provisioner.cloud.types import Instance, InstanceState
from provisioner.lifecycle.request import InvalidClaim
from provisioner.lifecycle.result import (
    ClaimMetadata,
    DeleteClaim,
    DeleteInstance,
    Event,
    EventType,
    StatusDelta,
    StepResult,
)
from provisioner.settings import Settings

# Kaito compares a Machine's MachineLaunched message with ALL_INSTANCE_TYPES_UNAVAILABLE for equality
# (and looks for it in a NodeClaim's Launched message) to stop creating replacement claims while
# capacity is short.

#: Cap on how long a cloud's Retry-After is honoured.
MAX_RETRY_AFTER = 300.0

_REASON_SAFE = re.compile(r"[^A-Za-z0-9_]")


def _reason(*parts: str | None) -> str:
    """A condition reason valid for metav1.Condition: CamelCase words joined by ':'."""
    words = [_REASON_SAFE.sub("", p) for p in parts if p]
    return ":".join(w for w in words if w) or "Unknown"


def backoff(attempt: int, base: float, cap: float) -> float:
    """Delay before retry number ``attempt`` (1-based): base, 2*base, 4*base ... capped."""
    exponent = min(max(0, attempt - 1), 32)  # 2**32 * any base is past every sensible cap
    return float(min(cap, base * 2**exponent))


def _pending(claim: Claim, reason: str, message: str) -> Condition:
    return Condition(ConditionType.LAUNCHED, dialect_of(claim).pending_status, reason, message)


def invalid(claim: Claim, err: InvalidClaim | InvalidSpec) -> StepResult:
    """The spec can never launch: say why, once, and stop (no retry, no cloud call)."""
    reason = err.reason if isinstance(err, InvalidClaim) else _reason("InvalidSpec", err.code)
    message = err.message
    return StepResult(
        conditions=(Condition(ConditionType.LAUNCHED, Status.FALSE, reason, message),),
        events=(Event(EventType.WARNING, "LaunchFailed", f"{reason}: {message}"),),
        done=False,
    )


def capacity_detail(err: InsufficientCapacity) -> str:
    """The cloud's words plus what the error's fields add (size, family, vCPUs needed and free)."""
    text = str(err)
    if text.startswith(ALL_INSTANCE_TYPES_UNAVAILABLE):
        text = text[len(ALL_INSTANCE_TYPES_UNAVAILABLE) :].lstrip(" :")
    facts = []
    if err.instance_type and err.instance_type not in text:
        facts.append(f"instance type {err.instance_type}")
    if err.family and err.family not in text:
        facts.append(f"family {err.family}")
    if err.vcpus_needed is not None and err.vcpus_free is not None:
        counts = f"{err.vcpus_needed} vCPUs needed, {err.vcpus_free} free"
        if f"{err.vcpus_needed} vCPUs" not in text:  # the cloud's words may say it already
            facts.append(counts)
    extra = "; ".join(facts)
    if not extra:
        return text
    return f"{text} ({extra})" if text else extra


def insufficient_capacity(
    claim: Claim, err: InsufficientCapacity, attempt: int, settings: Settings
) -> StepResult:
    """No candidate had capacity: Launched False with Kaito's text, one event, retry with backoff."""
    detail = capacity_detail(err)
    message = ALL_INSTANCE_TYPES_UNAVAILABLE
    if not dialect_of(claim).capacity_message_exact:
        message = f"{ALL_INSTANCE_TYPES_UNAVAILABLE}: {detail}"
    event = Event(
        EventType.WARNING, "InsufficientCapacityError", f"{ALL_INSTANCE_TYPES_UNAVAILABLE}: {detail}"
    )
    condition = Condition(
        ConditionType.LAUNCHED, Status.FALSE, _reason("InsufficientCapacity", err.code), message
    )
    if settings.delete_on_insufficient_capacity:
        return StepResult(conditions=(condition,), events=(event,), actions=(DeleteClaim(),), done=False)
    return StepResult(
        conditions=(condition,),
        events=(event,),
        requeue_after=backoff(attempt, settings.capacity_retry_base, settings.capacity_retry_max),
        done=False,
    )


def deferred(err: Deferred) -> StepResult:
    """The provider held the create back (its own rate limit): look again when it says, quietly."""
    return StepResult(requeue_after=min(MAX_RETRY_AFTER, err.retry_after or 1.0), done=False)


def cloud_error(claim: Claim, err: CloudError, attempt: int, settings: Settings) -> StepResult:
    """Outcome of an error raised by ``cloud.create``.

    Capacity and invalid-spec errors are decisions about the claim. Throttling and transient errors
    say nothing about it: the claim shows them, and the work queue retries it with its per-claim
    backoff (never sooner than the cloud's Retry-After).
    """
    if isinstance(err, InsufficientCapacity):
        return insufficient_capacity(claim, err, attempt, settings)
    if isinstance(err, InvalidSpec):
        return invalid(claim, err)
    if isinstance(err, Throttled):
        return StepResult(
            conditions=(
                _pending(claim, "Throttled", "the cloud is throttling requests; retrying with backoff"),
            ),
            events=(Event(EventType.WARNING, "LaunchThrottled", str(err)),),
            requeue_after=min(MAX_RETRY_AFTER, err.retry_after) if err.retry_after else None,
            backoff=True,
            done=False,
        )
    # The condition says what kind of failure it is (stable across retries: no status write per
    # attempt); the event carries the cloud's full words.
    what = f"the cloud failed ({err.code or type(err).__name__}); retrying with backoff"
    return StepResult(
        conditions=(_pending(claim, _reason("LaunchRetrying", err.code), what),),
        events=(Event(EventType.WARNING, "LaunchFailed", str(err)),),
        backoff=True,
        done=False,
    )


#: Longest interval between reads of an in-flight create.
MAX_LAUNCH_POLL = 60.0


def poll_interval(claim: Claim, settings: Settings, now: datetime.datetime | None) -> float:
    """Read an in-flight create often at first, then less: a tenth of the claim's age, capped.

    Registration does not wait on this (the Node watch drives it); polling only catches failures.
    """
    base = settings.launch_poll_interval
    if now is None or claim.creation_timestamp is None:
        return base
    age = (now - claim.creation_timestamp).total_seconds()
    return max(base, min(MAX_LAUNCH_POLL, age / 10))


def instance_observed(
    claim: Claim,
    instance: Instance,
    attempt: int,
    settings: Settings,
    now: datetime.datetime | None = None,
    *,
    node_joined: bool = False,
    creating_since: datetime.datetime | None = None,
) -> StepResult:
    """Outcome of reading back the instance ``cloud.create`` started or adopted.

    ``node_joined``: a Node of the instance exists. AKS finishes a pool's operation only after its
    node is up, so a joined node proves the instance runs while the cloud still says "creating".
    ``creating_since``: when we first saw this create in flight, for the launch time limit.
    """
    if instance.state == InstanceState.RUNNING or (instance.state == InstanceState.CREATING and node_joined):
        return launched(claim, instance)
    if instance.state == InstanceState.FAILED:
        failure = instance.failure or CloudError(f"instance {instance.name} failed to provision")
        result = cloud_error(claim, failure, attempt, settings)
        # A failed instance is removed so the next attempt starts clean (possibly with another type).
        return replace(result, actions=(DeleteInstance(instance.name, instance.version), *result.actions))
    if (
        instance.state == InstanceState.CREATING
        and now is not None
        and creating_since is not None
        and (now - creating_since).total_seconds() >= settings.launch_timeout
    ):
        message = (
            f"instance {instance.name} has been creating for more than {settings.launch_timeout:.0f}s; "
            "deleting claim"
        )
        return StepResult(
            conditions=(Condition(ConditionType.LAUNCHED, Status.FALSE, "LaunchTimeout", message),),
            events=(Event(EventType.WARNING, "LaunchTimeout", message),),
            actions=(DeleteClaim(),),
            done=False,
        )
    state = "being deleted" if instance.state == InstanceState.DELETING else "being created"
    return StepResult(
        conditions=(
            _pending(claim, "Launching", f"instance {instance.name} ({instance.instance_type}) is {state}"),
        ),
        requeue_after=poll_interval(claim, settings, now),
        done=False,
    )


def launched(claim: Claim, instance: Instance) -> StepResult:
    labels = {
        INSTANCE_TYPE_LABEL: instance.instance_type,
        CAPACITY_TYPE_LABEL: instance.capacity_type.value,
    }
    if instance.zone:
        labels[ZONE_LABEL] = instance.zone
    status = StatusDelta(
        capacity=dict(instance.capacity),
        provider_id=instance.provider_id or None,
        image_id=instance.image_id or None,
        allocatable=None if claim.status.allocatable else dict(instance.capacity),
    )
    newly = not claim.status.is_true(ConditionType.LAUNCHED)
    return StepResult(
        conditions=(Condition(ConditionType.LAUNCHED, Status.TRUE, ConditionType.LAUNCHED.value),),
        status=status,
        actions=(ClaimMetadata(labels=labels),),
        events=(
            (
                Event(
                    EventType.NORMAL,
                    "Launched",
                    f"launched {instance.instance_type} instance {instance.name}",
                ),
            )
            if newly
            else ()
        ),
    )


def vanished(claim: Claim, err: NotFound) -> StepResult:
    """A launched claim whose instance no longer exists: the claim goes, so its owner makes a new one."""
    return StepResult(
        events=(
            Event(EventType.WARNING, "InstanceNotFound", f"instance is gone ({err.message}); deleting claim"),
        ),
        actions=(DeleteClaim(),),
        done=False,
    )
