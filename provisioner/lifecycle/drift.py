"""Drift: whether a NodeClaim made from a NodePool still matches what the NodePool would make now.

A launched NodeClaim is Drifted when

* the NodePool's template changed (``NodePoolDrifted``: the hash recorded on the NodeClaim when it
  was made differs from the template's hash now; requirements are not part of it), or
* a template requirement no longer admits the NodeClaim's labels (``RequirementsDrifted``: e.g.
  another instance type), or
* its node class's settings or resolved image changed (``NodeClassDrifted``), judged only once the
  node class's status describes its current spec.

Otherwise the condition is removed, as Karpenter does. NodeClaims made by no NodePool never drift.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from provisioner.claims.model import Claim, Condition, ConditionType, Requirement, Status
from provisioner.lifecycle.result import StepResult
from provisioner.nodepools.model import (
    NODE_CLASS_HASH_ANNOTATION,
    NODEPOOL_HASH_ANNOTATION,
    NODEPOOL_HASH_VERSION,
    NODEPOOL_HASH_VERSION_ANNOTATION,
    NodeClass,
    NodePool,
)

NODEPOOL_DRIFTED = "NodePoolDrifted"
REQUIREMENTS_DRIFTED = "RequirementsDrifted"
NODE_CLASS_DRIFTED = "NodeClassDrifted"

_MESSAGES = {
    NODEPOOL_DRIFTED: "the NodePool's template changed since this NodeClaim was made",
    REQUIREMENTS_DRIFTED: "a requirement of the NodePool's template no longer admits this NodeClaim",
    NODE_CLASS_DRIFTED: "the node class's settings or resolved image changed since this NodeClaim was made",
}


def _number(value: str) -> Decimal | None:
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def admits(req: Requirement, labels: dict[str, str]) -> bool:
    """Whether one template requirement admits a NodeClaim's labels. A key the NodeClaim has no
    label for is not judged (it was never resolved to a value)."""
    value = labels.get(req.key)
    if req.operator == "DoesNotExist":
        return value is None
    if value is None:
        return True
    if req.operator == "In":
        return value in req.values
    if req.operator == "NotIn":
        return value not in req.values
    if req.operator in ("Gt", "Lt") and req.values:
        have, bound = _number(value), _number(req.values[0])
        if have is None or bound is None:
            return False
        return have > bound if req.operator == "Gt" else have < bound
    return True


def reason(claim: Claim, nodepool: NodePool, node_class: NodeClass | None) -> str | None:
    annotations = claim.annotations
    recorded = annotations.get(NODEPOOL_HASH_ANNOTATION)
    if (
        recorded
        and annotations.get(NODEPOOL_HASH_VERSION_ANNOTATION) == NODEPOOL_HASH_VERSION
        and recorded != nodepool.template_hash()
    ):
        return NODEPOOL_DRIFTED
    labels = dict(claim.labels)
    requirements = nodepool.template_spec.get("requirements") or ()
    for r in requirements:
        if not isinstance(r, dict):
            continue
        req = Requirement(str(r.get("key", "")), str(r.get("operator", "")), tuple(r.get("values") or ()))
        if not admits(req, labels):
            return REQUIREMENTS_DRIFTED
    made_with = annotations.get(NODE_CLASS_HASH_ANNOTATION)
    if (
        made_with
        and node_class is not None
        and node_class.current
        and node_class.ready
        and made_with != node_class.settings_hash()
    ):
        return NODE_CLASS_DRIFTED
    return None


def check(claim: Claim, nodepool: NodePool | None, node_class: NodeClass | None) -> StepResult | None:
    """The Drifted condition of a NodePool's NodeClaim (None: nothing to say)."""
    current = claim.status.condition(ConditionType.DRIFTED)
    why = None
    if nodepool is not None and claim.status.is_true(ConditionType.LAUNCHED):
        why = reason(claim, nodepool, node_class)
    if why is None:
        return StepResult(cleared=(ConditionType.DRIFTED,)) if current is not None else None
    return StepResult(conditions=(Condition(ConditionType.DRIFTED, Status.TRUE, why, _MESSAGES[why]),))
