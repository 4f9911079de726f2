"""Lifecycle decisions for Kaito-shaped claims: request, launch, registration, initialization, liveness."""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.kaito import (
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_WORKSPACE,
    INSTANCE_TYPES_UNAVAILABLE,
    LABEL_MACHINE_TYPE,
    LABEL_NODEPOOL,
    LABEL_PROVISIONER_NAME,
    LABEL_SKU_NAME,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    kaito_machine,
    kaito_nodeclaim,
)
from provisioner.claims.conditions import roll_up_ready, set_condition
from provisioner.claims.dialects import MACHINE, NODECLAIM, Dialect
from provisioner.claims.model import (
    CAPACITY_TYPE_LABEL,
    DEPENDENTS,
    INITIALIZED_LABEL,
    INSTANCE_TYPE_LABEL,
    REGISTERED_LABEL,
    TERMINATION_FINALIZER,
    ZONE_LABEL,
    Claim,
    ClaimStatus,
    Condition,
    ConditionType,
    Status,
)
from provisioner.cloud.errors import (
    CloudError,
    InsufficientCapacity,
    InvalidSpec,
    NotFound,
    Throttled,
    Transient,
)
from provisioner.cloud.types import CapacityType, Instance, InstanceState, Taint
from provisioner.lifecycle import initialization, launch, liveness, registration
from provisioner.lifecycle.launch import ALL_INSTANCE_TYPES_UNAVAILABLE, MAX_RETRY_AFTER, backoff
from provisioner.lifecycle.request import InvalidClaim, instance_type_candidates, node_labels, prepare
from provisioner.lifecycle.result import ClaimMetadata, DeleteInstance, EventType, PatchNode, StepResult
from provisioner.settings import Settings

T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
REASON = re.compile(r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?|)$")
NAME = "ws0a1b2c3d4"
UID = "3f0c9a8e-uid"
A100 = "Standard_NC24ads_A100_v4"
T4 = "Standard_NC4as_T4_v3"
PROVIDER_ID = (
    "azure:///subscriptions/sub/resourceGroups/mc_rg/providers/Microsoft.Compute/"
    f"virtualMachineScaleSets/aks-{NAME}-12345678-vmss/virtualMachines/0"
)
NODE_NAME = f"aks-{NAME}-12345678-vmss000000"
GPU_TAINT = Taint("sku", "gpu", "NoSchedule")
DEFAULTS = Settings()
DIALECT_IDS = {"machine": MACHINE, "nodeclaim": NODECLAIM}


def _meta(body: dict[str, Any]) -> dict[str, Any]:
    body["metadata"]["uid"] = UID
    body["metadata"]["generation"] = 1
    return body


def machine(**kw: Any) -> Claim:
    return MACHINE.parse(_meta(kaito_machine(NAME, **kw)))


def nodeclaim(**kw: Any) -> Claim:
    return NODECLAIM.parse(_meta(kaito_nodeclaim(NAME, **kw)))


def claim_of(dialect: Dialect, mutate: Any = None, **kw: Any) -> Claim:
    body = _meta(kaito_machine(NAME, **kw) if dialect is MACHINE else kaito_nodeclaim(NAME, **kw))
    if mutate is not None:
        mutate(body)
    return dialect.parse(body)


def with_conditions(claim: Claim, *conditions: Condition, **status: Any) -> Claim:
    return claim.with_status(ClaimStatus(conditions=tuple(conditions), **status))


def launched_claim(dialect: Dialect, at: datetime.datetime = T0, **status: Any) -> Claim:
    return with_conditions(
        claim_of(dialect),
        Condition(ConditionType.LAUNCHED, Status.TRUE, "Launched", "", at),
        provider_id=PROVIDER_ID,
        **status,
    )


def deletes_instance(result: StepResult) -> bool:
    return any(isinstance(a, DeleteInstance) for a in result.actions)


def claim_labels(result: StepResult) -> dict[str, str]:
    return {k: v for a in result.actions if isinstance(a, ClaimMetadata) for k, v in a.labels.items()}


def node_patch(result: StepResult) -> dict[str, Any] | None:
    patches = [a for a in result.actions if isinstance(a, PatchNode)]
    return dict(patches[0].patch) if patches else None


def only_condition(result: StepResult, ctype: ConditionType = ConditionType.LAUNCHED) -> Condition:
    (c,) = [c for c in result.conditions if c.type == ctype]
    return c


def wire(claim: Claim, result: StepResult, ctype: ConditionType) -> dict[str, Any]:
    """The condition as it would be written to the API server for the claim's dialect."""
    dialect = DIALECT_IDS[claim.dialect]
    conditions = set_condition(claim.status.conditions, only_condition(result, ctype), T0)
    body = dialect.status_body(ClaimStatus(conditions=conditions), claim.generation)
    name = dialect.condition_names[ctype]
    matching: list[dict[str, Any]] = [c for c in body["conditions"] if c["type"] == name]
    (c,) = matching
    return c


def instance(state: InstanceState = InstanceState.RUNNING, **kw: Any) -> Instance:
    fields: dict[str, Any] = {
        "name": NAME,
        "provider_id": PROVIDER_ID,
        "instance_type": DEFAULT_INSTANCE_TYPE,
        "zone": "eastus-1",
        "capacity_type": CapacityType.ON_DEMAND,
        "state": state,
        "capacity": {"cpu": "12", "memory": "220Gi", "nvidia.com/gpu": "2"},
        "image_id": "AKSUbuntu-2204gen2containerd-202405.01.0",
    }
    fields.update(kw)
    return Instance(**fields)


def quota_error(code: str = "QuotaExceeded", **kw: Any) -> InsufficientCapacity:
    fields: dict[str, Any] = {
        "instance_type": DEFAULT_INSTANCE_TYPE,
        "family": "standardNCSv3Family",
        "vcpus_needed": 12,
        "vcpus_free": 4,
    }
    fields.update(kw)
    return InsufficientCapacity(
        "vCPU quota too low: Standard_NC12s_v3 needs 12 vCPUs of standardNCSv3Family in eastus, 4 of 24 free",
        code,
        **fields,
    )


# ================================================================================ request


