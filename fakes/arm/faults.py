"""Fault injection rules and the request log.

Two kinds of rule, both JSON-friendly (``/_fake/faults``, the ``faults`` list of the config file):

* **http** rules act on a request, matched by method and a path regex: ``throttle`` (429 +
  ``Retry-After``), ``error`` (any status, ARM body), ``drop`` (close the connection without
  answering), ``delay`` (answer late) and ``corrupt`` (a malformed answer, one of the ``kinds`` in
  ``fakes.arm.corruption.KINDS``, all of them by default, taken in a seeded cycle).
* **pool** rules act on agent pool operations (``create``, ``update`` — a count change included —,
  ``delete``, ``deleteMachines``), matched by operation and glob patterns on the pool name and
  vmSize: ``reject`` (the PUT/DELETE/POST itself fails with an ARM error), ``fail`` (the
  long-running operation fails late: provisioningState Failed, operation status Failed), ``stuck``
  (the operation never finishes) and ``latency`` (the operation takes this long).

Every rule may be limited to ``count`` applications (``None``: until removed) after letting
``after`` matching calls through. An http rule may fire for only a share of its matches: ``ratio``
(0 to 1, e.g. 0.2) decided by a random generator seeded with ``seed``, so a run is reproducible.

A corruption rule for a fifth of all ARM answers, every kind::

    {"action": "corrupt", "path": "^/subscriptions/", "ratio": 0.2, "seed": 7}
"""

from __future__ import annotations

import fnmatch
import itertools
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fakes.arm.corruption import KINDS, KindCycle

HttpAction = Literal["throttle", "error", "drop", "delay", "corrupt"]
PoolAction = Literal["reject", "fail", "stuck", "latency"]
PoolOperation = Literal["create", "update", "delete", "deleteMachines"]

HTTP_ACTIONS: frozenset[str] = frozenset({"throttle", "error", "drop", "delay", "corrupt"})
POOL_ACTIONS: frozenset[str] = frozenset({"reject", "fail", "stuck", "latency"})
POOL_OPERATIONS: frozenset[str] = frozenset({"create", "update", "delete", "deleteMachines"})

_ids = itertools.count(1)


def _new_id() -> str:
    return f"f{next(_ids)}"


class FaultSpecError(ValueError):
    """A fault description that cannot be used."""


@dataclass
class _Budget:
    """How often a rule fires: skip ``after`` matches, then fire ``count`` times (None: forever)."""

    count: int | None = None
    after: int = 0
    matched: int = 0
    applied: int = 0

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.applied >= self.count

    def take(self, chance: Callable[[], bool] = lambda: True) -> bool:
        """Record a match; True if the rule fires for it (and ``chance()`` agrees)."""
        if self.exhausted:
            return False
        self.matched += 1
        if self.matched <= self.after or not chance():
            return False
        self.applied += 1
        return True


