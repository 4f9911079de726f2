"""The controller's picture of the cluster: every claim and Node, as last seen, with indexes.

Fed by watch events and by the answers to our own writes, whichever is newer: resourceVersions
are compared both ways, so a late watch event never replaces what a patch answer already showed,
and a patch answer never replaces what a faster watch event brought. A periodic relist replaces the
picture and forgets objects deleted while a watch was down (``prune``).

Indexes: claims by UID, by the instance they map to and by the UIDs of their owners (NodePools);
Nodes by the instance they run on (the cloud says which, ``CloudProvider.instance_of_node``) and
by the UIDs of their owners. NodePools and node classes are kept by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.claims.dialects import Dialect
from provisioner.claims.model import Claim, ClaimKey
from provisioner.nodepools.model import NodeClass, NodePool, parse_node_class, parse_nodepool
from provisioner.ownership import owner_uids

Body = Mapping[str, Any]


def resource_version(body: Body | None) -> str:
    return str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")


def newer(body: Body, than: Body | None) -> bool | None:
    """True if ``body`` is a newer version than ``than``, False if older, None if the same.

    resourceVersions are opaque; etcd's are integers, and anything else counts as newer.
    """
    new, old = resource_version(body), resource_version(than)
    if than is None or not old:
        return True
    if new == old:
        return None
    try:
        return int(new) > int(old)
    except ValueError:
        return True


@dataclass(frozen=True)
class _Entry:
    claim: Claim
    body: Body
    instance: str


class _Index:
    """Keys by value, for values that change as objects are updated."""

    def __init__(self) -> None:
        self._by: dict[str, set[Any]] = {}

    def move(self, key: Any, old: Iterable[str], new: Iterable[str]) -> None:
        for v in old:
            members = self._by.get(v)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._by[v]
        for v in new:
            self._by.setdefault(v, set()).add(key)

    def get(self, value: str) -> list[Any]:
        return sorted(self._by.get(value, ()))


class Store:
    def __init__(
        self,
        instance_of_claim: Callable[[Claim], str],
        instance_of_node: Callable[[Body], str | None],
    ) -> None:
        self._instance_of_claim = instance_of_claim
        self._instance_of_node = instance_of_node
        self._claims: dict[ClaimKey, _Entry] = {}
        self._claim_uids: dict[str, ClaimKey] = {}
        self._claims_by_instance = _Index()
        self._claims_by_owner = _Index()
        #: UIDs of claims the watch reported deleted (bounded; oldest forgotten first).
        self._deleted_uids: dict[str, None] = {}
        self._nodepools: dict[str, tuple[NodePool, Body]] = {}
        self._node_classes: dict[str, tuple[NodeClass, Body]] = {}
        self._nodes: dict[str, Body] = {}
        self._nodes_by_instance = _Index()
        self._nodes_by_owner = _Index()

    # -- claims -----------------------------------------------------------------------------------

    def put_claim(self, dialect: Dialect, body: Body) -> Claim | None:
        """Store ``body`` if it is newer than what we have; the claim if it was stored."""
        name = str((body.get("metadata") or {}).get("name") or "")
        if not name:
            return None
        key = dialect.key(name)
        old = self._claims.get(key)
        if not newer(body, old.body if old else None):
            return None
        if str((body.get("metadata") or {}).get("uid") or "") in self._deleted_uids:
            return None  # a late answer about an object whose deletion the watch already reported
        claim = dialect.parse(body)
        instance = self._instance_of_claim(claim)
        if old is not None and old.claim.uid != claim.uid:
            self._claim_uids.pop(old.claim.uid, None)
        self._claims[key] = _Entry(claim, body, instance)
        self._claim_uids[claim.uid] = key
        self._claims_by_instance.move(key, [old.instance] if old else [], [instance])
        self._claims_by_owner.move(key, owner_uids(old.body) if old else [], owner_uids(body))
        return claim

    def remove_claim(self, key: ClaimKey, *, deleted: bool = False) -> Claim | None:
        """Forget a claim; ``deleted``: the API server deleted it, so an answer to a request sent
        before (our last finalizer removal, typically) must not bring it back."""
        entry = self._claims.pop(key, None)
        if entry is not None and deleted:
            self._deleted_uids[entry.claim.uid] = None
            if len(self._deleted_uids) > 10_000:
                del self._deleted_uids[next(iter(self._deleted_uids))]
        if entry is None:
            return None
        if self._claim_uids.get(entry.claim.uid) == key:
            del self._claim_uids[entry.claim.uid]
        self._claims_by_instance.move(key, [entry.instance], [])
        self._claims_by_owner.move(key, owner_uids(entry.body), [])
        return entry.claim

    def claim(self, key: ClaimKey) -> Claim | None:
        entry = self._claims.get(key)
        return entry.claim if entry else None

    def claims(self) -> list[Claim]:
        return [e.claim for e in self._claims.values()]

    def claim_by_uid(self, uid: str) -> Claim | None:
        key = self._claim_uids.get(uid)
        return self.claim(key) if key else None

    def instance_of(self, claim: Claim) -> str:
        """The instance a claim maps to (its recorded name, else the cloud's name for it)."""
        return self._instance_of_claim(claim)

    def claims_of_instance(self, instance: str) -> list[Claim]:
        return [self._claims[k].claim for k in self._claims_by_instance.get(instance)]

    def claims_owned_by(self, uid: str) -> list[Claim]:
        return [self._claims[k].claim for k in self._claims_by_owner.get(uid)]

    # -- NodePools and node classes ---------------------------------------------------------------

    def put_nodepool(self, body: Body) -> NodePool | None:
        """Store ``body`` if it is newer than what we have; the NodePool if it was stored."""
        stored: NodePool | None = _put(self._nodepools, body, parse_nodepool)
        return stored

    def remove_nodepool(self, name: str) -> NodePool | None:
        entry = self._nodepools.pop(name, None)
        return entry[0] if entry else None

    def nodepool(self, name: str) -> NodePool | None:
        entry = self._nodepools.get(name)
        return entry[0] if entry else None

    def nodepools(self) -> list[NodePool]:
        return [e[0] for e in self._nodepools.values()]

    def put_node_class(self, body: Body) -> NodeClass | None:
        stored: NodeClass | None = _put(self._node_classes, body, parse_node_class)
        return stored

    def remove_node_class(self, name: str) -> NodeClass | None:
        entry = self._node_classes.pop(name, None)
        return entry[0] if entry else None

    def node_class(self, name: str) -> NodeClass | None:
        entry = self._node_classes.get(name)
        return entry[0] if entry else None

    def prune_nodepools(
        self, listed: Iterable[Body], list_version: str
    ) -> tuple[list[NodePool], list[NodePool]]:
        return _prune(self._nodepools, listed, list_version, parse_nodepool)

    def prune_node_classes(
        self, listed: Iterable[Body], list_version: str
    ) -> tuple[list[NodeClass], list[NodeClass]]:
        return _prune(self._node_classes, listed, list_version, parse_node_class)

    # -- nodes ------------------------------------------------------------------------------------

    def put_node(self, body: Body) -> bool:
        name = str((body.get("metadata") or {}).get("name") or "")
        if not name:
            return False
        old = self._nodes.get(name)
        if not newer(body, old):
            return False
        self._nodes[name] = body
        self._index_node(name, old, body)
        return True

    def remove_node(self, name: str) -> Body | None:
        old = self._nodes.pop(name, None)
        if old is not None:
            self._index_node(name, old, None)
        return old

    def _index_node(self, name: str, old: Body | None, new: Body | None) -> None:
        def instance(b: Body | None) -> list[str]:
            value = self._instance_of_node(b) if b is not None else None
            return [value] if value else []

        self._nodes_by_instance.move(name, instance(old), instance(new))
        self._nodes_by_owner.move(name, owner_uids(old or {}), owner_uids(new or {}))

    def node(self, name: str) -> Body | None:
        return self._nodes.get(name)

    def nodes_of_instance(self, instance: str) -> list[Body]:
        return [self._nodes[n] for n in self._nodes_by_instance.get(instance)]

    def nodes_owned_by(self, uid: str) -> list[Body]:
        return [self._nodes[n] for n in self._nodes_by_owner.get(uid)]

    def instance_of_node(self, node: Body) -> str | None:
        return self._instance_of_node(node)

    # -- relist -----------------------------------------------------------------------------------

    def prune_claims(
        self, dialect: Dialect, listed: Iterable[Body], list_version: str
    ) -> tuple[list[Claim], list[Claim]]:
        """After a full list: store what it shows, forget what it does not (unless we saw it
        change after the list was taken). Returns (the claims that changed, those forgotten)."""
        names = set()
        changed = []
        for body in listed:
            names.add(str((body.get("metadata") or {}).get("name") or ""))
            claim = self.put_claim(dialect, body)
            if claim is not None:
                changed.append(claim)
        gone = []
        for key, entry in list(self._claims.items()):
            if (key.group, key.kind) != (dialect.resource.group, dialect.kind) or key.name in names:
                continue
            if _after_list(entry.body, list_version):
                continue  # created after the list was taken
            removed = self.remove_claim(key)
            if removed is not None:
                gone.append(removed)
        return changed, gone

    def prune_nodes(self, listed: Iterable[Body], list_version: str) -> tuple[list[Body], list[Body]]:
        """The same for Nodes: (the Nodes that changed, those forgotten)."""
        names = set()
        changed = []
        for body in listed:
            names.add(str((body.get("metadata") or {}).get("name") or ""))
            if self.put_node(body):
                changed.append(body)
        gone = []
        for name, body in list(self._nodes.items()):
            if name in names or _after_list(body, list_version):
                continue
            self.remove_node(name)
            gone.append(body)
        return changed, gone


def _put(table: dict[str, tuple[Any, Body]], body: Body, parse: Callable[[Body], Any]) -> Any:
    name = str((body.get("metadata") or {}).get("name") or "")
    if not name:
        return None
    old = table.get(name)
    if not newer(body, old[1] if old else None):
        return None
    value = parse(body)
    table[name] = (value, body)
    return value


def _prune(
    table: dict[str, tuple[Any, Body]],
    listed: Iterable[Body],
    list_version: str,
    parse: Callable[[Body], Any],
) -> tuple[list[Any], list[Any]]:
    """After a full list: (what changed, what is gone and was not seen since the list was taken)."""
    names = set()
    changed = []
    for body in listed:
        names.add(str((body.get("metadata") or {}).get("name") or ""))
        value = _put(table, body, parse)
        if value is not None:
            changed.append(value)
    gone = []
    for name, (value, body) in list(table.items()):
        if name not in names and not _after_list(body, list_version):
            del table[name]
            gone.append(value)
    return changed, gone


def _after_list(body: Body, list_version: str) -> bool:
    return bool(newer(body, {"metadata": {"resourceVersion": list_version}}))