def test_kaito_machine_becomes_an_instance_request() -> None:
    prepared = prepare(machine(match_labels={"apps": "falcon-7b"}), NAME, DEFAULTS)
    r = prepared.request
    assert prepared.warnings == ()
    assert (r.claim_name, r.claim_uid, r.name) == (NAME, UID, NAME)
    assert r.instance_types == (DEFAULT_INSTANCE_TYPE,)
    assert r.labels == {
        LABEL_PROVISIONER_NAME: "default",
        LABEL_MACHINE_TYPE: "gpu",
        LABEL_WORKSPACE: DEFAULT_WORKSPACE,
        LABEL_WORKSPACE_NAMESPACE: "default",
        "apps": "falcon-7b",
    }
    assert r.taints == (GPU_TAINT,)
    assert r.os_disk_size_gib == 120
    assert r.image_family is None
    assert r.zones == ()
    assert r.capacity_type == CapacityType.ON_DEMAND
    assert r.labels[LABEL_PROVISIONER_NAME] == "default"  # the nodepool label travels in the labels


def test_kaito_nodeclaim_becomes_an_instance_request() -> None:
    r = prepare(nodeclaim(image_family="AzureLinux"), NAME, DEFAULTS).request
    assert r.instance_types == (DEFAULT_INSTANCE_TYPE,)
    assert r.labels == {
        LABEL_NODEPOOL: "kaito",
        LABEL_WORKSPACE: DEFAULT_WORKSPACE,
        LABEL_WORKSPACE_NAMESPACE: "default",
    }
    assert LABEL_SKU_NAME not in r.labels  # describes the machine; the cloud sets its own
    assert r.image_family == "azurelinux"
    assert r.labels[LABEL_NODEPOOL] == "kaito"
    assert r.os_disk_size_gib == 120


def test_nodeclaim_without_image_family_annotation_leaves_it_to_the_cloud() -> None:
    assert prepare(nodeclaim(image_family=None), NAME, DEFAULTS).request.image_family is None


@pytest.mark.parametrize(
    ("storage", "gib"),
    [
        ("120Gi", 120),
        ("400", 400),  # Kaito sometimes writes a bare number meaning GiB
        ("30Gi", 30),
        ("2048Gi", 2048),  # the largest OS disk AKS accepts
        ("1Ti", 1024),
        ("128G", 120),  # 128e9 bytes rounded up to whole GiB
        ("107374182400", 100),  # a large bare number is bytes
        ("102400Mi", 100),
    ],
)
def test_storage_request_sizes_os_disk(storage: str, gib: int) -> None:
    prepared = prepare(machine(storage=storage), NAME, DEFAULTS)
    assert prepared.request.os_disk_size_gib == gib
    assert prepared.warnings == ()


def test_integer_storage_request_is_gib() -> None:
    def as_int(body: dict[str, Any]) -> None:
        body["spec"]["resources"]["requests"]["storage"] = 400

    assert prepare(claim_of(MACHINE, as_int), NAME, DEFAULTS).request.os_disk_size_gib == 400


@pytest.mark.parametrize("storage", ["10Gi", "29Gi", "1Mi", "20", "1e-99999999"])
def test_small_storage_request_uses_default_disk_with_warning(storage: str) -> None:
    prepared = prepare(machine(storage=storage), NAME, DEFAULTS)
    assert prepared.request.os_disk_size_gib is None
    (warning,) = prepared.warnings
    assert storage in warning
    assert "storage" in warning


@pytest.mark.parametrize(
    "storage",
    [
        "-1",
        "0",
        "-120Gi",
        "5000Gi",
        "2049Gi",
        "4096Gi",
        "1Ei",
        "garbage",
        "12 Gi",
        "1.2.3Gi",
        # Valid per the CRD's quantity pattern, absurdly large: must be a clear InvalidClaim, not a crash.
        "1e40",
        "1" + "0" * 40,
        # Exponents past what Decimal's default context can divide by a GiB.
        "1e1000010",
        "5e99999999",
        "1e1.5",
    ],
)
def test_invalid_storage_request_is_invalid_claim(storage: str) -> None:
    with pytest.raises(InvalidClaim) as e:
        prepare(machine(storage=storage), NAME, DEFAULTS)
    assert e.value.reason == "InvalidStorageRequest"
    assert REASON.match(e.value.reason)
    assert storage in e.value.message or "storage" in e.value.message


#: The quantity pattern of the Karpenter CRDs' resources.requests: what the API server lets through.
CRD_QUANTITY = r"\A(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?\Z"


@settings(max_examples=300, deadline=None)
@given(st.from_regex(CRD_QUANTITY))
def test_any_storage_the_crd_accepts_is_sized_or_invalid_never_a_crash(storage: str) -> None:
    try:
        disk = prepare(machine(storage=storage), NAME, DEFAULTS).request.os_disk_size_gib
    except InvalidClaim as e:
        assert e.reason == "InvalidStorageRequest"
        assert storage in e.message
    else:
        assert disk is None or 30 <= disk <= 2048


def test_ephemeral_storage_sizes_disk_when_storage_is_absent() -> None:
    def ephemeral(body: dict[str, Any]) -> None:
        body["spec"]["resources"]["requests"] = {"ephemeral-storage": "256Gi"}

    assert prepare(claim_of(NODECLAIM, ephemeral), NAME, DEFAULTS).request.os_disk_size_gib == 256

    def both(body: dict[str, Any]) -> None:
        body["spec"]["resources"]["requests"] = {"ephemeral-storage": "256Gi", "storage": "200Gi"}

    assert prepare(claim_of(NODECLAIM, both), NAME, DEFAULTS).request.os_disk_size_gib == 200


def test_no_storage_request_leaves_disk_to_cloud() -> None:
    def none(body: dict[str, Any]) -> None:
        del body["spec"]["resources"]

    prepared = prepare(claim_of(MACHINE, none), NAME, DEFAULTS)
    assert prepared.request.os_disk_size_gib is None
    assert prepared.warnings == ()


def _set_requirements(*reqs: dict[str, Any]) -> Any:
    def mutate(body: dict[str, Any]) -> None:
        body["spec"]["requirements"] = list(reqs)

    return mutate


@pytest.mark.parametrize(
    "requirements",
    [
        [],
        [{"key": INSTANCE_TYPE_LABEL, "operator": "NotIn", "values": [A100]}],
        [{"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": []}],
        [{"key": INSTANCE_TYPE_LABEL, "operator": "Exists"}],
        [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}],
    ],
)
@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
def test_no_instance_type_is_invalid_claim(dialect: Dialect, requirements: list[dict[str, Any]]) -> None:
    claim = claim_of(dialect, _set_requirements(*requirements))
    assert instance_type_candidates(claim) == ()
    with pytest.raises(InvalidClaim) as e:
        prepare(claim, NAME, DEFAULTS)
    assert e.value.reason == "NoInstanceType"
    assert INSTANCE_TYPE_LABEL in e.value.message


