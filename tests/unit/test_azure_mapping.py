"""Pure AKS mapping rules: pool names, node labels, taints, zones, disk, OS SKU, tags, read-back."""

from __future__ import annotations

import pytest
from azure.mgmt.containerservice.models import AgentPool
from hypothesis import given
from hypothesis import strategies as st

from provisioner.cloud.azure import labels, mapping, nodes
from provisioner.cloud.azure.labels import filter_node_labels
from provisioner.cloud.azure.mapping import (
    aks_zones,
    build_pool,
    instance_from_pool,
    instance_name,
    os_disk_size,
    os_sku,
    request_warnings,
    validate_request,
)
from provisioner.cloud.azure.settings import AzureSettings
from provisioner.cloud.azure.skus import SkuFacts
from provisioner.cloud.errors import InsufficientCapacity, InvalidSpec
from provisioner.cloud.types import (
    MANAGED_BY_VALUE,
    TAG_CLAIM_NAME,
    TAG_CLAIM_UID,
    TAG_MANAGED_BY,
    CapacityType,
    InstanceRequest,
    InstanceState,
    Taint,
)

SUB = "00000000-0000-0000-0000-000000000000"
NC24 = SkuFacts("Standard_NC24ads_A100_v4", "standardNCADSA100v4Family", 24, 220, 1, ("1", "2", "3"))
D4 = SkuFacts("Standard_D4s_v3", "standardDSv3Family", 4, 16, 0, ("1", "2", "3"))


def settings(**env: str) -> AzureSettings:
    base = {
        "ARM_SUBSCRIPTION_ID": SUB,
        "ARM_RESOURCE_GROUP": "rg",
        "AZURE_CLUSTER_NAME": "aks",
        "LOCATION": "eastus",
    }
    return AzureSettings.from_env({**base, **env})


def machine_request(**kw: object) -> InstanceRequest:
    fields: dict[str, object] = {
        "claim_name": "ws0123abcd9",
        "claim_uid": "uid-1",
        "name": "ws0123abcd9",
        "instance_types": ("Standard_NC24ads_A100_v4",),
        "labels": {
            "kaito.sh/workspace": "workspace-falcon-7b",
            "kaito.sh/workspacenamespace": "default",
            "karpenter.sh/provisioner-name": "default",
        },
        "taints": (Taint("sku", "gpu", "NoSchedule"),),
        "os_disk_size_gib": 120,
    }
    fields.update(kw)
    return InstanceRequest(**fields)  # type: ignore[arg-type]


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ws0123abcd9", "a", "gpu1", "abcdefghijkl"])
def test_valid_claim_names_are_the_pool_name(name: str) -> None:
    assert instance_name(name) == name


@pytest.mark.parametrize("name", ["workspace-falcon", "Ws1", "1abc", "abcdefghijklm", "", "ws.1", "ws-1"])
def test_other_names_are_hashed_to_a_valid_stable_pool_name(name: str) -> None:
    pool = instance_name(name)
    assert pool != name
    assert mapping.POOL_NAME.match(pool)
    assert len(pool) == 12
    assert instance_name(name) == pool


def test_hashes_differ_between_names() -> None:
    names = [f"workspace-{i}" for i in range(2000)]
    assert len({instance_name(n) for n in names}) == len(names)


@given(st.text(max_size=80))
def test_every_name_maps_to_a_valid_pool_name(name: str) -> None:
    pool = instance_name(name)
    assert mapping.POOL_NAME.match(pool)
    assert instance_name(name) == pool
    if mapping.POOL_NAME.match(name):
        assert pool == name


# --- labels ----------------------------------------------------------------------------------


