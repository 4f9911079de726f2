"""An in-memory API server for reconciler unit tests: the KubeClient surface on plain dicts.

It keeps what the controller relies on from a real API server: a global resourceVersion that
grows with every write, merge patches (RFC 7386) with ``metadata.resourceVersion`` as a
precondition (409 on mismatch), the status subresource (a patch of the object ignores ``status``,
a patch of ``/status`` changes only it), deletion that waits on finalizers (a ``deletionTimestamp``
first, removal once the last finalizer goes), delete preconditions on UID, the Eviction
subresource (429 for pods a test marks as protected by a PodDisruptionBudget) and list field and
label selectors of the simple ``key=value`` form.

Every write is appended to ``events`` as a watch event (``ADDED`` / ``MODIFIED`` / ``DELETED`` with
a copy of the object), so a test decides when — and whether — the controller sees it.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provisioner.kube import (
    EVENTS,
    PODS,
    ApiError,
    ConflictError,
    NotFoundError,
    Resource,
    TooManyRequestsError,
)

Body = dict[str, Any]
Ref = tuple[str, str, str, str]  # (api_version, plural, namespace, name)


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@dataclass
class WatchEvent:
    resource: Resource
    type: str
    object: Body


@dataclass
class Write:
    """One write request as the server saw it (for assertions on write economy)."""

    verb: str
    resource: Resource
    name: str
    subresource: str | None = None
    body: Any = None


@dataclass
class MemKube:
    clock: Any = None
    objects: dict[Ref, Body] = field(default_factory=dict)
    events: list[WatchEvent] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    #: Pods (namespace, name) whose eviction a PodDisruptionBudget refuses.
    protected_pods: set[tuple[str, str]] = field(default_factory=set)
    #: (verb, plural) -> an error to raise instead of serving the request, once per entry.
    faults: list[tuple[str, str, ApiError]] = field(default_factory=list)
    _rv: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    # -- helpers for tests ------------------------------------------------------------------------

    def now(self) -> datetime.datetime:
        return self.clock() if self.clock is not None else datetime.datetime.now(datetime.UTC)

    def _now_text(self) -> str:
        return self.now().astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @staticmethod
    def _ref(res: Resource, name: str, namespace: str | None) -> Ref:
        return (res.api_version, res.plural, namespace or "" if res.namespaced else "", name)

    def peek(self, res: Resource, name: str, namespace: str | None = None) -> Body | None:
        obj = self.objects.get(self._ref(res, name, namespace))
        return copy.deepcopy(obj) if obj is not None else None

    def all(self, res: Resource) -> list[Body]:
        return [
            copy.deepcopy(o)
            for (av, plural, _, _), o in self.objects.items()
            if (av, plural) == (res.api_version, res.plural)
        ]

    def take_events(self) -> list[WatchEvent]:
        out, self.events = self.events, []
        return out

    def writes_of(self, verb: str, res: Resource, name: str | None = None) -> list[Write]:
        return [
            w
            for w in self.writes
            if w.verb == verb and w.resource.plural == res.plural and (name is None or w.name == name)
        ]

    def _record(self, res: Resource, kind: str, obj: Body) -> None:
        self.events.append(WatchEvent(res, kind, copy.deepcopy(obj)))

    def _bump(self, obj: Body) -> None:
        obj.setdefault("metadata", {})["resourceVersion"] = str(next(self._rv))

    def _fault(self, verb: str, res: Resource) -> None:
        for i, (v, plural, err) in enumerate(self.faults):
            if v == verb and plural == res.plural:
                del self.faults[i]
                raise err

    # -- the KubeClient surface -------------------------------------------------------------------

    async def request(self, method: str, path: str, **_: Any) -> Body:
        if path == "/version":
            return {"gitVersion": "v1.34.4"}
        raise ApiError(404, "NotFound", f"{method} {path} is not served by the in-memory API server")

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> Body:
        self._fault("get", res)
        obj = self.peek(res, name, namespace)
        if obj is None:
            raise NotFoundError(404, "NotFound", f'{res.plural} "{name}" not found')
        return obj

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Body]:
        self._fault("list", res)
        out = []
        for obj in self.all(res):
            meta = obj.get("metadata") or {}
            if namespace and res.namespaced and meta.get("namespace") != namespace:
                continue
            if label_selector and not _matches(meta.get("labels") or {}, label_selector):
                continue
            if field_selector and not _field_matches(obj, field_selector):
                continue
            out.append(obj)
        return out

    async def list_with_version(self, res: Resource) -> tuple[list[Body], str]:
        items = await self.list(res)
        return items, str(next(self._rv))

    def put(self, res: Resource, obj: Body) -> Body:
        """Create (or replace) an object directly, as another client would."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", self._now_text())
        meta.setdefault("generation", 1)
        ref = self._ref(res, meta["name"], meta.get("namespace"))
        kind = "MODIFIED" if ref in self.objects else "ADDED"
        self._bump(obj)
        self.objects[ref] = obj
        self._record(res, kind, obj)
        return copy.deepcopy(obj)

    async def create(self, res: Resource, body: Body, namespace: str | None = None) -> Body:
        self._fault("create", res)
        name = (body.get("metadata") or {}).get("name")
        self.writes.append(Write("create", res, name or "", None, body))
        if res == EVENTS:
            # Events are not objects the controller watches; keep them out of ``events``.
            obj = copy.deepcopy(body)
            self._bump(obj)
            self.objects[self._ref(res, name, namespace)] = obj
            return obj
        if self._ref(res, name, namespace) in self.objects:
            raise ConflictError(409, "AlreadyExists", f'{res.plural} "{name}" already exists')
        return self.put(res, body)

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        content_type: str = "",
    ) -> Body:
        self._fault("patch", res)
        self.writes.append(Write("patch", res, name, subresource, copy.deepcopy(patch)))
        ref = self._ref(res, name, namespace)
        obj = self.objects.get(ref)
        if obj is None:
            raise NotFoundError(404, "NotFound", f'{res.plural} "{name}" not found')
        want_rv = ((patch or {}).get("metadata") or {}).get("resourceVersion")
        if want_rv is not None and want_rv != obj["metadata"]["resourceVersion"]:
            raise ConflictError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.plural} "{name}": the object has been modified',
            )
        patch = copy.deepcopy(patch)
        if patch.get("metadata"):
            patch["metadata"].pop("resourceVersion", None)
        if subresource == "status":
            patch = {"status": patch.get("status")} if "status" in patch else {}
        elif res.group:  # custom resources with a status subresource ignore status in object patches
            patch.pop("status", None)
        updated = merge_patch(obj, patch)
        if updated == obj:
            return copy.deepcopy(obj)  # a no-op patch does not change the resourceVersion
        self._bump(updated)
        meta = updated["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.objects[ref]
            self._record(res, "DELETED", updated)
            return copy.deepcopy(updated)
        self.objects[ref] = updated
        self._record(res, "MODIFIED", updated)
        return copy.deepcopy(updated)

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        grace_period_seconds: int | None = None,
        preconditions_uid: str | None = None,
    ) -> Body:
        self._fault("delete", res)
        self.writes.append(Write("delete", res, name))
        ref = self._ref(res, name, namespace)
        obj = self.objects.get(ref)
        if obj is None:
            raise NotFoundError(404, "NotFound", f'{res.plural} "{name}" not found')
        if preconditions_uid and obj["metadata"].get("uid") != preconditions_uid:
            raise ConflictError(409, "Conflict", "Precondition failed: UID in precondition does not match")
        return self.remove(res, name, namespace)

    def remove(self, res: Resource, name: str, namespace: str | None = None) -> Body:
        """Delete as the API server does: wait on finalizers, else remove now."""
        ref = self._ref(res, name, namespace)
        obj = self.objects[ref]
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = self._now_text()
                self._bump(obj)
                self._record(res, "MODIFIED", obj)
            return copy.deepcopy(obj)
        del self.objects[ref]
        self._bump(obj)
        self._record(res, "DELETED", obj)
        return copy.deepcopy(obj)

    async def evict(self, name: str, namespace: str) -> None:
        self.writes.append(Write("create", PODS, name, "eviction"))
        if (namespace, name) in self.protected_pods:
            raise TooManyRequestsError(
                429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget."
            )
        if self.peek(PODS, name, namespace) is None:
            raise NotFoundError(404, "NotFound", f'pods "{name}" not found')
        self.remove(PODS, name, namespace)

    async def close(self) -> None:
        return None


def _matches(labels: Mapping[str, str], selector: str) -> bool:
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def _field_matches(obj: Mapping[str, Any], selector: str) -> bool:
    for term in selector.split(","):
        path, _, value = term.partition("=")
        current: Any = obj
        for part in path.strip().split("."):
            current = current.get(part) if isinstance(current, Mapping) else None
        if str(current) != value.strip():
            return False
    return True
