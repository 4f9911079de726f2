"""The ARM calls the AKS provider makes, each classified into the cloud error taxonomy.

Every call here is one attempt with azure-core's own retries off (``ONE_ATTEMPT``): calls made for a
reconcile come back at once as ``Throttled`` (with the capped Retry-After) or ``Transient``, and the
work queue retries the claim. Only ``list_pools`` — garbage collection and readiness, never a
reconcile — retries, with ``ReadRetry``. All writes go out with polling off: they start the
long-running operation and return. Every successful answer is checked by ``AnswerShapePolicy``
before the SDK reads it, and what the SDK returns is checked once more here: a malformed answer is
``Transient("MalformedResponse")``.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline import PipelineRequest
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.compute.models import ResourceSku, Usage
from azure.mgmt.containerservice.aio import ContainerServiceClient
from azure.mgmt.containerservice.models import AgentPool, AgentPoolDeleteMachinesParameter

from provisioner.cloud.azure.answers import AnswerShapePolicy, malformed
from provisioner.cloud.azure.errors import from_exception
from provisioner.cloud.azure.ratelimit import RateLimitPolicy
from provisioner.cloud.azure.retry import CappedRetryPolicy, ReadRetry
from provisioner.cloud.azure.settings import AzureSettings
from provisioner.cloud.errors import NotFound
from provisioner.fencing import WriteRefused

_T = TypeVar("_T")

#: azure-core options for a call made in a reconcile: no retry of its own (the work queue retries).
ONE_ATTEMPT: dict[str, Any] = {"retry_total": 0}


def if_match(version: str | None) -> dict[str, Any]:
    """SDK keywords that make a write conditional on the resource's ETag (none without one)."""
    return {"etag": version, "match_condition": MatchConditions.IfNotModified} if version else {}


_READ_METHODS = frozenset({"GET", "HEAD"})


