"""The AKS cloud provider: one agent pool of one node per claim.

Every method is non-blocking with respect to Azure's long-running operations: ``create`` sends the
PUT and returns (state ``creating``), ``delete`` sends the DELETE and returns; progress and failures
are read back with GET (``provisioningState``, ``status.provisioningError``) on later calls. The
in-flight state lives in Azure, so a restarted controller finds and adopts it.

Calls made for a reconcile (``create``, ``get``, ``delete``, ``adopt``, ``quota_allows``, and the
SKU and usage reads they need) make exactly one attempt, with azure-core's own retries off: a
throttled or failing call comes back as ``Throttled`` (with Retry-After) or ``Transient`` at once,
and the controller's work queue retries the claim with backoff instead of a worker sleeping.
Only the agent pool listing (garbage collection, readiness) retries here.
"""

from __future__ import annotations

import builtins
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.containerservice.aio import ContainerServiceClient
from azure.mgmt.containerservice.models import AgentPool

from provisioner.cloud.azure import mapping
from provisioner.cloud.azure.auth import build_credential, credential_kind
from provisioner.cloud.azure.cache import Clock, TtlValue
from provisioner.cloud.azure.errors import from_exception
from provisioner.cloud.azure.quota import QuotaChecker, UsageLimit, index_usages
from provisioner.cloud.azure.ratelimit import RateLimitPolicy, TokenBucket
from provisioner.cloud.azure.retry import CappedRetryPolicy, ReadRetry
from provisioner.cloud.azure.settings import AzureSettings
from provisioner.cloud.azure.skus import SkuFacts, UnavailableOfferings, index_skus, to_instance_type
from provisioner.cloud.errors import (
    ALL_INSTANCE_TYPES_UNAVAILABLE,
    CloudError,
    InstanceConflict,
    InsufficientCapacity,
    InvalidSpec,
    NotFound,
    Transient,
)
from provisioner.cloud.provider import ProviderContext
from provisioner.cloud.types import (
    MANAGED_BY_VALUE,
    TAG_CLAIM_NAME,
    TAG_CLAIM_UID,
    TAG_MANAGED_BY,
    CapacityType,
    Instance,
    InstanceRequest,
    InstanceState,
    InstanceType,
)

log = logging.getLogger(__name__)

#: azure-core options for a call made in a reconcile: no retry of its own (the work queue retries).
ONE_ATTEMPT: dict[str, Any] = {"retry_total": 0}
#: Labels AKS puts on every node of a pool, naming it.
POOL_LABELS = ("kubernetes.azure.com/agentpool", "agentpool")
#: An AKS node's providerID names its scale set ``aks-<pool>-<digits>-vmss``.
_VMSS_IN_PROVIDER_ID = re.compile(r"/virtualMachineScaleSets/aks-(?P<pool>[a-z0-9]+)-\d+-vmss/", re.I)


