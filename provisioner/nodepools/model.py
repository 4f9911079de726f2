"""Static NodePools (``karpenter.sh/v1``) and our node class (``KaitoNodeClass``, ``kaito.sh/v1alpha1``)
as plain values, read from their API objects, and the hashes that say when a NodeClaim made from
them has drifted.

Only what the NodePool controller acts on is modelled; the template is kept as written, since it
is copied into every NodeClaim.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provisioner.claims.dialects import parse_duration, parse_time
from provisioner.claims.model import ANNOTATION_PREFIX, NodeClassRef
from provisioner.cloud.types import ResolvedImage
from provisioner.kube import Resource
from provisioner.quantity import parse_quantity

NODEPOOLS = Resource("karpenter.sh", "v1", "nodepools")
KAITO_NODE_CLASSES = Resource("kaito.sh", "v1alpha1", "kaitonodeclasses")
NODE_CLASS_KIND = "KaitoNodeClass"

#: Karpenter's annotations on NodeClaims made from a NodePool: the template's hash and its scheme.
NODEPOOL_HASH_ANNOTATION = "karpenter.sh/nodepool-hash"
NODEPOOL_HASH_VERSION_ANNOTATION = "karpenter.sh/nodepool-hash-version"
#: Our hash scheme. Karpenter's own is "v3"; a different name means we never compare our hashes
#: with ones Karpenter wrote (on NodeClaims it made before we took over).
NODEPOOL_HASH_VERSION = "gpu-provisioner-v1"
#: The node class settings (and resolved image) a NodeClaim was made with.
NODE_CLASS_HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/nodeclass-hash"
#: On a replacement NodeClaim: the name of the NodeClaim it replaces (drift).
REPLACES_ANNOTATION = f"{ANNOTATION_PREFIX}/replaces"
#: Karpenter's opt-out from disruption, on a Node, a NodeClaim or a pod.
DO_NOT_DISRUPT_ANNOTATION = "karpenter.sh/do-not-disrupt"
#: On NodePools we serve, so that their NodeClaims are deleted before the NodePool goes.
NODEPOOL_FINALIZER = f"{ANNOTATION_PREFIX}/termination"

DRIFTED = "Drifted"
#: What a budget without ``nodes`` allows (Karpenter's default).
DEFAULT_BUDGET_NODES = "10%"


def node_class_label(ref: NodeClassRef) -> str:
    """Karpenter's label naming a NodeClaim's node class: ``<group>/<kind in lower case>``."""
    return f"{ref.group}/{ref.kind.lower()}"


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _pruned(value: Any) -> Any:
    """``value`` without empty members (an empty list, map or string means "not set")."""
    if isinstance(value, Mapping):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


@dataclass(frozen=True)
class Budget:
    """At most ``nodes`` (a count or a percentage) of a NodePool's nodes disrupted at once, for
    ``reasons`` (empty: every reason), while the cron ``schedule`` + ``duration`` window is open
    (no schedule: always)."""

    nodes: str = DEFAULT_BUDGET_NODES
    reasons: tuple[str, ...] = ()
    schedule: str | None = None
    duration: float | None = None


@dataclass(frozen=True)
class NodePool:
    name: str
    uid: str
    generation: int = 0
    resource_version: str = ""
    deletion_timestamp: datetime.datetime | None = None
    finalizers: tuple[str, ...] = ()
    #: None for a dynamic NodePool (pods decide its size; we do not serve those).
    replicas: int | None = None
    template: Mapping[str, Any] = field(default_factory=dict)
    node_class_ref: NodeClassRef | None = None
    budgets: tuple[Budget, ...] = ()
    #: ``spec.limits.nodes``: the most NodeClaims the NodePool may have at once (replacements included).
    node_limit: int | None = None
    status: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def deleting(self) -> bool:
        return self.deletion_timestamp is not None

    @property
    def template_labels(self) -> Mapping[str, str]:
        return dict((self.template.get("metadata") or {}).get("labels") or {})

    @property
    def template_annotations(self) -> Mapping[str, str]:
        return dict((self.template.get("metadata") or {}).get("annotations") or {})

    @property
    def template_spec(self) -> Mapping[str, Any]:
        return dict(self.template.get("spec") or {})

    def template_hash(self) -> str:
        """A hash of the template fields whose change makes existing NodeClaims drift. Like
        Karpenter, requirements are left out (they drift by comparison with the NodeClaim's labels),
        empty values equal absent ones, and taints are compared as sets."""
        spec = dict(self.template_spec)
        spec.pop("requirements", None)
        spec.pop("resources", None)
        for key in ("taints", "startupTaints"):
            if isinstance(spec.get(key), list):
                spec[key] = sorted(spec[key], key=lambda t: json.dumps(t, sort_keys=True))
        meta = self.template.get("metadata") or {}
        return _hash(_pruned({"metadata": meta, "spec": spec}))

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": NODEPOOLS.api_version,
            "kind": "NodePool",
            "name": self.name,
            "uid": self.uid,
            "blockOwnerDeletion": True,
        }


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return None


def _node_limit(limits: Any) -> int | None:
    if not isinstance(limits, Mapping) or limits.get("nodes") is None:
        return None
    try:
        return int(parse_quantity(str(limits["nodes"])))
    except (ValueError, ArithmeticError):
        return None


def parse_nodepool(body: Mapping[str, Any]) -> NodePool:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    raw_template = spec.get("template")
    template: Mapping[str, Any] = raw_template if isinstance(raw_template, Mapping) else {}
    ref = (template.get("spec") or {}).get("nodeClassRef")
    budgets = []
    for b in (spec.get("disruption") or {}).get("budgets") or ():
        if not isinstance(b, Mapping):
            continue
        budgets.append(
            Budget(
                nodes=str(b.get("nodes") or DEFAULT_BUDGET_NODES),
                reasons=tuple(str(r) for r in b.get("reasons") or ()),
                schedule=str(b["schedule"]) if b.get("schedule") else None,
                duration=parse_duration(b.get("duration")),
            )
        )
    return NodePool(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion", "")),
        deletion_timestamp=parse_time(meta.get("deletionTimestamp")),
        finalizers=tuple(meta.get("finalizers") or ()),
        replicas=_int(spec.get("replicas")),
        template=dict(template),
        node_class_ref=NodeClassRef(
            str(ref.get("group") or ""), str(ref.get("kind") or ""), str(ref.get("name") or "")
        )
        if isinstance(ref, Mapping)
        else None,
        budgets=tuple(budgets),
        node_limit=_node_limit(spec.get("limits")),
        status=dict(body.get("status") or {}),
        raw=body,
    )


@dataclass(frozen=True)
class NodeClass:
    """A ``KaitoNodeClass``: the node settings of the NodeClaims that reference it, and what the
    cloud resolved its image family to."""

    name: str
    uid: str
    generation: int = 0
    resource_version: str = ""
    image_family: str | None = None
    os_disk_size_gb: int | None = None
    os_disk_type: str | None = None
    max_pods: int | None = None
    gpu_driver: str | None = None
    #: Set by us once the spec of ``observed_generation`` was checked.
    ready: bool | None = None
    observed_generation: int = 0
    resolved_image: ResolvedImage | None = None
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def current(self) -> bool:
        """Whether the status describes the spec as it is now (not an earlier generation)."""
        return self.observed_generation == self.generation

    def settings(self) -> dict[str, Any]:
        return {
            "imageFamily": self.image_family,
            "osDiskSizeGB": self.os_disk_size_gb,
            "osDiskType": self.os_disk_type,
            "maxPods": self.max_pods,
            "gpuDriver": self.gpu_driver,
        }

    def settings_hash(self) -> str:
        """What a node made from this class depends on: its settings and the resolved image."""
        image = self.resolved_image
        resolved = {"name": image.name, "version": image.version} if image else {}
        return _hash(_pruned({"settings": self.settings(), "image": resolved}))


def parse_node_class(body: Mapping[str, Any]) -> NodeClass:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    ready = next(
        (
            c.get("status")
            for c in status.get("conditions") or ()
            if isinstance(c, Mapping) and c.get("type") == "Ready"
        ),
        None,
    )
    image = status.get("resolvedImage")
    return NodeClass(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion", "")),
        image_family=str(spec["imageFamily"]) if spec.get("imageFamily") else None,
        os_disk_size_gb=_int(spec.get("osDiskSizeGB")),
        os_disk_type=str(spec["osDiskType"]) if spec.get("osDiskType") else None,
        max_pods=_int(spec.get("maxPods")),
        gpu_driver=str(spec["gpuDriver"]) if spec.get("gpuDriver") else None,
        ready=None if ready is None else ready == "True",
        observed_generation=int(status.get("observedGeneration") or 0),
        resolved_image=ResolvedImage(
            str(image.get("family") or ""), str(image.get("name") or ""), str(image.get("version") or "")
        )
        if isinstance(image, Mapping)
        else None,
        status=dict(status),
    )