def test_label_filtering_keeps_claim_labels_and_reports_reserved_ones() -> None:
    kept, dropped = filter_node_labels(
        {
            "kaito.sh/workspace": "w",
            "karpenter.sh/nodepool": "kaito",
            "karpenter.azure.com/sku-name": "Standard_NC24ads_A100_v4",
            "node.kubernetes.io/exclude-from-external-load-balancers": "true",
            "example.com/team": "ml",
            "plain": "x",
            "kubernetes.azure.com/agentpool": "x",
            "sub.kubernetes.azure.com/foo": "x",
            "kubernetes.io/custom": "x",
            "foo.k8s.io/bar": "x",
            "node-restriction.kubernetes.io/x": "y",
            "node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4",
            "topology.kubernetes.io/zone": "eastus-1",
            "kubernetes.io/os": "linux",
            "Bad_Prefix/x": "y",
            "ok/label": "not a valid value!",
        }
    )
    assert kept == {
        "kaito.sh/workspace": "w",
        "karpenter.sh/nodepool": "kaito",
        "karpenter.azure.com/sku-name": "Standard_NC24ads_A100_v4",
        "node.kubernetes.io/exclude-from-external-load-balancers": "true",
        "example.com/team": "ml",
        "plain": "x",
    }
    warned = {d.key for d in dropped if d.warn}
    quiet = {d.key for d in dropped if not d.warn}
    assert warned == {
        "kubernetes.azure.com/agentpool",
        "sub.kubernetes.azure.com/foo",
        "kubernetes.io/custom",
        "foo.k8s.io/bar",
        "node-restriction.kubernetes.io/x",
        "Bad_Prefix/x",
        "ok/label",
    }
    assert quiet == {"node.kubernetes.io/instance-type", "topology.kubernetes.io/zone", "kubernetes.io/os"}
    reasons = {d.key: d.reason for d in dropped}
    assert "reserved by AKS" in reasons["kubernetes.azure.com/agentpool"]
    assert "kubernetes.io and k8s.io" in reasons["foo.k8s.io/bar"]


@pytest.mark.parametrize(("is_gpu", "machine_type"), [(True, "gpu"), (False, "cpu")])
def test_machine_type_label_says_gpu_or_cpu_as_the_go_provisioner_does(
    is_gpu: bool, machine_type: str
) -> None:
    req = machine_request()
    got, _ = labels.node_labels(req, is_gpu=is_gpu)
    assert got == {**req.labels, "kaito.sh/machine-type": machine_type}


def test_claim_labels_win_over_provisioner_defaults() -> None:
    req = machine_request(labels={"karpenter.sh/provisioner-name": "mine", "kaito.sh/machine-type": "gpu"})
    got, _ = labels.node_labels(req, is_gpu=False)
    assert got["karpenter.sh/provisioner-name"] == "mine"
    assert got["kaito.sh/machine-type"] == "gpu"


# --- taints, zones, disk, OS -----------------------------------------------------------------


def test_taints_use_the_aks_form() -> None:
    taints = (Taint("sku", "gpu", "NoSchedule"), Taint("dedicated", "", "NoExecute"))
    assert mapping.taint_strings(taints) == ["sku=gpu:NoSchedule", "dedicated:NoExecute"]


def test_zones_map_from_kubernetes_labels_to_aks_numbers() -> None:
    assert aks_zones(("eastus-1", "eastus-3", "2", "eastus-1"), "eastus") == ("1", "3", "2")
    assert aks_zones(("0",), "eastus") == ()
    assert aks_zones((), "eastus") == ()
    with pytest.raises(InvalidSpec, match="westus2-1"):
        aks_zones(("westus2-1",), "eastus")
    assert mapping.zone_label("eastus", "2") == "eastus-2"
    assert mapping.zone_label("eastus", None) == "0"


@pytest.mark.parametrize(
    ("requested", "sent", "warns"),
    [
        (None, None, False),
        (0, None, False),
        (29, None, True),
        (30, 30, False),
        (120, 120, False),
        (2048, 2048, False),
    ],
)
def test_os_disk_size(requested: int | None, sent: int | None, warns: bool) -> None:
    size, warning = os_disk_size(requested)
    assert size == sent
    assert (warning is not None) == warns


def test_os_disk_beyond_aks_maximum_is_invalid() -> None:
    with pytest.raises(InvalidSpec, match="2049"):
        os_disk_size(2049)


def test_os_sku_from_image_family() -> None:
    assert os_sku("ubuntu") == "Ubuntu"
    assert os_sku("AzureLinux") == "AzureLinux"
    assert os_sku("azure-linux") == "AzureLinux"
    assert os_sku(None) is None
    with pytest.raises(InvalidSpec, match="windows"):
        os_sku("windows")


def test_validate_request_refuses_what_no_candidate_can_fix() -> None:
    s = settings()
    validate_request(machine_request(), s)
    for bad in (
        machine_request(instance_types=()),
        machine_request(zones=("westus-1",)),
        machine_request(os_disk_size_gib=5000),
        machine_request(image_family="flatcar"),
    ):
        with pytest.raises(InvalidSpec):
            validate_request(bad, s)


