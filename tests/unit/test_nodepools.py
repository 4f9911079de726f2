"""Pure rules of static NodePools: budgets and their schedules, the replica plan, drift, hashes."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from provisioner.claims.dialects import NODECLAIM, format_time
from provisioner.claims.model import Claim
from provisioner.lifecycle import drift
from provisioner.nodepools.budgets import (
    UNLIMITED,
    Cron,
    CronError,
    allowed_disruptions,
    budget_nodes,
    next_change,
    window_open,
)
from provisioner.nodepools.model import (
    NODE_CLASS_HASH_ANNOTATION,
    NODEPOOL_HASH_ANNOTATION,
    NODEPOOL_HASH_VERSION,
    NODEPOOL_HASH_VERSION_ANNOTATION,
    REPLACES_ANNOTATION,
    Budget,
    NodePool,
    parse_node_class,
    parse_nodepool,
)
from provisioner.nodepools.plan import NodeFacts, plan

UTC = datetime.UTC
NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # a Wednesday
A100 = "Standard_NC24ads_A100_v4"


def kaito_nodepool(replicas: int = 2, budget: str = "1", **spec: Any) -> dict[str, Any]:
    """The NodePool Kaito v0.12 generates for workspace phi-4 in namespace default."""
    body: dict[str, Any] = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": "default-phi-4", "uid": "np-uid", "generation": 1, "resourceVersion": "1"},
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
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [A100]}
                    ],
                    "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
                },
            },
            "disruption": {"consolidateAfter": "0s", "budgets": [{"nodes": budget, "reasons": ["Drifted"]}]},
            **spec,
        },
    }
    return body


def node_class(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "image-family-ubuntu", "uid": "nc", "generation": 1},
        "spec": {"imageFamily": "Ubuntu2204", "osDiskSizeGB": 300, **spec},
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True"}],
            "resolvedImage": {"family": "Ubuntu2204", "name": "Ubuntu2204", "version": "1"},
        },
    }


def claim(
    name: str,
    *,
    age: int = 0,
    ready: bool = True,
    launched: bool = True,
    drifted: bool = False,
    deleting: bool = False,
    replaces: str | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> Claim:
    conditions = [
        {"type": "Launched", "status": "True" if launched else "Unknown"},
        {"type": "Ready", "status": "True" if ready else "Unknown"},
    ]
    if drifted:
        conditions.append({"type": "Drifted", "status": "True", "reason": "NodeClassDrifted"})
    meta: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "creationTimestamp": format_time(NOW - datetime.timedelta(minutes=age)),
        "annotations": {**(annotations or {}), **({REPLACES_ANNOTATION: replaces} if replaces else {})},
        "labels": labels or {},
    }
    if deleting:
        meta["deletionTimestamp"] = format_time(NOW)
    return NODECLAIM.parse({"metadata": meta, "spec": {}, "status": {"conditions": conditions}})


# -- budgets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [("1", 5, 1), ("0", 5, 0), ("10%", 5, 1), ("10%", 0, 0), ("50%", 3, 2), ("100%", 7, 7), ("5%", 10, 1)],
)
def test_budget_nodes_are_a_count_or_a_percentage_rounded_up(value: str, total: int, expected: int) -> None:
    assert budget_nodes(value, total) == expected


def test_the_smallest_applicable_budget_wins_and_disrupting_nodes_count_against_it() -> None:
    budgets = (Budget("3"), Budget("1", reasons=("Drifted",)), Budget("0", reasons=("Underutilized",)))
    assert allowed_disruptions(budgets, "Drifted", total=10, disrupting=0, now=NOW) == 1
    assert allowed_disruptions(budgets, "Drifted", total=10, disrupting=1, now=NOW) == 0
    assert allowed_disruptions(budgets, "Empty", total=10, disrupting=1, now=NOW) == 2
    assert allowed_disruptions((), "Drifted", total=10, disrupting=4, now=NOW) == UNLIMITED
    assert (
        allowed_disruptions((Budget("0", reasons=("Empty",)),), "Drifted", total=3, disrupting=0, now=NOW)
        == UNLIMITED
    )


def test_a_scheduled_budget_applies_only_inside_its_window() -> None:
    # Business hours on weekdays: no drift 09:00-17:00 UTC Monday to Friday.
    blocked = Budget("0", reasons=("Drifted",), schedule="0 9 * * mon-fri", duration=8 * 3600)
    at = lambda h, day=2: datetime.datetime(2026, 12, day, h, 30, tzinfo=UTC)  # noqa: E731
    assert window_open(blocked, at(12))
    assert not window_open(blocked, at(8))
    assert not window_open(blocked, at(17))
    assert not window_open(blocked, at(12, day=6))  # a Sunday
    assert allowed_disruptions((blocked, Budget("1")), "Drifted", total=4, disrupting=0, now=at(12)) == 0
    assert allowed_disruptions((blocked, Budget("1")), "Drifted", total=4, disrupting=0, now=at(18)) == 1


def test_next_change_names_when_a_window_opens_or_closes() -> None:
    blocked = Budget("0", schedule="0 9 * * *", duration=2 * 3600)
    inside = datetime.datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert next_change((blocked,), inside) == 3600  # closes at 11:00
    before = datetime.datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    assert next_change((blocked,), before) == 3600  # opens at 09:00
    assert next_change((Budget("1"),), before) is None


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("@daily", "2026-12-02T12:00", "2026-12-03T00:00"),
        ("@hourly", "2026-12-02T12:00", "2026-12-02T13:00"),
        ("*/15 * * * *", "2026-12-02T12:07", "2026-12-02T12:15"),
        ("30 2 1 * *", "2026-12-02T12:00", "2027-01-01T02:30"),
        ("0 0 * * sun", "2026-12-02T12:00", "2026-12-06T00:00"),
        ("0 0 13 * fri", "2026-12-02T12:00", "2026-12-04T00:00"),  # day of month OR day of week
        ("0 0 29 feb *", "2026-12-02T12:00", "2028-02-29T00:00"),
        ("0 12 * jan-mar 1", "2026-12-02T12:00", "2027-01-04T12:00"),
    ],
)
def test_cron_next_firing(schedule: str, after: str, expected: str) -> None:
    start = datetime.datetime.fromisoformat(after).replace(tzinfo=UTC)
    got = Cron.parse(schedule).next_after(start, limit=start + datetime.timedelta(days=800))
    assert got == datetime.datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "schedule", ["* * *", "61 * * * *", "* 24 * * *", "*/0 * * * *", "x * * * *", "5-1 * * * *"]
)
def test_unreadable_schedules_are_refused_and_fail_closed(schedule: str) -> None:
    with pytest.raises(CronError):
        Cron.parse(schedule)
    budget = Budget("5", schedule=schedule, duration=60)
    assert allowed_disruptions((budget,), "Drifted", total=10, disrupting=0, now=NOW) == 0


# -- the plan ------------------------------------------------------------------------------------


def _plan(
    nodepool: dict[str, Any],
    claims: list[Claim],
    facts: dict[str, NodeFacts] | None = None,
    can_launch: bool = True,
) -> Any:
    return plan(parse_nodepool(nodepool), claims, facts or {}, NOW, can_launch=can_launch)


def test_missing_replicas_are_created_within_the_node_limit() -> None:
    assert _plan(kaito_nodepool(3), [claim("a")]).create == 2
    limited = _plan(kaito_nodepool(3, limits={"nodes": "2"}), [claim("a")])
    assert limited.create == 1 and "limits.nodes=2" in (limited.held or "")
    held = _plan(kaito_nodepool(3), [], can_launch=False)
    assert held.create == 0 and held.held == "the node class is not Ready"
    # A deleting NodeClaim no longer counts: its replacement is made at once.
    assert _plan(kaito_nodepool(2), [claim("a"), claim("b", deleting=True)]).create == 1


def test_scale_down_removes_the_least_useful_first() -> None:
    claims = [
        claim("old-busy", age=50),
        claim("young-busy", age=5),
        claim("empty", age=40),
        claim("not-ready", age=30, ready=False),
        claim("not-launched", age=20, launched=False, ready=False),
    ]
    facts = {
        "empty": NodeFacts(empty=True),
        "old-busy": NodeFacts(empty=False),
        "young-busy": NodeFacts(empty=False),
    }
    order = [d.claim.name for d in _plan(kaito_nodepool(0), claims, facts).delete]
    assert order == ["not-launched", "not-ready", "empty", "young-busy", "old-busy"]
    two = _plan(kaito_nodepool(3), claims, facts)
    assert [d.claim.name for d in two.delete] == ["not-launched", "not-ready"]
    assert all(d.reason == "ScaledDown" for d in two.delete)


def test_drifted_claims_are_replaced_within_the_budget_oldest_first() -> None:
    claims = [
        claim("a", age=30, drifted=True),
        claim("b", age=20, drifted=True),
        claim("c", age=10, drifted=True),
    ]
    one = _plan(kaito_nodepool(3, budget="1"), claims)
    assert [c.name for c in one.replace] == ["a"] and one.create == 0 and not one.delete
    assert [c.name for c in _plan(kaito_nodepool(3, budget="2"), claims).replace] == ["a", "b"]
    blocked = _plan(kaito_nodepool(3, budget="0"), claims)
    assert blocked.replace == () and blocked.allowed_drift == 0
    # Percentages count the NodePool's NodeClaims: 34% of 3 is 2 rounded up.
    assert len(_plan(kaito_nodepool(3, budget="34%"), claims).replace) == 2
    # Replacements need room under limits.nodes.
    assert _plan(kaito_nodepool(3, budget="3", limits={"nodes": 4}), claims).replace == (claims[0],)


def test_a_replacement_counts_for_its_predecessor_until_ready_then_the_predecessor_goes() -> None:
    old = claim("a", age=30, drifted=True)
    other = claim("b", age=20, drifted=True)
    waiting = _plan(kaito_nodepool(2, budget="1"), [old, other, claim("a2", ready=False, replaces="a")])
    # The budget is used by the replacement in flight: nothing else is replaced, nothing created.
    assert waiting.create == 0 and waiting.replace == () and waiting.delete == ()
    assert [(o.name, n.name) for o, n in waiting.waiting] == [("a", "a2")]
    done = _plan(kaito_nodepool(2, budget="1"), [old, other, claim("a2", replaces="a")])
    assert [(d.claim.name, d.reason) for d in done.delete] == [("a", "DisruptionTerminating")]
    # While the predecessor drains, it still uses the budget.
    draining = _plan(
        kaito_nodepool(2, budget="1"), [claim("a", deleting=True), other, claim("a2", replaces="a")]
    )
    assert draining.replace == ()
    after = _plan(kaito_nodepool(2, budget="1"), [other, claim("a2", replaces="a")])
    assert [c.name for c in after.replace] == ["b"]


def test_a_failed_replacement_puts_its_predecessor_back() -> None:
    old = claim("a", age=30, drifted=True)
    failed = _plan(kaito_nodepool(1, budget="1"), [old, claim("a2", deleting=True, replaces="a")])
    assert failed.create == 0 and failed.replace == ()  # the deleting replacement uses the budget
    again = _plan(kaito_nodepool(1, budget="1"), [old])
    assert again.replace == (old,)


def test_do_not_disrupt_blocks_drift_but_not_a_scale_down() -> None:
    claims = [claim("a", age=30, drifted=True), claim("b", age=20, drifted=True)]
    facts = {"a": NodeFacts(blocked_by="pod default/x has karpenter.sh/do-not-disrupt")}
    decided = _plan(kaito_nodepool(2, budget="2"), claims, facts)
    assert [c.name for c in decided.replace] == ["b"]
    assert [(c.name, why) for c, why in decided.blocked] == [
        ("a", "pod default/x has karpenter.sh/do-not-disrupt")
    ]
    assert [d.claim.name for d in _plan(kaito_nodepool(1), claims, facts).delete] == ["b"]


def test_no_drift_while_the_size_is_wrong() -> None:
    claims = [claim("a", drifted=True), claim("b", drifted=True), claim("c", drifted=True)]
    assert _plan(kaito_nodepool(2, budget="3"), claims).replace == ()
    assert _plan(kaito_nodepool(4, budget="3"), claims).replace == ()


# -- drift ---------------------------------------------------------------------------------------


def _made_from(nodepool: NodePool, node_class_hash: str, **kwargs: Any) -> Claim:
    annotations = {
        NODEPOOL_HASH_ANNOTATION: nodepool.template_hash(),
        NODEPOOL_HASH_VERSION_ANNOTATION: NODEPOOL_HASH_VERSION,
        NODE_CLASS_HASH_ANNOTATION: node_class_hash,
    }
    return claim("x", annotations=annotations, **kwargs)


def test_drift_reasons() -> None:
    nodepool = parse_nodepool(kaito_nodepool())
    nc = parse_node_class(node_class())
    fresh = _made_from(nodepool, nc.settings_hash(), labels={"node.kubernetes.io/instance-type": A100})
    assert drift.reason(fresh, nodepool, nc) is None
    # The template's labels or taints changed.
    relabelled = kaito_nodepool()
    relabelled["spec"]["template"]["metadata"]["labels"]["apps"] = "phi-4-v2"
    assert drift.reason(fresh, parse_nodepool(relabelled), nc) == drift.NODEPOOL_DRIFTED
    # Another instance type: the requirement no longer admits the claim's label.
    resized = kaito_nodepool()
    resized["spec"]["template"]["spec"]["requirements"][0]["values"] = ["Standard_NC40ads_H100_v5"]
    assert drift.reason(fresh, parse_nodepool(resized), nc) == drift.REQUIREMENTS_DRIFTED
    # The node class's image family, disk or resolved image changed.
    for change in ({"imageFamily": "AzureLinux"}, {"osDiskSizeGB": 500}):
        changed = parse_node_class(node_class(**change))
        assert drift.reason(fresh, nodepool, changed) == drift.NODE_CLASS_DRIFTED
    newer_image = node_class()
    newer_image["status"]["resolvedImage"]["version"] = "2"
    assert drift.reason(fresh, nodepool, parse_node_class(newer_image)) == drift.NODE_CLASS_DRIFTED
    # A node class whose status is not about its current spec yet is not judged.
    pending = node_class(imageFamily="AzureLinux")
    pending["metadata"]["generation"] = 2
    assert drift.reason(fresh, nodepool, parse_node_class(pending)) is None
    # Hashes of another scheme (Karpenter's own) are never compared.
    theirs = claim("y", annotations={NODEPOOL_HASH_ANNOTATION: "123", NODEPOOL_HASH_VERSION_ANNOTATION: "v3"})
    assert drift.reason(theirs, nodepool, nc) is None


def test_drift_condition_is_set_for_launched_claims_and_cleared_otherwise() -> None:
    nodepool = parse_nodepool(kaito_nodepool())
    nc = parse_node_class(node_class(imageFamily="AzureLinux"))
    stale = _made_from(nodepool, "old-hash")
    step = drift.check(stale, nodepool, nc)
    assert step is not None and [(c.type.value, c.status.value, c.reason) for c in step.conditions] == [
        ("Drifted", "True", "NodeClassDrifted")
    ]
    unlaunched = _made_from(nodepool, "old-hash", launched=False, ready=False, drifted=True)
    cleared = drift.check(unlaunched, nodepool, nc)
    assert cleared is not None and [c.value for c in cleared.cleared] == ["Drifted"]
    assert drift.check(_made_from(nodepool, "old-hash", launched=False, ready=False), nodepool, nc) is None
    assert drift.check(stale, None, nc) is None


def test_template_hash_ignores_empty_values_taint_order_and_requirements() -> None:
    base = parse_nodepool(kaito_nodepool()).template_hash()
    same = kaito_nodepool()
    tmpl = same["spec"]["template"]
    tmpl["spec"]["taints"] = [{"key": "b", "effect": "NoExecute"}, *tmpl["spec"]["taints"]]
    reordered = kaito_nodepool()
    reordered["spec"]["template"]["spec"]["taints"] = [*tmpl["spec"]["taints"][::-1]]
    assert parse_nodepool(same).template_hash() == parse_nodepool(reordered).template_hash()
    empty = kaito_nodepool()
    empty["spec"]["template"]["metadata"]["annotations"] = {}
    empty["spec"]["template"]["spec"]["startupTaints"] = []
    empty["spec"]["template"]["spec"]["requirements"] = []
    assert parse_nodepool(empty).template_hash() == base
    assert parse_nodepool(same).template_hash() != base