class Arm:
    """``write_gate`` is called for every request that changes something, as the last step before
    it is sent (azure-core's raw request hook runs after the rate limit and the token); it raises to
    keep the request from going out. ``user_agent`` names this replica to ARM."""

    def __init__(
        self,
        settings: AzureSettings,
        credential: AsyncTokenCredential,
        limits: RateLimitPolicy,
        *,
        write_gate: Callable[[str], None] | None = None,
        user_agent: str = "",
    ) -> None:
        self.settings = s = settings
        self._write_gate = write_gate
        self.limits = limits
        self._user_agent = user_agent
        # Each client gets policies of its own (a pipeline chains them); the buckets are shared.
        self._aks = ContainerServiceClient(credential, s.subscription_id, **self._client_kwargs())
        self._compute = ComputeManagementClient(credential, s.subscription_id, **self._client_kwargs())
        self._read = ReadRetry(s.read_attempts, s.retry_backoff_seconds, s.retry_after_max_seconds)

    def _client_kwargs(self) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "base_url": s.arm_endpoint,
            "credential_scopes": [s.credential_scope],
            "retry_policy": CappedRetryPolicy(
                retry_after_cap=s.retry_after_max_seconds,
                retry_total=s.sdk_retry_total,
                retry_backoff_factor=min(s.retry_backoff_seconds, 0.8),
                retry_backoff_max=int(max(s.retry_after_max_seconds, 1)),
            ),
            "per_retry_policies": [self.limits.copy(), AnswerShapePolicy()],
            "connection_timeout": s.http_timeout_seconds,
            "read_timeout": s.http_timeout_seconds,
            "logging_enable": False,
            "raw_request_hook": self._before_send,
        }
        if s.ca_bundle:
            kwargs["connection_verify"] = s.ca_bundle
        if self._user_agent:
            kwargs["user_agent"] = self._user_agent
        return kwargs

    def _before_send(self, request: PipelineRequest[Any]) -> None:
        if self._write_gate is not None and request.http_request.method.upper() not in _READ_METHODS:
            self._write_gate("cloud")

    async def _call(self, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await call()
        except WriteRefused:
            raise
        except Exception as e:
            raise from_exception(e, retry_after_cap=self.settings.retry_after_max_seconds) from e

    # --- agent pools -----------------------------------------------------------------------------

    async def get_pool(self, name: str) -> AgentPool | None:
        s = self.settings
        try:
            pool: object = await self._call(
                lambda: self._aks.agent_pools.get(s.resource_group, s.cluster_name, name, **ONE_ATTEMPT)
            )
        except NotFound:
            return None
        return _pool(pool, f"GET {name}")

    async def put_pool(
        self, name: str, pool: AgentPool, *, version: str | None = None, create_only: bool = False
    ) -> AgentPool | None:
        """Start a create or update; the pool as ARM accepted it, if its answer had one.
        ``create_only``: ``If-None-Match: *``, refused (412 PreconditionFailed) if the pool exists."""
        s = self.settings
        condition = {"match_condition": MatchConditions.IfMissing} if create_only else if_match(version)
        poller = await self._call(
            lambda: self._aks.agent_pools.begin_create_or_update(
                s.resource_group,
                s.cluster_name,
                name,
                pool,
                polling=False,
                **condition,
                **ONE_ATTEMPT,
            )
        )
        try:
            accepted: object = await poller.result()
        except Exception:
            return None  # accepted, but the answer carried no usable body
        return _pool(accepted, f"PUT {name}") if accepted is not None else None

    async def delete_pool(self, name: str, *, version: str | None = None) -> None:
        s = self.settings
        await self._call(
            lambda: self._aks.agent_pools.begin_delete(
                s.resource_group, s.cluster_name, name, polling=False, **if_match(version), **ONE_ATTEMPT
            )
        )

    async def list_pools(self, *, retry: bool = True) -> builtins.list[AgentPool]:
        """Every agent pool of the cluster; ``retry=False`` for a reconcile (one attempt, no sleep)."""
        s = self.settings

        async def collect(**options: Any) -> builtins.list[AgentPool]:
            pools = self._aks.agent_pools.list(s.resource_group, s.cluster_name, **options)
            return [_pool(p, "GET agentPools") async for p in pools]

        if retry:
            return await self._read("list agent pools", collect)
        return await self._call(lambda: collect(**ONE_ATTEMPT))

    async def delete_machines(self, pool: str, machine_names: Sequence[str]) -> None:
        """Start removing exactly these machines (VMs) of a pool; its count drops by as many."""
        s = self.settings
        body = AgentPoolDeleteMachinesParameter(machine_names=list(machine_names))
        await self._call(
            lambda: self._aks.agent_pools.begin_delete_machines(
                s.resource_group, s.cluster_name, pool, body, polling=False, **ONE_ATTEMPT
            )
        )

    async def machine_names(self, pool: str) -> builtins.set[str]:
        """The names of a pool's machines (on AKS the names of their Nodes), lower-cased."""
        s = self.settings

        async def collect() -> builtins.set[str]:
            machines = self._aks.machines.list(s.resource_group, s.cluster_name, pool, **ONE_ATTEMPT)
            names = [m.name async for m in machines]
            if not all(isinstance(n, str) and n for n in names):
                raise malformed(f"GET {pool}/machines", "a machine has no name")
            return {str(n).lower() for n in names}

        return await self._call(collect)

    # --- compute ---------------------------------------------------------------------------------

    async def list_skus(self) -> builtins.list[ResourceSku]:
        loc = self.settings.location
        skus = await self._call(
            lambda: _collect(self._compute.resource_skus.list(filter=f"location eq '{loc}'", **ONE_ATTEMPT))
        )
        return _all(ResourceSku, skus, "GET skus")

    async def list_usages(self) -> builtins.list[Usage]:
        usages = await self._call(
            lambda: _collect(self._compute.usage.list(self.settings.location, **ONE_ATTEMPT))
        )
        return _all(Usage, usages, "GET usages")

    async def close(self) -> None:
        await self._aks.close()
        await self._compute.close()


async def _collect(items: AsyncIterator[_T]) -> builtins.list[_T]:
    return [i async for i in items]


def _pool(value: object, what: str) -> AgentPool:
    """``value`` as an agent pool with properties, or the error for a malformed answer."""
    if not isinstance(value, AgentPool) or not isinstance(value.name, str) or value.properties is None:
        raise malformed(what, f"the SDK read it as {type(value).__name__} without a name or properties")
    return value


def _all(model: type[_T], values: Sequence[object], what: str) -> builtins.list[_T]:
    bad = next((v for v in values if not isinstance(v, model)), None)
    if bad is not None:
        raise malformed(what, f"an entry reads as {type(bad).__name__}, not {model.__name__}")
    return [v for v in values if isinstance(v, model)]
