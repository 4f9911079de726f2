"""The Claim model as read from and written to each dialect, conditions, and which claims are ours."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.kaito import (
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_WORKSPACE,
    KAITO_NODECLASS_GROUP,
    KAITO_NODECLASS_KIND,
    KAITO_NODECLASS_NAME,
    KAITO_NODEPOOL,
    KAITO_PROVISIONER,
    LABEL_MACHINE_TYPE,
    LABEL_NODEPOOL,
    LABEL_PROVISIONER_NAME,
    LABEL_RAGENGINE,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    kaito_machine,
    kaito_nodeclaim,
    random_claim_name,
)
from provisioner.claims.conditions import (
    AWAITING_RECONCILIATION,
    UNHEALTHY_DEPENDENTS,
    roll_up_ready,
    set_condition,
)
from provisioner.claims.dialects import (
    DIALECTS,
    MACHINE,
    NODECLAIM,
    Dialect,
    dialect_of,
    format_time,
    parse_time,
)
from provisioner.claims.model import (
    DEPENDENTS,
    Claim,
    ClaimStatus,
    Condition,
    ConditionType,
    NodeClassRef,
    Status,
)
from provisioner.cloud.types import Taint
from provisioner.ownership import Ownership
from provisioner.settings import Settings

T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=3)
T2 = T0 + datetime.timedelta(minutes=9)
#: metav1.Condition's reason pattern (NodeClaim v1 CRD).
REASON = re.compile(r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?|)$")
GPU_TAINT = Taint("sku", "gpu", "NoSchedule")


def _with_meta(body: dict[str, Any], uid: str = "uid-1", generation: int = 1) -> dict[str, Any]:
    body["metadata"]["uid"] = uid
    body["metadata"]["generation"] = generation
    body["metadata"]["resourceVersion"] = "42"
    body["metadata"]["creationTimestamp"] = "2024-05-01T11:59:00Z"
    return body


def _cond(ctype: ConditionType, status: Status, reason: str = "", message: str = "") -> Condition:
    return Condition(ctype, status, reason, message, T0)


# ---------------------------------------------------------------------------------- dialect: read


def test_kaito_machine_parses_into_claim() -> None:
    name = random_claim_name()
    claim = MACHINE.parse(_with_meta(kaito_machine(name)))

    assert claim.dialect == "machine"
    assert dialect_of(claim) is MACHINE
    assert claim.name == name
    assert claim.uid == "uid-1"
    assert claim.generation == 1
    assert claim.resource_version == "42"
    assert claim.creation_timestamp == datetime.datetime(2024, 5, 1, 11, 59, tzinfo=datetime.UTC)
    assert not claim.deleting
    assert claim.labels == {
        LABEL_PROVISIONER_NAME: KAITO_PROVISIONER,
        LABEL_WORKSPACE: DEFAULT_WORKSPACE,
        LABEL_WORKSPACE_NAMESPACE: "default",
    }
    instance_type = claim.requirement("node.kubernetes.io/instance-type")
    assert instance_type is not None
    assert instance_type.operator == "In"
    assert instance_type.values == (DEFAULT_INSTANCE_TYPE,)
    machine_type = claim.requirement(LABEL_MACHINE_TYPE)
    assert machine_type is not None and machine_type.values == ("gpu",)
    assert claim.taints == (GPU_TAINT,)
    assert claim.startup_taints == ()
    assert claim.requests == {"storage": "120Gi"}
    assert claim.node_class_ref is None
    assert claim.status == ClaimStatus()


def test_kaito_nodeclaim_parses_into_claim() -> None:
    claim = NODECLAIM.parse(_with_meta(kaito_nodeclaim(image_family="azurelinux")))

    assert claim.dialect == "nodeclaim"
    assert dialect_of(claim) is NODECLAIM
    assert claim.node_class_ref == NodeClassRef(
        KAITO_NODECLASS_GROUP, KAITO_NODECLASS_KIND, KAITO_NODECLASS_NAME
    )
    assert claim.labels[LABEL_NODEPOOL] == KAITO_NODEPOOL
    assert claim.annotations["kaito.sh/node-image-family"] == "azurelinux"
    assert claim.annotations["karpenter.sh/do-not-disrupt"] == "true"
    assert claim.taints == (GPU_TAINT,)
    sku = claim.requirement("karpenter.azure.com/sku-name")
    assert sku is not None and sku.values == (DEFAULT_INSTANCE_TYPE,)


def test_integer_resource_request_is_read_as_a_quantity_string() -> None:
    body = kaito_machine()
    body["spec"]["resources"]["requests"] = {"storage": 400, "nvidia.com/gpu": 1}
    claim = MACHINE.parse(body)
    assert claim.requests == {"storage": "400", "nvidia.com/gpu": "1"}


def test_taints_default_effect_and_skip_keyless_entries() -> None:
    body = kaito_nodeclaim()
    body["spec"]["taints"] = [{"key": "a"}, {"value": "no-key", "effect": "NoSchedule"}, "junk"]
    body["spec"]["startupTaints"] = [{"key": "init", "value": "x", "effect": "NoExecute"}]
    claim = NODECLAIM.parse(body)
    assert claim.taints == (Taint("a", "", "NoSchedule"),)
    assert claim.startup_taints == (Taint("init", "x", "NoExecute"),)


def test_deletion_timestamp_marks_claim_deleting() -> None:
    body = kaito_machine()
    body["metadata"]["deletionTimestamp"] = "2024-05-01T12:30:00Z"
    assert MACHINE.parse(body).deleting


def test_machine_conditions_are_read_by_their_machine_names() -> None:
    body = kaito_machine()
    body["status"] = {
        "nodeName": "aks-ws1-12345678-vmss000000",
        "providerID": "azure:///x",
        "capacity": {"nvidia.com/gpu": "2"},
        "conditions": [
            {"type": "MachineLaunched", "status": "True", "lastTransitionTime": "2024-05-01T12:00:00Z"},
            {"type": "MachineInitialized", "status": "False", "reason": "NodeNotReady", "message": "m"},
            {"type": "Launched", "status": "False"},  # a NodeClaim name: not a Machine condition
            {"type": "SomethingElse", "status": "True"},
            {"type": "Ready", "status": "bogus"},
        ],
    }
    claim = MACHINE.parse(body)
    assert claim.status.node_name == "aks-ws1-12345678-vmss000000"
    assert claim.status.provider_id == "azure:///x"
    assert claim.status.capacity == {"nvidia.com/gpu": "2"}
    assert claim.status.conditions == (
        Condition(ConditionType.INITIALIZED, Status.FALSE, "NodeNotReady", "m", None),
        Condition(ConditionType.LAUNCHED, Status.TRUE, "", "", T0),
        Condition(ConditionType.READY, Status.UNKNOWN, "", "", None),
    )
    assert claim.status.is_true(ConditionType.LAUNCHED)
    assert not claim.status.is_true(ConditionType.INITIALIZED)
    assert not claim.status.is_true(ConditionType.REGISTERED)


def test_nodeclaim_conditions_are_read_by_their_v1_names() -> None:
    body = kaito_nodeclaim()
    body["status"] = {
        "imageID": "ubuntu-2204",
        "conditions": [
            {"type": "Launched", "status": "True", "reason": "Launched", "message": ""},
            {"type": "MachineLaunched", "status": "False"},  # a Machine name
            {"type": "InstanceTerminating", "status": "True", "reason": "InstanceTerminating"},
        ],
    }
    claim = NODECLAIM.parse(body)
    assert claim.status.image_id == "ubuntu-2204"
    assert [c.type for c in claim.status.conditions] == [
        ConditionType.INSTANCE_TERMINATING,
        ConditionType.LAUNCHED,
    ]
    assert claim.status.is_true(ConditionType.LAUNCHED)


def test_dialects_are_registered_by_name() -> None:
    assert DIALECTS == {"machine": MACHINE, "nodeclaim": NODECLAIM}
    assert MACHINE.api_version == "karpenter.sh/v1alpha5"
    assert NODECLAIM.api_version == "karpenter.sh/v1"
    assert MACHINE.nodepool_label == LABEL_PROVISIONER_NAME
    assert NODECLAIM.nodepool_label == LABEL_NODEPOOL


# ---------------------------------------------------------------------------------- dialect: write


def _pending_conditions(dialect: Dialect) -> tuple[Condition, ...]:
    """What a freshly created claim shows while its instance is being created."""
    conditions: tuple[Condition, ...] = ()
    for ctype in DEPENDENTS:
        conditions = set_condition(
            conditions,
            Condition(ctype, dialect.pending_status, AWAITING_RECONCILIATION, "awaiting reconciliation"),
            T0,
        )
    return roll_up_ready(conditions, T0)


def test_pending_machine_never_shows_unknown() -> None:
    """Kaito <= v0.4.1 creates duplicate Machines when MachineInitialized is Unknown."""
    body = MACHINE.status_body(ClaimStatus(conditions=_pending_conditions(MACHINE)), 1)
    by_type = {c["type"]: c for c in body["conditions"]}
    assert set(by_type) == {"MachineLaunched", "MachineRegistered", "MachineInitialized", "Ready"}
    assert by_type["MachineInitialized"]["status"] == "False"
    for name in ("MachineLaunched", "MachineRegistered", "MachineInitialized"):
        assert by_type[name]["status"] != "Unknown"
    assert "Unknown" not in repr(by_type["MachineInitialized"])


def test_machine_status_body_is_knative_style() -> None:
    status = ClaimStatus(
        node_name="aks-ws1-vmss000000",
        provider_id="azure:///subscriptions/s/virtualMachines/0",
        image_id="AKSUbuntu-2204gen2containerd",
        capacity={"cpu": "12", "nvidia.com/gpu": "2"},
        allocatable={"cpu": "11800m", "nvidia.com/gpu": "2"},
        conditions=(
            _cond(ConditionType.LAUNCHED, Status.TRUE),
            _cond(ConditionType.INSTANCE_TERMINATING, Status.TRUE, "Terminating"),
        ),
    )
    body = MACHINE.status_body(status, 7)
    assert body["nodeName"] == "aks-ws1-vmss000000"
    assert body["providerID"] == "azure:///subscriptions/s/virtualMachines/0"
    assert body["capacity"] == {"cpu": "12", "nvidia.com/gpu": "2"}
    assert body["allocatable"] == {"cpu": "11800m", "nvidia.com/gpu": "2"}
    assert "imageID" not in body  # not in the v1alpha5 schema
    # InstanceTerminating is a v1 condition; a Machine does not carry it.
    assert body["conditions"] == [
        {"type": "MachineLaunched", "status": "True", "lastTransitionTime": "2024-05-01T12:00:00Z"}
    ]


def test_nodeclaim_status_body_is_metav1_style() -> None:
    status = ClaimStatus(
        image_id="AKSUbuntu-2204gen2containerd",
        conditions=(
            _cond(ConditionType.LAUNCHED, Status.TRUE),
            _cond(ConditionType.REGISTERED, Status.UNKNOWN, "NodeNotFound", "waiting"),
            _cond(ConditionType.INSTANCE_TERMINATING, Status.TRUE),
        ),
    )
    body = NODECLAIM.status_body(status, 3)
    assert body["imageID"] == "AKSUbuntu-2204gen2containerd"
    assert "nodeName" not in body and "capacity" not in body
    by_type = {c["type"]: c for c in body["conditions"]}
    assert set(by_type) == {"Launched", "Registered", "InstanceTerminating"}
    for c in body["conditions"]:
        assert c["observedGeneration"] == 3
        assert REASON.match(c["reason"]) and c["reason"]
        assert "message" in c
        assert c["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    assert by_type["Launched"]["reason"] == "Launched"
    assert by_type["Registered"] == {
        "type": "Registered",
        "status": "Unknown",
        "reason": "NodeNotFound",
        "message": "waiting",
        "lastTransitionTime": "2024-05-01T12:00:00Z",
        "observedGeneration": 3,
    }


@pytest.mark.parametrize("dialect", [MACHINE, NODECLAIM], ids=lambda d: d.name)
def test_owner_reference_points_at_claim(dialect: Dialect) -> None:
    body = kaito_machine("ws0a1b2c3d4") if dialect is MACHINE else kaito_nodeclaim("ws0a1b2c3d4")
    claim = dialect.parse(_with_meta(body, uid="uid-77"))
    ref = dialect.owner_reference(claim)
    expected = (
        ("karpenter.sh/v1alpha5", "Machine") if dialect is MACHINE else ("karpenter.sh/v1", "NodeClaim")
    )
    assert (ref["apiVersion"], ref["kind"]) == expected
    assert ref["name"] == "ws0a1b2c3d4"
    assert ref["uid"] == "uid-77"
    assert ref["blockOwnerDeletion"] is True


def test_times_are_written_as_rfc3339_utc_seconds() -> None:
    tz = datetime.timezone(datetime.timedelta(hours=2))
    t = datetime.datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=tz)
    assert format_time(t) == "2024-05-01T12:00:00Z"
    assert parse_time("2024-05-01T12:00:00Z") == T0
    for junk in (None, "", "yesterday", 12):
        assert parse_time(junk) is None


_reasons = st.from_regex(r"\A[A-Za-z]([A-Za-z0-9_:]{0,20}[A-Za-z0-9_])?\Z")
_conditions = st.builds(
    Condition,
    st.sampled_from(list(ConditionType)),
    st.sampled_from(list(Status)),
    _reasons,
    st.text(max_size=40),
    st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2100, 1, 1)).map(
        lambda d: d.replace(microsecond=0, tzinfo=datetime.UTC)
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([MACHINE, NODECLAIM]),
    st.lists(_conditions, unique_by=lambda c: c.type, max_size=5),
    st.integers(0, 2**31),
)
def test_status_round_trips_through_each_dialect(
    dialect: Dialect, conditions: list[Condition], generation: int
) -> None:
    ordered = tuple(sorted(conditions, key=lambda c: c.type.value))
    status = ClaimStatus(node_name="n", provider_id="p", conditions=ordered)
    body = {"metadata": {"name": "ws1"}, "spec": {}, "status": dialect.status_body(status, generation)}
    read = dialect.parse(body).status
    assert read.conditions == tuple(c for c in ordered if c.type in dialect.condition_names)
    assert (read.node_name, read.provider_id) == ("n", "p")


# ---------------------------------------------------------------------------------- conditions


def test_set_condition_adds_with_transition_time_now() -> None:
    out = set_condition((), Condition(ConditionType.LAUNCHED, Status.TRUE, "Launched"), T1)
    assert out == (Condition(ConditionType.LAUNCHED, Status.TRUE, "Launched", "", T1),)


def test_set_condition_with_same_state_keeps_transition_time() -> None:
    before = (_cond(ConditionType.LAUNCHED, Status.FALSE, "InsufficientCapacity", "no capacity"),)
    after = set_condition(
        before, Condition(ConditionType.LAUNCHED, Status.FALSE, "InsufficientCapacity", "no capacity"), T2
    )
    assert after == before
    assert after[0].last_transition_time == T0


def test_set_condition_status_change_moves_transition_time() -> None:
    before = (_cond(ConditionType.LAUNCHED, Status.FALSE, "Launching", "creating"),)
    after = set_condition(before, Condition(ConditionType.LAUNCHED, Status.TRUE, "Launched"), T1)
    assert after == (Condition(ConditionType.LAUNCHED, Status.TRUE, "Launched", "", T1),)


def test_set_condition_records_new_reason_and_message() -> None:
    before = (_cond(ConditionType.LAUNCHED, Status.FALSE, "Launching", "creating"),)
    after = set_condition(before, Condition(ConditionType.LAUNCHED, Status.FALSE, "Throttled", "slow"), T1)
    assert (after[0].status, after[0].reason, after[0].message) == (Status.FALSE, "Throttled", "slow")
    assert after[0].last_transition_time is not None


def test_set_condition_leaves_other_types_and_sorts() -> None:
    before = (
        _cond(ConditionType.REGISTERED, Status.TRUE),
        _cond(ConditionType.LAUNCHED, Status.TRUE),
    )
    after = set_condition(before, Condition(ConditionType.INITIALIZED, Status.FALSE, "NodeNotReady"), T1)
    assert [c.type for c in after] == sorted(
        [ConditionType.INITIALIZED, ConditionType.LAUNCHED, ConditionType.REGISTERED], key=lambda t: t.value
    )
    assert {c for c in after if c.type != ConditionType.INITIALIZED} == set(before)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_conditions, unique_by=lambda c: c.type, max_size=5),
    _conditions,
    st.datetimes(timezones=st.just(datetime.UTC)),
    st.datetimes(timezones=st.just(datetime.UTC)),
)
def test_set_condition_is_idempotent(
    existing: list[Condition], new: Condition, now1: datetime.datetime, now2: datetime.datetime
) -> None:
    once = set_condition(tuple(existing), new, now1)
    twice = set_condition(once, new, now2)
    assert twice == once
    got = next(c for c in once if c.type == new.type)
    assert (got.status, got.reason, got.message) == (new.status, new.reason, new.message)
    old = next((c for c in existing if c.type == new.type), None)
    if old is not None and old.same_state(new):
        assert got.last_transition_time == old.last_transition_time
    if old is None or old.status != new.status:
        assert got.last_transition_time == now1


def test_ready_true_only_when_all_dependents_true() -> None:
    conds = tuple(_cond(t, Status.TRUE) for t in DEPENDENTS)
    ready = ClaimStatus(conditions=roll_up_ready(conds, T1)).condition(ConditionType.READY)
    assert ready == Condition(ConditionType.READY, Status.TRUE, "Ready", "", T1)


def test_ready_false_when_any_dependent_false() -> None:
    conds = (
        _cond(ConditionType.LAUNCHED, Status.FALSE, "InsufficientCapacity"),
        _cond(ConditionType.REGISTERED, Status.UNKNOWN),
    )
    ready = ClaimStatus(conditions=roll_up_ready(conds, T1)).condition(ConditionType.READY)
    assert ready is not None
    assert ready.status == Status.FALSE
    assert ready.reason == UNHEALTHY_DEPENDENTS
    assert "Launched=False" in ready.message
    assert "Registered=Unknown" in ready.message
    assert "Initialized=Unknown" in ready.message  # missing counts as not yet known


def test_ready_unknown_while_dependents_are_unknown_or_missing() -> None:
    conds = (_cond(ConditionType.LAUNCHED, Status.TRUE), _cond(ConditionType.REGISTERED, Status.UNKNOWN))
    ready = ClaimStatus(conditions=roll_up_ready(conds, T1)).condition(ConditionType.READY)
    assert ready is not None
    assert (ready.status, ready.reason) == (Status.UNKNOWN, UNHEALTHY_DEPENDENTS)
    assert "Launched" not in ready.message


def test_ready_roll_up_is_stable_and_transitions() -> None:
    pending = (_cond(ConditionType.LAUNCHED, Status.FALSE),)
    first = roll_up_ready(pending, T0)
    assert roll_up_ready(first, T2) == first
    done = roll_up_ready(tuple(_cond(t, Status.TRUE) for t in DEPENDENTS) + first[1:], T2)
    ready = ClaimStatus(conditions=done).condition(ConditionType.READY)
    assert ready is not None and ready.status == Status.TRUE and ready.last_transition_time == T2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(DEPENDENTS), st.sampled_from(list(Status))), max_size=3))
def test_ready_roll_up_rule(states: list[tuple[ConditionType, Status]]) -> None:
    conds = tuple(_cond(t, s) for t, s in dict(states).items())
    ready = ClaimStatus(conditions=roll_up_ready(conds, T1)).condition(ConditionType.READY)
    assert ready is not None
    by_type = dict(states)
    statuses = [by_type.get(t, Status.UNKNOWN) for t in DEPENDENTS]
    if all(s == Status.TRUE for s in statuses):
        assert ready.status == Status.TRUE
    elif Status.FALSE in statuses:
        assert ready.status == Status.FALSE
    else:
        assert ready.status == Status.UNKNOWN
    if ready.status != Status.TRUE:
        assert ready.reason == UNHEALTHY_DEPENDENTS
    assert REASON.match(ready.reason)


# ---------------------------------------------------------------------------------- selection


def is_managed(claim: Claim, settings: Settings) -> bool:
    return Ownership(settings).claim_is_ours(claim)


def test_kaito_claims_are_selected_by_default() -> None:
    s = Settings()
    assert is_managed(MACHINE.parse(kaito_machine()), s)
    assert is_managed(MACHINE.parse(kaito_machine(ragengine=True)), s)
    assert is_managed(NODECLAIM.parse(kaito_nodeclaim()), s)
    assert is_managed(NODECLAIM.parse(kaito_nodeclaim(ragengine=True)), s)


def test_ragengine_label_alone_selects() -> None:
    body = kaito_machine(ragengine=True)
    assert LABEL_RAGENGINE in body["metadata"]["labels"]
    assert LABEL_WORKSPACE not in body["metadata"]["labels"]
    assert is_managed(MACHINE.parse(body), Settings())


def test_kaito_node_class_alone_selects() -> None:
    body = kaito_nodeclaim()
    body["metadata"]["labels"] = {LABEL_NODEPOOL: "other"}
    assert is_managed(NODECLAIM.parse(body), Settings())


def _foreign_nodeclaim() -> dict[str, Any]:
    """A NodeClaim made by Karpenter's own NodePool for AKS: never ours."""
    body = kaito_nodeclaim()
    body["metadata"]["labels"] = {LABEL_NODEPOOL: "general-purpose"}
    body["spec"]["nodeClassRef"] = {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"}
    return body


def test_foreign_claims_are_never_selected() -> None:
    s = Settings()
    assert not is_managed(NODECLAIM.parse(_foreign_nodeclaim()), s)
    machine = kaito_machine()
    machine["metadata"]["labels"] = {LABEL_PROVISIONER_NAME: "default", "team": "infra"}
    assert not is_managed(MACHINE.parse(machine), s)
    bare = Claim(dialect="nodeclaim", name="x", uid="u")
    assert not is_managed(bare, s)


def test_selection_follows_settings() -> None:
    s = Settings(claim_labels=("team",), claim_node_class_kinds=("AKSNodeClass",))
    assert not is_managed(NODECLAIM.parse(_foreign_nodeclaim()), s), "another provisioner's node class group"
    s = Settings(
        claim_labels=("team",),
        claim_node_class_kinds=("AKSNodeClass",),
        claim_node_class_groups=("karpenter.azure.com",),
    )
    assert is_managed(NODECLAIM.parse(_foreign_nodeclaim()), s)
    machine = kaito_machine()
    assert not is_managed(MACHINE.parse(machine), s)
    machine["metadata"]["labels"]["team"] = "ml"
    assert is_managed(MACHINE.parse(machine), s)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("48h", 172800.0), ("1h30m", 5400.0), ("90s", 90.0), ("1.5h", 5400.0), ("250ms", 0.25)],
)
def test_go_durations_parse(text: str, seconds: float) -> None:
    from provisioner.claims.dialects import parse_duration

    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "10", "5x", "h", None, 30])
def test_not_a_duration_is_none(text: object) -> None:
    from provisioner.claims.dialects import parse_duration

    assert parse_duration(text) is None


def test_a_claim_we_took_over_stays_ours_without_its_labels() -> None:
    from provisioner.claims.model import Claim
    from provisioner.settings import Settings

    settings = Settings.from_env({})
    unlabelled = Claim(dialect="machine", name="ws1", uid="u")
    assert not is_managed(unlabelled, settings)
    taken_over = Claim(
        dialect="machine",
        name="ws1",
        uid="u",
        annotations={"gpu-provisioner.sh/managed-by": "gpu-provisioner"},
    )
    assert is_managed(taken_over, settings)


def test_a_claim_taken_over_by_another_installation_is_not_ours() -> None:
    from provisioner.claims.model import Claim
    from provisioner.settings import Settings

    other = Claim(
        dialect="machine", name="ws1", uid="u", annotations={"gpu-provisioner.sh/managed-by": "team-b"}
    )
    assert not is_managed(other, Settings.from_env({}))
    assert is_managed(other, Settings.from_env({"CONTROLLER_NAME": "team-b"}))
