"""Kaito's ``karpenter`` mode end to end: the test plays Kaito v0.12's karpenter node provisioner
(its chart's node classes with our group/kind, then the NodePool it generates for a workspace, then
a raise of ``replicas``) against the controller with ``--cloud azure`` and the fake ARM.

Witnesses: the NodeClaims and Nodes in the API server, the fake ARM's pools and request log, and a
sampler that records, while drift is replaced, how many of a NodePool's NodeClaims are Ready.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakes.kaito import KAITO_CHART_NODE_CLASSES, kaito_node_class, kaito_nodepool
from tests.conftest import Cluster
from tests.e2e.fakearm import FakeArm
from tests.e2e.harness import Controller, condition_status, create, event_reasons, get_json, wait_for

pytestmark = pytest.mark.e2e

A100 = "Standard_NC24ads_A100_v4"
A100_FAMILY = "standardNCADSA100v4Family"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nodepools")


@pytest.fixture(scope="module")
def arm(cluster: Cluster, workdir: Path) -> Iterator[FakeArm]:
    server = FakeArm(workdir, cluster.kubeconfig).start()
    server.set_quota(A100_FAMILY, 24 * 16)  # room for every NodePool here and its replacements
    yield server
    server.stop()


@pytest.fixture(scope="module")
def controller(cluster: Cluster, workdir: Path, arm: FakeArm) -> Iterator[Controller]:
    ctl = Controller(
        cluster,
        workdir,
        cloud="azure",
        env={**arm.controller_env(), "CLAIM_NODE_CLASS_KINDS": "KaitoNodeClass"},
    ).start()
    try:
        yield ctl
        # Nothing of ours may be left for later modules: NodePools go (with their claims) first.
        for np in (get_json(cluster, "nodepools") or {}).get("items") or []:
            cluster.kubectl(
                "delete", "nodepool", np["metadata"]["name"], "--wait=false", "--ignore-not-found"
            )
        wait_for("every NodePool gone", lambda: not (get_json(cluster, "nodepools") or {}).get("items"), 120)
    finally:
        ctl.stop()


@pytest.fixture(scope="module")
def node_classes(cluster: Cluster, controller: Controller) -> list[str]:
    """Kaito's start-up: create each configured node class (AlreadyExists is fine), then wait for
    the default one to be Ready (Kaito gives up after 120 s)."""
    for entry in KAITO_CHART_NODE_CLASSES:
        res = cluster.kubectl("create", "-f", "-", input=json.dumps(kaito_node_class(entry)), check=False)
        assert res.returncode == 0 or "AlreadyExists" in res.stderr, res.stderr
    default = next(e["name"] for e in KAITO_CHART_NODE_CLASSES if e.get("default"))
    wait_for(
        "default node class Ready",
        lambda: condition_status(get_json(cluster, "kaitonodeclass", default), "Ready") == "True",
        120,
    )
    return [e["name"] for e in KAITO_CHART_NODE_CLASSES]


# -- reading ---------------------------------------------------------------------------------------


def claims_of(cluster: Cluster, nodepool: str) -> list[dict[str, Any]]:
    data = get_json(cluster, "nodeclaims", "-l", f"karpenter.sh/nodepool={nodepool}")
    return list((data or {}).get("items") or [])


def is_ready(obj: dict[str, Any]) -> bool:
    return condition_status(obj, "Ready") == "True" and not obj["metadata"].get("deletionTimestamp")


def ready_claims(cluster: Cluster, nodepool: str, count: int) -> list[dict[str, Any]] | None:
    """Exactly ``count`` NodeClaims, all Ready, none deleting (else None)."""
    claims = claims_of(cluster, nodepool)
    return claims if len(claims) == count and all(is_ready(c) for c in claims) else None


def _tagged(arm: FakeArm) -> dict[str, tuple[str, dict[str, Any]]]:
    """The fake's pools by the claim each is tagged for: (pool name, properties)."""
    out = {}
    for name, pool in arm.pools().items():
        props = pool.get("properties", pool)
        claim = (props.get("tags") or {}).get("gpu-provisioner.sh_claim-name")
        if claim:
            out[claim] = (name, props)
    return out