class AzureCloud:
    """``CloudProvider`` for AKS. Build it with a ``ProviderContext`` (settings from ``context.env``).

    ``credential`` and ``clock`` are for tests; by default the credential comes from the settings
    (see ``provisioner.cloud.azure.auth``).
    """

    def __init__(
        self,
        context: ProviderContext,
        *,
        credential: AsyncTokenCredential | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.settings = s = AzureSettings.from_env(context.env, cluster_name=context.cluster_name)
        self._credential = credential or build_credential(s)
        self._owns_credential = credential is None
        self._bucket = TokenBucket(s.arm_rate_limit, s.arm_rate_burst, clock)
        self._aks = ContainerServiceClient(self._credential, s.subscription_id, **self._client_kwargs())
        self._compute = ComputeManagementClient(self._credential, s.subscription_id, **self._client_kwargs())
        self._read = ReadRetry(s.read_attempts, s.retry_backoff_seconds, s.retry_after_max_seconds)
        self._skus: TtlValue[dict[str, SkuFacts]] = TtlValue(self._load_skus, s.sku_cache_seconds, clock)
        self._pools: TtlValue[list[AgentPool]] = TtlValue(self._load_pools, s.list_cache_seconds, clock)
        self._quota = QuotaChecker(
            self._load_usages,
            ttl=s.usage_cache_seconds,
            recheck=s.quota_recheck_seconds,
            location=s.location,
            clock=clock,
        )
        self.unavailable = UnavailableOfferings(s.unavailable_sku_seconds, clock)

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
            "per_retry_policies": [RateLimitPolicy(self._bucket)],
            "connection_timeout": s.http_timeout_seconds,
            "read_timeout": s.http_timeout_seconds,
            "logging_enable": False,
        }
        if s.ca_bundle:
            kwargs["connection_verify"] = s.ca_bundle
        return kwargs

    # --- CloudProvider ----------------------------------------------------------------------

    def instance_name(self, claim_name: str) -> str:
        """The agent pool name used for a claim (the claim name, or a stable hash of it)."""
        return mapping.instance_name(claim_name)

    def instance_of_node(self, node: Mapping[str, Any]) -> str | None:
        """The agent pool a Node belongs to: its agent-pool label, if its providerID (when it has
        one yet) names a scale set of that pool in this cluster's node resource group."""
        labels = (node.get("metadata") or {}).get("labels") or {}
        pool = next((str(labels[k]) for k in POOL_LABELS if labels.get(k)), None)
        if pool is None:
            return None
        provider_id = str((node.get("spec") or {}).get("providerID") or "")
        if provider_id:
            if not provider_id.lower().startswith(mapping.provider_id_prefix(self.settings, pool).lower()):
                return None
            m = _VMSS_IN_PROVIDER_ID.search(provider_id)
            if m is None or m.group("pool").lower() != pool.lower():
                return None
        return pool

    def warnings(self, request: InstanceRequest) -> tuple[str, ...]:
        """What of ``request`` will not reach the node as asked (dropped labels, tags, disk size)."""
        return mapping.request_warnings(request, self.settings)

    async def create(self, request: InstanceRequest) -> Instance:
        mapping.validate_request(request, self.settings)
        skus = await self._skus.get()  # cached: an unknown size costs no call of its own
        if not any(candidate.lower() in skus for candidate in request.instance_types):
            raise InvalidSpec(
                f"unknown VM size {', '.join(request.instance_types)}: not offered in {self.settings.location} "
                "(check the instance-type requirement)",
                "UnknownVMSize",
            )
        name = mapping.instance_name(request.name)
        existing = await self._get_pool(name)
        if existing is not None:
            return await self._existing(existing, request)
        return await self._create_new(name, request)

    async def get(self, name: str) -> Instance:
        pool = await self._get_pool(name)
        if pool is None:
            raise NotFound(
                f"agent pool {name!r} not found in cluster {self.settings.cluster_name}", "NotFound"
            )
        return await self._instance(pool)

    async def list(self) -> builtins.list[Instance]:
        pools = await self._pools.get()
        out = []
        for pool in pools:
            tags = (pool.properties.tags if pool.properties else None) or {}
            if tags.get(TAG_MANAGED_BY) == MANAGED_BY_VALUE:
                out.append(await self._instance(pool))
        return out

    async def delete(self, name: str, *, version: str | None = None) -> None:
        """Start deleting pool ``name``.

        With ``version`` (the ETag of a snapshot the caller read and judged ours to delete: GC from
        its listing, termination from its GET) it is one DELETE with ``If-Match``. Without it, the
        pool is read first and deleted only if tagged as ours: an unversioned delete never removes a
        pool we did not create (e.g. a claim named like a system pool).
        """
        s = self.settings
        if not version:
            pool = await self._get_pool(name)
            if pool is None:
                return
            tags = (pool.properties.tags if pool.properties else None) or {}
            if tags.get(TAG_MANAGED_BY) != MANAGED_BY_VALUE:
                log.warning("not deleting agent pool %s: it is not managed by gpu-provisioner", name)
                return
            if _state(pool) == InstanceState.DELETING:
                return
            version = (pool.properties.e_tag if pool.properties else None) or None
        guard: dict[str, Any] = {}
        if version:
            guard = {"etag": version, "match_condition": MatchConditions.IfNotModified}
        try:
            await self._aks.agent_pools.begin_delete(
                s.resource_group, s.cluster_name, name, polling=False, **guard, **ONE_ATTEMPT
            )
        except Exception as e:
            err = from_exception(e, retry_after_cap=s.retry_after_max_seconds)
            if isinstance(err, NotFound):
                return
            if err.code == "PreconditionFailed":
                if await self._get_pool(name) is None:
                    return  # gone meanwhile (If-Match fails on a missing pool too)
                raise Transient(
                    f"agent pool {name} changed since it was read; not deleted", "PreconditionFailed"
                ) from e
            if err.code == "OperationNotAllowed":
                # Another operation runs on the pool: fine if it is a delete, else "still working"
                # (AKS refuses a delete while the create runs; the caller retries with backoff).
                again = await self._get_pool(name)
                if again is None or _state(again) == InstanceState.DELETING:
                    return
            raise err from e
        finally:
            self._pools.invalidate()
        log.info("deleting agent pool %s", name)

    async def instance_types(self) -> builtins.list[InstanceType]:
        skus = await self._skus.get()
        return [to_instance_type(f, self.settings.location, self.unavailable) for f in skus.values()]

    async def adopt(self, instance: Instance, claim_name: str, claim_uid: str) -> Instance:
        """Put our tags on a predecessor's pool: the pool as read, PUT back with the tags added,
        only if its ETag still is ``instance.version`` (AKS updates tags in place)."""
        s = self.settings
        pool = await self._get_pool(instance.name)
        if pool is None:
            raise NotFound(f"agent pool {instance.name!r} not found in cluster {s.cluster_name}", "NotFound")
        props = pool.properties
        if props is None:
            raise Transient(f"agent pool {instance.name} has no properties", "MalformedResponse")
        props.tags = {
            **(props.tags or {}),
            TAG_MANAGED_BY: MANAGED_BY_VALUE,
            TAG_CLAIM_NAME: claim_name,
            TAG_CLAIM_UID: claim_uid,
            mapping.TAG_CLUSTER: s.cluster_name,
        }
        guard: dict[str, Any] = {}
        if instance.version:
            guard = {"etag": instance.version, "match_condition": MatchConditions.IfNotModified}
        log.info("adopting agent pool %s for claim %s (adding our tags)", instance.name, claim_name)
        try:
            poller = await self._aks.agent_pools.begin_create_or_update(
                s.resource_group, s.cluster_name, instance.name, pool, polling=False, **guard, **ONE_ATTEMPT
            )
        except Exception as e:
            raise from_exception(e, retry_after_cap=s.retry_after_max_seconds) from e
        finally:
            self._pools.invalidate()
        try:
            updated: AgentPool | None = await poller.result()
        except Exception:
            updated = None
        return await self._instance(updated if updated is not None and updated.properties else pool)

    async def quota_allows(self, instance_types: Sequence[str], capacity_type: CapacityType) -> bool:
        """Whether any of ``instance_types`` fits the vCPU quota now (the shared, cached reading)."""
        if not self.settings.quota_preflight:
            return True
        skus = await self._skus.get()
        spot = capacity_type == CapacityType.SPOT
        for name in instance_types:
            facts = skus.get(name.lower())
            if facts is not None and await self._quota.allows(
                facts.family, facts.vcpus, spot=spot, vm_size=facts.name
            ):
                return True
        return False

    async def check(self) -> tuple[bool, str]:
        """Readiness: a token can be obtained and the cluster's agent pools can be listed."""
        s = self.settings
        try:
            await self._credential.get_token(s.credential_scope)
        except Exception as e:
            err = from_exception(e)
            return False, f"Azure credential ({credential_kind(s)}) failed: {err.message}"
        try:
            await self._pools.get()
        except CloudError as e:
            return False, f"cannot list agent pools of {s.resource_group}/{s.cluster_name}: {e}"
        return True, "ok"

    async def close(self) -> None:
        await self._aks.close()
        await self._compute.close()
        if self._owns_credential:
            await self._credential.close()

    async def __aenter__(self) -> AzureCloud:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- create ------------------------------------------------------------------------------

    async def _existing(self, pool: AgentPool, request: InstanceRequest) -> Instance:
        """A create found a pool of that name: ours for this claim (a restart, or a create that
        is already under way) is returned as it is."""
        name = pool.name or mapping.instance_name(request.name)
        tags = (pool.properties.tags if pool.properties else None) or {}
        if tags.get(TAG_MANAGED_BY) != MANAGED_BY_VALUE:
            raise InstanceConflict(
                f"agent pool {name!r} already exists in cluster {self.settings.cluster_name} and is not managed "
                "by gpu-provisioner; rename the claim",
                "PoolNameConflict",
                instance=await self._instance(pool),
            )
        if tags.get(TAG_CLAIM_UID) != request.claim_uid:
            raise Transient(
                f"agent pool {name!r} still belongs to an earlier claim (uid {tags.get(TAG_CLAIM_UID)}); "
                "waiting for it to be deleted",
                "PoolNameInUse",
            )
        log.info("adopting existing agent pool %s for claim %s", name, request.claim_name)
        return await self._instance(pool)

    async def _create_new(self, name: str, request: InstanceRequest) -> Instance:
        s = self.settings
        skus = await self._skus.get()
        requested_zones = mapping.aks_zones(request.zones, s.location)
        spot = request.capacity_type == CapacityType.SPOT
        failures: list[tuple[str, CloudError]] = []
        for candidate in request.instance_types:
            facts = skus.get(candidate.lower())
            if facts is None:
                unknown = f"VM size {candidate} is not offered in {s.location}"
                failures.append(
                    (candidate, InsufficientCapacity(unknown, "SkuNotAvailable", instance_type=candidate))
                )
                continue
            zones, why_not = self._zones_for(facts, requested_zones)
            if why_not is not None:
                failures.append((facts.name, why_not))
                continue
            if s.quota_preflight:
                try:
                    await self._quota.check(
                        facts.family, facts.vcpus, spot=spot, vm_size=facts.name, pool=name
                    )
                except InsufficientCapacity as e:
                    log.info("skipping %s for %s: %s", facts.name, name, e)
                    failures.append((facts.name, e))
                    continue
            spec = mapping.build_pool(request, s, facts.name, facts, zones)
            try:
                pool = await self._put(spec)
            except CloudError as e:
                self._quota.release(name)  # nothing was created: the vCPUs are free again
                if not isinstance(e, InsufficientCapacity | Transient):
                    raise
                failure = e
            else:
                return await self._instance(pool, facts)
            if isinstance(failure, InsufficientCapacity):
                self._remember_capacity_error(facts.name, zones, failure)
                failure.instance_type = failure.instance_type or facts.name
                failures.append((facts.name, failure))
                continue
            if failure.code != "OperationNotAllowed":
                raise failure
            # Someone (another replica, an earlier attempt) is already creating it.
            existing = await self._get_pool(name)
            if existing is None:
                raise failure
            return await self._existing(existing, request)
        raise _all_failed(failures)

    def _zones_for(
        self, facts: SkuFacts, requested: tuple[str, ...]
    ) -> tuple[tuple[str, ...], InsufficientCapacity | None]:
        """The AKS zones to pin (empty: let AKS choose), or why this size cannot be used."""
        loc = self.settings.location
        if requested:
            listed = [z for z in requested if facts.usable_in_zone(z)]
            usable = self.unavailable.usable_zones(facts.name, listed)
            if usable:
                return usable, None
            recently = bool(listed)
            return (), InsufficientCapacity(
                f"VM size {facts.name} is {'recently out of capacity' if recently else 'not available'} in zones "
                f"{', '.join(f'{loc}-{z}' for z in requested)}",
                "ZonalAllocationFailed" if recently else "SkuNotAvailable",
                instance_type=facts.name,
            )
        if not facts.available:
            return (), InsufficientCapacity(
                f"VM size {facts.name} is not available to this subscription in {loc} "
                f"({facts.restriction_reason or 'restricted'})",
                "SkuNotAvailable",
                instance_type=facts.name,
            )
        if self.unavailable.is_unavailable(facts.name):
            return (), InsufficientCapacity(
                f"VM size {facts.name} recently had no capacity in {loc}",
                "AllocationFailed",
                instance_type=facts.name,
            )
        return (), None

    async def _put(self, spec: mapping.PoolSpec) -> AgentPool:
        s = self.settings
        log.info("creating agent pool %s (%s, zones %s)", spec.name, spec.vm_size, list(spec.zones) or "any")
        try:
            poller = await self._aks.agent_pools.begin_create_or_update(
                s.resource_group,
                s.cluster_name,
                spec.name,
                AgentPool(spec.body),
                polling=False,
                **ONE_ATTEMPT,
            )
        except Exception as e:
            raise from_exception(e, retry_after_cap=s.retry_after_max_seconds) from e
        finally:
            self._pools.invalidate()
        try:
            pool: AgentPool = await poller.result()
        except Exception:
            pool = None  # type: ignore[assignment]
        if pool is None or pool.properties is None:
            pool = AgentPool(
                {
                    "name": spec.name,
                    "properties": {**spec.body["properties"], "provisioningState": "Creating"},
                }
            )
        return pool

    def _remember_capacity_error(
        self, vm_size: str, zones: tuple[str, ...], err: InsufficientCapacity
    ) -> None:
        if err.code == "QuotaExceeded":
            self._quota.invalidate()  # our numbers were wrong; read them again next time
        else:
            self.unavailable.mark(vm_size, zones)

    # --- reads -------------------------------------------------------------------------------

    async def _get_pool(self, name: str) -> AgentPool | None:
        s = self.settings
        try:
            pool: AgentPool = await self._aks.agent_pools.get(
                s.resource_group, s.cluster_name, name, **ONE_ATTEMPT
            )
        except Exception as e:
            err = from_exception(e, retry_after_cap=s.retry_after_max_seconds)
            if isinstance(err, NotFound):
                return None
            raise err from e
        return pool

    async def _load_pools(self) -> builtins.list[AgentPool]:
        s = self.settings

        async def collect() -> builtins.list[AgentPool]:
            return [p async for p in self._aks.agent_pools.list(s.resource_group, s.cluster_name)]

        return await self._read("list agent pools", collect)

    async def _load_skus(self) -> dict[str, SkuFacts]:
        loc = self.settings.location

        try:
            entries = [
                e
                async for e in self._compute.resource_skus.list(filter=f"location eq '{loc}'", **ONE_ATTEMPT)
            ]
        except Exception as e:
            raise from_exception(e, retry_after_cap=self.settings.retry_after_max_seconds) from e
        return index_skus(entries, loc)

    async def _load_usages(self) -> dict[str, UsageLimit]:
        loc = self.settings.location

        try:
            return index_usages([u async for u in self._compute.usage.list(loc, **ONE_ATTEMPT)])
        except Exception as e:
            raise from_exception(e, retry_after_cap=self.settings.retry_after_max_seconds) from e

    async def _sku_facts(self, vm_size: str) -> SkuFacts | None:
        try:
            skus = await self._skus.get()
        except CloudError as e:
            log.info("SKU facts unavailable for %s: %s", vm_size, e)
            return None
        return skus.get(vm_size.lower())

    async def _instance(self, pool: AgentPool, facts: SkuFacts | None = None) -> Instance:
        props = pool.properties
        vm_size = (props.vm_size if props else None) or ""
        facts = facts or await self._sku_facts(vm_size)
        failure = mapping.pool_failure(pool)
        if isinstance(failure, InsufficientCapacity) and props is not None:
            self._remember_capacity_error(vm_size, tuple(props.availability_zones or ()), failure)
        instance = mapping.instance_from_pool(pool, self.settings.location, facts, failure)
        if instance.state != InstanceState.CREATING:
            self._quota.release(instance.name)  # the usage listing shows a settled pool itself
        return instance


def _state(pool: AgentPool) -> InstanceState:
    return mapping.instance_state(pool.properties.provisioning_state if pool.properties else None)


def _all_failed(failures: list[tuple[str, CloudError]]) -> CloudError:
    """One error for a create where no candidate could be used."""
    if len(failures) == 1:
        return failures[0][1]
    capacity = [e for _, e in failures if isinstance(e, InsufficientCapacity)]
    quota = next((e for e in capacity if e.family), None)
    details = "; ".join(f"{size}: {err}" for size, err in failures)
    return InsufficientCapacity(
        f"{ALL_INSTANCE_TYPES_UNAVAILABLE}: {details}",
        capacity[0].code,
        instance_type=capacity[0].instance_type,
        family=quota.family if quota else None,
        vcpus_needed=quota.vcpus_needed if quota else None,
        vcpus_free=quota.vcpus_free if quota else None,
    )
