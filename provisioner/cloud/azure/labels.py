"""Which node labels and tags AKS accepts, and the labels the Go provisioner put on every pool.

Pure rules, no I/O: a label AKS would refuse (or set itself) is dropped from the pool with the
reason, so a create never fails on it; tags Azure refuses are reported the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from provisioner.cloud.azure.settings import AzureSettings
from provisioner.cloud.types import InstanceRequest
from provisioner.validation import label_key_problem, label_value_problem

# --- labels ----------------------------------------------------------------------------------

LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_REGION = "topology.kubernetes.io/region"
LABEL_CAPACITY_TYPE = "karpenter.sh/capacity-type"
LABEL_AGENTPOOL = "kubernetes.azure.com/agentpool"
LABEL_MACHINE_TYPE = "kaito.sh/machine-type"

#: Prefixes AKS reserves for itself (its "Reserved prefixes" list); pools carrying them are refused.
AKS_RESERVED_PREFIXES = ("kubernetes.azure.com/",)

#: Labels the node gets from AKS/kubelet anyway (AKS' "Reserved system labels", well-known labels).
#: They are dropped quietly: the node will carry them with the real value.
SET_BY_AKS = frozenset(
    {
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "kubernetes.io/hostname",
        LABEL_INSTANCE_TYPE,
        LABEL_ZONE,
        LABEL_REGION,
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "kubernetes.io/role",
        "node-role.kubernetes.io/agent",
        "agentpool",
        "storageprofile",
        "storagetier",
        "accelerator",
    }
)

#: Sub-namespaces of kubernetes.io the kubelet may set on itself (NodeRestriction rules).
_KUBELET_ALLOWED_SUFFIXES = ("kubelet.kubernetes.io", "node.kubernetes.io")


@dataclass(frozen=True)
class DroppedLabel:
    key: str
    value: str
    reason: str
    #: False when the node gets the label from AKS anyway (nothing for a user to act on).
    warn: bool = True

    def __str__(self) -> str:
        return f"node label {self.key}={self.value} not sent to AKS: {self.reason}"


def _label_domain(key: str) -> str:
    return key.split("/", 1)[0].lower() if "/" in key else ""


def _in_domain(domain: str, parent: str) -> bool:
    return domain == parent or domain.endswith("." + parent)


def label_problem(key: str, value: str) -> tuple[str, bool] | None:
    """Why AKS would refuse (or override) this node label, or None if it is fine.

    Returns (reason, warn); ``warn`` is False for labels AKS sets itself.
    """
    if key in SET_BY_AKS:
        return "AKS sets it on the node itself", False
    if any(_in_domain(_label_domain(key), p.rstrip("/")) for p in AKS_RESERVED_PREFIXES):
        return "the kubernetes.azure.com prefix is reserved by AKS", True
    if label_key_problem(key) is not None:
        return "not a valid Kubernetes label key", True
    if label_value_problem(value) is not None:
        return "not a valid Kubernetes label value", True
    domain = _label_domain(key)
    restricted = _in_domain(domain, "kubernetes.io") or _in_domain(domain, "k8s.io")
    if restricted and not any(_in_domain(domain, allowed) for allowed in _KUBELET_ALLOWED_SUFFIXES):
        return "kubernetes.io and k8s.io labels cannot be set through AKS node labels", True
    return None


def filter_node_labels(labels: Mapping[str, str]) -> tuple[dict[str, str], list[DroppedLabel]]:
    """Split labels into those AKS accepts and those dropped (with the reason)."""
    kept: dict[str, str] = {}
    dropped: list[DroppedLabel] = []
    for key, value in labels.items():
        problem = label_problem(key, value)
        if problem is None:
            kept[key] = value
        else:
            dropped.append(DroppedLabel(key, value, problem[0], problem[1]))
    return kept, dropped


def node_labels(request: InstanceRequest, is_gpu: bool) -> tuple[dict[str, str], list[DroppedLabel]]:
    """The request's labels plus ``kaito.sh/machine-type`` (gpu/cpu, as the Go provisioner sets it;
    the request's own value wins), filtered for AKS."""
    merged = {LABEL_MACHINE_TYPE: "gpu" if is_gpu else "cpu", **request.labels}
    return filter_node_labels(merged)


# --- tags ------------------------------------------------------------------------------------

TAG_CLUSTER = "gpu-provisioner.sh_cluster"
_TAG_FORBIDDEN = re.compile(r"[<>%&\\?/]")


def pool_tags(request: InstanceRequest, settings: AzureSettings) -> tuple[dict[str, str], list[str]]:
    """Tags for the pool: configured extra tags, request tags, then cluster and ownership tags."""
    merged = {
        **settings.extra_tags,
        **request.tags,
        TAG_CLUSTER: settings.cluster_name,
        **request.ownership_tags(),
    }
    tags: dict[str, str] = {}
    warnings: list[str] = []
    for key, value in merged.items():
        if not key or len(key) > 512 or _TAG_FORBIDDEN.search(key) or len(value) > 256:
            warnings.append(
                f"tag {key!r} not sent to Azure: names may not contain <>%&\\?/ (max 512, values 256)"
            )
            continue
        tags[key] = value
    return tags, warnings
