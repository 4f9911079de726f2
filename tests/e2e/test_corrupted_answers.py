"""The controller process (``--cloud azure``) against a fake ARM that corrupts a fifth of its answers
in all fourteen ways of ``fakes.arm.corruption``: every claim still becomes Ready with exactly one
pool, no traceback is logged, and deleting the claims leaves no pool and no Node. A 400 without a
recognised code is retried (a ``LaunchFailed`` warning each time), never final.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.arm.corruption import KINDS
from fakes.kaito import kaito_machine, kaito_nodeclaim, random_claim_name
from tests.conftest import Cluster
from tests.e2e.fakearm import FakeArm
from tests.e2e.harness import (
    Controller,
    create,
    delete_and_wait,
    events_for,
    nodes_of_pool,
    ready,
    wait_for,
)

pytestmark = pytest.mark.e2e

A100 = "Standard_NC24ads_A100_v4"
CLAIM_UID_TAG = "gpu-provisioner.sh_claim-uid"
CORRUPT_EVERY_KIND = {"action": "corrupt", "path": "^/subscriptions/", "ratio": 0.2, "seed": 15}
#: Work-queue retries stay short, so a claim unlucky several times in a row is not left waiting.
RETRIES = {"RECONCILE_RETRY_MAX_SECONDS": "4"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corrupted-answers")


@pytest.fixture(scope="module")
def arm(cluster: Cluster, workdir: Path) -> Iterator[FakeArm]:
    quota = {"eastus": {"standardNCADSA100v4Family": 2400, "cores": 2400}}
    server = FakeArm(workdir, cluster.kubeconfig, {"quota": quota}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def controller(cluster: Cluster, workdir: Path, arm: FakeArm) -> Iterator[Controller]:
    ctl = Controller(cluster, workdir, cloud="azure", env={**arm.controller_env(), **RETRIES}).start()
    yield ctl
    ctl.stop()


def test_a_fifth_of_answers_corrupted_every_claim_ready_nothing_left(
    cluster: Cluster, controller: Controller, arm: FakeArm
) -> None:
    rule = arm.add_fault(CORRUPT_EVERY_KIND)
    try:
        claims = {random_claim_name(): kind for kind in ("machine", "nodeclaim") * 3}
        for name, kind in claims.items():
            make = kaito_machine if kind == "machine" else kaito_nodeclaim
            create(cluster, controller.label(make(name, instance_type=A100)))
        ready_claims = {
            name: wait_for(f"{kind} {name} Ready", lambda n=name, k=kind: ready(cluster, k, n), 90)
            for name, kind in claims.items()
        }
        pools = arm.pools()
        assert set(pools) == set(claims), "exactly one pool per claim"
        for name, claim in ready_claims.items():
            assert pools[name]["properties"]["tags"][CLAIM_UID_TAG] == claim["metadata"]["uid"]
            assert [n["metadata"]["name"] for n in nodes_of_pool(cluster, name)] == [
                claim["status"]["nodeName"]
            ]

        for name, kind in claims.items():
            delete_and_wait(cluster, kind, name, timeout=60)
        wait_for("every pool gone", lambda: not set(arm.pools()) & set(claims), 60)
        for name in claims:
            assert nodes_of_pool(cluster, name) == []

        applied = wait_for(
            "every kind of corruption applied",
            lambda: (kinds := arm.fault(rule)["kinds_applied"]).keys() == set(KINDS) and kinds,
            60,
        )
        assert sum(applied.values()) >= len(KINDS)
    finally:
        arm.remove_fault(rule, missing_ok=True)
    assert controller.proc is not None and controller.proc.poll() is None
    log = controller.log()
    assert "Traceback" not in log
    assert "MalformedResponse" in log


def test_an_unrecognised_bad_request_is_retried_with_a_warning(
    cluster: Cluster, controller: Controller, arm: FakeArm
) -> None:
    name = random_claim_name()
    rule = arm.add_fault(
        {
            "action": "error",
            "method": "PUT",
            "path": f"/agentPools/{name}$",
            "status": 400,
            "code": "BadRequest",
            "message": "The request could not be processed right now.",
            "count": 2,
        }
    )
    try:
        create(cluster, controller.label(kaito_nodeclaim(name, instance_type=A100)))
        wait_for("nodeclaim Ready", lambda: ready(cluster, "nodeclaim", name), 60)
        warnings = [
            e for e in events_for(cluster, name) if e["reason"] == "LaunchFailed" and e["type"] == "Warning"
        ]
        assert warnings and "BadRequest" in warnings[0]["message"]
        assert "could not be processed right now" in warnings[0]["message"]
        assert arm.count("PUT", name) == 3  # two refused, the third created the pool
        delete_and_wait(cluster, "nodeclaim", name)
        arm.wait_pool_gone(name)
    finally:
        arm.remove_fault(rule, missing_ok=True)
    assert "Traceback" not in controller.log()
