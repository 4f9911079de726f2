"""Node requests shaped exactly as Kaito's workspace controller creates them.

`kaito_machine` follows Kaito v0.1-v0.4 (Machine karpenter.sh/v1alpha5), `kaito_nodeclaim` Kaito v0.7+
(NodeClaim karpenter.sh/v1 referencing the KaitoNodeClass). Both return plain dicts ready to send to
the API server; tests, the demo and the benchmark build on them.

Kaito also writes `metadata.namespace` (the workspace namespace) into these cluster-scoped objects;
the API server drops it, so it is left out here.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

DEFAULT_INSTANCE_TYPE = "Standard_NC12s_v3"
DEFAULT_WORKSPACE = "workspace-falcon-7b"
DEFAULT_WORKSPACE_NAMESPACE = "default"

LABEL_WORKSPACE = "kaito.sh/workspace"
LABEL_WORKSPACE_NAMESPACE = "kaito.sh/workspacenamespace"
LABEL_RAGENGINE = "kaito.sh/ragengine"
LABEL_RAGENGINE_NAMESPACE = "kaito.sh/ragenginenamespace"
LABEL_PROVISIONER_NAME = "karpenter.sh/provisioner-name"
LABEL_NODEPOOL = "karpenter.sh/nodepool"
LABEL_MACHINE_TYPE = "kaito.sh/machine-type"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_SKU_NAME = "karpenter.azure.com/sku-name"
ANNOTATION_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
ANNOTATION_NODE_IMAGE_FAMILY = "kaito.sh/node-image-family"

KAITO_NODEPOOL = "kaito"
KAITO_PROVISIONER = "default"
KAITO_NODECLASS_NAME = "default"
KAITO_NODECLASS_KIND = "KaitoNodeClass"
KAITO_NODECLASS_GROUP = "kaito.sh"
INSTANCE_TYPES_UNAVAILABLE = "all requested instance types were unavailable during launch"


def random_claim_name() -> str:
    """A fresh name as Kaito makes them: "ws" and 9 lowercase hex characters (also a valid pool name)."""
    return "ws" + secrets.token_hex(5)[:9]


def _in(key: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": list(values)}


def _gpu_taint() -> dict[str, str]:
    return {"key": "sku", "value": "gpu", "effect": "NoSchedule"}


def _owner_labels(
    workspace: str, namespace: str, ragengine: bool, match_labels: dict[str, str] | None
) -> dict[str, str]:
    name_label, namespace_label = (
        (LABEL_RAGENGINE, LABEL_RAGENGINE_NAMESPACE)
        if ragengine
        else (LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE)
    )
    labels = {name_label: workspace, namespace_label: namespace}
    labels.update(match_labels or {})
    return labels


def kaito_machine(
    name: str | None = None,
    *,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    workspace: str = DEFAULT_WORKSPACE,
    namespace: str = DEFAULT_WORKSPACE_NAMESPACE,
    storage: str = "120Gi",
    match_labels: dict[str, str] | None = None,
    ragengine: bool = False,
) -> dict[str, Any]:
    """A Machine as Kaito v0.1-v0.4 creates it for one node of a workspace (or RAG engine)."""
    name = name or random_claim_name()
    labels = {LABEL_PROVISIONER_NAME: KAITO_PROVISIONER}
    labels.update(_owner_labels(workspace, namespace, ragengine, match_labels))
    return {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "machineTemplateRef": {"name": name},
            "requirements": [
                _in(LABEL_INSTANCE_TYPE, instance_type),
                _in(LABEL_PROVISIONER_NAME, KAITO_PROVISIONER),
                _in(LABEL_MACHINE_TYPE, "gpu"),
                _in("kubernetes.io/arch", "amd64"),
                _in("kubernetes.io/os", "linux"),
            ],
            "taints": [_gpu_taint()],
            "resources": {"requests": {"storage": storage}},
        },
    }


def kaito_nodeclaim(
    name: str | None = None,
    *,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    workspace: str = DEFAULT_WORKSPACE,
    namespace: str = DEFAULT_WORKSPACE_NAMESPACE,
    storage: str = "120Gi",
    match_labels: dict[str, str] | None = None,
    ragengine: bool = False,
    image_family: str | None = "ubuntu",
) -> dict[str, Any]:
    """A NodeClaim as Kaito v0.7+ creates it on Azure (nodeClassRef to the KaitoNodeClass "default").

    `image_family` is the `kaito.sh/node-image-family` annotation newer Kaito releases add ("ubuntu" or
    "azurelinux"); None leaves it out, as earlier releases do.
    """
    name = name or random_claim_name()
    labels = {LABEL_NODEPOOL: KAITO_NODEPOOL}
    labels.update(_owner_labels(workspace, namespace, ragengine, match_labels))
    annotations = {ANNOTATION_DO_NOT_DISRUPT: "true"}
    if image_family is not None:
        annotations[ANNOTATION_NODE_IMAGE_FAMILY] = image_family
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "nodeClassRef": {
                "group": KAITO_NODECLASS_GROUP,
                "kind": KAITO_NODECLASS_KIND,
                "name": KAITO_NODECLASS_NAME,
            },
            "taints": [_gpu_taint()],
            "requirements": [
                _in(LABEL_NODEPOOL, KAITO_NODEPOOL),
                _in(LABEL_INSTANCE_TYPE, instance_type),
                _in("kubernetes.io/os", "linux"),
                _in(LABEL_SKU_NAME, instance_type),
            ],
            "resources": {"requests": {"storage": storage}},
        },
    }


# -- Kaito v0.12's ``karpenter`` node provisioner (pkg/nodeprovision/karpenter) -------------------

KARPENTER_MANAGED_BY = "karpenter.kaito.sh/managed-by"
KARPENTER_DEFAULT_NODE_CLASS = "karpenter.kaito.sh/default"
KARPENTER_WORKSPACE_NAME = "karpenter.kaito.sh/workspace-name"
KARPENTER_WORKSPACE_NAMESPACE = "karpenter.kaito.sh/workspace-namespace"
KARPENTER_INFERENCESET = "karpenter.kaito.sh/inferenceset"
KARPENTER_INFERENCESET_NAMESPACE = "karpenter.kaito.sh/inferenceset-namespace"

#: The ``nodeClasses`` list of Kaito v0.12's chart values (``karpenterProviders.azure``).
KAITO_CHART_NODE_CLASSES: tuple[dict[str, Any], ...] = (
    {
        "name": "image-family-ubuntu",
        "default": True,
        "spec": {"imageFamily": "Ubuntu2204", "osDiskSizeGB": 300},
    },
    {"name": "image-family-azure-linux", "spec": {"imageFamily": "AzureLinux", "osDiskSizeGB": 300}},
)


def kaito_node_class(
    entry: dict[str, Any],
    *,
    group: str = KAITO_NODECLASS_GROUP,
    kind: str = KAITO_NODECLASS_KIND,
    version: str = "v1alpha1",
) -> dict[str, Any]:
    """A node class as Kaito creates it at start-up from one ``nodeClasses`` entry."""
    labels = {KARPENTER_MANAGED_BY: "kaito"}
    if entry.get("default"):
        labels[KARPENTER_DEFAULT_NODE_CLASS] = "true"
    body: dict[str, Any] = {
        "apiVersion": f"{group}/{version}",
        "kind": kind,
        "metadata": {"name": entry["name"], "labels": labels},
    }
    if entry.get("spec") is not None:
        body["spec"] = dict(entry["spec"])
    return body


def nodepool_name(workspace_namespace: str, workspace: str) -> str:
    """Kaito's NodePool name for a workspace (``<namespace>-<name>``; longer ones are cut and hashed)."""
    full = f"{workspace_namespace}-{workspace}"
    if len(full) <= 63:
        return full
    return full[: 63 - 10] + "-" + hashlib.sha256(full.encode()).hexdigest()[:9]