def test_sku_name_is_the_fallback_instance_type() -> None:
    claim = claim_of(
        NODECLAIM, _set_requirements({"key": LABEL_SKU_NAME, "operator": "In", "values": [A100]})
    )
    assert prepare(claim, NAME, DEFAULTS).request.instance_types == (A100,)


def test_instance_type_label_wins_over_sku_name() -> None:
    claim = claim_of(
        NODECLAIM,
        _set_requirements(
            {"key": LABEL_SKU_NAME, "operator": "In", "values": [T4]},
            {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [A100]},
        ),
    )
    assert instance_type_candidates(claim) == (A100,)


def test_several_instance_types_are_ordered_unique_candidates() -> None:
    claim = claim_of(
        MACHINE,
        _set_requirements({"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [A100, T4, A100]}),
    )
    assert prepare(claim, NAME, DEFAULTS).request.instance_types == (A100, T4)


def test_allowlist_filters_candidates_keeping_order() -> None:
    claim = claim_of(
        MACHINE,
        _set_requirements(
            {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [A100, DEFAULT_INSTANCE_TYPE, T4]}
        ),
    )
    allow = Settings(instance_type_allowlist=(T4, A100))
    assert prepare(claim, NAME, allow).request.instance_types == (A100, T4)


def test_instance_type_outside_allowlist_is_invalid_claim() -> None:
    with pytest.raises(InvalidClaim) as e:
        prepare(machine(), NAME, Settings(instance_type_allowlist=(T4,)))
    assert e.value.reason == "InstanceTypeNotAllowed"
    assert DEFAULT_INSTANCE_TYPE in e.value.message
    assert T4 in e.value.message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["spot"], CapacityType.SPOT),
        (["on-demand"], CapacityType.ON_DEMAND),
        (["spot", "on-demand"], CapacityType.ON_DEMAND),
    ],
)
def test_capacity_type_requirement(values: list[str], expected: CapacityType) -> None:
    def add(body: dict[str, Any]) -> None:
        body["spec"]["requirements"].append({"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": values})

    assert prepare(claim_of(MACHINE, add), NAME, DEFAULTS).request.capacity_type == expected


def test_zone_requirement_becomes_zones() -> None:
    def add(body: dict[str, Any]) -> None:
        body["spec"]["requirements"].append(
            {"key": ZONE_LABEL, "operator": "In", "values": ["eastus-1", "eastus-3"]}
        )

    r = prepare(claim_of(NODECLAIM, add), NAME, DEFAULTS).request
    assert r.zones == ("eastus-1", "eastus-3")
    assert ZONE_LABEL not in r.labels


def test_startup_taints_are_put_on_the_instance_once() -> None:
    def add(body: dict[str, Any]) -> None:
        body["spec"]["startupTaints"] = [
            {"key": "nvidia.com/gpu-driver", "effect": "NoSchedule"},
            {"key": "sku", "value": "gpu", "effect": "NoSchedule"},
        ]

    r = prepare(claim_of(NODECLAIM, add), NAME, DEFAULTS).request
    assert r.taints == (GPU_TAINT, Taint("nvidia.com/gpu-driver", "", "NoSchedule"))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("example.com/team", "café"),  # not ASCII
        ("example.com/team", "a b"),
        ("example.com/team", "x" * 64),  # longer than 63
        ("example.com/team", "-starts-with-dash"),
        ("example.com/team", "ends."),
        ("bad key", "v"),
        ("Example.COM/team", "v"),  # the prefix is a lowercase DNS subdomain
        ("example.com/" + "k" * 64, "v"),  # the name part is at most 63
        ("/team", "v"),  # empty prefix
        ("example.com/", "v"),  # empty name
        ("a/b/c", "v"),
        ("x" * 250 + ".com/team", "v"),  # prefix longer than 253
    ],
)
@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=["machine", "nodeclaim"])
def test_a_label_kubernetes_would_refuse_is_an_invalid_claim(dialect: Dialect, key: str, value: str) -> None:
    """A single-valued ``In`` requirement becomes a node label: it must be one the API server takes."""
    reqs = [{"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [A100]}]
    reqs.append({"key": key, "operator": "In", "values": [value]})
    with pytest.raises(InvalidClaim) as e:
        prepare(claim_of(dialect, _set_requirements(*reqs)), NAME, DEFAULTS)
    assert e.value.reason == "InvalidLabel"
    assert repr(key)[:40] in e.value.message or key[:40] in e.value.message


def test_labels_at_the_limits_kubernetes_allows_are_valid() -> None:
    reqs = [
        {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [A100]},
        {"key": "a" * 63 + "." + "b" * 63 + "/" + "K" * 63, "operator": "In", "values": ["V" * 63]},
        {"key": "plain_Name-1.x", "operator": "In", "values": [""]},
        # Not single-valued: never written as a label, so never judged as one.
        {"key": "example.com/zone", "operator": "In", "values": ["a b", "c"]},
        {"key": "example.com/other", "operator": "NotIn", "values": ["café"]},
    ]
    labels = prepare(claim_of(NODECLAIM, _set_requirements(*reqs)), NAME, DEFAULTS).request.labels
    assert labels["plain_Name-1.x"] == ""
    assert "example.com/zone" not in labels


@pytest.mark.parametrize(
    "taint",
    [
        {"key": "sku", "value": "gpu", "effect": "Bogus"},
        {"key": "sku", "value": "gpu", "effect": "noschedule"},
        {"key": "has space", "value": "gpu", "effect": "NoSchedule"},
        {"key": "k" * 300, "effect": "NoSchedule"},
        {"key": "sku", "value": "café", "effect": "NoExecute"},
        {"key": "sku", "value": "v" * 64, "effect": "NoExecute"},
    ],
)
@pytest.mark.parametrize("field", ["taints", "startupTaints"])
@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=["machine", "nodeclaim"])
def test_a_taint_kubernetes_would_refuse_is_an_invalid_claim(
    dialect: Dialect, field: str, taint: dict[str, str]
) -> None:
    def add(body: dict[str, Any]) -> None:
        body["spec"][field] = [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}, taint]

    with pytest.raises(InvalidClaim) as e:
        prepare(claim_of(dialect, add), NAME, DEFAULTS)
    assert e.value.reason == "InvalidTaint"
    assert field in e.value.message


