"""Operator runtime on the real API server: leader election, /metrics, /readyz, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.kaito import kaito_machine, random_claim_name
from tests.conftest import Cluster
from tests.e2e.fakearm import FakeArm
from tests.e2e.harness import (
    REPO,
    Controller,
    create,
    delete_and_wait,
    get_json,
    ready,
    wait_for,
)

pytestmark = pytest.mark.e2e


def _metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total


def _lease(cluster: Cluster, name: str) -> dict[str, Any] | None:
    return get_json(cluster, "lease", name, "-n", "default")


def test_two_replicas_one_leader_and_takeover_after_kill(cluster: Cluster, tmp_path: Path) -> None:
    first = Controller(cluster, tmp_path).start()
    second = Controller(cluster, tmp_path, run_id=first.run_id).start(leader=False)
    try:
        lease = wait_for("lease held", lambda: _lease(cluster, f"gpu-provisioner-{first.run_id}"))
        holder = lease["spec"]["holderIdentity"]
        assert holder, lease
        assert "controller started" not in second.log(), "a standby must not act"
        assert first.get("/readyz")[0] == 200 and second.get("/readyz")[0] == 200
        assert _metric(first.get("/metrics")[1], "gpu_provisioner_leader") == 1
        assert _metric(second.get("/metrics")[1], "gpu_provisioner_leader") == 0

        name = random_claim_name()
        create(cluster, first.label(kaito_machine(name)))
        wait_for("machine Ready", lambda: ready(cluster, "machine", name))
        assert f"claim={name}" not in second.log(), "the standby touched a claim"

        first.kill()  # no chance to release the lease: the standby must wait it out
        wait_for("standby takes over", lambda: "controller started" in second.log(), 30)
        new_holder = (_lease(cluster, f"gpu-provisioner-{first.run_id}") or {})["spec"]["holderIdentity"]
        assert new_holder and new_holder != holder

        # The new leader finishes what the old one started: deleting the claim works end to end.
        other = random_claim_name()
        create(cluster, second.label(kaito_machine(other)))
        wait_for("second machine Ready under the new leader", lambda: ready(cluster, "machine", other))
        delete_and_wait(cluster, "machine", name)
        delete_and_wait(cluster, "machine", other)
    finally:
        first.stop()
        second.stop()


def test_sigterm_releases_the_lease_for_an_immediate_takeover(cluster: Cluster, tmp_path: Path) -> None:
    first = Controller(
        cluster, tmp_path, env={"LEADER_ELECTION_LEASE_SECONDS": "60", "LEADER_ELECTION_RENEW_SECONDS": "30"}
    ).start()
    second = Controller(cluster, tmp_path, run_id=first.run_id, env=first.env).start(leader=False)
    try:
        first.stop()  # SIGTERM: graceful, releases the lease
        assert first.proc is not None and first.proc.returncode == 0, first.log()[-2000:]
        # Well within the 60 s lease: only a released lease allows this.
        wait_for("standby takes over at once", lambda: "controller started" in second.log(), 20)
    finally:
        first.stop()
        second.stop()


def test_metrics_after_a_flow(cluster: Cluster, tmp_path: Path) -> None:
    ctl = Controller(cluster, tmp_path).start()
    try:
        name = random_claim_name()
        create(cluster, ctl.label(kaito_machine(name)))
        wait_for("machine Ready", lambda: ready(cluster, "machine", name))
        delete_and_wait(cluster, "machine", name)
        status, text = ctl.get("/metrics")
        assert status == 200
        # Karpenter v0.29's Machine counters, under their exact names (no _total suffix). A Machine
        # its owner deletes is not one the controller terminated: karpenter_machines_terminated
        # counts only the controller's own deletions, as in Karpenter.
        for metric in (
            "karpenter_machines_launched",
            "karpenter_machines_registered",
            "karpenter_machines_initialized",
            "karpenter_nodes_created",
            "karpenter_nodes_terminated",
        ):
            assert _metric(text, metric, provisioner="default") >= 1, metric
        assert _metric(text, "karpenter_machines_created", provisioner="default", reason="provisioning") >= 1
        assert "karpenter_machines_created_total" not in text
        assert _metric(text, "karpenter_machines_terminated") == 0
        assert (
            _metric(
                text,
                "karpenter_cloudprovider_duration_seconds_count",
                controller="machine.lifecycle",
                method="Create",
                provider="fake",
            )
            >= 1
        )
        assert _metric(text, "gpu_provisioner_cloud_request_duration_seconds_count", operation="create") >= 1
        assert 'gpu_provisioner_build_info{version="' in text
        assert _metric(text, "process_resident_memory_bytes") > 0
        assert _metric(text, "gpu_provisioner_claim_ready_duration_seconds_count", kind="machine") == 1
        assert "gpu_provisioner_cloud_inflight_operations" in text
        assert "gpu_provisioner_gc_deletions_total" in text or "gpu_provisioner_gc_deletions" in text
    finally:
        ctl.stop()


@pytest.fixture
def arm(cluster: Cluster, tmp_path: Path) -> Iterator[FakeArm]:
    server = FakeArm(tmp_path / "arm", cluster.kubeconfig).start()
    yield server
    server.stop()


def test_readyz_fails_with_broken_credentials_and_recovers(
    cluster: Cluster, tmp_path: Path, arm: FakeArm
) -> None:
    env = arm.controller_env()
    ctl = Controller(cluster, tmp_path, cloud="azure", env=env).start()
    try:
        wait_for("ready", lambda: ctl.get("/readyz")[0] == 200, 30)
        # The identity loses its role assignment: ARM refuses every call with AuthorizationFailed.
        fault = arm.admin(
            "POST",
            "faults",
            {
                "action": "error",
                "method": "GET",
                "path": "/agentPools",
                "status": 403,
                "code": "AuthorizationFailed",
                "message": "The client does not have authorization to perform action "
                "'Microsoft.ContainerService/managedClusters/agentPools/read'.",
            },
        )
        _status, body = wait_for("not ready", lambda: (r := ctl.get("/readyz"))[0] == 503 and r, 60)
        assert "cloud" in body and "AuthorizationFailed" in body, body
        assert ctl.proc is not None and ctl.proc.poll() is None, (
            "a credential failure must not crash the controller"
        )
        arm.admin("DELETE", f"faults/{fault['faults'][0]['id']}")
        wait_for("ready again", lambda: ctl.get("/readyz")[0] == 200, 60)
    finally:
        ctl.stop()


def test_bad_settings_fail_fast_with_the_setting_named(cluster: Cluster) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioner.cli",
            "controller",
            "--cloud",
            "fake",
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "REGISTRATION_TIMEOUT_SECONDS": "soon", "WORKERS": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "REGISTRATION_TIMEOUT_SECONDS" in proc.stderr and "WORKERS" in proc.stderr


def test_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "provisioner.cli", "version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("gpu-provisioner ")
    helptext = subprocess.run(
        [sys.executable, "-m", "provisioner.cli", "controller", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--registration-timeout",
        "--leader-elect",
        "--metrics-port",
        "--gc-orphan-grace",
        "--log-format",
    ):
        assert flag in helptext, flag
    json.dumps(helptext)  # printable
