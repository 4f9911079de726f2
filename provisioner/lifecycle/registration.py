"""Registration: find the claim's Node and make it carry everything the claim promised.

Which Nodes belong to an instance is the cloud's knowledge (``CloudProvider.instance_of_node``);
the store indexes Nodes by it, and this module picks the claim's Node among them. At registration —
once, as Karpenter does — the Node gets every claim label and annotation, the claim's taints and
startup taints, ``karpenter.sh/registered=true``, and loses the ``karpenter.sh/unregistered``
taint (AKS never adds it, so it is never waited for). Changes made to the Node afterwards are left
alone; only what ownership needs (our finalizer, the ownerReference to the claim, our mark) is
restored if it goes missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from provisioner.claims.dialects import dialect_of, parse_taints, parse_time, taint_body
from provisioner.claims.model import (
    ANNOTATION_PREFIX,
    MANAGED_BY_ANNOTATION,
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
from provisioner.lifecycle.result import Event, EventType, PatchNode, ReleaseNode, StatusDelta, StepResult

Node = Mapping[str, Any]

#: Claim annotations that are bookkeeping of their writer, not facts about the node.
_PRIVATE_ANNOTATION_PREFIXES = (f"{ANNOTATION_PREFIX}/", "kubectl.kubernetes.io/")


def _meta(node: Node) -> Mapping[str, Any]:
    return node.get("metadata") or {}


def deleting(node: Node) -> bool:
    return bool(_meta(node).get("deletionTimestamp"))


def owned_by(node: Node, claim: Claim) -> bool:
    """Whether the Node carries an ownerReference to this claim (set at registration)."""
    return any(o.get("uid") == claim.uid for o in _meta(node).get("ownerReferences") or ())


def _older_than(node: Node, claim: Claim) -> bool:
    created = parse_time(_meta(node).get("creationTimestamp"))
    return created is not None and claim.creation_timestamp is not None and created < claim.creation_timestamp


def find_node(instance_nodes: Iterable[Node], claim: Claim) -> Node | None:
    """The claim's Node among the Nodes of its instance: the one with the claim's providerID, else
    the one it owns, else any — preferring one that is not being deleted (a replacement may join
    while the old one drains). A Node older than the claim is never its node: the claim's instance
    did not exist yet (both times come from the API server's clock) — unless the Node already names
    the claim as its owner (a predecessor registered it: the claim existed before that was written)."""
    nodes = [n for n in instance_nodes if owned_by(n, claim) or not _older_than(n, claim)]

    def rank(n: Node) -> tuple[bool, bool, bool]:
        provider_id = (n.get("spec") or {}).get("providerID") or ""
        same_id = bool(claim.status.provider_id) and provider_id == claim.status.provider_id
        return (deleting(n), not same_id, not owned_by(n, claim))

    nodes.sort(key=rank)
    return nodes[0] if nodes else None


def registration_patch(node: Node, claim: Claim, controller_name: str) -> PatchNode | None:
    """Everything the claim promised, applied to the Node once (when the claim registers)."""
    meta = _meta(node)
    spec = node.get("spec") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    want_labels = {**node_labels(claim), REGISTERED_LABEL: "true"}
    metadata: dict[str, Any] = {}
    label_patch = {k: v for k, v in want_labels.items() if labels.get(k) != v}
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
    patch: dict[str, Any] = {}
    current = parse_taints(spec.get("taints"))
    want = [t for t in current if t.key != UNREGISTERED_TAINT_KEY]
    have = {(t.key, t.effect) for t in want}
    for t in (*claim.taints, *claim.startup_taints):
        if (t.key, t.effect) not in have:
            want.append(t)
            have.add((t.key, t.effect))
    if want != list(current):
        patch["spec"] = {"taints": [_taint_with_time(t, spec.get("taints")) for t in want]}
    return _with_ownership(node, claim, controller_name, patch, metadata)


def ownership_patch(node: Node, claim: Claim, controller_name: str) -> PatchNode | None:
    """Our finalizer, the ownerReference and our mark, if any of them is missing."""
    return _with_ownership(node, claim, controller_name, {}, {})


def _with_ownership(
    node: Node, claim: Claim, controller_name: str, patch: dict[str, Any], metadata: dict[str, Any]
) -> PatchNode | None:
    meta = _meta(node)
    finalizers = list(meta.get("finalizers") or [])
    if TERMINATION_FINALIZER not in finalizers:
        metadata["finalizers"] = [*finalizers, TERMINATION_FINALIZER]
    if not owned_by(node, claim):
        owners = list(meta.get("ownerReferences") or [])
        metadata["ownerReferences"] = [*owners, dialect_of(claim).owner_reference(claim)]
    if (meta.get("annotations") or {}).get(MANAGED_BY_ANNOTATION) != controller_name:
        metadata.setdefault("annotations", {})[MANAGED_BY_ANNOTATION] = controller_name
    if metadata:
        patch["metadata"] = metadata
    if not patch:
        return None
    # Lists (taints, finalizers, ownerReferences) are replaced whole by a merge patch: the
    # resourceVersion makes a concurrent writer's change fail our patch instead of being lost.
    return PatchNode(str(meta.get("name", "")), patch, str(meta.get("resourceVersion") or "") or None)


def _taint_with_time(t: Taint, existing: Any) -> dict[str, Any]:
    # Keep fields we do not model (timeAdded) for taints that were already there.
    for e in existing or ():
        if e.get("key") == t.key and e.get("effect") == t.effect:
            return dict(e)
    return taint_body(t)


def registered(claim: Claim, node: Node, controller_name: str) -> StepResult:
    """The claim's Node exists: sync it (fully once, ownership afterwards) and report Registered."""
    meta = _meta(node)
    provider_id = (node.get("spec") or {}).get("providerID") or claim.status.provider_id
    newly = not claim.status.is_true(ConditionType.REGISTERED)
    sync = (
        registration_patch(node, claim, controller_name)
        if newly
        else ownership_patch(node, claim, controller_name)
    )
    return StepResult(
        conditions=(Condition(ConditionType.REGISTERED, Status.TRUE, ConditionType.REGISTERED.value),),
        status=StatusDelta(node_name=str(meta.get("name", "")), provider_id=provider_id or None),
        events=(Event(EventType.NORMAL, "Registered", f"node {meta.get('name')} registered"),)
        if newly
        else (),
        actions=(sync,) if sync is not None else (),
    )


def not_registered(claim: Claim) -> StepResult:
    pending = dialect_of(claim).pending_status
    return StepResult(
        conditions=(
            Condition(
                ConditionType.REGISTERED, pending, "NodeNotFound", "waiting for the node to join the cluster"
            ),
            Condition(
                ConditionType.INITIALIZED, pending, "NodeNotRegistered", "waiting for the node to register"
            ),
        ),
        done=False,
    )


def replaced_nodes(nodes: Iterable[Node], claim: Claim, current: str) -> tuple[ReleaseNode, ...]:
    """Release Nodes this claim registered that are being deleted and are no longer its node (AKS
    replaced the VM during an upgrade or reimage): they only wait for our finalizer to go."""
    return tuple(
        ReleaseNode(str(_meta(n).get("name")))
        for n in nodes
        if _meta(n).get("name") != current
        and deleting(n)
        and TERMINATION_FINALIZER in (_meta(n).get("finalizers") or ())
        and owned_by(n, claim)
    )