def test_two_taints_of_one_key_and_effect_are_an_invalid_claim() -> None:
    """The API server refuses a Node whose taints repeat a key and effect (values aside)."""

    def add(body: dict[str, Any]) -> None:
        body["spec"]["startupTaints"] = [{"key": "sku", "value": "cpu", "effect": "NoSchedule"}]

    with pytest.raises(InvalidClaim) as e:
        prepare(claim_of(NODECLAIM, add), NAME, DEFAULTS)
    assert e.value.reason == "InvalidTaint"
    assert "same key and effect" in e.value.message

    def same(body: dict[str, Any]) -> None:  # the very same taint twice is one taint
        body["spec"]["startupTaints"] = [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]

    assert prepare(claim_of(NODECLAIM, same), NAME, DEFAULTS).request.taints == (GPU_TAINT,)


def test_node_labels_claim_labels_win_over_requirements() -> None:
    def add(body: dict[str, Any]) -> None:
        body["metadata"]["labels"][LABEL_MACHINE_TYPE] = "gpu-a100"

    assert node_labels(claim_of(MACHINE, add))[LABEL_MACHINE_TYPE] == "gpu-a100"


# ================================================================================ launch


def test_kaito_text_is_the_one_kaito_compares() -> None:
    assert ALL_INSTANCE_TYPES_UNAVAILABLE == INSTANCE_TYPES_UNAVAILABLE


def test_machine_insufficient_capacity_message_is_exactly_kaitos_text() -> None:
    claim = machine()
    result = launch.cloud_error(claim, quota_error(), 1, DEFAULTS)
    c = only_condition(result)
    assert c.status == Status.FALSE
    assert c.message == ALL_INSTANCE_TYPES_UNAVAILABLE
    assert "QuotaExceeded" in c.reason
    on_wire = wire(claim, result, ConditionType.LAUNCHED)
    assert on_wire["type"] == "MachineLaunched"
    assert on_wire["status"] == "False"
    assert on_wire["message"] == "all requested instance types were unavailable during launch"
    assert not result.deletes_claim
    assert not deletes_instance(result)
    assert not result.done
    assert result.requeue_after == DEFAULTS.capacity_retry_base


def test_insufficient_capacity_event_names_the_cause() -> None:
    result = launch.cloud_error(machine(), quota_error(), 1, DEFAULTS)
    (event,) = result.events
    assert event.type == EventType.WARNING
    assert event.message.startswith(ALL_INSTANCE_TYPES_UNAVAILABLE)
    for detail in ("QuotaExceeded", "standardNCSv3Family", "12", "4"):
        assert detail in event.message


def test_nodeclaim_insufficient_capacity_message_starts_with_kaito_text_and_has_details() -> None:
    claim = nodeclaim()
    result = launch.cloud_error(claim, quota_error(), 1, DEFAULTS)
    on_wire = wire(claim, result, ConditionType.LAUNCHED)
    assert on_wire["type"] == "Launched"
    assert on_wire["status"] == "False"
    assert on_wire["message"].startswith(ALL_INSTANCE_TYPES_UNAVAILABLE)
    for detail in ("QuotaExceeded", "standardNCSv3Family", "12 vCPUs"):
        assert detail in on_wire["message"]
    assert REASON.match(on_wire["reason"])
    assert on_wire["observedGeneration"] == 1


def test_capacity_details_are_not_repeated_when_the_cloud_already_says_them() -> None:
    detail = launch.capacity_detail(quota_error())
    assert detail.count("12 vCPUs") == 1, detail
    assert "needed" not in detail


@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
def test_capacity_details_come_from_the_error_fields_not_only_its_text(dialect: Dialect) -> None:
    """Family and vCPUs needed/free are structured on the error; they must reach the user even when
    the cloud's message is terse (DESIGN §3: reason/event and, for NodeClaims, the message)."""
    err = InsufficientCapacity(
        "Allocation failed",
        "QuotaExceeded",
        instance_type=DEFAULT_INSTANCE_TYPE,
        family="standardNCSv3Family",
        vcpus_needed=12,
        vcpus_free=4,
    )
    claim = claim_of(dialect)
    result = launch.cloud_error(claim, err, 1, DEFAULTS)
    (event,) = result.events
    assert "standardNCSv3Family" in event.message
    assert "12" in event.message and "4" in event.message
    message = only_condition(result).message
    if dialect is MACHINE:
        assert message == ALL_INSTANCE_TYPES_UNAVAILABLE
    else:
        assert message.startswith(ALL_INSTANCE_TYPES_UNAVAILABLE)
        assert "standardNCSv3Family" in message
        assert "12" in message and "4" in message


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n, 30.0, 600.0) for n in range(1, 9)] == [30, 60, 120, 240, 480, 600, 600, 600]
    assert backoff(0, 30.0, 600.0) == 30.0


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64), st.floats(0.1, 100.0), st.floats(100.0, 10_000.0))
def test_backoff_is_monotonic_and_bounded(attempt: int, base: float, cap: float) -> None:
    now, later = backoff(attempt, base, cap), backoff(attempt + 1, base, cap)
    assert base <= now <= cap
    assert now <= later <= cap
    assert later == min(cap, 2 * now) or now == cap


def test_backoff_survives_a_week_of_capacity_retries() -> None:
    """At the default 600s cap, 1100 attempts are about a week of waiting for capacity."""
    assert backoff(1100, 30.0, 600.0) == 600.0
    result = launch.cloud_error(machine(), quota_error(), 1100, DEFAULTS)
    assert result.requeue_after == DEFAULTS.capacity_retry_max


def test_capacity_retries_back_off_per_attempt() -> None:
    delays = [launch.cloud_error(machine(), quota_error(), n, DEFAULTS).requeue_after for n in (1, 2, 3, 9)]
    assert delays == [30.0, 60.0, 120.0, 600.0]


def test_delete_on_insufficient_capacity_deletes_the_claim() -> None:
    result = launch.cloud_error(machine(), quota_error(), 1, Settings(delete_on_insufficient_capacity=True))
    assert result.deletes_claim
    assert result.requeue_after is None
    assert only_condition(result).message == ALL_INSTANCE_TYPES_UNAVAILABLE


