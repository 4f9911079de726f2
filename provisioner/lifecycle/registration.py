"""Registration: find the claim's Node and make it carry everything the claim promised.

A Node belongs to a claim when its ``spec.providerID`` equals the claim's, or when its agent-pool
label names the claim's instance (AKS only reports the VMSS instance once the node exists). The
Node must end with every claim label and annotation, the claim's taints, an ownerReference to the claim, our
termination finalizer and ``karpenter.sh/registered=true``; the ``karpenter.sh/unregistered``
taint is removed if present (AKS never adds it, so it is never waited for).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from provisioner.claims.dialects import dialect_of, parse_taints, taint_body
from provisioner.claims.model import (
    ANNOTATION_PREFIX,
    REGISTERED_LABEL,
    TERMINATION_FINALIZER,
    UNREGISTERED_TAINT_KEY,
    Claim,
    Condition,
    ConditionType,
    Status,
)
from provisioner.cloud.types import Taint
from provisioner.lifecycle.request import node_labels
from provisioner.lifecycle.result import Event, EventType, StepResult

Node = Mapping[str, Any]

#: Claim annotations that are bookkeeping of their writer, not facts about the node.
_PRIVATE_ANNOTATION_PREFIXES = (f"{ANNOTATION_PREFIX}/", "kubectl.kubernetes.io/")

#: Labels that name the agent pool a node belongs to (AKS sets both).
POOL_LABELS = ("kubernetes.azure.com/agentpool", "agentpool")


def node_matches(node: Node, claim: Claim, instance_name: str) -> bool:
    provider_id = (node.get("spec") or {}).get("providerID") or ""
    if claim.status.provider_id and provider_id == claim.status.provider_id:
        return True
    labels = (node.get("metadata") or {}).get("labels") or {}
    return any(labels.get(key) == instance_name for key in POOL_LABELS)


def find_node(nodes: Iterable[Node], claim: Claim, instance_name: str) -> Node | None:
    matches = [n for n in nodes if node_matches(n, claim, instance_name)]
    # Prefer a node that is not being deleted (a replacement may join while the old one drains).
    matches.sort(key=lambda n: (n.get("metadata") or {}).get("deletionTimestamp") is not None)
    return matches[0] if matches else None


def owned_by(node: Node, claim: Claim) -> bool:
    """Whether the Node carries an ownerReference to this claim (set at registration)."""
    owners = (node.get("metadata") or {}).get("ownerReferences") or ()
    return any(o.get("uid") == claim.uid for o in owners)


def find_owned_node(nodes: Iterable[Node], claim: Claim) -> Node | None:
    """The Node this claim registered, if any."""
    return next((n for n in nodes if owned_by(n, claim)), None)


def replaced_nodes(nodes: Iterable[Node], claim: Claim, current: str) -> list[Node]:
    """Nodes this claim registered that are being deleted and are no longer its node (AKS replaced
    the VM during an upgrade or reimage): they only wait for our finalizer to go."""
    out = []
    for n in nodes:
        meta = n.get("metadata") or {}
        if meta.get("name") == current or not meta.get("deletionTimestamp"):
            continue
        if TERMINATION_FINALIZER in (meta.get("finalizers") or ()) and owned_by(n, claim):
            out.append(n)
    return out


def desired_node_patch(node: Node, claim: Claim, extra_labels: Mapping[str, str]) -> dict[str, Any] | None:
    """A merge patch bringing the node in line with the claim, or None when it already is."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    want_labels = {**node_labels(claim), **extra_labels, REGISTERED_LABEL: "true"}
    label_patch = {k: v for k, v in want_labels.items() if labels.get(k) != v}

    patch: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    if label_patch:
        metadata["labels"] = label_patch
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    annotation_patch = {
        k: v
        for k, v in claim.annotations.items()
        if not k.startswith(_PRIVATE_ANNOTATION_PREFIXES) and annotations.get(k) != v
    }
    if annotation_patch:
        metadata["annotations"] = annotation_patch

    finalizers = list(meta.get("finalizers") or [])
    if TERMINATION_FINALIZER not in finalizers:
        metadata["finalizers"] = [*finalizers, TERMINATION_FINALIZER]

    if not owned_by(node, claim):
        owners = list(meta.get("ownerReferences") or [])
        metadata["ownerReferences"] = [*owners, dialect_of(claim).owner_reference(claim)]

    current = parse_taints(spec.get("taints"))
    want = [t for t in current if t.key != UNREGISTERED_TAINT_KEY]
    have = {(t.key, t.effect) for t in want}
    for t in claim.taints:
        if (t.key, t.effect) not in have:
            want.append(t)
            have.add((t.key, t.effect))
    if want != list(current):
        patch["spec"] = {"taints": [_taint_with_time(t, spec.get("taints")) for t in want]}

    if metadata:
        patch["metadata"] = metadata
    if metadata.get("finalizers") or metadata.get("ownerReferences"):
        # Lists are replaced whole by a merge patch; guard against a concurrent writer.
        patch["metadata"]["resourceVersion"] = meta.get("resourceVersion")
    return patch or None


def _taint_with_time(t: Taint, existing: Any) -> dict[str, Any]:
    # Keep fields we do not model (timeAdded) for taints that were already there.
    for e in existing or ():
        if e.get("key") == t.key and e.get("effect") == t.effect:
            return dict(e)
    return taint_body(t)


def registered(claim: Claim, node: Node) -> StepResult:
    meta = node.get("metadata") or {}
    provider_id = (node.get("spec") or {}).get("providerID") or claim.status.provider_id
    newly = not claim.status.is_true(ConditionType.REGISTERED)
    return StepResult(
        conditions=(Condition(ConditionType.REGISTERED, Status.TRUE, ConditionType.REGISTERED.value),),
        status={"node_name": meta.get("name", ""), "provider_id": provider_id},
        events=(Event(EventType.NORMAL, "Registered", f"node {meta.get('name')} registered"),)
        if newly
        else (),
    )


def not_registered(claim: Claim) -> StepResult:
    return StepResult(
        conditions=(
            Condition(
                ConditionType.REGISTERED,
                dialect_of(claim).pending_status,
                "NodeNotFound",
                "waiting for the node to join the cluster",
            ),
        ),
        done=False,
    )
