"""Prometheus metrics: Karpenter-compatible claim/node counters plus cloud-provider metrics.

Names follow Karpenter core (``karpenter_machines_*`` for v1alpha5 Machines,
``karpenter_nodeclaims_*`` for v1 NodeClaims, ``karpenter_nodes_*``) so existing dashboards and
alerts keep working; provider metrics are ``gpu_provisioner_cloud_*``. Everything lives in one
registry object owned by the operator (no module-level state).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from provisioner.claims.dialects import DIALECTS, Dialect
from provisioner.cloud.errors import CloudError

T = TypeVar("T")

_CLAIM_PHASES = ("created", "launched", "registered", "initialized", "terminated")
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No ``*_created`` timestamp series next to every counter (``karpenter_machines_created_created``).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.claims: dict[tuple[str, str], Counter] = {}
        for d in DIALECTS.values():
            for phase in _CLAIM_PHASES:
                self.claims[(d.metric_name, phase)] = Counter(
                    f"karpenter_{d.metric_name}_{phase}",
                    f"Number of {d.metric_name} {phase}.",
                    [d.metric_pool_label],
                    registry=r,
                )
        self.claim_launch_failures = Counter(
            "karpenter_cloudprovider_errors",
            "Launch failures by error class and cloud error code.",
            ["kind", "error", "code"],
            registry=r,
        )
        self.nodes_created = Counter(
            "karpenter_nodes_created", "Nodes that joined for a claim.", ["nodepool"], registry=r
        )
        self.nodes_terminated = Counter(
            "karpenter_nodes_terminated", "Nodes deleted by termination.", ["nodepool"], registry=r
        )
        self.time_to_ready = Histogram(
            "gpu_provisioner_claim_ready_duration_seconds",
            "Seconds from claim creation to Ready=True.",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.evictions = Counter(
            "karpenter_nodes_eviction_requests",
            "Eviction requests sent while draining.",
            ["code"],
            registry=r,
        )
        self.cloud_duration = Histogram(
            "gpu_provisioner_cloud_request_duration_seconds",
            "Duration of cloud provider calls.",
            ["provider", "operation"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.cloud_errors = Counter(
            "gpu_provisioner_cloud_errors",
            "Cloud provider call errors by operation, error class and cloud error code.",
            ["provider", "operation", "error", "code"],
            registry=r,
        )
        self.cloud_inflight = Gauge(
            "gpu_provisioner_cloud_inflight_operations", "Cloud calls in progress.", ["provider"], registry=r
        )
        self.gc_deletions = Counter(
            "gpu_provisioner_gc_deletions", "Objects deleted by garbage collection.", ["kind"], registry=r
        )
        self.leader = Gauge("gpu_provisioner_leader", "1 while this replica is the leader.", registry=r)
        self.claim_states = Gauge(
            "gpu_provisioner_claims",
            "Managed claims by lifecycle state (launching, launch_failed, registering, initializing, ready, deleting).",
            ["kind", "state"],
            registry=r,
        )
        self.reconciles = Counter(
            "gpu_provisioner_reconciles",
            "Reconciles by object kind and result.",
            ["kind", "result"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "gpu_provisioner_workqueue_depth",
            "Keys waiting in the work queue or being reconciled.",
            registry=r,
        )
        self.queue_retries = Counter(
            "gpu_provisioner_workqueue_retries",
            "Reconciles that failed and were scheduled again with backoff.",
            registry=r,
        )
        self.writes_refused = Counter(
            "gpu_provisioner_fenced_writes",
            "Writes not sent because this replica could not be sure it still held the Lease (target: kube, cloud).",
            ["target"],
            registry=r,
        )
        self.stalls = Counter(
            "gpu_provisioner_stalls",
            "Times the process was found to have stalled for longer than the leader-election retry period.",
            registry=r,
        )

    def claim(self, dialect: Dialect, phase: str, nodepool: str) -> None:
        self.claims[(dialect.metric_name, phase)].labels(nodepool or "").inc()

    async def timed_cloud_call(self, provider: str, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        gauge = self.cloud_inflight.labels(provider)
        gauge.inc()
        start = time.monotonic()
        try:
            return await call()
        except CloudError as e:
            self.cloud_errors.labels(provider, operation, type(e).__name__, e.code or "").inc()
            raise
        finally:
            gauge.dec()
            self.cloud_duration.labels(provider, operation).observe(time.monotonic() - start)