@pytest.mark.parametrize(
    ("retry_after", "attempt", "expected"),
    [(42.0, 1, 42.0), (1000.0, 1, MAX_RETRY_AFTER), (None, 1, None), (None, 20, None)],
)
def test_throttled_backs_off_in_the_queue_never_before_retry_after(
    retry_after: float | None, attempt: int, expected: float | None
) -> None:
    assert MAX_RETRY_AFTER == 300.0
    claim = nodeclaim()
    err = Throttled("too many requests", "TooManyRequests", retry_after=retry_after)
    result = launch.cloud_error(claim, err, attempt, DEFAULTS)
    assert result.backoff, "the work queue's per-claim backoff decides when"
    assert result.requeue_after == expected  # the floor of that backoff
    c = only_condition(result)
    assert (c.status, c.reason) == (Status.UNKNOWN, "Throttled")
    assert not result.deletes_claim


def test_throttled_machine_stays_false_not_unknown() -> None:
    result = launch.cloud_error(machine(), Throttled("slow down", retry_after=10), 1, DEFAULTS)
    assert only_condition(result).status == Status.FALSE


@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
def test_transient_error_retries_with_backoff(dialect: Dialect) -> None:
    claim = claim_of(dialect)
    result = launch.cloud_error(claim, Transient("conflict", "OperationNotAllowed"), 2, DEFAULTS)
    c = only_condition(result)
    assert c.status == dialect.pending_status
    assert c.reason.startswith("LaunchRetrying")
    assert result.backoff and result.requeue_after is None
    assert not result.deletes_claim and not result.done
    assert REASON.match(wire(claim, result, ConditionType.LAUNCHED)["reason"])


def test_invalid_spec_says_why_and_does_not_retry() -> None:
    err = InvalidSpec("The value of parameter vmSize is invalid", "InvalidParameter")
    result = launch.cloud_error(nodeclaim(), err, 1, DEFAULTS)
    c = only_condition(result)
    assert c.status == Status.FALSE
    assert c.reason == "InvalidSpec:InvalidParameter"
    assert "vmSize" in c.message
    assert result.requeue_after is None
    assert not result.deletes_claim
    (event,) = result.events
    assert event.type == EventType.WARNING


@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
def test_invalid_claim_condition(dialect: Dialect) -> None:
    claim = claim_of(dialect, _set_requirements())
    with pytest.raises(InvalidClaim) as e:
        prepare(claim, NAME, DEFAULTS)
    result = launch.invalid(claim, e.value)
    c = only_condition(result)
    assert (c.status, c.reason) == (Status.FALSE, "NoInstanceType")
    assert result.requeue_after is None
    assert wire(claim, result, ConditionType.LAUNCHED)["reason"] == "NoInstanceType"


@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
def test_running_instance_launches_the_claim(dialect: Dialect) -> None:
    claim = claim_of(dialect)
    result = launch.instance_observed(claim, instance(), 1, DEFAULTS)
    c = only_condition(result)
    assert (c.status, c.reason) == (Status.TRUE, "Launched")
    assert result.done
    assert claim_labels(result) == {
        INSTANCE_TYPE_LABEL: DEFAULT_INSTANCE_TYPE,
        ZONE_LABEL: "eastus-1",
        CAPACITY_TYPE_LABEL: "on-demand",
    }
    assert result.status.provider_id == PROVIDER_ID
    assert result.status.image_id == "AKSUbuntu-2204gen2containerd-202405.01.0"
    assert result.status.capacity == {"cpu": "12", "memory": "220Gi", "nvidia.com/gpu": "2"}
    assert result.status.allocatable == result.status.capacity
    (event,) = result.events
    assert event.type == EventType.NORMAL and event.reason == "Launched"


def test_running_spot_instance_without_zone() -> None:
    result = launch.launched(nodeclaim(), instance(zone="", capacity_type=CapacityType.SPOT))
    assert claim_labels(result) == {INSTANCE_TYPE_LABEL: DEFAULT_INSTANCE_TYPE, CAPACITY_TYPE_LABEL: "spot"}


def test_already_launched_claim_gets_no_second_event_and_keeps_allocatable() -> None:
    claim = launched_claim(NODECLAIM, allocatable={"nvidia.com/gpu": "2", "cpu": "11800m"})
    result = launch.launched(claim, instance())
    assert result.events == ()
    assert result.status.allocatable is None


@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
@pytest.mark.parametrize("state", [InstanceState.CREATING, InstanceState.DELETING])
def test_instance_in_flight_is_pending(dialect: Dialect, state: InstanceState) -> None:
    claim = claim_of(dialect)
    result = launch.instance_observed(claim, instance(state, provider_id=""), 1, DEFAULTS)
    c = only_condition(result)
    assert c.status == dialect.pending_status
    assert c.reason == "Launching"
    assert NAME in c.message
    assert result.requeue_after == DEFAULTS.launch_poll_interval
    assert not result.done and not deletes_instance(result) and not result.deletes_claim


@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
def test_failed_instance_out_of_capacity_is_deleted_and_claim_kept(dialect: Dialect) -> None:
    claim = claim_of(dialect)
    failed = instance(InstanceState.FAILED, provider_id="", failure=quota_error(code="AllocationFailed"))
    result = launch.instance_observed(claim, failed, 3, DEFAULTS)
    assert deletes_instance(result)
    assert not result.deletes_claim
    c = only_condition(result)
    assert c.status == Status.FALSE
    if dialect is MACHINE:
        assert c.message == ALL_INSTANCE_TYPES_UNAVAILABLE
    else:
        assert c.message.startswith(ALL_INSTANCE_TYPES_UNAVAILABLE)
    assert result.requeue_after == 120.0


def test_failed_instance_with_delete_on_insufficient_capacity_deletes_both() -> None:
    failed = instance(InstanceState.FAILED, failure=quota_error())
    result = launch.instance_observed(machine(), failed, 1, Settings(delete_on_insufficient_capacity=True))
    assert deletes_instance(result) and result.deletes_claim


def test_failed_instance_without_cause_is_deleted_and_retried() -> None:
    result = launch.instance_observed(nodeclaim(), instance(InstanceState.FAILED), 1, DEFAULTS)
    assert deletes_instance(result)
    assert not result.deletes_claim
    assert result.backoff
    assert only_condition(result).status == Status.UNKNOWN


def test_vanished_instance_deletes_the_claim() -> None:
    result = launch.vanished(launched_claim(NODECLAIM), NotFound("pool not found", "NotFound"))
    assert result.deletes_claim
    (event,) = result.events
    assert event.reason == "InstanceNotFound"


