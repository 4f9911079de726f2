"""Which claims are ours. Everything else is never touched — not even its finalizers."""

from __future__ import annotations

from provisioner.claims.model import MANAGED_BY_ANNOTATION, Claim
from provisioner.settings import Settings


def is_managed(claim: Claim, settings: Settings) -> bool:
    """True when the claim carries one of the selector label keys or a nodeClassRef kind we accept,
    or when we took it over earlier (it keeps our mark even if its labels change later)."""
    if claim.annotations.get(MANAGED_BY_ANNOTATION) == settings.controller_name:
        return True
    if any(key in claim.labels for key in settings.claim_labels):
        return True
    ref = claim.node_class_ref
    return ref is not None and ref.kind in settings.claim_node_class_kinds
