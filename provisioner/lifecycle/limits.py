"""Guards on the bill and on the blast radius.

* Node and GPU limits: a claim that would take the managed fleet past ``MAX_NODES`` nodes or
  ``MAX_GPUS`` GPUs waits (Launched False, retried with backoff) instead of launching.
* Repair brake: NotReady repair deletes claims; when many managed nodes are unhealthy at once
  (a network partition, an API server outage) that would throw away every GPU node, so repair
  pauses while more than a fifth of them (and more than one) are unhealthy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.claims.model import Claim, Condition, ConditionType, Status
from provisioner.cloud.types import GPU_RESOURCE
from provisioner.lifecycle.initialization import node_ready
from provisioner.lifecycle.request import instance_type_candidates
from provisioner.lifecycle.result import Event, EventType, StepResult
from provisioner.quantity import parse_quantity
from provisioner.settings import Settings

#: Launched reasons meaning "an instance exists or is being created for this claim".
_HOLDING = ("Launching",)
#: Share of managed nodes that may be unhealthy before NotReady repair pauses.
REPAIR_UNHEALTHY_SHARE = 0.2


#: Launched reasons of claims waiting for a slot under MAX_NODES / MAX_GPUS (woken when one frees).
WAITING_FOR_SLOT = frozenset({"NodeLimitReached", "GPULimitReached"})


def holds_instance(claim: Claim) -> bool:
    """Whether the claim has (or is getting) an instance; a deleting claim holds its instance until
    termination is done with it."""
    launched = claim.status.condition(ConditionType.LAUNCHED)
    if launched is None:
        return False
    return launched.status == Status.TRUE or launched.reason in _HOLDING


def waiting_for_slot(claim: Claim) -> bool:
    launched = claim.status.condition(ConditionType.LAUNCHED)
    return launched is not None and launched.reason in WAITING_FOR_SLOT


def gpus_of(claim: Claim, gpus_by_type: Mapping[str, int]) -> int:
    """GPUs the claim holds: its reported capacity, else what its preferred instance type has (a
    claim whose create is in flight has no capacity yet, but holds the GPUs all the same)."""
    capacity = claim.status.capacity.get(GPU_RESOURCE)
    if capacity is not None:
        try:
            return int(parse_quantity(capacity))
        except ValueError:
            return 0
    for instance_type in (
        claim.labels.get("node.kubernetes.io/instance-type"),
        *instance_type_candidates(claim),
    ):
        if instance_type:
            return gpus_by_type.get(instance_type.lower(), 0)
    return 0


def check(
    holders: Iterable[Claim],
    candidate_gpus: int,
    gpus_by_type: Mapping[str, int],
    settings: Settings,
) -> StepResult | None:
    """None when one more node with ``candidate_gpus`` GPUs stays within the limits, given the
    other claims that hold an instance (``holders``); else why the claim has to wait."""
    if not settings.max_nodes and not settings.max_gpus:
        return None
    holding = list(holders)
    problem = None
    if settings.max_nodes and len(holding) + 1 > settings.max_nodes:
        problem = (
            "NodeLimitReached",
            f"{len(holding)} nodes already held; MAX_NODES is {settings.max_nodes}",
        )
    elif settings.max_gpus:
        used = sum(gpus_of(c, gpus_by_type) for c in holding)
        if used + candidate_gpus > settings.max_gpus:
            problem = (
                "GPULimitReached",
                f"{used} GPUs already held and this node adds {candidate_gpus}; MAX_GPUS is {settings.max_gpus}",
            )
    if problem is None:
        return None
    reason, message = problem
    return StepResult(
        conditions=(Condition(ConditionType.LAUNCHED, Status.FALSE, reason, message),),
        events=(Event(EventType.WARNING, reason, message),),
        requeue_after=settings.capacity_retry_max,
        done=False,
    )


@dataclass(frozen=True)
class RepairBrake:
    unhealthy: int
    total: int

    @property
    def paused(self) -> bool:
        return self.unhealthy > max(1, REPAIR_UNHEALTHY_SHARE * self.total)


def repair_brake(our_nodes: Iterable[Mapping[str, Any]]) -> RepairBrake:
    """The brake over the nodes of claims we manage (never anyone else's: next to another
    provisioner, its healthy nodes must not hide an outage of ours)."""
    total = unhealthy = 0
    for node in our_nodes:
        total += 1
        status, _ = node_ready(node)
        if status != Status.TRUE:
            unhealthy += 1
    return RepairBrake(unhealthy, total)
