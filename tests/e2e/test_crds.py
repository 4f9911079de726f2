"""The Machine and NodeClaim CRDs against a real kube-apiserver.

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
        return {"Machine": "machines.karpenter.sh", "NodeClaim": "nodeclaims.karpenter.sh"}[obj["kind"]]


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


@pytest.mark.parametrize(
    ("crd", "kind", "version"),
    [("machines.karpenter.sh", "Machine", "v1alpha5"), ("nodeclaims.karpenter.sh", "NodeClaim", "v1")],
)
def test_crd_is_established_cluster_scoped_with_status_subresource(
    cluster: KubeCluster, crd: str, kind: str, version: str
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
    assert served["subresources"] == {"status": {}}


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
