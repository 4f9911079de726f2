"""Node requests shaped as Kaito's workspace controller creates them (Machine and NodeClaim).

Machine: Kaito v0.1-v0.4 (``karpenter.sh/v1alpha5``); NodeClaim: Kaito v0.7+ (``karpenter.sh/v1``,
``nodeClassRef`` to the ``KaitoNodeClass``). Names are Kaito's: ``ws`` + 9 hex characters, which is
also a valid AKS agent pool name.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

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


def claim_name() -> str:
    return "ws" + secrets.token_hex(5)[:9]


def _in(key: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": list(values)}


_GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}


def machine(name: str, instance_type: str, extra_labels: dict[str, str]) -> dict[str, Any]:
    labels = {
        "karpenter.sh/provisioner-name": "default",
        "kaito.sh/workspace": WORKSPACE,
        "kaito.sh/workspacenamespace": WORKSPACE_NAMESPACE,
        **extra_labels,
    }
    return {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "machineTemplateRef": {"name": name},
            "requirements": [
                _in("node.kubernetes.io/instance-type", instance_type),
                _in("karpenter.sh/provisioner-name", "default"),
                _in("kaito.sh/machine-type", "gpu"),
                _in("kubernetes.io/arch", "amd64"),
                _in("kubernetes.io/os", "linux"),
            ],
            "taints": [dict(_GPU_TAINT)],
            "resources": {"requests": {"storage": "120Gi"}},
        },
    }


def nodeclaim(name: str, instance_type: str, extra_labels: dict[str, str]) -> dict[str, Any]:
    labels = {
        "karpenter.sh/nodepool": "kaito",
        "kaito.sh/workspace": WORKSPACE,
        "kaito.sh/workspacenamespace": WORKSPACE_NAMESPACE,
        **extra_labels,
    }
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"karpenter.sh/do-not-disrupt": "true", "kaito.sh/node-image-family": "ubuntu"},
        },
        "spec": {
            "nodeClassRef": {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"},
            "taints": [dict(_GPU_TAINT)],
            "requirements": [
                _in("karpenter.sh/nodepool", "kaito"),
                _in("node.kubernetes.io/instance-type", instance_type),
                _in("kubernetes.io/os", "linux"),
                _in("karpenter.azure.com/sku-name", instance_type),
            ],
            "resources": {"requests": {"storage": "120Gi"}},
        },
    }


def build(kind: str, name: str, instance_type: str, extra_labels: dict[str, str]) -> dict[str, Any]:
    return (machine if kind == "machine" else nodeclaim)(name, instance_type, extra_labels)
