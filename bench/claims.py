"""The claims the benchmark creates: Kaito's shapes (``fakes.kaito``) for the bench workspace.

Machine: Kaito v0.1-v0.4 (``karpenter.sh/v1alpha5``); NodeClaim: Kaito v0.7+ (``karpenter.sh/v1``,
``nodeClassRef`` to the ``KaitoNodeClass``). Names are Kaito's: ``ws`` + 9 hex characters, which is
also a valid AKS agent pool name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fakes.kaito import kaito_machine, kaito_nodeclaim

WORKSPACE = "workspace-bench"
WORKSPACE_NAMESPACE = "default"


@dataclass(frozen=True)
class Kind:
    name: str  # "machine" or "nodeclaim"
    group: str
    version: str
    plural: str


KINDS = {
    "machine": Kind("machine", "karpenter.sh", "v1alpha5", "machines"),
    "nodeclaim": Kind("nodeclaim", "karpenter.sh", "v1", "nodeclaims"),
}


def build(kind: str, name: str, instance_type: str, extra_labels: dict[str, str]) -> dict[str, Any]:
    """A Kaito-shaped claim of ``kind`` for the bench workspace, with ``extra_labels`` added."""
    shape = kaito_machine if kind == "machine" else kaito_nodeclaim
    return shape(
        name,
        instance_type=instance_type,
        workspace=WORKSPACE,
        namespace=WORKSPACE_NAMESPACE,
        match_labels=extra_labels,
    )