_codes = st.one_of(st.none(), st.text(max_size=30))
_errors = st.one_of(
    st.builds(InsufficientCapacity, st.text(max_size=30), _codes),
    st.builds(InvalidSpec, st.text(max_size=30), _codes),
    st.builds(Transient, st.text(max_size=30), _codes),
    st.builds(CloudError, st.text(max_size=30), _codes),
    st.builds(
        Throttled,
        st.text(max_size=30),
        _codes,
        retry_after=st.one_of(st.none(), st.floats(0, 10_000)),
    ),
)


@settings(max_examples=300, deadline=None)
@given(_errors, st.integers(1, 50), st.sampled_from([MACHINE, NODECLAIM]))
def test_every_launch_error_gives_a_valid_condition(err: CloudError, attempt: int, dialect: Dialect) -> None:
    claim = claim_of(dialect)
    result = launch.cloud_error(claim, err, attempt, DEFAULTS)
    c = only_condition(result)
    assert REASON.match(c.reason) and c.reason
    on_wire = wire(claim, result, ConditionType.LAUNCHED)
    assert REASON.match(on_wire.get("reason", ""))
    if dialect is MACHINE:
        assert on_wire["status"] != "Unknown"
    if result.requeue_after is not None:
        assert 0 <= result.requeue_after <= max(MAX_RETRY_AFTER, DEFAULTS.capacity_retry_max)
    if isinstance(err, InsufficientCapacity):
        assert c.message.startswith(ALL_INSTANCE_TYPES_UNAVAILABLE)


# ================================================================================ registration


