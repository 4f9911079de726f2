"""The AKS cloud provider: one agent pool of one node per claim, or (``AZURE_POOL_STRATEGY=shared``)
pools shared by the claims of one shape (see ``shared``).

Every method is non-blocking with respect to Azure's long-running operations: ``create`` sends the
PUT and returns (state ``creating``), ``delete`` sends the DELETE and returns; progress and failures
are read back with GET (``provisioningState``, ``status.provisioningError``) on later calls. The
in-flight state lives in Azure, so a restarted controller finds and adopts it.

Calls made for a reconcile make exactly one attempt (see ``arm``): a throttled or failing call
comes back as ``Throttled`` (with Retry-After) or ``Transient`` at once, and the controller's work
queue retries the claim with backoff instead of a worker sleeping.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.mgmt.containerservice.models import AgentPool

from provisioner import __version__
from provisioner.cloud.azure import mapping
from provisioner.cloud.azure.arm import Arm
from provisioner.cloud.azure.auth import build_credential, credential_kind
from provisioner.cloud.azure.cache import Clock, PoolNames, TtlValue
from provisioner.cloud.azure.errors import POOL_LIMIT_CODE, all_failed, from_exception
from provisioner.cloud.azure.labels import TAG_CLUSTER
from provisioner.cloud.azure.nodes import pool_of_node
from provisioner.cloud.azure.permissions import (
    RECHECK_SECONDS,
    SKUS_READ,
    USAGES_READ,
    Permissions,
    is_denied,
)
from provisioner.cloud.azure.quota import QuotaChecker, UsageLimit, index_usages
from provisioner.cloud.azure.ratelimit import RateLimitPolicy, TokenBucket
from provisioner.cloud.azure.settings import AzureSettings
from provisioner.cloud.azure.shared import SharedPools, is_shared_pool
from provisioner.cloud.azure.sizes import KNOWN_SIZES, known_size
from provisioner.cloud.azure.skus import (
    SkuFacts,
    UnavailableOfferings,
    index_skus,
    to_instance_type,
    zones_for,
)
from provisioner.cloud.errors import (
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
    TAG_SHARED,
    CapacityType,
    Degradation,
    Instance,
    InstanceRequest,
    InstanceState,
    InstanceType,
    ResolvedImage,
)

log = logging.getLogger(__name__)


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
        self._arm = Arm(
            s,
            self._credential,
            RateLimitPolicy(
                TokenBucket(s.arm_rate_limit, s.arm_rate_burst, clock, max_wait=s.arm_max_wait_seconds),
                TokenBucket(
                    s.arm_write_rate_limit, s.arm_write_rate_burst, clock, max_wait=s.arm_max_wait_seconds
                ),
                TokenBucket(
                    s.arm_delete_rate_limit, s.arm_delete_rate_burst, clock, max_wait=s.arm_max_wait_seconds
                ),
            ),
            write_gate=context.write_gate,
            user_agent=f"gpu-provisioner/{__version__} ({context.identity})" if context.identity else "",
        )
        self._skus: TtlValue[dict[str, SkuFacts]] = TtlValue(self._load_skus, s.sku_cache_seconds, clock)
        self._names = PoolNames()
        self._listing: asyncio.Future[builtins.list[AgentPool]] | None = None
        self._pools: TtlValue[list[AgentPool]] = TtlValue(self._list_pools, s.list_cache_seconds, clock)
        self._shared = SharedPools(
            self._arm,
            self._names,
            max_nodes=s.shared_pool_max_nodes,
            batch=s.shared_batch_seconds,
            clock=clock,
        )
        self._quota = QuotaChecker(
            self._load_usages,
            ttl=s.usage_cache_seconds,
            recheck=s.quota_recheck_seconds,
            location=s.location,
            clock=clock,
        )
        self.unavailable = UnavailableOfferings(s.unavailable_sku_seconds, clock)
        self._permissions = Permissions(
            s.subscription_id,
            {
                SKUS_READ: min(s.sku_cache_seconds, RECHECK_SECONDS),
                USAGES_READ: min(s.usage_cache_seconds, RECHECK_SECONDS),
            },
            clock=clock,
        )

    # --- CloudProvider ----------------------------------------------------------------------

    def instance_name(self, claim_name: str) -> str:
        """The agent pool name used for a claim (the claim name, or a stable hash of it)."""
        return mapping.instance_name(claim_name)

    def instance_of_node(self, node: Mapping[str, Any]) -> str | None:
        return pool_of_node(self.settings, node)

    def warnings(self, request: InstanceRequest) -> tuple[str, ...]:
        """What of ``request`` will not reach the node as asked (dropped labels, tags, disk size)."""
        return mapping.request_warnings(request, self.settings)

    def degradations(self) -> tuple[Degradation, ...]:
        """The subscription-scope reads Azure denies (see ``permissions``), each with its state."""
        return self._permissions.degradations()

    async def create(self, request: InstanceRequest) -> Instance:
        mapping.validate_request(request, self.settings)
        skus = await self._catalog()  # cached: an unknown size costs no call of its own
        if skus is not None and not any(candidate.lower() in skus for candidate in request.instance_types):
            raise InvalidSpec(
                f"unknown VM size {', '.join(request.instance_types)}: not offered in {self.settings.location} "
                "(check the instance-type requirement)",
                "UnknownVMSize",
            )
        if not self._names.listed_once:
            await self._first_listing()
        if self.settings.pool_strategy == "shared":
            return await self._assign_shared(request, skus)
        name = mapping.instance_name(request.name)
        if not self._names.surely_absent(name):  # else no GET: the create-only PUT finds out
            existing = await self._arm.get_pool(name)
            if existing is not None:
                return await self._existing(existing, request)
        return await self._create_new(name, request, skus)

    async def _list_pools(self, *, retry: bool = True) -> builtins.list[AgentPool]:
        started = self._names.listing_started()
        pools = await self._arm.list_pools(retry=retry)
        self._names.listed(started, (p.name for p in pools if p.name))
        self._shared.listed(pools)
        return pools

    async def _first_listing(self) -> None:
        """One listing instead of a GET per create, shared by every create waiting for it; a single
        attempt, as every call of a reconcile (its failure is the create's)."""
        if self._listing is None or self._listing.done():
            self._listing = asyncio.ensure_future(self._list_pools(retry=False))
        await asyncio.shield(self._listing)

    async def get(self, name: str) -> Instance:
        pool = await self._arm.get_pool(name)
        if pool is None:
            raise NotFound(
                f"agent pool {name!r} not found in cluster {self.settings.cluster_name}", "NotFound"
            )
        return await self._instance(pool)

    async def list(self) -> builtins.list[Instance]:
        return [
            await self._instance(p)
            for p in await self._pools.get()
            if _tags(p).get(TAG_MANAGED_BY) == MANAGED_BY_VALUE
        ]

    async def delete(self, name: str, *, version: str | None = None) -> None:
        """Start deleting pool ``name``.

        With ``version`` (the ETag of a snapshot the caller read and judged ours to delete: GC from
        its listing, termination from its GET) it is one DELETE with ``If-Match``. Without it, the
        pool is read first and deleted only if tagged as ours: an unversioned delete never removes a
        pool we did not create (e.g. a claim named like a system pool).
        """
        if not version:
            pool = await self._arm.get_pool(name)
            if pool is None or _state(pool) == InstanceState.DELETING:
                return
            if _tags(pool).get(TAG_MANAGED_BY) != MANAGED_BY_VALUE:
                log.warning("not deleting agent pool %s: it is not managed by gpu-provisioner", name)
                return
            version = (pool.properties.e_tag if pool.properties else None) or None
        try:
            await self._arm.delete_pool(name, version=version)
        except NotFound:
            return
        except CloudError as e:
            again = (
                await self._arm.get_pool(name)
                if e.code in ("PreconditionFailed", "OperationNotAllowed")
                else None
            )
            if e.code == "PreconditionFailed":
                if again is None:
                    return  # gone meanwhile (If-Match fails on a missing pool too)
                raise Transient(f"agent pool {name} changed since it was read; not deleted", e.code) from e
            if e.code == "OperationNotAllowed" and (again is None or _state(again) == InstanceState.DELETING):
                return  # a delete is already under way; otherwise AKS still creates it: retried later
            raise
        finally:
            self._pools.invalidate()
        log.info("deleting agent pool %s", name)

    async def instance_types(self) -> builtins.list[InstanceType]:
        """The region's sizes; while the SKU listing is denied, the built-in table of GPU sizes."""
        skus = await self._catalog()
        facts = KNOWN_SIZES if skus is None else skus
        return [to_instance_type(f, self.settings.location, self.unavailable) for f in facts.values()]

    async def adopt(self, instance: Instance, claim_name: str, claim_uid: str) -> Instance:
        """Put our tags on a predecessor's pool: the pool as read, PUT back with the tags added,
        only if its ETag still is ``instance.version`` (AKS updates tags in place)."""
        s = self.settings
        pool = await self._arm.get_pool(instance.name)
        if pool is None or pool.properties is None:
            raise NotFound(f"agent pool {instance.name!r} not found in cluster {s.cluster_name}", "NotFound")
        ours = {TAG_MANAGED_BY: MANAGED_BY_VALUE, TAG_CLAIM_NAME: claim_name, TAG_CLAIM_UID: claim_uid}
        pool.properties.tags = {**_tags(pool), **ours, TAG_CLUSTER: s.cluster_name}
        log.info("adopting agent pool %s for claim %s (adding our tags)", instance.name, claim_name)
        try:
            updated = await self._arm.put_pool(instance.name, pool, version=instance.version)
        finally:
            self._pools.invalidate()
        return await self._instance(updated or pool)

    async def quota_allows(self, instance_types: Sequence[str], capacity_type: CapacityType) -> bool:
        """Whether any of ``instance_types`` fits the vCPU quota now (the shared, cached reading)."""
        if not self.settings.quota_preflight:
            return True
        skus = await self._catalog()
        spot = capacity_type == CapacityType.SPOT
        for name in instance_types:
            facts = _facts_of(skus, name)
            if facts is None or not facts.vcpus:
                continue
            self._reprobe_usages()
            fits = await self._quota.allows(facts.family, facts.vcpus, spot=spot, vm_size=facts.name)
            if self._permissions.denied(USAGES_READ):
                return False  # no reading to go by: the capacity backoff decides when to try again
            if fits:
                return True
        return False

    async def resolve_image(self, family: str | None) -> ResolvedImage:
        """A node class's image family as the osSKU new pools get (AKS's default, Ubuntu, when none
        is set). The node image version is chosen by AKS per pool and not known before one exists."""
        sku = mapping.os_sku(family) or mapping.DEFAULT_OS_SKU
        return ResolvedImage(family or sku, sku)

    async def check(self) -> tuple[bool, str]:
        """Readiness: a token can be obtained and the cluster's agent pools can be listed. Denied
        subscription reads are asked again here too (when due), so granting the role is noticed
        without a claim to launch; they are named as a detail, not a failure."""
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
        await self._reprobe()
        active = [d.detail for d in self.degradations() if d.active]
        return True, f"degraded: {'; '.join(active)}" if active else "ok"

    # --- SupportsSharedInstances -------------------------------------------------------------

    def shares_instance(self, name: str) -> bool:
        return is_shared_pool(name)

    async def want_nodes(self, name: str, count: int) -> Instance:
        pool = self._shared.want(name, count)
        if pool is None:  # not read yet: its task reads it (or creates it) shortly
            pool = AgentPool(
                {"name": name, "properties": {"provisioningState": "Creating", "tags": {TAG_SHARED: "true"}}}
            )
        return await self._instance(pool)

    async def remove_nodes(self, name: str, node_names: Sequence[str]) -> bool:
        return self._shared.remove(name, node_names)

    def leaving(self, name: str) -> frozenset[str]:
        return self._shared.leaving(name)

    async def close(self) -> None:
        await self._shared.close()
        await self._arm.close()
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
        tags = _tags(pool)
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

    async def _create_new(
        self, name: str, request: InstanceRequest, skus: dict[str, SkuFacts] | None
    ) -> Instance:
        """Try the candidates in order: skip what the SKU facts, zones and quota rule out (no ARM
        write for them), PUT the first that passes, move on only after a capacity error.

        ``skus`` is None while Azure denies the SKU listing: each size is then taken on trust (AKS
        validates it on the PUT), with the built-in facts of the well-known GPU sizes if it is one.
        """
        s = self.settings
        requested_zones = mapping.aks_zones(request.zones, s.location)
        spot = request.capacity_type == CapacityType.SPOT
        failures: list[tuple[str, CloudError]] = []
        for candidate in request.instance_types:
            facts = _facts_of(skus, candidate)
            if facts is None and skus is not None:
                unknown = f"VM size {candidate} is not offered in {s.location}"
                failures.append(
                    (candidate, InsufficientCapacity(unknown, "SkuNotAvailable", instance_type=candidate))
                )
                continue
            vm_size = facts.name if facts is not None else candidate
            # Without a listing only what AKS itself refused lately rules a size or zone out.
            placement = facts or SkuFacts(name=vm_size, family="", vcpus=0, memory_gib=0.0)
            zones, why_not = zones_for(placement, requested_zones, s.location, self.unavailable)
            if why_not is not None:
                failures.append((vm_size, why_not))
                continue
            if s.quota_preflight and facts is not None and facts.vcpus:
                self._reprobe_usages()
                try:
                    await self._quota.check(
                        facts.family, facts.vcpus, spot=spot, vm_size=facts.name, pool=name
                    )
                except InsufficientCapacity as e:
                    log.info("skipping %s for %s: %s", facts.name, name, e)
                    failures.append((facts.name, e))
                    continue
            spec = mapping.build_pool(request, s, vm_size, facts, zones)
            trust = " (VM size not checked: the SKU listing is denied)" if skus is None else ""
            log.info("creating agent pool %s (%s, zones %s)%s", name, vm_size, list(zones) or "any", trust)
            self._names.written(name)
            try:
                accepted = await self._arm.put_pool(name, AgentPool(spec.body), create_only=True)
            except CloudError as e:
                self._quota.release(name)  # nothing was created: the vCPUs are free again
                if e.code == POOL_LIMIT_CODE:
                    raise  # the cluster has no room for any pool: another size cannot help
                if isinstance(e, InsufficientCapacity):
                    self._remember_capacity_error(vm_size, zones, e)
                    e.instance_type = e.instance_type or vm_size
                    failures.append((vm_size, e))
                    continue
                if e.code not in ("OperationNotAllowed", "PreconditionFailed"):
                    raise
                # It exists: an earlier attempt or process made it, or is still creating it.
                existing = await self._arm.get_pool(name)
                if existing is None:
                    raise
                return await self._existing(existing, request)
            finally:
                self._pools.invalidate()
            creating = {
                "name": name,
                "properties": {**spec.body["properties"], "provisioningState": "Creating"},
            }
            return await self._instance(accepted or AgentPool(creating), facts)
        raise all_failed(failures)

    async def _assign_shared(self, request: InstanceRequest, skus: dict[str, SkuFacts] | None) -> Instance:
        """The shared pool of the request's shape (the first candidate size the SKU facts and zones
        allow): assigned at once, no ARM write — the pool grows when the controller asks for nodes."""
        s = self.settings
        requested_zones = mapping.aks_zones(request.zones, s.location)
        failures: list[tuple[str, CloudError]] = []
        for candidate in request.instance_types:
            facts = _facts_of(skus, candidate)
            if facts is None and skus is not None:
                unknown = f"VM size {candidate} is not offered in {s.location}"
                failures.append(
                    (candidate, InsufficientCapacity(unknown, "SkuNotAvailable", instance_type=candidate))
                )
                continue
            vm_size = facts.name if facts is not None else candidate
            placement = facts or SkuFacts(name=vm_size, family="", vcpus=0, memory_gib=0.0)
            zones, why_not = zones_for(placement, requested_zones, s.location, self.unavailable)
            if why_not is not None:
                failures.append((vm_size, why_not))
                continue
            shape = replace(request, labels={}, tags={})
            body = mapping.build_pool(shape, s, vm_size, facts, zones).body
            body["properties"]["tags"] = {
                **s.extra_tags,
                TAG_CLUSTER: s.cluster_name,
                TAG_MANAGED_BY: MANAGED_BY_VALUE,
                TAG_SHARED: "true",
            }
            name = self._shared.assign(request.claim_uid, body)
            pending = {"name": name, "properties": {**body["properties"], "provisioningState": "Creating"}}
            return await self._instance(AgentPool(pending), facts)
        raise all_failed(failures)

    def _remember_capacity_error(
        self, vm_size: str, zones: tuple[str, ...], err: InsufficientCapacity
    ) -> None:
        if err.code == "QuotaExceeded":
            self._quota.invalidate()  # our numbers were wrong; read them again next time
        else:
            self.unavailable.mark(vm_size, zones)

    # --- reads -------------------------------------------------------------------------------

    async def _load_skus(self) -> dict[str, SkuFacts]:
        """The region's SKU facts; empty (and the read marked denied) on AuthorizationFailed."""
        try:
            listing = await self._arm.list_skus()
        except CloudError as e:
            if not is_denied(e):
                raise
            self._permissions.deny(SKUS_READ, e)
            return {}
        self._permissions.allow(SKUS_READ)
        return index_skus(listing, self.settings.location)

    async def _load_usages(self) -> dict[str, UsageLimit]:
        """The region's usages; none (and the read marked denied) on AuthorizationFailed."""
        try:
            usages = await self._arm.list_usages()
        except CloudError as e:
            if not is_denied(e):
                raise
            self._permissions.deny(USAGES_READ, e)
            return {}
        self._permissions.allow(USAGES_READ)
        return index_usages(usages)

    async def _catalog(self) -> dict[str, SkuFacts] | None:
        """SKU facts by lower-cased size (cached); None while Azure denies the listing, which is
        then asked again every recheck interval instead of every cache TTL."""
        skus = await self._skus.get(max_age=self._permissions.max_age(SKUS_READ))
        return None if self._permissions.denied(SKUS_READ) else skus

    def _reprobe_usages(self) -> None:
        """A denied usages read whose denial is due is read again at the next quota check."""
        if self._permissions.due(USAGES_READ):
            self._quota.invalidate()

    async def _reprobe(self) -> None:
        """Ask the denied reads again when due (readiness: recovery without a claim to launch)."""
        try:
            if self._permissions.denied(SKUS_READ):
                await self._catalog()
            if self._permissions.due(USAGES_READ):
                self._quota.invalidate()
                await self._quota.read()  # the loader records the answer
        except CloudError as e:
            log.info("re-reading denied subscription reads failed: %s", e)

    async def _sku_facts(self, vm_size: str) -> SkuFacts | None:
        try:
            skus = await self._catalog()
        except CloudError as e:
            log.info("SKU facts unavailable for %s: %s", vm_size, e)
            return None
        return _facts_of(skus, vm_size)

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


def _facts_of(skus: dict[str, SkuFacts] | None, vm_size: str) -> SkuFacts | None:
    """A size's facts from the listing; without one (denied), from the built-in table."""
    return known_size(vm_size) if skus is None else skus.get(vm_size.lower())


def _tags(pool: AgentPool) -> dict[str, str]:
    tags = pool.properties.tags if pool.properties else None
    return {k: v for k, v in tags.items() if isinstance(v, str)} if isinstance(tags, dict) else {}


def _state(pool: AgentPool) -> InstanceState:
    return mapping.instance_state(pool.properties.provisioning_state if pool.properties else None)
