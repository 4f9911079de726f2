"""The Machine, NodeClaim, NodePool and KaitoNodeClass CRDs against a real kube-apiserver.

What Kaito sends must be stored unchanged, what Karpenter refuses must be refused with a message
that names the problem, and `kubectl get` must show the columns operators know from Karpenter.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from fakes.kaito import kaito_machine, kaito_nodeclaim, random_claim_name

pytestmark = pytest.mark.e2e

GROUP = "karpenter.sh"
NODECLAIM_VERSION = "v1"

MACHINE_COLUMNS = ["NAME", "TYPE", "ZONE", "NODE", "READY", "AGE"]
MACHINE_WIDE_COLUMNS = [*MACHINE_COLUMNS, "CAPACITY", "PROVISIONER", "TEMPLATE"]
NODECLAIM_COLUMNS = ["NAME", "TYPE", "CAPACITY", "ZONE", "NODE", "READY", "AGE"]
NODECLAIM_WIDE_COLUMNS = [*NODECLAIM_COLUMNS, "IMAGEID", "ID", "NODEPOOL", "NODECLASS", "DRIFTED"]
NODEPOOL_COLUMNS = ["NAME", "NODECLASS", "NODES", "READY", "AGE"]
NODEPOOL_WIDE_COLUMNS = [
    "NAME",
    "NODECLASS",
    "NODES",
    "REPLICAS",
    "READY",
    "AGE",
    "WEIGHT",
    "CPU",
    "MEMORY",
    "GPU",
]
NODECLASS_COLUMNS = ["NAME", "IMAGEFAMILY", "IMAGE", "READY", "AGE"]

Obj = dict[str, Any]


class KubeCluster(Protocol):
    """What these tests use of the session's `cluster` fixture."""

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...

    def api_client(self) -> ApiClient: ...


T0 = "2025-01-01T00:00:00Z"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Objects:
    """Creates claims through kubectl and deletes whatever it created when the test ends."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.created: list[tuple[str, str]] = []

    def create(self, obj: Obj) -> Obj:
        resource = self._resource(obj)
        self.cluster.kubectl("create", "-f", "-", input=json.dumps(obj))
        self.created.append((resource, obj["metadata"]["name"]))
        return self.get(resource, obj["metadata"]["name"])

    def reject(self, obj: Obj) -> str:
        """Create `obj`, expecting the API server to refuse it; returns kubectl's error output."""
        resource = self._resource(obj)
        name = obj["metadata"]["name"]
        proc = self.cluster.kubectl("create", "-f", "-", input=json.dumps(obj), check=False)
        if proc.returncode == 0:
            self.created.append((resource, name))
        assert proc.returncode != 0, f"{obj['kind']} was accepted:\n{json.dumps(obj, indent=1)}"
        missing = self.cluster.kubectl("get", resource, name, check=False)
        assert missing.returncode != 0 and "NotFound" in missing.stderr, missing
        return proc.stderr

    def get(self, resource: str, name: str) -> Obj:
        result: Obj = json.loads(self.cluster.kubectl("get", resource, name, "-o", "json").stdout)
        return result

    def delete_all(self) -> None:
        for resource, name in reversed(self.created):
            self.cluster.kubectl("delete", resource, name, "--ignore-not-found", "--wait=false", check=False)

    @staticmethod
    def _resource(obj: Obj) -> str:
        return {
            "Machine": "machines.karpenter.sh",
            "NodeClaim": "nodeclaims.karpenter.sh",
            "NodePool": "nodepools.karpenter.sh",
            "KaitoNodeClass": "kaitonodeclasses.kaito.sh",
        }[obj["kind"]]


@pytest.fixture
def objects(cluster: KubeCluster) -> Iterator[Objects]:
    objs = Objects(cluster)
    yield objs
    objs.delete_all()


@pytest.fixture
def custom_api(cluster: KubeCluster) -> Iterator[CustomObjectsApi]:
    client = cluster.api_client()
    try:
        yield CustomObjectsApi(client)
    finally:
        client.close()  # type: ignore[no-untyped-call]