# --- the body --------------------------------------------------------------------------------


def test_machine_request_maps_to_the_expected_pool_body() -> None:
    req = machine_request(
        labels={**machine_request().labels, "kubernetes.azure.com/mode": "user"},
        zones=("eastus-2",),
        tags={"team": "ml"},
    )
    spec = build_pool(req, settings(AZURE_EXTRA_TAGS="env=prod,team=platform"), NC24.name, NC24, ("2",))
    assert spec.name == "ws0123abcd9"
    assert spec.body == {
        "properties": {
            "count": 1,
            "vmSize": "Standard_NC24ads_A100_v4",
            "type": "VirtualMachineScaleSets",
            "osType": "Linux",
            "mode": "User",
            "nodeLabels": {
                "karpenter.sh/provisioner-name": "default",
                "kaito.sh/machine-type": "gpu",
                "kaito.sh/workspace": "workspace-falcon-7b",
                "kaito.sh/workspacenamespace": "default",
            },
            "nodeTaints": ["sku=gpu:NoSchedule"],
            "tags": {
                "env": "prod",
                "team": "ml",
                labels.TAG_CLUSTER: "aks",
                TAG_MANAGED_BY: MANAGED_BY_VALUE,
                TAG_CLAIM_NAME: "ws0123abcd9",
                TAG_CLAIM_UID: "uid-1",
            },
            "osDiskSizeGB": 120,
            "availabilityZones": ["2"],
        }
    }
    assert spec.warnings == (
        "node label kubernetes.azure.com/mode=user not sent to AKS: the kubernetes.azure.com prefix is "
        "reserved by AKS",
    )


def test_global_settings_and_spot_reach_the_body() -> None:
    subnet = (
        f"/subscriptions/{SUB}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
    )
    s = settings(
        AZURE_VNET_SUBNET_ID=subnet,
        AZURE_MAX_PODS="50",
        AZURE_OS_DISK_TYPE="ephemeral",
        AZURE_GPU_DRIVER_INSTALL="false",
    )
    req = machine_request(capacity_type=CapacityType.SPOT, image_family="azurelinux", os_disk_size_gib=None)
    props = build_pool(req, s, NC24.name, NC24, ()).body["properties"]
    assert props["vnetSubnetID"] == subnet
    assert props["maxPods"] == 50
    assert props["osDiskType"] == "Ephemeral"
    assert props["osSKU"] == "AzureLinux"
    assert props["gpuProfile"] == {"driver": "None"}
    assert (props["scaleSetPriority"], props["scaleSetEvictionPolicy"], props["spotMaxPrice"]) == (
        "Spot",
        "Delete",
        -1,
    )
    assert "osDiskSizeGB" not in props and "availabilityZones" not in props
    cpu_props = build_pool(req, s, D4.name, D4, ()).body["properties"]
    assert "gpuProfile" not in cpu_props  # driver settings only concern GPU sizes
    assert cpu_props["nodeLabels"]["kaito.sh/machine-type"] == "cpu"


def test_ownership_tags_cannot_be_overridden_and_bad_tags_are_reported() -> None:
    req = machine_request(tags={TAG_CLAIM_UID: "spoofed", "a/b": "x"})
    tags, warnings = labels.pool_tags(req, settings())
    assert tags[TAG_CLAIM_UID] == "uid-1"
    assert "a/b" not in tags
    assert any("'a/b'" in w for w in warnings)


def test_request_warnings_collect_dropped_labels_and_small_disks() -> None:
    req = machine_request(labels={"kubernetes.io/role": "x", "k8s.io/x": "y"}, os_disk_size_gib=10)
    warnings = request_warnings(req, settings())
    assert any("k8s.io/x" in w for w in warnings)
    assert any("10 GiB" in w for w in warnings)
    assert not any("kubernetes.io/role" in w for w in warnings)  # AKS sets it itself


# --- reading back ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("Creating", InstanceState.CREATING),
        ("Succeeded", InstanceState.RUNNING),
        ("Updating", InstanceState.RUNNING),
        ("Upgrading", InstanceState.RUNNING),
        ("Deleting", InstanceState.DELETING),
        ("Failed", InstanceState.FAILED),
        ("Canceled", InstanceState.FAILED),
        (None, InstanceState.CREATING),
    ],
)
def test_instance_state(state: str | None, expected: InstanceState) -> None:
    assert mapping.instance_state(state) == expected


