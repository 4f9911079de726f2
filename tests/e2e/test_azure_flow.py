"""The production code path end to end: ``--cloud azure`` through the real Azure SDK to the fake ARM
server (whose node simulator joins Nodes to the real API server), with the controller as a process.

The fake's request log is the witness for cloud-call economy and for "no pool leaked".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.kaito import kaito_machine, kaito_nodeclaim, random_claim_name
from tests.conftest import Cluster
from tests.e2e.fakearm import FakeArm, our_tags
from tests.e2e.harness import (
    Controller,
    condition_status,
    conditions,
    create,
    delete_and_wait,
    event_reasons,
    events_for,
    get_json,
    nodes_of_pool,
    ready,
    wait_for,
)

pytestmark = pytest.mark.e2e

KAITO_TEXT = "all requested instance types were unavailable during launch"
A100 = "Standard_NC24ads_A100_v4"
A100_FAMILY = "standardNCADSA100v4Family"
T4 = "Standard_NC4as_T4_v3"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("azure-flow")


@pytest.fixture(scope="module")
def arm(cluster: Cluster, workdir: Path) -> Iterator[FakeArm]:
    server = FakeArm(workdir, cluster.kubeconfig).start()
    yield server
    server.stop()


def _controller(cluster: Cluster, workdir: Path, arm: FakeArm, **env: str) -> Controller:
    return Controller(cluster, workdir, cloud="azure", env={**arm.controller_env(), **env})


@pytest.fixture(scope="module")
def controller(cluster: Cluster, workdir: Path, arm: FakeArm) -> Iterator[Controller]:
    ctl = _controller(cluster, workdir, arm).start()
    yield ctl
    ctl.stop()


def test_kaito_machine_flow_costs_one_put_and_one_delete(
    cluster: Cluster, controller: Controller, arm: FakeArm
) -> None:
    name = random_claim_name()
    create(cluster, controller.label(kaito_machine(name, instance_type=A100)))
    machine = wait_for("machine Ready", lambda: ready(cluster, "machine", name))
    node = get_json(cluster, "node", machine["status"]["nodeName"])
    assert node is not None
    assert node["metadata"]["labels"]["kubernetes.azure.com/agentpool"] == name
    assert machine["status"]["capacity"]["nvidia.com/gpu"] == "1"

    pool = arm.pools()[name]
    props = pool.get("properties", pool)
    assert props["vmSize"] == A100
    assert props["count"] == 1
    assert props["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert props["osDiskSizeGB"] == 120
    assert props["nodeLabels"]["kaito.sh/workspace"] == machine["metadata"]["labels"]["kaito.sh/workspace"]

    # The controller's listing says the pool cannot exist: no GET before the (create-only) PUT.
    first = arm.requests(path=f"/agentPools/{name}$")[0]
    assert (first["method"], first["status"]) == ("PUT", 201), first

    delete_and_wait(cluster, "machine", name)
    arm.wait_pool_gone(name)
    assert arm.count("PUT", name) == 1
    assert arm.count("DELETE", name) == 1


def test_nodeclaim_flow(cluster: Cluster, controller: Controller, arm: FakeArm) -> None:
    name = random_claim_name()
    create(cluster, controller.label(kaito_nodeclaim(name, instance_type=A100)))
    claim = wait_for("nodeclaim Ready", lambda: ready(cluster, "nodeclaim", name))
    assert claim["status"]["imageID"]
    assert arm.pools()[name]["properties"]["nodeLabels"]["karpenter.sh/nodepool"] == "kaito"
    delete_and_wait(cluster, "nodeclaim", name)
    arm.wait_pool_gone(name)
    assert arm.count("PUT", name) == 1


def test_quota_short_waits_without_a_put_and_launches_when_raised(
    cluster: Cluster, controller: Controller, arm: FakeArm
) -> None:
    arm.set_quota(A100_FAMILY, 0)
    name = random_claim_name()
    try:
        create(cluster, controller.label(kaito_nodeclaim(name, instance_type=A100)))
        claim = wait_for(
            "Launched False",
            lambda: (
                (c := get_json(cluster, "nodeclaim", name))
                and condition_status(c, "Launched") == "False"
                and c
            ),
        )
        launched = conditions(claim)["Launched"]
        assert launched["message"].startswith(KAITO_TEXT)
        assert A100_FAMILY in launched["message"] and "24" in launched["message"], launched["message"]
        wait_for("a retry", lambda: len(arm.requests("GET", "/usages")) >= 2, 30)
        assert arm.count("PUT", name) == 0, "a doomed create must not cost an ARM write"
        assert [e["reason"] for e in events_for(cluster, name)].count("InsufficientCapacityError") == 1
    finally:
        arm.set_quota(A100_FAMILY, 96)
    wait_for("nodeclaim Ready after quota raise", lambda: ready(cluster, "nodeclaim", name), 90)
    assert arm.count("PUT", name) == 1
    delete_and_wait(cluster, "nodeclaim", name)


def test_controller_killed_mid_create_adopts_the_pool(
    cluster: Cluster, workdir: Path, controller: Controller, arm: FakeArm
) -> None:
    # This test owns the module's controller from here on: it kills it and starts its replacement.
    arm.set_latency(create=4.0)
    name = random_claim_name()
    try:
        create(cluster, controller.label(kaito_machine(name, instance_type=A100)))
        wait_for("PUT sent", lambda: arm.count("PUT", name) == 1, 30)
        controller.kill()
        replacement = Controller(
            cluster, workdir, cloud="azure", env=controller.env, run_id=controller.run_id
        )
        replacement.start()
        try:
            wait_for("machine Ready after restart", lambda: ready(cluster, "machine", name), 90)
            assert arm.count("PUT", name) == 1, "the restarted controller must adopt, not re-create"
            delete_and_wait(cluster, "machine", name)
            arm.wait_pool_gone(name)
        finally:
            replacement.stop()
    finally:
        arm.set_latency(create=1.0)


def test_deleting_a_claim_whose_pool_is_creating_leaves_no_pool(
    cluster: Cluster, workdir: Path, arm: FakeArm
) -> None:
    ctl = _controller(cluster, workdir, arm).start()
    arm.set_latency(create=5.0)
    name = random_claim_name()
    try:
        create(cluster, ctl.label(kaito_machine(name, instance_type=T4)))
        wait_for("PUT sent", lambda: arm.count("PUT", name) == 1, 30)
        assert arm.pools()[name]["properties"]["provisioningState"] == "Creating"
        cluster.kubectl("delete", "machine", name, "--wait=false")
        wait_for("machine gone", lambda: get_json(cluster, "machine", name) is None, 90)
        assert name not in arm.pools(), "the claim went away before its pool did"
        assert arm.count("PUT", name) == 1
    finally:
        arm.set_latency(create=1.0)
        ctl.stop()


def test_orphaned_pool_is_collected_and_vanished_pool_deletes_its_claim(
    cluster: Cluster, workdir: Path, arm: FakeArm
) -> None:
    ctl = _controller(cluster, workdir, arm).start()
    try:
        orphan = random_claim_name()
        foreign = random_claim_name()
        arm.put_pool(orphan, T4, our_tags(orphan))
        arm.put_pool(foreign, T4, {"team": "someone-else"})
        arm.wait_pool_gone(orphan, 60)
        assert arm.count("DELETE", orphan) == 1
        assert foreign in arm.pools(), "a pool we did not create must never be touched"

        name = random_claim_name()
        create(cluster, ctl.label(kaito_machine(name, instance_type=T4)))
        wait_for("machine Ready", lambda: ready(cluster, "machine", name))
        arm.delete_pool(name)
        wait_for(
            "machine deleted after its pool vanished", lambda: get_json(cluster, "machine", name) is None, 60
        )
        assert "InstanceNotFound" in ctl.log() or "NodeDeleted" in event_reasons(cluster, name)
        arm.delete_pool(foreign)
    finally:
        ctl.stop()


def test_delete_on_insufficient_capacity_is_a_setting(cluster: Cluster, workdir: Path, arm: FakeArm) -> None:
    ctl = _controller(cluster, workdir, arm, DELETE_ON_INSUFFICIENT_CAPACITY="true").start()
    arm.set_quota(A100_FAMILY, 0)
    try:
        name = random_claim_name()
        create(cluster, ctl.label(kaito_machine(name, instance_type=A100)))
        wait_for(
            "machine deleted on insufficient capacity", lambda: get_json(cluster, "machine", name) is None, 60
        )
        assert "InsufficientCapacityError" in event_reasons(cluster, name)
        assert arm.count("PUT", name) == 0
    finally:
        arm.set_quota(A100_FAMILY, 96)
        ctl.stop()


def test_unknown_vm_size_is_invalid_and_costs_no_call_of_its_own(
    cluster: Cluster, workdir: Path, arm: FakeArm
) -> None:
    ctl = _controller(cluster, workdir, arm).start()
    try:
        name = random_claim_name()
        create(cluster, ctl.label(kaito_machine(name, instance_type="Standard_ND999_vNope")))
        machine = wait_for(
            "MachineLaunched False",
            lambda: (
                (m := get_json(cluster, "machine", name))
                and condition_status(m, "MachineLaunched") == "False"
                and m
            ),
        )
        launched = conditions(machine)["MachineLaunched"]
        assert launched["reason"] == "InvalidSpec:UnknownVMSize", launched
        assert "Standard_ND999_vNope" in launched["message"]
        assert "LaunchFailed" in event_reasons(cluster, name)
        assert arm.requests(path=f"/agentPools/{name}") == [], "an invalid claim must not reach ARM"
        delete_and_wait(cluster, "machine", name)
    finally:
        ctl.stop()


def test_deleting_the_node_takes_claim_and_pool_with_it(
    cluster: Cluster, workdir: Path, arm: FakeArm
) -> None:
    ctl = _controller(cluster, workdir, arm).start()
    try:
        name = random_claim_name()
        create(cluster, ctl.label(kaito_nodeclaim(name, instance_type=T4)))
        claim = wait_for("nodeclaim Ready", lambda: ready(cluster, "nodeclaim", name))
        cluster.kubectl("delete", "node", claim["status"]["nodeName"], "--wait=false")
        wait_for("nodeclaim gone", lambda: get_json(cluster, "nodeclaim", name) is None, 60)
        arm.wait_pool_gone(name)
        assert arm.count("DELETE", name) == 1
    finally:
        ctl.stop()


def test_a_claim_named_like_a_foreign_pool_never_touches_it(
    cluster: Cluster, workdir: Path, arm: FakeArm
) -> None:
    """The claim cannot launch (the name is taken), and deleting it must not drain or delete the
    other pool's node, nor the pool."""
    ctl = _controller(cluster, workdir, arm).start()
    name = random_claim_name()
    arm.put_pool(name, T4, {"team": "someone-else"})
    try:
        node = wait_for("the foreign pool's node", lambda: (ns := nodes_of_pool(cluster, name)) and ns[0])
        create(cluster, ctl.label(kaito_machine(name, instance_type=T4)))
        machine = wait_for(
            "MachineLaunched False",
            lambda: (
                (m := get_json(cluster, "machine", name))
                and condition_status(m, "MachineLaunched") == "False"
                and m
            ),
        )
        assert "PoolNameConflict" in conditions(machine)["MachineLaunched"]["reason"]
        # The controller's first listing (at its first create) has the pool: no PUT at all.
        assert controller_puts(arm, name) == []
        assert arm.pools()[name]["properties"]["tags"] == {"team": "someone-else"}
        delete_and_wait(cluster, "machine", name)
        after = get_json(cluster, "node", node["metadata"]["name"])
        assert after is not None and not after["metadata"].get("deletionTimestamp")
        assert not after["spec"].get("unschedulable"), "a node we do not own was cordoned"
        assert name in arm.pools() and arm.count("DELETE", name) == 0
    finally:
        arm.delete_pool(name)
        ctl.stop()