def table(text: str) -> list[dict[str, str]]:
    """Parse `kubectl get` output by the header's column offsets (cells may be empty)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    names = header.split()
    starts: list[int] = []
    pos = 0
    for name in names:
        pos = header.index(name, pos)
        starts.append(pos)
        pos += len(name)
    rows = []
    for line in lines[1:]:
        cells = [line[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def headers(text: str) -> list[str]:
    return text.splitlines()[0].split()


# --- installation -------------------------------------------------------------------------------------


STATUS_ONLY: Obj = {"status": {}}
STATUS_AND_SCALE: Obj = {
    "status": {},
    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.nodes"},
}


@pytest.mark.parametrize(
    ("crd", "kind", "version", "subresources"),
    [
        ("machines.karpenter.sh", "Machine", "v1alpha5", STATUS_ONLY),
        ("nodeclaims.karpenter.sh", "NodeClaim", "v1", STATUS_ONLY),
        ("nodepools.karpenter.sh", "NodePool", "v1", STATUS_AND_SCALE),
        ("kaitonodeclasses.kaito.sh", "KaitoNodeClass", "v1alpha1", STATUS_ONLY),
    ],
)
def test_crd_is_established_cluster_scoped_with_status_subresource(
    cluster: KubeCluster, crd: str, kind: str, version: str, subresources: Obj
) -> None:
    obj = json.loads(cluster.kubectl("get", "crd", crd, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
    assert conditions.get("Established") == "True", obj["status"]
    assert conditions.get("NamesAccepted") == "True", obj["status"]
    assert obj["spec"]["scope"] == "Cluster"
    assert obj["spec"]["names"]["kind"] == kind
    assert obj["spec"]["names"]["categories"] == ["karpenter"]
    assert obj["status"]["acceptedNames"]["kind"] == kind
    [served] = obj["spec"]["versions"]
    assert (served["name"], served["served"], served["storage"]) == (version, True, True)
    assert served["subresources"] == subresources


# --- what Kaito sends is stored as sent -------------------------------------------------------------------


def test_kaito_machine_is_stored_unchanged(objects: Objects) -> None:
    sent = kaito_machine(random_claim_name())
    stored = objects.create(sent)
    assert stored["spec"] == sent["spec"]
    assert stored["metadata"]["labels"] == sent["metadata"]["labels"]
    assert "status" not in stored or not stored["status"]


def test_kaito_nodeclaim_is_stored_unchanged_with_default_expiry(objects: Objects) -> None:
    sent = kaito_nodeclaim(random_claim_name())
    stored = objects.create(sent)
    assert stored["spec"] == {**sent["spec"], "expireAfter": "720h"}
    assert stored["metadata"]["labels"] == sent["metadata"]["labels"]
    assert stored["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert stored["metadata"]["annotations"]["kaito.sh/node-image-family"] == "ubuntu"


def test_kaito_ragengine_claims_are_accepted(objects: Objects) -> None:
    machine = objects.create(kaito_machine(random_claim_name(), workspace="rag", ragengine=True))
    claim = objects.create(kaito_nodeclaim(random_claim_name(), workspace="rag", ragengine=True))
    for stored in (machine, claim):
        assert stored["metadata"]["labels"]["kaito.sh/ragengine"] == "rag"
        assert stored["metadata"]["labels"]["kaito.sh/ragenginenamespace"] == "default"


def test_nodeclaim_referencing_aksnodeclass_without_group_is_accepted(objects: Objects) -> None:
    sent = kaito_nodeclaim(random_claim_name())
    sent["spec"]["nodeClassRef"] = {"group": "", "kind": "AKSNodeClass", "name": "default"}
    stored = objects.create(sent)
    assert stored["spec"]["nodeClassRef"] == {"group": "", "kind": "AKSNodeClass", "name": "default"}


def test_nodeclaim_with_several_instance_types_and_min_values_is_accepted(objects: Objects) -> None:
    sent = kaito_nodeclaim(random_claim_name())
    sent["spec"]["requirements"][1] = {
        "key": "node.kubernetes.io/instance-type",
        "operator": "In",
        "values": ["Standard_NC24ads_A100_v4", "Standard_NC12s_v3"],
        "minValues": 2,
    }
    sent["spec"]["requirements"].append(
        {"key": "karpenter.azure.com/sku-gpu-count", "operator": "Gt", "values": ["0"]}
    )
    sent["spec"]["startupTaints"] = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoExecute"}]
    sent["spec"]["terminationGracePeriod"] = "1h30m"
    sent["spec"]["expireAfter"] = "Never"
    stored = objects.create(sent)
    assert stored["spec"] == sent["spec"]


# --- what Karpenter refuses is refused, with a message naming the problem -----------------------------


def _requirement(claim: Obj, **requirement: Any) -> None:
    claim["spec"]["requirements"].append(requirement)


NODECLAIM_REJECTIONS: dict[str, tuple[Callable[[Obj], None], list[str]]] = {
    "requirements missing": (
        lambda c: c["spec"].pop("requirements"),
        ["spec.requirements", "Required value"],
    ),
    "nodeClassRef missing": (
        lambda c: c["spec"].pop("nodeClassRef"),
        ["spec.nodeClassRef", "Required value"],
    ),
    "nodeClassRef without kind": (
        lambda c: c["spec"]["nodeClassRef"].pop("kind"),
        ["spec.nodeClassRef.kind", "Required value"],
    ),
    "nodeClassRef with empty name": (
        lambda c: c["spec"]["nodeClassRef"].update(name=""),
        ["spec.nodeClassRef.name", "name may not be empty"],
    ),
    "nodeClassRef group with a version": (
        lambda c: c["spec"]["nodeClassRef"].update(group="kaito.sh/v1alpha1"),
        ["spec.nodeClassRef.group", "should match"],
    ),
    "In without values": (
        lambda c: _requirement(c, key="kaito.sh/machine-type", operator="In"),
        ["spec.requirements", "requirements with operator 'In' must have a value defined"],
    ),
    "In with an empty value list": (
        lambda c: _requirement(c, key="kaito.sh/machine-type", operator="In", values=[]),
        ["requirements with operator 'In' must have a value defined"],
    ),
    "Gt with two values": (
        lambda c: _requirement(c, key="karpenter.azure.com/sku-gpu-count", operator="Gt", values=["1", "2"]),
        ["requirements operator 'Gt' or 'Lt' must have a single positive integer value"],
    ),
    "Gt with a value that is not a number": (
        lambda c: _requirement(c, key="karpenter.azure.com/sku-gpu-count", operator="Gt", values=["many"]),
        ["requirements operator 'Gt' or 'Lt' must have a single positive integer value"],
    ),
    "Lt with a negative value": (
        lambda c: _requirement(c, key="karpenter.azure.com/sku-gpu-count", operator="Lt", values=["-1"]),
        ["requirements operator 'Gt' or 'Lt' must have a single positive integer value"],
    ),
    "unknown operator": (
        lambda c: _requirement(c, key="kaito.sh/machine-type", operator="Equals", values=["gpu"]),
        ["spec.requirements[4].operator", 'Unsupported value: "Equals"'],
    ),
    "minValues above the number of values": (
        lambda c: c["spec"]["requirements"][1].update(minValues=2),
        ["requirements with 'minValues' must have at least that many values specified in the 'values' field"],
    ),
    "hostname requirement": (
        lambda c: _requirement(c, key="kubernetes.io/hostname", operator="In", values=["node-1"]),
        ['label "kubernetes.io/hostname" is restricted'],
    ),
    "karpenter.sh key other than nodepool and capacity-type": (
        lambda c: _requirement(c, key="karpenter.sh/provisioner-name", operator="In", values=["default"]),
        ["spec.requirements[4].key", 'label domain "karpenter.sh" is restricted'],
    ),
    "kubernetes.io key outside the well-known ones": (
        lambda c: _requirement(c, key="example.kubernetes.io/team", operator="In", values=["a"]),
        ['label domain "kubernetes.io" is restricted'],
    ),
    "k8s.io key": (
        lambda c: _requirement(c, key="example.k8s.io/team", operator="In", values=["a"]),
        ['label domain "k8s.io" is restricted'],
    ),
    "invalid label key": (
        lambda c: _requirement(c, key="not a label", operator="Exists"),
        ["spec.requirements[4].key", "should match"],
    ),
    "taint with an unknown effect": (
        lambda c: c["spec"]["taints"].append({"key": "sku", "value": "gpu", "effect": "NoWhere"}),
        ["spec.taints[1].effect", 'Unsupported value: "NoWhere"'],
    ),
    "requirement value that is not a label value": (
        lambda c: _requirement(c, key="example.com/team", operator="In", values=["café"]),
        ["spec.requirements[4].values[0]", "should match"],
    ),
    "requirement value longer than a label value": (
        lambda c: _requirement(c, key="example.com/team", operator="In", values=["x" * 64]),
        ["spec.requirements[4].values[0]", "may not be more than 63"],
    ),
    "taint without key": (
        lambda c: c["spec"]["taints"].append({"effect": "NoSchedule"}),
        ["spec.taints[1].key", "Required value"],
    ),
    "expireAfter in days": (
        lambda c: c["spec"].update(expireAfter="30d"),
        ["spec.expireAfter", "should match"],
    ),
    "storage request that is not a quantity": (
        lambda c: c["spec"]["resources"]["requests"].update(storage="lots"),
        ["spec.resources.requests.storage", "should match"],
    ),
    "spec missing": (
        lambda c: c.pop("spec"),
        ["spec", "Required value"],
    ),
}


@pytest.mark.parametrize("case", list(NODECLAIM_REJECTIONS))
def test_invalid_nodeclaim_is_rejected_with_the_reason(objects: Objects, case: str) -> None:
    mutate, expected = NODECLAIM_REJECTIONS[case]
    claim = kaito_nodeclaim(random_claim_name())
    mutate(claim)
    error = objects.reject(claim)
    assert "is invalid" in error, error
    for text in expected:
        assert text in error, f"{case}: {text!r} not in {error!r}"


MACHINE_REJECTIONS: dict[str, tuple[Callable[[Obj], None], list[str]]] = {
    "unknown operator": (
        lambda m: m["spec"]["requirements"].append({"key": "kaito.sh/machine-type", "operator": "in"}),
        ["spec.requirements[5].operator", 'Unsupported value: "in"'],
    ),
    "requirement without key": (
        lambda m: m["spec"]["requirements"].append({"operator": "Exists"}),
        ["spec.requirements[5].key", "Required value"],
    ),
    "machineTemplateRef without name": (
        lambda m: m["spec"]["machineTemplateRef"].pop("name"),
        ["spec.machineTemplateRef.name", "Required value"],
    ),
    "taint without effect": (
        lambda m: m["spec"]["taints"][0].pop("effect"),
        ["spec.taints[0].effect", "Required value"],
    ),
    "taint with an unknown effect": (
        lambda m: m["spec"]["taints"][0].update(effect="noschedule"),
        ["spec.taints[0].effect", 'Unsupported value: "noschedule"'],
    ),
    "requirement value that is not a label value": (
        lambda m: m["spec"]["requirements"].append(
            {"key": "example.com/t", "operator": "In", "values": ["a b"]}
        ),
        ["spec.requirements[5].values[0]", "should match"],
    ),
    "storage request that is not a quantity": (
        lambda m: m["spec"]["resources"]["requests"].update(storage="120 GB"),
        ["spec.resources.requests.storage", "should match"],
    ),
    "maxPods below zero": (
        lambda m: m["spec"].update(kubelet={"maxPods": -1}),
        ["spec.kubelet.maxPods", "should be greater than or equal to 0"],
    ),
}


@pytest.mark.parametrize("case", list(MACHINE_REJECTIONS))
def test_invalid_machine_is_rejected_with_the_reason(objects: Objects, case: str) -> None:
    mutate, expected = MACHINE_REJECTIONS[case]
    machine = kaito_machine(random_claim_name())
    mutate(machine)
    error = objects.reject(machine)
    assert "is invalid" in error, error
    for text in expected:
        assert text in error, f"{case}: {text!r} not in {error!r}"


def test_machine_accepts_every_kubelet_setting(objects: Objects) -> None:
    sent = kaito_machine(random_claim_name())
    sent["spec"]["kubelet"] = {
        "clusterDNS": ["10.0.0.10"],
        "containerRuntime": "containerd",
        "cpuCFSQuota": True,
        "evictionHard": {"memory.available": "5%"},
        "evictionSoft": {"memory.available": "10%"},
        "evictionSoftGracePeriod": {"memory.available": "1m"},
        "evictionMaxPodGracePeriod": 60,
        "imageGCHighThresholdPercent": 85,
        "imageGCLowThresholdPercent": 80,
        "kubeReserved": {"cpu": "100m", "memory": "1Gi"},
        "systemReserved": {"cpu": "100m", "memory": "500Mi"},
        "maxPods": 110,
        "podsPerCore": 10,
    }
    sent["spec"]["startupTaints"] = [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    stored = objects.create(sent)
    assert stored["spec"] == sent["spec"]


# --- immutability and the status subresource -----------------------------------------------------------


def test_nodeclaim_spec_is_immutable_but_metadata_is_not(cluster: KubeCluster, objects: Objects) -> None:
    claim = objects.create(kaito_nodeclaim(random_claim_name()))
    name = claim["metadata"]["name"]
    change = cluster.kubectl(
        "patch",
        "nodeclaims.karpenter.sh",
        name,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"taints": []}}),
        check=False,
    )
    assert change.returncode != 0
    assert "spec is immutable" in change.stderr, change.stderr
    assert objects.get("nodeclaims.karpenter.sh", name)["spec"] == claim["spec"]

    cluster.kubectl(
        "label", "nodeclaims.karpenter.sh", name, "node.kubernetes.io/instance-type=Standard_NC12s_v3"
    )
    cluster.kubectl("annotate", "nodeclaims.karpenter.sh", name, "example.com/note=kept")
    after = objects.get("nodeclaims.karpenter.sh", name)
    assert after["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "Standard_NC12s_v3"
    assert after["metadata"]["annotations"]["example.com/note"] == "kept"
    assert after["spec"] == claim["spec"]


def test_machine_spec_can_change(cluster: KubeCluster, objects: Objects) -> None:
    machine = objects.create(kaito_machine(random_claim_name()))
    name = machine["metadata"]["name"]
    cluster.kubectl("patch", "machines.karpenter.sh", name, "--type=merge", "-p", '{"spec":{"taints":[]}}')
    assert objects.get("machines.karpenter.sh", name)["spec"].get("taints", []) == []


def test_status_is_only_written_through_the_status_subresource(
    cluster: KubeCluster, objects: Objects, custom_api: CustomObjectsApi
) -> None:
    claim = objects.create(kaito_nodeclaim(random_claim_name()))
    name = claim["metadata"]["name"]
    # Through the main resource the status is dropped silently...
    cluster.kubectl(
        "patch", "nodeclaims.karpenter.sh", name, "--type=merge", "-p", '{"status":{"nodeName":"ignored"}}'
    )
    assert "nodeName" not in objects.get("nodeclaims.karpenter.sh", name).get("status", {})
    # ...through the status subresource it is stored, and a spec change riding along is dropped.
    custom_api.patch_cluster_custom_object_status(
        GROUP,
        NODECLAIM_VERSION,
        "nodeclaims",
        name,
        {"spec": {"taints": []}, "status": {"nodeName": "aks-ws-node", "imageID": "img-1"}},
    )
    stored = objects.get("nodeclaims.karpenter.sh", name)
    assert stored["status"]["nodeName"] == "aks-ws-node"
    assert stored["status"]["imageID"] == "img-1"
    assert stored["spec"] == claim["spec"]


def test_status_fields_outside_the_schema_are_pruned(objects: Objects, custom_api: CustomObjectsApi) -> None:
    claim = objects.create(kaito_nodeclaim(random_claim_name()))
    name = claim["metadata"]["name"]
    custom_api.patch_cluster_custom_object_status(
        GROUP,
        NODECLAIM_VERSION,
        "nodeclaims",
        name,
        {"status": {"providerID": "azure:///x", "kopf": {"progress": {"launch": {"retries": 1}}}}},
    )
    status = objects.get("nodeclaims.karpenter.sh", name)["status"]
    assert status == {"providerID": "azure:///x"}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (
            {
                "type": "Launched",
                "status": "False",
                "reason": "Insufficient capacity",
                "lastTransitionTime": T0,
            },
            ["status.conditions[0].reason", "should match"],
        ),
        (
            {"type": "Launched", "status": "False", "reason": "InsufficientCapacity"},
            ["status.conditions[0].lastTransitionTime", "Required value"],
        ),
        (
            {
                "type": "Launched",
                "status": "Maybe",
                "reason": "InsufficientCapacity",
                "lastTransitionTime": T0,
            },
            ["status.conditions[0].status", 'Unsupported value: "Maybe"'],
        ),
    ],
)
def test_nodeclaim_conditions_are_validated(
    objects: Objects, custom_api: CustomObjectsApi, condition: Obj, expected: list[str]
) -> None:
    claim = objects.create(kaito_nodeclaim(random_claim_name()))
    name = claim["metadata"]["name"]
    with pytest.raises(ApiException) as raised:
        custom_api.patch_cluster_custom_object_status(
            GROUP, NODECLAIM_VERSION, "nodeclaims", name, {"status": {"conditions": [condition]}}
        )
    assert raised.value.status == 422
    message = json.loads(raised.value.body or "{}").get("message", "")
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    assert "conditions" not in objects.get("nodeclaims.karpenter.sh", name).get("status", {})


def test_nodeclaim_condition_reasons_kaito_relies_on_are_accepted(
    objects: Objects, custom_api: CustomObjectsApi
) -> None:
    claim = objects.create(kaito_nodeclaim(random_claim_name()))
    name = claim["metadata"]["name"]
    conditions = [
        {
            "type": "Launched",
            "status": "False",
            "reason": "InsufficientCapacity:SkuNotAvailable",
            "message": "all requested instance types were unavailable during launch: NCSv3 family needs 12 vCPUs",
            "lastTransitionTime": now(),
            "observedGeneration": 1,
        },
        {"type": "Ready", "status": "Unknown", "reason": "UnhealthyDependents", "lastTransitionTime": now()},
        {
            "type": "Registered",
            "status": "Unknown",
            "reason": "AwaitingReconciliation",
            "lastTransitionTime": now(),
        },
        {"type": "Initialized", "status": "Unknown", "reason": "", "lastTransitionTime": now()},
    ]
    custom_api.patch_cluster_custom_object_status(
        GROUP, NODECLAIM_VERSION, "nodeclaims", name, {"status": {"conditions": conditions}}
    )
    assert objects.get("nodeclaims.karpenter.sh", name)["status"]["conditions"] == conditions


# --- kubectl get ----------------------------------------------------------------------------------------


def test_get_machines_shows_karpenter_columns(cluster: KubeCluster, objects: Objects) -> None:
    machine = kaito_machine(random_claim_name())
    name = machine["metadata"]["name"]
    machine["metadata"]["labels"].update(
        {
            "node.kubernetes.io/instance-type": "Standard_NC12s_v3",
            "topology.kubernetes.io/zone": "eastus-1",
            "karpenter.sh/capacity-type": "on-demand",
        }
    )
    objects.create(machine)

    plain = cluster.kubectl("get", "machines", name).stdout
    assert headers(plain) == MACHINE_COLUMNS
    [row] = table(plain)
    assert row["NAME"] == name
    assert row["TYPE"] == "Standard_NC12s_v3"
    assert row["ZONE"] == "eastus-1"
    assert row["READY"] != "True"
    assert row["NODE"] in ("", "<none>")

    status = {
        "status": {
            "nodeName": "aks-" + name + "-12345678-vmss000000",
            "providerID": "azure:///subscriptions/s/resourceGroups/rg/providers/x/virtualMachines/0",
            "conditions": [
                {"type": "MachineLaunched", "status": "True", "lastTransitionTime": now()},
                {"type": "Ready", "status": "True", "severity": "", "lastTransitionTime": now()},
            ],
        }
    }
    cluster.kubectl(
        "patch",
        "machines.karpenter.sh",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )

    wide = cluster.kubectl("get", "machines", name, "-o", "wide").stdout
    assert headers(wide) == MACHINE_WIDE_COLUMNS
    [row] = table(wide)
    assert row["NODE"] == "aks-" + name + "-12345678-vmss000000"
    assert row["READY"] == "True"
    assert row["CAPACITY"] == "on-demand"
    assert row["PROVISIONER"] == "default"
    assert row["TEMPLATE"] == name


def test_get_nodeclaims_shows_karpenter_columns(
    cluster: KubeCluster, objects: Objects, custom_api: CustomObjectsApi
) -> None:
    claim = objects.create(kaito_nodeclaim(random_claim_name()))
    name = claim["metadata"]["name"]

    plain = cluster.kubectl("get", "nodeclaims", name).stdout
    assert headers(plain) == NODECLAIM_COLUMNS
    [row] = table(plain)
    assert row["NAME"] == name
    assert row["READY"] != "True"
    assert row["NODE"] in ("", "<none>")

    cluster.kubectl(
        "label",
        "nodeclaims.karpenter.sh",
        name,
        "node.kubernetes.io/instance-type=Standard_NC12s_v3",
        "topology.kubernetes.io/zone=eastus-2",
        "karpenter.sh/capacity-type=on-demand",
    )
    node_name = "aks-" + name + "-12345678-vmss000000"
    provider_id = (
        "azure:///subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mc_rg/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/aks-{name}-12345678-vmss/virtualMachines/0"
    )
    custom_api.patch_cluster_custom_object_status(
        GROUP,
        NODECLAIM_VERSION,
        "nodeclaims",
        name,
        {
            "status": {
                "nodeName": node_name,
                "providerID": provider_id,
                "imageID": "AKSUbuntu-2204gen2containerd-202501.01.0",
                "conditions": [
                    {"type": "Launched", "status": "True", "reason": "Launched", "lastTransitionTime": now()},
                    {"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": now()},
                    {
                        "type": "Drifted",
                        "status": "True",
                        "reason": "NodeClassDrift",
                        "lastTransitionTime": now(),
                    },
                ],
            }
        },
    )

    plain = cluster.kubectl("get", "nodeclaims", name).stdout
    [row] = table(plain)
    assert (row["TYPE"], row["CAPACITY"], row["ZONE"]) == ("Standard_NC12s_v3", "on-demand", "eastus-2")
    assert row["NODE"] == node_name
    assert row["READY"] == "True"

    wide = cluster.kubectl("get", "nodeclaims", name, "-o", "wide").stdout
    assert headers(wide) == NODECLAIM_WIDE_COLUMNS
    [row] = table(wide)
    assert row["READY"] == "True"
    assert row["IMAGEID"] == "AKSUbuntu-2204gen2containerd-202501.01.0"
    assert row["ID"] == provider_id
    assert row["NODEPOOL"] == "kaito"
    assert row["NODECLASS"] == "default"
    assert row["DRIFTED"] == "True"


def test_ready_column_follows_the_ready_condition_only(
    cluster: KubeCluster, objects: Objects, custom_api: CustomObjectsApi
) -> None:
    claim = objects.create(kaito_nodeclaim(random_claim_name()))
    name = claim["metadata"]["name"]
    conditions = [
        {"type": "Initialized", "status": "True", "reason": "Initialized", "lastTransitionTime": now()},
        {"type": "Ready", "status": "False", "reason": "UnhealthyDependents", "lastTransitionTime": now()},
    ]
    custom_api.patch_cluster_custom_object_status(
        GROUP, NODECLAIM_VERSION, "nodeclaims", name, {"status": {"conditions": conditions}}
    )
    [row] = table(cluster.kubectl("get", "nodeclaims", name).stdout)
    assert row["READY"] == "False"


def test_karpenter_category_lists_machines_and_nodeclaims(cluster: KubeCluster, objects: Objects) -> None:
    machine = objects.create(kaito_machine(random_claim_name()))
    claim = objects.create(kaito_nodeclaim(random_claim_name()))
    names = set(cluster.kubectl("get", "karpenter", "-o", "name").stdout.split())
    assert f"machine.karpenter.sh/{machine['metadata']['name']}" in names
    assert f"nodeclaim.karpenter.sh/{claim['metadata']['name']}" in names


def test_kaito_node_class_resolves_kaitos_node_class_ref(cluster: KubeCluster) -> None:
    """Newer Kaito NodeClaims point at KaitoNodeClass "default"; the CRD ships with us."""
    body = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "KaitoNodeClass",
        "metadata": {"name": "default"},
        "spec": {},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    got = json.loads(cluster.kubectl("get", "kaitonodeclass", "default", "-o", "json").stdout)
    assert got["kind"] == "KaitoNodeClass"
    assert "default" in cluster.kubectl("get", "knc").stdout


# --- NodePool (Kaito's karpenter mode) --------------------------------------------------------------------


def kaito_nodepool(name: str = "default-phi-4", replicas: int = 2) -> Obj:
    """The NodePool Kaito v0.12 generates for workspace phi-4 in namespace default (2 nodes)."""
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {
            "name": name,
            "labels": {
                "karpenter.kaito.sh/managed-by": "kaito",
                "karpenter.kaito.sh/workspace-name": "phi-4",
                "karpenter.kaito.sh/workspace-namespace": "default",
            },
        },
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {
                    "labels": {
                        "karpenter.kaito.sh/workspace-name": "phi-4",
                        "karpenter.kaito.sh/workspace-namespace": "default",
                        "apps": "phi-4",
                    }
                },
                "spec": {
                    "nodeClassRef": {
                        "group": "kaito.sh",
                        "kind": "KaitoNodeClass",
                        "name": "image-family-ubuntu",
                    },
                    "requirements": [
                        {
                            "key": "node.kubernetes.io/instance-type",
                            "operator": "In",
                            "values": ["Standard_NC24ads_A100_v4"],
                        }
                    ],
                    "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
                },
            },
            "disruption": {"consolidateAfter": "0s", "budgets": [{"nodes": "1", "reasons": ["Drifted"]}]},
        },
    }


def random_pool_name() -> str:
    return f"pool-{random_claim_name()}"


def test_kaito_nodepool_is_stored_as_sent_with_karpenters_defaults(objects: Objects) -> None:
    sent = kaito_nodepool(random_pool_name())
    stored = objects.create(sent)
    expected = json.loads(json.dumps(sent["spec"]))
    expected["template"]["spec"]["expireAfter"] = "720h"
    expected["disruption"]["consolidationPolicy"] = "WhenEmptyOrUnderutilized"
    assert stored["spec"] == expected
    assert stored["metadata"]["labels"] == sent["metadata"]["labels"]


def test_dynamic_nodepool_gets_karpenters_disruption_defaults(objects: Objects) -> None:
    pool = kaito_nodepool(random_pool_name())
    del pool["spec"]["replicas"], pool["spec"]["disruption"]
    pool["spec"]["limits"] = {"cpu": "1000", "nvidia.com/gpu": 8}
    pool["spec"]["weight"] = 50
    stored = objects.create(pool)
    assert stored["spec"]["disruption"] == {
        "consolidateAfter": "0s",
        "consolidationPolicy": "WhenEmptyOrUnderutilized",
        "budgets": [{"nodes": "10%"}],
    }
    assert stored["spec"]["limits"] == {"cpu": "1000", "nvidia.com/gpu": 8}


def test_nodepool_budget_with_a_schedule_and_a_duration_is_accepted(objects: Objects) -> None:
    pool = kaito_nodepool(random_pool_name())
    pool["spec"]["disruption"]["budgets"] = [
        {"nodes": "0", "schedule": "0 9 * * mon-fri", "duration": "8h"},
        {"nodes": "100%", "reasons": ["Empty", "Underutilized"], "schedule": "@daily", "duration": "1h30m"},
        {"nodes": "20%"},
    ]
    assert objects.create(pool)["spec"]["disruption"]["budgets"] == pool["spec"]["disruption"]["budgets"]


def _budget(pool: Obj, **budget: Any) -> None:
    pool["spec"]["disruption"]["budgets"] = [budget]


NODEPOOL_REJECTIONS: dict[str, tuple[Callable[[Obj], None], list[str]]] = {
    "budget with a schedule but no duration": (
        lambda p: _budget(p, nodes="1", schedule="@daily"),
        ["spec.disruption.budgets[0]", "'schedule' must be set with 'duration'"],
    ),
    "budget with a duration but no schedule": (
        lambda p: _budget(p, nodes="1", duration="1h"),
        ["'schedule' must be set with 'duration'"],
    ),
    "budget of more than 100%": (
        lambda p: _budget(p, nodes="150%"),
        ["spec.disruption.budgets[0].nodes", "should match"],
    ),
    "budget with a schedule of four fields": (
        lambda p: _budget(p, nodes="1", schedule="0 9 * *", duration="1h"),
        ["spec.disruption.budgets[0].schedule", "should match"],
    ),
    "budget duration in seconds": (
        lambda p: _budget(p, nodes="1", schedule="@hourly", duration="30s"),
        ["spec.disruption.budgets[0].duration", "should match"],
    ),
    "budget reason that does not exist": (
        lambda p: _budget(p, nodes="1", reasons=["Expired"]),
        ["spec.disruption.budgets[0].reasons[0]", 'Unsupported value: "Expired"'],
    ),
    "unknown consolidation policy": (
        lambda p: p["spec"]["disruption"].update(consolidationPolicy="Balanced"),
        ["spec.disruption.consolidationPolicy", 'Unsupported value: "Balanced"'],
    ),
    "negative replicas": (
        lambda p: p["spec"].update(replicas=-1),
        ["spec.replicas", "should be greater than or equal to 0"],
    ),
    "weight above 100": (
        lambda p: p["spec"].update(weight=101),
        ["spec.weight", "should be less than or equal to 100"],
    ),
    "limit that is not a quantity": (
        lambda p: p["spec"].update(limits={"cpu": "lots"}),
        ["spec.limits.cpu", "should match"],
    ),
    "template without nodeClassRef": (
        lambda p: p["spec"]["template"]["spec"].pop("nodeClassRef"),
        ["spec.template.spec.nodeClassRef", "Required value"],
    ),
    "nodeClassRef with empty name": (
        lambda p: p["spec"]["template"]["spec"]["nodeClassRef"].update(name=""),
        ["spec.template.spec.nodeClassRef.name"],
    ),
    "In without values": (
        lambda p: p["spec"]["template"]["spec"]["requirements"].append(
            {"key": "example.com/a", "operator": "In"}
        ),
        ["requirements with operator 'In' must have a value defined"],
    ),
    "taint with an unknown effect": (
        lambda p: p["spec"]["template"]["spec"]["taints"][0].update(effect="NoWhere"),
        ["spec.template.spec.taints[0].effect", 'Unsupported value: "NoWhere"'],
    ),
    "template label karpenter.sh/nodepool": (
        lambda p: p["spec"]["template"]["metadata"]["labels"].update({"karpenter.sh/nodepool": "x"}),
        ['label "karpenter.sh/nodepool" is restricted'],
    ),
    "expireAfter in days": (
        lambda p: p["spec"]["template"]["spec"].update(expireAfter="30d"),
        ["spec.template.spec.expireAfter", "should match"],
    ),
    "template missing": (
        lambda p: p["spec"].pop("template"),
        ["spec.template", "Required value"],
    ),
}


@pytest.mark.parametrize("case", list(NODEPOOL_REJECTIONS))
def test_invalid_nodepool_is_rejected_with_the_reason(objects: Objects, case: str) -> None:
    mutate, expected = NODEPOOL_REJECTIONS[case]
    pool = kaito_nodepool(random_pool_name())
    mutate(pool)
    error = objects.reject(pool)
    assert "is invalid" in error, error
    for text in expected:
        assert text in error, f"{case}: {text!r} not in {error!r}"


def test_kubectl_scale_sets_the_replicas_of_a_static_nodepool(cluster: KubeCluster, objects: Objects) -> None:
    name = objects.create(kaito_nodepool(random_pool_name()))["metadata"]["name"]
    cluster.kubectl("scale", "nodepool", name, "--replicas=3")
    assert objects.get("nodepools.karpenter.sh", name)["spec"]["replicas"] == 3
    scale = json.loads(
        cluster.kubectl("get", "--raw", f"/apis/karpenter.sh/v1/nodepools/{name}/scale").stdout
    )
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3


def test_nodepool_cannot_switch_between_static_and_dynamic(cluster: KubeCluster, objects: Objects) -> None:
    static = objects.create(kaito_nodepool(random_pool_name()))["metadata"]["name"]
    remove = cluster.kubectl(
        "patch",
        "nodepool",
        static,
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/spec/replicas"}]',
        check=False,
    )
    assert remove.returncode != 0
    assert "replicas cannot be added to or removed from an existing NodePool" in remove.stderr, remove.stderr
    assert objects.get("nodepools.karpenter.sh", static)["spec"]["replicas"] == 2

    pool = kaito_nodepool(random_pool_name())
    del pool["spec"]["replicas"]
    dynamic = objects.create(pool)["metadata"]["name"]
    add = cluster.kubectl(
        "patch", "nodepool", dynamic, "--type=merge", "-p", '{"spec":{"replicas":1}}', check=False
    )
    assert add.returncode != 0
    assert "replicas cannot be added to or removed from an existing NodePool" in add.stderr, add.stderr


def test_nodepool_status_and_columns(
    cluster: KubeCluster, objects: Objects, custom_api: CustomObjectsApi
) -> None:
    name = objects.create(kaito_nodepool(random_pool_name()))["metadata"]["name"]
    plain = cluster.kubectl("get", "nodepools", name).stdout
    assert headers(plain) == NODEPOOL_COLUMNS
    [row] = table(plain)
    assert row["NODECLASS"] == "image-family-ubuntu"
    assert row["NODES"] in ("", "<none>")

    status = {
        "nodes": 2,
        "resources": {"cpu": "48", "memory": "440Gi", "nvidia.com/gpu": "2", "nodes": "2"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Ready",
                "message": "",
                "lastTransitionTime": now(),
                "observedGeneration": 1,
            },
            {
                "type": "NodeClassReady",
                "status": "True",
                "reason": "NodeClassReady",
                "message": "",
                "lastTransitionTime": now(),
            },
        ],
    }
    custom_api.patch_cluster_custom_object_status(GROUP, "v1", "nodepools", name, {"status": status})
    assert objects.get("nodepools.karpenter.sh", name)["status"] == status

    wide = cluster.kubectl("get", "nodepools", name, "-o", "wide").stdout
    assert headers(wide) == NODEPOOL_WIDE_COLUMNS
    [row] = table(wide)
    assert (row["NODES"], row["REPLICAS"], row["READY"]) == ("2", "2", "True")
    assert (row["CPU"], row["MEMORY"], row["GPU"]) == ("48", "440Gi", "2")
    names = set(cluster.kubectl("get", "karpenter", "-o", "name").stdout.split())
    assert f"nodepool.karpenter.sh/{name}" in names


def test_nodepool_condition_without_a_reason_is_refused(
    objects: Objects, custom_api: CustomObjectsApi
) -> None:
    name = objects.create(kaito_nodepool(random_pool_name()))["metadata"]["name"]
    condition = {"type": "Ready", "status": "True", "reason": "", "message": "", "lastTransitionTime": now()}
    with pytest.raises(ApiException) as raised:
        custom_api.patch_cluster_custom_object_status(
            GROUP, "v1", "nodepools", name, {"status": {"conditions": [condition]}}
        )
    assert raised.value.status == 422
    assert "status.conditions[0].reason" in (raised.value.body or "")


# --- KaitoNodeClass ------------------------------------------------------------------------------------


def kaito_node_class(name: str, spec: Obj | None, default: bool = False) -> Obj:
    """A KaitoNodeClass as Kaito v0.12 creates it at start-up."""
    labels = {"karpenter.kaito.sh/managed-by": "kaito"}
    if default:
        labels["karpenter.kaito.sh/default"] = "true"
    body: Obj = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "KaitoNodeClass",
        "metadata": {"name": name, "labels": labels},
    }
    if spec is not None:
        body["spec"] = spec
    return body


def test_kaitos_start_up_node_classes_are_stored_unchanged(objects: Objects) -> None:
    suffix = random_claim_name()
    for name, spec, default in (
        ("image-family-ubuntu", {"imageFamily": "Ubuntu2204", "osDiskSizeGB": 300}, True),
        ("image-family-azure-linux", {"imageFamily": "AzureLinux", "osDiskSizeGB": 300}, False),
    ):
        sent = kaito_node_class(f"{name}-{suffix}", spec, default)
        stored = objects.create(sent)
        assert stored["spec"] == spec
        assert stored["metadata"]["labels"] == sent["metadata"]["labels"]


def test_node_class_without_spec_gets_an_empty_one(objects: Objects) -> None:
    body = kaito_node_class(f"nospec-{random_claim_name()}", None)
    assert objects.create(body)["spec"] == {}


def test_node_class_accepts_every_setting(objects: Objects) -> None:
    spec = {
        "imageFamily": "AzureLinux3",
        "osDiskSizeGB": 2048,
        "osDiskType": "Ephemeral",
        "maxPods": 250,
        "gpuDriver": "None",
    }
    assert objects.create(kaito_node_class(f"all-{random_claim_name()}", spec))["spec"] == spec


NODECLASS_REJECTIONS: dict[str, tuple[Obj, list[str]]] = {
    "unknown image family": (
        {"imageFamily": "Windows2022"},
        ["spec.imageFamily", 'Unsupported value: "Windows2022"'],
    ),
    "OS disk below 30 GiB": ({"osDiskSizeGB": 29}, ["spec.osDiskSizeGB", "greater than or equal to 30"]),
    "OS disk above 2048 GiB": ({"osDiskSizeGB": 4096}, ["spec.osDiskSizeGB", "less than or equal to 2048"]),
    "OS disk size as a quantity": (
        {"osDiskSizeGB": "300Gi"},
        ["spec.osDiskSizeGB", "must be of type integer"],
    ),
    "unknown OS disk type": ({"osDiskType": "Premium"}, ["spec.osDiskType", 'Unsupported value: "Premium"']),
    "maxPods below 10": ({"maxPods": 5}, ["spec.maxPods", "greater than or equal to 10"]),
    "unknown GPU driver setting": ({"gpuDriver": "Skip"}, ["spec.gpuDriver", 'Unsupported value: "Skip"']),
}


@pytest.mark.parametrize("case", list(NODECLASS_REJECTIONS))
def test_invalid_node_class_is_rejected_with_the_reason(objects: Objects, case: str) -> None:
    spec, expected = NODECLASS_REJECTIONS[case]
    error = objects.reject(kaito_node_class(f"bad-{random_claim_name()}", spec))
    assert "is invalid" in error, error
    for text in expected:
        assert text in error, f"{case}: {text!r} not in {error!r}"


def test_node_class_status_and_columns(
    cluster: KubeCluster, objects: Objects, custom_api: CustomObjectsApi
) -> None:
    name = f"ubuntu-{random_claim_name()}"
    objects.create(kaito_node_class(name, {"imageFamily": "Ubuntu2204", "osDiskSizeGB": 300}))
    status = {
        "observedGeneration": 1,
        "resolvedImage": {"family": "Ubuntu2204", "name": "Ubuntu2204", "version": ""},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": now()}
        ],
    }
    custom_api.patch_cluster_custom_object_status(
        "kaito.sh", "v1alpha1", "kaitonodeclasses", name, {"status": status}
    )
    assert objects.get("kaitonodeclasses.kaito.sh", name)["status"] == status
    out = cluster.kubectl("get", "kaitonodeclasses", name).stdout
    assert headers(out) == NODECLASS_COLUMNS
    [row] = table(out)
    assert (row["IMAGEFAMILY"], row["IMAGE"], row["READY"]) == ("Ubuntu2204", "Ubuntu2204", "True")
