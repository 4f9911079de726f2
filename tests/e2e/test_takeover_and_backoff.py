"""The controller process against the fake ARM (``--cloud azure``) and the real API server: taking
over from the Go gpu-provisioner, throttled claims that must not slow the others down, and Nodes
whose claim disappeared behind the controller's back."""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.kaito import kaito_machine, kaito_nodeclaim, random_claim_name
from tests.conftest import Cluster
from tests.e2e.fakearm import FakeArm
from tests.e2e.harness import (
    Controller,
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

A100 = "Standard_NC24ads_A100_v4"
A100_FAMILY = "standardNCADSA100v4Family"
TERMINATION = "karpenter.sh/termination"
OUR_TAG = "gpu-provisioner.sh_managed-by"
THROTTLE_WINDOW = 120.0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("takeover")


@pytest.fixture(scope="module")
def arm(cluster: Cluster, workdir: Path) -> Iterator[FakeArm]:
    server = FakeArm(workdir, cluster.kubeconfig).start()
    yield server
    server.stop()


def _patch(cluster: Cluster, *args: str, patch: dict[str, Any]) -> None:
    cluster.kubectl("patch", *args, "--type=merge", "-p", json.dumps(patch))


# ------------------------------------------------------------------------------- takeover


def _as_the_go_provisioner_left_it(
    cluster: Cluster, arm: FakeArm, ctl: Controller, body: dict[str, Any]
) -> str:
    """A live workspace node made by the Go gpu-provisioner: the pool (untagged, node labels from the
    claim), its Node (owned by the claim, with karpenter.sh/termination) and the claim, Ready."""
    kind, name = body["kind"].lower(), body["metadata"]["name"]
    ctl.label(body)
    labels = dict(body["metadata"]["labels"])
    arm.put_pool(
        name,
        A100,
        tags={},
        node_labels={**labels, "kaito.sh/machine-type": "gpu"},
        node_taints=["sku=gpu:NoSchedule"],
    )
    node = wait_for(f"node of pool {name}", lambda: (nodes := nodes_of_pool(cluster, name)) and nodes[0], 60)
    node_name = node["metadata"]["name"]
    body["metadata"]["finalizers"] = [TERMINATION]
    create(cluster, body)
    claim = get_json(cluster, kind, name)
    assert claim is not None
    condition_types = (
        ("MachineLaunched", "MachineRegistered", "MachineInitialized", "Ready")
        if kind == "machine"
        else ("Launched", "Registered", "Initialized", "Ready")
    )
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conditions = [
        {"type": t, "status": "True", "reason": t, "message": "", "lastTransitionTime": now}
        | ({"observedGeneration": 1} if kind == "nodeclaim" else {})
        for t in condition_types
    ]
    status = {"nodeName": node_name, "providerID": node["spec"]["providerID"], "conditions": conditions}
    _patch(cluster, kind, name, "--subresource=status", patch={"status": status})
    owner = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": name,
        "uid": claim["metadata"]["uid"],
    }
    node_patch = {
        "metadata": {
            "finalizers": [TERMINATION],
            "ownerReferences": [{**owner, "blockOwnerDeletion": True}],
            "labels": {"karpenter.sh/registered": "true", "karpenter.sh/initialized": "true"},
        }
    }
    _patch(cluster, "node", node_name, patch=node_patch)
    return node_name


def test_switching_from_the_go_provisioner_adopts_every_pool_and_deletes_each_with_its_claim(
    cluster: Cluster, arm: FakeArm, workdir: Path
) -> None:
    ctl = Controller(cluster, workdir, cloud="azure", env=arm.controller_env())
    workspaces = [
        kaito_machine(random_claim_name(), instance_type=A100),
        kaito_nodeclaim(random_claim_name(), instance_type=A100),
    ]
    nodes = {w["metadata"]["name"]: _as_the_go_provisioner_left_it(cluster, arm, ctl, w) for w in workspaces}
    assert all(OUR_TAG not in (arm.pools()[n]["properties"].get("tags") or {}) for n in nodes)
    ctl.start()
    try:
        for w in workspaces:
            kind, name = w["kind"].lower(), w["metadata"]["name"]
            wait_for(f"{name} adopted", lambda n=name: "Adopted" in event_reasons(cluster, n), 60)
            tags = arm.pools()[name]["properties"]["tags"]
            assert tags[OUR_TAG] == "gpu-provisioner"
            assert tags["gpu-provisioner.sh_claim-uid"] == get_json(cluster, kind, name)["metadata"]["uid"]  # type: ignore[index]
            assert ready(cluster, kind, name), "the workspace stays Ready through the takeover"
            assert arm.count("PUT", name) == 2  # the predecessor's create, and our tags (If-Match)
        for w in workspaces:
            kind, name = w["kind"].lower(), w["metadata"]["name"]
            delete_and_wait(cluster, kind, name, timeout=90)
            arm.wait_pool_gone(name)
            assert get_json(cluster, "node", nodes[name]) is None
            assert arm.count("DELETE", name) == 1
    finally:
        ctl.stop()


# ------------------------------------------------------------------------------- throttling


def _put_times(arm: FakeArm, pool: str) -> list[float]:
    return [r["timestamp"] for r in arm.requests("PUT", f"/agentPools/{pool}$")]


