"""Controller settings: one declaration per setting gives its env name, flag, default and help.

The CLI builds its flags from :data:`SETTINGS`, the docs' configuration reference is generated
from it, and :func:`Settings.from_env` validates values with one clear error per wrong value.
Cloud-specific settings (Azure subscription, cluster, ...) belong to the cloud provider and are
read from the same environment by it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class SettingsError(ValueError):
    """One or more settings have invalid values; the message names each one."""


class StartupError(RuntimeError):
    """The controller cannot start; the message says what is wrong and what to change (a line each)."""


def _setting(default: Any, env: str, help: str, *, choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"env": env, "help": help, "choices": choices})


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _bool(value: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class Settings:
    cloud: str = _setting("azure", "CLOUD_PROVIDER", "Cloud provider plugin to use (installed entry points).")
    controller_name: str = _setting(
        "gpu-provisioner",
        "CONTROLLER_NAME",
        "Name this installation marks the claims it takes over with; give each installation its own "
        "when several share a cluster.",
    )
    cluster_name: str = _setting("", "AZURE_CLUSTER_NAME", "Name of the cluster the nodes join; tags pools.")
    # -- which claims are ours
    claim_labels: tuple[str, ...] = _setting(
        ("kaito.sh/workspace", "kaito.sh/ragengine"),
        "CLAIM_SELECTOR_LABELS",
        "Claims carrying any of these label keys are managed (comma-separated).",
    )
    claim_node_class_kinds: tuple[str, ...] = _setting(
        ("KaitoNodeClass",),
        "CLAIM_NODE_CLASS_KINDS",
        "NodeClaims whose nodeClassRef kind is one of these are managed (comma-separated).",
    )
    claim_node_class_groups: tuple[str, ...] = _setting(
        ("kaito.sh",),
        "CLAIM_NODE_CLASS_GROUPS",
        "NodeClaims whose nodeClassRef names another API group (another provisioner's node class, e.g. "
        "karpenter.azure.com) are never managed, whatever their labels (comma-separated; an empty "
        "group is always accepted).",
    )
    instance_type_allowlist: tuple[str, ...] = _setting(
        (), "INSTANCE_TYPE_ALLOWLIST", "If set, only these instance types may be launched (comma-separated)."
    )
    max_nodes: int = _setting(0, "MAX_NODES", "Most nodes all managed claims may hold at once (0: no limit).")
    max_gpus: int = _setting(0, "MAX_GPUS", "Most GPUs all managed claims may hold at once (0: no limit).")
    # -- lifecycle
    registration_timeout: float = _setting(
        1200.0,
        "REGISTRATION_TIMEOUT_SECONDS",
        "Delete a launched claim whose node has not joined after this long.",
    )
    not_ready_repair_after: float = _setting(
        600.0,
        "NOT_READY_REPAIR_SECONDS",
        "Delete a claim whose node has been NotReady this long (0 disables).",
    )
    delete_on_insufficient_capacity: bool = _setting(
        False,
        "DELETE_ON_INSUFFICIENT_CAPACITY",
        "Delete a claim when no instance type has capacity (upstream Karpenter) instead of retrying it.",
    )
    capacity_retry_base: float = _setting(
        30.0,
        "CAPACITY_RETRY_BASE_SECONDS",
        "First retry delay after insufficient capacity; doubles each time.",
    )
    capacity_retry_max: float = _setting(
        600.0, "CAPACITY_RETRY_MAX_SECONDS", "Longest delay between launch retries after capacity errors."
    )
    launch_timeout: float = _setting(
        3600.0,
        "LAUNCH_TIMEOUT_SECONDS",
        "Give up on a create the cloud has not finished after this long: the claim is deleted so that "
        "its owner makes a new one.",
    )
    capacity_recheck_interval: float = _setting(
        30.0,
        "CAPACITY_RECHECK_SECONDS",
        "How often claims waiting on quota are checked against the cloud's (shared, cached) quota "
        "reading; they launch as soon as it has room.",
    )
    launch_poll_interval: float = _setting(
        10.0,
        "LAUNCH_POLL_SECONDS",
        "How often an in-flight create is read back to catch failures (first interval; it grows to a "
        "tenth of the claim's age, at most a minute).",
    )
    delete_poll_interval: float = _setting(
        10.0,
        "DELETE_POLL_SECONDS",
        "How often a deleting instance is read back until the cloud says it is gone.",
    )
    drain_retry_interval: float = _setting(
        5.0,
        "DRAIN_RETRY_SECONDS",
        "Delay between eviction rounds while a PodDisruptionBudget blocks a drain.",
    )
    min_drain_time: float = _setting(
        1.0,
        "MIN_DRAIN_SECONDS",
        "A drain takes at least this long after the node is cordoned, so that a pod bound by a "
        "scheduler that had not yet seen the cordon is seen and evicted too.",
    )
    drain_timeout: float = _setting(
        0.0,
        "DRAIN_TIMEOUT_SECONDS",
        "Stop waiting on PodDisruptionBudgets this long after deletion (0: wait as long as it takes). "
        "A NodeClaim's spec.terminationGracePeriod takes precedence.",
    )
    # -- NodePools (Kaito's karpenter mode)
    nodepools: bool = _setting(
        True,
        "NODEPOOLS",
        "Serve static NodePools (karpenter.sh/v1, spec.replicas) whose nodeClassRef is one of our node "
        "classes, and their node classes' status.",
    )
    node_class_refresh: float = _setting(
        3600.0,
        "NODE_CLASS_REFRESH_SECONDS",
        "How often a node class's image family is resolved again (a new image version drifts its "
        "NodePools' NodeClaims).",
    )
    # -- garbage collection
    gc_interval: float = _setting(60.0, "GC_INTERVAL_SECONDS", "How often instances and claims are compared.")
    gc_orphan_grace: float = _setting(
        120.0, "GC_ORPHAN_GRACE_SECONDS", "An instance we own with no claim is deleted after this long."
    )
    resync_interval: float = _setting(
        300.0,
        "RESYNC_SECONDS",
        "How often claims and Nodes are listed again to correct the watch caches (objects deleted "
        "while a watch was down are forgotten).",
    )
    # -- leader election (coordination.k8s.io/v1 Lease)
    leader_elect: bool = _setting(
        True, "LEADER_ELECT", "Use a Lease so only one replica acts (hot standby for the rest)."
    )
    leader_election_namespace: str = _setting(
        "",
        "LEADER_ELECTION_NAMESPACE",
        "Namespace of the Lease (default: the pod's namespace, else kube-system).",
    )
    leader_election_name: str = _setting(
        "gpu-provisioner-leader", "LEADER_ELECTION_NAME", "Name of the Lease."
    )
    lease_duration: float = _setting(
        15.0,
        "LEADER_ELECTION_LEASE_SECONDS",
        "A standby takes over this long after the leader stops renewing.",
    )
    renew_deadline: float = _setting(
        10.0, "LEADER_ELECTION_RENEW_SECONDS", "A leader that cannot renew within this long stops acting."
    )
    retry_period: float = _setting(
        2.0, "LEADER_ELECTION_RETRY_SECONDS", "How often the Lease is tried and renewed."
    )
    # -- endpoints
    metrics_port: int = _setting(8080, "METRICS_PORT", "Port of /metrics (Prometheus); 0 disables it.")
    health_port: int = _setting(8081, "HEALTH_PORT", "Port of /healthz and /readyz; 0 disables it.")
    bind_address: str = _setting(
        "0.0.0.0", "BIND_ADDRESS", "Address the metrics and health servers listen on."
    )
    # -- runtime
    workers: int = _setting(8, "WORKERS", "Claims reconciled concurrently.")
    retry_max: float = _setting(
        300.0,
        "RECONCILE_RETRY_MAX_SECONDS",
        "Longest delay before a claim whose reconcile failed is tried again (the delay starts at half "
        "a second and doubles with each failure in a row).",
    )
    retry_rate: float = _setting(
        10.0,
        "RECONCILE_RETRY_RATE",
        "Most retries of failed reconciles started per second, over all claims (burst: ten times it).",
    )
    api_server_wait: float = _setting(
        60.0,
        "API_SERVER_WAIT_SECONDS",
        "How long start-up waits for the API server to answer before it gives up (exit 2).",
    )
    log_level: str = _setting(
        "info", "LOG_LEVEL", "Log level.", choices=("debug", "info", "warn", "warning", "error")
    )
    log_format: str = _setting("text", "LOG_FORMAT", "Log format.", choices=("text", "json"))

    @classmethod
    def fields(cls) -> list[dataclasses.Field[Any]]:
        return list(dataclasses.fields(cls))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``env`` (default: the process environment), then ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        errors: list[str] = []
        for f in cls.fields():
            raw = env.get(f.metadata["env"])
            if raw is None or (raw == "" and not isinstance(f.default, tuple)):
                continue  # unset; an empty list setting means "none"
            try:
                values[f.name] = _PARSERS[type(f.default)](raw)
            except ValueError as e:
                errors.append(f"{f.metadata['env']}={raw!r}: {e}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        # Values that did not parse keep their defaults here, so every other mistake is found too.
        settings = cls(**values)
        errors += settings.problems(skip={e.split("=", 1)[0] for e in errors})
        if errors:
            raise SettingsError("invalid settings:\n  " + "\n  ".join(errors))
        return settings

    def validate(self) -> None:
        errors = self.problems()
        if errors:
            raise SettingsError("invalid settings:\n  " + "\n  ".join(errors))

    def problems(self, skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """One line per invalid value (settings named in ``skip`` are not checked)."""
        errors: list[str] = []
        for f in self.fields():
            value = getattr(self, f.name)
            name = f.metadata["env"]
            if name in skip:
                continue
            if f.metadata["choices"] and value not in f.metadata["choices"]:
                errors.append(f"{name}={value!r}: must be one of {', '.join(f.metadata['choices'])}")
            elif f.name == "workers":
                if value < 1:
                    errors.append(f"WORKERS={value}: must be at least 1")
            elif isinstance(value, float) and not math.isfinite(value):
                errors.append(f"{name}={value!r}: must be a finite number of seconds")
            elif isinstance(value, float | int) and not isinstance(value, bool) and value < 0:
                errors.append(f"{name}={value!r}: must not be negative")
            elif f.name in _POSITIVE and value == 0:
                errors.append(f"{name}=0: must be greater than zero (it is an interval between checks)")
        if self.leader_elect and not (
            self.retry_period < self.renew_deadline
            and self.retry_period + self.renew_deadline < self.lease_duration
        ):
            # A leader stops acting renew_deadline after its last renewal, found at most one retry
            # period late; a standby takes over lease_duration after it. The first must come first.
            errors.append(
                "leader election needs LEADER_ELECTION_RETRY_SECONDS < LEADER_ELECTION_RENEW_SECONDS and "
                "LEADER_ELECTION_RETRY_SECONDS + LEADER_ELECTION_RENEW_SECONDS < LEADER_ELECTION_LEASE_SECONDS"
            )
        for port_field in ("metrics_port", "health_port"):
            port = getattr(self, port_field)
            if not 0 <= port <= 65535:
                errors.append(f"{port_field.upper()}={port}: must be a TCP port (0-65535)")
        if self.capacity_retry_max < self.capacity_retry_base:
            errors.append("CAPACITY_RETRY_MAX_SECONDS must not be smaller than CAPACITY_RETRY_BASE_SECONDS")
        return errors


#: Intervals between repeated work; zero would be a busy loop.
_POSITIVE = frozenset(
    {
        "launch_poll_interval",
        "delete_poll_interval",
        "drain_retry_interval",
        "gc_interval",
        "retry_period",
        "launch_timeout",
        "capacity_recheck_interval",
        "resync_interval",
        "retry_max",
        "retry_rate",
        "capacity_retry_base",
        "node_class_refresh",
    }
)

_PARSERS: dict[type, Callable[[str], Any]] = {
    str: str,
    float: float,
    int: int,
    bool: _bool,
    tuple: _csv,
}
