"""Reading and writing claims in each API dialect: Machine v1alpha5 and NodeClaim v1.

A dialect knows its REST location, its condition type names and condition style, and carries as
plain fields everything else that differs between the dialects (which label names the claim's
provisioner/nodepool, how a dependent that is not yet known is reported, how a capacity shortage
is worded, its metric names), so that no other module needs to ask which dialect it has.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from provisioner.claims.model import (
    MAX_CONDITION_MESSAGE,
    NODEPOOL_LABEL,
    PROVISIONER_LABEL,
    Claim,
    ClaimKey,
    ClaimStatus,
    Condition,
    ConditionType,
    NodeClassRef,
    Requirement,
    Status,
)
from provisioner.cloud.types import Taint, TaintEffect
from provisioner.kube import Resource
from provisioner.redact import redact

MACHINES = Resource("karpenter.sh", "v1alpha5", "machines")
NODECLAIMS = Resource("karpenter.sh", "v1", "nodeclaims")

_EFFECTS: frozenset[str] = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})


def parse_time(value: Any) -> datetime.datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float | None:
    """A Go duration (``48h``, ``1h30m``, ``90s``) in seconds; None when absent or not a duration."""
    if not isinstance(value, str) or not value:
        return None
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def format_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_taints(items: Any) -> tuple[Taint, ...]:
    out: list[Taint] = []
    for t in items or ():
        if not isinstance(t, Mapping) or not t.get("key"):
            continue
        effect = str(t.get("effect") or "NoSchedule")
        out.append(Taint(str(t["key"]), str(t.get("value") or ""), cast(TaintEffect, effect)))
    return tuple(out)


def taint_body(t: Taint) -> dict[str, str]:
    body = {"key": t.key, "effect": t.effect}
    if t.value:
        body["value"] = t.value
    return body


@dataclass(frozen=True)
class Dialect:
    name: str
    kind: str
    resource: Resource
    condition_names: Mapping[ConditionType, str]
    #: How a dependent that is not yet True-or-False is written. Kaito <= v0.4.1 treats a Machine
    #: as pending only while MachineInitialized is False (or no conditions exist), so a Machine
    #: never shows Unknown.
    pending_status: Status
    #: knative style (Machine: severity, no observedGeneration) or metav1.Condition (NodeClaim).
    knative: bool
    #: The label naming the claim's Karpenter provisioner (v1alpha5) or nodepool (v1).
    nodepool_label: str
    #: Kaito compares a Machine's MachineLaunched message with its capacity text for equality, and
    #: looks for the text in a NodeClaim's Launched message: exact (text only) or text + details.
    capacity_message_exact: bool
    #: Karpenter's metric name part (``karpenter_machines_*``) and the label naming the pool in them.
    metric_name: str
    metric_pool_label: str

    @property
    def api_version(self) -> str:
        return self.resource.api_version

    @property
    def has_instance_terminating(self) -> bool:
        """Whether the dialect reports InstanceTerminating while the instance is being deleted."""
        return ConditionType.INSTANCE_TERMINATING in self.condition_names

    def key(self, name: str) -> ClaimKey:
        return ClaimKey(self.resource.group, self.kind, name)

    def condition_type(self, name: str) -> ConditionType | None:
        for ctype, wire in self.condition_names.items():
            if wire == name:
                return ctype
        return None

    # -- reading ----------------------------------------------------------------------------------

    def parse(self, body: Mapping[str, Any]) -> Claim:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        requirements = tuple(
            Requirement(
                key=str(r.get("key", "")),
                operator=str(r.get("operator", "")),
                values=tuple(str(v) for v in r.get("values") or ()),
                min_values=r.get("minValues"),
            )
            for r in spec.get("requirements") or ()
            if isinstance(r, Mapping)
        )
        ref = spec.get("nodeClassRef")
        node_class_ref = (
            NodeClassRef(str(ref.get("group") or ""), str(ref.get("kind") or ""), str(ref.get("name") or ""))
            if isinstance(ref, Mapping)
            else None
        )
        conditions: list[Condition] = []
        foreign: list[Mapping[str, Any]] = []
        for c in status.get("conditions") or ():
            if not isinstance(c, Mapping):
                continue
            ctype = self.condition_type(str(c.get("type", "")))
            if ctype is None:
                foreign.append(dict(c))
                continue
            try:
                cstatus = Status(str(c.get("status", "Unknown")))
            except ValueError:
                cstatus = Status.UNKNOWN
            conditions.append(
                Condition(
                    ctype,
                    cstatus,
                    str(c.get("reason") or ""),
                    str(c.get("message") or ""),
                    parse_time(c.get("lastTransitionTime")),
                )
            )
        return Claim(
            dialect=self.name,
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            resource_version=str(meta.get("resourceVersion", "")),
            creation_timestamp=parse_time(meta.get("creationTimestamp")),
            deletion_timestamp=parse_time(meta.get("deletionTimestamp")),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            finalizers=tuple(meta.get("finalizers") or ()),
            requirements=requirements,
            taints=parse_taints(spec.get("taints")),
            startup_taints=parse_taints(spec.get("startupTaints")),
            requests={
                str(k): str(v) for k, v in ((spec.get("resources") or {}).get("requests") or {}).items()
            },
            node_class_ref=node_class_ref,
            termination_grace_period=parse_duration(spec.get("terminationGracePeriod")),
            status=ClaimStatus(
                node_name=str(status.get("nodeName") or ""),
                provider_id=str(status.get("providerID") or ""),
                image_id=str(status.get("imageID") or ""),
                capacity=dict(status.get("capacity") or {}),
                allocatable=dict(status.get("allocatable") or {}),
                conditions=tuple(sorted(conditions, key=lambda c: c.type.value)),
                foreign_conditions=tuple(foreign),
            ),
            raw=body,
        )

    # -- writing ----------------------------------------------------------------------------------

    def condition_body(self, c: Condition, generation: int) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.condition_names[c.type], "status": c.status.value}
        if c.last_transition_time is not None:
            body["lastTransitionTime"] = format_time(c.last_transition_time)
        message = redact(c.message)[:MAX_CONDITION_MESSAGE]
        if self.knative:
            if c.type == ConditionType.INSTANCE_TERMINATING:
                body["severity"] = "Info"
            if c.reason:
                body["reason"] = c.reason
            if message:
                body["message"] = message
        else:
            body["reason"] = c.reason or c.type.value
            body["message"] = message
            body["observedGeneration"] = generation
        return body

    def status_body(self, status: ClaimStatus, generation: int) -> dict[str, Any]:
        """The full ``status`` object to write for this dialect (fields it does not have are left out).

        Conditions of types we do not model are written back as they were read: a status write
        never erases what another controller reported.
        """
        body: dict[str, Any] = {
            "conditions": [
                self.condition_body(c, generation)
                for c in status.conditions
                if c.type in self.condition_names
            ]
            + [dict(c) for c in status.foreign_conditions]
        }
        if status.node_name:
            body["nodeName"] = status.node_name
        if status.provider_id:
            body["providerID"] = status.provider_id
        if status.image_id and not self.knative:
            body["imageID"] = status.image_id
        if status.capacity:
            body["capacity"] = dict(status.capacity)
        if status.allocatable:
            body["allocatable"] = dict(status.allocatable)
        return body

    def owner_reference(self, claim: Claim) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": claim.name,
            "uid": claim.uid,
            "blockOwnerDeletion": True,
        }


MACHINE = Dialect(
    name="machine",
    kind="Machine",
    resource=MACHINES,
    condition_names={
        ConditionType.LAUNCHED: "MachineLaunched",
        ConditionType.REGISTERED: "MachineRegistered",
        ConditionType.INITIALIZED: "MachineInitialized",
        ConditionType.READY: "Ready",
    },
    pending_status=Status.FALSE,
    knative=True,
    nodepool_label=PROVISIONER_LABEL,
    capacity_message_exact=True,
    metric_name="machines",
    metric_pool_label="provisioner",
)

NODECLAIM = Dialect(
    name="nodeclaim",
    kind="NodeClaim",
    resource=NODECLAIMS,
    condition_names={
        ConditionType.LAUNCHED: "Launched",
        ConditionType.REGISTERED: "Registered",
        ConditionType.INITIALIZED: "Initialized",
        ConditionType.READY: "Ready",
        ConditionType.INSTANCE_TERMINATING: "InstanceTerminating",
        ConditionType.DRIFTED: "Drifted",
    },
    pending_status=Status.UNKNOWN,
    knative=False,
    nodepool_label=NODEPOOL_LABEL,
    capacity_message_exact=False,
    metric_name="nodeclaims",
    metric_pool_label="nodepool",
)

DIALECTS: dict[str, Dialect] = {d.name: d for d in (MACHINE, NODECLAIM)}


def dialect_of(claim: Claim) -> Dialect:
    return DIALECTS[claim.dialect]


def key_of(claim: Claim) -> ClaimKey:
    return dialect_of(claim).key(claim.name)


def dialect_for_kind(api_version: str, kind: str) -> Dialect | None:
    """The dialect of an ownerReference (or any apiVersion/kind pair), if it is a claim kind."""
    return next((d for d in DIALECTS.values() if d.kind == kind and d.api_version == api_version), None)