def _pool(**props: object) -> AgentPool:
    base: dict[str, object] = {
        "vmSize": "Standard_NC24ads_A100_v4",
        "provisioningState": "Succeeded",
        "maxPods": 110,
        "nodeImageVersion": "AKSUbuntu-2204gen2containerd-202501.12.0",
        "tags": {TAG_MANAGED_BY: MANAGED_BY_VALUE, TAG_CLAIM_UID: "uid-1"},
    }
    base.update(props)
    return AgentPool({"name": "ws0123abcd9", "properties": base})


@pytest.mark.parametrize(
    ("state", "busy"),
    [("Updating", True), ("Upgrading", True), ("Scaling", True), ("Succeeded", False), ("Creating", False)],
)
def test_a_pool_with_an_operation_under_way_is_busy(state: str, busy: bool) -> None:
    assert instance_from_pool(_pool(provisioningState=state), "eastus", NC24).busy is busy


def test_instance_from_pool() -> None:
    inst = instance_from_pool(_pool(availabilityZones=["2"]), "eastus", NC24)
    assert inst.name == "ws0123abcd9"
    assert inst.provider_id == ""
    assert inst.state == InstanceState.RUNNING
    assert inst.zone == "eastus-2"
    assert inst.capacity_type == CapacityType.ON_DEMAND
    assert inst.image_id == "AKSUbuntu-2204gen2containerd-202501.12.0"
    assert inst.labels == {
        "node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4",
        "karpenter.sh/capacity-type": "on-demand",
        "kubernetes.azure.com/agentpool": "ws0123abcd9",
        "topology.kubernetes.io/region": "eastus",
        "topology.kubernetes.io/zone": "eastus-2",
    }
    assert inst.capacity == {"cpu": "24", "memory": "230686720Ki", "nvidia.com/gpu": "1", "pods": "110"}
    assert inst.managed and inst.claim_uid == "uid-1"


def test_instance_zone_and_spot() -> None:
    assert instance_from_pool(_pool(), "eastus", None).zone == "0"
    many = instance_from_pool(_pool(availabilityZones=["1", "2"]), "eastus", None)
    assert many.zone == "" and "topology.kubernetes.io/zone" not in many.labels
    spot = instance_from_pool(_pool(scaleSetPriority="Spot"), "eastus", None)
    assert spot.capacity_type == CapacityType.SPOT
    assert spot.labels["karpenter.sh/capacity-type"] == "spot"
    assert spot.capacity == {}


def test_failure_is_carried() -> None:
    err = InsufficientCapacity("no capacity", "AllocationFailed")
    inst = instance_from_pool(_pool(provisioningState="Failed"), "eastus", NC24, err)
    assert inst.state == InstanceState.FAILED
    assert inst.failure is err


def test_pool_failure_is_classified_from_the_provisioning_error() -> None:
    failed = _pool(
        provisioningState="Failed",
        status={
            "provisioningError": {
                "code": "ReconcileVMSSAgentPoolFailed",
                "message": 'Code="ZonalAllocationFailed" Message="Allocation failed."',
            }
        },
    )
    err = mapping.pool_failure(failed)
    assert isinstance(err, InsufficientCapacity) and err.code == "ZonalAllocationFailed"
    assert mapping.pool_failure(_pool()) is None
    assert mapping.pool_failure(_pool(provisioningState="Failed")) is not None


def test_provider_id_prefix_matches_aks_node_provider_ids() -> None:
    prefix = nodes.provider_id_prefix(settings(), "ws0123abcd9")
    node = (
        f"azure:///subscriptions/{SUB}/resourceGroups/mc_rg_aks_eastus/providers/Microsoft.Compute/"
        "virtualMachineScaleSets/aks-ws0123abcd9-12345678-vmss/virtualMachines/0"
    )
    assert node.startswith(prefix)


def test_warnings_never_raise_for_a_disk_the_cloud_refuses() -> None:
    """create() refuses it with InvalidSpec; asking for warnings first must not blow up a reconcile."""
    request = InstanceRequest("ws1", "u", "ws1", ("Standard_NC6s_v3",), os_disk_size_gib=3000)
    assert request_warnings(request, settings()) == ()
