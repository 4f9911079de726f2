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
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_change = on_change
        self.is_leader = False
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
        """One attempt; True when we hold the Lease afterwards."""
        try:
            lease = await self.kube.get(LEASES, self.name, self.namespace)
        except NotFoundError:
            body: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None),
            }
            try:
                await self.kube.create(LEASES, body, self.namespace)
            except (ConflictError, ApiError) as e:
                logger.debug("creating lease %s/%s failed: %s", self.namespace, self.name, e)
                return False
            self._observe(self.identity, str(body["spec"]["renewTime"]))
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
        try:
            updated = await self.kube.patch(LEASES, self.name, patch, self.namespace)
        except ApiError as e:
            logger.debug("updating lease %s/%s failed: %s", self.namespace, self.name, e)
            return False
        self._observe(self.identity, (updated.get("spec") or {}).get("renewTime") or "")
        return True

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
                if await asyncio.wait_for(self.try_acquire_or_renew(), self.renew_deadline):
                    last_renewed = time.monotonic()
                    continue
            except (ApiError, TimeoutError) as e:
                logger.warning("renewing lease failed: %s", e)
            if time.monotonic() - last_renewed >= self.renew_deadline or (
                self._observed is not None and self._observed[0] not in ("", self.identity)
            ):
                logger.error("lost leadership of lease %s/%s", self.namespace, self.name)
                self._set_leader(False)
                return

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
            await self.kube.patch(LEASES, self.name, patch, self.namespace)
            logger.info("released lease %s/%s", self.namespace, self.name)
        except ApiError as e:
            logger.warning("could not release lease: %s", e)
