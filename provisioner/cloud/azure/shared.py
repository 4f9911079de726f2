"""Shared agent pools (``AZURE_POOL_STRATEGY=shared``): claims of one shape share pools.

A pool's shape is everything AKS fixes per pool — VM size, OS SKU, disk size and type, zones,
capacity type, taints, max pods, GPU driver, subnet. Claims of one shape go to the pools
``s<8 base-36 chars of the shape's hash><2 digits>``, each up to ``AZURE_SHARED_POOL_MAX_NODES``
nodes; a claim's labels reach its Node through the controller, not the pool.

The controller asks a pool for the number of nodes its claims need (``want``) and hands back the
nodes of deleted claims (``remove``); both return at once. AKS runs one operation per pool at a
time (a second write gets 409 ``OperationNotAllowed``), so each pool has one task that sends the
writes one after another, each covering everything asked since the previous one: one scale PUT
per batch of arrivals, one ``deleteMachines`` per batch of deletions. Between writes it reads the
pool, less often the longer the operation runs. What is asked is an absolute count recomputed
from the claims each time, so a restarted controller asks for what is already there and sends
nothing more.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from azure.mgmt.containerservice.models import AgentPool

from provisioner.cloud.azure import mapping
from provisioner.cloud.azure.arm import Arm
from provisioner.cloud.azure.cache import Clock, PoolNames
from provisioner.cloud.azure.skus import sdk_text
from provisioner.cloud.errors import CloudError, NotFound, Throttled
from provisioner.cloud.naming import base36
from provisioner.cloud.types import InstanceState

log = logging.getLogger(__name__)

#: Shared pool names: ``s`` + 8 base-36 characters of the shape hash + a two-digit index.
SHARED_POOL_NAME = re.compile(r"^s[0-9a-z]{8}[0-9]{2}$")
#: Pool properties that are not part of the shape (per claim, or set per write).
_NOT_SHAPE = ("count", "tags", "nodeLabels")
#: Reads of a pool while its operation runs: after a second at first, at most this far apart.
MAX_POLL_SECONDS = 15.0
#: How long a removed machine is remembered as gone.
GONE_MEMORY_SECONDS = 600.0
#: How long claims asking for nodes are told of a failed attempt before it is tried again.
FAILURE_HOLD_SECONDS = 10.0
_RUNNING_OPERATION = frozenset(
    {"creating", "updating", "scaling", "upgrading", "starting", "stopping", "deleting"}
)
#: Backoff after a failed read or write of the pool task.
_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def shape_of(body: dict[str, Any]) -> str:
    """A stable hash of what a pool body fixes for all its nodes."""
    props = {k: v for k, v in body["properties"].items() if k not in _NOT_SHAPE}
    canonical = json.dumps(props, sort_keys=True, separators=(",", ":"))
    return base36(int.from_bytes(hashlib.sha256(canonical.encode()).digest(), "big")).rjust(8, "0")[:8]


def pool_name(shape: str, index: int) -> str:
    return f"s{shape}{index:02d}"


def is_shared_pool(name: str) -> bool:
    return bool(SHARED_POOL_NAME.match(name))


@dataclass
class _Pool:
    name: str
    body: dict[str, Any]
    #: Claims this process assigned to the pool (choosing a pool with room).
    assigned: set[str] = field(default_factory=set)
    #: The highest count asked since the last scale write, and the latest count asked.
    wanted: int = 0
    demand: int = 0
    #: Machines asked to be removed, not sent yet / in the deleteMachines that runs / known gone.
    removing: set[str] = field(default_factory=set)
    deleting: set[str] = field(default_factory=set)
    #: Removed machines, and when that was known (kept a while: the claims' records lag behind).
    gone: dict[str, float] = field(default_factory=dict)
    snapshot: AgentPool | None = None
    #: A write of ours was accepted and its operation not seen to end yet.
    writing: bool = False
    #: Why the last attempt to grow the pool failed, and when (claims asking meanwhile get it).
    failure: CloudError | None = None
    failed_at: float = 0.0
    task: asyncio.Task[None] | None = None

    def fail(self, err: CloudError, now: float) -> None:
        log.warning("shared agent pool %s could not grow: %s", self.name, err)
        self.failure, self.failed_at = err, now

    @property
    def count(self) -> int:
        props = self.snapshot.properties if self.snapshot is not None else None
        return int(props.count or 0) if props is not None else 0

    @property
    def load(self) -> int:
        return max(len(self.assigned), self.count, self.demand)


class SharedPools:
    def __init__(
        self, arm: Arm, names: PoolNames, *, max_nodes: int, batch: float, clock: Clock = time.monotonic
    ) -> None:
        self._arm = arm
        self._names = names
        self._max_nodes = max_nodes
        self._batch = batch
        self._clock = clock
        self._pools: dict[str, _Pool] = {}

    # --- what the provider asks -------------------------------------------------------------

    def listed(self, pools: Iterable[AgentPool]) -> None:
        """A listing of the cluster's pools: the shared ones' counts tell which have room."""
        for p in pools:
            if p.name and is_shared_pool(p.name):
                state = self._pools.get(p.name)
                if state is None:
                    self._pools[p.name] = _Pool(p.name, {}, snapshot=p)
                elif state.task is None:
                    state.snapshot = p

    def assign(self, claim_uid: str, body: dict[str, Any]) -> str:
        """The pool of ``body``'s shape for a claim: the one it has, else the first with room."""
        shape = shape_of(body)
        for index in range(100):
            name = pool_name(shape, index)
            pool = self._pools.get(name)
            if pool is None:
                pool = self._pools[name] = _Pool(name, body)
            if not pool.body:
                pool.body = body
            if claim_uid in pool.assigned:
                return name
            if pool.load < self._max_nodes or index == 99:
                pool.assigned.add(claim_uid)
                return name
        raise AssertionError("unreachable")

    def want(self, name: str, count: int) -> AgentPool | None:
        """Ask for ``count`` nodes in pool ``name``; the latest snapshot read (None: none yet)."""
        pool = self._pool(name)
        if pool.failure is not None:
            if self._clock() - pool.failed_at < FAILURE_HOLD_SECONDS:
                raise pool.failure
            pool.failure = None  # tried again now
        pool.demand = count
        if pool.snapshot is None or count > pool.count - len(pool.removing):
            pool.wanted = max(pool.wanted, count)
            self._kick(pool)
        if pool.snapshot is None and pool.body:  # not read yet: what it is being made as
            return AgentPool(
                {"name": name, "properties": {**pool.body["properties"], "provisioningState": "Creating"}}
            )
        return pool.snapshot

    def remove(self, name: str, machines: Iterable[str]) -> bool:
        """Remove exactly these machines; True once all are known to be gone."""
        pool = self._pool(name)
        asked = {m.lower() for m in machines}
        self._forget_gone(pool)
        if asked <= pool.gone.keys():
            return True
        new = asked - pool.gone.keys() - pool.deleting - pool.removing
        pool.removing |= new
        # An ask to grow made before counted these machines as staying.
        pool.wanted = max(0, pool.wanted - len(new))
        self._kick(pool)
        return False

    def leaving(self, name: str) -> frozenset[str]:
        pool = self._pools.get(name)
        if pool is None:
            return frozenset()
        self._forget_gone(pool)
        return frozenset(pool.removing | pool.deleting | pool.gone.keys())

    def _forget_gone(self, pool: _Pool) -> None:
        now = self._clock()
        for name in [n for n, at in pool.gone.items() if now - at > GONE_MEMORY_SECONDS]:
            del pool.gone[name]

    def _gone(self, pool: _Pool, names: Iterable[str]) -> None:
        now = self._clock()
        pool.gone.update(dict.fromkeys(names, now))

    async def close(self) -> None:
        tasks = [p.task for p in self._pools.values() if p.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _pool(self, name: str) -> _Pool:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = _Pool(name, {})
        return pool

    def _kick(self, pool: _Pool) -> None:
        if pool.task is None:
            pool.task = asyncio.get_running_loop().create_task(
                self._run(pool), name=f"shared-pool-{pool.name}"
            )

    # --- the pool's task --------------------------------------------------------------------

    async def _run(self, pool: _Pool) -> None:
        try:
            await asyncio.sleep(self._batch)  # let the claims arriving together ask first
            failures = 0
            since = self._clock()
            while True:
                try:
                    wrote = await self._step(pool)
                    failures = 0
                except CloudError as e:
                    delay = _retry_delay(e, failures)
                    failures += 1
                    log.warning("shared agent pool %s: %s; trying again in %.1fs", pool.name, e, delay)
                    await asyncio.sleep(delay)
                    continue
                if wrote is None:
                    return
                if wrote:
                    since = self._clock()
                # An operation runs: look again after a second at first, then less often.
                await asyncio.sleep(max(1.0, min(MAX_POLL_SECONDS, (self._clock() - since) / 5)))
        finally:
            pool.task = None

    async def _step(self, pool: _Pool) -> bool | None:
        """One look at the pool and at most one write: True after a write, False while an operation
        runs, None when nothing is left to do."""
        snapshot = await self._arm.get_pool(pool.name)
        pool.snapshot = snapshot
        if snapshot is None:
            self._gone(pool, pool.removing | pool.deleting)
            pool.removing.clear()
            pool.deleting.clear()
            if pool.wanted <= 0 or not pool.body:
                return None
            return await self._create(pool)
        props = snapshot.properties
        state = sdk_text(props.provisioning_state if props else None).lower()
        if state in _RUNNING_OPERATION:
            return False
        failed = mapping.instance_state(state) == InstanceState.FAILED
        if pool.writing:
            pool.writing = False
            if failed:
                pool.fail(
                    mapping.pool_failure(snapshot) or CloudError(f"agent pool {pool.name} failed"),
                    self._clock(),
                )
        if pool.deleting:
            if failed:
                pool.removing |= pool.deleting  # asked again, against the machines that remain
            else:
                self._gone(pool, pool.deleting)
            pool.deleting.clear()
        if pool.removing:
            present = await self._arm.machine_names(pool.name)
            self._gone(pool, pool.removing - present)
            pool.removing &= present
            if pool.removing:
                return await self._delete_machines(pool)
        if pool.wanted > pool.count and pool.failure is None:
            return await self._scale(pool, snapshot)
        pool.wanted = 0
        return None

    async def _create(self, pool: _Pool) -> bool:
        count = min(pool.wanted, 1000)
        body = {"properties": {**pool.body["properties"], "count": count}}
        log.info("creating shared agent pool %s with %d nodes", pool.name, count)
        self._names.written(pool.name)
        pool.wanted = 0
        try:
            await self._arm.put_pool(pool.name, AgentPool(body), create_only=True)
        except CloudError as e:
            if e.code == "PreconditionFailed":
                pool.wanted = max(pool.wanted, count)
                return False  # it exists after all: read it next
            pool.fail(e, self._clock())
            return False
        pool.writing = True
        return True

    async def _scale(self, pool: _Pool, snapshot: AgentPool) -> bool:
        count = min(pool.wanted, 1000)
        assert snapshot.properties is not None
        version = snapshot.properties.e_tag or None
        log.info("scaling shared agent pool %s from %d to %d nodes", pool.name, pool.count, count)
        snapshot.properties.count = count
        pool.wanted = 0
        try:
            await self._arm.put_pool(pool.name, snapshot, version=version)
        except CloudError as e:
            pool.wanted = max(pool.wanted, count)
            if e.code in ("PreconditionFailed", "OperationNotAllowed"):
                return False  # changed or busy since read: looked at again
            pool.fail(e, self._clock())
            return False
        pool.writing = True
        return True

    async def _delete_machines(self, pool: _Pool) -> bool:
        # Only what is sent moves on: removals asked during the call wait for the next one.
        sent = set(pool.removing)
        names = sorted(sent)
        log.info(
            "removing %d machines from shared agent pool %s: %s", len(names), pool.name, ", ".join(names)
        )
        try:
            await self._arm.delete_machines(pool.name, names)
        except NotFound:
            self._gone(pool, sent)
            pool.removing -= sent
            return False
        except CloudError as e:
            if e.code in ("PreconditionFailed", "OperationNotAllowed"):
                return False
            raise
        pool.deleting |= sent
        pool.removing -= sent
        pool.writing = True
        return True


def _retry_delay(err: CloudError, failures: int) -> float:
    if isinstance(err, Throttled) and err.retry_after:
        return min(err.retry_after, 60.0)
    return _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
