"""Which agent pool a Kubernetes Node belongs to, from its labels and providerID."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from provisioner.cloud.azure.settings import AzureSettings

#: Labels AKS puts on every node of a pool, naming it.
POOL_LABELS = ("kubernetes.azure.com/agentpool", "agentpool")
#: An AKS node's providerID names its scale set ``aks-<pool>-<digits>-vmss``.
_VMSS_IN_PROVIDER_ID = re.compile(r"/virtualMachineScaleSets/aks-(?P<pool>[a-z0-9]+)-\d+-vmss/", re.I)


def provider_id_prefix(settings: AzureSettings, pool_name: str) -> str:
    """The part of the node's providerID that is known before the node exists.

    AKS names the scale set ``aks-<pool>-<digits>-vmss``; the digits are not in the agent pool API,
    so a node of the pool has a providerID starting with this (AKS lowercases the resource group).
    """
    return (
        f"azure:///subscriptions/{settings.subscription_id}/resourceGroups/"
        f"{settings.effective_node_resource_group.lower()}/providers/Microsoft.Compute/"
        f"virtualMachineScaleSets/aks-{pool_name}-"
    )


def pool_of_node(settings: AzureSettings, node: Mapping[str, Any]) -> str | None:
    """The agent pool a Node belongs to: its agent-pool label, if its providerID names a scale set
    of that pool in this cluster's node resource group.

    The label alone proves nothing (anyone can set it): a Node without a providerID yet belongs to
    no pool until the cloud node manager sets one, as Karpenter matches nodes by providerID only.
    """
    labels = (node.get("metadata") or {}).get("labels") or {}
    pool = next((str(labels[k]) for k in POOL_LABELS if labels.get(k)), None)
    provider_id = str((node.get("spec") or {}).get("providerID") or "")
    if pool is None or not provider_id.lower().startswith(provider_id_prefix(settings, pool).lower()):
        return None
    m = _VMSS_IN_PROVIDER_ID.search(provider_id)
    return pool if m is not None and m.group("pool").lower() == pool.lower() else None
