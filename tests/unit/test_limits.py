"""Node/GPU limits and the NotReady repair brake."""

from __future__ import annotations

from typing import Any

from provisioner.claims.model import Claim, ClaimStatus, Condition, ConditionType, Status
from provisioner.lifecycle import limits
from provisioner.settings import Settings


def holder(
    name: str, gpus: str | None = "2", reason: str = "Launched", status: Status = Status.TRUE
) -> Claim:
    capacity = {"nvidia.com/gpu": gpus} if gpus is not None else {}
    return Claim(
        dialect="nodeclaim",
        name=name,
        uid=f"u-{name}",
        status=ClaimStatus(
            capacity=capacity, conditions=(Condition(ConditionType.LAUNCHED, status, reason, ""),)
        ),
    )


def test_no_limits_by_default() -> None:
    assert limits.check([holder(f"ws{i}") for i in range(50)], 8, {}, Settings.from_env({})) is None


def test_node_limit_counts_held_and_in_flight_instances() -> None:
    settings = Settings.from_env({"MAX_NODES": "2"})
    launching = holder("ws2", gpus=None, reason="Launching", status=Status.UNKNOWN)
    assert limits.holds_instance(launching)
    assert limits.check([holder("ws1")], 2, {}, settings) is None
    waiting = limits.check([holder("ws1"), launching], 2, {}, settings)
    assert waiting is not None and not waiting.done
    (condition,) = waiting.conditions
    assert (condition.status, condition.reason) == (Status.FALSE, "NodeLimitReached")
    assert waiting.events[0].reason == "NodeLimitReached"
    assert waiting.requeue_after


def test_claims_waiting_for_capacity_hold_nothing() -> None:
    settings = Settings.from_env({"MAX_NODES": "1"})
    short = holder("ws1", gpus=None, reason="InsufficientCapacity:QuotaExceeded", status=Status.FALSE)
    assert not limits.holds_instance(short)
    assert limits.check([], 2, {}, settings) is None


def test_gpu_limit_uses_capacity_or_the_instance_types_gpus() -> None:
    settings = Settings.from_env({"MAX_GPUS": "4"})
    unlaunched = Claim(
        dialect="machine",
        name="ws3",
        uid="u3",
        labels={"node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4"},
        status=ClaimStatus(conditions=(Condition(ConditionType.LAUNCHED, Status.FALSE, "Launching", ""),)),
    )
    gpus = {"standard_nc24ads_a100_v4": 1}
    assert limits.check([holder("ws1", "2"), unlaunched], 1, gpus, settings) is None  # 2 + 1 + 1 = 4
    over = limits.check([holder("ws1", "2"), unlaunched], 2, gpus, settings)  # 2 + 1 + 2 = 5
    assert over is not None and over.conditions[0].reason == "GPULimitReached"


def node(ready: str) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": "Ready", "status": ready}]}}


def test_repair_pauses_only_when_many_nodes_are_unhealthy_at_once() -> None:
    single = limits.repair_brake([node("False")])
    assert (single.paused, single.unhealthy, single.total) == (False, 1, 1)  # a single sick node is repaired
    assert limits.repair_brake([node("False")] + [node("True")] * 9).paused is False
    assert limits.repair_brake([node("Unknown")] * 2 + [node("True")] * 3).paused is True  # 40%
    assert limits.repair_brake([node("Unknown")] * 10).paused is True  # an outage: keep the nodes
