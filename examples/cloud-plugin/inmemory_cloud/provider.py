"""An in-memory cloud: a small but complete ``CloudProvider`` to copy from.

Instances live in this process only (a restart forgets them), no Node ever joins, and time is the
only thing that moves an instance along: ``creating`` for ``INMEMORY_CREATE_SECONDS``, then
``running`` (or ``failed``, for the sizes in ``INMEMORY_FAIL_TYPES``); ``deleting`` for
``INMEMORY_DELETE_SECONDS``, then gone. Nothing runs in the background: the state is worked out
whenever the controller asks, the way a real cloud's API reports the progress of its operations.

Settings (read from ``ProviderContext.env``, i.e. the controller's environment):

``INMEMORY_ZONES``           zones offered (default ``zone-1,zone-2``)
``INMEMORY_CAPACITY``        ``size=count,...``: instances of a size that may exist at once
                             (sizes not named are unlimited)
``INMEMORY_CREATE_SECONDS``  how long a create takes (default 0)
``INMEMORY_DELETE_SECONDS``  how long a delete takes (default 0)
``INMEMORY_FAIL_TYPES``      sizes whose creates fail late, after being accepted
``INMEMORY_RATE_LIMIT``      calls per second before calls are throttled (default 0: no limit)
"""

from __future__ import annotations

import builtins
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from provisioner.cloud import (
    GPU_RESOURCE,
    CapacityType,
    CloudError,
    Instance,
    InstanceRequest,
    InstanceState,
    InstanceType,
    InsufficientCapacity,
    InvalidSpec,
    NotFound,
    ProviderContext,
    Throttled,
    Transient,
)

#: What this cloud sells. A real provider would read its catalogue from the cloud (and cache it).
CATALOG: tuple[InstanceType, ...] = (
    InstanceType("cpu-4", family="cpu", vcpus=4, memory_gib=16),
    InstanceType("gpu-a100-1", family="a100", vcpus=24, memory_gib=220, gpus=1, gpu_model="A100"),
    InstanceType("gpu-a100-8", family="a100", vcpus=96, memory_gib=900, gpus=8, gpu_model="A100"),
    InstanceType("gpu-h100-8", family="h100", vcpus=96, memory_gib=1900, gpus=8, gpu_model="H100"),
)

#: Node label keys this cloud sets itself; a request asking for them gets a warning instead.
RESERVED_LABEL_PREFIX = "inmemory.example.com/"

#: After a size failed late, it is skipped for this long so that a retry can use the next candidate.
FAILED_SIZE_HOLD_SECONDS = 60.0

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


def _counts(text: str, setting: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"{setting}: expected SIZE=COUNT, got {item!r}")
        out[key.strip()] = int(value)
    return out


def _seconds(env: Mapping[str, str], setting: str) -> float:
    raw = env.get(setting, "").strip()
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        raise ValueError(f"{setting}: {raw!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{setting}: must not be negative")
    return value


@dataclass
class _Record:
    instance: Instance
    created_at: float
    deleting_since: float | None = None


