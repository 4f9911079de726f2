"""Settings of the fake ARM server, loadable from a JSON file (``--config``).

Example (every key optional)::

    {
      "clusters": [{"subscription_id": "…", "resource_group": "rg", "name": "aks", "location": "eastus"}],
      "auto_create_clusters": false,
      "latency": {"create": 0.2, "update": 0.2, "delete": 0.2},
      "page_size": 10,
      "max_pools_per_cluster": 100,
      "lro_retry_after": 1,
      "serialize_pool_operations": true,
      "quota": {"eastus": {"standardNCADSA100v4Family": 24, "cores": 100}},
      "baseline_usage": {"eastus": {"cores": 8}},
      "faults": [{"action": "throttle", "method": "PUT", "path": "/agentPools/", "count": 2},
                 {"action": "corrupt", "path": "^/subscriptions/", "ratio": 0.2, "seed": 7}],
      "clients": {"my-client-id": "my-secret"},
      "denied_actions": ["Microsoft.Compute/skus/read", "Microsoft.Compute/locations/usages/read"]
    }
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_RESOURCE_GROUP = "rg-gpu"
DEFAULT_CLUSTER = "aks-gpu"
DEFAULT_LOCATION = "eastus"
DEFAULT_KUBERNETES_VERSION = "1.31.2"


class ConfigError(ValueError):
    """The configuration cannot be used."""


@dataclass(frozen=True)
class ClusterConfig:
    """A managed cluster that exists in the fake subscription."""

    subscription_id: str = DEFAULT_SUBSCRIPTION
    resource_group: str = DEFAULT_RESOURCE_GROUP
    name: str = DEFAULT_CLUSTER
    location: str = DEFAULT_LOCATION
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    node_resource_group: str | None = None

    @property
    def effective_node_resource_group(self) -> str:
        return self.node_resource_group or f"MC_{self.resource_group}_{self.name}_{self.location}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterConfig:
        _check_keys("cluster", data, {f.name for f in fields(cls)})
        return cls(**data)


@dataclass(frozen=True)
class Latency:
    """Seconds an agent pool operation takes before it reaches its final state."""

    create: float = 2.0
    update: float = 1.0
    delete: float = 2.0

    def for_operation(self, operation: str) -> float:
        """``create``, ``update`` (a count change too) or ``delete``; a deleteMachines takes as
        long as an update."""
        return float(getattr(self, "update" if operation == "deleteMachines" else operation))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Latency:
        _check_keys("latency", data, {"create", "update", "delete"})
        return cls(**{k: float(v) for k, v in data.items()})


@dataclass
class FakeArmConfig:
    clusters: list[ClusterConfig] = field(default_factory=lambda: [ClusterConfig()])
    #: Any cluster path that is asked for exists (in ``DEFAULT_LOCATION``); off = unknown clusters 404.
    auto_create_clusters: bool = False
    latency: Latency = field(default_factory=Latency)
    #: Agent pools (and machines) per page of a list; further pages are reached through ``nextLink``.
    page_size: int = 10
    #: Agent pools one managed cluster may have (AKS: 100); a create beyond it is refused.
    max_pools_per_cluster: int = 100
    #: vCPU limits per location and quota family (``"*"`` applies to every location); these override
    #: the catalog defaults of ``fakes.skus.default_quotas()``.
    quota: dict[str, dict[str, int]] = field(default_factory=dict)
    #: vCPUs already in use outside the fake's own pools, per location and family.
    baseline_usage: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Fault rules, as for ``/_fake/faults`` (see ``fakes.arm.faults`` and ``fakes.arm.corruption``).
    faults: list[dict[str, Any]] = field(default_factory=list)
    #: Requests to ARM must carry a bearer token issued by this server.
    require_auth: bool = True
    token_lifetime: int = 3600
    #: client_id -> client_secret; when non-empty, secrets are checked (assertions are accepted
    #: for any client listed). Empty: every client is accepted.
    clients: dict[str, str] = field(default_factory=dict)
    #: ``Retry-After`` (seconds) on LRO responses and operation status polls, as AKS sends it (the
    #: SDK's poller then waits that long between polls); None (``null``) = not sent, the SDK polls
    #: at its own ``polling_interval``.
    lro_retry_after: int | None = 1
    #: One operation per agent pool at a time, as AKS: a PUT, DELETE or deleteMachines while an
    #: operation on the pool runs is answered 409 ``OperationNotAllowed``. Off: the new operation
    #: is accepted and the running one ends ``Canceled`` (a cloud without AKS' serialization).
    serialize_pool_operations: bool = True
    #: RBAC actions the caller is not granted: answered 403 AuthorizationFailed (see
    #: ``fakes.arm.authorization``; e.g. the subscription reads a cluster-only Contributor lacks).
    denied_actions: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FakeArmConfig:
        _check_keys("config", data, {f.name for f in fields(cls)})
        kwargs: dict[str, Any] = dict(data)
        if "clusters" in kwargs:
            kwargs["clusters"] = [ClusterConfig.from_dict(c) for c in kwargs["clusters"]]
        if "latency" in kwargs:
            kwargs["latency"] = Latency.from_dict(kwargs["latency"])
        for key in ("quota", "baseline_usage"):
            if key in kwargs:
                kwargs[key] = {
                    loc: {fam: int(n) for fam, n in fams.items()} for loc, fams in kwargs[key].items()
                }
        config = cls(**kwargs)
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> FakeArmConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a JSON object")
        return cls.from_dict(data)

    def validate(self) -> None:
        if self.page_size < 1:
            raise ConfigError("page_size must be at least 1")
        if self.max_pools_per_cluster < 1:
            raise ConfigError("max_pools_per_cluster must be at least 1")
        if self.lro_retry_after is not None and (
            isinstance(self.lro_retry_after, bool)
            or not isinstance(self.lro_retry_after, int)
            or self.lro_retry_after < 0
        ):
            raise ConfigError("lro_retry_after must be a whole number of seconds (0 or more) or null")
        if not isinstance(self.serialize_pool_operations, bool):
            raise ConfigError("serialize_pool_operations must be true or false")
        if not isinstance(self.denied_actions, list) or not all(
            isinstance(a, str) and a.count("/") >= 2 for a in self.denied_actions
        ):
            raise ConfigError(
                "denied_actions must be a list of RBAC actions such as 'Microsoft.Compute/skus/read'"
            )


def _check_keys(what: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} must be a JSON object")
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"unknown {what} key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
