"""Drain order and garbage-collection decisions."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner import gc
from provisioner.claims.model import Claim, ClaimStatus, Condition, ConditionType, Status
from provisioner.cloud.types import (
    MANAGED_BY_VALUE,
    TAG_CLAIM_NAME,
    TAG_CLAIM_UID,
    TAG_MANAGED_BY,
    CapacityType,
    Instance,
    InstanceState,
)
from provisioner.termination import drain

GRACE = 120.0
T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)

# ================================================================================ drain


def pod(
    name: str,
    *,
    namespace: str = "default",
    owner: str | None = "ReplicaSet",
    phase: str = "Running",
    priority_class: str | None = None,
    mirror: bool = False,
    terminating: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": f"{name}-owner", "apiVersion": "apps/v1"}]
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": "abc"}
        meta["ownerReferences"] = [{"kind": "Node", "name": "n", "apiVersion": "v1"}]
    if terminating:
        meta["deletionTimestamp"] = "2024-05-01T12:00:00Z"
    spec: dict[str, Any] = {"nodeName": "n"}
    if priority_class:
        spec["priorityClassName"] = priority_class
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def names(pods: tuple[drain.Pod, ...]) -> list[str]:
    return sorted(drain.pod_key(p) for p in pods)


def test_empty_node_is_drained() -> None:
    p = drain.plan([])
    assert p.done
    assert p.evict == () and p.terminating == ()


def test_mirror_daemonset_and_finished_pods_are_left_alone() -> None:
    pods = [
        pod("kube-proxy-static", mirror=True, priority_class="system-node-critical"),
        pod("nvidia-device-plugin", owner="DaemonSet"),
        pod("job-done", owner="Job", phase="Succeeded"),
        pod("job-failed", owner="Job", phase="Failed"),
        pod("dying-ds", owner="DaemonSet", terminating=True),
    ]
    p = drain.plan(pods)
    assert p.done
    assert p.evict == () and p.terminating == ()


def test_workloads_are_evicted_before_critical_pods() -> None:
    pods = [
        pod("falcon-7b-0", owner="StatefulSet"),
        pod("bare-pod", owner=None),
        pod("pending", phase="Pending"),
        pod("coredns", namespace="kube-system", priority_class="system-cluster-critical"),
        pod("agent", namespace="kube-system", priority_class="system-node-critical"),
        pod("nvidia-device-plugin", owner="DaemonSet", priority_class="system-node-critical"),
    ]
    p = drain.plan(pods)
    assert names(p.evict) == ["default/bare-pod", "default/falcon-7b-0", "default/pending"]
    assert not p.done


def test_critical_pods_wait_for_terminating_workloads() -> None:
    pods = [
        pod("falcon-7b-0", terminating=True),
        pod("coredns", namespace="kube-system", priority_class="system-cluster-critical"),
    ]
    p = drain.plan(pods)
    assert p.evict == ()
    assert names(p.terminating) == ["default/falcon-7b-0"]
    assert not p.done


def test_critical_pods_are_evicted_once_the_rest_is_gone() -> None:
    pods = [
        pod("coredns", namespace="kube-system", priority_class="system-cluster-critical"),
        pod("agent", namespace="kube-system", priority_class="system-node-critical"),
        pod("low", priority_class="batch-low"),
    ]
    assert names(drain.plan(pods).evict) == ["default/low"]
    p = drain.plan(pods[:2])
    assert names(p.evict) == ["kube-system/agent", "kube-system/coredns"]
    assert not p.done


def test_terminating_pods_are_waited_for_not_evicted_again() -> None:
    pods = [
        pod("a", terminating=True),
        pod("b"),
        pod("c", namespace="kube-system", priority_class="system-node-critical", terminating=True),
    ]
    p = drain.plan(pods)
    assert names(p.evict) == ["default/b"]
    assert names(p.terminating) == ["default/a", "kube-system/c"]
    only_terminating = drain.plan([pods[0]])
    assert only_terminating.evict == () and not only_terminating.done


def test_critical_terminating_does_not_hold_back_other_critical_pods() -> None:
    pods = [
        pod("c1", namespace="kube-system", priority_class="system-node-critical", terminating=True),
        pod("c2", namespace="kube-system", priority_class="system-cluster-critical"),
    ]
    p = drain.plan(pods)
    assert names(p.evict) == ["kube-system/c2"]
    assert names(p.terminating) == ["kube-system/c1"]


_pods = st.builds(
    pod,
    st.text("abcdef", min_size=1, max_size=6),
    owner=st.sampled_from([None, "ReplicaSet", "DaemonSet", "Job"]),
    phase=st.sampled_from(["Pending", "Running", "Succeeded", "Failed"]),
    priority_class=st.sampled_from([None, "system-node-critical", "system-cluster-critical", "high"]),
    mirror=st.booleans(),
    terminating=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_pods, max_size=8))
def test_drain_plan_invariants(pods: list[dict[str, Any]]) -> None:
    p = drain.plan(pods)
    for x in p.evict:
        meta = x["metadata"]
        assert "deletionTimestamp" not in meta
        assert "kubernetes.io/config.mirror" not in (meta.get("annotations") or {})
        assert all(o["kind"] != "DaemonSet" for o in meta.get("ownerReferences") or ())
        assert x["status"]["phase"] not in ("Succeeded", "Failed")
    critical = [x for x in p.evict if x["spec"].get("priorityClassName") in drain.CRITICAL_PRIORITY_CLASSES]
    if critical:
        # Critical pods go only when no other pod is left to evict or still terminating.
        assert len(critical) == len(p.evict)
        assert all(
            t["spec"].get("priorityClassName") in drain.CRITICAL_PRIORITY_CLASSES for t in p.terminating
        )


# ================================================================================ gc


def inst(
    name: str,
    *,
    uid: str | None = None,
    managed: bool = True,
    state: InstanceState = InstanceState.RUNNING,
) -> Instance:
    tags: dict[str, str] = {}
    if managed:
        tags[TAG_MANAGED_BY] = MANAGED_BY_VALUE
        tags[TAG_CLAIM_NAME] = name
        if uid is not None:
            tags[TAG_CLAIM_UID] = uid
    return Instance(
        name=name,
        provider_id=f"azure:///{name}",
        instance_type="Standard_NC12s_v3",
        zone="eastus-1",
        capacity_type=CapacityType.ON_DEMAND,
        state=state,
        tags=tags,
    )


def claim(name: str, uid: str, *, launched: bool = True, deleting: bool = False) -> Claim:
    conditions = (
        (Condition(ConditionType.LAUNCHED, Status.TRUE, "Launched", "", T0),)
        if launched
        else (Condition(ConditionType.LAUNCHED, Status.FALSE, "Launching", "", T0),)
    )
    return Claim(
        dialect="nodeclaim",
        name=name,
        uid=uid,
        deletion_timestamp=T0 if deleting else None,
        status=ClaimStatus(conditions=conditions),
    )


def test_orphan_is_deleted_only_after_grace() -> None:
    since: dict[str, float] = {}
    orphan = [inst("wsorphan0001", uid="u-old")]
    first = gc.plan(orphan, {}, since, now=1000.0, grace=GRACE)
    assert first.delete_instances == ()
    assert since == {"wsorphan0001": 1000.0}
    assert gc.plan(orphan, {}, since, now=1000.0 + GRACE - 1, grace=GRACE).delete_instances == ()
    assert since == {"wsorphan0001": 1000.0}  # the first sighting is kept
    assert gc.plan(orphan, {}, since, now=1000.0 + GRACE, grace=GRACE).delete_instances == ("wsorphan0001",)


def test_claims_own_instance_is_never_deleted() -> None:
    since: dict[str, float] = {}
    instances = [inst("ws1", uid="u1"), inst("ws2")]  # ws2 carries no uid tag (older version)
    claims = {"ws1": [claim("ws1", "u1")], "ws2": [claim("ws2", "u2")]}
    for now in (0.0, 10 * GRACE, 1000 * GRACE):
        decided = gc.plan(instances, claims, since, now=now, grace=GRACE)
        assert decided.delete_instances == ()
        assert decided.vanished_claims == ()
    assert since == {}


def test_uid_mismatch_is_an_orphan() -> None:
    """The claim was deleted and recreated under the same name: the old instance is not its own."""
    since: dict[str, float] = {}
    instances = [inst("ws1", uid="u-old")]
    claims = {"ws1": [claim("ws1", "u-new")]}
    assert gc.plan(instances, claims, since, now=0.0, grace=GRACE).delete_instances == ()
    assert "ws1" in since
    assert gc.plan(instances, claims, since, now=GRACE, grace=GRACE).delete_instances == ("ws1",)


def test_instances_we_do_not_own_are_never_touched() -> None:
    since: dict[str, float] = {}
    foreign = [inst("nodepool1", managed=False), inst("gpu", managed=False)]
    for now in (0.0, 10 * GRACE):
        assert gc.plan(foreign, {}, since, now=now, grace=GRACE).delete_instances == ()
    assert since == {}


def test_orphan_timer_resets_when_claim_reappears() -> None:
    since: dict[str, float] = {}
    instances = [inst("ws1", uid="u1")]
    gc.plan(instances, {}, since, now=0.0, grace=GRACE)  # claim not in the cache yet
    assert since == {"ws1": 0.0}
    gc.plan(instances, {"ws1": [claim("ws1", "u1")]}, since, now=60.0, grace=GRACE)
    assert since == {}
    again = gc.plan(instances, {}, since, now=200.0, grace=GRACE)
    assert again.delete_instances == ()  # a fresh grace period starts at 200
    assert since == {"ws1": 200.0}
    assert gc.plan(instances, {}, since, now=200.0 + GRACE - 1, grace=GRACE).delete_instances == ()
    assert gc.plan(instances, {}, since, now=200.0 + GRACE, grace=GRACE).delete_instances == ("ws1",)


def test_timers_of_instances_that_are_gone_are_dropped() -> None:
    since: dict[str, float] = {"wsgone": 0.0}
    gc.plan([], {}, since, now=10.0, grace=GRACE)
    assert since == {}


def test_orphan_already_deleting_is_not_deleted_again() -> None:
    since: dict[str, float] = {}
    instances = [inst("ws1", uid="u1", state=InstanceState.DELETING)]
    gc.plan(instances, {}, since, now=0.0, grace=GRACE)
    assert gc.plan(instances, {}, since, now=10 * GRACE, grace=GRACE).delete_instances == ()


def test_several_orphans_are_deleted_in_name_order() -> None:
    since: dict[str, float] = {}
    instances = [inst("wsc", uid="c"), inst("wsa", uid="a"), inst("wsb", uid="b")]
    gc.plan(instances, {"wsb": [claim("wsb", "b")]}, since, now=0.0, grace=GRACE)
    decided = gc.plan(instances, {"wsb": [claim("wsb", "b")]}, since, now=GRACE, grace=GRACE)
    assert decided.delete_instances == ("wsa", "wsc")


def test_launched_claims_whose_instance_is_missing_are_flagged() -> None:
    claims = {
        "wsvanished": [claim("wsvanished", "u1")],
        "wslaunching": [claim("wslaunching", "u2", launched=False)],
        "wsdeleting": [claim("wsdeleting", "u3", deleting=True)],
        "wspresent": [claim("wspresent", "u4")],
    }
    decided = gc.plan([inst("wspresent", uid="u4")], claims, {}, now=0.0, grace=GRACE)
    assert [c.name for c in decided.vanished_claims] == ["wsvanished"]
    assert decided.delete_instances == ()


_names = st.sampled_from(["ws1", "ws2", "ws3", "ws4"])
_uids = st.sampled_from(["u1", "u2", None])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(_names, _uids, st.booleans(), st.sampled_from(list(InstanceState))),
        unique_by=lambda t: t[0],
        max_size=4,
    ),
    st.lists(st.tuples(_names, st.sampled_from(["u1", "u2"])), unique_by=lambda t: t[0], max_size=4),
    st.lists(st.floats(0, 1000), min_size=1, max_size=5),
)
def test_gc_never_deletes_an_instance_its_claim_still_owns(
    raw_instances: list[tuple[str, str | None, bool, InstanceState]],
    raw_claims: list[tuple[str, str]],
    times: list[float],
) -> None:
    instances = [inst(n, uid=u, managed=m, state=s) for n, u, m, s in raw_instances]
    claims = {n: [claim(n, u)] for n, u in raw_claims}
    since: dict[str, float] = {}
    for now in sorted(times):
        decided = gc.plan(instances, claims, since, now=now, grace=GRACE)
        for name in decided.delete_instances:
            i = next(i for i in instances if i.name == name)
            assert i.managed
            assert i.state != InstanceState.DELETING
            owners = claims.get(name, [])
            assert all(i.claim_uid is not None and i.claim_uid != owner.uid for owner in owners)
            assert now - since[name] >= GRACE


def test_a_claim_we_do_not_manage_still_owns_its_instance_and_is_never_deleted() -> None:
    """Unselected claims (e.g. a label was removed) protect their pool, and are not ours to delete."""
    since: dict[str, float] = {}
    owners = {"ws1": [claim("ws1", "u1")], "ws2": [claim("ws2", "u2")]}
    managed = {"ws2": owners["ws2"]}
    instances = [inst("ws1", uid="u1")]  # ws2's instance is missing
    decided = gc.plan(instances, owners, since, now=10 * GRACE, grace=GRACE, managed=managed)
    assert decided.delete_instances == ()
    assert [c.name for c in decided.vanished_claims] == ["ws2"]
    only_unmanaged = gc.plan([], owners, since, now=0.0, grace=GRACE, managed={})
    assert only_unmanaged.vanished_claims == ()


def test_pods_stuck_terminating_or_on_a_not_ready_node_are_not_waited_for() -> None:
    """A dead kubelet never finishes a pod: waiting for it would keep the GPU pool forever."""
    now = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)

    def terminating(seconds_ago: float) -> dict[str, Any]:
        since = (now - datetime.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "metadata": {"name": f"p{int(seconds_ago)}", "namespace": "d", "deletionTimestamp": since},
            "spec": {"nodeName": "n"},
            "status": {"phase": "Running"},
        }

    assert not drain.plan([terminating(10)], now).done  # a normal graceful deletion is waited for
    assert drain.plan([terminating(120)], now).done  # stuck for two minutes: its kubelet is gone
    assert drain.plan([terminating(10)], now, node_ready=False).done


def test_a_machine_and_a_nodeclaim_with_one_name_do_not_orphan_each_others_pool() -> None:
    since: dict[str, float] = {}
    machine_claim = claim("ws1", "u-machine")
    nodeclaim_claim = claim("ws1", "u-nodeclaim", launched=False)
    owners = {"ws1": [machine_claim, nodeclaim_claim]}
    decided = gc.plan([inst("ws1", uid="u-machine")], owners, since, now=100 * GRACE, grace=GRACE)
    assert decided.delete_instances == ()
    assert since == {}
    assert decided.vanished_claims == ()


def test_only_a_node_carrying_the_claims_owner_reference_is_its_own() -> None:
    from provisioner.lifecycle.registration import owned_by

    c = claim("nodepool1", "u-1")
    system = {
        "metadata": {
            "name": "aks-nodepool1-1-vmss000000",
            "labels": {"kubernetes.azure.com/agentpool": "nodepool1"},
        }
    }
    mine = {"metadata": {"name": "aks-x", "ownerReferences": [{"uid": "u-1", "kind": "NodeClaim"}]}}
    assert not owned_by(system, c)
    assert owned_by(mine, c)


def test_a_replaced_node_of_the_claim_is_released() -> None:
    from provisioner.lifecycle.registration import replaced_nodes
    from provisioner.lifecycle.result import ReleaseNode

    c = claim("ws1", "u-1")

    def node(name: str, deleting: bool, owner: str = "u-1") -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "finalizers": ["karpenter.sh/termination"],
            "ownerReferences": [{"uid": owner}],
        }
        if deleting:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return {"metadata": meta}

    old, new, foreign = node("old", True), node("new", False), node("other", True, owner="u-2")
    assert replaced_nodes([old, new, foreign], c, "new") == (ReleaseNode("old"),)
    assert replaced_nodes([old], c, "old") == ()  # the claim's own node deleting: the claim goes instead
