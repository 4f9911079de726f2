"""Which claims, instances and Nodes are ours. Everything else is never touched — not even its
finalizers.

* **Claims.** A claim another installation marked (``gpu-provisioner.sh/managed-by``) is never
  ours; one we marked always is (it stays ours when its labels change, so its instance is cleaned
  up). Otherwise it is ours when it carries a selector label or a node class kind we accept — unless
  its ``nodeClassRef`` names a group we do not serve: a NodeClaim for another provisioner's node
  class (``karpenter.azure.com``, ``karpenter.k8s.aws``, ...) belongs to that provisioner even when
  Kaito labelled it.
* **Instances.** Ours when tagged for the claim. An untagged instance named like the claim whose
  node labels carry Kaito's signature (a workspace or RAG-engine label with the claim's value, plus a
  Karpenter provisioner or nodepool label) was made for this claim by a predecessor (the Go
  gpu-provisioner never tags its pools): it is adopted. Anything else is foreign and never deleted.
* **NodePools.** Ours when their template's ``nodeClassRef`` names a node class kind and group we
  serve (``KaitoNodeClass`` in ``kaito.sh``); a NodePool for another provisioner's node class
  (``AKSNodeClass``, ``EC2NodeClass``, ...) is never touched, not even its status.
* **Nodes.** Ours to terminate on their own when they carry our mark (set at registration); the
  repair brake counts the Nodes owned by claims we manage.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from provisioner.claims.model import (
    MANAGED_BY_ANNOTATION,
    NODEPOOL_LABEL,
    PROVISIONER_LABEL,
    Claim,
    NodeClassRef,
)
from provisioner.cloud.types import Instance
from provisioner.settings import Settings

#: Labels that name the Kaito object a claim was made for (one of them is always there).
KAITO_OWNER_LABELS = ("kaito.sh/workspace", "kaito.sh/ragengine")
#: Labels Karpenter puts on every node it makes (one of them is always there).
KARPENTER_POOL_LABELS = (NODEPOOL_LABEL, PROVISIONER_LABEL)

Node = Mapping[str, Any]


class InstanceOwnership(StrEnum):
    #: Tagged for this claim (or tagged ours without a claim UID, from an older version).
    OURS = "ours"
    #: Made for this claim by a predecessor: take it over with our tags.
    ADOPTABLE = "adoptable"
    #: Tagged ours for another claim of the same name (an earlier incarnation).
    OTHER_CLAIM = "other-claim"
    #: Not ours and not recognisably made for this claim: never deleted.
    FOREIGN = "foreign"


class Ownership:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.controller_name

    # -- claims -----------------------------------------------------------------------------------

    def claim_is_ours(self, claim: Claim) -> bool:
        mark = claim.annotations.get(MANAGED_BY_ANNOTATION)
        if mark:
            return mark == self.name
        ref = claim.node_class_ref
        if ref is not None and ref.group and ref.group not in self.settings.claim_node_class_groups:
            return False
        if any(key in claim.labels for key in self.settings.claim_labels):
            return True
        return ref is not None and ref.kind in self.settings.claim_node_class_kinds

    def serves_node_class(self, ref: NodeClassRef | None) -> bool:
        """Whether a node class reference names one of ours (by kind and group)."""
        settings = self.settings
        return (
            ref is not None
            and ref.kind in settings.claim_node_class_kinds
            and (not ref.group or ref.group in settings.claim_node_class_groups)
        )

    def marked(self, claim: Claim) -> bool:
        """Whether we took the claim over already (our mark is on it)."""
        return claim.annotations.get(MANAGED_BY_ANNOTATION) == self.name

    # -- instances --------------------------------------------------------------------------------

    def instance(self, instance: Instance, claim: Claim, instance_name: str) -> InstanceOwnership:
        if instance.managed:
            if instance.claim_uid and instance.claim_uid != claim.uid:
                return InstanceOwnership.OTHER_CLAIM
            return InstanceOwnership.OURS
        if instance.name == instance_name and kaito_signature(instance.node_labels, claim):
            return InstanceOwnership.ADOPTABLE
        return InstanceOwnership.FOREIGN

    # -- nodes ------------------------------------------------------------------------------------

    def node_marked(self, node: Node) -> bool:
        return ((node.get("metadata") or {}).get("annotations") or {}).get(MANAGED_BY_ANNOTATION) == self.name


def kaito_signature(node_labels: Mapping[str, str], claim: Claim) -> bool:
    """Whether labels say "a node Kaito asked for through this claim"."""
    owner = [key for key in KAITO_OWNER_LABELS if key in node_labels]
    if not owner or not any(key in node_labels for key in KARPENTER_POOL_LABELS):
        return False
    return all(node_labels[key] == claim.labels.get(key) for key in owner)


def owner_uids(node: Node) -> list[str]:
    return [
        str(o.get("uid")) for o in (node.get("metadata") or {}).get("ownerReferences") or () if o.get("uid")
    ]