def aks_node(
    pool: str = NAME,
    *,
    provider_id: str = PROVIDER_ID,
    ready: str = "True",
    taints: list[dict[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    **status: Any,
) -> dict[str, Any]:
    """A Node as AKS registers it for a one-node agent pool."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"aks-{pool}-12345678-vmss000000",
            "uid": "node-uid",
            "resourceVersion": "100",
            "creationTimestamp": "2024-05-01T12:05:00Z",
            "labels": {
                "kubernetes.azure.com/agentpool": pool,
                "agentpool": pool,
                INSTANCE_TYPE_LABEL: DEFAULT_INSTANCE_TYPE,
                ZONE_LABEL: "eastus-1",
                "kubernetes.io/os": "linux",
                **(labels or {}),
            },
        },
        "spec": {"providerID": provider_id, "taints": taints if taints is not None else []},
        "status": {
            "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": "2024-05-01T12:06:00Z"}],
            "capacity": status.get("capacity", {"cpu": "12", "nvidia.com/gpu": "2"}),
            "allocatable": status.get("allocatable", {"cpu": "11800m", "nvidia.com/gpu": "2"}),
        },
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies it."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


CTRL = "gpu-provisioner"


def test_find_node_prefers_the_claims_provider_id_then_its_own_node() -> None:
    claim = launched_claim(MACHINE)
    mine = aks_node()
    other = aks_node(provider_id="azure:///other")
    other["metadata"]["name"] = "aks-other"
    assert registration.find_node([other, mine], claim) is mine
    owned = aks_node(provider_id="azure:///owned")
    owned["metadata"]["ownerReferences"] = [{"uid": UID}]
    assert registration.find_node([other, owned], claim_of(NODECLAIM)) is owned
    assert registration.find_node([], claim) is None


def test_find_node_prefers_a_node_that_is_not_being_deleted() -> None:
    old = aks_node()
    old["metadata"]["deletionTimestamp"] = "2024-05-01T12:10:00Z"
    new = aks_node()
    new["metadata"]["name"] = "aks-new"
    assert registration.find_node([old, new], launched_claim(MACHINE)) is new
    assert registration.find_node([old], launched_claim(MACHINE)) is old


@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
def test_node_patch_brings_every_claim_promise(dialect: Dialect) -> None:
    claim = launched_claim(dialect)
    claim = claim_of(dialect, match_labels={"apps": "falcon-7b"}).with_status(claim.status)
    node = aks_node(
        taints=[
            {"key": "karpenter.sh/unregistered", "effect": "NoExecute"},
            {"key": "kubernetes.azure.com/scalesetpriority", "value": "spot", "effect": "NoSchedule"},
        ]
    )
    action = registration.registration_patch(node, claim, CTRL)
    assert action is not None
    patch = action.patch
    updated = merge_patch(node, patch)

    labels = updated["metadata"]["labels"]
    for key, value in claim.labels.items():
        assert labels[key] == value
    assert labels[REGISTERED_LABEL] == "true"
    assert labels[LABEL_WORKSPACE] == DEFAULT_WORKSPACE
    assert labels[LABEL_WORKSPACE_NAMESPACE] == "default"
    assert labels["apps"] == "falcon-7b"
    if dialect is MACHINE:
        assert labels[LABEL_PROVISIONER_NAME] == "default"
        assert labels[LABEL_MACHINE_TYPE] == "gpu"
    else:
        assert labels[LABEL_NODEPOOL] == "kaito"
    assert labels["kubernetes.azure.com/agentpool"] == NAME  # existing labels are kept

    taints = updated["spec"]["taints"]
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in taints
    assert {"key": "kubernetes.azure.com/scalesetpriority", "value": "spot", "effect": "NoSchedule"} in taints
    assert not any(t["key"] == "karpenter.sh/unregistered" for t in taints)

    assert TERMINATION_FINALIZER in updated["metadata"]["finalizers"]
    (owner,) = updated["metadata"]["ownerReferences"]
    assert owner["uid"] == UID
    assert owner["name"] == NAME
    if dialect is MACHINE:
        assert (owner["apiVersion"], owner["kind"]) == ("karpenter.sh/v1alpha5", "Machine")
    else:
        assert (owner["apiVersion"], owner["kind"]) == ("karpenter.sh/v1", "NodeClaim")
    assert updated["metadata"]["annotations"]["gpu-provisioner.sh/managed-by"] == CTRL
    # List fields are replaced whole by a merge patch: guarded by the resourceVersion read.
    assert action.resource_version == "100"

    # Idempotent: once applied, the node is in line and nothing more is patched.
    assert registration.registration_patch(updated, claim, CTRL) is None


def test_node_patch_keeps_existing_owners_finalizers_and_taint_fields() -> None:
    claim = launched_claim(NODECLAIM)
    node = aks_node(taints=[{"key": "sku", "value": "gpu", "effect": "NoSchedule", "timeAdded": "t"}])
    node["metadata"]["finalizers"] = ["example.com/keep"]
    node["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Other", "name": "o", "uid": "o1"}]
    action = registration.registration_patch(node, claim, CTRL)
    assert action is not None
    patch = action.patch
    assert "spec" not in patch  # the claim's taint is already there
    assert patch["metadata"]["finalizers"] == ["example.com/keep", TERMINATION_FINALIZER]
    assert [o["uid"] for o in patch["metadata"]["ownerReferences"]] == ["o1", UID]
    updated = merge_patch(node, patch)
    assert updated["spec"]["taints"] == [
        {"key": "sku", "value": "gpu", "effect": "NoSchedule", "timeAdded": "t"}
    ]
    assert registration.registration_patch(updated, claim, CTRL) is None


def _registration_applied(node: dict[str, Any], claim: Claim) -> dict[str, Any]:
    action = registration.registration_patch(node, claim, CTRL)
    return merge_patch(node, action.patch if action else {})


def test_node_patch_removes_unregistered_taint_only() -> None:
    claim = launched_claim(NODECLAIM)
    in_line = _registration_applied(aks_node(), claim)
    in_line["spec"]["taints"].append({"key": "karpenter.sh/unregistered", "effect": "NoExecute"})
    action = registration.registration_patch(in_line, claim, CTRL)
    assert action is not None
    assert action.patch == {"spec": {"taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]}}


def test_after_registration_only_ownership_is_restored() -> None:
    claim = launched_claim(NODECLAIM)
    node = _registration_applied(aks_node(), claim)
    node["metadata"]["labels"].pop(LABEL_WORKSPACE)
    node["metadata"]["finalizers"] = []
    action = registration.ownership_patch(node, claim, CTRL)
    assert action is not None
    assert action.patch == {"metadata": {"finalizers": [TERMINATION_FINALIZER]}}


def test_node_patch_copies_claim_annotations() -> None:
    """DESIGN §4 Registration: labels *and annotations*, taints, ownerRef, finalizer are synced."""
    claim = launched_claim(NODECLAIM)
    assert claim.annotations
    updated = _registration_applied(aks_node(), claim)
    annotations = updated["metadata"].get("annotations") or {}
    assert annotations.get("karpenter.sh/do-not-disrupt") == "true"
    assert annotations.get("kaito.sh/node-image-family") == "ubuntu"


@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
def test_registered_and_not_registered(dialect: Dialect) -> None:
    claim = launched_claim(dialect)
    waiting = registration.not_registered(claim)
    c = only_condition(waiting, ConditionType.REGISTERED)
    assert c.status == dialect.pending_status
    assert not waiting.done

    done = registration.registered(claim, aks_node(), CTRL)
    c = only_condition(done, ConditionType.REGISTERED)
    assert c.status == Status.TRUE
    assert (done.status.node_name, done.status.provider_id) == (NODE_NAME, PROVIDER_ID)
    assert [e.reason for e in done.events] == ["Registered"]
    assert node_patch(done) is not None  # the first time: everything the claim promised
    again = with_conditions(claim, *claim.status.conditions, c)
    assert registration.registered(again, aks_node(), CTRL).events == ()


# ================================================================================ initialization


def gpu_claim(
    dialect: Dialect = NODECLAIM, gpus: str = "2", requests: Mapping[str, str] | None = None
) -> Claim:
    def mutate(body: dict[str, Any]) -> None:
        body["spec"]["resources"]["requests"].update(requests or {})

    claim = claim_of(dialect, mutate)
    return claim.with_status(
        ClaimStatus(
            provider_id=PROVIDER_ID,
            capacity={"cpu": "12", "memory": "220Gi", "nvidia.com/gpu": gpus},
            conditions=(Condition(ConditionType.LAUNCHED, Status.TRUE, "Launched", "", T0),),
        )
    )


@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
def test_ready_node_with_everything_is_initialized(dialect: Dialect) -> None:
    claim = gpu_claim(dialect)
    node = aks_node(taints=[{"key": "sku", "value": "gpu", "effect": "NoSchedule"}])
    assert initialization.blocking(claim, node) is None
    result = initialization.check(claim, node)
    c = only_condition(result, ConditionType.INITIALIZED)
    assert c.status == Status.TRUE
    assert result.done
    assert result.status.allocatable == {"cpu": "11800m", "nvidia.com/gpu": "2"}
    assert node_patch(result) == {"metadata": {"labels": {INITIALIZED_LABEL: "true"}}}
    assert [e.reason for e in result.events] == ["Initialized"]
    assert initialization.initialized_label_patch(node) == {
        "metadata": {"labels": {INITIALIZED_LABEL: "true"}}
    }
    labelled = aks_node(labels={INITIALIZED_LABEL: "true"})
    assert initialization.initialized_label_patch(labelled) is None


@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
@pytest.mark.parametrize("ready", ["False", "Unknown", None])
def test_not_ready_node_blocks(dialect: Dialect, ready: str | None) -> None:
    node = aks_node(ready=ready or "True")
    if ready is None:
        node["status"]["conditions"] = []
    result = initialization.check(gpu_claim(dialect), node)
    c = only_condition(result, ConditionType.INITIALIZED)
    assert c.reason == "NodeNotReady"
    assert c.status == dialect.pending_status
    assert not result.done
    if dialect is MACHINE:
        assert c.status == Status.FALSE  # never Unknown on a Machine (Kaito <= v0.4.1)


def test_startup_taint_blocks() -> None:
    def add(body: dict[str, Any]) -> None:
        body["spec"]["startupTaints"] = [
            {"key": "nvidia.com/driver", "value": "installing", "effect": "NoSchedule"}
        ]

    claim = claim_of(NODECLAIM, add)
    node = aks_node(taints=[{"key": "nvidia.com/driver", "value": "installing", "effect": "NoSchedule"}])
    blocked = initialization.blocking(claim, node)
    assert blocked is not None and blocked[0] == "StartupTaintsExist"
    # Same key, other effect: not the startup taint.
    other = aks_node(taints=[{"key": "nvidia.com/driver", "effect": "NoExecute"}])
    assert initialization.blocking(claim, other) is None


@pytest.mark.parametrize(
    "key",
    [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.cloudprovider.kubernetes.io/uninitialized",
        "karpenter.sh/unregistered",
    ],
)
def test_ephemeral_taints_block(key: str) -> None:
    node = aks_node(taints=[{"key": key, "effect": "NoSchedule"}])
    blocked = initialization.blocking(gpu_claim(), node)
    assert blocked is not None and blocked[0] == "EphemeralTaintsExist"
    assert key in blocked[1]


def test_missing_requested_resource_blocks() -> None:
    claim = gpu_claim(requests={"nvidia.com/gpu": "1"})
    node = aks_node(allocatable={"cpu": "11800m"}, capacity={"cpu": "12", "nvidia.com/gpu": "2"})
    blocked = initialization.blocking(claim, node)
    assert blocked is not None and blocked[0] == "ResourceNotRegistered"
    assert "nvidia.com/gpu" in blocked[1]
    assert initialization.blocking(claim, aks_node()) is None


def test_storage_requests_are_exempt_from_allocatable_check() -> None:
    claim = gpu_claim(requests={"storage": "400", "ephemeral-storage": "120Gi", "example.com/zero": "0"})
    node = aks_node(allocatable={"cpu": "11800m", "nvidia.com/gpu": "2"})
    assert "storage" in claim.requests and "ephemeral-storage" in claim.requests
    assert initialization.blocking(claim, node) is None


def test_gpu_capacity_promised_by_launch_must_be_registered() -> None:
    claim = gpu_claim(gpus="2")
    no_plugin = aks_node(capacity={"cpu": "12"}, allocatable={"cpu": "11800m"})
    blocked = initialization.blocking(claim, no_plugin)
    assert blocked is not None and blocked[0] == "ResourceNotRegistered"
    assert "nvidia.com/gpu" in blocked[1]
    zero = aks_node(capacity={"cpu": "12", "nvidia.com/gpu": "0"}, allocatable={"cpu": "11800m"})
    assert initialization.blocking(claim, zero) is not None
    assert initialization.blocking(gpu_claim(gpus="0"), no_plugin) is None


def test_pending_machine_status_never_shows_unknown() -> None:
    """All steps of a Machine waiting for its node, written the way the controller composes them."""
    claim = machine()
    steps = [
        launch.instance_observed(claim, instance(InstanceState.CREATING), 1, DEFAULTS),
        registration.not_registered(claim),
        initialization.check(claim, aks_node(ready="Unknown")),
    ]
    conditions: tuple[Condition, ...] = ()
    for step in steps:
        for c in step.conditions:
            conditions = set_condition(conditions, c, T0)
    conditions = roll_up_ready(conditions, T0)
    body = MACHINE.status_body(ClaimStatus(conditions=conditions), 1)
    by_type = {c["type"]: c for c in body["conditions"]}
    for name in ("MachineLaunched", "MachineRegistered", "MachineInitialized"):
        assert by_type[name]["status"] == "False"
    assert "Unknown" not in str(by_type["MachineInitialized"])
    assert {c.type for c in conditions} >= set(DEPENDENTS)


# ================================================================================ liveness


def test_registration_timeout_waits_then_deletes() -> None:
    claim = launched_claim(MACHINE, at=T0)
    early = liveness.registration_timeout(claim, T0 + datetime.timedelta(minutes=10), DEFAULTS)
    assert early is not None
    assert not early.deletes_claim
    assert early.requeue_after == pytest.approx(601.0)

    late = liveness.registration_timeout(claim, T0 + datetime.timedelta(minutes=20), DEFAULTS)
    assert late is not None and late.deletes_claim
    (event,) = late.events
    assert event.reason == "RegistrationTimeout"
    assert event.type == EventType.WARNING


def test_registration_timeout_is_configurable() -> None:
    claim = launched_claim(NODECLAIM, at=T0)
    fast = Settings(registration_timeout=60.0)
    result = liveness.registration_timeout(claim, T0 + datetime.timedelta(seconds=61), fast)
    assert result is not None and result.deletes_claim


def test_registration_timeout_ignores_unlaunched_claims() -> None:
    later = T0 + datetime.timedelta(days=1)
    assert liveness.registration_timeout(claim_of(MACHINE), later, DEFAULTS) is None
    pending = with_conditions(
        claim_of(MACHINE), Condition(ConditionType.LAUNCHED, Status.FALSE, "Launching", "", T0)
    )
    assert liveness.registration_timeout(pending, later, DEFAULTS) is None


def _node_not_ready_since(status: str, since: str | None) -> dict[str, Any]:
    node = aks_node(ready=status)
    node["status"]["conditions"][0]["lastTransitionTime"] = since
    return node


def test_not_ready_node_is_repaired_after_the_window() -> None:
    node = _node_not_ready_since("False", "2024-05-01T12:00:00Z")
    assert (
        liveness.not_ready_repair(aks_node(ready="True"), T0 + datetime.timedelta(hours=5), DEFAULTS) is None
    )

    early = liveness.not_ready_repair(node, T0 + datetime.timedelta(minutes=5), DEFAULTS)
    assert early is not None
    assert not early.deletes_claim
    assert early.requeue_after == pytest.approx(301.0)

    late = liveness.not_ready_repair(node, T0 + datetime.timedelta(minutes=10), DEFAULTS)
    assert late is not None and late.deletes_claim
    (event,) = late.events
    assert event.reason == "NodeRepair"
    assert NODE_NAME in event.message
    assert "NotReady" in event.message


def test_unknown_node_is_repaired_as_unreachable() -> None:
    node = _node_not_ready_since("Unknown", "2024-05-01T12:00:00Z")
    result = liveness.not_ready_repair(node, T0 + datetime.timedelta(minutes=11), DEFAULTS)
    assert result is not None and result.deletes_claim
    assert "unreachable" in result.events[0].message


def test_not_ready_repair_falls_back_to_node_creation_time() -> None:
    node = aks_node()
    node["status"]["conditions"] = []
    created = datetime.datetime(2024, 5, 1, 12, 5, tzinfo=datetime.UTC)
    early = liveness.not_ready_repair(node, created + datetime.timedelta(minutes=9), DEFAULTS)
    assert early is not None and not early.deletes_claim
    late = liveness.not_ready_repair(node, created + datetime.timedelta(minutes=10), DEFAULTS)
    assert late is not None and late.deletes_claim
    del node["metadata"]["creationTimestamp"]
    assert liveness.not_ready_repair(node, created + datetime.timedelta(days=1), DEFAULTS) is None


def test_not_ready_repair_can_be_disabled() -> None:
    node = _node_not_ready_since("False", "2024-05-01T12:00:00Z")
    off = Settings(not_ready_repair_after=0.0)
    assert liveness.not_ready_repair(node, T0 + datetime.timedelta(days=1), off) is None
