"""Claims on shared instances (``SupportsSharedInstances``; on AKS ``AZURE_POOL_STRATEGY=shared``).

A claim's instance is then shared with other claims: the claim is assigned one (recorded in its
``gpu-provisioner.sh/instance-name`` annotation), the instance is asked for as many nodes as its claims
need, and each Node that joins is bound to exactly one waiting claim. The binding is the Node's
ownerReference to the claim, written with the Node's resourceVersion (two claims cannot both win
one Node) before the claim's ``status.providerID``; a restarted controller reads both back.

Waiting claims take free Nodes in order (oldest claim, oldest Node), so claims reconciled at the
same time pick different Nodes instead of racing for one.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from provisioner.claims.dialects import parse_time
from provisioner.claims.model import Claim
from provisioner.cloud.provider import SupportsSharedInstances
from provisioner.lifecycle import registration
from provisioner.ownership import owner_uids
from provisioner.reconcile.context import Context

Node = Mapping[str, Any]

_EPOCH = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def shared_cloud(ctx: Context, instance: str | None = None) -> SupportsSharedInstances | None:
    """The cloud as one with shared instances — if it has them (and ``instance`` is one)."""
    cloud = ctx.cloud
    if not isinstance(cloud, SupportsSharedInstances):
        return None
    if instance is not None and not cloud.shares_instance(instance):
        return None
    return cloud


def demand(
    ctx: Context, cloud: SupportsSharedInstances, instance: str, claim: Claim, assigned: Iterable[str] = ()
) -> int:
    """How many nodes ``instance`` must hold: one per live claim of ours on it (this one included,
    and those this process assigned to it whose record is not written yet), plus one per deleting
    claim whose Node has not been handed back yet."""
    leaving = cloud.leaving(instance)
    uids = {claim.uid}
    count = 0
    for c in _ours(ctx, instance):
        uids.add(c.uid)
        if not c.deleting or any(_name(n) not in leaving for n in ctx.store.nodes_owned_by(c.uid)):
            count += 1
    for uid in {claim.uid, *assigned} - {c.uid for c in _ours(ctx, instance)}:
        other = ctx.store.claim_by_uid(uid)
        if other is not None and not other.deleting:
            count += 1
    return count


def _free_and_waiting(ctx: Context, instance: str) -> tuple[list[Node], list[Claim]]:
    """The instance's free Nodes, oldest first, and its waiting claims in the order they take them."""
    free = sorted((n for n in ctx.store.nodes_of_instance(instance) if is_free(n)), key=_node_age)
    waiting = sorted(
        (c for c in _ours(ctx, instance) if not c.deleting and not ctx.store.nodes_owned_by(c.uid)),
        key=lambda c: (c.creation_timestamp or _EPOCH, c.uid),
    )
    return free, waiting


def taker(ctx: Context, instance: str, node: Node) -> Claim | None:
    """The waiting claim that is to take this free Node (the one to wake when it changes)."""
    free, waiting = _free_and_waiting(ctx, instance)
    name = _name(node)
    rank = next((i for i, n in enumerate(free) if _name(n) == name), None)
    return waiting[rank] if rank is not None and rank < len(waiting) else None


def node_of(ctx: Context, instance: str, claim: Claim, nodes: Iterable[Node]) -> Node | None:
    """The claim's Node on a shared instance: the one bound to it, else the free Node it is to
    take (None while there is none for it)."""
    nodes = list(nodes)
    bound = [n for n in nodes if registration.owned_by(n, claim)]
    if bound:
        return sorted(bound, key=registration.deleting)[0]
    if claim.deleting:
        return None
    free, waiting = _free_and_waiting(ctx, instance)
    rank = next((i for i, c in enumerate(waiting) if c.uid == claim.uid), None)
    return free[rank] if rank is not None and rank < len(free) else None


def surplus_nodes(
    ctx: Context, instance: str, free_since: dict[str, float], now: float, grace: float
) -> list[str]:
    """Free Nodes of a shared instance beyond what its waiting claims will take, free for
    ``grace`` seconds (a restart during a scale-up, or a claim deleted before its Node joined,
    leaves some). The newest go: waiting claims take the oldest. ``free_since`` remembers when
    each was first seen spare."""
    free, waiting = _free_and_waiting(ctx, instance)
    due = []
    for node in free[len(waiting) :]:
        name = _name(node)
        if now - free_since.setdefault(name, now) >= grace:
            due.append(name)
    return due


def _ours(ctx: Context, instance: str) -> list[Claim]:
    return [c for c in ctx.store.claims_of_instance(instance) if ctx.ownership.claim_is_ours(c)]


def is_free(node: Node) -> bool:
    """A Node of a shared instance that no claim has taken (and that is not going away)."""
    return not owner_uids(node) and not registration.deleting(node)


def _node_age(node: Node) -> tuple[datetime.datetime, str]:
    meta = node.get("metadata") or {}
    return (parse_time(meta.get("creationTimestamp")) or _EPOCH, str(meta.get("name", "")))


def _name(node: Node) -> str:
    return str((node.get("metadata") or {}).get("name", "")).lower()