def controller_puts(arm: FakeArm, pool: str) -> list[int]:
    """The status of each PUT the controller (not the test) sent for ``pool``."""
    puts = arm.requests("PUT", f"/agentPools/{pool}$")
    return [r["status"] for r in puts if "gpu-provisioner" in (r.get("user_agent") or "")]


def test_a_pool_made_after_the_listing_is_not_overwritten_by_a_create(
    cluster: Cluster, workdir: Path, arm: FakeArm
) -> None:
    """Creates send no GET when the controller's listing says the pool cannot exist; a pool made by
    someone else after that listing is still safe: the create-only PUT is refused (412)."""
    ctl = _controller(cluster, workdir, arm).start()
    first, name = random_claim_name(), random_claim_name()
    try:
        create(cluster, ctl.label(kaito_machine(first, instance_type=A100)))
        wait_for("machine Ready", lambda: ready(cluster, "machine", first))  # the controller has listed
        assert next(r["method"] for r in arm.requests(path=f"/agentPools/{first}$")) == "PUT"
        arm.put_pool(name, T4, {"team": "someone-else"})
        create(cluster, ctl.label(kaito_machine(name, instance_type=T4)))
        machine = wait_for(
            "MachineLaunched False",
            lambda: (
                (m := get_json(cluster, "machine", name))
                and condition_status(m, "MachineLaunched") == "False"
                and m
            ),
        )
        assert "PoolNameConflict" in conditions(machine)["MachineLaunched"]["reason"]
        assert controller_puts(arm, name) == [412]
        assert arm.pools()[name]["properties"]["tags"] == {"team": "someone-else"}
        delete_and_wait(cluster, "machine", name)
        delete_and_wait(cluster, "machine", first)
        assert name in arm.pools() and arm.count("DELETE", name) == 0
    finally:
        arm.delete_pool(name)
        ctl.stop()