def test_throttled_claims_back_off_without_delaying_the_others(
    cluster: Cluster, arm: FakeArm, workdir: Path
) -> None:
    """Eight claims (as many as the controller has workers) whose every pool create gets 429 with
    Retry-After 30 for two minutes, and two whose creates fail with 500: the other claims register
    and terminate as fast as ever, and each failing claim retries less and less often. (Creates, not
    reads: a claim whose create went through launches once its Node joins, whatever its GETs say.)"""
    throttled = [f"wsthr{secrets.token_hex(3)}" for _ in range(8)]  # not a name Kaito makes
    erroring = [f"wserr{secrets.token_hex(3)}" for _ in range(2)]
    faults = [
        arm.add_fault(
            {
                "action": "throttle",
                "method": "PUT",
                "path": r"/agentPools/wsthr[0-9a-f]{6}$",
                "retry_after": 30,
            }
        ),
        arm.add_fault(
            {
                "action": "error",
                "method": "PUT",
                "path": r"/agentPools/wserr[0-9a-f]{6}$",
                "status": 500,
                "code": "InternalServerError",
            }
        ),
    ]
    arm.set_quota(A100_FAMILY, 2000)
    arm.set_quota("cores", 2000)
    ctl = Controller(cluster, workdir, cloud="azure", env={**arm.controller_env(), "WORKERS": "8"}).start()
    try:
        started = time.monotonic()
        for name in throttled + erroring:
            create(cluster, ctl.label(kaito_nodeclaim(name, instance_type=A100)))
        wait_for(
            "every failing claim tried once",
            lambda: all(_put_times(arm, n) for n in throttled + erroring),
            30,
        )

        others = [random_claim_name() for _ in range(3)]
        for name in others:
            create(cluster, ctl.label(kaito_nodeclaim(name, instance_type=A100)))
        t0 = time.monotonic()
        for name in others:
            wait_for(f"{name} Ready", lambda n=name: ready(cluster, "nodeclaim", n), 60)
        ready_after = time.monotonic() - t0
        for name in others:
            cluster.kubectl("delete", "nodeclaim", name, "--wait=false")
        t0 = time.monotonic()
        for name in others:
            wait_for(f"{name} gone", lambda n=name: get_json(cluster, "nodeclaim", n) is None, 60)
        gone_after = time.monotonic() - t0
        assert time.monotonic() - started < THROTTLE_WINDOW, "the others finished inside the window"
        assert ready_after < 45 and gone_after < 45, (ready_after, gone_after)

        wait_for(
            "the end of the throttling window", lambda: time.monotonic() - started >= THROTTLE_WINDOW, 150, 1
        )
        for fault in faults:
            arm.remove_fault(fault)
        for name in throttled:
            times = _put_times(arm, name)
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert len(times) <= 6, (name, gaps)  # old behaviour: a worker sleeping through retries
            assert all(g >= 29.0 for g in gaps), (name, gaps)  # never before Retry-After
        for name in erroring:
            times = _put_times(arm, name)
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert len(gaps) >= 5, (name, gaps)
            # Doubling (0.5, 1, 2, 4 ... s); the first gaps are short enough for a reconcile's own
            # duration to blur them, so they are only required to grow.
            assert all(b > a for a, b in itertools.pairwise(gaps)), (name, gaps)
            assert all(b > a * 1.5 for a, b in itertools.pairwise(gaps[2:])), (name, gaps)
        warnings = {e["reason"] for e in events_for(cluster, throttled[0]) if e["type"] == "Warning"}
        assert "LaunchThrottled" in warnings, warnings
        for name in throttled + erroring:  # once ARM answers again, every claim launches
            wait_for(f"{name} Ready after the window", lambda n=name: ready(cluster, "nodeclaim", n), 120)
        for name in throttled + erroring:
            cluster.kubectl("delete", "nodeclaim", name, "--wait=false")
        for name in throttled + erroring:
            arm.wait_pool_gone(name, 120)
            created = [r for r in arm.requests("PUT", f"/agentPools/{name}$") if r["status"] < 300]
            assert len(created) == 1, (
                name,
                [r["status"] for r in arm.requests("PUT", f"/agentPools/{name}$")],
            )
    finally:
        for fault in faults:
            arm.remove_fault(fault, missing_ok=True)
        ctl.stop()


# ------------------------------------------------------------------------------- node termination


def test_a_node_whose_claim_was_removed_by_hand_is_drained_and_released(
    cluster: Cluster, arm: FakeArm, workdir: Path
) -> None:
    # Garbage collection would delete the orphaned pool too (and its node with it): keep it out.
    env = {**arm.controller_env(), "GC_ORPHAN_GRACE_SECONDS": "600"}
    ctl = Controller(cluster, workdir, cloud="azure", env=env).start()
    name = random_claim_name()
    try:
        create(cluster, ctl.label(kaito_nodeclaim(name, instance_type=A100)))
        claim = wait_for("claim Ready", lambda: ready(cluster, "nodeclaim", name), 60)
    finally:
        ctl.stop()
    node = claim["status"]["nodeName"]
    # While the controller is down, an admin deletes the claim and strips its finalizers; then the
    # Node is deleted (by hand, or by the garbage collector following its ownerReference).
    cluster.kubectl("delete", "nodeclaim", name, "--wait=false")
    _patch(cluster, "nodeclaim", name, patch={"metadata": {"finalizers": None}})
    wait_for("claim gone", lambda: get_json(cluster, "nodeclaim", name) is None, 30)
    cluster.kubectl("delete", "node", node, "--wait=false")
    assert (get_json(cluster, "node", node) or {}).get("metadata", {}).get("deletionTimestamp")
    again = Controller(cluster, workdir, cloud="azure", env=env, run_id=ctl.run_id).start()
    try:
        wait_for("node released", lambda: get_json(cluster, "node", node) is None, 60)
        arm.wait_pool_gone(name, 60)
        assert arm.count("DELETE", name) == 1
        assert "released node" in again.log()
    finally:
        again.stop()
