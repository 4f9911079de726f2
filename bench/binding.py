"""The binding check: no claim bound to two Nodes, no Node to two claims.

Taken at the end of a Ready phase from one listing of the run's claims and Nodes. A Ready claim's
``status.providerID`` must be unique among the claims and match exactly one Node's
``spec.providerID``; a Node's ownerReferences may name at most one claim, and that claim must be
the one whose providerID the Node carries. A claim being deleted is held only to the first rule:
its Node may already be gone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from bench.observe import CLAIM_OWNER_KINDS, is_true


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _provider_id(claim: Mapping[str, Any]) -> str:
    return str((claim.get("status") or {}).get("providerID") or "")


def _node_provider_id(node: Mapping[str, Any]) -> str:
    return str((node.get("spec") or {}).get("providerID") or "")


def _claim_owners(node: Mapping[str, Any]) -> list[str]:
    refs = (node.get("metadata") or {}).get("ownerReferences") or ()
    return sorted(str(r.get("name", "")) for r in refs if r.get("kind") in CLAIM_OWNER_KINDS)


def check_binding(claims: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"ready_claims", "nodes", "violations": [{"check", "claims", "nodes", "detail"}], "clean"}``.

    ``claims`` are the run's claims (Machines and NodeClaims, any state); ``nodes`` the Nodes that
    may belong to them.
    """
    claims, nodes = list(claims), list(nodes)
    violations: list[dict[str, Any]] = []

    def violation(check: str, claim_names: Iterable[str], node_names: Iterable[str], detail: str) -> None:
        violations.append(
            {"check": check, "claims": sorted(claim_names), "nodes": sorted(node_names), "detail": detail}
        )

    by_provider_id: dict[str, list[str]] = defaultdict(list)
    for claim in claims:
        if pid := _provider_id(claim):
            by_provider_id[pid].append(_name(claim))
    for pid, names in sorted(by_provider_id.items()):
        if len(names) > 1:
            violation("provider_id_shared", names, (), f"{len(names)} claims carry providerID {pid}")

    nodes_by_provider_id: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        if pid := _node_provider_id(node):
            nodes_by_provider_id[pid].append(_name(node))

    ready = [
        c for c in claims if is_true(c, "Ready") and not (c.get("metadata") or {}).get("deletionTimestamp")
    ]
    for claim in ready:
        name, pid = _name(claim), _provider_id(claim)
        if not pid:
            violation("no_provider_id", [name], (), "Ready claim without status.providerID")
            continue
        matching = nodes_by_provider_id.get(pid, [])
        if not matching:
            violation("no_node", [name], (), f"no Node has providerID {pid}")
        elif len(matching) > 1:
            violation(
                "provider_id_on_several_nodes",
                [name],
                matching,
                f"{len(matching)} Nodes have providerID {pid}",
            )

    claim_of_provider_id = {pid: names[0] for pid, names in by_provider_id.items() if len(names) == 1}
    for node in nodes:
        owners = _claim_owners(node)
        if len(owners) > 1:
            violation(
                "node_owned_by_several_claims",
                owners,
                [_name(node)],
                f"ownerReferences name {len(owners)} claims",
            )
            continue
        bound = claim_of_provider_id.get(_node_provider_id(node))
        if owners and bound is not None and owners[0] != bound:
            violation(
                "owner_mismatch",
                [owners[0], bound],
                [_name(node)],
                f"the Node is owned by {owners[0]} but carries the providerID of {bound}",
            )
    return {
        "ready_claims": len(ready),
        "nodes": len(nodes),
        "violations": violations,
        "clean": not violations,
    }


def describe(violations: Iterable[Mapping[str, Any]], limit: int = 10) -> str:
    """One line per violation (at most ``limit``), for the failure message."""
    items = list(violations)
    lines = [
        f"  {v['check']}: claims {', '.join(v['claims']) or '-'}; nodes {', '.join(v['nodes']) or '-'} ({v['detail']})"
        for v in items[:limit]
    ]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more")
    return "\n".join(lines)