def pools_of(arm: FakeArm, claims: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The properties of the claims' pools, by claim name."""
    names = {c["metadata"]["name"] for c in claims}
    return {claim: props for claim, (_, props) in _tagged(arm).items() if claim in names}


def pool_names(arm: FakeArm, claims: list[dict[str, Any]]) -> dict[str, str]:
    names = {c["metadata"]["name"] for c in claims}
    return {claim: pool for claim, (pool, _) in _tagged(arm).items() if claim in names}


def kubectl_update(cluster: Cluster, kind: str, name: str, change: Any) -> None:
    """Get, change, update (PUT) — how Kaito's client writes."""
    obj = get_json(cluster, kind, name)
    assert obj is not None
    change(obj)
    cluster.kubectl("replace", "-f", "-", input=json.dumps(obj))


def create_node_class(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    create(cluster, kaito_node_class({"name": name, "spec": spec}))
    wait_for(
        f"node class {name} Ready",
        lambda: condition_status(get_json(cluster, "kaitonodeclass", name), "Ready") == "True",
    )


class ReadySampler:
    """Samples a NodePool's Ready, non-deleting NodeClaims until stopped; keeps the minimum and the
    largest number of replacements in flight at once."""

    def __init__(self, cluster: Cluster, nodepool: str) -> None:
        self.cluster, self.nodepool = cluster, nodepool
        self.min_ready: int | None = None
        self.max_in_flight = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            claims = claims_of(self.cluster, self.nodepool)
            live = {c["metadata"]["name"] for c in claims if not c["metadata"].get("deletionTimestamp")}
            ready = sum(1 for c in claims if is_ready(c))
            in_flight = sum(
                1
                for c in claims
                if (c["metadata"].get("annotations") or {}).get("gpu-provisioner.sh/replaces") in live
                and c["metadata"]["name"] in live
            )
            self.min_ready = ready if self.min_ready is None else min(self.min_ready, ready)
            self.max_in_flight = max(self.max_in_flight, in_flight)
            self.samples += 1
            self._stop.wait(0.2)


def delete_nodepool_and_wait(cluster: Cluster, arm: FakeArm, name: str, claims: list[dict[str, Any]]) -> None:
    nodes = [c["status"]["nodeName"] for c in claims if (c.get("status") or {}).get("nodeName")]
    cluster.kubectl("delete", "nodepool", name, "--wait=false")
    wait_for("NodePool gone", lambda: get_json(cluster, "nodepool", name) is None, 120)
    assert claims_of(cluster, name) == []
    assert pools_of(arm, claims) == {}
    for node in nodes:
        assert get_json(cluster, "node", node) is None, f"node {node} left behind"


# -- tests -----------------------------------------------------------------------------------------


def test_kaito_workspace_nodepool_scales_and_goes_away(
    cluster: Cluster, controller: Controller, arm: FakeArm, node_classes: list[str]
) -> None:
    for name in node_classes:
        nc = get_json(cluster, "kaitonodeclass", name)
        assert condition_status(nc, "Ready") == "True", nc
    ubuntu = get_json(cluster, "kaitonodeclass", "image-family-ubuntu")
    assert ubuntu is not None and ubuntu["status"]["resolvedImage"]["name"] == "Ubuntu2204"

    body = kaito_nodepool("phi-4", instance_type=A100, replicas=2, match_labels={"apps": "phi-4"})
    name = body["metadata"]["name"]
    create(cluster, body)
    claims = wait_for("2 NodeClaims Ready", lambda: ready_claims(cluster, name, 2), 120)

    # Kaito raises replicas (never lowers them) when the workspace needs another node.
    kubectl_update(cluster, "nodepool", name, lambda np: np["spec"].__setitem__("replicas", 3))
    claims = wait_for("3 NodeClaims Ready", lambda: ready_claims(cluster, name, 3), 120)

    np = get_json(cluster, "nodepool", name)
    assert np is not None
    assert "gpu-provisioner.sh/termination" in np["metadata"]["finalizers"]
    template_labels = body["spec"]["template"]["metadata"]["labels"]
    for claim in claims:
        meta = claim["metadata"]
        assert meta["name"].startswith(f"{name}-") and len(meta["name"]) == len(name) + 6
        assert (
            meta["ownerReferences"][0]["kind"] == "NodePool"
            and meta["ownerReferences"][0]["uid"] == np["metadata"]["uid"]
        )
        assert meta["labels"]["karpenter.sh/nodepool"] == name
        assert meta["labels"]["kaito.sh/kaitonodeclass"] == "image-family-ubuntu"
        assert meta["annotations"]["karpenter.sh/nodepool-hash"]
        node = get_json(cluster, "node", claim["status"]["nodeName"])
        assert node is not None
        labels = node["metadata"]["labels"]
        for key, value in template_labels.items():
            assert labels.get(key) == value, (key, labels)
        assert labels["karpenter.sh/nodepool"] == name
        assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
    pools = pools_of(arm, claims)
    assert len(pools) == 3, "one pool per NodeClaim"
    for props in pools.values():
        assert props["vmSize"] == A100 and props["count"] == 1
        assert props["osSKU"] == "Ubuntu2204" and props["osDiskSizeGB"] == 300
        assert props["nodeTaints"] == ["sku=gpu:NoSchedule"]

    status = wait_for(
        "NodePool status with 3 nodes",
        lambda: (
            s
            if (s := (get_json(cluster, "nodepool", name) or {}).get("status") or {}).get("nodes") == 3
            else None
        ),
    )
    assert status["resources"]["nodes"] == "3"
    assert status["resources"]["nvidia.com/gpu"] == "3"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "NodeClassReady": "True",
        "Ready": "True",
        "ValidationSucceeded": "True",
    }
    out = cluster.kubectl("get", "nodepool", name).stdout
    assert "image-family-ubuntu" in out and " 3 " in out

    delete_nodepool_and_wait(cluster, arm, name, claims)


def test_a_deleted_nodeclaim_is_replaced(
    cluster: Cluster, controller: Controller, arm: FakeArm, node_classes: list[str]
) -> None:
    body = kaito_nodepool("replace-me", instance_type=A100, replicas=1)
    name = body["metadata"]["name"]
    create(cluster, body)
    (first,) = wait_for("1 NodeClaim Ready", lambda: ready_claims(cluster, name, 1), 120)
    cluster.kubectl("delete", "nodeclaim", first["metadata"]["name"], "--wait=false")
    (second,) = wait_for(
        "a new NodeClaim Ready",
        lambda: (
            c
            if (c := ready_claims(cluster, name, 1)) and c[0]["metadata"]["uid"] != first["metadata"]["uid"]
            else None
        ),
        120,
    )
    delete_nodepool_and_wait(cluster, arm, name, [first, second])


def _drift_all(cluster: Cluster, name: str, node_class: str, family: str, old: set[str]) -> dict[str, str]:
    """Change the node class's image family; wait until each of the ``old`` NodeClaims was seen
    Drifted (a replacement may take one away soon after). Returns the Drifted reasons seen."""
    kubectl_update(
        cluster, "kaitonodeclass", node_class, lambda nc: nc["spec"].__setitem__("imageFamily", family)
    )
    seen: dict[str, str] = {}

    def all_seen() -> bool:
        for c in claims_of(cluster, name):
            if c["metadata"]["name"] in old and condition_status(c, "Drifted") == "True":
                seen[c["metadata"]["name"]] = conditions_reason(c, "Drifted") or ""
        return set(seen) == old

    wait_for("every NodeClaim Drifted", all_seen, 60)
    return seen


def test_node_class_change_drifts_and_budget_one_replaces_one_at_a_time(
    cluster: Cluster, controller: Controller, arm: FakeArm, node_classes: list[str]
) -> None:
    create_node_class(cluster, "e2e-drift-one", {"imageFamily": "Ubuntu2204", "osDiskSizeGB": 128})
    body = kaito_nodepool("drift-one", instance_type=A100, replicas=2, node_class="e2e-drift-one")
    name = body["metadata"]["name"]
    create(cluster, body)
    before = wait_for("2 NodeClaims Ready", lambda: ready_claims(cluster, name, 2), 120)
    old = {c["metadata"]["name"] for c in before}
    pool_of = pool_names(arm, before)

    with ReadySampler(cluster, name) as sampler:
        reasons = _drift_all(cluster, name, "e2e-drift-one", "AzureLinux", old)
        assert set(reasons.values()) == {"NodeClassDrifted"}
        after = wait_for(
            "both replaced",
            lambda: (
                c
                if (c := ready_claims(cluster, name, 2)) and not old & {x["metadata"]["name"] for x in c}
                else None
            ),
            180,
        )
    assert sampler.samples > 10
    assert sampler.min_ready is not None and sampler.min_ready >= 2, "Ready capacity dropped below replicas"
    assert sampler.max_in_flight == 1, "budget 1 allows one replacement at a time"
    for c in after:
        assert condition_status(c, "Drifted") is None
        assert c["metadata"]["annotations"]["gpu-provisioner.sh/replaces"] in old
    pools = pools_of(arm, after)
    assert {p["osSKU"] for p in pools.values()} == {"AzureLinux"}
    assert {p["osDiskSizeGB"] for p in pools.values()} == {128}

    # The fake ARM's log: each old pool's DELETE comes after its replacement's PUT, and the second
    # replacement is created only after the first old pool was deleted.
    def seq(method: str, pool: str) -> int:
        recs = [r for r in arm.requests(method, f"/agentPools/{pool}$")]
        assert recs, (method, pool)
        return int(recs[0]["seq"])

    pool_of.update(pool_names(arm, after))
    pairs = sorted(((seq("PUT", pool_of[c["metadata"]["name"]]), c) for c in after), key=lambda p: p[0])
    first_new, second_new = (c for _, c in pairs)
    first_old = first_new["metadata"]["annotations"]["gpu-provisioner.sh/replaces"]
    assert seq("DELETE", pool_of[first_old]) > seq("PUT", pool_of[first_new["metadata"]["name"]])
    assert seq("PUT", pool_of[second_new["metadata"]["name"]]) > seq("DELETE", pool_of[first_old])
    events = event_reasons(cluster, first_old)
    assert {"DisruptionLaunching", "DisruptionTerminating"} <= set(events)
    _, text = controller.get("/metrics")
    disrupted = {
        (sample.labels["nodepool"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "karpenter_nodeclaims_disrupted_total"
    }
    assert disrupted[(name, "drifted")] == 2

    delete_nodepool_and_wait(cluster, arm, name, after)


def test_budget_zero_holds_drift_until_raised(
    cluster: Cluster, controller: Controller, arm: FakeArm, node_classes: list[str]
) -> None:
    create_node_class(cluster, "e2e-drift-zero", {"imageFamily": "Ubuntu2204"})
    body = kaito_nodepool(
        "drift-zero", instance_type=A100, replicas=2, node_class="e2e-drift-zero", inference_set="iset"
    )
    assert body["spec"]["disruption"]["budgets"] == [{"nodes": "0", "reasons": ["Drifted"]}]
    name = body["metadata"]["name"]
    create(cluster, body)
    before = wait_for("2 NodeClaims Ready", lambda: ready_claims(cluster, name, 2), 120)
    old = {c["metadata"]["name"] for c in before}
    puts = len(arm.requests("PUT"))

    _drift_all(cluster, name, "e2e-drift-zero", "Ubuntu2404", old)
    # The controller has looked at the NodePool since (its gauge says 0 allowed) ...
    metric = f'karpenter_nodepools_allowed_disruptions{{nodepool="{name}",reason="drifted"}} 0.0'
    wait_for("allowed disruptions 0", lambda: metric in controller.get("/metrics")[1])
    # ... and for a while nothing is replaced.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert {c["metadata"]["name"] for c in claims_of(cluster, name)} == old
        time.sleep(0.5)
    assert len(arm.requests("PUT")) == puts, "no pool was created while the budget is 0"

    # Kaito's drift controller lifts the budget.
    def lift(np: dict[str, Any]) -> None:
        np["spec"]["disruption"]["budgets"][0]["nodes"] = "1"

    kubectl_update(cluster, "nodepool", name, lift)
    after = wait_for(
        "both replaced",
        lambda: (
            c
            if (c := ready_claims(cluster, name, 2)) and not old & {x["metadata"]["name"] for x in c}
            else None
        ),
        180,
    )
    assert {p["osSKU"] for p in pools_of(arm, after).values()} == {"Ubuntu2404"}
    delete_nodepool_and_wait(cluster, arm, name, after)


def test_nodepools_for_another_provisioners_node_class_are_never_touched(
    cluster: Cluster, controller: Controller, arm: FakeArm, node_classes: list[str]
) -> None:
    foreign = kaito_nodepool(
        "foreign",
        instance_type=A100,
        replicas=2,
        group="karpenter.azure.com",
        kind="AKSNodeClass",
        node_class="default",
    )
    ours = kaito_nodepool("ours-next-to-foreign", instance_type=A100, replicas=1)
    create(cluster, foreign)
    create(cluster, ours)
    # Ours is served (so the controller has seen both) ...
    claims = wait_for(
        "our NodePool's NodeClaim Ready", lambda: ready_claims(cluster, ours["metadata"]["name"], 1), 120
    )
    # ... the foreign one has no NodeClaim, no finalizer and no status from us.
    name = foreign["metadata"]["name"]
    got = get_json(cluster, "nodepool", name)
    assert got is not None
    assert claims_of(cluster, name) == []
    assert not got["metadata"].get("finalizers")
    assert not (got.get("status") or {}).get("conditions")
    assert (
        got["metadata"]["resourceVersion"]
        == get_json(cluster, "nodepool", name)["metadata"]["resourceVersion"]
    )  # type: ignore[index]
    cluster.kubectl("delete", "nodepool", name)
    delete_nodepool_and_wait(cluster, arm, ours["metadata"]["name"], claims)


# -- small readers ---------------------------------------------------------------------------------


def conditions_reason(obj: dict[str, Any], ctype: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c["type"] == ctype:
            return str(c.get("reason"))
    return None