class InMemoryCloud:
    """``CloudProvider`` over a dict. Registered as ``inmemory-example`` (see pyproject.toml).

    The registry calls ``InMemoryCloud(context)``; raising here (e.g. for a bad setting) stops the
    controller at start-up with the message, which is what an operator wants.
    """

    def __init__(self, context: ProviderContext, *, clock: Callable[[], float] = time.monotonic) -> None:
        env = context.env
        self.cluster = context.cluster_name or "cluster"
        # Called right before every change to this cloud: a replica that may have lost its
        # leadership must not send it (the call raises, and nothing is changed).
        self._write_gate = context.write_gate
        self.zones = tuple(
            z.strip() for z in env.get("INMEMORY_ZONES", "zone-1,zone-2").split(",") if z.strip()
        )
        self.capacity = _counts(env.get("INMEMORY_CAPACITY", ""), "INMEMORY_CAPACITY")
        self.create_seconds = _seconds(env, "INMEMORY_CREATE_SECONDS")
        self.delete_seconds = _seconds(env, "INMEMORY_DELETE_SECONDS")
        self.fail_types = frozenset(
            t.strip() for t in env.get("INMEMORY_FAIL_TYPES", "").split(",") if t.strip()
        )
        self.rate_limit = _seconds(env, "INMEMORY_RATE_LIMIT")
        self.catalog = {t.name: t for t in CATALOG}
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._failed_at: dict[str, float] = {}  # size -> when an instance of it last failed late
        self._tokens = max(self.rate_limit, 1.0)
        self._refilled = clock()
        # No lock: every method runs on the controller's event loop and never awaits while it
        # changes state, so no two calls interleave inside one.

    # --- CloudProvider -------------------------------------------------------------------------

    def instance_name(self, claim_name: str) -> str:
        """The claim name when this cloud accepts it, else a stable hash of it.

        Pure and stable: the controller finds the instance of a claim again after a restart by
        calling this, so it must never depend on state or time.
        """
        if _NAME.match(claim_name):
            return claim_name
        return "c" + hashlib.sha256(claim_name.encode()).hexdigest()[:16]

    def instance_of_node(self, node: Mapping[str, Any]) -> str | None:
        """Which instance a Node runs on: the last part of its ``inmemory:///<cluster>/<zone>/<name>``
        providerID (a Node of another cloud, or of another cluster, is none of ours)."""
        provider_id = str((node.get("spec") or {}).get("providerID") or "")
        prefix = f"inmemory:///{self.cluster}/"
        if not provider_id.startswith(prefix):
            return None
        return provider_id[len(prefix) :].rpartition("/")[2] or None

    async def create(self, request: InstanceRequest) -> Instance:
        """Start a create and return at once; adopt what already exists for the same claim."""
        self._admit()
        existing = self._live(request.name)
        if existing is not None:
            if existing.instance.claim_uid == request.claim_uid:
                return self._snapshot(existing)  # idempotent: a retry, or the controller restarted
            # Same name, older claim (deleted and recreated by its owner): wait for termination or
            # garbage collection to remove the old instance. Retried with backoff.
            raise Transient(
                f"instance {request.name} still belongs to claim uid {existing.instance.claim_uid}",
                "NameInUse",
            )
        if not _NAME.match(request.name):
            raise InvalidSpec(f"instance name {request.name!r} is not valid here", "InvalidName")
        zones = request.zones or self.zones
        usable_zones = [z for z in zones if z in self.zones]
        if not usable_zones:
            # No retry can fix a zone this cloud does not have: InvalidSpec, not a capacity error.
            raise InvalidSpec(
                f"zones {', '.join(zones)} are not offered (have {', '.join(self.zones)})", "NoZone"
            )
        offered = [t for t in request.instance_types if t in self.catalog]
        if not offered:
            raise InvalidSpec(
                f"none of the instance types {', '.join(request.instance_types)} is offered", "NotOffered"
            )
        shortages: list[str] = []
        for name in request.instance_types:  # in the claim's order of preference
            itype = self.catalog.get(name)
            if itype is None:
                shortages.append(f"{name}: not offered")
                continue
            failed = self._failed_at.get(name)
            if failed is not None and self._clock() - failed < FAILED_SIZE_HOLD_SECONDS:
                shortages.append(f"{name}: recently failed to allocate")
                continue
            limit = self.capacity.get(name)
            in_use = sum(1 for r in self._live_records() if r.instance.instance_type == name)
            if limit is not None and in_use >= limit:
                shortages.append(f"{name}: {in_use} of {limit} in use")
                continue
            record = _Record(self._build(request, itype, usable_zones[0]), created_at=self._clock())
            self._write_gate("cloud")
            self._records[request.name] = record
            return record.instance  # state "creating": the create has only started
        # Every candidate short: the lifecycle keeps the claim, reports it the way Kaito expects and
        # retries with backoff. The fields feed the condition, the event and the metrics.
        first = next((n for n in request.instance_types if n in self.catalog), None)
        raise InsufficientCapacity(
            "; ".join(shortages),
            "CapacityExhausted",
            instance_type=first,
            family=self.catalog[first].family if first else None,
        )

    async def get(self, name: str) -> Instance:
        self._admit()
        record = self._live(name)
        if record is None:
            raise NotFound(f"instance {name} not found", "NotFound")
        return self._snapshot(record)

    async def list(self) -> builtins.list[Instance]:
        """Everything we created, in any state (garbage collection compares it with the claims)."""
        self._admit()
        return [self._snapshot(r) for r in self._live_records() if r.instance.managed]

    async def delete(self, name: str, *, version: str | None = None) -> None:
        """Start deleting; missing or already deleting counts as done. (This cloud keeps no
        versions, so ``version`` — for clouds with ETags — has nothing to guard.)"""
        self._admit()
        record = self._live(name)
        if record is not None and record.deleting_since is None:
            self._write_gate("cloud")
            record.deleting_since = self._clock()

    async def instance_types(self) -> builtins.list[InstanceType]:
        return builtins.list(self.catalog.values())

    async def close(self) -> None:
        self._records.clear()

    # --- optional ------------------------------------------------------------------------------

    async def check(self) -> tuple[bool, str]:
        """Readiness (``/readyz``): a real provider checks that the cloud accepts its credentials."""
        return True, f"{len(self._records)} instances"

    def warnings(self, request: InstanceRequest) -> tuple[str, ...]:
        """What of the request will not reach the node as asked; each becomes a Warning event."""
        return tuple(
            f"label {key} is set by the in-memory cloud itself; the requested value is ignored"
            for key in request.labels
            if key.startswith(RESERVED_LABEL_PREFIX)
        )

    # --- internals -----------------------------------------------------------------------------

    def _admit(self) -> None:
        """A token bucket standing in for the cloud's API limits: over the limit is ``Throttled``."""
        if self.rate_limit <= 0:
            return
        now = self._clock()
        self._tokens = min(max(self.rate_limit, 1.0), self._tokens + (now - self._refilled) * self.rate_limit)
        self._refilled = now
        if self._tokens < 1:
            raise Throttled(
                "too many requests", "TooManyRequests", retry_after=(1 - self._tokens) / self.rate_limit
            )
        self._tokens -= 1

    def _build(self, request: InstanceRequest, itype: InstanceType, zone: str) -> Instance:
        capacity = {
            "cpu": str(itype.vcpus),
            "memory": f"{int(itype.memory_gib * 1024)}Mi",
            "pods": "110",
        }
        if itype.gpus:
            capacity[GPU_RESOURCE] = str(itype.gpus)
        labels = {k: v for k, v in request.labels.items() if not k.startswith(RESERVED_LABEL_PREFIX)}
        labels[f"{RESERVED_LABEL_PREFIX}instance"] = request.name
        return Instance(
            name=request.name,
            # The Node that joins for this instance must carry exactly this spec.providerID:
            # registration matches Nodes to claims by it.
            provider_id=f"inmemory:///{self.cluster}/{zone}/{request.name}",
            instance_type=itype.name,
            zone=zone,
            capacity_type=CapacityType.ON_DEMAND,
            state=InstanceState.CREATING,
            labels=labels,
            capacity=capacity,
            image_id=f"inmemory-image-{request.image_family or 'default'}",
            tags=request.all_tags(),  # ownership tags: how list() and GC tell ours from others'
        )

    def _live(self, name: str) -> _Record | None:
        """The record called ``name`` unless its deletion has finished (then it is dropped)."""
        record = self._records.get(name)
        if record is None:
            return None
        if record.deleting_since is not None and self._clock() - record.deleting_since >= self.delete_seconds:
            del self._records[name]
            return None
        return record

    def _live_records(self) -> builtins.list[_Record]:
        return [r for r in (self._live(n) for n in builtins.list(self._records)) if r is not None]

    def _snapshot(self, record: _Record) -> Instance:
        inst = record.instance
        if record.deleting_since is not None:
            return replace(inst, state=InstanceState.DELETING)
        if self._clock() - record.created_at < self.create_seconds:
            return inst
        if inst.instance_type in self.fail_types:
            # A failure found after the create was accepted: state FAILED with the error. The
            # lifecycle deletes the instance and retries (another size, if the claim allows one).
            failure: CloudError = InsufficientCapacity(
                f"no {inst.instance_type} could be allocated in {inst.zone}",
                "AllocationFailed",
                instance_type=inst.instance_type,
            )
            self._failed_at[inst.instance_type] = self._clock()
            return replace(inst, state=InstanceState.FAILED, failure=failure)
        return replace(inst, state=InstanceState.RUNNING)