@dataclass
class HttpFault:
    action: HttpAction
    method: str = "*"
    path: str = ".*"
    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    count: int | None = None
    after: int = 0
    #: ``corrupt`` only: the kinds to cycle through (default: all of ``corruption.KINDS``).
    kinds: list[str] | None = None
    ratio: float = 1.0
    seed: int | None = None
    id: str = field(default_factory=_new_id)
    budget: _Budget = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.budget = _Budget(self.count, self.after)
        self._path_re = _compile(self.path)
        if not isinstance(self.ratio, int | float) or not 0.0 <= self.ratio <= 1.0:
            raise FaultSpecError(f"ratio must be a number from 0 to 1, not {self.ratio!r}")
        if self.kinds is not None and self.action != "corrupt":
            raise FaultSpecError("'kinds' is for the 'corrupt' action only")
        if self.action == "corrupt":
            if self.kinds is not None and (
                not isinstance(self.kinds, list) or not self.kinds or set(self.kinds) - set(KINDS)
            ):
                raise FaultSpecError(f"'kinds' must be a non-empty list of {list(KINDS)}, not {self.kinds!r}")
            self.kinds = list(self.kinds or KINDS)
        self.rng = random.Random(self.seed)
        self._cycle = KindCycle(self.kinds or (), self.rng)
        #: How often each corruption kind was applied.
        self.kinds_applied: dict[str, int] = {}

    def take(self) -> bool:
        """Record a match; True if the rule fires for it."""
        return self.budget.take(lambda: self.ratio >= 1.0 or self.rng.random() < self.ratio)

    def next_kind(self) -> str:
        """The corruption kind for the answer this rule fires on next."""
        kind = self._cycle.next()
        self.kinds_applied[kind] = self.kinds_applied.get(kind, 0) + 1
        return kind

    def matches(self, method: str, path: str) -> bool:
        if self.budget.exhausted:
            return False
        if self.method != "*" and self.method.upper() != method.upper():
            return False
        return self._path_re.search(path) is not None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "budget"}
        d.update(type="http", matched=self.budget.matched, applied=self.budget.applied)
        if self.action == "corrupt":
            d["kinds_applied"] = dict(self.kinds_applied)
        return d


@dataclass
class PoolFault:
    action: PoolAction
    operation: PoolOperation = "create"
    name: str = "*"
    vm_size: str = "*"
    code: str | None = None
    message: str | None = None
    status: int = 400
    delay: float | None = None
    count: int | None = None
    after: int = 0
    id: str = field(default_factory=_new_id)
    budget: _Budget = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.budget = _Budget(self.count, self.after)
        if self.action in ("reject", "fail") and not self.code:
            raise FaultSpecError(f"a pool fault with action {self.action!r} needs an ARM error 'code'")
        if self.action == "latency" and self.delay is None:
            raise FaultSpecError("a pool fault with action 'latency' needs 'delay' (seconds)")

    def matches(self, operation: str, name: str, vm_size: str) -> bool:
        if self.budget.exhausted or operation != self.operation:
            return False
        return fnmatch.fnmatchcase(name, self.name) and fnmatch.fnmatchcase(
            vm_size.lower(), self.vm_size.lower()
        )

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "budget"}
        d.update(type="pool", matched=self.budget.matched, applied=self.budget.applied)
        return d


Fault = HttpFault | PoolFault


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise FaultSpecError(f"invalid path regex {pattern!r}: {e}") from e


_HTTP_KEYS = {f for f in HttpFault.__dataclass_fields__ if f != "budget"}
_POOL_KEYS = {f for f in PoolFault.__dataclass_fields__ if f != "budget"}


def parse_fault(spec: Mapping[str, Any]) -> Fault:
    """Build a rule from its JSON form; ``type`` (http|pool) may be left out, the action implies it."""
    data = dict(spec)
    kind = data.pop("type", None)
    action = data.get("action")
    if not isinstance(action, str):
        raise FaultSpecError(f"fault needs an 'action' (one of {sorted(HTTP_ACTIONS | POOL_ACTIONS)})")
    if kind is None:
        kind = "http" if action in HTTP_ACTIONS else "pool" if action in POOL_ACTIONS else None
    if kind == "http":
        if action not in HTTP_ACTIONS:
            raise FaultSpecError(f"http fault action must be one of {sorted(HTTP_ACTIONS)}, not {action!r}")
        _check_keys(data, _HTTP_KEYS)
        if "id" in data and data["id"] is None:
            del data["id"]
        return HttpFault(**data)
    if kind == "pool":
        if action not in POOL_ACTIONS:
            raise FaultSpecError(f"pool fault action must be one of {sorted(POOL_ACTIONS)}, not {action!r}")
        op = data.get("operation", "create")
        if op not in POOL_OPERATIONS:
            raise FaultSpecError(f"pool fault operation must be one of {sorted(POOL_OPERATIONS)}, not {op!r}")
        _check_keys(data, _POOL_KEYS)
        if "id" in data and data["id"] is None:
            del data["id"]
        return PoolFault(**data)
    raise FaultSpecError(f"unknown fault type {kind!r} for action {action!r}")


