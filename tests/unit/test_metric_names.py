"""/metrics carries Karpenter's metric names and label names exactly, next to our own.

The expected lists are facts read from Karpenter core's sources (kubernetes-sigs/karpenter):
v0.29.2 for Machines (pkg/metrics/metrics.go, pkg/cloudprovider/metrics/cloudprovider.go) and
v1.0.9 for NodeClaims (the same two files). Karpenter's metrics about what this controller does not
do (scheduling pods, consolidation, pod and NodePool state) are not exported; of disruption, the
budgets' allowance (``karpenter_nodepools_allowed_disruptions``, pkg/controllers/disruption/metrics.go)
is.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from fakes.kaito import kaito_machine, kaito_nodeclaim
from provisioner import __version__
from provisioner.claims.dialects import MACHINE, NODECLAIM
from provisioner.cloud.errors import InsufficientCapacity
from provisioner.metrics import Metrics
from tests.unit.exposition import exposed

# Series name -> label names. Counters of v0.29 have no _total suffix (client_golang adds none).
KARPENTER_V0_29 = {
    "karpenter_machines_created": {"reason", "provisioner"},
    "karpenter_machines_terminated": {"reason", "provisioner"},
    "karpenter_machines_launched": {"provisioner"},
    "karpenter_machines_registered": {"provisioner"},
    "karpenter_machines_initialized": {"provisioner"},
    "karpenter_nodes_created": {"provisioner"},
    "karpenter_nodes_terminated": {"provisioner"},
    "karpenter_cloudprovider_duration_seconds_bucket": {"controller", "method", "provider", "le"},
    "karpenter_cloudprovider_duration_seconds_sum": {"controller", "method", "provider"},
    "karpenter_cloudprovider_duration_seconds_count": {"controller", "method", "provider"},
    "karpenter_cloudprovider_errors_total": {"controller", "method", "provider", "error"},
}
KARPENTER_V1_0 = {
    "karpenter_nodeclaims_created_total": {"reason", "nodepool", "capacity_type"},
    "karpenter_nodeclaims_terminated_total": {"nodepool", "capacity_type"},
    "karpenter_nodeclaims_disrupted_total": {"reason", "nodepool", "capacity_type"},
    "karpenter_nodes_created_total": {"nodepool"},
    "karpenter_nodes_terminated_total": {"nodepool"},
    "karpenter_nodepools_allowed_disruptions": {"nodepool", "reason"},
    "karpenter_cloudprovider_duration_seconds_bucket": {"controller", "method", "provider", "le"},
    "karpenter_cloudprovider_duration_seconds_sum": {"controller", "method", "provider"},
    "karpenter_cloudprovider_duration_seconds_count": {"controller", "method", "provider"},
    "karpenter_cloudprovider_errors_total": {"controller", "method", "provider", "error"},
}
# prometheus_client's process and platform collectors.
PROCESS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
    "python_info",
}


def test_karpenter_names_and_labels_are_exactly_karpenters() -> None:
    series = exposed()
    ours = {name: set(s.labels) for name, s in series.items() if name.startswith("karpenter_")}
    expected = {**KARPENTER_V0_29, **KARPENTER_V1_0}
    assert ours == expected


def test_every_other_metric_is_ours_or_the_process() -> None:
    others = {n for n in exposed() if not n.startswith(("karpenter_", "gpu_provisioner_", "python_gc_"))}
    assert others == PROCESS


def test_v0_29_counters_are_exported_without_a_total_suffix() -> None:
    metrics = Metrics()
    machine = MACHINE.parse({**kaito_machine("ws0123456ab"), "status": {}})
    metrics.claim_created(machine)
    text = generate_latest(metrics.registry).decode()
    assert 'karpenter_machines_created{provisioner="default",reason="provisioning"} 1.0' in text
    assert "karpenter_machines_created_total" not in text


def test_build_info_carries_the_version() -> None:
    text = generate_latest(Metrics().registry).decode()
    assert f'gpu_provisioner_build_info{{version="{__version__}"}} 1.0' in text


def test_claim_events_count_as_karpenter_counts_them() -> None:
    metrics = Metrics()
    machine = MACHINE.parse({**kaito_machine("ws0123456ab"), "status": {}})
    nodeclaim = NODECLAIM.parse({**kaito_nodeclaim("ws0123456cd"), "status": {}})
    for claim in (machine, nodeclaim):
        metrics.claim_created(claim)
        metrics.claim_phase(claim, "launched")
        metrics.claim_disrupted(claim, "RegistrationTimeout")
        metrics.claim_disrupted(claim, "NodeDeleted")  # deleted by hand: Karpenter counts nothing
        metrics.claim_terminated(claim)
    sample = metrics.registry.get_sample_value
    assert metrics.machines_created.value("provisioning", "default") == 1
    assert metrics.machines_launched.value("default") == 1
    assert metrics.machines_terminated.value("liveness", "default") == 1
    nodepool = {"nodepool": "kaito", "capacity_type": ""}
    assert sample("karpenter_nodeclaims_created_total", {"reason": "provisioned", **nodepool}) == 1
    assert sample("karpenter_nodeclaims_disrupted_total", {"reason": "liveness", **nodepool}) == 1
    assert sample("karpenter_nodeclaims_terminated_total", nodepool) == 1
    text = generate_latest(metrics.registry).decode()
    assert "NodeDeleted" not in text and 'reason="node_deleted"' not in text


def test_cloud_calls_carry_karpenters_controller_method_and_error_labels() -> None:
    metrics = Metrics()

    async def create() -> None:
        raise InsufficientCapacity("no Standard_NC24ads_A100_v4 left", "SkuNotAvailable")

    async def run() -> None:
        with Metrics.controller("nodeclaim.lifecycle"), pytest.raises(InsufficientCapacity):
            await metrics.timed_cloud_call("azure", "create", create)

    asyncio.run(run())
    sample = metrics.registry.get_sample_value
    labels = {"controller": "nodeclaim.lifecycle", "method": "Create", "provider": "azure"}
    assert (
        sample("karpenter_cloudprovider_errors_total", {**labels, "error": "InsufficientCapacityError"}) == 1
    )
    assert sample("karpenter_cloudprovider_duration_seconds_count", labels) == 1
    # Our own error counter keeps the cloud's code.
    assert (
        sample(
            "gpu_provisioner_cloud_errors_total",
            {
                "provider": "azure",
                "operation": "create",
                "error": "InsufficientCapacity",
                "code": "SkuNotAvailable",
            },
        )
        == 1
    )
