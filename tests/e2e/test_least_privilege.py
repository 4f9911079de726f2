"""The controller process (``--cloud azure``) with an identity that may only touch the cluster's agent
pools, as Kaito's install guide sets it up (Contributor on the AKS cluster): the fake ARM answers
403 AuthorizationFailed to the Resource SKUs and compute usages reads.

Kaito's claims still become Ready; one Warning event per missing permission names it and the role
that grants it; ``/readyz`` stays 200 and shows the degraded state, as does the
``gpu_provisioner_cloud_degraded`` gauge. Granting the role clears it without a restart.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.arm.authorization import CLUSTER_SCOPE_ONLY, SKUS_READ, USAGES_READ
from fakes.kaito import kaito_machine, kaito_nodeclaim, random_claim_name
from tests.conftest import Cluster
from tests.e2e.fakearm import FakeArm
from tests.e2e.harness import (
    Controller,
    create,
    delete_and_wait,
    events_for,
    ready,
    wait_for,
)

pytestmark = pytest.mark.e2e

A100 = "Standard_NC24ads_A100_v4"
#: A denied SKU listing is asked again this often (the default is every 300 s).
SKU_CACHE = {"AZURE_SKU_CACHE_SECONDS": "2"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("least-privilege")


@pytest.fixture(scope="module")
def arm(cluster: Cluster, workdir: Path) -> Iterator[FakeArm]:
    config = {
        "denied_actions": list(CLUSTER_SCOPE_ONLY),
        "quota": {"eastus": {"standardNCADSA100v4Family": 480, "cores": 480}},
    }
    server = FakeArm(workdir, cluster.kubeconfig, config).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def controller(cluster: Cluster, workdir: Path, arm: FakeArm) -> Iterator[Controller]:
    ctl = Controller(cluster, workdir, cloud="azure", env={**arm.controller_env(), **SKU_CACHE}).start()
    yield ctl
    ctl.stop()


def _gauge(metrics: str, reason: str) -> float | None:
    m = re.search(rf'^gpu_provisioner_cloud_degraded\{{reason="{reason}"\}} (\S+)$', metrics, re.M)
    return float(m.group(1)) if m else None


def _naming(events: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "Warning" and action in e["message"]]


def test_kaito_claims_are_ready_with_cluster_scope_rights_only(
    cluster: Cluster, controller: Controller, arm: FakeArm
) -> None:
    claims = {random_claim_name(): "machine", random_claim_name(): "nodeclaim"}
    for name, kind in claims.items():
        make = kaito_machine if kind == "machine" else kaito_nodeclaim
        create(cluster, controller.label(make(name, instance_type=A100)))
    ready_claims = {
        name: wait_for(f"{kind} {name} Ready", lambda n=name, k=kind: ready(cluster, k, n), 60)
        for name, kind in claims.items()
    }
    pools = arm.pools()
    for name, claim in ready_claims.items():
        assert pools[name]["properties"]["vmSize"] == A100
        assert claim["status"]["capacity"]["nvidia.com/gpu"] == "1"
        assert arm.count("PUT", name) == 1
    assert arm.requests("GET", "/providers/Microsoft.Compute/skus$")[0]["status"] == 403

    # One Warning event per missing permission, on the first claim launched, none on the other.
    events = [e for name in claims for e in events_for(cluster, name)]
    for action, reason in ((SKUS_READ, "SkuReadDenied"), (USAGES_READ, "UsageReadDenied")):
        naming = _naming(events, action)
        assert len(naming) == 1, (action, naming)
        event = naming[0]
        assert event["reason"] == reason and event["count"] == 1
        assert event["involvedObject"]["name"] in claims
        assert "Reader on the subscription" in event["message"]
    assert not [e for e in events if "AuthorizationFailed" in e["reason"]]

    _, body = wait_for(
        "/readyz names the degraded state",
        lambda: (r := controller.get("/readyz"))[0] == 200 and SKUS_READ in r[1] and r,
        20,
    )
    assert body.startswith("ok (cloud: degraded: ") and USAGES_READ in body
    metrics = controller.get("/metrics")[1]
    assert _gauge(metrics, "SkuReadDenied") == 1.0 and _gauge(metrics, "UsageReadDenied") == 1.0

    log = controller.log()
    assert "Traceback" not in log
    warned = [line for line in log.splitlines() if SKUS_READ in line and "WARN" in line.upper()]
    assert len(warned) == 1, warned

    # The role is granted: the controller notices without a restart.
    arm.admin("POST", "settings", {"denied_actions": []})
    wait_for("/readyz without the degraded detail", lambda: controller.get("/readyz") == (200, "ok\n"), 30)
    metrics = controller.get("/metrics")[1]
    assert _gauge(metrics, "SkuReadDenied") == 0.0 and _gauge(metrics, "UsageReadDenied") == 0.0

    for name, kind in claims.items():
        delete_and_wait(cluster, kind, name)
    wait_for("every pool gone", lambda: not set(arm.pools()) & set(claims), 60)
