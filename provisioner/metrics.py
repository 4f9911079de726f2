"""Prometheus metrics: Karpenter's claim, node and cloud-provider metrics, plus our own.

Karpenter's names and labels are kept exactly, so dashboards and alerts written for Karpenter keep
working: v0.29's for Machines (``karpenter_machines_created{reason,provisioner}``, ...) and v1.0's
for NodeClaims (``karpenter_nodeclaims_created_total{reason,nodepool,capacity_type}``, ...), and
``karpenter_cloudprovider_duration_seconds`` / ``karpenter_cloudprovider_errors_total`` for both.
Karpenter v0.29's counters carry no ``_total`` suffix; prometheus_client always appends one to a
counter, so those are exported as untyped families under their exact names (PromQL's ``rate`` and
``increase`` treat them alike). Our own metrics are ``gpu_provisioner_*``; the process and Python
runtime metrics (``process_*``, ``python_*``) come with them. Everything lives in one registry object
owned by the operator (no module-level state).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from provisioner import __version__
from provisioner.claims.dialects import MACHINE, dialect_of
from provisioner.claims.model import CAPACITY_TYPE_LABEL, Claim
from provisioner.cloud.errors import CloudError, InsufficientCapacity, NotFound

T = TypeVar("T")

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)
# Karpenter's DurationBuckets() (controller-runtime's thresholds, plus the longer ones of v1.0).
_KARPENTER_DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60,
    120, 150, 300, 450, 600,
)  # fmt: skip

#: The reason Karpenter gives a claim it deletes itself (``karpenter_machines_terminated`` and
#: ``karpenter_nodeclaims_disrupted_total``), by the reason of the Event we post when we do.
DISRUPTION_REASONS: Mapping[str, str] = {
    "RegistrationTimeout": "liveness",
    "LaunchTimeout": "liveness",
    "NodeRepair": "unhealthy",
    "InsufficientCapacityError": "insufficient_capacity",
    "InstanceNotFound": "garbage_collected",
    "DisruptionTerminating": "drifted",
}

#: Karpenter's ``method`` label (its CloudProvider method names), by our cloud operation.
_METHODS: Mapping[str, str] = {
    "create": "Create",
    "delete": "Delete",
    "get": "Get",
    "list": "List",
    "instance_types": "GetInstanceTypes",
    "adopt": "Adopt",
    "quota": "QuotaAllows",
}

# Karpenter's well-known values of the cloudprovider ``error`` label ("" for any other error).
_ERROR_TYPES: tuple[tuple[type[CloudError], str], ...] = (
    (InsufficientCapacity, "InsufficientCapacityError"),
    (NotFound, "NodeClaimNotFoundError"),
)

#: The controller whose work is running (Karpenter's ``controller`` label): set per reconcile with
#: ``Metrics.controller``, read by every cloud call made meanwhile.
_controller: contextvars.ContextVar[str] = contextvars.ContextVar("metrics_controller", default="")


class UnsuffixedCounter(Collector):
    """A counter exported under its exact name, without the ``_total`` suffix (Karpenter v0.29's
    counters). prometheus_client renames every counter family it exports, so this one is untyped."""

    def __init__(
        self, name: str, documentation: str, labelnames: Iterable[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def inc(self, *labelvalues: str, amount: float = 1.0) -> None:
        if len(labelvalues) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labelvalues}")
        if amount < 0:
            raise ValueError("counters only go up")
        with self._lock:
            self._values[labelvalues] = self._values.get(labelvalues, 0.0) + amount

    def value(self, *labelvalues: str) -> float:
        with self._lock:
            return self._values.get(labelvalues, 0.0)

    def describe(self) -> Iterator[Metric]:
        # Nothing, so the registry reserves no names for this family: prometheus_client counts
        # ``karpenter_nodes_created`` as taken by v1.0's ``karpenter_nodes_created_total``, although
        # the two series names never collide (v0.29 and v1.0 both export theirs here).
        return iter(())

    def collect(self) -> Iterator[Metric]:
        family = Metric(self.name, self.documentation, "unknown")
        with self._lock:
            values = sorted(self._values.items())
        for labelvalues, value in values:
            family.add_sample(self.name, dict(zip(self.labelnames, labelvalues, strict=True)), value)
        yield family


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No ``*_created`` timestamp series next to every counter.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

        # Karpenter v0.29 (Machines, karpenter.sh/v1alpha5).
        self.machines_created = UnsuffixedCounter(
            "karpenter_machines_created",
            "Number of machines created in total. Labeled by reason the machine was created and the owning provisioner.",
            ["reason", "provisioner"],
            r,
        )
        self.machines_launched = UnsuffixedCounter(
            "karpenter_machines_launched",
            "Number of machines launched in total. Labeled by the owning provisioner.",
            ["provisioner"],
            r,
        )
        self.machines_registered = UnsuffixedCounter(
            "karpenter_machines_registered",
            "Number of machines registered in total. Labeled by the owning provisioner.",
            ["provisioner"],
            r,
        )
        self.machines_initialized = UnsuffixedCounter(
            "karpenter_machines_initialized",
            "Number of machines initialized in total. Labeled by the owning provisioner.",
            ["provisioner"],
            r,
        )
        self.machines_terminated = UnsuffixedCounter(
            "karpenter_machines_terminated",
            "Number of machines the controller deleted itself. Labeled by reason and the owning provisioner.",
            ["reason", "provisioner"],
            r,
        )
        self.machine_nodes_created = UnsuffixedCounter(
            "karpenter_nodes_created",
            "Number of nodes of Machines created in total. Labeled by owning provisioner.",
            ["provisioner"],
            r,
        )
        self.machine_nodes_terminated = UnsuffixedCounter(
            "karpenter_nodes_terminated",
            "Number of nodes of Machines terminated in total. Labeled by owning provisioner.",
            ["provisioner"],
            r,
        )

        # Karpenter v1.0 (NodeClaims, karpenter.sh/v1).
        self.nodeclaims_created = Counter(
            "karpenter_nodeclaims_created_total",
            "Number of nodeclaims created in total. Labeled by reason the nodeclaim was created and the owning nodepool.",
            ["reason", "nodepool", "capacity_type"],
            registry=r,
        )
        self.nodeclaims_terminated = Counter(
            "karpenter_nodeclaims_terminated_total",
            "Number of nodeclaims terminated in total. Labeled by the owning nodepool.",
            ["nodepool", "capacity_type"],
            registry=r,
        )
        self.nodeclaims_disrupted = Counter(
            "karpenter_nodeclaims_disrupted_total",
            "Number of nodeclaims the controller deleted itself. Labeled by reason and the owning nodepool.",
            ["reason", "nodepool", "capacity_type"],
            registry=r,
        )
        self.nodeclaim_nodes_created = Counter(
            "karpenter_nodes_created_total",
            "Number of nodes of NodeClaims created in total. Labeled by owning nodepool.",
            ["nodepool"],
            registry=r,
        )
        self.nodeclaim_nodes_terminated = Counter(
            "karpenter_nodes_terminated_total",
            "Number of nodes of NodeClaims terminated in total. Labeled by owning nodepool.",
            ["nodepool"],
            registry=r,
        )

        self.nodepool_allowed_disruptions = Gauge(
            "karpenter_nodepools_allowed_disruptions",
            "The number of nodes of a NodePool that may be disrupted now for a reason. Labeled by nodepool and reason.",
            ["nodepool", "reason"],
            registry=r,
        )

        # Karpenter's cloud provider decorator (same names and labels in v0.29 and v1.0).
        self.cloudprovider_duration = Histogram(
            "karpenter_cloudprovider_duration_seconds",
            "Duration of cloud provider method calls. Labeled by the controller, method name and provider.",
            ["controller", "method", "provider"],
            buckets=_KARPENTER_DURATION_BUCKETS,
            registry=r,
        )
        self.cloudprovider_errors = Counter(
            "karpenter_cloudprovider_errors_total",
            "Total number of errors returned from cloud provider calls.",
            ["controller", "method", "provider", "error"],
            registry=r,
        )

        # Ours.
        self.build_info = Gauge(
            "gpu_provisioner_build_info",
            "A metric with a constant '1' value labeled by the version of the controller.",
            ["version"],
            registry=r,
        )
        self.build_info.labels(__version__).set(1)
        self.launch_failures = Counter(
            "gpu_provisioner_launch_failures_total",
            "Launch failures by claim kind, error class and cloud error code.",
            ["kind", "error", "code"],
            registry=r,
        )
        self.time_to_ready = Histogram(
            "gpu_provisioner_claim_ready_duration_seconds",
            "Seconds from claim creation to Ready=True.",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.evictions = Counter(
            "gpu_provisioner_eviction_requests_total",
            "Eviction requests sent while draining, by HTTP status code.",
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
        self.cloud_degraded = Gauge(
            "gpu_provisioner_cloud_degraded",
            "1 while the cloud provider works without something optional (reason names it, e.g. a denied "
            "permission), else 0.",
            ["reason"],
            registry=r,
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

    # ------------------------------------------------------------------ claim lifecycle

    def claim_created(self, claim: Claim) -> None:
        pool = claim.labels.get(dialect_of(claim).nodepool_label, "")
        if dialect_of(claim) is MACHINE:
            self.machines_created.inc("provisioning", pool)
        else:
            self.nodeclaims_created.labels("provisioned", pool, _capacity_type(claim)).inc()

    def claim_phase(self, claim: Claim, phase: str) -> None:
        """A Machine reached ``launched``, ``registered`` or ``initialized`` (Karpenter v1.0 has no
        such counters for NodeClaims)."""
        if dialect_of(claim) is MACHINE:
            pool = claim.labels.get(MACHINE.nodepool_label, "")
            counters = {
                "launched": self.machines_launched,
                "registered": self.machines_registered,
                "initialized": self.machines_initialized,
            }
            counters[phase].inc(pool)

    def claim_disrupted(self, claim: Claim, event_reason: str) -> None:
        """The controller deleted the claim itself; ``event_reason`` is the reason of the Event that
        says why. Deletions Karpenter would not count (a Node deleted by hand) are not counted."""
        reason = DISRUPTION_REASONS.get(event_reason)
        if reason is None:
            return
        pool = claim.labels.get(dialect_of(claim).nodepool_label, "")
        if dialect_of(claim) is MACHINE:
            self.machines_terminated.inc(reason, pool)
        else:
            self.nodeclaims_disrupted.labels(reason, pool, _capacity_type(claim)).inc()

    def claim_terminated(self, claim: Claim) -> None:
        """The claim's finalizer came off (Karpenter v0.29 counts no such thing for Machines)."""
        if dialect_of(claim) is not MACHINE:
            pool = claim.labels.get(dialect_of(claim).nodepool_label, "")
            self.nodeclaims_terminated.labels(pool, _capacity_type(claim)).inc()

    def node_created(self, claim: Claim) -> None:
        pool = claim.labels.get(dialect_of(claim).nodepool_label, "")
        if dialect_of(claim) is MACHINE:
            self.machine_nodes_created.inc(pool)
        else:
            self.nodeclaim_nodes_created.labels(pool).inc()

    def node_terminated(self, claim: Claim) -> None:
        pool = claim.labels.get(dialect_of(claim).nodepool_label, "")
        if dialect_of(claim) is MACHINE:
            self.machine_nodes_terminated.inc(pool)
        else:
            self.nodeclaim_nodes_terminated.labels(pool).inc()

    # ------------------------------------------------------------------ cloud calls

    @staticmethod
    @contextlib.contextmanager
    def controller(name: str) -> Iterator[None]:
        """Name the controller (``nodeclaim.lifecycle``, ``machine.termination``, ...) whose cloud
        calls follow, for the ``controller`` label of Karpenter's cloud provider metrics."""
        token = _controller.set(name)
        try:
            yield
        finally:
            _controller.reset(token)

    async def timed_cloud_call(self, provider: str, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        gauge = self.cloud_inflight.labels(provider)
        controller = _controller.get()
        method = _METHODS.get(operation) or operation.title().replace("_", "")
        gauge.inc()
        start = time.monotonic()
        try:
            return await call()
        except CloudError as e:
            self.cloud_errors.labels(provider, operation, type(e).__name__, e.code or "").inc()
            error = next((label for kind, label in _ERROR_TYPES if isinstance(e, kind)), "")
            self.cloudprovider_errors.labels(controller, method, provider, error).inc()
            raise
        finally:
            gauge.dec()
            elapsed = time.monotonic() - start
            self.cloud_duration.labels(provider, operation).observe(elapsed)
            self.cloudprovider_duration.labels(controller, method, provider).observe(elapsed)


def _capacity_type(claim: Claim) -> str:
    return claim.labels.get(CAPACITY_TYPE_LABEL, "")
