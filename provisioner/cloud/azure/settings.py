"""Configuration of the AKS provider, read from environment-style settings.

Names follow the Azure/gpu-provisioner chart where one exists (``ARM_SUBSCRIPTION_ID``,
``ARM_RESOURCE_GROUP``, ``AZURE_CLUSTER_NAME``, ``LOCATION``, ...); the rest are ``AZURE_*`` names
documented on the fields of ``AzureSettings`` (one line each, used by the docs generator too).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TypeVar
from urllib.parse import urlparse

from provisioner.cloud.azure.env import EnvReader

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"

#: Ways to obtain an Azure AD token (``AZURE_CREDENTIAL``).
CREDENTIAL_KINDS = ("auto", "workload-identity", "managed-identity", "client-secret", "default")

OS_DISK_TYPES = ("Managed", "Ephemeral")

#: How claims map to agent pools (``AZURE_POOL_STRATEGY``).
POOL_STRATEGIES = ("dedicated", "shared")

_T = TypeVar("_T")


def _meta(env: str, doc: str) -> dict[str, str]:
    return {"env": env, "doc": doc}


@dataclass(frozen=True)
class AzureSettings:
    """Everything the AKS provider needs; build it with ``AzureSettings.from_env``."""

    subscription_id: str = field(
        metadata=_meta("ARM_SUBSCRIPTION_ID", "Subscription of the AKS cluster (UUID).")
    )
    resource_group: str = field(metadata=_meta("ARM_RESOURCE_GROUP", "Resource group of the AKS cluster."))
    cluster_name: str = field(metadata=_meta("AZURE_CLUSTER_NAME", "Name of the AKS managed cluster."))
    location: str = field(metadata=_meta("LOCATION", "Azure region of the cluster, e.g. eastus."))
    node_resource_group: str = field(
        default="",
        metadata=_meta(
            "AZURE_NODE_RESOURCE_GROUP",
            "Node resource group (MC_...); defaults to MC_<group>_<cluster>_<location>.",
        ),
    )
    arm_endpoint: str = field(
        default=DEFAULT_ARM_ENDPOINT,
        metadata=_meta("ARM_ENDPOINT", "Azure Resource Manager endpoint (sovereign clouds, test servers)."),
    )
    ca_bundle: str | None = field(
        default=None, metadata=_meta("ARM_CA_BUNDLE", "PEM file of CAs to trust for ARM and token requests.")
    )
    credential: str = field(
        default="auto",
        metadata=_meta(
            "AZURE_CREDENTIAL",
            "auto|workload-identity|managed-identity|client-secret|default (default adds developer tools).",
        ),
    )
    client_id: str | None = field(
        default=None, metadata=_meta("AZURE_CLIENT_ID", "Client ID of the workload/managed identity or app.")
    )
    tenant_id: str | None = field(default=None, metadata=_meta("AZURE_TENANT_ID", "Azure AD tenant ID."))
    federated_token_file: str | None = field(
        default=None,
        metadata=_meta("AZURE_FEDERATED_TOKEN_FILE", "Projected service account token (workload identity)."),
    )
    authority_host: str | None = field(
        default=None,
        metadata=_meta(
            "AZURE_AUTHORITY_HOST", "Azure AD authority, e.g. https://login.microsoftonline.com/."
        ),
    )
    client_secret: str | None = field(
        default=None,
        repr=False,
        metadata=_meta("AZURE_CLIENT_SECRET", "Secret of a service principal (credential client-secret)."),
    )
    vnet_subnet_id: str | None = field(
        default=None,
        metadata=_meta("AZURE_VNET_SUBNET_ID", "Subnet resource ID for new pools (vnetSubnetID)."),
    )
    max_pods: int | None = field(
        default=None, metadata=_meta("AZURE_MAX_PODS", "maxPods of new pools; unset leaves the AKS default.")
    )
    os_disk_type: str | None = field(
        default=None,
        metadata=_meta("AZURE_OS_DISK_TYPE", "Managed or Ephemeral; unset leaves the AKS default."),
    )
    gpu_driver_install: bool = field(
        default=True,
        metadata=_meta(
            "AZURE_GPU_DRIVER_INSTALL", "false sets gpuProfile.driver=None (GPU Operator installs it)."
        ),
    )
    extra_tags: Mapping[str, str] = field(
        default_factory=dict,
        metadata=_meta("AZURE_EXTRA_TAGS", "Tags added to every pool: JSON object or k=v,k=v."),
    )
    arm_rate_limit: float = field(
        default=25.0,
        metadata=_meta(
            "AZURE_ARM_RATE_LIMIT", "ARM reads (GET) per second this controller may send (ARM: 25)."
        ),
    )
    arm_rate_burst: int = field(
        default=250,
        metadata=_meta("AZURE_ARM_RATE_BURST", "Reads that may be sent at once before limiting (ARM: 250)."),
    )
    arm_write_rate_limit: float = field(
        default=10.0,
        metadata=_meta("AZURE_ARM_WRITE_RATE_LIMIT", "ARM writes (PUT, POST) per second (ARM: 10)."),
    )
    arm_write_rate_burst: int = field(
        default=200,
        metadata=_meta("AZURE_ARM_WRITE_RATE_BURST", "Writes that may be sent at once (ARM: 200)."),
    )
    arm_delete_rate_limit: float = field(
        default=10.0,
        metadata=_meta("AZURE_ARM_DELETE_RATE_LIMIT", "ARM deletes per second (ARM: 10)."),
    )
    arm_delete_rate_burst: int = field(
        default=200,
        metadata=_meta("AZURE_ARM_DELETE_RATE_BURST", "Deletes that may be sent at once (ARM: 200)."),
    )
    arm_max_wait_seconds: float = field(
        default=1.0,
        metadata=_meta(
            "AZURE_ARM_MAX_WAIT_SECONDS",
            "Longest wait for a rate-limit token; beyond it the claim is retried when one is due.",
        ),
    )
    sdk_retry_total: int = field(
        default=1, metadata=_meta("AZURE_SDK_RETRY_TOTAL", "azure-core retries per HTTP request (kept low).")
    )
    read_attempts: int = field(
        default=4,
        metadata=_meta(
            "AZURE_READ_ATTEMPTS",
            "Attempts for background reads (the agent pool listing of GC and readiness); reconciles make one.",
        ),
    )
    retry_backoff_seconds: float = field(
        default=0.5, metadata=_meta("AZURE_RETRY_BACKOFF_SECONDS", "First backoff between read attempts.")
    )
    retry_after_max_seconds: float = field(
        default=30.0, metadata=_meta("AZURE_RETRY_AFTER_MAX_SECONDS", "Cap on any Retry-After we honour.")
    )
    http_timeout_seconds: float = field(
        default=60.0, metadata=_meta("AZURE_HTTP_TIMEOUT_SECONDS", "Connect/read timeout of one ARM request.")
    )
    list_cache_seconds: float = field(
        default=30.0, metadata=_meta("AZURE_LIST_CACHE_SECONDS", "How long one agent pool listing is reused.")
    )
    sku_cache_seconds: float = field(
        default=3600.0,
        metadata=_meta("AZURE_SKU_CACHE_SECONDS", "How long the Resource SKUs listing is reused."),
    )
    usage_cache_seconds: float = field(
        default=60.0,
        metadata=_meta("AZURE_USAGE_CACHE_SECONDS", "How long compute usages (quota) are reused."),
    )
    quota_recheck_seconds: float = field(
        default=10.0,
        metadata=_meta(
            "AZURE_QUOTA_RECHECK_SECONDS", "A cached 'quota short' answer older than this is re-read."
        ),
    )
    quota_preflight: bool = field(
        default=True, metadata=_meta("AZURE_QUOTA_PREFLIGHT", "Check vCPU quota before creating a pool.")
    )
    unavailable_sku_seconds: float = field(
        default=180.0,
        metadata=_meta(
            "AZURE_UNAVAILABLE_SKU_SECONDS", "How long a size/zone that had no capacity is skipped."
        ),
    )
    pool_strategy: str = field(
        default="dedicated",
        metadata=_meta(
            "AZURE_POOL_STRATEGY",
            "dedicated: one agent pool per claim (named after it); shared: claims of one shape share pools.",
        ),
    )
    shared_pool_max_nodes: int = field(
        default=100,
        metadata=_meta(
            "AZURE_SHARED_POOL_MAX_NODES", "Nodes per shared pool before another pool is started."
        ),
    )
    shared_batch_seconds: float = field(
        default=0.5,
        metadata=_meta(
            "AZURE_SHARED_BATCH_SECONDS", "How long a shared pool gathers arrivals before one scale PUT."
        ),
    )

    @property
    def effective_node_resource_group(self) -> str:
        return self.node_resource_group or f"MC_{self.resource_group}_{self.cluster_name}_{self.location}"

    @property
    def custom_endpoint(self) -> bool:
        return self.arm_endpoint.rstrip("/") != DEFAULT_ARM_ENDPOINT

    @property
    def credential_scope(self) -> str:
        """The token scope for ARM at the configured endpoint."""
        return f"{self.arm_endpoint.rstrip('/')}/.default"

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, cluster_name: str = "") -> AzureSettings:
        """Read and validate settings; raises one ``ConfigError`` naming every bad setting."""
        r = EnvReader(env)
        subscription = r.required("ARM_SUBSCRIPTION_ID", "the AKS cluster's subscription ID")
        if subscription:
            try:
                uuid.UUID(subscription)
            except ValueError:
                r.error("ARM_SUBSCRIPTION_ID", f"must be a subscription UUID, got {subscription!r}")
        resource_group = r.required("ARM_RESOURCE_GROUP", "the AKS cluster's resource group")
        cluster = r.optional("AZURE_CLUSTER_NAME") or cluster_name
        if not cluster:
            r.error("AZURE_CLUSTER_NAME", "is required but not set (the AKS cluster's name)")
        location = r.required("LOCATION", "the cluster's Azure region, e.g. eastus").replace(" ", "").lower()
        endpoint = r.optional("ARM_ENDPOINT") or DEFAULT_ARM_ENDPOINT
        parsed = urlparse(endpoint)
        if parsed.scheme != "https" or not parsed.netloc:
            r.error("ARM_ENDPOINT", f"must be an https:// URL, got {endpoint!r}")
        ca_bundle = r.optional("ARM_CA_BUNDLE")
        if ca_bundle and not os.path.isfile(ca_bundle):
            r.error("ARM_CA_BUNDLE", f"file {ca_bundle!r} does not exist")
        credential = (r.optional("AZURE_CREDENTIAL") or "auto").lower()
        if credential not in CREDENTIAL_KINDS:
            r.error("AZURE_CREDENTIAL", f"must be one of {', '.join(CREDENTIAL_KINDS)}, got {credential!r}")
        authority = r.optional("AZURE_AUTHORITY_HOST")
        if authority and urlparse(authority).scheme != "https":
            r.error("AZURE_AUTHORITY_HOST", f"must be an https:// URL, got {authority!r}")
        os_disk_type = r.optional("AZURE_OS_DISK_TYPE")
        if os_disk_type:
            matched = [t for t in OS_DISK_TYPES if t.lower() == os_disk_type.lower()]
            if matched:
                os_disk_type = matched[0]
            else:
                r.error("AZURE_OS_DISK_TYPE", f"must be Managed or Ephemeral, got {os_disk_type!r}")
        subnet = r.optional("AZURE_VNET_SUBNET_ID")
        if subnet and not re.match(
            r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/"
            r"virtualNetworks/[^/]+/subnets/[^/]+$",
            subnet,
            re.IGNORECASE,
        ):
            r.error("AZURE_VNET_SUBNET_ID", f"must be a subnet resource ID, got {subnet!r}")
        strategy = (r.optional("AZURE_POOL_STRATEGY") or "dedicated").lower()
        if strategy not in POOL_STRATEGIES:
            r.error("AZURE_POOL_STRATEGY", f"must be dedicated or shared, got {strategy!r}")

        settings = cls(
            subscription_id=subscription,
            resource_group=resource_group,
            cluster_name=cluster,
            location=location,
            node_resource_group=r.optional("AZURE_NODE_RESOURCE_GROUP") or "",
            arm_endpoint=endpoint.rstrip("/"),
            ca_bundle=ca_bundle,
            credential=credential,
            client_id=r.optional("AZURE_CLIENT_ID"),
            tenant_id=r.optional("AZURE_TENANT_ID"),
            federated_token_file=r.optional("AZURE_FEDERATED_TOKEN_FILE"),
            authority_host=authority,
            client_secret=r.optional("AZURE_CLIENT_SECRET"),
            vnet_subnet_id=subnet,
            max_pods=r.number("AZURE_MAX_PODS", int, None, minimum=10, maximum=250),
            os_disk_type=os_disk_type,
            gpu_driver_install=r.boolean("AZURE_GPU_DRIVER_INSTALL", True),
            extra_tags=r.tags("AZURE_EXTRA_TAGS"),
            arm_rate_limit=r.number("AZURE_ARM_RATE_LIMIT", float, 25.0, minimum=0.01),
            arm_rate_burst=r.number("AZURE_ARM_RATE_BURST", int, 250, minimum=1),
            arm_write_rate_limit=r.number("AZURE_ARM_WRITE_RATE_LIMIT", float, 10.0, minimum=0.01),
            arm_write_rate_burst=r.number("AZURE_ARM_WRITE_RATE_BURST", int, 200, minimum=1),
            arm_delete_rate_limit=r.number("AZURE_ARM_DELETE_RATE_LIMIT", float, 10.0, minimum=0.01),
            arm_delete_rate_burst=r.number("AZURE_ARM_DELETE_RATE_BURST", int, 200, minimum=1),
            arm_max_wait_seconds=r.number("AZURE_ARM_MAX_WAIT_SECONDS", float, 1.0, minimum=0),
            sdk_retry_total=r.number("AZURE_SDK_RETRY_TOTAL", int, 1, minimum=0, maximum=5),
            read_attempts=r.number("AZURE_READ_ATTEMPTS", int, 4, minimum=1, maximum=20),
            retry_backoff_seconds=r.number("AZURE_RETRY_BACKOFF_SECONDS", float, 0.5, minimum=0),
            retry_after_max_seconds=r.number("AZURE_RETRY_AFTER_MAX_SECONDS", float, 30.0, minimum=0),
            http_timeout_seconds=r.number("AZURE_HTTP_TIMEOUT_SECONDS", float, 60.0, minimum=0.1),
            list_cache_seconds=r.number("AZURE_LIST_CACHE_SECONDS", float, 30.0, minimum=0),
            sku_cache_seconds=r.number("AZURE_SKU_CACHE_SECONDS", float, 3600.0, minimum=0),
            usage_cache_seconds=r.number("AZURE_USAGE_CACHE_SECONDS", float, 60.0, minimum=0),
            quota_recheck_seconds=r.number("AZURE_QUOTA_RECHECK_SECONDS", float, 10.0, minimum=0),
            quota_preflight=r.boolean("AZURE_QUOTA_PREFLIGHT", True),
            unavailable_sku_seconds=r.number("AZURE_UNAVAILABLE_SKU_SECONDS", float, 180.0, minimum=0),
            pool_strategy=strategy,
            shared_pool_max_nodes=r.number("AZURE_SHARED_POOL_MAX_NODES", int, 100, minimum=1, maximum=1000),
            shared_batch_seconds=r.number("AZURE_SHARED_BATCH_SECONDS", float, 0.5, minimum=0, maximum=30),
        )
        _check_credential(settings, r)
        r.check()
        return settings

    @classmethod
    def documentation(cls) -> list[tuple[str, str]]:
        """(environment name, one-line description) for every setting, in declaration order."""
        return [(f.metadata["env"], f.metadata["doc"]) for f in fields(cls)]

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line."""
        return [s for s in (self.client_secret,) if s]


def _check_credential(s: AzureSettings, r: EnvReader) -> None:
    if s.credential == "workload-identity":
        for name, value in (
            ("AZURE_FEDERATED_TOKEN_FILE", s.federated_token_file),
            ("AZURE_CLIENT_ID", s.client_id),
            ("AZURE_TENANT_ID", s.tenant_id),
        ):
            if not value:
                r.error(name, "is required for AZURE_CREDENTIAL=workload-identity")
    if s.credential == "client-secret":
        for name, value in (
            ("AZURE_CLIENT_SECRET", s.client_secret),
            ("AZURE_CLIENT_ID", s.client_id),
            ("AZURE_TENANT_ID", s.tenant_id),
        ):
            if not value:
                r.error(name, "is required for AZURE_CREDENTIAL=client-secret")
    if s.credential == "auto" and s.federated_token_file and not (s.client_id and s.tenant_id):
        missing = "AZURE_CLIENT_ID" if not s.client_id else "AZURE_TENANT_ID"
        r.error(missing, "is required with AZURE_FEDERATED_TOKEN_FILE (workload identity)")