def kaito_nodepool(
    workspace: str,
    *,
    namespace: str = DEFAULT_WORKSPACE_NAMESPACE,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    replicas: int = 1,
    node_class: str = "image-family-ubuntu",
    group: str = KAITO_NODECLASS_GROUP,
    kind: str = KAITO_NODECLASS_KIND,
    match_labels: dict[str, str] | None = None,
    inference_set: str | None = None,
) -> dict[str, Any]:
    """The NodePool Kaito v0.12 generates for a workspace (``generateNodePool``): static
    (``replicas``), the workspace labels and matchLabels on the template, the instance-type
    requirement, the ``sku=gpu:NoSchedule`` taint, and a Drifted budget of "1" ("0" for a
    workspace an InferenceSet made)."""
    template_labels = {KARPENTER_WORKSPACE_NAME: workspace, KARPENTER_WORKSPACE_NAMESPACE: namespace}
    template_labels.update(match_labels or {})
    labels = {
        KARPENTER_MANAGED_BY: "kaito",
        KARPENTER_WORKSPACE_NAME: workspace,
        KARPENTER_WORKSPACE_NAMESPACE: namespace,
    }
    if inference_set:
        for target in (template_labels, labels):
            target[KARPENTER_INFERENCESET] = inference_set
            target[KARPENTER_INFERENCESET_NAMESPACE] = namespace
    requirements = [_in(LABEL_INSTANCE_TYPE, instance_type)]
    if group == "karpenter.azure.com":
        requirements.append(_in("karpenter.azure.com/placement-scope", "regional"))
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": nodepool_name(namespace, workspace), "labels": labels},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": template_labels},
                "spec": {
                    "nodeClassRef": {"group": group, "kind": kind, "name": node_class},
                    "requirements": requirements,
                    "taints": [_gpu_taint()],
                },
            },
            "disruption": {
                "consolidateAfter": "0s",
                "budgets": [{"nodes": "0" if inference_set else "1", "reasons": ["Drifted"]}],
            },
        },
    }