def _check_keys(data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise FaultSpecError(f"unknown fault field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


class FaultSet:
    """The active rules, in the order they were added (the first matching rule wins)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault | Mapping[str, Any]) -> Fault:
        rule = fault if isinstance(fault, HttpFault | PoolFault) else parse_fault(fault)
        self._faults.append(rule)
        return rule

    def extend(self, specs: Iterable[Fault | Mapping[str, Any]]) -> list[Fault]:
        return [self.add(s) for s in specs]

    def remove(self, fault_id: str) -> bool:
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        return len(self._faults) != before

    def clear(self) -> None:
        self._faults.clear()

    def __iter__(self) -> Iterator[Fault]:
        return iter(list(self._faults))

    def __len__(self) -> int:
        return len(self._faults)

    def take_http(self, method: str, path: str) -> HttpFault | None:
        for fault in self._faults:
            if isinstance(fault, HttpFault) and fault.matches(method, path) and fault.take():
                return fault
        return None

    def take_pool(self, operation: str, name: str, vm_size: str) -> tuple[PoolFault | None, float | None]:
        """The outcome rule (reject/fail/stuck) and the latency override that apply to one operation."""
        outcome: PoolFault | None = None
        latency: float | None = None
        for fault in self._faults:
            if not isinstance(fault, PoolFault) or not fault.matches(operation, name, vm_size):
                continue
            if fault.action == "latency":
                if latency is None and fault.budget.take():
                    latency = fault.delay
            elif outcome is None and fault.budget.take():
                outcome = fault
                if fault.delay is not None and latency is None:
                    latency = fault.delay
        return outcome, latency


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it. ``status`` is 0 when the connection was dropped."""

    seq: int
    method: str
    path: str
    query: str
    status: int
    timestamp: float
    duration: float
    fault: str | None = None
    client_request_id: str | None = None
    #: The corruption kind of the answer, when a ``corrupt`` rule fired.
    corruption: str | None = None
    #: Who sent it (the SDK's User-Agent names the controller replica).
    user_agent: str | None = None

    @property
    def dropped(self) -> bool:
        return self.status == 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dropped"] = self.dropped
        return d


class RequestLog:
    """Every request except the admin endpoints', oldest first, bounded to ``limit`` records."""

    def __init__(self, limit: int = 100_000) -> None:
        self._records: list[RequestRecord] = []
        self._seq = itertools.count(1)
        self._limit = limit

    def record(
        self,
        method: str,
        path: str,
        query: str,
        status: int,
        started: float,
        fault: str | None = None,
        client_request_id: str | None = None,
        corruption: str | None = None,
        user_agent: str | None = None,
    ) -> RequestRecord:
        rec = RequestRecord(
            seq=next(self._seq),
            method=method,
            path=path,
            query=query,
            status=status,
            timestamp=started,
            duration=time.time() - started,
            fault=fault,
            client_request_id=client_request_id,
            corruption=corruption,
            user_agent=user_agent,
        )
        self._records.append(rec)
        if len(self._records) > self._limit:
            del self._records[: len(self._records) - self._limit]
        return rec

    def query(
        self,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        since: int = 0,
    ) -> list[RequestRecord]:
        """Records matching ``method`` (exact, case-insensitive), ``path`` (regex search), ``status``
        and with ``seq`` greater than ``since``."""
        path_re = re.compile(path) if path else None
        return [
            r
            for r in self._records
            if r.seq > since
            and (method is None or r.method.upper() == method.upper())
            and (path_re is None or path_re.search(r.path))
            and (status is None or r.status == status)
        ]

    def clear(self) -> None:
        self._records.clear()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def last_seq(self) -> int:
        return self._records[-1].seq if self._records else 0
