"""The controller process end to end on the real API server, with the offline cloud (``--cloud fake``).

What Kaito sees: a Machine or NodeClaim goes to Ready with a joined GPU node, and goes away cleanly.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.kaito import kaito_machine, kaito_nodeclaim, random_claim_name
from tests.conftest import Cluster
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
REASON = re.compile(r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?|)$")


@pytest.fixture(scope="module")
def controller(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    ctl = Controller(
        cluster,
        tmp_path_factory.mktemp("controller"),
        env={
            "FAKE_CLOUD_CAPACITY": "Standard_NC96ads_A100_v4=0",
            "FAKE_NODE_BEHAVIOURS": "wsnojoin*=never-join;wssick*=not-ready-after:2",
            "REGISTRATION_TIMEOUT_SECONDS": "6",
            "NOT_READY_REPAIR_SECONDS": "3",
        },
    ).start()
    yield ctl
    ctl.stop()


class _Sampler:
    """Records every condition set a claim shows while the test waits (to catch transient states)."""

    def __init__(self, cluster: Cluster, kind: str, name: str) -> None:
        self.seen: list[dict[str, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cluster, kind, name), daemon=True)
        self._thread.start()

    def _run(self, cluster: Cluster, kind: str, name: str) -> None:
        while not self._stop.wait(0.1):
            obj = get_json(cluster, kind, name)
            if obj is not None:
                self.seen.append(conditions(obj))

    def stop(self) -> list[dict[str, dict[str, Any]]]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


def test_kaito_machine_becomes_ready_with_a_gpu_node(cluster: Cluster, controller: Controller) -> None:
    name = random_claim_name()
    sampler = _Sampler(cluster, "machine", name)
    create(cluster, controller.label(kaito_machine(name, instance_type="Standard_NC24ads_A100_v4")))
    machine = wait_for(f"machine {name} Ready", lambda: ready(cluster, "machine", name))
    seen = sampler.stop()

    conds = conditions(machine)
    for ctype in ("MachineLaunched", "MachineRegistered", "MachineInitialized", "Ready"):
        assert conds[ctype]["status"] == "True", conds
    # Kaito <= v0.4.1 counts a Machine as pending only while MachineInitialized is False or absent.
    assert seen, "the sampler never saw the machine"
    assert all(s.get("MachineInitialized", {}).get("status") != "Unknown" for s in seen), seen
    assert any(s.get("MachineInitialized", {}).get("status") == "False" for s in seen), seen

    status = machine["status"]
    node_name = status["nodeName"]
    assert status["providerID"].startswith("azure:///subscriptions/")
    assert status["capacity"]["nvidia.com/gpu"] == "1"
    assert machine["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "Standard_NC24ads_A100_v4"

    node = get_json(cluster, "node", node_name)
    assert node is not None
    labels = node["metadata"]["labels"]
    for key, value in machine["metadata"]["labels"].items():
        assert labels.get(key) == value, key
    assert labels["karpenter.sh/registered"] == "true"
    assert labels["karpenter.sh/initialized"] == "true"
    assert labels["kaito.sh/machine-type"] == "gpu"
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in [
        {k: t[k] for k in ("key", "value", "effect") if k in t} for t in node["spec"]["taints"]
    ]
    assert "karpenter.sh/termination" in node["metadata"]["finalizers"]
    owners = node["metadata"]["ownerReferences"]
    assert any(
        o["kind"] == "Machine" and o["name"] == name and o["apiVersion"] == "karpenter.sh/v1alpha5"
        for o in owners
    )
    assert node["spec"]["providerID"] == status["providerID"]

    table = cluster.kubectl("get", "machine", name).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "TYPE", "ZONE", "NODE", "READY"]
    assert "Standard_NC24ads_A100_v4" in row and node_name in row and "True" in row

    reasons = event_reasons(cluster, name)
    for reason in ("Launched", "Registered", "Initialized"):
        assert reason in reasons, reasons

    delete_and_wait(cluster, "machine", name)
    wait_for(f"node {node_name} gone", lambda: get_json(cluster, "node", node_name) is None)


def test_kaito_nodeclaim_becomes_ready_in_v1_style(cluster: Cluster, controller: Controller) -> None:
    name = random_claim_name()
    create(cluster, controller.label(kaito_nodeclaim(name, instance_type="Standard_NC24ads_A100_v4")))
    claim = wait_for(f"nodeclaim {name} Ready", lambda: ready(cluster, "nodeclaim", name))
    conds = conditions(claim)
    for ctype in ("Launched", "Registered", "Initialized", "Ready"):
        assert conds[ctype]["status"] == "True"
        assert REASON.match(conds[ctype]["reason"]), conds[ctype]
        assert conds[ctype]["observedGeneration"] == claim["metadata"]["generation"]
    status = claim["status"]
    assert status["imageID"]
    assert status["capacity"]["nvidia.com/gpu"] == "1"
    assert status["allocatable"]["nvidia.com/gpu"] == "1"
    node = get_json(cluster, "node", status["nodeName"])
    assert node is not None
    assert node["metadata"]["labels"]["karpenter.sh/nodepool"] == "kaito"
    assert any(
        o["kind"] == "NodeClaim" and o["apiVersion"] == "karpenter.sh/v1"
        for o in node["metadata"]["ownerReferences"]
    )

    wide = cluster.kubectl("get", "nodeclaim", name, "-o", "wide").stdout.splitlines()
    header = wide[0].split()
    for column in ("TYPE", "CAPACITY", "ZONE", "NODE", "READY", "IMAGEID", "ID", "NODEPOOL", "NODECLASS"):
        assert column in header
    row = wide[1]
    for value in (
        "Standard_NC24ads_A100_v4",
        "on-demand",
        status["nodeName"],
        "True",
        status["providerID"],
        "kaito",
    ):
        assert value in row, (value, row)

    delete_and_wait(cluster, "nodeclaim", name)


def test_delete_drains_respecting_a_pdb_then_removes_node_and_claim(
    cluster: Cluster, controller: Controller
) -> None:
    name = random_claim_name()
    create(cluster, controller.label(kaito_machine(name)))
    machine = wait_for("machine Ready", lambda: ready(cluster, "machine", name))
    node_name = machine["status"]["nodeName"]
    app = f"app-{name}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"inference-{name}", "namespace": "default", "labels": {"app": app}},
        "spec": {
            "nodeName": node_name,
            "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
            "containers": [{"name": "model", "image": "registry.local/model:1"}],
        },
    }
    create(cluster, pod)
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"pdb-{name}", "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
    }
    create(cluster, pdb)
    # The disruption controller is not running here, so set the PDB status it would compute.
    cluster.kubectl(
        "patch",
        "pdb",
        f"pdb-{name}",
        "-n",
        "default",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "currentHealthy": 1,
                    "desiredHealthy": 1,
                    "expectedPods": 1,
                    "disruptionsAllowed": 0,
                    "observedGeneration": 1,
                }
            }
        ),
    )

    cluster.kubectl("delete", "machine", name, "--wait=false")
    wait_for("FailedDraining event", lambda: "FailedDraining" in event_reasons(cluster, name))
    node = get_json(cluster, "node", node_name)
    assert node is not None and node["spec"].get("unschedulable") is True, "node should be cordoned"
    assert get_json(cluster, "pod", f"inference-{name}", "-n", "default") is not None
    assert get_json(cluster, "machine", name) is not None, "claim must wait for the drain"

    cluster.kubectl("delete", "pdb", f"pdb-{name}", "-n", "default")
    wait_for("pod evicted", lambda: get_json(cluster, "pod", f"inference-{name}", "-n", "default") is None)
    wait_for("node gone", lambda: get_json(cluster, "node", node_name) is None)
    wait_for("machine gone", lambda: get_json(cluster, "machine", name) is None)
    assert "Evicted" in event_reasons(cluster, name)


def test_deleting_the_node_deletes_the_claim(cluster: Cluster, controller: Controller) -> None:
    name = random_claim_name()
    create(cluster, controller.label(kaito_nodeclaim(name)))
    claim = wait_for("nodeclaim Ready", lambda: ready(cluster, "nodeclaim", name))
    node_name = claim["status"]["nodeName"]
    cluster.kubectl("delete", "node", node_name, "--wait=false")
    wait_for("nodeclaim gone", lambda: get_json(cluster, "nodeclaim", name) is None)
    wait_for("node gone", lambda: get_json(cluster, "node", node_name) is None)


def test_insufficient_capacity_keeps_the_claim_with_kaitos_text(
    cluster: Cluster, controller: Controller
) -> None:
    machine_name, claim_name = random_claim_name(), random_claim_name()
    create(cluster, controller.label(kaito_machine(machine_name, instance_type="Standard_NC96ads_A100_v4")))
    create(cluster, controller.label(kaito_nodeclaim(claim_name, instance_type="Standard_NC96ads_A100_v4")))

    machine = wait_for(
        "MachineLaunched False",
        lambda: (
            (m := get_json(cluster, "machine", machine_name))
            and condition_status(m, "MachineLaunched") == "False"
            and m
        ),
    )
    launched = conditions(machine)["MachineLaunched"]
    assert launched["message"] == KAITO_TEXT  # Kaito compares for equality
    assert "InsufficientCapacity" in launched["reason"]
    claim = wait_for(
        "Launched False",
        lambda: (
            (c := get_json(cluster, "nodeclaim", claim_name))
            and condition_status(c, "Launched") == "False"
            and c
        ),
    )
    message = conditions(claim)["Launched"]["message"]
    assert message.startswith(KAITO_TEXT) and len(message) > len(KAITO_TEXT)

    # Retried with backoff (several attempts happen in this window) but announced once, never deleted.
    wait_for("a few retries", lambda: controller.log().count(f"claim={machine_name}") >= 3, 30)
    events = [e for e in events_for(cluster, machine_name) if e["reason"] == "InsufficientCapacityError"]
    assert len(events) == 1, events
    assert "Standard_NC96ads_A100_v4" in events[0]["message"] or "NCADS" in events[0]["message"].upper()
    assert get_json(cluster, "machine", machine_name) is not None
    delete_and_wait(cluster, "machine", machine_name)
    delete_and_wait(cluster, "nodeclaim", claim_name)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda m: m["spec"].update(
                requirements=[
                    r for r in m["spec"]["requirements"] if r["key"] != "node.kubernetes.io/instance-type"
                ]
            ),
            "NoInstanceType",
        ),
        (lambda m: m["spec"]["resources"]["requests"].update(storage="9000Gi"), "InvalidStorageRequest"),
        (lambda m: m["spec"]["requirements"][0].update(values=["Standard_NoSuchSize_v9"]), "InvalidSpec"),
    ],
    ids=["no-instance-type", "bad-storage", "unknown-sku"],
)
def test_invalid_spec_gets_a_clear_condition_and_event(
    cluster: Cluster, controller: Controller, mutate: Any, reason: str
) -> None:
    name = random_claim_name()
    machine = kaito_machine(name)
    mutate(machine)
    create(cluster, controller.label(machine))
    obj = wait_for(
        "MachineLaunched False",
        lambda: (
            (m := get_json(cluster, "machine", name))
            and condition_status(m, "MachineLaunched") == "False"
            and m
        ),
    )
    launched = conditions(obj)["MachineLaunched"]
    assert launched["reason"].startswith(reason), launched
    assert launched["message"]
    wait_for("LaunchFailed event", lambda: "LaunchFailed" in event_reasons(cluster, name))
    assert nodes_of_pool(cluster, name) == []
    delete_and_wait(cluster, "machine", name)


def test_node_that_never_joins_is_deleted_after_the_registration_timeout(
    cluster: Cluster, controller: Controller
) -> None:
    name = "wsnojoin" + random_claim_name()[2:6]
    create(cluster, controller.label(kaito_machine(name)))
    wait_for(
        "MachineLaunched True",
        lambda: condition_status(get_json(cluster, "machine", name), "MachineLaunched") == "True",
    )
    wait_for(
        "machine deleted after registration timeout", lambda: get_json(cluster, "machine", name) is None, 60
    )
    assert nodes_of_pool(cluster, name) == []


def test_node_not_ready_past_the_repair_window_deletes_the_claim(
    cluster: Cluster, controller: Controller
) -> None:
    name = "wssick" + random_claim_name()[2:8]
    create(cluster, controller.label(kaito_machine(name)))
    wait_for("machine Ready", lambda: ready(cluster, "machine", name))
    wait_for("machine repaired (deleted)", lambda: get_json(cluster, "machine", name) is None, 60)


def test_claims_that_are_not_ours_are_never_touched(cluster: Cluster, controller: Controller) -> None:
    name = random_claim_name()
    foreign = kaito_nodeclaim(name)
    foreign["metadata"]["labels"] = {"karpenter.sh/nodepool": "general"}
    foreign["metadata"]["annotations"] = {}
    foreign["spec"]["nodeClassRef"] = {
        "group": "karpenter.azure.com",
        "kind": "AKSNodeClass",
        "name": "default",
    }
    foreign["metadata"]["finalizers"] = ["karpenter.sh/termination"]
    create(cluster, foreign)
    # A managed claim created after it is fully handled, so the controller has seen both.
    mine = random_claim_name()
    create(cluster, controller.label(kaito_nodeclaim(mine)))
    wait_for("managed claim Ready", lambda: ready(cluster, "nodeclaim", mine))
    obj = get_json(cluster, "nodeclaim", name)
    assert obj is not None
    assert not (obj.get("status") or {}).get("conditions"), "status of a foreign claim was written"
    assert obj["metadata"]["finalizers"] == ["karpenter.sh/termination"]
    assert event_reasons(cluster, name) == []
    cluster.kubectl("delete", "nodeclaim", name, "--wait=false")
    # Its finalizer belongs to someone else: we must not remove it.
    wait_for(
        "foreign claim marked for deletion",
        lambda: (get_json(cluster, "nodeclaim", name) or {}).get("metadata", {}).get("deletionTimestamp"),
    )
    delete_and_wait(cluster, "nodeclaim", mine)
    obj = get_json(cluster, "nodeclaim", name)
    assert obj is not None and obj["metadata"]["finalizers"] == ["karpenter.sh/termination"]
    cluster.kubectl("patch", "nodeclaim", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')


def test_termination_grace_period_bounds_a_blocked_drain(cluster: Cluster, controller: Controller) -> None:
    name = random_claim_name()
    claim = controller.label(kaito_nodeclaim(name))
    claim["spec"]["terminationGracePeriod"] = "5s"
    create(cluster, claim)
    ready_claim = wait_for("nodeclaim Ready", lambda: ready(cluster, "nodeclaim", name))
    node_name = ready_claim["status"]["nodeName"]
    app = f"app-{name}"
    create(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"blocked-{name}", "namespace": "default", "labels": {"app": app}},
            "spec": {
                "nodeName": node_name,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "registry.local/c:1"}],
            },
        },
    )
    create(
        cluster,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": f"pdb-{name}", "namespace": "default"},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": app}}},
        },
    )
    cluster.kubectl("delete", "nodeclaim", name, "--wait=false")
    wait_for("FailedDraining event", lambda: "FailedDraining" in event_reasons(cluster, name))
    assert get_json(cluster, "nodeclaim", name) is not None, "the PDB must hold the claim at first"
    # Once the deadline is less than the pod's own grace period away, the pod is deleted directly
    # (the PDB no longer applies), so it still gets its grace period before the node goes.
    wait_for(
        "pod deleted before the deadline", lambda: "DeletingPodBeforeDeadline" in event_reasons(cluster, name)
    )
    wait_for(
        "nodeclaim gone after its grace period", lambda: get_json(cluster, "nodeclaim", name) is None, 60
    )
    cluster.kubectl("delete", "pdb", f"pdb-{name}", "-n", "default")


def test_a_claim_that_loses_its_selector_label_is_still_cleaned_up(
    cluster: Cluster, controller: Controller
) -> None:
    name = random_claim_name()
    create(cluster, controller.label(kaito_machine(name)))
    machine = wait_for("machine Ready", lambda: ready(cluster, "machine", name))
    assert machine["metadata"]["annotations"]["gpu-provisioner.sh/managed-by"] == f"e2e-{controller.run_id}"
    node_name = machine["status"]["nodeName"]
    cluster.kubectl("label", "machine", name, f"{controller.selector}-")
    delete_and_wait(cluster, "machine", name)
    wait_for("node gone", lambda: get_json(cluster, "node", node_name) is None)


def test_max_nodes_makes_a_claim_wait_until_a_node_is_freed(cluster: Cluster, tmp_path: Path) -> None:
    ctl = Controller(cluster, tmp_path, env={"MAX_NODES": "1"}).start()
    try:
        first, second = random_claim_name(), random_claim_name()
        create(cluster, ctl.label(kaito_machine(first)))
        wait_for("first machine Ready", lambda: ready(cluster, "machine", first))
        create(cluster, ctl.label(kaito_machine(second)))
        waiting = wait_for(
            "second machine waits",
            lambda: (
                (m := get_json(cluster, "machine", second))
                and conditions(m).get("MachineLaunched", {}).get("reason") == "NodeLimitReached"
                and m
            ),
        )
        assert conditions(waiting)["MachineLaunched"]["status"] == "False"
        assert "NodeLimitReached" in event_reasons(cluster, second)
        delete_and_wait(cluster, "machine", first)
        wait_for("second machine Ready once the first is gone", lambda: ready(cluster, "machine", second), 60)
        delete_and_wait(cluster, "machine", second)
    finally:
        ctl.stop()
