"""Initialization: the node is usable for the workload the claim was made for.

Initialized when the Node is Ready, no startup taint and no known ephemeral taint remains, every
non-zero resource the claim requests is allocatable (except storage, which sizes the OS disk and
is never a node resource), and every extended resource the instance type promises (GPUs) has been
registered by its device plugin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.claims.dialects import dialect_of, parse_taints
from provisioner.claims.model import INITIALIZED_LABEL, Claim, Condition, ConditionType, Status
from provisioner.lifecycle.result import Event, EventType, PatchNode, StatusDelta, StepResult
from provisioner.quantity import is_zero

Node = Mapping[str, Any]

#: Taints the node lifecycle controller or cloud provider put on nodes that are not ready yet.
EPHEMERAL_TAINTS = frozenset(
    {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.cloudprovider.kubernetes.io/uninitialized",
        "karpenter.sh/unregistered",
    }
)
#: Requests that describe disks, not node resources.
_EXEMPT_REQUESTS = frozenset({"storage", "ephemeral-storage"})
#: Resources every node reports; only other (extended) capacity must wait for a device plugin.
_STANDARD_RESOURCES = frozenset({"cpu", "memory", "pods", "ephemeral-storage", "storage"})


def node_ready(node: Node) -> tuple[Status, str | None]:
    """Status of the Node's Ready condition and its lastTransitionTime."""
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            try:
                return Status(c.get("status", "Unknown")), c.get("lastTransitionTime")
            except ValueError:
                return Status.UNKNOWN, c.get("lastTransitionTime")
    return Status.UNKNOWN, None


def blocking(claim: Claim, node: Node) -> tuple[str, str] | None:
    """(reason, message) of the first thing keeping the node from being initialized, or None."""
    ready, _ = node_ready(node)
    if ready != Status.TRUE:
        return "NodeNotReady", "node is not ready"
    taints = parse_taints((node.get("spec") or {}).get("taints"))
    startup = {(t.key, t.effect) for t in claim.startup_taints}
    for t in taints:
        if (t.key, t.effect) in startup:
            return "StartupTaintsExist", f"startup taint {t} is still on the node"
        if t.key in EPHEMERAL_TAINTS:
            return "EphemeralTaintsExist", f"taint {t} is still on the node"
    allocatable: Mapping[str, str] = (node.get("status") or {}).get("allocatable") or {}
    capacity: Mapping[str, str] = (node.get("status") or {}).get("capacity") or {}
    for name, qty in claim.requests.items():
        if name in _EXEMPT_REQUESTS or is_zero(qty):
            continue
        if is_zero(allocatable.get(name, "0")):
            return "ResourceNotRegistered", f"requested resource {name} is not allocatable on the node yet"
    for name, qty in claim.status.capacity.items():
        if name in _STANDARD_RESOURCES or is_zero(qty):
            continue
        if is_zero(capacity.get(name, "0")):
            return "ResourceNotRegistered", f"resource {name} is not registered on the node yet"
    return None


def check(claim: Claim, node: Node) -> StepResult:
    problem = blocking(claim, node)
    if problem is not None:
        reason, message = problem
        return StepResult(
            conditions=(
                Condition(ConditionType.INITIALIZED, dialect_of(claim).pending_status, reason, message),
            ),
            done=False,
        )
    newly = not claim.status.is_true(ConditionType.INITIALIZED)
    name = (node.get("metadata") or {}).get("name", "")
    label = initialized_label_patch(node)
    node_status = node.get("status") or {}
    # A cloud that could not tell the instance type's capacity (e.g. Azure's SKU listing denied)
    # left it empty: the Node's own is the truth.
    capacity = None if claim.status.capacity else dict(node_status.get("capacity") or {}) or None
    return StepResult(
        conditions=(Condition(ConditionType.INITIALIZED, Status.TRUE, ConditionType.INITIALIZED.value),),
        status=StatusDelta(allocatable=dict(node_status.get("allocatable") or {}), capacity=capacity),
        events=(Event(EventType.NORMAL, "Initialized", f"node {name} initialized"),) if newly else (),
        actions=(PatchNode(name, label),) if label else (),
    )


def initialized_label_patch(node: Node) -> dict[str, Any] | None:
    labels = (node.get("metadata") or {}).get("labels") or {}
    if labels.get(INITIALIZED_LABEL) == "true":
        return None
    return {"metadata": {"labels": {INITIALIZED_LABEL: "true"}}}
