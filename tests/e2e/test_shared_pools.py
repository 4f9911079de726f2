"""Shared agent pools end to end (``AZURE_POOL_STRATEGY=shared``): the controller as a process,
the real Azure SDK, the fake ARM with AKS's 100-pool limit and its node simulator.

What is checked is the binding (every Ready claim has exactly one Node and every Node at most one
claim, on the Node and on the claim alike), the claim's labels on its Node, and the cloud calls:
one scale PUT per batch of arrivals, and deleting claims removes exactly their VMs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.kaito import kaito_machine, random_claim_name
from provisioner.cloud.azure.shared import is_shared_pool
from tests.conftest import Cluster
from tests.e2e.fakearm import FakeArm
from tests.e2e.harness import Controller, condition_status, get_json, wait_for

pytestmark = pytest.mark.e2e

A100 = "Standard_NC24ads_A100_v4"
A100_FAMILY = "standardNCADSA100v4Family"
POOL_LABEL = "kubernetes.azure.com/agentpool"
INSTANCE_ANNOTATION = "gpu-provisioner.sh/instance-name"
SHARED_ENV = {"AZURE_POOL_STRATEGY": "shared", "AZURE_SHARED_BATCH_SECONDS": "0.5"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-pools")


def remove_shared_leftovers(cluster: Cluster) -> None:
    """Machines on shared pools and their Nodes that a failed earlier run left in this API server:
    pool names are a hash of the shape, so a new run would meet them under the same names."""
    for kind, label in (("machines", None), ("nodes", POOL_LABEL)):
        for obj in (get_json(cluster, kind) or {}).get("items") or []:
            meta = obj["metadata"]
            pool = (
                (meta.get("labels") or {}).get(label, "")
                if label
                else (meta.get("annotations") or {}).get(INSTANCE_ANNOTATION, "")
            )
            if is_shared_pool(pool):
                name = meta["name"]
                unblock = '{"metadata":{"finalizers":null}}'
                cluster.kubectl("patch", kind, name, "--type=merge", "-p", unblock, check=False)
                cluster.kubectl("delete", kind, name, "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="module")
def arm(cluster: Cluster, workdir: Path) -> Iterator[FakeArm]:
    remove_shared_leftovers(cluster)
    # AKS's own limit of 100 agent pools (the fake's default) stays in force.
    server = FakeArm(workdir, cluster.kubeconfig, {"latency": {"create": 2.0, "update": 2.0, "delete": 1.0}})
    server.start()
    server.set_quota(A100_FAMILY, 24 * 400)
    server.set_quota("cores", 24 * 400)
    yield server
    server.stop()
    remove_shared_leftovers(cluster)


def _controller(cluster: Cluster, workdir: Path, arm: FakeArm, run_id: str | None = None) -> Controller:
    return Controller(
        cluster, workdir, cloud="azure", env={**arm.controller_env(), **SHARED_ENV}, run_id=run_id
    )


def create_all(cluster: Cluster, objs: list[dict[str, Any]]) -> None:
    """One kubectl call for all of them (a List), so they arrive together."""
    cluster.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})
    )


def machines(cluster: Cluster, ctl: Controller) -> list[dict[str, Any]]:
    return list((get_json(cluster, "machines", "-l", ctl.selector) or {}).get("items") or [])


def shared_nodes(cluster: Cluster, pools: set[str]) -> list[dict[str, Any]]:
    items = (get_json(cluster, "nodes") or {}).get("items") or []
    return [n for n in items if n["metadata"].get("labels", {}).get(POOL_LABEL) in pools]


def all_ready(cluster: Cluster, ctl: Controller, n: int) -> list[dict[str, Any]] | None:
    found = machines(cluster, ctl)
    ready = [m for m in found if condition_status(m, "Ready") == "True"]
    return found if len(found) == n and len(ready) == n else None


def check_binding(claims: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> None:
    """No claim on two Nodes, no Node for two claims; the claim's and the Node's records agree."""
    by_uid = {c["metadata"]["uid"]: c for c in claims}
    owners = {
        n["metadata"]["name"]: [
            o["uid"] for o in n["metadata"].get("ownerReferences") or () if o["uid"] in by_uid
        ]
        for n in nodes
    }
    assert all(len(o) <= 1 for o in owners.values()), {k: v for k, v in owners.items() if len(v) > 1}
    per_claim = Counter(o[0] for o in owners.values() if o)
    assert set(per_claim) == set(by_uid), "every claim has a Node"
    assert max(per_claim.values()) == 1, [uid for uid, k in per_claim.items() if k > 1]
    node_by_name = {n["metadata"]["name"]: n for n in nodes}
    ids = [c["status"]["providerID"] for c in claims]
    assert len(set(ids)) == len(ids), "two claims name one providerID"
    for c in claims:
        node = node_by_name[c["status"]["nodeName"]]
        assert owners[node["metadata"]["name"]] == [c["metadata"]["uid"]]
        assert node["spec"]["providerID"] == c["status"]["providerID"]
        labels = node["metadata"]["labels"]
        assert labels["kaito.sh/workspace"] == c["metadata"]["labels"]["kaito.sh/workspace"]
        assert labels["node.kubernetes.io/instance-type"] == A100


def shared_pools(arm: FakeArm) -> dict[str, dict[str, Any]]:
    return {
        k: p
        for k, p in arm.pools().items()
        if (p.get("properties", p).get("tags") or {}).get("gpu-provisioner.sh_shared")
    }


def pool_puts(arm: FakeArm, pools: set[str]) -> list[dict[str, Any]]:
    return [r for p in pools for r in arm.requests("PUT", f"/agentPools/{p}$")]


def delete_claims(cluster: Cluster, names: list[str]) -> None:
    cluster.kubectl("delete", "machine", *names, "--wait=false")


def test_a_burst_shares_one_pool_and_deleting_claims_removes_exactly_their_vms(
    cluster: Cluster, workdir: Path, arm: FakeArm
) -> None:
    ctl = _controller(cluster, workdir, arm).start()
    try:
        names = [random_claim_name() for _ in range(6)]
        create_all(
            cluster, [ctl.label(kaito_machine(n, instance_type=A100, workspace=f"w-{n}")) for n in names]
        )
        claims = wait_for("6 machines Ready", lambda: all_ready(cluster, ctl, 6), 90)
        pools = set(shared_pools(arm))
        assert len(pools) == 1, pools
        (pool,) = pools
        assert {c["metadata"]["annotations"][INSTANCE_ANNOTATION] for c in claims} == pools
        nodes = shared_nodes(cluster, pools)
        assert len(nodes) == 6
        check_binding(claims, nodes)
        puts = pool_puts(arm, pools)
        assert len(puts) <= 2, [(r["method"], r["status"]) for r in puts]  # one batch, maybe a straggler

        leaving = names[1:3]
        vms = {c["metadata"]["name"]: c["status"]["nodeName"] for c in claims}
        delete_claims(cluster, leaving)
        wait_for("2 machines gone", lambda: len(machines(cluster, ctl)) == 4, 60)
        remaining = arm.pools()[pool]
        props = remaining.get("properties", remaining)
        assert props["count"] == 4
        left = {n["metadata"]["name"] for n in shared_nodes(cluster, pools)}
        assert left == {vms[n] for n in names if n not in leaving}
        assert 1 <= len(arm.requests("POST", f"/agentPools/{pool}/deleteMachines$")) <= 2
        assert not arm.requests("DELETE", f"/agentPools/{pool}$"), "never the pool while claims use it"
        check_binding(machines(cluster, ctl), shared_nodes(cluster, pools))

        delete_claims(cluster, [n for n in names if n not in leaving])
        wait_for("all machines gone", lambda: not machines(cluster, ctl), 60)
        assert not shared_nodes(cluster, pools)
        wait_for("the emptied pool deleted", lambda: not shared_pools(arm), 60)
    finally:
        ctl.stop()


SHARED_POOL_PATH = "/agentPools/s[0-9a-z]{8}[0-9]{2}$"


def vm_count(arm: FakeArm) -> int:
    return sum(p.get("properties", p)["count"] for p in shared_pools(arm).values())


@pytest.mark.timeout(900)
def test_150_claims_past_the_pool_limit_survive_a_restart_mid_scale_up_and_deleting_30_removes_their_vms(
    cluster: Cluster, workdir: Path, arm: FakeArm
) -> None:
    """More claims than AKS allows pools; the controller is killed while the first batch's pool
    write runs; its successor binds every claim to exactly one Node and leaves no spare VM; 30
    claims deleted take exactly their 30 VMs; the emptied pools are deleted."""
    arm.set_latency(create=3.0, update=3.0)
    start = max((r["seq"] for r in arm.requests()), default=0)
    ctl = _controller(cluster, workdir, arm).start()
    successor: Controller | None = None
    names = [random_claim_name() for _ in range(150)]
    try:
        create_all(
            cluster, [ctl.label(kaito_machine(n, instance_type=A100, workspace=f"w-{n}")) for n in names]
        )
        wait_for("the first shared pool write", lambda: arm.requests("PUT", SHARED_POOL_PATH), 60)
        ctl.kill()
        successor = _controller(cluster, workdir, arm, run_id=ctl.run_id).start()
        claims = wait_for("150 machines Ready", lambda: all_ready(cluster, successor, 150), 300)
        pools = set(shared_pools(arm))
        assert 2 <= len(pools) <= 3, pools  # 100 nodes per pool (a third only if the kill split a batch)
        check_binding(claims, shared_nodes(cluster, pools))
        wait_for("no spare VM", lambda: vm_count(arm) == 150 and len(shared_nodes(cluster, pools)) == 150, 90)

        vms = {c["metadata"]["name"]: c["status"]["nodeName"] for c in claims}
        leaving = names[:30]
        before = {p: len(arm.requests("POST", f"/agentPools/{p}/deleteMachines$")) for p in pools}
        delete_claims(cluster, leaving)
        wait_for("120 machines left", lambda: len(machines(cluster, successor)) == 120, 120)
        wait_for("their 30 VMs gone", lambda: vm_count(arm) == 120, 60)
        assert {n["metadata"]["name"] for n in shared_nodes(cluster, pools)} == {
            vms[n] for n in names if n not in leaving
        }
        sent = sum(len(arm.requests("POST", f"/agentPools/{p}/deleteMachines$")) - before[p] for p in pools)
        assert 1 <= sent <= 30, sent
        assert not [r for p in pools for r in arm.requests("DELETE", f"/agentPools/{p}$") if r["seq"] > start]
        check_binding(machines(cluster, successor), shared_nodes(cluster, pools))

        delete_claims(cluster, names[30:])
        wait_for("all machines gone", lambda: not machines(cluster, successor), 180)
        wait_for("the emptied pools deleted", lambda: not shared_pools(arm), 60)
    finally:
        for c in (ctl, successor):
            if c is not None:
                c.stop()
