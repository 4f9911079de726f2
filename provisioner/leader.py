"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go does it.

A candidate takes the Lease when it does not exist, is free, or its holder has not renewed it for
``lease_duration`` (measured on our own clock from the last change we observed, so clock skew
between replicas does not matter). The leader renews every ``retry_period``; if it cannot renew
within ``renew_deadline`` it reports the loss at once so the caller stops acting. Writes use the
Lease's resourceVersion, so two candidates can never both win.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from provisioner.fencing import WriteGate
from provisioner.kube import LEASES, ApiError, ConflictError, KubeClient, NotFoundError

logger = logging.getLogger(__name__)


def _micro_time(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        on_change: Callable[[bool], None] | None = None,
        gate: WriteGate | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_change = on_change
        #: Told of every renewal (opens it) and of the loss (closes it).
        self.gate = gate
        self.is_leader = False
        self._lock = asyncio.Lock()
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0

    def _set_leader(self, value: bool) -> None:
        if value != self.is_leader:
            self.is_leader = value
            if self.on_change is not None:
                self.on_change(value)

    def _spec(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = _micro_time(datetime.datetime.now(datetime.UTC))
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "renewTime": now,
        }
        if previous and previous.get("holderIdentity") == self.identity:
            spec["acquireTime"] = previous.get("acquireTime") or now
            spec["leaseTransitions"] = previous.get("leaseTransitions", 0)
        else:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = (previous or {}).get("leaseTransitions", 0) + (1 if previous else 0)
        return spec

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards (the gate is told when it was sent)."""
        async with self._lock:
            return await self._try_acquire_or_renew()

    def _renewed(self, sent_at: float) -> None:
        if self.gate is not None:
            self.gate.renewed(sent_at)

    async def _try_acquire_or_renew(self) -> bool:
        try:
            lease = await self.kube.get(LEASES, self.name, self.namespace)
        except NotFoundError:
            body: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None),
            }
            sent_at = time.monotonic()
            try:
                await self.kube.create(LEASES, body, self.namespace, fenced=False)
            except (ConflictError, ApiError) as e:
                logger.debug("creating lease %s/%s failed: %s", self.namespace, self.name, e)
                return False
            self._observe(self.identity, str(body["spec"]["renewTime"]))
            self._renewed(sent_at)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        self._observe(holder, spec.get("renewTime") or "")
        expired = time.monotonic() - self._observed_at >= float(
            spec.get("leaseDurationSeconds") or self.lease_duration
        )
        if holder and holder != self.identity and not expired:
            return False
        patch = {
            "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
            "spec": self._spec(spec),
        }
        sent_at = time.monotonic()
        try:
            updated = await self.kube.patch(LEASES, self.name, patch, self.namespace, fenced=False)
        except ApiError as e:
            logger.debug("updating lease %s/%s failed: %s", self.namespace, self.name, e)
            return False
        self._observe(self.identity, (updated.get("spec") or {}).get("renewTime") or "")
        self._renewed(sent_at)
        return True

    def _held_by_another(self) -> bool:
        return self._observed is not None and self._observed[0] not in ("", self.identity)

    async def reread(self) -> None:
        """Read (and renew) the Lease now, after a stall: the gate reopens on success and closes
        if another replica holds it; otherwise it stays suspended until ``hold`` decides."""
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the attempt completes, and the caller would never stop.
            async with asyncio.timeout(self.renew_deadline):
                await self.try_acquire_or_renew()
        except (ApiError, TimeoutError) as e:
            logger.warning("reading the lease after a stall failed: %s", e)
            return
        if self._held_by_another() and self.gate is not None:
            self.gate.close(f"lease {self.namespace}/{self.name} is held by {self._observed_holder()}")

    def _observed_holder(self) -> str:
        return self._observed[0] if self._observed else ""

    def _observe(self, holder: str, renew_time: str) -> None:
        if self._observed != (holder, renew_time):
            self._observed = (holder, renew_time)
            self._observed_at = time.monotonic()

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until we are the leader (True) or ``stop`` is set (False)."""
        logger.info(
            "waiting to become leader (lease %s/%s, identity %s)", self.namespace, self.name, self.identity
        )
        while not stop.is_set():
            try:
                if await self.try_acquire_or_renew():
                    logger.info("became leader (lease %s/%s)", self.namespace, self.name)
                    self._set_leader(True)
                    return True
            except ApiError as e:
                logger.warning("leader election: %s", e)
            try:
                await asyncio.wait_for(stop.wait(), self.retry_period)
            except TimeoutError:
                pass
        return False

    async def hold(self) -> None:
        """Renew until renewal fails for ``renew_deadline``; returns when leadership is lost."""
        last_renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                async with asyncio.timeout(self.renew_deadline):
                    renewed = await self.try_acquire_or_renew()
                if renewed:
                    last_renewed = time.monotonic()
                    continue
            except (ApiError, TimeoutError) as e:
                logger.warning("renewing lease failed: %s", e)
            if time.monotonic() - last_renewed >= self.renew_deadline or self._held_by_another():
                logger.error("lost leadership of lease %s/%s", self.namespace, self.name)
                if self.gate is not None:
                    self.gate.close(f"lost the lease {self.namespace}/{self.name}")
                self._set_leader(False)
                return

    def abandon(self) -> None:
        """Stop counting as leader without touching the Lease (after the write gate closed: the
        Lease may be another replica's by now, and this one writes nothing more)."""
        self._set_leader(False)

    async def release(self) -> None:
        """Give the Lease up (on graceful shutdown) so a standby takes over without waiting."""
        if not self.is_leader:
            return
        self._set_leader(False)
        try:
            lease = await self.kube.get(LEASES, self.name, self.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            patch = {
                "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {"holderIdentity": None, "leaseDurationSeconds": 1},
            }
            await self.kube.patch(LEASES, self.name, patch, self.namespace, fenced=False)
            logger.info("released lease %s/%s", self.namespace, self.name)
        except ApiError as e:
            logger.warning("could not release lease: %s", e)
